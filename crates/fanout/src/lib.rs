//! busbar's live fan-out, without a transport: feeds, subscriptions,
//! rooms and delayed rooms, producer sessions and clock drift, and the live
//! protocol's connection logic.
//!
//! This crate knows no HTTP or WebSocket type. A transport (`busbar-live`
//! serves `/ws` and the ingest sockets) hands each connection to
//! [`connection::serve`] as an [`connection::Inbound`] that yields client
//! messages and an [`connection::Outbound`] that writes [`Outgoing`]
//! messages; the messages are [`Text`] (UTF-8 [`bytes::Bytes`], shared,
//! never copied per subscriber).
//!
//! - Subscribe to streams (lossy live, or resumable from an id or a time),
//!   join rooms (`session:<id>` live, `broadcast:session:<id>` delayed),
//!   publish, and set broadcast delays (director capability). The protocol
//!   is in [`protocol`].
//! - Tenants: a tenant-bound caller reaches only its tenant's streams and
//!   events, a session id belongs to the tenant that used it first
//!   ([`sessions`]), and every connection carries its caller's tenant
//!   ([`sockets`]), so the ops routes can answer each tenant with its own.
//! - Producer sessions with frame counts, rates and clock drift
//!   ([`sessions`]); connections with role and rooms ([`sockets`]); room
//!   sizes and delays ([`rooms`]). The ops routes that show them are
//!   `busbar-live`'s.
//!
//! Streams are read through the engine (`Engine::read_live`), never the
//! store: scopes, tenants, read limits and admission apply, and a failed
//! read is reported, not taken for an empty stream ([`feed`]).
//!
//! Each stream with live subscribers has one feed ([`feed`]) that follows
//! its log and broadcasts new events through a bounded, lossy channel.
//! Every connection has a bounded send queue and a write deadline; a slow
//! client is dropped behind (with a `lagged` notice) or disconnected, as its
//! subscription asks, and never slows anybody else.

#![warn(missing_docs)]

pub mod connection;
pub mod feed;
mod message;
pub mod metrics;
pub mod protocol;
mod queue;
pub mod rooms;
pub mod sessions;
pub mod sockets;
mod subscribe;
mod transport;

use std::sync::Arc;
use std::time::Duration;

use busbar_engine::{Engine, EngineError, Hook, Principal};
use busbar_event::{EventBatch, StreamName};
use thiserror::Error;

pub use message::{CloseReason, Outgoing, Text};

/// Live fan-out limits.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// Events a stream's feed holds for its slowest live subscriber.
    pub feed_capacity: usize,
    /// Messages a connection's send queue holds.
    pub send_queue: usize,
    /// How long a message of a `slow: disconnect` subscription may wait
    /// for room in the send queue before the connection is closed.
    pub write_deadline: Duration,
    /// How long a client may take none of what is written to it before its
    /// connection is closed, whatever its subscriptions: a slower client
    /// that still reads keeps its connection, and its lossy subscriptions
    /// skip events (with `lagged` notices).
    pub stall_timeout: Duration,
    /// Ping interval; a WebSocket client silent for two intervals is
    /// disconnected (socket clients get no pings, see [`protocol`]).
    pub heartbeat: Duration,
    /// Largest message a client may send.
    pub max_message_bytes: usize,
    /// Deepest nesting of a published event (its own object is depth 1).
    /// A message may nest two levels deeper (the message object and a
    /// publish's `events` array), and is refused as `too_deep` past that
    /// before serde_json reads it.
    pub max_depth: usize,
    /// Origins browsers may connect from (`https://ops.example.com`). Empty:
    /// only the daemon's own host, or clients that send no Origin.
    pub allowed_origins: Vec<String>,
    /// Most live connections, WebSocket and socket together.
    pub max_connections: usize,
    /// Most subscriptions and rooms per connection.
    pub max_subscriptions: usize,
    /// Broadcast delay of a session nobody set one for.
    pub default_delay: Duration,
    /// Longest broadcast delay a director may set.
    pub max_delay: Duration,
    /// Session tracking.
    pub sessions: sessions::SessionConfig,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        FanoutConfig {
            feed_capacity: 4096,
            send_queue: 1024,
            write_deadline: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(60),
            heartbeat: Duration::from_secs(15),
            max_message_bytes: 1024 * 1024,
            max_depth: busbar_event::Limits::DEFAULT_MAX_DEPTH,
            allowed_origins: Vec::new(),
            max_connections: 10_000,
            max_subscriptions: 64,
            default_delay: Duration::ZERO,
            max_delay: Duration::from_secs(600),
            sessions: sessions::SessionConfig::default(),
        }
    }
}

