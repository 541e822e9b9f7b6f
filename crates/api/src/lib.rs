//! busbar's HTTP API: publish and read events, administer streams, and the
//! operator endpoints, all over one listener.
//!
//! | route | method | what |
//! |---|---|---|
//! | `/health` | GET | liveness: `{"status":"ok"}` |
//! | `/readyz` | GET | readiness: 200 `{"status":"ready"}` or 503 with reasons |
//! | `/metrics` | GET | Prometheus text format (`metrics` scope) |
//! | `/api/openapi.json` | GET | the OpenAPI 3.0 document of this table |
//! | `/api/streams` | GET | `{"streams":[StreamInfo...]}` the caller may see |
//! | `/api/streams/{stream}` | GET, DELETE | one stream's info; delete it (admin) |
//! | `/api/streams/{stream}/events` | POST | publish an object, an array or NDJSON: 201 `{"ids":[...]}` (`"duplicates":n` when events repeated an `idempotency_key` within the duplicate window: their ids are the originals') |
//! | `/api/streams/{stream}/events` | GET | read a range, XRANGE / XREVRANGE style: `{"events":[...],"next":"<id>"}` |
//! | `/api/streams/{stream}/events/{id}` | DELETE | delete one event (admin): `{"deleted":n}` |
//! | `/api/streams/{stream}/events/delete` | POST | delete `{"ids":[...]}` (admin): `{"deleted":n}` |
//! | `/api/streams/{stream}/trim` | POST | XTRIM by `maxlen`, `minid`, `max_age` or `max_bytes` (admin): `{"removed":n}` |
//! | `/api/streams/{stream}/rotate` | POST | seal the active segment (admin) |
//! | `/api/streams/{stream}/groups` | GET, POST | list groups (`XINFO GROUPS`); create one (201) |
//! | `/api/streams/{stream}/groups/{group}` | GET, DELETE | one group; delete it (admin) |
//! | `/api/streams/{stream}/groups/{group}/read` | POST | `{"consumer","count","block_ms"}`: deliveries with their `delivery_count` (long poll) |
//! | `/api/streams/{stream}/groups/{group}/ack` | POST | `{"consumer"?,"ids"}`: 200 listing `acked`/`unknown`/`wrong_consumer`; 409 when none was acked |
//! | `/api/streams/{stream}/groups/{group}/nack` | POST | `{"consumer","ids","delay_ms"?,"terminal"?,"error"?}`: retry later or dead-letter |
//! | `/api/streams/{stream}/groups/{group}/claim` | POST | `{"consumer","min_idle_ms","start"?,"count"?}` (`XAUTOCLAIM`) |
//! | `/api/streams/{stream}/groups/{group}/pending` | GET | the pending list (`XPENDING`) |
//! | `/api/streams/{stream}/groups/{group}/pause`, `/resume` | POST | stop or restart delivery to a group (admin) |
//! | `/api/streams/{stream}/groups/{group}/consumers/{consumer}` | DELETE | remove a consumer, releasing its entries (admin) |
//! | `/api/consumers/pause`, `/api/consumers/resume` | POST | all delivery at once (a tenant-bound token's: its tenant's), or `{"stream","group"}` (admin) |
//! | `/api/streams/{stream}/dlq` | GET | dead letters: `?type=&from=&to=&error=&limit=&reverse=`, paged with `next` |
//! | `/api/streams/{stream}/dlq/{id}` | GET, DELETE | one dead letter; delete it (admin) |
//! | `/api/streams/{stream}/dlq/{id}/reprocess` | POST | move it back onto the stream (admin) |
//! | `/api/streams/{stream}/dlq/reprocess` | POST | `{"type"|"all":true,"rate"?}`: 202 with a job (admin) |
//! | `/api/streams/{stream}/dlq/purge` | POST | `{"confirm":true}`: delete every dead letter (admin) |
//! | `/api/replay` | GET, POST | replay jobs; start one (202, admin) |
//! | `/api/replay/{job}`, `/api/jobs/{job}` | GET | a job's progress |
//! | `/api/replay/{job}/cancel`, `/api/jobs/{job}/cancel` | POST | stop a job (admin) |
//! | `/api/jobs` | GET | every job: replays and DLQ reprocessing |
//! | `/events/health` | GET | the HYVVE runbook's `{"status","streamLength","dlqLength","consumerGroups","lastProcessedAt"}` for `?stream=`, or summed over every stream the caller sees with each one's in `streams` (`consume` scope) |
//!
//! ## Errors
//! Every error is `{"error":"<reason>","message":"<human text>"}` with the
//! status the engine assigns (400 bad input, 401 no or unknown token, 403
//! missing scope or another tenant's stream, 404 no such stream, 409 an
//! explicit id not greater than the last, 413 a body or batch over its
//! limit, 503 overloaded or paused, with `Retry-After`). A batch refused
//! because of one event adds `"index"`, its zero-based position; nothing of
//! that batch is appended.
//!
//! ## Authentication
//! Once any token is configured, every route but `/health` and `/readyz`
//! (liveness and readiness probes, which tell nothing of any stream) needs
//! `Authorization: Bearer <token>`. Reading and consuming need the
//! `consume` scope, and so does `/events/health`; deleting groups,
//! pausing, everything that changes a dead-letter stream, and replays need
//! `admin`; `/metrics` needs `metrics` (give Prometheus a token with only
//! that scope; `admin` implies it). With no token configured everything is
//! open, `/metrics` and `/events/health` included: a single-tenant
//! deployment.
//!
//! ## Tenants
//! A tenant-bound token reaches only streams named `<tenant>:...`; a stream
//! of another tenant is refused with 403 `wrong_tenant` by its name alone,
//! whether or not it exists, so no answer tells another tenant's streams
//! apart from missing ones (on `/events/health`, which reports missing
//! streams as 404, another tenant's stream is that same 404). Everything
//! else is filtered the same way: `/metrics` shows it only the samples whose
//! `stream` label is one of its streams, plus the process-wide ones;
//! pausing or resuming all delivery (`/api/consumers/pause|resume` without
//! a body) is its tenant's groups' (an untenanted admin's is everyone's; the
//! two, and each group's own pause, are independent, and a group's info
//! says `paused` while any of them holds); job listings, status and
//! cancelling only ever show its own streams' jobs; `/api/ops/*` answers
//! with its own sessions, connections and rooms.
//!
//! ## Groups, dead letters and replays
//! A read delivers due redeliveries first, then new events; each delivery
//! stays pending until acked, and a nack or an `ack_wait` expiry delivers it
//! again, up to `max_deliver` times, after which it moves to
//! `<stream>:dlq` with why it failed. Reprocessing appends the event to the
//! stream before deleting it from the DLQ, so a crash in between leaves a
//! duplicate, never a loss. A replay republishes a range onto a stream (the
//! default: the stream itself, so every group sees it again), moves an
//! existing group's cursor back, or starts a new group at the range; see
//! `busbar_engine`'s `ReplaySpec`. Bulk reprocessing and replays are jobs
//! with progress at `/api/jobs/{job}`.
//!
//! `/events/health` is `degraded` when the stream's DLQ holds more than 100
//! events or a group lags by more than 1000 (the runbook's warning levels),
//! `healthy` otherwise; it answers 200 either way.
//!
//! ## Publishing
//! The body is one JSON object, a JSON array of objects, or NDJSON (declared
//! with `Content-Type: application/x-ndjson`, or detected when the body is
//! not a single JSON value). Events go to the stream of the path; one naming
//! a different `stream` is refused. `?id=<ms>-<seq>` gives a single event
//! an explicit id; `?maxlen=N[&approx=true]`, `?minid=`, `?max_age=` or
//! `?max_bytes=` trim in the same call (admin scope).
//!
//! ## Reading
//! `from` is where reading starts and `to` where it stops: going forward
//! they default to `-` and `+`; with `reverse=true` to `+` and `-`
//! (`XREVRANGE` order). A bare `<ms>` means the whole millisecond. When
//! `limit` events came back, `next` holds the id to pass as `from` to
//! continue. `wait_ms` (at most 30 s) long-polls an empty range.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use busbar_engine::Engine;
//! use busbar_store::memory::MemoryStore;
//!
//! let engine = Engine::builder(Arc::new(MemoryStore::new())).build();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(busbar_api::serve(
//!     listener,
//!     engine,
//!     busbar_api::HttpConfig::default(),
//!     async move { let _ = stopped.await; },
//! ));
//! stop.send(()).unwrap();
//! server.await.unwrap().unwrap();
//! # });
//! ```

