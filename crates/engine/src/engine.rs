//! The [`Engine`]: what every transport calls, and the extension points
//! the side services plug into.
//!
//! # Extension points
//!
//! busbar grows by adding side services (the live hub, relays, the ops API,
//! overload control, an audit log) around an engine that does not know
//! them. Each kind of extension has exactly one seam:
//!
//! | seam | trait | what it is for |
//! |---|---|---|
//! | engine hooks | [`Hook`](crate::Hook) ([`crate::hooks`]) | an ordered list registered at start-up with [`Engine::add_hook`]: [`Hook::admit`](crate::Hook::admit) may refuse a publish, a read or a connection (`Overloaded { reason, retry_after }` or `Paused { reason }`); [`Hook::publishing`](crate::Hook::publishing) and [`Hook::published`](crate::Hook::published) observe every client batch before and after its append; [`Hook::administered`](crate::Hook::administered) sees every administrative action once it succeeded ([`crate::admin`]) |
//! | metrics | `busbar_metrics::Collector` | a side service keeps its instruments in a struct of its own and registers it with the [`Registry`](busbar_metrics::Registry) ([`Engine::registry`]); it never needs the engine to record |
//! | operator surfaces | commands and `/api/ops/*` routes | registered with the ops crate (`busbar-ops`), which owns the command socket and the ops routes |
//! | connection hand-over | `busbar_ingest::LiveUpgrade` | an ingest connection that switches to the live protocol is handed to the live hub, so ingest does not depend on it |
//! | the embeddable bus | `busbar_bus::BusObserver` | the standalone bus library's own counters (it is usable without busbar) |
//!
//! These replace the five one-off hooks there were: the single publish
//! observer (a second one was silently refused) and the extra metrics
//! source became [`Hook`](crate::Hook) and `Collector`; the store's commit
//! observer became metrics the store records itself.
//!
//! # Reads go through the engine
//!
//! Everything outside the engine reads streams through it ([`Engine::read`],
//! [`Engine::position`], ...), never through the store: that is where the
//! caller's scope and tenant are checked, reads are capped at
//! [`EngineConfig::max_read_count`], admission is asked, and a store error
//! comes back as an error instead of an empty answer.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use busbar_event::{Event, EventBatch, EventId, StreamName};
use busbar_metrics::{ProcessMetrics, Registry};
use busbar_store::{AppendOptions, Appended, ReadQuery, Rotated, Store, StreamInfo, Trim};
use tokio::sync::watch;

use crate::gauges::ScrapeGauges;
use crate::hooks::{Admit, Hook};
use crate::{
    AdminAction, Auth, EngineConfig, EngineError, Metrics, Principal, ReadOp, Readiness, Scope,
    Transport,
};