/// Why a live request was refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FanoutError {
    /// The message is not a valid client op.
    #[error("bad message: {reason}")]
    BadMessage {
        /// What is wrong.
        reason: String,
    },
    /// The connection's role may not join this room: an overlay shows the
    /// delayed broadcast, so it joins `broadcast:session:<id>` rooms only.
    #[error("a connection with role `{role}` may join broadcast:session:* rooms only, not `{room}`: an overlay shows the delayed broadcast (join broadcast:session:<id>)")]
    RoleForbids {
        /// The connection's role.
        role: &'static str,
        /// The room it asked for.
        room: String,
    },
    /// One event of a publish was refused (nothing was appended).
    #[error("event {index}: {source}")]
    BadEvent {
        /// Its position in the message.
        index: usize,
        /// Why.
        source: EngineError,
    },
    /// A room name that is not `session:<id>` or `broadcast:session:<id>`.
    #[error("bad room: {reason}")]
    BadRoom {
        /// What is wrong.
        reason: &'static str,
    },
    /// Past the per-connection subscription limit.
    #[error("at most {limit} subscriptions and rooms per connection")]
    TooManySubscriptions {
        /// The limit.
        limit: usize,
    },
    /// A broadcast delay past the maximum.
    #[error("broadcast delay is at most {max_ms} ms")]
    DelayTooLong {
        /// The maximum.
        max_ms: u64,
    },
    /// A session id that belongs to another tenant (see [`sessions`]).
    #[error("session `{session}` belongs to another tenant")]
    SessionTaken {
        /// The id.
        session: String,
    },
    /// The engine refused (scope, tenant, storage).
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl FanoutError {
    /// When the client should try again, for refusals that pass
    /// (`overloaded`, `paused`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FanoutError::BadEvent { source, .. } | FanoutError::Engine(source) => {
                source.retry_after()
            }
            _ => None,
        }
    }

    /// A short, stable reason for error messages.
    pub fn reason(&self) -> &'static str {
        match self {
            FanoutError::BadMessage { .. } => "bad_message",
            FanoutError::BadEvent { source, .. } => source.reason(),
            FanoutError::BadRoom { .. } => "bad_room",
            FanoutError::RoleForbids { .. } => "role_forbids_room",
            FanoutError::TooManySubscriptions { .. } => "too_many_subscriptions",
            FanoutError::DelayTooLong { .. } => "delay_too_long",
            FanoutError::SessionTaken { .. } => "session_taken",
            FanoutError::Engine(e) => e.reason(),
        }
    }
}

/// The live hub: feeds, connections, sessions and delays.
pub struct Fanout {
    engine: Arc<Engine>,
    config: FanoutConfig,
    metrics: Arc<metrics::FanoutMetrics>,
    feeds: Arc<feed::Feeds>,
    sessions: Arc<sessions::Sessions>,
    sockets: Arc<sockets::Sockets>,
    delays: Arc<rooms::Delays>,
    closing: tokio::sync::watch::Sender<bool>,
    /// Rate limit of the log lines about slow clients.
    slow_log: Throttled,
}

/// A warning logged at most once per interval, with how many were
/// suppressed since (a crowd of slow clients must not flood the log).
#[derive(Debug)]
pub(crate) struct Throttled {
    every: Duration,
    state: parking_lot::Mutex<(Option<std::time::Instant>, u64)>,
}

impl Throttled {
    fn new(every: Duration) -> Self {
        Throttled {
            every,
            state: parking_lot::Mutex::new((None, 0)),
        }
    }