#![warn(missing_docs)]

mod auth;
mod body;
mod delivery;
mod dlq;
mod error;
mod events;
mod groups;
mod health;
mod listener;
mod ops;
mod params;
mod publish;
mod replay;
mod streams;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{delete, get, post, MethodRouter};
use axum::Router;
use busbar_engine::Engine;
use busbar_event::Limits;
use tokio::sync::watch;

pub use error::ApiError;
pub use ops::OPENAPI_JSON;

/// HTTP listener settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest request body accepted, in bytes (default 4 MiB). A larger
    /// body is refused with 413 without being buffered.
    pub max_body_bytes: usize,
    /// Limits applied to each published event (largest event, default
    /// 1 MiB; deepest nesting, default 64, also applied to every JSON
    /// request body).
    pub event_limits: Limits,
    /// Events a read returns when it gives no `limit` (default 100; the
    /// engine caps every read at its `max_read_count`).
    pub default_read_limit: usize,
    /// Longest long poll a read may ask for with `wait_ms` (default 30 s).
    pub max_wait: Duration,
    /// Open connections (default 1024); past it a connection is answered
    /// 503 `too_many_connections` and closed.
    pub max_connections: usize,
    /// Open connections per peer address (default 256; 0: no limit).
    pub max_connections_per_peer: usize,
    /// How long a connection has to send a request's headers, from when
    /// it opens or its previous response was written (default 10 s; it
    /// also closes idle keep-alive connections; zero: no deadline).
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive (default 30 s); past
    /// it the request is answered 408 `body_timeout`.
    pub body_timeout: Duration,
    /// How long shutdown waits for requests in flight (default 10 s).
    pub drain_timeout: Duration,
    /// The HTTP listener's share of the process's connection budget.
    pub budget: Option<busbar_listen::Budget>,
    /// Serve `/metrics` (default true; `[metrics] enabled`). When false
    /// the path answers 404 like any unknown one.
    pub metrics_enabled: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 4 * 1024 * 1024,
            event_limits: Limits::default(),
            default_read_limit: 100,
            max_wait: Duration::from_secs(30),
            max_connections: 1024,
            max_connections_per_peer: 256,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
            budget: None,
            metrics_enabled: true,
        }
    }
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) engine: Arc<Engine>,
    pub(crate) cfg: Arc<HttpConfig>,
    /// Turns true when graceful shutdown starts, so long polls answer at
    /// once instead of holding the shutdown up for their whole wait.
    pub(crate) draining: Arc<watch::Sender<bool>>,
}

