//! Background jobs: reprocessing a dead-letter stream and replays.
//!
//! A job runs on its own task and reports progress through a [`JobStatus`].
//! The registry is bounded twice: at most [`JobsConfig::max_running`] jobs
//! run at once (starting another is refused with
//! [`EngineError::TooManyJobs`], HTTP 429, and counted in
//! `busbar_jobs_rejected_total{limit="max_running"}`), and at most
//! [`JobsConfig::history`] finished jobs are remembered (the oldest are
//! forgotten first, counted in `busbar_jobs_forgotten_total`; asking for
//! one is [`EngineError::NoSuchJob`]). A request asking for a rate over
//! [`JobsConfig::max_rate`] is refused with [`EngineError::InvalidParam`]
//! naming `rate`. `busbar_jobs_running` shows how many run, by kind.
//!
//! Jobs live in memory: a restart ends them. Each status carries `last_id`,
//! the last source id a job handled, so an interrupted job can be started
//! again from just after it.
//!
//! ## Cancelling
//! Cancelling is cooperative: a job checks between batches, so a batch
//! already being appended completes. Jobs also stop, as cancelled, when the
//! daemon starts shutting down.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use busbar_event::{now_ms, EventId, StreamName};
use busbar_store::{ReadQuery, StoreError, TypeFilter};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;

use crate::{Engine, EngineError, Metrics, Principal, Scope};

/// Limits of the job registry and defaults of jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobsConfig {
    /// Jobs running at once (default 4).
    pub max_running: usize,
    /// Finished jobs remembered for status queries (default 100).
    pub history: usize,
    /// Events per second a job moves when the request names no rate
    /// (default 1000).
    pub default_rate: u32,
    /// The highest rate a request may ask for (default 100 000/s).
    pub max_rate: u32,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            max_running: 4,
            history: 100,
            default_rate: 1000,
            max_rate: 100_000,
        }
    }
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Moves dead-letter entries back onto their stream.
    DlqReprocess,
    /// Replays a range of a stream.
    Replay,
}

impl JobKind {
    /// Every kind, for metrics that list each one.
    pub const ALL: [JobKind; 2] = [JobKind::DlqReprocess, JobKind::Replay];

    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::DlqReprocess => "dlq_reprocess",
            JobKind::Replay => "replay",
        }
    }
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Still working.
    Running,
    /// Finished everything it was asked to do.
    Done,
    /// Stopped by a cancel request or by shutdown.
    Cancelled,
    /// Stopped by an error (see `error`).
    Failed,
}

impl JobState {
    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Cancelled => "cancelled",
            JobState::Failed => "failed",
        }
    }
}

/// A job's progress, as reported to operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobStatus {
    /// The job's id.
    pub id: String,
    /// What it does.
    pub kind: JobKind,
    /// The stream it reads (for DLQ reprocessing: the main stream).
    pub stream: StreamName,
    /// Where events go, in words (`stream orders`, `group billing`...).
    pub target: String,
    /// Where it is.
    pub state: JobState,
    /// Source events examined so far.
    pub scanned: u64,
    /// Events appended to the target stream so far.
    pub published: u64,
    /// Events a target group has been handed again so far.
    pub delivered: u64,
    /// How many events the job expects to handle, once counted.
    pub total_estimate: Option<u64>,
    /// The last source id handled: restart from just after it.
    pub last_id: Option<EventId>,
    /// Events per second it moves at most.
    pub rate: u32,
    /// When it started (ms since the epoch).
    pub started_at: u64,
    /// When it stopped (ms since the epoch).
    pub finished_at: Option<u64>,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
}

const NO_TOTAL: u64 = u64::MAX;

/// One registered job: shared by its task and the registry.
#[derive(Debug)]
pub(crate) struct Job {
    id: String,
    kind: JobKind,
    stream: StreamName,
    /// The streams whose access a status query needs (source, target).
    streams: Vec<StreamName>,
    target: String,
    rate: u32,
    started_at: u64,
    pub(crate) scanned: AtomicU64,
    pub(crate) published: AtomicU64,
    pub(crate) delivered: AtomicU64,
    total: AtomicU64,
    last_id: Mutex<Option<EventId>>,
    /// `(state, error, finished_at)` once it stopped.
    end: Mutex<Option<(JobState, Option<String>, u64)>>,
    cancel: watch::Sender<bool>,
}

impl Job {
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn rate(&self) -> u32 {
        self.rate
    }

    pub(crate) fn set_total(&self, total: u64) {
        self.total.store(total.min(NO_TOTAL - 1), Ordering::Relaxed);
    }

    pub(crate) fn set_last_id(&self, id: EventId) {
        *self.last_id.lock() = Some(id);
    }

