//! HTTP side of the live hub: the `/ws` upgrade (daemon state, origin,
//! token, admission and connection checks) and the hub's ops routes.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use busbar_engine::Transport;
use busbar_fanout::connection::{serve, Caller, Outbound};
use busbar_fanout::{CloseReason, Fanout, Outgoing};
use busbar_listen::Budget;
use busbar_ops::{Ops, OpsCaller};
use serde::Deserialize;

use crate::ws::{split, Handshake};

/// What the `/ws` route needs.
#[derive(Clone)]
struct WsState {
    hub: Arc<Fanout>,
    /// The process's connection budget: an upgraded connection leaves the
    /// HTTP listener's count and takes a slot of its own here.
    budget: Option<Budget>,
}

/// The `/ws` route. Merge it into the daemon's router. With a `budget`,
/// every WebSocket connection holds one of its slots while it is open.
pub fn router(hub: Arc<Fanout>, budget: Option<Budget>) -> Router {
    Router::new()
        .route("/ws", get(upgrade))
        .with_state(WsState { hub, budget })
}

/// Registers the hub's ops routes with `ops`: `/api/ops/sessions`,
/// `/api/ops/sockets`, `/api/ops/rooms` (the `admin` scope). A tenant-bound
/// caller gets its tenant's sessions, ops events, connections, rooms (their
/// members among its connections) and delays; an untenanted one every
/// tenant's, each item naming its tenant.
pub fn register_ops(hub: &Arc<Fanout>, ops: &Ops) {
    // The summary's `live` section: connections by transport and role,
    // producer sessions, subscriptions and rooms the caller may see.
    let weak = Arc::downgrade(hub);
    ops.add_section("live", move |p| {
        let Some(hub) = weak.upgrade() else {
            return serde_json::Value::Null;
        };
        let mut sockets = hub.sockets().list();
        sockets.retain(|s| p.sees_tenant(s.tenant.as_deref()));
        let mut by: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        for s in &sockets {
            *by.entry(format!("{}/{}", s.transport, s.role.as_str()))
                .or_default() += 1;
        }
        let mut sessions = hub.sessions().stats();
        sessions.retain(|s| p.sees_tenant(s.tenant.as_deref()));
        let drifting = sessions.iter().filter(|s| s.drift_warn).count();
        serde_json::json!({
            "sockets": sockets.len(),
            "byTransportAndRole": by,
            "subscriptions": sockets.iter().map(|s| u64::from(s.subscriptions)).sum::<u64>(),
            "sessions": sessions.len(),
            "sessionsDrifting": drifting,
            "rooms": hub.sockets().rooms_of(|t| p.sees_tenant(t)).len(),
        })
    });
    // Support packs: every session and connection the caller may see, and
    // the one session asked for.
    let weak = Arc::downgrade(hub);
    ops.add_pack_part("sessions.json", move |p| {
        let Some(hub) = weak.upgrade() else {
            return serde_json::Value::Null;
        };
        let mut sessions = hub.sessions().stats();
        sessions.retain(|s| p.sees_tenant(s.tenant.as_deref()));
        let mut events = hub.sessions().ops_events();
        events.retain(|e| p.sees_tenant(e.tenant.as_deref()));
        serde_json::json!({"sessions": sessions, "events": events})
    });
    let weak = Arc::downgrade(hub);
    ops.add_pack_part("sockets.json", move |p| {
        let Some(hub) = weak.upgrade() else {
            return serde_json::Value::Null;
        };
        let mut sockets = hub.sockets().list();
        sockets.retain(|s| p.sees_tenant(s.tenant.as_deref()));
        let rooms = hub.sockets().rooms_of(|t| p.sees_tenant(t));
        let mut delays = hub.delays().list();
        delays.retain(|d| p.sees_tenant(d.tenant.as_deref()));
        serde_json::json!({"sockets": sockets, "rooms": rooms, "delays": delays})
    });
    let weak = Arc::downgrade(hub);
    ops.set_session_lookup(Arc::new(move |p, id| {
        let hub = weak.upgrade()?;
        let mine: Vec<_> = hub
            .sessions()
            .stats()
            .into_iter()
            .filter(|s| s.session_id == id && p.sees_tenant(s.tenant.as_deref()))
            .collect();
        (!mine.is_empty()).then(|| serde_json::json!({"sessionId": id, "stats": mine}))
    }));
    // Connection traces sample a connection's counters.
    let weak = Arc::downgrade(hub);
    ops.traces().set_connection_probe(Arc::new(move |id| {
        let s = weak.upgrade()?.sockets().get(id)?;
        Some(busbar_ops::trace::ConnectionState {
            tenant: s.tenant,
            session: s.session,
            sent: s.sent,
            dropped: s.dropped,
        })
    }));
    let h = hub.clone();
    ops.route(
        "/api/ops/sessions",
        get(move |caller: OpsCaller| {
            let hub = h.clone();
            async move {
                let p = &caller.principal;
                let mut sessions = hub.sessions().stats();
                sessions.retain(|s| p.sees_tenant(s.tenant.as_deref()));
                let mut events = hub.sessions().ops_events();
                events.retain(|e| p.sees_tenant(e.tenant.as_deref()));
                Json(serde_json::json!({"sessions": sessions, "events": events}))
            }
        }),
    );
    let h = hub.clone();
    ops.route(
        "/api/ops/sockets",
        get(move |caller: OpsCaller| {
            let hub = h.clone();
            async move {
                let p = &caller.principal;
                let mut sockets = hub.sockets().list();
                sockets.retain(|s| p.sees_tenant(s.tenant.as_deref()));
                let mut events = hub.sockets().events();
                events.retain(|e| p.sees_tenant(e.tenant.as_deref()));
                Json(serde_json::json!({"sockets": sockets, "events": events}))
            }
        }),
    );
    let h = hub.clone();
    ops.route(
        "/api/ops/rooms",
        get(move |caller: OpsCaller| {
            let hub = h.clone();
            async move {
                let p = &caller.principal;
                let rooms = hub.sockets().rooms_of(|t| p.sees_tenant(t));
                let mut delays = hub.delays().list();
                delays.retain(|d| p.sees_tenant(d.tenant.as_deref()));
                Json(serde_json::json!({"rooms": rooms, "delays": delays}))
            }
        }),
    );
}