/// Every route: its path template and the handlers of its methods.
fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/health", get(ops::health)),
        ("/readyz", get(ops::readyz)),
        ("/metrics", get(ops::metrics)),
        ("/api/openapi.json", get(ops::openapi)),
        ("/api/streams", get(streams::list)),
        (
            "/api/streams/{stream}",
            get(streams::info).delete(streams::delete),
        ),
        (
            "/api/streams/{stream}/events",
            get(events::read).post(publish::publish),
        ),
        (
            "/api/streams/{stream}/events/{id}",
            delete(events::delete_one),
        ),
        (
            "/api/streams/{stream}/events/delete",
            post(events::delete_many),
        ),
        ("/api/streams/{stream}/trim", post(streams::trim)),
        ("/api/streams/{stream}/rotate", post(streams::rotate)),
        (
            "/api/streams/{stream}/groups",
            get(groups::list).post(groups::create),
        ),
        (
            "/api/streams/{stream}/groups/{group}",
            get(groups::info).delete(groups::delete),
        ),
        (
            "/api/streams/{stream}/groups/{group}/read",
            post(delivery::read),
        ),
        (
            "/api/streams/{stream}/groups/{group}/ack",
            post(delivery::ack),
        ),
        (
            "/api/streams/{stream}/groups/{group}/nack",
            post(delivery::nack),
        ),
        (
            "/api/streams/{stream}/groups/{group}/claim",
            post(delivery::claim),
        ),
        (
            "/api/streams/{stream}/groups/{group}/pending",
            get(delivery::pending),
        ),
        (
            "/api/streams/{stream}/groups/{group}/pause",
            post(groups::pause),
        ),
        (
            "/api/streams/{stream}/groups/{group}/resume",
            post(groups::resume),
        ),
        (
            "/api/streams/{stream}/groups/{group}/consumers/{consumer}",
            delete(groups::delete_consumer),
        ),
        ("/api/consumers/pause", post(groups::pause_everything)),
        ("/api/consumers/resume", post(groups::resume_everything)),
        ("/api/streams/{stream}/dlq", get(dlq::list)),
        (
            "/api/streams/{stream}/dlq/{id}",
            get(dlq::show).delete(dlq::delete),
        ),
        (
            "/api/streams/{stream}/dlq/{id}/reprocess",
            post(dlq::reprocess_one),
        ),
        (
            "/api/streams/{stream}/dlq/reprocess",
            post(dlq::reprocess_many),
        ),
        ("/api/streams/{stream}/dlq/purge", post(dlq::purge)),
        ("/api/replay", get(replay::list_replays).post(replay::start)),
        ("/api/replay/{job}", get(replay::status)),
        ("/api/replay/{job}/cancel", post(replay::cancel)),
        ("/api/jobs", get(replay::list_jobs)),
        ("/api/jobs/{job}", get(replay::status)),
        ("/api/jobs/{job}/cancel", post(replay::cancel)),
        ("/events/health", get(health::events_health)),
    ]
}