    /// A receiver that turns true when the job is cancelled.
    pub(crate) fn cancelled_rx(&self) -> watch::Receiver<bool> {
        self.cancel.subscribe()
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    fn is_running(&self) -> bool {
        self.end.lock().is_none()
    }

    /// Records how the job ended (the first call wins).
    pub(crate) fn finish(&self, state: JobState, error: Option<String>) {
        let mut end = self.end.lock();
        if end.is_none() {
            *end = Some((state, error, now_ms()));
        }
    }

    pub(crate) fn status(&self) -> JobStatus {
        let end = self.end.lock().clone();
        let total = self.total.load(Ordering::Relaxed);
        JobStatus {
            id: self.id.clone(),
            kind: self.kind,
            stream: self.stream.clone(),
            target: self.target.clone(),
            state: end.as_ref().map_or(JobState::Running, |e| e.0),
            scanned: self.scanned.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            total_estimate: (total != NO_TOTAL).then_some(total),
            last_id: *self.last_id.lock(),
            rate: self.rate,
            started_at: self.started_at,
            finished_at: end.as_ref().map(|e| e.2),
            error: end.and_then(|e| e.1),
        }
    }
}

/// What a new job is.
pub(crate) struct JobSpec {
    pub(crate) kind: JobKind,
    pub(crate) stream: StreamName,
    pub(crate) target_stream: Option<StreamName>,
    pub(crate) target: String,
    pub(crate) rate: u32,
}

/// The registry.
#[derive(Debug)]
pub(crate) struct Jobs {
    config: JobsConfig,
    metrics: Arc<Metrics>,
    /// Tells this process's job ids from an earlier one's.
    boot: u64,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    next: u64,
    /// Oldest first.
    jobs: VecDeque<Arc<Job>>,
}

impl Jobs {
    pub(crate) fn new(config: JobsConfig, metrics: Arc<Metrics>) -> Self {
        Jobs {
            config,
            metrics,
            boot: now_ms() / 1000,
            table: Mutex::new(Table::default()),
        }
    }

    pub(crate) fn config(&self) -> &JobsConfig {
        &self.config
    }

    /// Registers a running job.
    ///
    /// # Errors
    /// [`EngineError::TooManyJobs`].
    pub(crate) fn register(&self, spec: JobSpec) -> Result<Arc<Job>, EngineError> {
        let mut table = self.table.lock();
        let running = table.jobs.iter().filter(|j| j.is_running()).count();
        if running >= self.config.max_running {
            self.metrics
                .jobs_rejected
                .get([spec.kind.as_str(), "max_running"])
                .inc();
            return Err(EngineError::TooManyJobs {
                limit: self.config.max_running,
            });
        }
        table.next += 1;
        let prefix = match spec.kind {
            JobKind::DlqReprocess => "reprocess",
            JobKind::Replay => "replay",
        };
        let mut streams = vec![spec.stream.clone()];
        streams.extend(spec.target_stream);
        let job = Arc::new(Job {
            id: format!("{prefix}-{:x}-{}", self.boot, table.next),
            kind: spec.kind,
            stream: spec.stream,
            streams,
            target: spec.target,
            rate: spec.rate,
            started_at: now_ms(),
            scanned: AtomicU64::new(0),
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            total: AtomicU64::new(NO_TOTAL),
            last_id: Mutex::new(None),
            end: Mutex::new(None),
            cancel: watch::Sender::new(false),
        });
        table.jobs.push_back(job.clone());
        // Forget the oldest finished jobs past the history limit.
        let mut finished = table.jobs.iter().filter(|j| !j.is_running()).count();
        while finished > self.config.history {
            let Some(pos) = table.jobs.iter().position(|j| !j.is_running()) else {
                break;
            };
            table.jobs.remove(pos);
            finished -= 1;
            self.metrics.jobs_forgotten.inc();
        }
        Ok(job)
    }

    fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.table.lock().jobs.iter().find(|j| j.id == id).cloned()
    }

    fn all(&self) -> Vec<Arc<Job>> {
        self.table.lock().jobs.iter().cloned().collect()
    }

    /// How many jobs of `kind` are running.
    pub(crate) fn running(&self, kind: JobKind) -> usize {
        self.table
            .lock()
            .jobs
            .iter()
            .filter(|j| j.kind == kind && j.is_running())
            .count()
    }
}

/// Spaces out batches so a job moves at most `rate` events per second.
pub(crate) struct Pacer {
    rate: f64,
    started: Instant,
    moved: u64,
}

impl Pacer {
    pub(crate) fn new(rate: u32) -> Self {
        Pacer {
            rate: f64::from(rate.max(1)),
            started: Instant::now(),
            moved: 0,
        }
    }

