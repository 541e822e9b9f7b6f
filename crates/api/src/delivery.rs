//! Consuming in a group: read (a long poll), ack, nack, claim, and the
//! pending list.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use busbar_engine::{EngineError, MAX_BLOCK};
use busbar_event::{render_event, EventId, StreamName};
use busbar_store::group::{Delivery, NackOptions, NackOutcome, PendingInfo};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::body::json_body;
use crate::params::{bound, event_id, query, StreamPath};
use crate::{ApiError, AppState};

/// Longest error text a nack may carry (it is kept in the dead-letter
/// entry).
const MAX_ERROR_BYTES: usize = 1024;

/// Body of `POST .../groups/{group}/read`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadBody {
    /// Who reads (created on its first read).
    consumer: String,
    /// At most this many events (default 1).
    count: Option<usize>,
    /// Wait up to this long when there is nothing to deliver (default 0).
    block_ms: Option<u64>,
}

/// `POST /api/streams/{stream}/groups/{group}/read` (`XREADGROUP`):
/// `{"deliveries":[{"delivery_count":n,"event":{...}}],"redelivered":n,"dead_lettered":n,"dropped":n}`.
///
/// Due redeliveries come first, then new events. With `block_ms`, an empty
/// read waits for an append (or for a redelivery to fall due) up to that
/// long; when graceful shutdown starts it answers at once with nothing.
pub(crate) async fn read(
    State(state): State<AppState>,
    Caller(principal): Caller,
    path: StreamPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request: ReadBody = json_body(&headers, body, &state.cfg).await?;
    let block = Duration::from_millis(request.block_ms.unwrap_or(0));
    if block > MAX_BLOCK {
        return Err(ApiError::param(
            "block_ms",
            format!("must be at most {}", MAX_BLOCK.as_millis()),
        ));
    }
    let count = request.count.unwrap_or(1);
    if count == 0 {
        return Err(ApiError::param("count", "must be at least 1"));
    }
    let mut draining = state.draining.subscribe();
    let stop = async move {
        let _ = draining.wait_for(|draining| *draining).await;
    };
    let out = state
        .engine
        .read_group_until(
            &principal,
            &path.stream,
            path.group()?,
            &request.consumer,
            count,
            block,
            stop,
        )
        .await?;
    let mut body = Vec::with_capacity(64 + out.deliveries.len() * 256);
    body.extend_from_slice(b"{\"deliveries\":");
    render_deliveries(&mut body, &path.stream, &out.deliveries);
    body.extend_from_slice(
        format!(
            ",\"redelivered\":{},\"dead_lettered\":{},\"dropped\":{}}}",
            out.redelivered, out.dead_lettered, out.dropped
        )
        .as_bytes(),
    );
    Ok(json_response(body))
}

/// Writes deliveries from each event's stored rendering, without
/// re-serialising payloads.
fn render_deliveries(out: &mut Vec<u8>, stream: &StreamName, deliveries: &[Delivery]) {
    out.push(b'[');
    for (i, d) in deliveries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(
            format!("{{\"delivery_count\":{},\"event\":", d.delivery_count).as_bytes(),
        );
        render_event(out, stream, &d.event);
        out.push(b'}');
    }
    out.push(b']');
}

fn json_response(body: Vec<u8>) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response()
}

/// Parses a list of ids, refusing an empty or oversized one.
fn ids(list: &[String], max: usize) -> Result<Vec<EventId>, ApiError> {
    if list.is_empty() {
        return Err(ApiError::param("ids", "must name at least one id"));
    }
    if list.len() > max {
        return Err(ApiError::param(
            "ids",
            format!("at most {max} ids per request"),
        ));
    }
    list.iter().map(|id| event_id(id)).collect()
}

/// Body of `POST .../groups/{group}/ack`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    /// The consumer acknowledging; without it, whoever holds the ids.
    consumer: Option<String>,
    ids: Vec<String>,
}

/// The outcome of an ack.
#[derive(Debug, Serialize)]
pub(crate) struct Acked {
    acked: Vec<EventId>,
    unknown: Vec<EventId>,
    wrong_consumer: Vec<EventId>,
}

/// When nothing of an ack or nack took effect: 409 `unknown_ids` when no id
/// is pending, 409 `wrong_consumer` when every pending one is another
/// consumer's.
fn nothing_done(
    group: &str,
    consumer: Option<&str>,
    unknown: Vec<EventId>,
    wrong_consumer: Vec<EventId>,
) -> ApiError {
    if wrong_consumer.is_empty() {
        return EngineError::UnknownIds {
            group: group.to_owned(),
            ids: unknown,
        }
        .into();
    }
    let mut ids = wrong_consumer;
    ids.extend(unknown);
    EngineError::WrongConsumer {
        group: group.to_owned(),
        consumer: consumer.unwrap_or_default().to_owned(),
        ids,
    }
    .into()
}

