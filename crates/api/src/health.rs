//! The HYVVE runbook's `/events/health`.

use std::time::Duration;

use axum::extract::State;
use axum::http::Uri;
use axum::Json;
use busbar_event::StreamName;
use serde::{Deserialize, Serialize};

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
/// for the `events` stream or the one named. Open like `/metrics`. A
/// default stream not created yet reports zeros; a named one that does not
/// exist is 404.
pub(crate) async fn events_health(
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Json<EventsHealth>, ApiError> {
    let params: HealthParams = query(&uri)?;
    let named = params.stream.is_some();
    let stream = StreamName::new(
        params
            .stream
            .as_deref()
            .unwrap_or(busbar_event::DEFAULT_STREAM),
    )?;
    let health = state.engine.stream_health(&stream).await?;
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
