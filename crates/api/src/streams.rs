//! Stream administration: list, describe, delete, trim and rotate.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use busbar_event::StreamName;
use busbar_store::{StoreError, StreamInfo};
use serde::Serialize;

use crate::auth::Caller;
use crate::body::{json, read_limited};
use crate::params::{StreamPath, TrimSpec};
use crate::{ApiError, AppState};

/// Every stream the caller may see.
#[derive(Debug, Serialize)]
pub(crate) struct StreamList {
    streams: Vec<StreamInfo>,
}

/// `GET /api/streams`: streams outside a tenant token's tenant are left out.
pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(principal): Caller,
) -> Result<Json<StreamList>, ApiError> {
    let streams = state.engine.streams(&principal).await?;
    Ok(Json(StreamList { streams }))
}

/// `GET /api/streams/{stream}`.
pub(crate) async fn info(
    State(state): State<AppState>,
    Caller(principal): Caller,
    path: StreamPath,
) -> Result<Json<StreamInfo>, ApiError> {
    Ok(Json(state.engine.info(&principal, &path.stream).await?))
}

/// The outcome of deleting a stream.
#[derive(Debug, Serialize)]
pub(crate) struct StreamDeleted {
    stream: StreamName,
    deleted: bool,
}

/// `DELETE /api/streams/{stream}`: 404 when there was no such stream.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Caller(principal): Caller,
    path: StreamPath,
) -> Result<Json<StreamDeleted>, ApiError> {
    let existed = state.engine.delete_stream(&principal, &path.stream).await?;
    if !existed {
        let missing = StoreError::NoSuchStream {
            stream: path.stream,
        };
        return Err(busbar_engine::EngineError::from(missing).into());
    }
    Ok(Json(StreamDeleted {
        stream: path.stream,
        deleted: true,
    }))
}

/// How many events a trim removed.
#[derive(Debug, Serialize)]
pub(crate) struct Trimmed {
    removed: u64,
}

/// `POST /api/streams/{stream}/trim` with one of `{"maxlen":N,"approx":b}`,
/// `{"minid":"<id>"}`, `{"max_age":"1h"}`, `{"max_bytes":N}`.
pub(crate) async fn trim(
    State(state): State<AppState>,
    Caller(principal): Caller,
    path: StreamPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Trimmed>, ApiError> {
    let bytes = read_limited(&headers, body, &state.cfg).await?;
    let spec: TrimSpec = json(&bytes, &state.cfg)?;
    let trim = spec.to_trim()?;
    let removed = state.engine.trim(&principal, &path.stream, trim).await?;
    Ok(Json(Trimmed { removed }))
}

/// What a rotation did.
#[derive(Debug, Serialize)]
pub(crate) struct RotatedStream {
    stream: StreamName,
    sealed: bool,
    segments: u64,
}

/// `POST /api/streams/{stream}/rotate`: seals the active segment.
pub(crate) async fn rotate(
    State(state): State<AppState>,
    Caller(principal): Caller,
    path: StreamPath,
) -> Result<Json<RotatedStream>, ApiError> {
    let rotated = state
        .engine
        .rotate(&principal, Some(&path.stream))
        .await?
        .into_iter()
        .next();
    let (stream, rotated) = rotated.ok_or(ApiError::Internal("rotation reported no stream"))?;
    Ok(Json(RotatedStream {
        stream,
        sealed: rotated.sealed,
        segments: rotated.segments,
    }))
}
