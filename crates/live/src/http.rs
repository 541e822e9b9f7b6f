//! HTTP side of the live hub: the `/ws` upgrade (origin, token and
//! connection checks) and the ops endpoints.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::{Json, Router};
use busbar_engine::{EngineError, Principal, Scope, Transport};
use serde::Deserialize;

use crate::connection::Caller;
use crate::wire::{Sink, Source};
use crate::Live;

/// The live routes: `/ws`, `/api/ops/sessions`, `/api/ops/sockets`,
/// `/api/ops/rooms`. Merge them into the daemon's router.
pub fn router(live: Arc<Live>) -> Router {
    Router::new()
        .route("/ws", get(upgrade))
        .route("/api/ops/sessions", get(sessions))
        .route("/api/ops/sockets", get(sockets))
        .route("/api/ops/rooms", get(rooms))
        .with_state(live)
}

#[derive(Debug, Deserialize)]
struct WsQuery {
    token: Option<String>,
}

fn refuse(live: &Live, status: StatusCode, reason: &'static str, message: String) -> Response {
    live.engine.metrics().ws_rejected.get([reason]).inc();
    (
        status,
        Json(serde_json::json!({"error": reason, "message": message})),
    )
        .into_response()
}

/// Whether a browser `Origin` may connect: one of the configured origins,
/// or, when none are configured, the daemon's own host.
fn origin_allowed(live: &Live, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        // Not a browser: tokens protect it.
        return true;
    };
    if !live.config.allowed_origins.is_empty() {
        return live.config.allowed_origins.iter().any(|o| o == origin);
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| !host.is_empty() && rest == host)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

async fn upgrade(
    State(live): State<Arc<Live>>,
    ws: WebSocketUpgrade,
    headers: HeaderMap,
    Query(q): Query<WsQuery>,
    addr: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Response {
    if *live.closing.borrow() {
        return refuse(
            &live,
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "busbar is shutting down".into(),
        );
    }
    if !origin_allowed(&live, &headers) {
        return refuse(
            &live,
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this Origin may not connect (see [live] allowed_origins)".into(),
        );
    }
    // Browsers cannot set headers on a WebSocket: `?token=` is accepted too.
    let presented = bearer(&headers).or(q.token.as_deref());
    let principal = match live.engine.auth().authenticate(presented) {
        Ok(p) => p,
        Err(e) => {
            let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
            return refuse(&live, status, e.reason(), e.to_string());
        }
    };
    if live.sockets.len() >= live.config.max_connections {
        return refuse(
            &live,
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            format!(
                "at most {} WebSocket connections",
                live.config.max_connections
            ),
        );
    }
    let remote = addr.map_or_else(
        || "unknown".to_owned(),
        |Extension(ConnectInfo(a))| a.to_string(),
    );
    let limit = live.config.max_message_bytes;
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| async move {
            let guard = live
                .sockets
                .register(Transport::WebSocket, remote, busbar_event::now_ms());
            let (sink, stream) = futures_util::StreamExt::split(socket);
            let caller = Caller {
                principal,
                transport: Transport::WebSocket,
                shutdown: None,
            };
            let wire = (Source::WebSocket(stream), Sink::WebSocket(sink));
            crate::connection::run(live, wire, caller, guard).await;
        })
}

/// The ops endpoints need the `admin` scope (open when no token is set).
fn ops_principal(live: &Live, headers: &HeaderMap) -> Result<Principal, EngineError> {
    live.engine
        .auth()
        .authenticate(bearer(headers))
        .and_then(|p| p.require(Scope::Admin).map(|()| p))
}

fn deny(e: EngineError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::FORBIDDEN);
    let body = serde_json::json!({"error": e.reason(), "message": e.to_string()});
    (status, Json(body)).into_response()
}

async fn sessions(State(live): State<Arc<Live>>, headers: HeaderMap) -> Response {
    if let Err(e) = ops_principal(&live, &headers) {
        return deny(e);
    }
    Json(serde_json::json!({
        "sessions": live.sessions.stats(),
        "events": live.sessions.ops_events(),
    }))
    .into_response()
}

async fn sockets(State(live): State<Arc<Live>>, headers: HeaderMap) -> Response {
    if let Err(e) = ops_principal(&live, &headers) {
        return deny(e);
    }
    Json(serde_json::json!({
        "sockets": live.sockets.list(),
        "events": live.sockets.events(),
    }))
    .into_response()
}

async fn rooms(State(live): State<Arc<Live>>, headers: HeaderMap) -> Response {
    if let Err(e) = ops_principal(&live, &headers) {
        return deny(e);
    }
    Json(serde_json::json!({
        "rooms": live.sockets.rooms(),
        "delays": live.delays.list(),
    }))
    .into_response()
}
