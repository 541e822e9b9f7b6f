//! Replay jobs: hand a range of a stream to consumers again.
//!
//! A replay names a source stream, a range of ids (ids are receive times,
//! so a time range is an id range), and a target:
//!
//! - **a stream** (the default target is the source stream itself):
//!   matching events are copied there in batches, at a bounded rate, each
//!   with `meta` = `{"replayed_from":"<id>","stream":"<source>","job":"<job>"}`.
//!   Every group of the target stream receives the copies. Event types,
//!   `limit` and the range end all apply. The range ends at the source's
//!   last id when the job starts, so replaying a stream onto itself ends.
//! - **an existing group** of the source stream: its cursor moves back to
//!   just before the range start (`XGROUP SETID`), so the group delivers
//!   every event from there again: to that group only, at its consumers'
//!   pace. A cursor only says where delivery resumes, so event types,
//!   `limit` and a range end cannot apply and are refused; replay to a
//!   stream to filter. The job follows the group until it has been handed
//!   the events up to where its cursor was. Cancelling moves the cursor
//!   forward again to where it was (if it is still behind), so the rest of
//!   the range is not redelivered; nothing the group had not seen is
//!   skipped.
//! - **a new group** of the source stream, created starting at the range
//!   start; it then delivers everything after it, like any group. The job
//!   follows it up to the source's last id at the start. Cancelling stops
//!   following; the group stays.
//!
//! Replays need the `admin` scope, and a tenant-bound token replays only
//! its tenant's streams. Handlers must be idempotent: a replay delivers
//! events again on purpose.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use busbar_event::{Event, EventBatch, EventId, NewEvent, StreamName};
use busbar_store::group::{GroupConfig, GroupStart};
use busbar_store::{ReadQuery, StoreError, TypeFilter};

use crate::jobs::{Job, JobKind, JobSpec, JobState, JobStatus, Pacer};
use crate::{AdminAction, Engine, EngineError, Principal, Scope};

type Result<T> = std::result::Result<T, EngineError>;

/// How often a job following a group looks at its cursor.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// Events per batch when a replay names none.
pub const DEFAULT_REPLAY_BATCH: usize = 100;

/// Where a replay sends events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayTarget {
    /// Copy matching events onto this stream (it may be the source).
    Stream(StreamName),
    /// Move this existing group's cursor back to the range start.
    Group(String),
    /// Create this group at the range start.
    NewGroup {
        /// The group's name.
        name: String,
        /// Its delivery policy.
        config: GroupConfig,
    },
}

/// A replay request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplaySpec {
    /// The stream to replay.
    pub stream: StreamName,
    /// First id of the range (inclusive).
    pub start: EventId,
    /// Last id of the range (inclusive; `EventId::MAX` for no end).
    pub end: EventId,
    /// Only events whose type matches (stream targets only).
    pub types: Option<TypeFilter>,
    /// At most this many events (stream targets only).
    pub limit: Option<u64>,
    /// Events per appended batch (default [`DEFAULT_REPLAY_BATCH`], or the
    /// engine's `max_batch_events` if smaller; never more than a second's
    /// worth at `rate`).
    pub batch_size: Option<usize>,
    /// Events per second at most (default: the engine's job default).
    pub rate: Option<u32>,
    /// Where events go.
    pub target: ReplayTarget,
}

impl ReplaySpec {
    /// Replays all of `stream` onto itself.
    pub fn new(stream: StreamName) -> Self {
        ReplaySpec {
            target: ReplayTarget::Stream(stream.clone()),
            stream,
            start: EventId::ZERO,
            end: EventId::MAX,
            types: None,
            limit: None,
            batch_size: None,
            rate: None,
        }
    }
}

fn invalid(name: &'static str, reason: impl Into<String>) -> EngineError {
    EngineError::InvalidParam {
        name,
        reason: reason.into(),
    }
}

