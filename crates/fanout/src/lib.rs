//! busbar's live fan-out over WebSocket and the ingest sockets.
//!
//! - `/ws`: subscribe to streams (lossy live, or resumable from an id or a
//!   time), join rooms (`session:<id>` live, `broadcast:session:<id>`
//!   delayed), publish, and set broadcast delays (director capability).
//!   The protocol is in [`protocol`].
//! - The same protocol, one message per line, on a Unix or TCP ingest
//!   connection that sends a live op: `busbar-ingest` hands it over
//!   through the [`busbar_ingest::LiveUpgrade`] this hub implements
//!   (install it with `Ingest::with_live`).
//! - `/api/ops/sessions`: producer sessions with frame counts, rates and
//!   clock drift; `/api/ops/sockets`: connections with role and rooms;
//!   `/api/ops/rooms`: room sizes and delays.
//!
//! Each stream with live subscribers has one feed ([`feed`]) that follows
//! its log and broadcasts new events through a bounded, lossy channel.
//! Every connection has a bounded send queue and a write deadline; a slow
//! client is dropped behind (with a `lagged` notice) or disconnected, as its
//! subscription asks, and never slows anybody else.

#![warn(missing_docs)]

mod connection;
pub mod feed;
mod http;
pub mod protocol;
mod queue;
pub mod rooms;
pub mod sessions;
mod socket;
pub mod sockets;
mod subscribe;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use busbar_engine::{Engine, EngineError, MetricsSource, PublishObserver};
use busbar_event::{EventBatch, StreamName};
use thiserror::Error;

pub use http::router;

/// Live fan-out limits.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Events a stream's feed holds for its slowest live subscriber.
    pub feed_capacity: usize,
    /// Messages a connection's send queue holds.
    pub send_queue: usize,
    /// How long one message may take to reach a client before the
    /// connection is considered stuck.
    pub write_deadline: Duration,
    /// Ping interval; a WebSocket client silent for two intervals is
    /// disconnected (socket clients get no pings, see [`protocol`]).
    pub heartbeat: Duration,
    /// Largest message a client may send.
    pub max_message_bytes: usize,
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

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            feed_capacity: 4096,
            send_queue: 1024,
            write_deadline: Duration::from_secs(10),
            heartbeat: Duration::from_secs(15),
            max_message_bytes: 1024 * 1024,
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
pub enum LiveError {
    /// The message is not a valid client op.
    #[error("bad message: {reason}")]
    BadMessage {
        /// What is wrong.
        reason: String,
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
    /// The engine refused (scope, tenant, storage).
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl LiveError {
    /// A short, stable reason for error messages.
    pub fn reason(&self) -> &'static str {
        match self {
            LiveError::BadMessage { .. } => "bad_message",
            LiveError::BadEvent { source, .. } => source.reason(),
            LiveError::BadRoom { .. } => "bad_room",
            LiveError::TooManySubscriptions { .. } => "too_many_subscriptions",
            LiveError::DelayTooLong { .. } => "delay_too_long",
            LiveError::Engine(e) => e.reason(),
        }
    }
}

/// The live hub: feeds, connections, sessions and delays.
pub struct Live {
    engine: Arc<Engine>,
    config: LiveConfig,
    feeds: Arc<feed::Feeds>,
    sessions: Arc<sessions::Sessions>,
    sockets: Arc<sockets::Sockets>,
    delays: Arc<rooms::Delays>,
    closing: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

struct SessionObserver(Arc<sessions::Sessions>);

impl PublishObserver for SessionObserver {
    fn publishing(&self, _stream: &StreamName, batch: &EventBatch) {
        let now = busbar_event::now_ms();
        for (session, ts) in batch.sessions() {
            self.0.observe(session, ts, now);
        }
    }
}

impl Live {
    /// The hub over `engine`. Installs itself as the engine's publish
    /// observer, so every published event with a `session` is counted.
    pub fn new(engine: Arc<Engine>, config: LiveConfig) -> Arc<Live> {
        let sessions = Arc::new(sessions::Sessions::new(config.sessions));
        engine.set_publish_observer(Arc::new(SessionObserver(sessions.clone())));
        let live = Arc::new(Live {
            feeds: feed::Feeds::new(engine.clone(), config.feed_capacity),
            delays: Arc::new(rooms::Delays::new(config.default_delay, config.max_delay)),
            sockets: Arc::new(sockets::Sockets::default()),
            sessions,
            engine: engine.clone(),
            config,
            closing: tokio::sync::watch::Sender::new(false),
        });
        engine.add_metrics_source(Arc::new(LiveMetrics(Arc::downgrade(&live))));
        live
    }

