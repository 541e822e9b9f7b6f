//! Reading events by id range (XRANGE / XREVRANGE) with an optional long
//! poll, and deleting events by id.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use busbar_engine::{EngineError, ReadOp};
use busbar_event::{render_event, Event, EventId, StreamName};
use busbar_store::{ReadQuery, StoreError, TypeFilter};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::body::{json, read_limited};
use crate::params::{event_id, query, StreamPath};
use crate::{ApiError, AppState};

/// Query parameters of a range read.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadParams {
    /// Where reading starts: the low end going forward (default `-`), the
    /// high end in reverse (default `+`).
    from: Option<String>,
    /// Where reading stops (default `+` forward, `-` in reverse).
    to: Option<String>,
    /// Comma-separated type patterns (`order.*,user.created`).
    types: Option<String>,
    /// At most this many events.
    limit: Option<usize>,
    /// Newest first.
    reverse: Option<bool>,
    /// Wait up to this long for an event when the range is empty.
    wait_ms: Option<u64>,
}

impl ReadParams {
    /// The store query, and how long to wait when it finds nothing.
    fn to_query(&self, state: &AppState) -> Result<(ReadQuery, Duration), ApiError> {
        let reverse = self.reverse.unwrap_or(false);
        let (lowest, highest) = ("-", "+");
        let from = self
            .from
            .as_deref()
            .unwrap_or(if reverse { highest } else { lowest });
        let to = self
            .to
            .as_deref()
            .unwrap_or(if reverse { lowest } else { highest });
        let (start, end) = if reverse {
            (
                EventId::parse_bound(to, true)?,
                EventId::parse_bound(from, false)?,
            )
        } else {
            (
                EventId::parse_bound(from, true)?,
                EventId::parse_bound(to, false)?,
            )
        };
        let limit = self.limit.unwrap_or(state.cfg.default_read_limit);
        if limit == 0 {
            return Err(ApiError::param("limit", "must be at least 1"));
        }
        let types = self.types.as_deref().and_then(|list| {
            let patterns: Vec<&str> = list
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect();
            (!patterns.is_empty()).then(|| TypeFilter::new(patterns))
        });
        let wait = Duration::from_millis(self.wait_ms.unwrap_or(0));
        if wait > state.cfg.max_wait {
            return Err(ApiError::param(
                "wait_ms",
                format!("must be at most {}", state.cfg.max_wait.as_millis()),
            ));
        }
        // Clamped here rather than in the engine, so `next` knows the count
        // the read really ran with.
        let query = ReadQuery {
            start,
            end,
            count: state.engine.clamp_read_count(ReadOp::Range, limit),
            reverse,
            types,
            partition: None,
        };
        Ok((query, wait))
    }
}

/// `GET /api/streams/{stream}/events`: `{"events":[...],"next":"<id>"}`,
/// `next` present when the limit was reached. A `limit` over the engine's
/// `max_read_count` reads that many, with `next`.
///
/// With `wait_ms`, an empty range (or a stream not created yet) waits for
/// the next append, up to that long, and is read again.
pub(crate) async fn read(
    State(state): State<AppState>,
    Caller(principal): Caller,
    path: StreamPath,
    uri: Uri,
) -> Result<Response, ApiError> {
    let params: ReadParams = query(&uri)?;
    let (query, wait) = params.to_query(&state)?;
    let engine = &state.engine;
    // Subscribed before the first read, so an append landing between the
    // read and the wait still wakes us.
    let mut appended = engine.subscribe_appends();
    let mut draining = state.draining.subscribe();
    let deadline = Instant::now() + wait;
    let events = loop {
        let result = engine.read(&principal, &path.stream, query.clone()).await;
        let empty = match &result {
            Ok(events) => events.is_empty(),
            Err(EngineError::Store(StoreError::NoSuchStream { .. })) => true,
            Err(_) => false,
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if !empty || remaining.is_zero() {
            break result?;
        }
        tokio::select! {
            woke = tokio::time::timeout(remaining, appended.changed()) => match woke {
                Ok(Ok(())) => continue,
                // Timed out, or the engine is gone: answer with what we have.
                Ok(Err(_)) | Err(_) => break result?,
            },
            _ = draining.wait_for(|draining| *draining) => break result?,
        }
    };
    Ok(render(&path.stream, &events, &query))
}

/// Writes the response from each event's stored rendering, without
/// re-serialising payloads.
fn render(stream: &StreamName, events: &[Event], query: &ReadQuery) -> Response {
    let size: usize = events.iter().map(|e| e.payload().len() + 160).sum();
    let mut out = Vec::with_capacity(size + 48);
    out.extend_from_slice(b"{\"events\":[");
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        render_event(&mut out, stream, event);
    }
    out.push(b']');
    let next = events
        .last()
        .filter(|_| events.len() >= query.count)
        .and_then(|last| {
            if query.reverse {
                last.id().predecessor()
            } else {
                last.id().successor()
            }
        });
    if let Some(next) = next {
        out.extend_from_slice(format!(",\"next\":\"{next}\"").as_bytes());
    }
    out.push(b'}');
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        out,
    )
        .into_response()
}

/// How many events a delete removed.
#[derive(Debug, Serialize)]
pub(crate) struct Deleted {
    deleted: u64,
}

/// `DELETE /api/streams/{stream}/events/{id}`.
pub(crate) async fn delete_one(
    State(state): State<AppState>,
    Caller(principal): Caller,
    path: StreamPath,
) -> Result<Json<Deleted>, ApiError> {
    let id = path
        .id
        .as_deref()
        .ok_or_else(|| ApiError::param("id", "missing from the path"))?;
    let id = event_id(id)?;
    let deleted = state.engine.delete(&principal, &path.stream, &[id]).await?;
    Ok(Json(Deleted { deleted }))
}

/// Body of a bulk delete.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteBody {
    ids: Vec<String>,
}

/// `POST /api/streams/{stream}/events/delete` with `{"ids":[...]}`.
pub(crate) async fn delete_many(
    State(state): State<AppState>,
    Caller(principal): Caller,
    path: StreamPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Deleted>, ApiError> {
    let bytes = read_limited(&headers, body, &state.cfg).await?;
    let request: DeleteBody = json(&bytes, &state.cfg)?;
    let ids = request
        .ids
        .iter()
        .map(|id| event_id(id))
        .collect::<Result<Vec<_>, _>>()?;
    let deleted = state.engine.delete(&principal, &path.stream, &ids).await?;
    Ok(Json(Deleted { deleted }))
}
