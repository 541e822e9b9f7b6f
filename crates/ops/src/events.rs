//! `GET /api/ops/events`: the ops journal, filtered.
//!
//! | parameter | meaning |
//! |---|---|
//! | `type` | a type (`socket:join`), a prefix ending at `:` (`relay` matches `relay:connected`), or a category (`relay` also matches `drift_warn`); several separated by commas |
//! | `since` | only events at or after: an event id (`<ms>-<seq>`), milliseconds since the epoch, or a duration back from now (`10m`) |
//! | `limit` | at most this many, newest first; default 100, at most 1000 |
//!
//! A tenant-bound caller gets only the events about its tenant; an
//! untenanted one every event, each naming its tenant.

use std::time::Duration;

use busbar_engine::journal::{type_matches, OPS_STREAM};
use busbar_engine::{Engine, EngineError, Principal};
use busbar_event::{Event, EventId, StreamName};
use busbar_store::{ReadQuery, StoreError};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The default and largest `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest `limit`.
pub const MAX_LIMIT: usize = 1000;
const CHUNK: usize = 1000;

/// What `GET /api/ops/events` and `busbar ops events` ask for.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EventsQuery {
    /// Types, prefixes or categories, comma-separated.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Only events at or after this point.
    pub since: Option<String>,
    /// At most this many.
    pub limit: Option<usize>,
}

/// A `since` read as the smallest id to show.
///
/// # Errors
/// [`EngineError::InvalidParam`] naming what is wrong.
pub fn parse_since(since: &str, now_ms: u64) -> Result<EventId, EngineError> {
    let text = since.trim();
    if let Ok(id) = text.parse::<EventId>() {
        if text.contains('-') {
            return Ok(id);
        }
    }
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(EventId::new(ms, 0));
    }
    match humantime::parse_duration(text) {
        Ok(back) => {
            let back = u64::try_from(back.as_millis()).unwrap_or(u64::MAX);
            Ok(EventId::new(now_ms.saturating_sub(back), 0))
        }
        Err(_) => Err(EngineError::InvalidParam {
            name: "since",
            reason: format!(
                "`{}` is not an event id, a time in ms or a duration such as 10m",
                text.chars().take(64).collect::<String>()
            ),
        }),
    }
}

/// One stored ops event as the API shows it: `id`, `type`, `at` (ms),
/// `tenant`, `category` and its fields.
pub fn render(event: &Event) -> Value {
    let mut object = match serde_json::from_slice::<Value>(event.payload()) {
        Ok(Value::Object(o)) => o,
        _ => Map::new(),
    };
    let mut out = Map::with_capacity(object.len() + 4);
    out.insert("id".into(), Value::from(event.id().to_string()));
    out.insert("type".into(), Value::from(event.event_type()));
    out.insert("at".into(), Value::from(event.id().ms));
    out.insert(
        "tenant".into(),
        event.tenant().map_or(Value::Null, Value::from),
    );
    if let Some(category) = object.remove("category") {
        out.insert("category".into(), category);
    }
    out.extend(object);
    Value::Object(out)
}

fn category(event: &Event) -> String {
    // Cheap enough for an ops read: the payload is a small object.
    serde_json::from_slice::<Value>(event.payload())
        .ok()
        .and_then(|v| v.get("category").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default()
}

/// The newest ops events matching `query` that `principal` may see,
/// newest first.
///
/// # Errors
/// [`EngineError::InvalidParam`] for a bad `limit` or `since`; store errors.
pub async fn recent(
    engine: &Engine,
    principal: &Principal,
    query: &EventsQuery,
) -> Result<Vec<Value>, EngineError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(EngineError::InvalidParam {
            name: "limit",
            reason: format!("must be between 1 and {MAX_LIMIT}"),
        });
    }
    let floor = match &query.since {
        Some(s) => parse_since(s, busbar_event::now_ms())?,
        None => EventId::ZERO,
    };
    let filters: Vec<&str> = query
        .kind
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .collect();
    let stream = StreamName::new(OPS_STREAM).map_err(EngineError::Event)?;
    // Never more than the journal keeps, so a rare type costs one pass.
    let max_scan = usize::try_from(engine.journal().config().max_events)
        .unwrap_or(usize::MAX)
        .saturating_add(CHUNK);
    let mut out = Vec::new();
    let mut end = EventId::MAX;
    let mut scanned = 0;
    while out.len() < limit && scanned < max_scan {
        let read = ReadQuery::range(floor, end, CHUNK).reversed();
        // The journal's stream is read on the caller's behalf: the caller
        // was checked (admin), its tenant filters below.
        let events = match engine.read(&Principal::Trusted, &stream, read).await {
            Ok(events) => events,
            Err(EngineError::Store(StoreError::NoSuchStream { .. })) => break,
            Err(e) => return Err(e),
        };
        let Some(oldest) = events.last().map(Event::id) else {
            break;
        };
        scanned += events.len();
        for event in &events {
            if !principal.sees_tenant(event.tenant()) {
                continue;
            }
            if !filters.is_empty() {
                let category = category(event);
                if !filters
                    .iter()
                    .any(|f| type_matches(f, event.event_type(), &category))
                {
                    continue;
                }
            }
            out.push(render(event));
            if out.len() == limit {
                break;
            }
        }
        match oldest.predecessor() {
            Some(before) if events.len() == CHUNK => end = before,
            _ => break,
        }
    }
    Ok(out)
}

/// Waits until the journal's writer has written what was recorded before
/// the call (or `timeout` passes): for tests and for a support pack that
/// should include what just happened.
pub async fn settle(engine: &Engine, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !engine.journal().is_idle() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
