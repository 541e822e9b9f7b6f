//! Operator endpoints (`/health`, `/readyz`, `/metrics`, the OpenAPI
//! document) and the request-counting middleware.

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use busbar_engine::NotReady;
use serde::Serialize;

use crate::auth::Caller;
use crate::{ApiError, AppState};

/// The OpenAPI 3.0 description of every route, shipped with the crate.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// The Prometheus text exposition format, version 0.0.4.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Body of `/health` and of a ready `/readyz`.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    status: &'static str,
    /// Why the daemon is degraded, when it is.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    reasons: Vec<NotReady>,
}

/// `GET /health`: the process is up and serving HTTP (always 200, for
/// liveness probes), `"ok"`, or `"degraded"` with the reasons while the
/// store cannot write (a full disk, failing writes).
pub(crate) async fn health(State(state): State<AppState>) -> Json<Status> {
    let reasons: Vec<NotReady> = NotReady::from_write_health(state.engine.write_health())
        .into_iter()
        .collect();
    Json(Status {
        status: if reasons.is_empty() { "ok" } else { "degraded" },
        reasons,
    })
}

/// Body of a `/readyz` that is not ready.
#[derive(Debug, Serialize)]
struct NotReadyBody {
    status: &'static str,
    reasons: Vec<NotReady>,
}

/// `GET /readyz`: 200 when the daemon should get traffic, 503 with every
/// reason otherwise.
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    let engine = state.engine.clone();
    // The check does a probe write to the data directory.
    let reasons = tokio::task::spawn_blocking(move || engine.not_ready())
        .await
        .map_err(|_| ApiError::Internal("the readiness check did not complete"))?;
    if reasons.is_empty() {
        return Ok(Json(Status {
            status: "ready",
            reasons: Vec::new(),
        })
        .into_response());
    }
    let body = NotReadyBody {
        status: "not_ready",
        reasons,
    };
    Ok((StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response())
}

/// `GET /metrics`: every metric in the Prometheus text format. Once tokens
/// are configured it needs the `metrics` scope (or `admin`), and a
/// tenant-bound token sees only its streams' samples and the process-wide
/// ones.
pub(crate) async fn metrics(
    State(state): State<AppState>,
    Caller(principal): Caller,
) -> Result<Response, ApiError> {
    let text = state.engine.render_metrics_for(&principal).await?;
    Ok((
        [(CONTENT_TYPE, HeaderValue::from_static(PROMETHEUS_TEXT))],
        text,
    )
        .into_response())
}

/// `GET /api/openapi.json`.
pub(crate) async fn openapi(_caller: Caller) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        OPENAPI_JSON,
    )
        .into_response()
}

/// Answers paths no route matches.
pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// Answers a known path with a method it does not serve.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Counts every request by route template (never the raw path, which would
/// carry stream names and ids without bound) and status.
pub(crate) async fn count_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let response = next.run(request).await;
    let route = route.as_deref().unwrap_or("unmatched");
    state
        .engine
        .metrics()
        .http_requests
        .get([route, response.status().as_str()])
        .inc();
    response
}