    /// Accounts for `n` more events and waits until the rate allows the
    /// next batch. Returns false when the job was cancelled while waiting.
    pub(crate) async fn pace(&mut self, n: u64, cancel: &mut watch::Receiver<bool>) -> bool {
        self.moved += n;
        let due = self.started + Duration::from_secs_f64(self.moved as f64 / self.rate);
        let slept = tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => true,
            _ = cancel.wait_for(|c| *c) => false,
        };
        slept && !*cancel.borrow()
    }
}

/// Marks a job failed if its task ends without recording an outcome (a
/// panic, or the runtime dropping the task at shutdown).
struct FinishGuard(Arc<Job>);

impl Drop for FinishGuard {
    fn drop(&mut self) {
        self.0.finish(
            JobState::Failed,
            Some("the job's task stopped unexpectedly".to_owned()),
        );
    }
}

impl Engine {
    /// Registers a job and runs `work` on a task of its own. `work` returns
    /// whether it got to the end (`Done`) or stopped early (`Cancelled`).
    pub(crate) fn spawn_job<F, Fut>(&self, spec: JobSpec, work: F) -> Result<JobStatus, EngineError>
    where
        F: FnOnce(Arc<Job>) -> Fut,
        Fut: std::future::Future<Output = Result<JobState, EngineError>> + Send + 'static,
    {
        let job = self.jobs.register(spec)?;
        let status = job.status();
        let fut = work(job.clone());
        let metrics = self.metrics().clone();
        tokio::spawn(async move {
            let guard = FinishGuard(job.clone());
            match fut.await {
                Ok(JobState::Cancelled) => {
                    let why = if job.is_cancelled() {
                        "cancelled on request"
                    } else {
                        "the daemon is shutting down"
                    };
                    job.finish(JobState::Cancelled, Some(why.to_owned()));
                }
                Ok(state) => job.finish(state, None),
                Err(e) => {
                    tracing::warn!(job = %job.id, error = %e, "job failed");
                    job.finish(JobState::Failed, Some(e.to_string()));
                }
            }
            drop(guard);
            let state = job.status().state;
            metrics
                .jobs_finished
                .get([job.kind.as_str(), state.as_str()])
                .inc();
        });
        Ok(status)
    }

    /// Counts events of `stream` in `[start, end]` whose type matches, up
    /// to `cap`, in pages. `None` when the job was stopped meanwhile.
    pub(crate) async fn count_events(
        &self,
        job: &Job,
        stream: &StreamName,
        start: EventId,
        end: EventId,
        types: Option<&TypeFilter>,
        cap: u64,
    ) -> Result<Option<u64>, EngineError> {
        if start > end {
            return Ok(Some(0));
        }
        if types.is_none() {
            // The whole stream: its length, without reading it.
            if let Ok(info) = self.store().info(stream).await {
                if info.first_id.is_none_or(|first| start <= first) && end >= info.last_id {
                    return Ok(Some(info.length.min(cap)));
                }
            }
        }
        let page = self.config().max_read_count.max(1);
        let (mut counted, mut lo) = (0u64, start);
        loop {
            if self.job_should_stop(job) {
                return Ok(None);
            }
            let query = ReadQuery {
                start: lo,
                end,
                count: page,
                reverse: false,
                types: types.cloned(),
                partition: None,
            };
            let events = match self.store().read(stream, &query).await {
                Ok(events) => events,
                Err(StoreError::NoSuchStream { .. }) => return Ok(Some(counted)),
                Err(e) => return Err(e.into()),
            };
            counted += events.len() as u64;
            if counted >= cap {
                return Ok(Some(cap));
            }
            let next = events.last().and_then(|e| e.id().successor());
            match next {
                Some(next) if events.len() == page && next <= end => lo = next,
                _ => return Ok(Some(counted)),
            }
            tokio::task::yield_now().await;
        }
    }

    /// Whether a job should stop now (cancelled, or shutdown began).
    pub(crate) fn job_should_stop(&self, job: &Job) -> bool {
        job.is_cancelled() || self.readiness().is_shutting_down()
    }

    /// The rate a request for a job of `kind` asked for, or the default.
    ///
    /// # Errors
    /// [`EngineError::InvalidParam`] for 0 or more than the maximum (the
    /// latter counted in `busbar_jobs_rejected_total{limit="max_rate"}`).
    pub(crate) fn job_rate(&self, kind: JobKind, rate: Option<u32>) -> Result<u32, EngineError> {
        let cfg = self.jobs.config();
        match rate {
            None => Ok(cfg.default_rate),
            Some(r) if r == 0 || r > cfg.max_rate => {
                if r > cfg.max_rate {
                    self.metrics()
                        .jobs_rejected
                        .get([kind.as_str(), "max_rate"])
                        .inc();
                }
                Err(EngineError::InvalidParam {
                    name: "rate",
                    reason: format!("must be 1 to {} events per second", cfg.max_rate),
                })
            }
            Some(r) => Ok(r),
        }
    }