impl Engine {
    /// Starts a replay job (admin). Checks everything it can first, so a
    /// bad request fails here rather than as a failed job; a group target's
    /// cursor has moved (or its group exists) when this returns.
    ///
    /// # Errors
    /// Scope/tenant errors, `InvertedRange`, `NoSuchStream`, `NoSuchGroup`,
    /// `GroupExists`, [`EngineError::InvalidParam`],
    /// [`EngineError::TooManyJobs`].
    pub async fn start_replay(
        self: &Arc<Self>,
        p: &Principal,
        spec: ReplaySpec,
    ) -> Result<JobStatus> {
        p.require(Scope::Admin)?;
        p.check_stream(&spec.stream)?;
        if spec.start > spec.end {
            return Err(StoreError::InvertedRange {
                start: spec.start,
                end: spec.end,
            }
            .into());
        }
        if spec.limit == Some(0) {
            return Err(invalid("limit", "must be at least 1"));
        }
        let max_batch = self.config().max_batch_events;
        // An operator may configure batches smaller than the default.
        let batch = spec
            .batch_size
            .unwrap_or(DEFAULT_REPLAY_BATCH.min(max_batch));
        if batch == 0 || batch > max_batch {
            return Err(invalid(
                "batchSize",
                format!("must be 1 to {max_batch} events"),
            ));
        }
        let rate = self.job_rate(JobKind::Replay, spec.rate)?;
        // A batch goes out at once: never more than a second's worth.
        let batch = batch.min(rate as usize);
        let info = self.store().info(&spec.stream).await?;
        let recorded = spec.clone();
        let status = match spec.target.clone() {
            ReplayTarget::Stream(target) => {
                p.check_stream(&target)?;
                self.start_republish(spec, target, info.last_id, batch, rate)
            }
            ReplayTarget::Group(group) => {
                refuse_filters(&spec)?;
                self.start_group_replay(spec, group, None, rate).await
            }
            ReplayTarget::NewGroup { name, config } => {
                refuse_filters(&spec)?;
                self.start_group_replay(spec, name, Some(config), rate)
                    .await
            }
        }?;
        self.administered(
            p,
            &AdminAction::ReplayStart {
                spec: &recorded,
                rate: status.rate,
                job: &status.id,
            },
        );
        Ok(status)
    }

    fn start_republish(
        self: &Arc<Self>,
        spec: ReplaySpec,
        target: StreamName,
        last_id: EventId,
        batch: usize,
        rate: u32,
    ) -> Result<JobStatus> {
        let job_spec = JobSpec {
            kind: JobKind::Replay,
            stream: spec.stream.clone(),
            target_stream: Some(target.clone()),
            target: format!("stream {target}"),
            rate,
        };
        let engine = self.clone();
        // Ends where the stream ended at the start: a replay onto the
        // source stream does not read its own copies.
        let end = spec.end.min(last_id);
        self.spawn_job(job_spec, move |job| async move {
            engine.run_republish(&job, &spec, &target, end, batch).await
        })
    }

    async fn run_republish(
        &self,
        job: &Job,
        spec: &ReplaySpec,
        target: &StreamName,
        end: EventId,
        batch: usize,
    ) -> Result<JobState> {
        let source = &spec.stream;
        let limit = spec.limit.unwrap_or(u64::MAX);
        let total = self
            .count_events(job, source, spec.start, end, spec.types.as_ref(), limit)
            .await?;
        match total {
            Some(total) => job.set_total(total),
            None => return Ok(JobState::Cancelled),
        }
        let mut cancel = job.cancelled_rx();
        let mut pacer = Pacer::new(job.rate());
        let (mut start, mut left) = (spec.start, limit);
        while start <= end && left > 0 {
            if self.job_should_stop(job) {
                return Ok(JobState::Cancelled);
            }
            let read = ReadQuery::range(start, end, batch);
            let events = match self.store().read(source, &read).await {
                Ok(events) => events,
                Err(StoreError::NoSuchStream { .. }) => Vec::new(),
                Err(e) => return Err(e.into()),
            };
            let Some(last_read) = events.last().map(Event::id) else {
                break;
            };
            let mut picked: Vec<&Event> = Vec::new();
            let mut last_examined = last_read;
            let mut examined = 0u64;
            for event in &events {
                examined += 1;
                last_examined = event.id();
                if spec
                    .types
                    .as_ref()
                    .is_none_or(|t| t.matches(event.event_type()))
                {
                    picked.push(event);
                    if picked.len() as u64 == left {
                        break;
                    }
                }
            }
            let n = picked.len() as u64;
            if n > 0 {
                let metas: Vec<Vec<u8>> = picked
                    .iter()
                    .map(|e| replay_meta(e, source, job.id()))
                    .collect();
                let mut out = EventBatch::new();
                for (event, meta) in picked.iter().zip(&metas) {
                    out.push(&NewEvent::from_event(event).with_meta(meta))?;
                }
                self.append_internal(target, out).await?;
                self.metrics().replayed.get([source.as_str()]).add(n);
            }
            job.scanned.fetch_add(examined, Ordering::Relaxed);
            job.published.fetch_add(n, Ordering::Relaxed);
            job.set_last_id(last_examined);
            left -= n;
            let range_done = events.len() < batch && last_examined == last_read;
            match last_examined.successor() {
                Some(next) if !range_done => start = next,
                _ => break,
            }
            if n == 0 {
                tokio::task::yield_now().await;
            } else if !pacer.pace(n, &mut cancel).await {
                return Ok(JobState::Cancelled);
            }
        }
        Ok(JobState::Done)
    }

