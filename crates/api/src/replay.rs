//! Replay jobs, and the status of every background job.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use busbar_engine::{JobKind, JobStatus, ReplaySpec, ReplayTarget};
use busbar_event::{EventId, StreamName};
use busbar_store::group::{Exhausted, GroupConfig};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Caller;
use crate::body::json_body;
use crate::dlq::job_accepted;
use crate::params::{bound, time_ms, type_filter, JobPath};
use crate::{ApiError, AppState};

/// Where a replay goes: exactly one key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetBody {
    /// Republish onto this stream.
    stream: Option<String>,
    /// Move this existing group's cursor back.
    group: Option<String>,
    /// Create this group at the range start.
    #[serde(alias = "newGroup")]
    new_group: Option<String>,
    /// The new group's deliveries before dead-lettering.
    #[serde(alias = "maxDeliver")]
    max_deliver: Option<u32>,
    /// The new group's ack wait.
    #[serde(alias = "ackWaitMs")]
    ack_wait_ms: Option<u64>,
    /// The new group's handling of exhausted events.
    #[serde(alias = "onExhausted")]
    on_exhausted: Option<Exhausted>,
}

/// Body of `POST /api/replay`; camelCase keys as in the HYVVE runbook, or
/// snake_case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    /// The stream (default: the caller's default stream, `events`).
    stream: Option<String>,
    /// First id (or ms, `-`, an RFC 3339 time).
    from: Option<String>,
    /// Last id (inclusive).
    to: Option<String>,
    /// Range start as a time: RFC 3339 text or ms since the epoch.
    #[serde(alias = "start_time")]
    #[serde(rename = "startTime")]
    start_time: Option<Value>,
    /// Range end as a time (inclusive).
    #[serde(alias = "end_time")]
    #[serde(rename = "endTime")]
    end_time: Option<Value>,
    /// Only these types (`order.*` matches a prefix).
    #[serde(rename = "eventTypes", alias = "event_types", alias = "types")]
    event_types: Option<Vec<String>>,
    /// At most this many events.
    limit: Option<u64>,
    /// Events per appended batch.
    #[serde(rename = "batchSize", alias = "batch_size")]
    batch_size: Option<usize>,
    /// Events per second.
    rate: Option<u32>,
    /// Where events go (default: republish onto the stream itself).
    target: Option<TargetBody>,
}

fn time_value(name: &'static str, value: &Value) -> Result<u64, ApiError> {
    match value {
        Value::String(text) => time_ms(name, text),
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| ApiError::param(name, "milliseconds must be a whole number")),
        _ => Err(ApiError::param(
            name,
            "expected an RFC 3339 time or milliseconds since the epoch",
        )),
    }
}

impl ReplayBody {
    fn spec(self, default_stream: StreamName) -> Result<ReplaySpec, ApiError> {
        let stream = match &self.stream {
            Some(name) => StreamName::new(name)?,
            None => default_stream,
        };
        if self.from.is_some() && self.start_time.is_some() {
            return Err(ApiError::param(
                "from",
                "give `from` or `startTime`, not both",
            ));
        }
        if self.to.is_some() && self.end_time.is_some() {
            return Err(ApiError::param("to", "give `to` or `endTime`, not both"));
        }
        let start = match (&self.from, &self.start_time) {
            (Some(from), _) => bound("from", from, true)?,
            (_, Some(t)) => EventId::new(time_value("startTime", t)?, 0),
            _ => EventId::ZERO,
        };
        let end = match (&self.to, &self.end_time) {
            (Some(to), _) => bound("to", to, false)?,
            (_, Some(t)) => EventId::new(time_value("endTime", t)?, u64::MAX),
            _ => EventId::MAX,
        };
        let target = match self.target {
            None => ReplayTarget::Stream(stream.clone()),
            Some(t) => target(t)?,
        };
        Ok(ReplaySpec {
            stream,
            start,
            end,
            types: self
                .event_types
                .as_ref()
                .and_then(|list| type_filter(list.iter().map(String::as_str))),
            limit: self.limit,
            batch_size: self.batch_size,
            rate: self.rate,
            target,
        })
    }
}

fn target(t: TargetBody) -> Result<ReplayTarget, ApiError> {
    let has_config = t.max_deliver.is_some() || t.ack_wait_ms.is_some() || t.on_exhausted.is_some();
    match (t.stream, t.group, t.new_group) {
        (Some(stream), None, None) if !has_config => {
            Ok(ReplayTarget::Stream(StreamName::new(&stream)?))
        }
        (None, Some(group), None) if !has_config => Ok(ReplayTarget::Group(group)),
        (None, None, Some(name)) => {
            let mut config = GroupConfig::default();
            if let Some(n) = t.max_deliver.filter(|n| *n > 0) {
                config.max_deliver = n;
            }
            if let Some(ms) = t.ack_wait_ms.filter(|ms| *ms > 0) {
                config.ack_wait = Duration::from_millis(ms);
            }
            if let Some(on) = t.on_exhausted {
                config.on_exhausted = on;
            }
            Ok(ReplayTarget::NewGroup { name, config })
        }
        _ => Err(ApiError::param(
            "target",
            "give exactly one of {\"stream\":...}, {\"group\":...} or {\"new_group\":...} \
             (group settings only with new_group)",
        )),
    }
}

/// `POST /api/replay` (admin): 202 with the job; its status is at
/// `Location`. An inverted range is 400 `inverted_range`.
pub(crate) async fn start(
    State(state): State<AppState>,
    Caller(principal): Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request: ReplayBody = json_body(&headers, body, &state.cfg).await?;
    let spec = request.spec(state.engine.default_stream(&principal))?;
    let job = state.engine.start_replay(&principal, spec).await?;
    Ok(job_accepted(job))
}

/// Remembered jobs.
#[derive(Debug, Serialize)]
pub(crate) struct JobList {
    jobs: Vec<JobStatus>,
}

/// `GET /api/replay`: replay jobs, oldest first.
pub(crate) async fn list_replays(
    State(state): State<AppState>,
    Caller(principal): Caller,
) -> Result<Json<JobList>, ApiError> {
    let mut jobs = state.engine.jobs(&principal)?;
    jobs.retain(|j| j.kind == JobKind::Replay);
    Ok(Json(JobList { jobs }))
}

/// `GET /api/jobs`: every job (replays and DLQ reprocessing), oldest first.
pub(crate) async fn list_jobs(
    State(state): State<AppState>,
    Caller(principal): Caller,
) -> Result<Json<JobList>, ApiError> {
    let jobs = state.engine.jobs(&principal)?;
    Ok(Json(JobList { jobs }))
}

/// `GET /api/replay/{job}` and `GET /api/jobs/{job}`: one job's progress.
pub(crate) async fn status(
    State(state): State<AppState>,
    Caller(principal): Caller,
    JobPath(job): JobPath,
) -> Result<Json<JobStatus>, ApiError> {
    Ok(Json(state.engine.job(&principal, &job)?))
}

/// `POST /api/replay/{job}/cancel` and `POST /api/jobs/{job}/cancel`
/// (admin): the job stops before its next batch.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Caller(principal): Caller,
    JobPath(job): JobPath,
) -> Result<Json<JobStatus>, ApiError> {
    Ok(Json(state.engine.cancel_job(&principal, &job)?))
}
