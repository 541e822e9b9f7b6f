//! Consumer-group administration: create, list, describe, delete, pause
//! and resume groups, remove consumers, and pause all delivery at once.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use busbar_engine::EngineError;
use busbar_event::{EventId, StreamName};
use busbar_store::group::{Exhausted, GroupConfig, GroupInfo, GroupStart};
use busbar_store::StoreError;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::body::json_body;
use crate::params::StreamPath;
use crate::{ApiError, AppState};

/// Body of `POST /api/streams/{stream}/groups`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    /// The group's name.
    name: String,
    /// `end` (or `$`, the default): events appended from now on;
    /// `beginning` (or `0`, `-`): every event; or an id: events after it.
    start: Option<String>,
    /// Deliveries before an event is dead-lettered (default 3).
    max_deliver: Option<u32>,
    /// How long a delivery may stay unacknowledged (default 30000).
    #[serde(alias = "ack_wait")]
    ack_wait_ms: Option<u64>,
    /// Most pending events per consumer (default 1000).
    max_pending_per_consumer: Option<u32>,
    /// `dead_letter` (default) or `drop`.
    on_exhausted: Option<Exhausted>,
}

impl CreateBody {
    fn start(&self) -> Result<GroupStart, ApiError> {
        match self.start.as_deref().map(str::trim) {
            None | Some("end" | "$") => Ok(GroupStart::End),
            Some("beginning" | "0" | "-") => Ok(GroupStart::Beginning),
            Some(id) => id.parse::<EventId>().map(GroupStart::After).map_err(|_| {
                ApiError::param(
                    "start",
                    "expected \"end\", \"beginning\" or an id <ms>-<seq>",
                )
            }),
        }
    }

    fn config(&self) -> Result<GroupConfig, ApiError> {
        let mut config = GroupConfig::default();
        if let Some(n) = self.max_deliver {
            if n == 0 {
                return Err(ApiError::param("max_deliver", "must be at least 1"));
            }
            config.max_deliver = n;
        }
        if let Some(ms) = self.ack_wait_ms {
            if ms == 0 {
                return Err(ApiError::param("ack_wait_ms", "must be at least 1"));
            }
            config.ack_wait = Duration::from_millis(ms);
        }
        if let Some(n) = self.max_pending_per_consumer {
            if n == 0 {
                return Err(ApiError::param(
                    "max_pending_per_consumer",
                    "must be at least 1",
                ));
            }
            config.max_pending_per_consumer = n;
        }
        if let Some(on) = self.on_exhausted {
            config.on_exhausted = on;
        }
        Ok(config)
    }
}

/// `POST /api/streams/{stream}/groups`: 201 with the new group. The stream
/// is created when it does not exist (`XGROUP CREATE ... MKSTREAM`).
pub(crate) async fn create(
    State(state): State<AppState>,
    Caller(principal): Caller,
    path: StreamPath,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<GroupInfo>), ApiError> {
    let request: CreateBody = json_body(&headers, body, &state.cfg).await?;
    let (start, config) = (request.start()?, request.config()?);
    let info = state
        .engine
        .create_group(&principal, &path.stream, &request.name, start, config)
        .await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// Every group of a stream.
#[derive(Debug, Serialize)]
pub(crate) struct GroupList {
    groups: Vec<GroupInfo>,
}

/// `GET /api/streams/{stream}/groups` (`XINFO GROUPS`).
pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(principal): Caller,
    path: StreamPath,
) -> Result<Json<GroupList>, ApiError> {
    let groups = state.engine.groups(&principal, &path.stream).await?;
    Ok(Json(GroupList { groups }))
}

/// `GET /api/streams/{stream}/groups/{group}`.
pub(crate) async fn info(
    State(state): State<AppState>,
    Caller(principal): Caller,
    path: StreamPath,
) -> Result<Json<GroupInfo>, ApiError> {
    let info = state
        .engine
        .group(&principal, &path.stream, path.group()?)
        .await?;
    Ok(Json(info))
}

/// The outcome of deleting a group.
#[derive(Debug, Serialize)]
pub(crate) struct GroupDeleted {
    stream: StreamName,
    group: String,
    deleted: bool,
}