    /// How many jobs of `kind` are running now.
    pub(crate) fn running_jobs(&self, kind: JobKind) -> usize {
        self.jobs.running(kind)
    }

    /// Every remembered job whose streams the principal may see, oldest
    /// first.
    ///
    /// # Errors
    /// [`EngineError::Forbidden`] without the `consume` scope.
    pub fn jobs(&self, p: &Principal) -> Result<Vec<JobStatus>, EngineError> {
        p.require(Scope::Consume)?;
        Ok(self
            .jobs
            .all()
            .iter()
            .filter(|j| j.streams.iter().all(|s| p.can_access(s)))
            .map(|j| j.status())
            .collect())
    }

    /// One job's status.
    ///
    /// # Errors
    /// [`EngineError::NoSuchJob`] (also for another tenant's job),
    /// [`EngineError::Forbidden`].
    pub fn job(&self, p: &Principal, id: &str) -> Result<JobStatus, EngineError> {
        p.require(Scope::Consume)?;
        Ok(self.visible_job(p, id)?.status())
    }

    fn visible_job(&self, p: &Principal, id: &str) -> Result<Arc<Job>, EngineError> {
        self.jobs
            .get(id)
            .filter(|j| j.streams.iter().all(|s| p.can_access(s)))
            .ok_or_else(|| EngineError::NoSuchJob { job: id.to_owned() })
    }

    /// Asks a running job to stop (admin). It stops before its next batch;
    /// the returned status may still say `running`.
    ///
    /// # Errors
    /// [`EngineError::NoSuchJob`], [`EngineError::JobNotRunning`],
    /// [`EngineError::Forbidden`].
    pub fn cancel_job(&self, p: &Principal, id: &str) -> Result<JobStatus, EngineError> {
        p.require(Scope::Admin)?;
        let job = self.visible_job(p, id)?;
        if !job.is_running() {
            return Err(EngineError::JobNotRunning { job: id.to_owned() });
        }
        job.cancel.send_replace(true);
        self.administered(
            p,
            &crate::AdminAction::JobCancel {
                job: id,
                kind: job.kind,
            },
        );
        Ok(job.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        JobSpec {
            kind: JobKind::Replay,
            stream: StreamName::new("s").unwrap(),
            target_stream: None,
            target: "stream s".into(),
            rate: 10,
        }
    }

    #[test]
    fn running_jobs_and_history_are_bounded_and_counted() {
        let metrics = Arc::new(Metrics::default());
        let jobs = Jobs::new(
            JobsConfig {
                max_running: 2,
                history: 3,
                ..JobsConfig::default()
            },
            metrics.clone(),
        );
        let a = jobs.register(spec()).unwrap();
        let b = jobs.register(spec()).unwrap();
        assert!(matches!(
            jobs.register(spec()),
            Err(EngineError::TooManyJobs { limit: 2 })
        ));
        assert_eq!(jobs.running(JobKind::Replay), 2);
        assert_eq!(
            metrics.jobs_rejected.get(["replay", "max_running"]).get(),
            1
        );
        a.finish(JobState::Done, None);
        b.finish(JobState::Done, None);
        for _ in 0..5 {
            jobs.register(spec()).unwrap().finish(JobState::Done, None);
        }
        // Trimmed when a job registers: the running one and the 3 newest
        // finished ones are kept.
        let running = jobs.register(spec()).unwrap();
        let kept = jobs.all();
        assert_eq!(kept.len(), 4);
        assert!(kept[0].id.ends_with("-5"), "{}", kept[0].id);
        assert_eq!(kept[3].id, running.id);
        assert!(jobs.get(a.id()).is_none());
        // 7 finished, 3 kept.
        assert_eq!(metrics.jobs_forgotten.get(), 4);
        assert_eq!(jobs.running(JobKind::Replay), 1);
        assert_eq!(jobs.running(JobKind::DlqReprocess), 0);
    }

    #[test]
    fn the_first_outcome_wins() {
        let jobs = Jobs::new(JobsConfig::default(), Arc::new(Metrics::default()));
        let job = jobs.register(spec()).unwrap();
        assert_eq!(job.status().state, JobState::Running);
        job.finish(JobState::Cancelled, Some("why".into()));
        job.finish(JobState::Failed, None);
        let status = job.status();
        assert_eq!(status.state, JobState::Cancelled);
        assert_eq!(status.error.as_deref(), Some("why"));
        assert!(status.finished_at.is_some());
    }
}
