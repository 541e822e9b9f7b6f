//! Request bodies: reading them under a size limit, splitting a publish body
//! into events, and decoding small JSON bodies.
//!
//! No body reaches serde_json before busbar's own pass
//! ([`busbar_event::check_json`]) has found it within the depth limit (a
//! publish body one level deeper, for the array around its events): a
//! 100,000-deep body is refused where it passes the limit.

use axum::body::Body;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::HeaderMap;
use busbar_engine::EngineError;
use busbar_event::EventError;
use bytes::Bytes;
use http_body_util::LengthLimitError;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::{ApiError, HttpConfig};

/// Reads the whole body, refusing it as soon as it passes
/// `max_body_bytes`: a declared `Content-Length` over the limit is refused
/// before reading, and a chunked body is cut off at the limit, so memory
/// stays bounded either way. The whole body must arrive within
/// `body_timeout`, however it trickles in.
///
/// # Errors
/// [`ApiError::BodyTooLarge`], [`ApiError::BodyTimeout`], or
/// [`ApiError::BodyRead`] when the client stops sending.
pub(crate) async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    cfg: &HttpConfig,
) -> Result<Bytes, ApiError> {
    let limit = cfg.max_body_bytes;
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    let read = axum::body::to_bytes(body, limit);
    let read = if cfg.body_timeout.is_zero() {
        read.await
    } else {
        tokio::time::timeout(cfg.body_timeout, read)
            .await
            .map_err(|_| ApiError::BodyTimeout {
                timeout_ms: cfg.body_timeout.as_millis() as u64,
            })?
    };
    read.map_err(|e| {
        if e.into_inner().downcast_ref::<LengthLimitError>().is_some() {
            ApiError::BodyTooLarge { limit }
        } else {
            ApiError::BodyRead
        }
    })
}

/// Reads a small JSON request body (as [`read_limited`]) and decodes it; an empty
/// body decodes as `{}`, so routes whose fields are all optional take none.
///
/// # Errors
/// As [`read_limited`] and [`json`].
pub(crate) async fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    cfg: &HttpConfig,
) -> Result<T, ApiError> {
    let bytes = read_limited(headers, body, cfg).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return json(b"{}", cfg);
    }
    json(&bytes, cfg)
}

/// Decodes a small JSON request body, nested at most as deep as an event
/// may be.
///
/// # Errors
/// `too_deep` or `invalid_number` ([`EngineError::Event`]) for a body past
/// the limits; [`ApiError::InvalidBody`] naming what the parser reported.
pub(crate) fn json<T: DeserializeOwned>(bytes: &[u8], cfg: &HttpConfig) -> Result<T, ApiError> {
    match busbar_event::check_json(bytes, cfg.event_limits.max_depth) {
        // Malformed: serde_json's words, as for any body it cannot decode.
        Ok(()) | Err(EventError::MalformedJson { .. }) => {}
        Err(e) => return Err(EngineError::Event(e).into()),
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::InvalidBody {
        reason: without_input(&e),
    })
}

/// serde_json's message for `e`. Data errors may quote a fragment of the
/// input (`invalid type: string "..."`), so those are reduced to their
/// category and position.
fn without_input(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => format!(
            "unexpected value at line {} column {}",
            e.line(),
            e.column()
        ),
        _ => e.to_string(),
    }
}

/// Whether the `Content-Type` declares NDJSON (one JSON object per line).
pub(crate) fn declares_ndjson(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = value.split(';').next().unwrap_or_default().trim();
    [
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
    ]
    .iter()
    .any(|m| mime.eq_ignore_ascii_case(m))
}