/// The path template of every route the router serves (OpenAPI syntax,
/// `{param}`), for documentation checks.
pub fn route_paths() -> Vec<&'static str> {
    routes().into_iter().map(|(path, _)| path).collect()
}

/// The API's router. Every request is counted in
/// `busbar_http_requests_total` by route template and status.
pub fn router(engine: Arc<Engine>, cfg: HttpConfig) -> Router {
    build(engine, cfg, Arc::new(watch::Sender::new(false)))
}

fn build(engine: Arc<Engine>, cfg: HttpConfig, draining: Arc<watch::Sender<bool>>) -> Router {
    let state = AppState {
        engine,
        cfg: Arc::new(cfg),
        draining,
    };
    let mut router = Router::new();
    for (path, methods) in routes() {
        if path == "/metrics" && !state.cfg.metrics_enabled {
            continue;
        }
        router = router.route(path, methods.fallback(ops::method_not_allowed));
    }
    router
        .fallback(ops::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ops::count_requests,
        ))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves, then stops
/// accepting connections and lets in-flight requests finish (long polls
/// answer with what they have at once).
///
/// # Errors
/// An I/O error from the listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Arc<Engine>,
    cfg: HttpConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, engine, cfg, axum::Router::new(), shutdown).await
}

/// [`serve`], with `extra` routes merged in (the live hub's `/ws`, the ops
/// routes of `busbar-ops`). Handlers can extract the peer address with
/// `ConnectInfo<SocketAddr>`. Every accepted connection is put to the
/// engine's admission hooks first: a refused one is answered `503` with
/// the reason and `Retry-After`, and closed.
///
/// # Errors
/// As [`serve`].
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    engine: Arc<Engine>,
    cfg: HttpConfig,
    extra: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "HTTP API listening");
    }
    let draining = Arc::new(watch::Sender::new(false));
    let app = build(engine.clone(), cfg.clone(), draining.clone()).merge(extra);
    let (stop, stopping) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        // Long polls answer at once instead of holding the drain up.
        draining.send_replace(true);
        let _ = stop.send(true);
    });
    listener::serve(listener, engine, &cfg, app, stopping).await;
    Ok(())
}