/// `DELETE /api/streams/{stream}/groups/{group}` (admin): 404 when there
/// was no such group.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Caller(principal): Caller,
    path: StreamPath,
) -> Result<Json<GroupDeleted>, ApiError> {
    let group = path.group()?.to_owned();
    let existed = state
        .engine
        .delete_group(&principal, &path.stream, &group)
        .await?;
    if !existed {
        let missing = StoreError::NoSuchGroup {
            stream: path.stream,
            group,
        };
        return Err(EngineError::from(missing).into());
    }
    Ok(Json(GroupDeleted {
        stream: path.stream,
        group,
        deleted: true,
    }))
}

/// Whether delivery is paused, for one group or all.
#[derive(Debug, Serialize)]
pub(crate) struct Paused {
    paused: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<StreamName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
}

async fn set_group_paused(
    state: &AppState,
    principal: &busbar_engine::Principal,
    path: StreamPath,
    paused: bool,
) -> Result<Json<Paused>, ApiError> {
    let group = path.group()?.to_owned();
    state
        .engine
        .set_group_paused(principal, &path.stream, &group, paused)
        .await?;
    Ok(Json(Paused {
        paused,
        stream: Some(path.stream),
        group: Some(group),
    }))
}

/// `POST /api/streams/{stream}/groups/{group}/pause` (admin): nothing is
/// delivered to the group until it resumes; publishing goes on.
pub(crate) async fn pause(
    State(state): State<AppState>,
    Caller(principal): Caller,
    path: StreamPath,
) -> Result<Json<Paused>, ApiError> {
    set_group_paused(&state, &principal, path, true).await
}

/// `POST /api/streams/{stream}/groups/{group}/resume` (admin).
pub(crate) async fn resume(
    State(state): State<AppState>,
    Caller(principal): Caller,
    path: StreamPath,
) -> Result<Json<Paused>, ApiError> {
    set_group_paused(&state, &principal, path, false).await
}

/// What a consumer's removal released.
#[derive(Debug, Serialize)]
pub(crate) struct ConsumerDeleted {
    consumer: String,
    released: u64,
}

/// `DELETE /api/streams/{stream}/groups/{group}/consumers/{consumer}`
/// (admin): its pending entries go to whoever reads next.
pub(crate) async fn delete_consumer(
    State(state): State<AppState>,
    Caller(principal): Caller,
    path: StreamPath,
) -> Result<Json<ConsumerDeleted>, ApiError> {
    let consumer = path.consumer()?.to_owned();
    let released = state
        .engine
        .delete_consumer(&principal, &path.stream, path.group()?, &consumer)
        .await?;
    Ok(Json(ConsumerDeleted { consumer, released }))
}

/// Optional body of `POST /api/consumers/pause|resume`: one group, or all
/// delivery when empty.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseBody {
    stream: Option<String>,
    group: Option<String>,
}

async fn pause_all(
    state: AppState,
    principal: busbar_engine::Principal,
    headers: HeaderMap,
    body: Body,
    paused: bool,
) -> Result<Json<Paused>, ApiError> {
    let request: PauseBody = json_body(&headers, body, &state.cfg).await?;
    match (request.stream, request.group) {
        (None, None) => {
            state.engine.set_all_paused(&principal, paused)?;
            tracing::info!(paused, "all group delivery paused or resumed");
            Ok(Json(Paused {
                paused,
                stream: None,
                group: None,
            }))
        }
        (Some(stream), Some(group)) => {
            let stream = StreamName::new(&stream)?;
            state
                .engine
                .set_group_paused(&principal, &stream, &group, paused)
                .await?;
            Ok(Json(Paused {
                paused,
                stream: Some(stream),
                group: Some(group),
            }))
        }
        _ => Err(ApiError::param(
            "group",
            "give both `stream` and `group` for one group, or neither for all delivery",
        )),
    }
}

/// `POST /api/consumers/pause` (admin): stops all group delivery (or one
/// group's, with `{"stream","group"}`) until resumed. Not persisted: a
/// restart resumes all delivery.
pub(crate) async fn pause_everything(
    State(state): State<AppState>,
    Caller(principal): Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Paused>, ApiError> {
    pause_all(state, principal, headers, body, true).await
}

/// `POST /api/consumers/resume` (admin).
pub(crate) async fn resume_everything(
    State(state): State<AppState>,
    Caller(principal): Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Paused>, ApiError> {
    pause_all(state, principal, headers, body, false).await
}