/// Splits a publish body into the bytes of each event, in order.
///
/// Unless `ndjson` is declared, the body is taken as one JSON value when it
/// is one (an object is one event, an array holds one event per element)
/// and as NDJSON otherwise. Each piece is validated later by
/// `parse_event`, which names the failing index.
///
/// A body whose first value is past the limits (`max_depth`, one level
/// more for an array's events; numbers) is one event when it is not an
/// array, so `parse_event` names what is wrong as event 0; an array is
/// refused whole, for that reason.
///
/// # Errors
/// [`ApiError::EmptyBatch`]; a malformed JSON array; an array past the
/// limits (`too_deep`, `invalid_number`); more than `max_events` events
/// ([`busbar_engine::EngineError::BatchTooLarge`]).
pub(crate) fn split_events(
    body: &[u8],
    ndjson: bool,
    max_events: usize,
    max_depth: usize,
) -> Result<Vec<&[u8]>, ApiError> {
    let pieces = if ndjson {
        lines(body)
    } else {
        match busbar_event::check_json(body, max_depth + 1) {
            // Not one JSON value: NDJSON, whose lines are checked one by one.
            Err(EventError::MalformedJson { .. }) => lines(body),
            Err(e) if body.trim_ascii_start().starts_with(b"[") => {
                let e = match e {
                    // Counted from the events, not the array around them.
                    EventError::TooDeep { .. } => EventError::TooDeep {
                        depth: max_depth + 1,
                        limit: max_depth,
                    },
                    other => other,
                };
                return Err(EngineError::Event(e).into());
            }
            Err(_) => vec![body.trim_ascii()],
            Ok(()) => {
                // Within the limits, so serde_json may split it.
                let value: &RawValue =
                    serde_json::from_slice(body).map_err(|e| ApiError::InvalidBody {
                        reason: without_input(&e),
                    })?;
                let text = value.get();
                if text.starts_with('[') {
                    let elements: Vec<&RawValue> =
                        serde_json::from_str(text).map_err(|e| ApiError::InvalidBody {
                            reason: without_input(&e),
                        })?;
                    elements.into_iter().map(|v| v.get().as_bytes()).collect()
                } else {
                    vec![text.as_bytes()]
                }
            }
        }
    };
    if pieces.is_empty() {
        return Err(ApiError::EmptyBatch);
    }
    if pieces.len() > max_events {
        return Err(busbar_engine::EngineError::BatchTooLarge {
            len: pieces.len(),
            limit: max_events,
        }
        .into());
    }
    Ok(pieces)
}

/// The non-blank lines of an NDJSON body.
fn lines(body: &[u8]) -> Vec<&[u8]> {
    body.split(|&b| b == b'\n')
        .map(|line| line.trim_ascii())
        .filter(|line| !line.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(body: &str) -> Result<Vec<&str>, ApiError> {
        split_events(body.as_bytes(), false, 10, 64).map(|v| {
            v.into_iter()
                .map(|b| std::str::from_utf8(b).unwrap())
                .collect()
        })
    }

    #[test]
    fn detects_object_array_and_ndjson() {
        assert_eq!(split(r#" {"type":"a"} "#).unwrap(), [r#"{"type":"a"}"#]);
        assert_eq!(
            split(r#"[{"type":"a"}, {"type":"b"}]"#).unwrap(),
            [r#"{"type":"a"}"#, r#"{"type":"b"}"#]
        );
        assert_eq!(
            split("{\"type\":\"a\"}\r\n\n{\"type\":\"b\"}\n").unwrap(),
            [r#"{"type":"a"}"#, r#"{"type":"b"}"#]
        );
        // A pretty-printed object is one event, not three lines.
        assert_eq!(split("{\n\"type\":\"a\"\n}").unwrap().len(), 1);
    }

    #[test]
    fn refuses_empty_and_oversize_batches() {
        assert!(matches!(split("[]"), Err(ApiError::EmptyBatch)));
        assert!(matches!(split("  \n "), Err(ApiError::EmptyBatch)));
        let many = format!("[{}]", [r#"{"type":"a"}"#; 11].join(","));
        assert_eq!(split(&many).unwrap_err().status(), 413);
    }

    #[test]
    fn declared_ndjson_is_split_by_lines() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            "application/x-ndjson; charset=utf-8".parse().unwrap(),
        );
        assert!(declares_ndjson(&headers));
        let body = b"{\"type\":\"a\"}\n[1]\n";
        assert_eq!(split_events(body, true, 10, 64).unwrap().len(), 2);
    }
}