    /// Closes every live connection (shutdown). New upgrades and socket
    /// hand-overs are refused from then on.
    pub fn shutdown(&self) {
        self.closing.send_replace(true);
    }

    /// Producer sessions.
    pub fn sessions(&self) -> &sessions::Sessions {
        &self.sessions
    }

    /// Connected sockets.
    pub fn sockets(&self) -> &sockets::Sockets {
        &self.sockets
    }

    /// Broadcast delays.
    pub fn delays(&self) -> &rooms::Delays {
        &self.delays
    }

    /// Renders the live gauges in the Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        use busbar_engine::metrics::{header, names};
        use std::fmt::Write;
        header(
            out,
            names::WS_CLIENTS,
            "gauge",
            "Connected live clients, by transport (ws, or a unix/tcp ingest connection that switched) and role.",
        );
        for ((transport, role), n) in self.sockets.count_by_transport_and_role() {
            let _ = writeln!(
                out,
                "{}{{transport=\"{transport}\",role=\"{}\"}} {n}",
                names::WS_CLIENTS,
                role.as_str()
            );
        }
        header(
            out,
            names::WS_SUBSCRIPTIONS,
            "gauge",
            "Open stream subscriptions and joined rooms.",
        );
        let rooms = self.sockets.rooms();
        let joined: u64 = rooms.values().sum();
        let _ = writeln!(
            out,
            "{}{{kind=\"stream\"}} {}",
            names::WS_SUBSCRIPTIONS,
            self.sockets.subscriptions()
        );
        let _ = writeln!(out, "{}{{kind=\"room\"}} {joined}", names::WS_SUBSCRIPTIONS);
        header(
            out,
            names::WS_ROOMS,
            "gauge",
            "Rooms with at least one member.",
        );
        let _ = writeln!(out, "{} {}", names::WS_ROOMS, rooms.len());
        header(
            out,
            names::LIVE_FEEDS,
            "gauge",
            "Streams with a running live feed.",
        );
        let _ = writeln!(out, "{} {}", names::LIVE_FEEDS, self.feeds.active());
        let stats = self.sessions.stats();
        header(out, names::SESSIONS, "gauge", "Producer sessions tracked.");
        let _ = writeln!(out, "{} {}", names::SESSIONS, stats.len());
        header(
            out,
            names::SESSIONS_DRIFT_WARN,
            "gauge",
            "Producer sessions whose drift p95 is over the threshold.",
        );
        let _ = writeln!(
            out,
            "{} {}",
            names::SESSIONS_DRIFT_WARN,
            stats.iter().filter(|s| s.drift_warn).count()
        );
        header(
            out,
            names::DRIFT_P95_MAX,
            "gauge",
            "Largest drift p95 over all producer sessions, in seconds.",
        );
        let worst = stats.iter().map(|s| s.drift_p95).max().unwrap_or(0);
        let _ = writeln!(out, "{} {}", names::DRIFT_P95_MAX, worst as f64 / 1000.0);
    }
}

/// The hub's gauges for `/metrics`; weak, so the engine does not keep the
/// hub alive.
struct LiveMetrics(std::sync::Weak<Live>);

impl MetricsSource for LiveMetrics {
    fn render(&self, out: &mut String) {
        if let Some(live) = self.0.upgrade() {
            live.render_metrics(out);
        }
    }
}
