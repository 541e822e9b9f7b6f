//! Dead-letter streams through the engine: list with filters, show one,
//! move entries back onto their stream (one now, or many as a background
//! job), delete one, purge all.
//!
//! A stream's dead letters live in `<stream>:dlq`, each with a `meta`
//! saying where it came from ([`DlqOrigin`]). A dead-letter entry's id is
//! assigned when it is dead-lettered, so a range of ids is a range of
//! dead-letter times.
//!
//! ## Reprocessing never loses an event
//! Reprocessing appends a copy of the entry to the main stream first (type,
//! payload and fields copied; `meta` replaced by
//! `{"reprocessed_from":"<dlq id>","original_id":"<id>","dlq_stream":"<stream>:dlq"}`)
//! and deletes the entry from the dead-letter stream only once that append
//! is acknowledged (durable as the durability policy says). A crash between
//! the two leaves the event in both places, and reprocessing it again adds a
//! duplicate to the main stream: the at-least-once promise groups already
//! make, so handlers must be idempotent. The other order could lose it.
//!
//! The copy is a new event of the main stream: every group of the stream
//! receives it. Moves are serialised within the daemon, so two requests
//! never move the same entry twice. A bulk reprocess covers the entries
//! present when it starts; entries that fail again while it runs wait for
//! the next one, so a handler still failing cannot make it loop.
//!
//! Reading needs the `consume` scope; everything that changes a dead-letter
//! stream needs `admin`.

use std::sync::Arc;

use busbar_event::{Event, EventBatch, EventId, NewEvent, StreamName};
use busbar_store::group::{dlq_stream, DlqOrigin};
use busbar_store::{ReadQuery, StoreError, Trim, TypeFilter};
use serde::Serialize;

use crate::jobs::{Job, JobKind, JobSpec, JobState, JobStatus, Pacer};
use crate::{AdminAction, Engine, EngineError, Principal, ReadOp, Scope};

type Result<T> = std::result::Result<T, EngineError>;

/// Which dead-letter entries a listing returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqQuery {
    /// Smallest dead-letter id (inclusive); ids are dead-letter times.
    pub start: EventId,
    /// Largest dead-letter id (inclusive).
    pub end: EventId,
    /// Newest first.
    pub reverse: bool,
    /// Only entries whose type matches.
    pub types: Option<TypeFilter>,
    /// Only entries whose last error contains this text (any case).
    pub error: Option<String>,
    /// At most this many entries (capped by the engine's read limit).
    pub limit: usize,
}

impl DlqQuery {
    /// Every entry, oldest first, at most `limit`.
    pub fn all(limit: usize) -> Self {
        DlqQuery {
            start: EventId::ZERO,
            end: EventId::MAX,
            reverse: false,
            types: None,
            error: None,
            limit,
        }
    }
}

/// One dead-letter entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqEntry {
    /// The entry as stored in `<stream>:dlq` (its `meta` says why).
    pub event: Event,
    /// The entry's meta, decoded (absent when it is not a dead letter
    /// busbar wrote, e.g. an event published there by hand).
    pub origin: Option<DlqOrigin>,
}

/// A page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqPage {
    /// The dead-letter stream.
    pub stream: StreamName,
    /// The entries.
    pub entries: Vec<DlqEntry>,
    /// Where to continue (as the new start, or the new end in reverse)
    /// when the listing stopped before the end of the range.
    pub next: Option<EventId>,
}

/// An entry moved back onto its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Reprocessed {
    /// Its id in the dead-letter stream (now deleted).
    pub dlq_id: EventId,
    /// The copy's id in the main stream.
    pub id: EventId,
    /// The id the event had when it was dead-lettered, when known.
    pub original_id: Option<EventId>,
}

/// Most entries one listing examines before it answers with `next`, so an
/// error filter matching nothing cannot scan a huge stream in one request.
const MAX_SCAN_PAGES: usize = 10;

impl Engine {
    fn dlq_access(&self, p: &Principal, stream: &StreamName, scope: Scope) -> Result<StreamName> {
        p.require(scope)?;
        p.check_stream(stream)?;
        Ok(dlq_stream(stream)?)
    }

    /// Fails with `NoSuchStream` for the main stream when it does not exist.
    async fn require_stream(&self, stream: &StreamName) -> Result<()> {
        self.store().info(stream).await?;
        Ok(())
    }