/// The core engine. Cheap to share (`Arc<Engine>`).
pub struct Engine {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) auth: Auth,
    /// Swapped whole when a reload changes a limit ([`Engine::set_limits`]).
    pub(crate) config: ArcSwap<EngineConfig>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) store_metrics: Arc<busbar_store::StoreMetrics>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) process: Arc<ProcessMetrics>,
    pub(crate) gauges: Arc<ScrapeGauges>,
    pub(crate) readiness: Readiness,
    pub(crate) appended: watch::Sender<u64>,
    pub(crate) pauses: crate::groups::Pauses,
    pub(crate) jobs: crate::jobs::Jobs,
    /// Serialises moves out of dead-letter streams, so two requests never
    /// move the same entry twice.
    pub(crate) dlq_moves: tokio::sync::Mutex<()>,
    /// Registration order; swapped whole when a hook is added, so the hot
    /// path reads it without a lock.
    pub(crate) hooks: ArcSwap<Vec<Arc<dyn Hook>>>,
    /// Where ops events go ([`crate::journal`]).
    pub(crate) journal: crate::Journal,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("store", &self.store.kind())
            .field(
                "hooks",
                &self
                    .hooks
                    .load()
                    .iter()
                    .map(|h| h.name())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Adds `hook` after the hooks registered before it (see
    /// [`crate::hooks`]). Meant for start-up; a hook added later sees only
    /// what comes after.
    pub fn add_hook(&self, hook: Arc<dyn Hook>) {
        self.hooks.rcu(|hooks| {
            let mut next = Vec::clone(hooks);
            next.push(hook.clone());
            next
        });
    }

    /// Asks every hook whether `request` may go ahead; the first refusal
    /// wins, is counted in `busbar_admission_refused_total` and comes back
    /// as [`EngineError::Overloaded`] or [`EngineError::Paused`].
    ///
    /// # Errors
    /// The refusal.
    pub fn admit(&self, request: &Admit<'_>) -> Result<(), EngineError> {
        for hook in self.hooks.load().iter() {
            if let Err(refusal) = hook.admit(request) {
                let reason = match &refusal {
                    crate::Refusal::Overloaded { .. } => "overloaded",
                    crate::Refusal::Paused { .. } => "paused",
                };
                self.metrics
                    .admission_refused
                    .get([request.kind(), reason])
                    .inc();
                return Err(refusal.into());
            }
        }
        Ok(())
    }

    /// Whether a connection just accepted on `transport` from `peer` may be
    /// served (see [`Engine::admit`]); every listener asks before serving.
    ///
    /// # Errors
    /// The refusal.
    pub fn admit_connection(&self, transport: Transport, peer: &str) -> Result<(), EngineError> {
        self.admit(&Admit::Connect { transport, peer })
    }

    /// The store, for the daemon's wiring and for tests. Side services
    /// read through the engine instead (see the module docs).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The storage backend's name (`embedded`, `memory`, ...).
    pub fn backend(&self) -> &'static str {
        self.store.kind()
    }

    /// The store's write-path metrics (group commits, fsync times, failed
    /// writes).
    pub fn store_metrics(&self) -> &Arc<busbar_store::StoreMetrics> {
        &self.store_metrics
    }

    /// Every reason the daemon should not get traffic now (empty: ready):
    /// the readiness checks, and the store's write health (a full disk,
    /// failing writes). Does a small probe write: call it per readiness
    /// request, not per event.
    pub fn not_ready(&self) -> Vec<crate::NotReady> {
        let mut reasons = self.readiness.check();
        if let Some(reason) = crate::NotReady::from_write_health(self.store.write_health()) {
            reasons.push(reason);
        }
        reasons
    }

    /// The store's write health alone (cheap: no probe).
    pub fn write_health(&self) -> busbar_store::WriteHealth {
        self.store.write_health()
    }

    /// The registry `/metrics` renders; side services register their
    /// collectors with it.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Time since the engine started (the daemon's uptime).
    pub fn uptime(&self) -> Duration {
        self.process.uptime()
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

    /// Limits in force (one atomic load; hold the guard briefly).
    pub fn config(&self) -> arc_swap::Guard<Arc<EngineConfig>> {
        self.config.load()
    }

    /// Changes the limits read per request: [`EngineConfig::max_batch_events`]
    /// and [`EngineConfig::max_read_count`] (a config reload). Requests
    /// already running keep the values they started with; jobs and health
    /// thresholds are set once at start-up.
    pub fn set_limits(&self, max_batch_events: usize, max_read_count: usize) {
        let mut config = EngineConfig::clone(&self.config.load());
        config.max_batch_events = max_batch_events.max(1);
        config.max_read_count = max_read_count.max(1);
        self.config.store(Arc::new(config));
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
    /// Resolves when the store's durability policy holds. Answers one id
    /// per event: see [`Engine::publish_detailed`].
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
        let appended = self
            .publish_detailed(principal, stream, batch, opts, transport)
            .await?;
        Ok(appended.ids)
    }

    /// [`Engine::publish`], telling which events were repeats. A client's
    /// publish is idempotent: an event whose `idempotency_key` the stream
    /// remembers (the store's duplicate window, [`busbar_store::Dedup`]),
    /// or that repeats a key earlier in the batch, is not stored again but
    /// answered with the original's id and listed in
    /// [`Appended::duplicates`]. Hooks' `publishing` sees the batch as
    /// the client sent it (repeats included: producer statistics count what
    /// producers send), `published` the ids of the stored events only, and
    /// `busbar_events_ingested_total` counts those.
    ///
    /// # Errors
    /// [`EngineError::BatchTooLarge`], store errors.
    pub async fn publish_detailed(
        &self,
        principal: &Principal,
        stream: &StreamName,
        batch: EventBatch,
        opts: AppendOptions,
        transport: Transport,
    ) -> Result<Appended, EngineError> {
        let opts = AppendOptions {
            dedup: true,
            ..opts
        };
        let result = self
            .publish_inner(principal, stream, batch, opts, transport)
            .await;
        match &result {
            Ok(appended) => {
                let stored = appended.ids.len() - appended.duplicates.len();
                self.metrics
                    .events_ingested
                    .get([stream.as_str(), transport.as_str()])
                    .add(stored as u64);
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
        transport: Transport,
    ) -> Result<Appended, EngineError> {
        principal.require(Scope::Publish)?;
        principal.check_stream(stream)?;
        if crate::journal::is_internal(stream.as_str()) {
            return Err(EngineError::ReservedStream {
                stream: stream.clone(),
            });
        }
        if opts.trim.is_some() {
            principal.require(Scope::Admin)?;
        }
        let max_batch_events = self.config.load().max_batch_events;
        if batch.len() > max_batch_events {
            return Err(EngineError::BatchTooLarge {
                len: batch.len(),
                limit: max_batch_events,
            });
        }
        // A reference of our own (not a guard) lives across the append's
        // await; none is taken when no hook is registered.
        let hooks = {
            let current = self.hooks.load();
            (!current.is_empty()).then(|| Arc::clone(&current))
        };
        if let Some(hooks) = &hooks {
            self.admit(&Admit::Publish {
                principal,
                stream,
                events: batch.len(),
                transport,
            })?;
            for hook in hooks.iter() {
                hook.publishing(principal, stream, &batch);
            }
        }
        let started = Instant::now();
        let appended = self.store.append_detailed(stream, batch, opts).await?;
        self.metrics.append_seconds.observe(started.elapsed());
        if appended.duplicates.len() < appended.ids.len() {
            self.appended.send_modify(|n| *n += 1);
        }
        if let Some(hooks) = hooks
            .as_ref()
            .filter(|_| appended.duplicates.len() < appended.ids.len())
        {
            // Repeats were stored before: observers see new events only.
            let stored: Cow<'_, [EventId]> = if appended.duplicates.is_empty() {
                Cow::Borrowed(&appended.ids)
            } else {
                Cow::Owned(appended.stored_ids().collect())
            };
            for hook in hooks.iter() {
                hook.published(stream, &stored, transport);
            }
        }
        Ok(appended)
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

    /// Counts a rejected request or event, and records it in the ops
    /// journal (by reason, at most once a second per reason).
    pub fn count_error(&self, transport: Transport, error: &EngineError) {
        self.metrics
            .ingest_errors
            .get([transport.as_str(), error.reason()])
            .inc();
        self.journal
            .record_error(error.reason(), transport.as_str());
    }

    /// The ops journal: record what happened to the system here.
    pub fn journal(&self) -> &crate::Journal {
        &self.journal
    }

    /// The count a read asking for `asked` events runs with: at most
    /// [`EngineConfig::max_read_count`]. A larger ask is clamped, not
    /// refused, since a read returns *at most* its count anyway (range
    /// reads and DLQ listings then answer with a `next` position to go on
    /// from), and counted in `busbar_reads_clamped_total` by `op`.
    pub fn clamp_read_count(&self, op: ReadOp, asked: usize) -> usize {
        let max = self.config.load().max_read_count;
        if asked > max {
            self.metrics.reads_clamped.get([op.as_str()]).inc();
            return max;
        }
        asked
    }

    /// Reads a range of at most [`EngineConfig::max_read_count`] events.
    ///
    /// # Errors
    /// [`EngineError::Forbidden`], [`EngineError::WrongTenant`], a refusal
    /// by admission, store errors (unknown stream, inverted range, I/O).
    pub async fn read(
        &self,
        principal: &Principal,
        stream: &StreamName,
        query: ReadQuery,
    ) -> Result<Vec<Event>, EngineError> {
        self.read_as(principal, stream, query, ReadOp::Range).await
    }

    /// [`Engine::read`] for a live feed or subscription following a
    /// stream (admission sees it as [`ReadOp::Live`]).
    ///
    /// # Errors
    /// As [`Engine::read`].
    pub async fn read_live(
        &self,
        principal: &Principal,
        stream: &StreamName,
        query: ReadQuery,
    ) -> Result<Vec<Event>, EngineError> {
        self.read_as(principal, stream, query, ReadOp::Live).await
    }

    async fn read_as(
        &self,
        principal: &Principal,
        stream: &StreamName,
        mut query: ReadQuery,
        op: ReadOp,
    ) -> Result<Vec<Event>, EngineError> {
        principal.require(Scope::Consume)?;
        principal.check_stream(stream)?;
        self.admit_read(principal, stream, op)?;
        query.count = self.clamp_read_count(op, query.count);
        Ok(self.store.read(stream, &query).await?)
    }

    /// Asks the hooks whether a read may go ahead (skipped when there is
    /// none).
    pub(crate) fn admit_read(
        &self,
        principal: &Principal,
        stream: &StreamName,
        op: ReadOp,
    ) -> Result<(), EngineError> {
        if self.hooks.load().is_empty() {
            return Ok(());
        }
        self.admit(&Admit::Read {
            principal,
            stream,
            op,
        })
    }

    /// Where a stream ends now: its last id and how many events it was
    /// ever given ([`StreamInfo::added`]), for followers that must tell
    /// events the stream's retention removed from events they have not
    /// read yet.
    ///
    /// # Errors
    /// As [`Engine::read`].
    pub async fn position(
        &self,
        principal: &Principal,
        stream: &StreamName,
    ) -> Result<(EventId, u64), EngineError> {
        principal.require(Scope::Consume)?;
        principal.check_stream(stream)?;
        let info = self.store.info(stream).await?;
        Ok((info.last_id, info.added))
    }

    /// [`StreamInfo::added`] of a stream alone (cheaper than its info).
    ///
    /// # Errors
    /// As [`Engine::read`].
    pub async fn added(
        &self,
        principal: &Principal,
        stream: &StreamName,
    ) -> Result<u64, EngineError> {
        principal.require(Scope::Consume)?;
        principal.check_stream(stream)?;
        Ok(self.store.added(stream).await?)
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
        let removed = self.store.trim(stream, trim).await?;
        self.administered(
            principal,
            &AdminAction::Trim {
                stream,
                trim,
                removed,
            },
        );
        Ok(removed)
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
        let deleted = self.store.delete(stream, ids).await?;
        self.administered(
            principal,
            &AdminAction::DeleteEvents {
                stream,
                ids,
                deleted,
            },
        );
        Ok(deleted)
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
        let existed = self.store.delete_stream(stream).await?;
        self.administered(principal, &AdminAction::DeleteStream { stream, existed });
        Ok(existed)
    }

    /// Seals the active segment of one stream, or of every stream the
    /// principal may see (admin).
    ///
    /// # Errors
    /// As [`Engine::trim`].
    pub async fn rotate(
        &self,
        principal: &Principal,
        stream: Option<&StreamName>,
    ) -> Result<Vec<(StreamName, Rotated)>, EngineError> {
        self.rotate_because(principal, stream, "requested").await
    }

    /// [`Engine::rotate`], journaling `reason` with each sealed segment
    /// (`storage:rotate`).
    ///
    /// # Errors
    /// As [`Engine::trim`].
    pub async fn rotate_because(
        &self,
        principal: &Principal,
        stream: Option<&StreamName>,
        reason: &str,
    ) -> Result<Vec<(StreamName, Rotated)>, EngineError> {
        principal.require(Scope::Admin)?;
        let targets = match stream {
            Some(s) => vec![s.clone()],
            None => {
                let mut all = self.store.streams().await?;
                all.retain(|s| principal.can_access(s));
                all
            }
        };
        let mut out = Vec::new();
        for s in targets {
            principal.check_stream(&s)?;
            let rotated = match self.store.rotate(&s).await {
                Ok(rotated) => rotated,
                Err(e) => {
                    // The streams sealed before the failure were rotated.
                    if !out.is_empty() {
                        self.administered(
                            principal,
                            &AdminAction::Rotate {
                                stream,
                                rotated: &out,
                                reason,
                            },
                        );
                    }
                    return Err(e.into());
                }
            };
            if rotated.sealed {
                let tenant = s.as_str().split_once(':').map(|(t, _)| t);
                self.journal.record(
                    crate::OpsEvent::new("storage:rotate", "storage")
                        .tenant(tenant.filter(|_| principal.tenant().is_some()))
                        .field("stream", s.as_str())
                        .field("segments", rotated.segments)
                        .field("reason", reason),
                );
            }
            out.push((s.clone(), rotated));
        }
        self.administered(
            principal,
            &AdminAction::Rotate {
                stream,
                rotated: &out,
                reason,
            },
        );
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

    /// Renders every metric in the Prometheus text format: reads the
    /// streams' figures from the store in one call, then renders the
    /// registry.
    pub async fn render_metrics(&self) -> String {
        self.refresh_gauges().await;
        self.registry.render()
    }

    /// [`Engine::render_metrics`] as `principal` may see it: it needs the
    /// `metrics` scope (which `admin` implies), and a tenant-bound
    /// principal gets only the samples whose `stream` label names one of
    /// its streams, besides the process-wide ones (no `stream` label).
    ///
    /// # Errors
    /// [`EngineError::Forbidden`].
    pub async fn render_metrics_for(&self, principal: &Principal) -> Result<String, EngineError> {
        principal.require(Scope::Metrics)?;
        self.refresh_gauges().await;
        if principal.tenant().is_none() {
            return Ok(self.registry.render());
        }
        let keep = |stream: &str| principal.can_access_name(stream);
        Ok(self.registry.render_streams(&keep))
    }

    async fn refresh_gauges(&self) {
        let streams = self.store.stats().await.unwrap_or_default();
        let jobs = crate::JobKind::ALL
            .iter()
            .map(|&kind| (kind, self.running_jobs(kind)))
            .collect();
        self.gauges.update(streams, jobs, self.store.write_health());
    }
}
