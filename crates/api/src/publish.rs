//! `POST /api/streams/{stream}/events`: publish one event, a JSON array of
//! events or NDJSON, all or nothing.

use std::borrow::Cow;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::Json;
use busbar_engine::{Engine, EngineError, Principal, Transport};
use busbar_event::{parse_event, EventBatch, EventId, StreamName};
use busbar_store::AppendOptions;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::body::{declares_ndjson, read_limited, split_events};
use crate::params::{event_id, query, StreamPath, TrimSpec};
use crate::{ApiError, AppState};

/// Query parameters of a publish.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishQuery {
    /// An explicit id for a single event.
    id: Option<String>,
    maxlen: Option<u64>,
    minid: Option<String>,
    max_age: Option<String>,
    max_bytes: Option<u64>,
    approx: Option<bool>,
}

impl PublishQuery {
    fn trim(&self) -> TrimSpec {
        TrimSpec {
            maxlen: self.maxlen,
            minid: self.minid.clone(),
            max_age: self.max_age.clone(),
            max_bytes: self.max_bytes,
            approx: self.approx,
        }
    }
}

/// The ids assigned to a published batch, in request order, and how many
/// events were repeats answered with the id of the event they repeat
/// (left out when none).
#[derive(Debug, Serialize)]
pub(crate) struct Published {
    ids: Vec<EventId>,
    #[serde(skip_serializing_if = "is_zero")]
    duplicates: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Publishes the events of the body to the stream of the path.
pub(crate) async fn publish(
    State(state): State<AppState>,
    Caller(principal): Caller,
    path: StreamPath,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Published>), ApiError> {
    let engine = &state.engine;
    let prepared = prepare(&state, &principal, &path.stream, &uri, &headers, body).await;
    let (batch, opts) = prepared.inspect_err(|e| count_rejection(engine, e))?;
    // The engine counts its own refusals from here on.
    let appended = engine
        .publish_detailed(&principal, &path.stream, batch, opts, Transport::Http)
        .await?;
    let published = Published {
        duplicates: appended.duplicates.len(),
        ids: appended.ids,
    };
    Ok((StatusCode::CREATED, Json(published)))
}

/// Everything a publish checks before it reaches the engine: parameters,
/// body size, each event's JSON, stream and tenant.
async fn prepare(
    state: &AppState,
    principal: &Principal,
    stream: &StreamName,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<(EventBatch, AppendOptions), ApiError> {
    // Scope and stream first, so a caller who may not publish here is
    // refused before its body is read.
    state.engine.check_publish(principal, stream, None)?;
    let params: PublishQuery = query(uri)?;
    let explicit_id = params.id.as_deref().map(event_id).transpose()?;
    let trim = params.trim();
    let opts = AppendOptions {
        trim: if trim.is_empty() {
            None
        } else {
            Some(trim.to_trim()?)
        },
        ..AppendOptions::default()
    };
    let bytes = read_limited(headers, body, &state.cfg).await?;
    let pieces = split_events(
        &bytes,
        declares_ndjson(headers),
        state.engine.config().max_batch_events,
        state.cfg.event_limits.max_depth,
    )?;
    if explicit_id.is_some() && pieces.len() != 1 {
        return Err(ApiError::param(
            "id",
            "an explicit id applies to a request holding exactly one event",
        ));
    }
    let batch = encode(state, principal, stream, &pieces, explicit_id)?;
    Ok((batch, opts))
}

/// Parses and checks every event, encoding them into one batch; the first
/// refused event fails the whole request with its index.
fn encode(
    state: &AppState,
    principal: &Principal,
    stream: &StreamName,
    pieces: &[&[u8]],
    explicit_id: Option<EventId>,
) -> Result<EventBatch, ApiError> {
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    let mut batch = EventBatch::with_capacity(total + pieces.len() * 64);
    for (index, piece) in pieces.iter().enumerate() {
        let in_batch = |source: EngineError| ApiError::InBatch { index, source };
        let mut event = parse_event(piece, &state.cfg.event_limits)
            .map_err(|e| in_batch(EngineError::Event(e)))?;
        if let Some(named) = &event.stream {
            if named != stream {
                return Err(ApiError::StreamMismatch {
                    index,
                    named: named.to_string(),
                    path: stream.to_string(),
                });
            }
        }
        state
            .engine
            .check_publish(principal, stream, event.tenant.as_deref())
            .map_err(in_batch)?;
        // A tenant-bound token's events carry its tenant.
        if event.tenant.is_none() {
            event.tenant = principal.tenant().map(|t| Cow::Owned(t.to_owned()));
        }
        event.id = explicit_id;
        batch
            .push_parsed(&event)
            .map_err(|e| in_batch(EngineError::Event(e)))?;
    }
    Ok(batch)
}

/// Counts a publish refused before it reached the engine.
fn count_rejection(engine: &Engine, error: &ApiError) {
    match error.engine_error() {
        Some(e) => engine.count_error(Transport::Http, e),
        None => engine
            .metrics()
            .ingest_errors
            .get([Transport::Http.as_str(), error.reason()])
            .inc(),
    }
}