    /// Lists dead-letter entries of `stream` (the main stream's name).
    ///
    /// # Errors
    /// Scope/tenant errors; `NoSuchStream` when the main stream does not
    /// exist (a stream nothing was dead-lettered from lists nothing).
    pub async fn dlq_list(
        &self,
        p: &Principal,
        stream: &StreamName,
        query: DlqQuery,
    ) -> Result<DlqPage> {
        let dlq = self.dlq_access(p, stream, Scope::Consume)?;
        if query.start > query.end {
            return Err(StoreError::InvertedRange {
                start: query.start,
                end: query.end,
            }
            .into());
        }
        let limit = self.clamp_read_count(ReadOp::DlqList, query.limit).max(1);
        let needle = query.error.as_deref().map(str::to_lowercase);
        // Without an error filter the store filters everything.
        let page_size = if needle.is_some() {
            self.config().max_read_count.min(1000)
        } else {
            limit
        };
        let mut page = DlqPage {
            stream: dlq.clone(),
            entries: Vec::new(),
            next: None,
        };
        let (mut lo, mut hi) = (query.start, query.end);
        for pages in 1.. {
            let read = ReadQuery {
                start: lo,
                end: hi,
                count: page_size,
                reverse: query.reverse,
                types: query.types.clone(),
                partition: None,
            };
            let events = match self.store().read(&dlq, &read).await {
                Ok(events) => events,
                Err(StoreError::NoSuchStream { .. }) => {
                    self.require_stream(stream).await?;
                    return Ok(page);
                }
                Err(e) => return Err(e.into()),
            };
            let exhausted = events.len() < page_size;
            let mut last = None;
            for event in events {
                last = Some(event.id());
                let origin = DlqOrigin::of(&event);
                let matches = needle.as_ref().is_none_or(|n| {
                    origin
                        .as_ref()
                        .and_then(|o| o.last_error.as_deref())
                        .is_some_and(|e| e.to_lowercase().contains(n.as_str()))
                });
                if matches {
                    page.entries.push(DlqEntry { event, origin });
                    if page.entries.len() == limit {
                        break;
                    }
                }
            }
            let Some(last) = last else { break };
            let continue_at = if query.reverse {
                last.predecessor().filter(|id| *id >= lo)
            } else {
                last.successor().filter(|id| *id <= hi)
            };
            let Some(at) = continue_at else { break };
            if page.entries.len() == limit {
                page.next = Some(at);
                break;
            }
            if exhausted {
                break;
            }
            if pages >= MAX_SCAN_PAGES {
                page.next = Some(at);
                break;
            }
            if query.reverse {
                hi = at;
            } else {
                lo = at;
            }
        }
        Ok(page)
    }

    /// One dead-letter entry.
    ///
    /// # Errors
    /// [`EngineError::NoSuchDlqEntry`], scope/tenant errors.
    pub async fn dlq_entry(
        &self,
        p: &Principal,
        stream: &StreamName,
        id: EventId,
    ) -> Result<DlqEntry> {
        let dlq = self.dlq_access(p, stream, Scope::Consume)?;
        let event = self.dlq_event(&dlq, id).await?;
        let origin = DlqOrigin::of(&event);
        Ok(DlqEntry { event, origin })
    }

    async fn dlq_event(&self, dlq: &StreamName, id: EventId) -> Result<Event> {
        let missing = || EngineError::NoSuchDlqEntry {
            stream: dlq.clone(),
            id,
        };
        match self.store().read(dlq, &ReadQuery::range(id, id, 1)).await {
            Ok(mut events) => events.pop().ok_or_else(missing),
            Err(StoreError::NoSuchStream { .. }) => Err(missing()),
            Err(e) => Err(e.into()),
        }
    }

    /// Moves one entry back onto `stream` (admin): appended there first,
    /// then deleted from the dead-letter stream.
    ///
    /// # Errors
    /// [`EngineError::NoSuchDlqEntry`], scope/tenant errors, store errors
    /// (after a failed delete the event is in both streams).
    pub async fn dlq_reprocess(
        &self,
        p: &Principal,
        stream: &StreamName,
        id: EventId,
    ) -> Result<Reprocessed> {
        let dlq = self.dlq_access(p, stream, Scope::Admin)?;
        let _moving = self.dlq_moves.lock().await;
        // Read under the lock: a concurrent move may just have taken it.
        let event = self.dlq_event(&dlq, id).await?;
        let ids = self
            .move_back(stream, &dlq, std::slice::from_ref(&event))
            .await?;
        let copy = ids.first().copied().unwrap_or(EventId::ZERO);
        self.administered(
            p,
            &AdminAction::DlqReprocess {
                stream,
                dlq_id: id,
                id: copy,
            },
        );
        Ok(Reprocessed {
            dlq_id: id,
            id: copy,
            original_id: DlqOrigin::of(&event).map(|o| o.original_id),
        })
    }