    /// `Some(suppressed)` when a line may be written now.
    pub(crate) fn ready(&self) -> Option<u64> {
        let mut state = self.state.lock();
        let now = std::time::Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < self.every => {
                state.1 += 1;
                None
            }
            _ => {
                state.0 = Some(now);
                Some(std::mem::take(&mut state.1))
            }
        }
    }
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Counts producer sessions and clock drift from every published batch,
/// under the publisher's tenant (see [`sessions`]).
struct SessionHook(Arc<sessions::Sessions>);

impl Hook for SessionHook {
    fn name(&self) -> &'static str {
        "live-sessions"
    }

    fn publishing(&self, principal: &Principal, _stream: &StreamName, batch: &EventBatch) {
        let now = busbar_event::now_ms();
        for (session, ts) in batch.sessions() {
            self.0.observe(principal.tenant(), session, ts, now);
        }
    }
}

impl Fanout {
    /// The hub over `engine`. Registers a hook with the engine, so every
    /// published event with a `session` is counted, and its metrics with
    /// the engine's registry.
    pub fn new(engine: Arc<Engine>, config: FanoutConfig) -> Arc<Fanout> {
        let journal = engine.journal().clone();
        let sessions =
            Arc::new(sessions::Sessions::new(config.sessions).with_journal(journal.clone()));
        engine.add_hook(Arc::new(SessionHook(sessions.clone())));
        let metrics = Arc::new(metrics::FanoutMetrics::default());
        let hub = Arc::new(Fanout {
            feeds: feed::Feeds::new(engine.clone(), metrics.clone(), config.feed_capacity),
            delays: Arc::new(rooms::Delays::new(config.default_delay, config.max_delay)),
            sockets: Arc::new(sockets::Sockets::default().with_journal(journal)),
            sessions,
            metrics,
            engine: engine.clone(),
            config,
            closing: tokio::sync::watch::Sender::new(false),
            slow_log: Throttled::new(Duration::from_secs(10)),
        });
        // Weak: the registry must not keep the hub alive.
        let weak: std::sync::Weak<dyn busbar_metrics::Collector> = Arc::downgrade(&hub) as _;
        engine.registry().register_weak(weak);
        hub
    }

    /// Closes every live connection (shutdown). New connections are
    /// refused from then on ([`Fanout::is_closing`]).
    pub fn shutdown(&self) {
        self.closing.send_replace(true);
    }

    /// Whether the hub is shutting down.
    pub fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The limits.
    pub fn config(&self) -> &FanoutConfig {
        &self.config
    }

    /// The hub's counters.
    pub fn metrics(&self) -> &metrics::FanoutMetrics {
        &self.metrics
    }

    /// Producer sessions.
    pub fn sessions(&self) -> &sessions::Sessions {
        &self.sessions
    }

    /// Connected sockets.
    pub fn sockets(&self) -> &Arc<sockets::Sockets> {
        &self.sockets
    }

    /// Broadcast delays.
    pub fn delays(&self) -> &rooms::Delays {
        &self.delays
    }

    /// Counts a connection busbar closed, by reason (`too_slow`,
    /// `message too big`...).
    pub fn count_close(&self, reason: &'static str) {
        self.metrics.closes.get([reason]).inc();
    }

    /// Counts a refused connection (an upgrade or hand-over) by reason.
    pub fn count_rejected(&self, reason: &'static str) {
        self.metrics.rejected.get([reason]).inc();
    }

    /// Why a new connection would be refused now, if it would: the hub is
    /// shutting down, or `[live] max_connections` is reached.
    pub fn refusal(&self) -> Option<(&'static str, String)> {
        if self.is_closing() {
            return Some(("shutting_down", "busbar is shutting down".to_owned()));
        }
        if self.sockets.len() >= self.config.max_connections {
            return Some((
                "too_many_connections",
                format!(
                    "at most {} live connections (WebSocket and socket)",
                    self.config.max_connections
                ),
            ));
        }
        None
    }
}