    async fn start_group_replay(
        self: &Arc<Self>,
        spec: ReplaySpec,
        group: String,
        create: Option<GroupConfig>,
        rate: u32,
    ) -> Result<JobStatus> {
        let stream = spec.stream.clone();
        let before_start = spec.start.predecessor().unwrap_or(EventId::ZERO);
        let (end, restore, target) = match create {
            Some(config) => {
                let start = if spec.start == EventId::ZERO {
                    GroupStart::Beginning
                } else {
                    GroupStart::After(before_start)
                };
                self.store()
                    .create_group(&stream, &group, start, config)
                    .await?;
                let last = self.store().info(&stream).await?.last_id;
                (last, None, format!("new group {group}"))
            }
            None => {
                let cursor = self.store().group(&stream, &group).await?.last_delivered_id;
                if before_start < cursor {
                    self.store()
                        .set_cursor(&stream, &group, before_start)
                        .await?;
                    tracing::info!(stream = %stream, group, from = %before_start, to = %cursor, "group cursor moved back for a replay");
                }
                (cursor, Some(cursor), format!("group {group}"))
            }
        };
        let job_spec = JobSpec {
            kind: JobKind::Replay,
            stream: stream.clone(),
            target_stream: None,
            target,
            rate,
        };
        let engine = self.clone();
        self.spawn_job(job_spec, move |job| async move {
            engine
                .follow_group(&job, &stream, &group, before_start, end, restore)
                .await
        })
    }

    /// Counts what a group has been handed in `(from, end]` as its cursor
    /// moves, until it passes `end`.
    async fn follow_group(
        &self,
        job: &Job,
        stream: &StreamName,
        group: &str,
        from: EventId,
        end: EventId,
        restore: Option<EventId>,
    ) -> Result<JobState> {
        let first = from.successor().unwrap_or(EventId::MAX);
        match self
            .count_events(job, stream, first, end, None, u64::MAX)
            .await?
        {
            Some(total) => job.set_total(total),
            None => return self.stop_following(stream, group, restore).await,
        }
        let mut cancel = job.cancelled_rx();
        let mut counted_to = from;
        loop {
            let cursor = self.store().group(stream, group).await?.last_delivered_id;
            let reached = cursor.min(end);
            if reached > counted_to {
                let after = counted_to.successor().unwrap_or(EventId::MAX);
                let n = self
                    .count_events(job, stream, after, reached, None, u64::MAX)
                    .await?
                    .unwrap_or(0);
                job.scanned.fetch_add(n, Ordering::Relaxed);
                job.delivered.fetch_add(n, Ordering::Relaxed);
                self.metrics().replayed.get([stream.as_str()]).add(n);
                job.set_last_id(reached);
                counted_to = reached;
            }
            if cursor >= end {
                return Ok(JobState::Done);
            }
            if self.job_should_stop(job) {
                return self.stop_following(stream, group, restore).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_EVERY) => {}
                _ = cancel.wait_for(|c| *c) => {}
            }
        }
    }

    /// A cancelled group replay: an existing group's cursor goes forward
    /// again to where it was, if it is still behind.
    async fn stop_following(
        &self,
        stream: &StreamName,
        group: &str,
        restore: Option<EventId>,
    ) -> Result<JobState> {
        if let Some(was) = restore {
            let cursor = self.store().group(stream, group).await?.last_delivered_id;
            if cursor < was {
                self.store().set_cursor(stream, group, was).await?;
            }
        }
        Ok(JobState::Cancelled)
    }
}

/// Group targets deliver everything after the cursor: filters cannot apply.
fn refuse_filters(spec: &ReplaySpec) -> Result<()> {
    let given = [
        (spec.types.is_some(), "eventTypes"),
        (spec.limit.is_some(), "limit"),
        (spec.end != EventId::MAX, "to/endTime"),
    ];
    if let Some((_, name)) = given.iter().find(|(set, _)| *set) {
        return Err(invalid(
            "target",
            format!(
                "a replay into a group moves the group's cursor back and redelivers every event \
                 after it, so `{name}` cannot apply: replay to a stream to filter"
            ),
        ));
    }
    Ok(())
}

/// The meta of a replayed copy.
fn replay_meta(event: &Event, source: &StreamName, job: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "replayed_from": event.id().to_string(),
        "stream": source.as_str(),
        "job": job,
    }))
    .unwrap_or_default()
}
