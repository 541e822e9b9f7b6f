//! Building an [`Engine`]: its limits ([`EngineConfig`]) and the
//! [`EngineBuilder`].

use std::sync::Arc;

use arc_swap::ArcSwap;
use busbar_metrics::{ProcessMetrics, Registry};
use busbar_store::{Store, StoreMetrics};
use tokio::sync::watch;

use crate::gauges::ScrapeGauges;
use crate::{Auth, Engine, Metrics, Readiness};

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
    /// The ops journal's bounds.
    pub journal: crate::JournalConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_batch_events: 10_000,
            max_read_count: 10_000,
            jobs: crate::JobsConfig::default(),
            health: crate::HealthThresholds::default(),
            journal: crate::JournalConfig::default(),
        }
    }
}

/// Builds an [`Engine`]: everything but the store has a default.
#[must_use]
pub struct EngineBuilder {
    store: Arc<dyn Store>,
    auth: Auth,
    config: EngineConfig,
    metrics: Option<Arc<Metrics>>,
    registry: Option<Arc<Registry>>,
    readiness: Option<Readiness>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("store", &self.store.kind())
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// Tokens (default: none, every caller is open).
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Limits (default: [`EngineConfig::default`]).
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// The engine's metrics, when the caller made them first (the embedded
    /// store records its commits in them).
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The registry `/metrics` renders (default: a new one). The engine
    /// registers its own collectors with it.
    pub fn registry(mut self, registry: Arc<Registry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Readiness (default: a memory daemon's, with no data directory).
    pub fn readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = Some(readiness);
        self
    }

    /// The engine.
    pub fn build(self) -> Arc<Engine> {
        let metrics = self.metrics.unwrap_or_default();
        let registry = self.registry.unwrap_or_default();
        // The store's own, or zeros for a store that records none.
        let store_metrics: Arc<StoreMetrics> = self.store.metrics().unwrap_or_default();
        let process = Arc::new(ProcessMetrics::default());
        let gauges = Arc::new(ScrapeGauges::new(self.config.health));
        registry.register(metrics.clone());
        registry.register(store_metrics.clone());
        registry.register(gauges.clone());
        registry.register(process.clone());
        let (appended, _) = watch::channel(0);
        let journal = crate::Journal::new(self.config.journal.clone());
        registry.register(Arc::new(journal.clone()));
        let jobs = crate::jobs::Jobs::new(self.config.jobs.clone(), metrics.clone());
        Arc::new(Engine {
            store: self.store,
            auth: self.auth,
            config: ArcSwap::from_pointee(self.config),
            metrics,
            store_metrics,
            registry,
            process,
            gauges,
            readiness: self.readiness.unwrap_or_else(|| Readiness::new(None, 0)),
            appended,
            pauses: crate::groups::Pauses::default(),
            jobs,
            dlq_moves: tokio::sync::Mutex::new(()),
            hooks: ArcSwap::from_pointee(Vec::new()),
            journal,
        })
    }
}

impl Engine {
    /// A builder over `store`.
    pub fn builder(store: Arc<dyn Store>) -> EngineBuilder {
        EngineBuilder {
            store,
            auth: Auth::default(),
            config: EngineConfig::default(),
            metrics: None,
            registry: None,
            readiness: None,
        }
    }
}
