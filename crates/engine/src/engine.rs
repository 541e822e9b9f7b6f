use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use busbar_event::{Event, EventBatch, EventId, StreamName};
use busbar_store::{AppendOptions, ReadQuery, Rotated, Store, StreamInfo, Trim};
use tokio::sync::watch;

use crate::metrics::{header, names};
use crate::{Auth, EngineError, Metrics, Principal, Readiness, Scope};

/// Engine limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Largest batch accepted in one publish call (default 10 000). A larger
    /// one is refused with [`EngineError::BatchTooLarge`] (HTTP 413
    /// `batch_too_large`, counted in `busbar_ingest_errors_total`); socket
    /// ingest cuts its batches at this size instead, and a replay's
    /// `batchSize` may not exceed it.
    pub max_batch_events: usize,
    /// Largest `count` of one read (default 10 000): range reads, group
    /// reads, claims, pending and DLQ listings. A read asking for more gets
    /// at most this many ([`Engine::clamp_read_count`]).
    pub max_read_count: usize,
    /// Background jobs (DLQ reprocessing, replays).
    pub jobs: crate::JobsConfig,
    /// When a stream's health turns `degraded`.
    pub health: crate::HealthThresholds,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_batch_events: 10_000,
            max_read_count: 10_000,
            jobs: crate::JobsConfig::default(),
            health: crate::HealthThresholds::default(),
        }
    }
}

/// The transport a request came in on (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// The events Unix socket.
    Unix,
    /// TCP NDJSON.
    Tcp,
    /// HTTP API.
    Http,
    /// WebSocket.
    WebSocket,
    /// Command socket.
    Command,
    /// In-process callers (library use, benchmarks).
    Local,
}

impl Transport {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Unix => "unix",
            Transport::Tcp => "tcp",
            Transport::Http => "http",
            Transport::WebSocket => "ws",
            Transport::Command => "command",
            Transport::Local => "local",
        }
    }
}

/// A read capped by [`EngineConfig::max_read_count`] (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadOp {
    /// A range read of a stream.
    Range,
    /// A consumer-group read.
    GroupRead,
    /// A claim of idle pending entries.
    Claim,
    /// A listing of a group's pending entries.
    Pending,
    /// A listing of a dead-letter stream.
    DlqList,
}

impl ReadOp {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadOp::Range => "range",
            ReadOp::GroupRead => "group_read",
            ReadOp::Claim => "claim",
            ReadOp::Pending => "pending",
            ReadOp::DlqList => "dlq_list",
        }
    }
}

/// Sees every batch just before it is appended (live session statistics,
/// for one). Called on the publishing task: keep it cheap.
pub trait PublishObserver: Send + Sync {
    /// `batch` is about to be appended to `stream`.
    fn publishing(&self, stream: &StreamName, batch: &EventBatch);
}

/// Adds gauges to `/metrics` that live outside the engine (the live hub's
/// connections and sessions, for one).
pub trait MetricsSource: Send + Sync {
    /// Appends metrics in the Prometheus text format.
    fn render(&self, out: &mut String);
}

/// The core engine. Cheap to share (`Arc<Engine>`).
pub struct Engine {
    store: Arc<dyn Store>,
    auth: Auth,
    config: EngineConfig,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    appended: watch::Sender<u64>,
    pub(crate) paused_all: std::sync::atomic::AtomicBool,
    pub(crate) jobs: crate::jobs::Jobs,
    /// Serialises moves out of dead-letter streams, so two requests never
    /// move the same entry twice.
    pub(crate) dlq_moves: tokio::sync::Mutex<()>,
    observer: std::sync::OnceLock<Arc<dyn PublishObserver>>,
    metric_sources: parking_lot::Mutex<Vec<Arc<dyn MetricsSource>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("store", &self.store.kind())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine over `store`.
    pub fn new(
        store: Arc<dyn Store>,
        auth: Auth,
        config: EngineConfig,
        metrics: Arc<Metrics>,
        readiness: Readiness,
    ) -> Arc<Engine> {
        let (appended, _) = watch::channel(0);
        let jobs = crate::jobs::Jobs::new(config.jobs.clone(), metrics.clone());
        Arc::new(Engine {
            store,
            auth,
            config,
            metrics,
            readiness,
            appended,
            paused_all: std::sync::atomic::AtomicBool::new(false),
            jobs,
            dlq_moves: tokio::sync::Mutex::new(()),
            observer: std::sync::OnceLock::new(),
            metric_sources: parking_lot::Mutex::new(Vec::new()),
        })
    }