#[derive(Debug, Deserialize)]
struct WsQuery {
    token: Option<String>,
}

/// `{"type":"error","error":<reason>,"message":..,"retry_after_ms":n}`.
fn refusal_frame(reason: &str, message: &str, retry_after: Option<std::time::Duration>) -> String {
    let mut frame = serde_json::json!({
        "type": "error",
        "error": reason,
        "message": message,
    });
    if let Some(after) = retry_after {
        frame["retry_after_ms"] = serde_json::json!(after.as_millis() as u64);
    }
    frame.to_string()
}

fn refuse(hub: &Fanout, status: StatusCode, reason: &'static str, message: String) -> Response {
    hub.count_rejected(reason);
    (
        status,
        Json(serde_json::json!({"error": reason, "message": message})),
    )
        .into_response()
}

/// Whether a browser `Origin` may connect: one of the configured origins,
/// or, when none are configured, the daemon's own host.
fn origin_allowed(hub: &Fanout, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        // Not a browser: tokens protect it.
        return true;
    };
    let allowed = &hub.config().allowed_origins;
    if !allowed.is_empty() {
        return allowed.iter().any(|o| o == origin);
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
    busbar_engine::bearer_token(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

async fn upgrade(
    State(WsState { hub, budget }): State<WsState>,
    Query(q): Query<WsQuery>,
    mut request: Request<Body>,
) -> Response {
    let headers = request.headers().clone();
    if let Some(("shutting_down", message)) = hub.refusal() {
        return refuse(
            &hub,
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            message,
        );
    }
    if !origin_allowed(&hub, &headers) {
        return refuse(
            &hub,
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this Origin may not connect (see [live] allowed_origins)".into(),
        );
    }
    // Browsers cannot set headers on a WebSocket: `?token=` is accepted too.
    let presented = bearer(&headers).or(q.token.as_deref());
    let principal = match hub.engine().auth().authenticate(presented) {
        Ok(p) => p,
        Err(e) => {
            let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
            return refuse(&hub, status, e.reason(), e.to_string());
        }
    };
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |ConnectInfo(a)| a.to_string());
    let mut refused = hub
        .engine()
        .admit_connection(Transport::WebSocket, &remote)
        .err()
        .map(|e| (e.reason(), e.to_string(), e.retry_after()));
    let slot = match &budget {
        Some(budget) if refused.is_none() => {
            let slot = budget.try_take();
            if slot.is_none() {
                refused = Some((
                    "out_of_descriptors",
                    "busbar holds as many connections as its file descriptors allow; retry later"
                        .to_owned(),
                    Some(std::time::Duration::from_secs(1)),
                ));
            }
            slot
        }
        _ => None,
    };
    if let Some((reason, message)) = hub.refusal() {
        return refuse(&hub, StatusCode::SERVICE_UNAVAILABLE, reason, message);
    }
    let handshake = match Handshake::from_request(&mut request) {
        Ok(h) => h,
        Err(not) => {
            return refuse(
                &hub,
                StatusCode::BAD_REQUEST,
                "not_a_websocket",
                not.0.to_owned(),
            )
        }
    };
    let limit = hub.config().max_message_bytes;
    if let Some((reason, message, retry_after)) = refused {
        // Refused by admission or the descriptor budget: a browser cannot
        // read an HTTP status from a failed handshake, so the refusal is a
        // WebSocket close with code 1013 (try again later), after an error
        // message with the reason.
        hub.count_rejected(reason);
        return handshake.accept(limit, move |socket| async move {
            let (_, mut outbound) = split(socket);
            let mut answer = vec![
                Outgoing::from(refusal_frame(reason, &message, retry_after)),
                Outgoing::Close(Some(CloseReason {
                    code: 1013,
                    reason: "try again later",
                })),
            ];
            let deadline = hub.config().write_deadline;
            let _ = tokio::time::timeout(deadline, outbound.write(&mut answer)).await;
        });
    }
    handshake.accept(limit, move |socket| async move {
        let _slot = slot;
        let tenant = principal.tenant().map(str::to_owned);
        let guard =
            hub.sockets()
                .register(Transport::WebSocket, tenant, remote, busbar_event::now_ms());
        let (inbound, outbound) = split(socket);
        let caller = Caller {
            principal,
            transport: Transport::WebSocket,
            shutdown: None,
        };
        serve(hub, inbound, outbound, caller, guard).await;
    })
}
