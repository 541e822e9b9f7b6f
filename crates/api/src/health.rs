//! The HYVVE runbook's `/events/health`.

use std::time::Duration;

use axum::extract::State;
use axum::http::Uri;
use axum::Json;
use busbar_event::StreamName;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::params::query;
use crate::{ApiError, AppState};

/// Query of `/events/health`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthParams {
    stream: Option<String>,
}

/// The HYVVE runbook's health shape, exactly.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventsHealth {
    status: busbar_engine::HealthStatus,
    stream_length: u64,
    dlq_length: u64,
    consumer_groups: u64,
    last_processed_at: Option<String>,
}

/// `GET /events/health[?stream=]`: the runbook's
/// `{"status","streamLength","dlqLength","consumerGroups","lastProcessedAt"}`
/// for the caller's default stream (`events`, or `<tenant>:events` for a
/// tenant-bound token) or the one named. Once tokens are configured it
/// needs the `consume` scope, like a read. A default stream not created
/// yet reports zeros; a named one that does not exist, or that the caller
/// may not see, is 404 (the same answer, so it tells nothing about another
/// tenant's streams).
pub(crate) async fn events_health(
    State(state): State<AppState>,
    Caller(principal): Caller,
    uri: Uri,
) -> Result<Json<EventsHealth>, ApiError> {
    let params: HealthParams = query(&uri)?;
    let named = params.stream.is_some();
    let stream = match params.stream.as_deref() {
        Some(name) => StreamName::new(name)?,
        None => state.engine.default_stream(&principal),
    };
    let health = state.engine.stream_health(&principal, &stream).await?;
    if named && !health.exists {
        let missing = busbar_store::StoreError::NoSuchStream { stream };
        return Err(busbar_engine::EngineError::from(missing).into());
    }
    let last_processed_at = health.last_processed_ms.map(|ms| {
        let at = std::time::UNIX_EPOCH + Duration::from_millis(ms);
        humantime::format_rfc3339_seconds(at).to_string()
    });
    Ok(Json(EventsHealth {
        status: health.status,
        stream_length: health.stream_length,
        dlq_length: health.dlq_length,
        consumer_groups: health.consumer_groups,
        last_processed_at,
    }))
}
