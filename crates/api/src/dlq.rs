//! A stream's dead-letter queue: list, show, reprocess, delete and purge.

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use busbar_engine::{DlqQuery, JobStatus, Reprocessed};
use busbar_event::render_event;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::body::json_body;
use crate::params::{bound, query, type_filter, StreamPath};
use crate::{ApiError, AppState};

/// Query of `GET /api/streams/{stream}/dlq`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    /// Comma-separated type patterns (`order.*,user.created`).
    #[serde(rename = "type", alias = "types")]
    types: Option<String>,
    /// Where listing starts: a dead-letter id, ms, an RFC 3339 time, `-`
    /// or `+` (dead-letter ids are dead-letter times).
    from: Option<String>,
    /// Where listing stops (inclusive).
    to: Option<String>,
    /// Only entries whose last error contains this text (any case).
    error: Option<String>,
    /// At most this many entries (default 100).
    limit: Option<usize>,
    /// Newest first.
    reverse: Option<bool>,
}

/// `GET /api/streams/{stream}/dlq`:
/// `{"stream":"<stream>:dlq","entries":[event...],"next":"<id>"}`; each
/// entry's `meta` says where it came from and why it failed. `next` is
/// present when the listing stopped early: pass it as `from`.
pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(principal): Caller,
    path: StreamPath,
    uri: Uri,
) -> Result<Response, ApiError> {
    let params: ListParams = query(&uri)?;
    let reverse = params.reverse.unwrap_or(false);
    let (low, high) = if reverse { ("+", "-") } else { ("-", "+") };
    let from = params.from.as_deref().unwrap_or(low);
    let to = params.to.as_deref().unwrap_or(high);
    let (start, end) = if reverse {
        (bound("to", to, true)?, bound("from", from, false)?)
    } else {
        (bound("from", from, true)?, bound("to", to, false)?)
    };
    let limit = params.limit.unwrap_or(state.cfg.default_read_limit);
    if limit == 0 {
        return Err(ApiError::param("limit", "must be at least 1"));
    }
    let dlq_query = DlqQuery {
        start,
        end,
        reverse,
        types: params.types.as_deref().and_then(|t| type_filter([t])),
        error: params.error.filter(|e| !e.is_empty()),
        limit,
    };
    let page = state
        .engine
        .dlq_list(&principal, &path.stream, dlq_query)
        .await?;
    let mut out = Vec::with_capacity(64 + page.entries.len() * 384);
    out.extend_from_slice(b"{\"stream\":");
    out.extend_from_slice(
        serde_json::to_string(page.stream.as_str())
            .unwrap_or_default()
            .as_bytes(),
    );
    out.extend_from_slice(b",\"entries\":[");
    for (i, entry) in page.entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        render_event(&mut out, &page.stream, &entry.event);
    }
    out.push(b']');
    if let Some(next) = page.next {
        out.extend_from_slice(format!(",\"next\":\"{next}\"").as_bytes());
    }
    out.push(b'}');
    Ok(json_bytes(out))
}

fn json_bytes(body: Vec<u8>) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response()
}

/// `GET /api/streams/{stream}/dlq/{id}`: the entry, its `meta` included.
pub(crate) async fn show(
    State(state): State<AppState>,
    Caller(principal): Caller,
    path: StreamPath,
) -> Result<Response, ApiError> {
    let id = path.event_id()?;
    let entry = state.engine.dlq_entry(&principal, &path.stream, id).await?;
    let dlq =
        busbar_store::group::dlq_stream(&path.stream).map_err(busbar_engine::EngineError::from)?;
    let mut out = Vec::with_capacity(entry.event.payload().len() + 384);
    render_event(&mut out, &dlq, &entry.event);
    Ok(json_bytes(out))
}

/// `POST /api/streams/{stream}/dlq/{id}/reprocess` (admin): the entry is
/// appended to the stream, then deleted from the DLQ.
pub(crate) async fn reprocess_one(
    State(state): State<AppState>,
    Caller(principal): Caller,
    path: StreamPath,
) -> Result<Json<Reprocessed>, ApiError> {
    let id = path.event_id()?;
    let moved = state
        .engine
        .dlq_reprocess(&principal, &path.stream, id)
        .await?;
    Ok(Json(moved))
}

/// One type pattern or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Types {
    One(String),
    Many(Vec<String>),
}

/// Body of `POST /api/streams/{stream}/dlq/reprocess`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReprocessBody {
    /// Entries of these types (`order.*` matches a prefix).
    #[serde(rename = "type", alias = "types", alias = "eventType")]
    types: Option<Types>,
    /// Every entry.
    all: Option<bool>,
    /// Events per second (default 1000).
    rate: Option<u32>,
    /// At most this many entries, the oldest first.
    limit: Option<u64>,
}

/// `POST /api/streams/{stream}/dlq/reprocess` (admin) with `{"type":...}`
/// or `{"all":true}`: 202 with the job that moves the entries present now
/// (at most `limit` of them, the oldest first), at `rate` events per
/// second. Its status is at `Location`.
pub(crate) async fn reprocess_many(
    State(state): State<AppState>,
    Caller(principal): Caller,
    path: StreamPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request: ReprocessBody = json_body(&headers, body, &state.cfg).await?;
    let types = match &request.types {
        Some(Types::One(t)) => type_filter([t.as_str()]),
        Some(Types::Many(list)) => type_filter(list.iter().map(String::as_str)),
        None => None,
    };
    let all = request.all.unwrap_or(false);
    if types.is_some() == all {
        return Err(ApiError::param(
            "type",
            "give either `type` (one pattern or a list) or `\"all\": true`",
        ));
    }
    let job = state
        .engine
        .dlq_reprocess_some(&principal, &path.stream, types, request.rate, request.limit)
        .await?;
    Ok(job_accepted(job))
}

/// 202 with a job's status and where to follow it.
pub(crate) fn job_accepted(job: JobStatus) -> Response {
    let location = HeaderValue::from_str(&format!("/api/jobs/{}", job.id)).ok();
    let mut response = (StatusCode::ACCEPTED, Json(job)).into_response();
    if let Some(location) = location {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

/// How many entries a delete or purge removed.
#[derive(Debug, Serialize)]
pub(crate) struct Removed {
    deleted: u64,
}

/// `DELETE /api/streams/{stream}/dlq/{id}` (admin): 404 when it is not
/// there.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Caller(principal): Caller,
    path: StreamPath,
) -> Result<Json<Removed>, ApiError> {
    let id = path.event_id()?;
    state
        .engine
        .dlq_delete(&principal, &path.stream, id)
        .await?;
    Ok(Json(Removed { deleted: 1 }))
}

/// Body of `POST /api/streams/{stream}/dlq/purge`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    confirm: Option<bool>,
}

/// `POST /api/streams/{stream}/dlq/purge` (admin) with `{"confirm":true}`:
/// deletes every entry; without the confirmation, 400
/// `confirmation_required`.
pub(crate) async fn purge(
    State(state): State<AppState>,
    Caller(principal): Caller,
    path: StreamPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Removed>, ApiError> {
    let request: PurgeBody = json_body(&headers, body, &state.cfg).await?;
    let deleted = state
        .engine
        .dlq_purge(&principal, &path.stream, request.confirm.unwrap_or(false))
        .await?;
    Ok(Json(Removed { deleted }))
}