/// `POST /api/streams/{stream}/groups/{group}/ack` (`XACK`): 200 listing
/// `acked`, `unknown` and `wrong_consumer` ids when any was acknowledged;
/// 409 when none was.
pub(crate) async fn ack(
    State(state): State<AppState>,
    Caller(principal): Caller,
    path: StreamPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Acked>, ApiError> {
    let request: AckBody = json_body(&headers, body, &state.cfg).await?;
    let ids = ids(&request.ids, state.engine.config().max_read_count)?;
    let group = path.group()?;
    let consumer = request.consumer.as_deref();
    let out = state
        .engine
        .ack(&principal, &path.stream, group, consumer, &ids)
        .await?;
    if out.acked.is_empty() {
        return Err(nothing_done(
            group,
            consumer,
            out.unknown,
            out.wrong_consumer,
        ));
    }
    Ok(Json(Acked {
        acked: out.acked,
        unknown: out.unknown,
        wrong_consumer: out.wrong_consumer,
    }))
}

/// Body of `POST .../groups/{group}/nack`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NackBody {
    consumer: String,
    ids: Vec<String>,
    /// Wait this long before delivering again.
    delay_ms: Option<u64>,
    /// Dead-letter now instead of retrying.
    terminal: Option<bool>,
    /// Why processing failed (kept with the entry and in the DLQ).
    error: Option<String>,
}

/// `POST /api/streams/{stream}/groups/{group}/nack`: the events are
/// delivered again (after `delay_ms`), or dead-lettered when `terminal` or
/// out of attempts. 409 when no id was nacked.
pub(crate) async fn nack(
    State(state): State<AppState>,
    Caller(principal): Caller,
    path: StreamPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<NackOutcome>, ApiError> {
    let request: NackBody = json_body(&headers, body, &state.cfg).await?;
    let ids = ids(&request.ids, state.engine.config().max_read_count)?;
    if request
        .error
        .as_ref()
        .is_some_and(|e| e.len() > MAX_ERROR_BYTES)
    {
        return Err(ApiError::param(
            "error",
            format!("at most {MAX_ERROR_BYTES} bytes"),
        ));
    }
    let group = path.group()?;
    let opts = NackOptions {
        delay: request.delay_ms.map(Duration::from_millis),
        terminal: request.terminal.unwrap_or(false),
        error: request.error,
    };
    let out = state
        .engine
        .nack(
            &principal,
            &path.stream,
            group,
            &request.consumer,
            &ids,
            opts,
        )
        .await?;
    if out.retried.is_empty() && out.dead_lettered.is_empty() && out.dropped.is_empty() {
        return Err(nothing_done(
            group,
            Some(&request.consumer),
            out.unknown,
            out.wrong_consumer,
        ));
    }
    Ok(Json(out))
}

/// Body of `POST .../groups/{group}/claim`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimBody {
    /// The consumer taking the entries over.
    consumer: String,
    /// Only entries idle at least this long.
    min_idle_ms: u64,
    /// Where to start scanning the pending list (default the start).
    start: Option<String>,
    /// At most this many entries (default 100).
    count: Option<usize>,
}

/// `POST /api/streams/{stream}/groups/{group}/claim` (`XAUTOCLAIM`):
/// `{"deliveries":[...],"next":"<id>"|null,"deleted":[...]}`.
pub(crate) async fn claim(
    State(state): State<AppState>,
    Caller(principal): Caller,
    path: StreamPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request: ClaimBody = json_body(&headers, body, &state.cfg).await?;
    let start = match request.start.as_deref() {
        Some(text) => bound("start", text, true)?,
        None => EventId::ZERO,
    };
    let count = request.count.unwrap_or(100);
    if count == 0 {
        return Err(ApiError::param("count", "must be at least 1"));
    }
    let out = state
        .engine
        .claim(
            &principal,
            &path.stream,
            path.group()?,
            &request.consumer,
            Duration::from_millis(request.min_idle_ms),
            start,
            count,
        )
        .await?;
    let mut body = Vec::with_capacity(64 + out.deliveries.len() * 256);
    body.extend_from_slice(b"{\"deliveries\":");
    render_deliveries(&mut body, &path.stream, &out.deliveries);
    let tail = serde_json::json!({"next": out.next, "deleted": out.deleted});
    body.extend_from_slice(
        format!(
            ",\"next\":{},\"deleted\":{}}}",
            tail["next"], tail["deleted"]
        )
        .as_bytes(),
    );
    Ok(json_response(body))
}

/// Query of `GET .../groups/{group}/pending`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PendingParams {
    consumer: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
}

/// A group's pending entries.
#[derive(Debug, Serialize)]
pub(crate) struct PendingList {
    pending: Vec<PendingInfo>,
}

/// `GET /api/streams/{stream}/groups/{group}/pending` (`XPENDING`).
pub(crate) async fn pending(
    State(state): State<AppState>,
    Caller(principal): Caller,
    path: StreamPath,
    uri: Uri,
) -> Result<Json<PendingList>, ApiError> {
    let params: PendingParams = query(&uri)?;
    let start = bound("from", params.from.as_deref().unwrap_or("-"), true)?;
    let end = bound("to", params.to.as_deref().unwrap_or("+"), false)?;
    let limit = params.limit.unwrap_or(state.cfg.default_read_limit);
    if limit == 0 {
        return Err(ApiError::param("limit", "must be at least 1"));
    }
    let pending = state
        .engine
        .pending(
            &principal,
            &path.stream,
            path.group()?,
            params.consumer.as_deref(),
            start,
            end,
            limit,
        )
        .await?;
    Ok(Json(PendingList { pending }))
}