    /// Installs the publish observer (once; later calls are ignored and
    /// return false).
    pub fn set_publish_observer(&self, observer: Arc<dyn PublishObserver>) -> bool {
        self.observer.set(observer).is_ok()
    }

    /// Adds a source of extra metrics to `/metrics`.
    pub fn add_metrics_source(&self, source: Arc<dyn MetricsSource>) {
        self.metric_sources.lock().push(source);
    }

    /// The store (for side services that need it directly, like benches).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Readiness state.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// The configured tokens.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Limits.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The stream a principal publishes to when an event names none:
    /// `events`, or `<tenant>:events` for a tenant-bound token.
    pub fn default_stream(&self, principal: &Principal) -> StreamName {
        let name = match principal.tenant() {
            Some(t) => format!("{t}:{}", busbar_event::DEFAULT_STREAM),
            None => busbar_event::DEFAULT_STREAM.to_owned(),
        };
        StreamName::new(&name).unwrap_or_else(|_| {
            StreamName::new(busbar_event::DEFAULT_STREAM).expect("default stream name is valid")
        })
    }

    /// Checks that `principal` may publish an event naming `event_tenant`
    /// to `stream`. Transports call it per event before batching.
    ///
    /// # Errors
    /// [`EngineError::Forbidden`], [`EngineError::WrongTenant`],
    /// [`EngineError::TenantMismatch`].
    pub fn check_publish(
        &self,
        principal: &Principal,
        stream: &StreamName,
        event_tenant: Option<&str>,
    ) -> Result<(), EngineError> {
        principal.require(Scope::Publish)?;
        principal.check_stream(stream)?;
        if let (Some(t), Some(e)) = (principal.tenant(), event_tenant) {
            if t != e {
                return Err(EngineError::TenantMismatch {
                    tenant: t.to_owned(),
                    event_tenant: e.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Appends a batch already checked with [`Engine::check_publish`].
    /// Resolves when the store's durability policy holds.
    ///
    /// # Errors
    /// [`EngineError::BatchTooLarge`], store errors.
    pub async fn publish(
        &self,
        principal: &Principal,
        stream: &StreamName,
        batch: EventBatch,
        opts: AppendOptions,
        transport: Transport,
    ) -> Result<Vec<EventId>, EngineError> {
        let result = self.publish_inner(principal, stream, batch, opts).await;
        match &result {
            Ok(ids) => {
                self.metrics
                    .events_ingested
                    .get([stream.as_str(), transport.as_str()])
                    .add(ids.len() as u64);
            }
            Err(e) => self.count_error(transport, e),
        }
        result
    }

    async fn publish_inner(
        &self,
        principal: &Principal,
        stream: &StreamName,
        batch: EventBatch,
        opts: AppendOptions,
    ) -> Result<Vec<EventId>, EngineError> {
        principal.require(Scope::Publish)?;
        principal.check_stream(stream)?;
        if opts.trim.is_some() {
            principal.require(Scope::Admin)?;
        }
        if batch.len() > self.config.max_batch_events {
            return Err(EngineError::BatchTooLarge {
                len: batch.len(),
                limit: self.config.max_batch_events,
            });
        }
        if let Some(observer) = self.observer.get() {
            observer.publishing(stream, &batch);
        }
        let started = Instant::now();
        let ids = self.store.append(stream, batch, opts).await?;
        self.metrics.append_seconds.observe(started.elapsed());
        self.appended.send_modify(|n| *n += 1);
        Ok(ids)
    }

    /// Appends events the engine itself produces (DLQ reprocessing,
    /// replays) and wakes waiting readers, as a publish does.
    pub(crate) async fn append_internal(
        &self,
        stream: &StreamName,
        batch: EventBatch,
    ) -> Result<Vec<EventId>, EngineError> {
        let ids = self
            .store
            .append(stream, batch, AppendOptions::default())
            .await?;
        self.appended.send_modify(|n| *n += 1);
        Ok(ids)
    }

    /// Counts a rejected request or event.
    pub fn count_error(&self, transport: Transport, error: &EngineError) {
        self.metrics
            .ingest_errors
            .get([transport.as_str(), error.reason()])
            .inc();
    }

    /// The count a read asking for `asked` events runs with: at most
    /// [`EngineConfig::max_read_count`]. A larger ask is clamped, not
    /// refused, since a read returns *at most* its count anyway (range
    /// reads and DLQ listings then answer with a `next` position to go on
    /// from), and counted in `busbar_reads_clamped_total` by `op`.
    pub fn clamp_read_count(&self, op: ReadOp, asked: usize) -> usize {
        let max = self.config.max_read_count;
        if asked > max {
            self.metrics.reads_clamped.get([op.as_str()]).inc();
            return max;
        }
        asked
    }

    /// Reads a range of at most [`EngineConfig::max_read_count`] events.
    ///
    /// # Errors
    /// [`EngineError::Forbidden`], [`EngineError::WrongTenant`], store
    /// errors (unknown stream, inverted range).
    pub async fn read(
        &self,
        principal: &Principal,
        stream: &StreamName,
        mut query: ReadQuery,
    ) -> Result<Vec<Event>, EngineError> {
        principal.require(Scope::Consume)?;
        principal.check_stream(stream)?;
        query.count = self.clamp_read_count(ReadOp::Range, query.count);
        Ok(self.store.read(stream, &query).await?)
    }

    /// Waits until an append completes after this call or `timeout` passes
    /// (for followers like `busbar tail` and long polls). Returns whether an
    /// append happened.
    pub async fn wait_for_append(&self, timeout: Duration) -> bool {
        let mut rx = self.appended.subscribe();
        rx.mark_unchanged();
        tokio::time::timeout(timeout, rx.changed()).await.is_ok()
    }

    /// A receiver whose value changes after every completed append. Unlike
    /// [`Engine::wait_for_append`], a caller can subscribe *before* reading,
    /// so an append landing between its read and its wait still wakes it.
    pub fn subscribe_appends(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// Every stream the principal may see.
    ///
    /// # Errors
    /// [`EngineError::Forbidden`], store errors.
    pub async fn streams(&self, principal: &Principal) -> Result<Vec<StreamInfo>, EngineError> {
        principal.require(Scope::Consume)?;
        let mut out = Vec::new();
        for name in self.store.streams().await? {
            if principal.can_access(&name) {
                // A stream deleted between the list and the info is skipped.
                if let Ok(info) = self.store.info(&name).await {
                    out.push(info);
                }
            }
        }
        Ok(out)
    }

    /// Describes one stream.
    ///
    /// # Errors
    /// As [`Engine::read`].
    pub async fn info(
        &self,
        principal: &Principal,
        stream: &StreamName,
    ) -> Result<StreamInfo, EngineError> {
        principal.require(Scope::Consume)?;
        principal.check_stream(stream)?;
        Ok(self.store.info(stream).await?)
    }

    /// Trims a stream (admin).
    ///
    /// # Errors
    /// As [`Engine::read`], with the `admin` scope.
    pub async fn trim(
        &self,
        principal: &Principal,
        stream: &StreamName,
        trim: Trim,
    ) -> Result<u64, EngineError> {
        principal.require(Scope::Admin)?;
        principal.check_stream(stream)?;
        Ok(self.store.trim(stream, trim).await?)
    }

    /// Deletes events (admin).
    ///
    /// # Errors
    /// As [`Engine::trim`].
    pub async fn delete(
        &self,
        principal: &Principal,
        stream: &StreamName,
        ids: &[EventId],
    ) -> Result<u64, EngineError> {
        principal.require(Scope::Admin)?;
        principal.check_stream(stream)?;
        Ok(self.store.delete(stream, ids).await?)
    }

    /// Deletes a whole stream (admin).
    ///
    /// # Errors
    /// As [`Engine::trim`].
    pub async fn delete_stream(
        &self,
        principal: &Principal,
        stream: &StreamName,
    ) -> Result<bool, EngineError> {
        principal.require(Scope::Admin)?;
        principal.check_stream(stream)?;
        Ok(self.store.delete_stream(stream).await?)
    }

    /// Seals the active segment of one stream, or of every stream (admin).
    ///
    /// # Errors
    /// As [`Engine::trim`].
    pub async fn rotate(
        &self,
        principal: &Principal,
        stream: Option<&StreamName>,
    ) -> Result<Vec<(StreamName, Rotated)>, EngineError> {
        principal.require(Scope::Admin)?;
        let targets = match stream {
            Some(s) => vec![s.clone()],
            None => self.store.streams().await?,
        };
        let mut out = Vec::new();
        for s in targets {
            principal.check_stream(&s)?;
            out.push((s.clone(), self.store.rotate(&s).await?));
        }
        Ok(out)
    }

    /// Makes everything durable and closes the store (shutdown).
    ///
    /// # Errors
    /// Store errors.
    pub async fn shutdown(&self) -> Result<(), EngineError> {
        self.readiness.set_shutting_down();
        self.store.sync().await?;
        self.store.close().await?;
        Ok(())
    }

    /// Renders every metric in the Prometheus text format.
    pub async fn render_metrics(&self) -> String {
        use std::fmt::Write;
        let mut out = String::with_capacity(8192);
        self.metrics.render(&mut out);
        let mut lines: [String; 6] = Default::default();
        // By stream label: (exists, dead letters, largest group lag), for
        // the health verdict.
        let mut health: BTreeMap<String, (bool, u64, u64)> = BTreeMap::new();
        if let Ok(streams) = self.store.streams().await {
            for name in streams {
                let label = name.as_str().replace('\\', "\\\\").replace('"', "\\\"");
                if let Ok(groups) = self.store.groups(&name).await {
                    let lag = groups.iter().map(|g| g.lag).max().unwrap_or(0);
                    health.entry(label.clone()).or_default().2 = lag;
                    for g in groups {
                        let group = g.name.replace('\\', "\\\\").replace('"', "\\\"");
                        let l = format!("stream=\"{label}\",group=\"{group}\"");
                        let _ = writeln!(lines[3], "{}{{{l}}} {}", names::GROUP_LAG, g.lag);
                        let _ = writeln!(lines[4], "{}{{{l}}} {}", names::GROUP_PENDING, g.pending);
                    }
                }
                if let Ok(info) = self.store.info(&name).await {
                    if let Some(main) = label.strip_suffix(busbar_store::group::DLQ_SUFFIX) {
                        health.entry(main.to_owned()).or_default().1 = info.length;
                        let _ = writeln!(
                            lines[5],
                            "{}{{stream=\"{main}\"}} {}",
                            names::DLQ_LENGTH,
                            info.length
                        );
                    }
                    health.entry(label.clone()).or_default().0 = true;
                    let _ = writeln!(
                        lines[0],
                        "{}{{stream=\"{label}\"}} {}",
                        names::STREAM_LENGTH,
                        info.length
                    );
                    let _ = writeln!(
                        lines[1],
                        "{}{{stream=\"{label}\"}} {}",
                        names::STREAM_BYTES,
                        info.bytes
                    );
                    let _ = writeln!(
                        lines[2],
                        "{}{{stream=\"{label}\"}} {}",
                        names::STREAM_SEGMENTS,
                        info.segments
                    );
                }
            }
        }
        header(
            &mut out,
            names::STREAM_LENGTH,
            "gauge",
            "Events in each stream.",
        );
        out.push_str(&lines[0]);
        header(
            &mut out,
            names::STREAM_BYTES,
            "gauge",
            "Bytes of each stream's events.",
        );
        out.push_str(&lines[1]);
        header(
            &mut out,
            names::STREAM_SEGMENTS,
            "gauge",
            "Segment files of each stream.",
        );
        out.push_str(&lines[2]);
        for (i, name, help) in [
            (
                3,
                names::GROUP_LAG,
                "Events after a group's cursor not yet delivered.",
            ),
            (
                4,
                names::GROUP_PENDING,
                "Delivered, unacknowledged events of a group.",
            ),
            (
                5,
                names::DLQ_LENGTH,
                "Events in a stream's dead-letter stream (<stream>:dlq).",
            ),
        ] {
            header(&mut out, name, "gauge", help);
            out.push_str(&lines[i]);
        }
        header(
            &mut out,
            names::STREAM_DEGRADED,
            "gauge",
            "1 when a stream's /events/health is degraded (over [health] max_dlq or max_lag).",
        );
        let limits = self.config.health;
        for (label, (exists, dlq, lag)) in &health {
            if *exists && !label.ends_with(busbar_store::group::DLQ_SUFFIX) {
                let degraded = u8::from(limits.is_degraded(*dlq, *lag));
                let _ = writeln!(
                    out,
                    "{}{{stream=\"{label}\"}} {degraded}",
                    names::STREAM_DEGRADED
                );
            }
        }
        header(
            &mut out,
            names::JOBS_RUNNING,
            "gauge",
            "Background jobs running, by kind (at most jobs.max_running in all).",
        );
        for kind in crate::JobKind::ALL {
            let _ = writeln!(
                out,
                "{}{{kind=\"{}\"}} {}",
                names::JOBS_RUNNING,
                kind.as_str(),
                self.running_jobs(kind)
            );
        }
        let sources: Vec<Arc<dyn MetricsSource>> = self.metric_sources.lock().clone();
        for source in sources {
            source.render(&mut out);
        }
        out
    }
}
