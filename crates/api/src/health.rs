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

/// The HYVVE runbook's health shape; without `?stream=`, summed over every
/// stream with each one's own figures in `streams`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventsHealth {
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<String>,
    status: busbar_engine::HealthStatus,
    stream_length: u64,
    dlq_length: u64,
    consumer_groups: u64,
    last_processed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    streams: Option<Vec<EventsHealth>>,
}

impl EventsHealth {
    /// One stream's figures (`stream` names it inside a list).
    fn of(stream: Option<String>, health: &busbar_engine::StreamHealth) -> EventsHealth {
        EventsHealth {
            stream,
            status: health.status,
            stream_length: health.stream_length,
            dlq_length: health.dlq_length,
            consumer_groups: health.consumer_groups,
            last_processed_at: rfc3339(health.last_processed_ms),
            streams: None,
        }
    }
}

/// Streams listed in one answer without `?stream=`; more are summed but
/// not listed one by one.
const MAX_LISTED: usize = 1000;

fn rfc3339(ms: Option<u64>) -> Option<String> {
    ms.map(|ms| {
        let at = std::time::UNIX_EPOCH + Duration::from_millis(ms);
        humantime::format_rfc3339_seconds(at).to_string()
    })
}

/// `GET /events/health[?stream=]`: the runbook's
/// `{"status","streamLength","dlqLength","consumerGroups","lastProcessedAt"}`
/// for the stream named, or, without `?stream=`, for every stream the
/// caller may see (dead-letter streams and busbar's own are counted with
/// the stream they belong to, or not at all): the figures summed, the
/// worst status, the latest acknowledgement, and each stream's own in
/// `streams`. Once tokens are configured it needs the `consume` scope,
/// like a read. A named stream that does not exist, or that the caller
/// may not see, is 404 (the same answer, so it tells nothing about another
/// tenant's streams).
pub(crate) async fn events_health(
    State(state): State<AppState>,
    Caller(principal): Caller,
    uri: Uri,
) -> Result<Json<EventsHealth>, ApiError> {
    let params: HealthParams = query(&uri)?;
    if let Some(name) = params.stream.as_deref() {
        let stream = StreamName::new(name)?;
        let health = state.engine.stream_health(&principal, &stream).await?;
        if !health.exists {
            let missing = busbar_store::StoreError::NoSuchStream { stream };
            return Err(busbar_engine::EngineError::from(missing).into());
        }
        return Ok(Json(EventsHealth::of(None, &health)));
    }
    let mut all = EventsHealth {
        stream: None,
        status: busbar_engine::HealthStatus::Healthy,
        stream_length: 0,
        dlq_length: 0,
        consumer_groups: 0,
        last_processed_at: None,
        streams: Some(Vec::new()),
    };
    let mut last = None;
    for info in state.engine.streams(&principal).await? {
        let name = info.name.as_str();
        if name.ends_with(":dlq") || busbar_engine::journal::is_internal(name) {
            continue;
        }
        let health = state.engine.stream_health(&principal, &info.name).await?;
        if !health.exists {
            continue;
        }
        if health.status == busbar_engine::HealthStatus::Degraded {
            all.status = busbar_engine::HealthStatus::Degraded;
        }
        all.stream_length += health.stream_length;
        all.dlq_length += health.dlq_length;
        all.consumer_groups += health.consumer_groups;
        last = last.max(health.last_processed_ms);
        if let Some(list) = all.streams.as_mut().filter(|l| l.len() < MAX_LISTED) {
            list.push(EventsHealth::of(Some(name.to_owned()), &health));
        }
    }
    all.last_processed_at = rfc3339(last);
    Ok(Json(all))
}