    /// Appends copies of `entries` to `stream`, then deletes them from
    /// `dlq`. The caller holds `dlq_moves`.
    async fn move_back(
        &self,
        stream: &StreamName,
        dlq: &StreamName,
        entries: &[Event],
    ) -> Result<Vec<EventId>> {
        let metas: Vec<Vec<u8>> = entries.iter().map(|e| reprocess_meta(e, dlq)).collect();
        let mut batch = EventBatch::new();
        for (event, meta) in entries.iter().zip(&metas) {
            batch.push(&NewEvent::from_event(event).with_meta(meta))?;
        }
        let ids = self.append_internal(stream, batch).await?;
        let dlq_ids: Vec<EventId> = entries.iter().map(Event::id).collect();
        self.store().delete(dlq, &dlq_ids).await?;
        self.metrics()
            .dlq_reprocessed
            .get([stream.as_str()])
            .add(ids.len() as u64);
        Ok(ids)
    }

    /// Starts a job moving every entry present now (or those whose type
    /// matches `types`) back onto `stream` at `rate` events per second
    /// (admin).
    ///
    /// # Errors
    /// Scope/tenant errors, `NoSuchStream` for a missing main stream,
    /// [`EngineError::InvalidParam`] for a bad rate,
    /// [`EngineError::TooManyJobs`].
    pub async fn dlq_reprocess_all(
        self: &Arc<Self>,
        p: &Principal,
        stream: &StreamName,
        types: Option<TypeFilter>,
        rate: Option<u32>,
    ) -> Result<JobStatus> {
        self.dlq_reprocess_some(p, stream, types, rate, None).await
    }

    /// [`Engine::dlq_reprocess_all`], moving at most `limit` entries, the
    /// oldest first (the HYVVE runbook reprocesses 100 at a time).
    ///
    /// # Errors
    /// As [`Engine::dlq_reprocess_all`]; [`EngineError::InvalidParam`] for
    /// a limit of 0.
    pub async fn dlq_reprocess_some(
        self: &Arc<Self>,
        p: &Principal,
        stream: &StreamName,
        types: Option<TypeFilter>,
        rate: Option<u32>,
        limit: Option<u64>,
    ) -> Result<JobStatus> {
        if limit == Some(0) {
            return Err(EngineError::InvalidParam {
                name: "limit",
                reason: "must be at least 1".into(),
            });
        }
        let dlq = self.dlq_access(p, stream, Scope::Admin)?;
        self.require_stream(stream).await?;
        let rate = self.job_rate(JobKind::DlqReprocess, rate)?;
        let end = match self.store().info(&dlq).await {
            Ok(info) => Some(info.last_id),
            Err(StoreError::NoSuchStream { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let spec = JobSpec {
            kind: JobKind::DlqReprocess,
            stream: stream.clone(),
            target_stream: None,
            target: format!("stream {stream} (from {dlq})"),
            rate,
        };
        let engine = self.clone();
        let recorded = types.clone();
        let main = stream.clone();
        let status = self.spawn_job(spec, move |job| async move {
            engine
                .run_reprocess(&job, &main, &dlq, end, types, limit.unwrap_or(u64::MAX))
                .await
        })?;
        self.administered(
            p,
            &AdminAction::DlqReprocessAll {
                stream,
                types: recorded.as_ref(),
                rate,
                limit,
                job: &status.id,
            },
        );
        Ok(status)
    }

    async fn run_reprocess(
        &self,
        job: &Job,
        stream: &StreamName,
        dlq: &StreamName,
        end: Option<EventId>,
        types: Option<TypeFilter>,
        limit: u64,
    ) -> Result<JobState> {
        let Some(end) = end else {
            job.set_total(0);
            return Ok(JobState::Done);
        };
        match self
            .count_events(job, dlq, EventId::ZERO, end, types.as_ref(), limit)
            .await?
        {
            Some(total) => job.set_total(total),
            None => return Ok(JobState::Cancelled),
        }
        // About ten batches a second at the job's rate.
        let batch = (job.rate() as usize / 10).clamp(1, 1000);
        let mut cancel = job.cancelled_rx();
        let mut pacer = Pacer::new(job.rate());
        let mut start = EventId::ZERO;
        let mut left = limit;
        loop {
            if self.job_should_stop(job) {
                return Ok(JobState::Cancelled);
            }
            if left == 0 {
                return Ok(JobState::Done);
            }
            let moved = {
                let _moving = self.dlq_moves.lock().await;
                let read = ReadQuery {
                    start,
                    end,
                    count: batch.min(usize::try_from(left).unwrap_or(usize::MAX)),
                    reverse: false,
                    types: types.clone(),
                    partition: None,
                };
                let entries = match self.store().read(dlq, &read).await {
                    Ok(entries) => entries,
                    // Purged or deleted meanwhile: nothing left to move.
                    Err(StoreError::NoSuchStream { .. }) => Vec::new(),
                    Err(e) => return Err(e.into()),
                };
                if entries.is_empty() {
                    return Ok(JobState::Done);
                }
                self.move_back(stream, dlq, &entries).await?;
                entries
            };
            let n = moved.len() as u64;
            left = left.saturating_sub(n);
            job.scanned
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            job.published
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            let Some(last) = moved.last().map(Event::id) else {
                return Ok(JobState::Done);
            };
            job.set_last_id(last);
            match last.successor() {
                Some(next) if next <= end => start = next,
                _ => return Ok(JobState::Done),
            }
            if !pacer.pace(n, &mut cancel).await {
                return Ok(JobState::Cancelled);
            }
        }
    }

    /// Deletes one dead-letter entry (admin).
    ///
    /// # Errors
    /// [`EngineError::NoSuchDlqEntry`], scope/tenant errors.
    pub async fn dlq_delete(&self, p: &Principal, stream: &StreamName, id: EventId) -> Result<()> {
        let dlq = self.dlq_access(p, stream, Scope::Admin)?;
        let _moving = self.dlq_moves.lock().await;
        let deleted = match self.store().delete(&dlq, &[id]).await {
            Ok(n) => n,
            Err(StoreError::NoSuchStream { .. }) => 0,
            Err(e) => return Err(e.into()),
        };
        if deleted == 0 {
            return Err(EngineError::NoSuchDlqEntry { stream: dlq, id });
        }
        self.metrics().dlq_deleted.get([stream.as_str()]).inc();
        self.administered(p, &AdminAction::DlqDelete { stream, id });
        Ok(())
    }

    /// Deletes every dead-letter entry of `stream` (admin); `confirm` must
    /// be true. Returns how many were deleted. The dead-letter stream keeps
    /// its last id, so later entries never reuse an id.
    ///
    /// # Errors
    /// [`EngineError::ConfirmationRequired`], scope/tenant errors,
    /// `NoSuchStream` for a missing main stream.
    pub async fn dlq_purge(
        &self,
        p: &Principal,
        stream: &StreamName,
        confirm: bool,
    ) -> Result<u64> {
        let dlq = self.dlq_access(p, stream, Scope::Admin)?;
        if !confirm {
            return Err(EngineError::ConfirmationRequired {
                action: format!("purging `{dlq}` deletes every dead-lettered event of `{stream}`"),
            });
        }
        let _moving = self.dlq_moves.lock().await;
        let trim = Trim::MaxLen {
            max: 0,
            approx: false,
        };
        let removed = match self.store().trim(&dlq, trim).await {
            Ok(n) => n,
            Err(StoreError::NoSuchStream { .. }) => {
                self.require_stream(stream).await?;
                0
            }
            Err(e) => return Err(e.into()),
        };
        self.metrics()
            .dlq_deleted
            .get([stream.as_str()])
            .add(removed);
        tracing::info!(stream = %stream, removed, "dead-letter stream purged");
        self.administered(p, &AdminAction::DlqPurge { stream, removed });
        Ok(removed)
    }
}

/// The meta of a reprocessed copy.
fn reprocess_meta(entry: &Event, dlq: &StreamName) -> Vec<u8> {
    let original = DlqOrigin::of(entry).map(|o| o.original_id.to_string());
    serde_json::to_vec(&serde_json::json!({
        "reprocessed_from": entry.id().to_string(),
        "original_id": original,
        "dlq_stream": dlq.as_str(),
    }))
    .unwrap_or_default()
}
