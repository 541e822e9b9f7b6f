//! Path and query parameters, decoded into busbar types with JSON errors
//! (axum's own rejections answer in plain text).

use std::time::Duration;

use axum::extract::{FromRequestParts, Query, RawPathParams};
use axum::http::request::Parts;
use axum::http::Uri;
use busbar_event::{EventId, StreamName};
use busbar_store::{Trim, TypeFilter};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::ApiError;

/// The `{stream}` of the path, validated, and the `{id}`, `{group}` and
/// `{consumer}` when the route has them.
#[derive(Debug, Clone)]
pub(crate) struct StreamPath {
    pub(crate) stream: StreamName,
    pub(crate) id: Option<String>,
    pub(crate) group: Option<String>,
    pub(crate) consumer: Option<String>,
}

impl StreamPath {
    /// The `{id}` of the path, parsed.
    pub(crate) fn event_id(&self) -> Result<EventId, ApiError> {
        let id = self
            .id
            .as_deref()
            .ok_or_else(|| ApiError::param("id", "missing from the path"))?;
        event_id(id)
    }

    /// The `{group}` of the path.
    pub(crate) fn group(&self) -> Result<&str, ApiError> {
        self.group
            .as_deref()
            .ok_or_else(|| ApiError::param("group", "missing from the path"))
    }

    /// The `{consumer}` of the path.
    pub(crate) fn consumer(&self) -> Result<&str, ApiError> {
        self.consumer
            .as_deref()
            .ok_or_else(|| ApiError::param("consumer", "missing from the path"))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for StreamPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::param("path", e.body_text()))?;
        let mut stream = None;
        let (mut id, mut group, mut consumer) = (None, None, None);
        for (key, value) in &params {
            match key {
                "stream" => stream = Some(StreamName::new(value)?),
                "id" => id = Some(value.to_owned()),
                "group" => group = Some(value.to_owned()),
                "consumer" => consumer = Some(value.to_owned()),
                _ => {}
            }
        }
        let stream = stream.ok_or_else(|| ApiError::param("stream", "missing from the path"))?;
        Ok(StreamPath {
            stream,
            id,
            group,
            consumer,
        })
    }
}

/// The `{job}` of the path.
#[derive(Debug, Clone)]
pub(crate) struct JobPath(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for JobPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::param("path", e.body_text()))?;
        params
            .iter()
            .find(|(key, _)| *key == "job")
            .map(|(_, value)| JobPath(value.to_owned()))
            .ok_or_else(|| ApiError::param("job", "missing from the path"))
    }
}

/// Parses a range bound: an id (`<ms>-<seq>`), a bare `<ms>`, `-` or `+`,
/// or an RFC 3339 time (`2025-12-01T00:00:00Z`, read as UTC when it has no
/// offset), which means its millisecond.
///
/// # Errors
/// [`ApiError::InvalidParam`] naming `name` and the accepted forms.
pub(crate) fn bound(name: &'static str, text: &str, is_start: bool) -> Result<EventId, ApiError> {
    if let Ok(id) = EventId::parse_bound(text, is_start) {
        return Ok(id);
    }
    let ms = time_ms(name, text)?;
    Ok(EventId::new(ms, if is_start { 0 } else { u64::MAX }))
}

/// Milliseconds since the epoch of an RFC 3339 time.
///
/// # Errors
/// [`ApiError::InvalidParam`] naming `name`.
pub(crate) fn time_ms(name: &'static str, text: &str) -> Result<u64, ApiError> {
    let time = humantime::parse_rfc3339_weak(text.trim()).map_err(|_| {
        ApiError::param(
            name,
            "expected an id (<ms>-<seq>), milliseconds, - or +, or an RFC 3339 time such as 2025-12-01T00:00:00Z",
        )
    })?;
    let since = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| ApiError::param(name, "is before 1970"))?;
    Ok(since.as_millis() as u64)
}

/// Comma-separated type patterns, or none when the list is empty.
pub(crate) fn type_filter<'a>(lists: impl IntoIterator<Item = &'a str>) -> Option<TypeFilter> {
    let patterns: Vec<&str> = lists
        .into_iter()
        .flat_map(|list| list.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    (!patterns.is_empty()).then(|| TypeFilter::new(patterns))
}

/// Decodes the query string of `uri` into `T`.
///
/// # Errors
/// [`ApiError::InvalidParam`] naming what did not parse.
pub(crate) fn query<T: DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    Query::<T>::try_from_uri(uri)
        .map(|Query(q)| q)
        .map_err(|e| ApiError::param("query", e.body_text()))
}

/// Parses an event id written `<ms>-<seq>`.
///
/// # Errors
/// [`ApiError::Engine`] with an invalid-id reason.
pub(crate) fn event_id(text: &str) -> Result<EventId, ApiError> {
    Ok(text.parse::<EventId>()?)
}

/// A trim request, from a JSON body (`POST .../trim`) or from the query of
/// a publish. Exactly one of `maxlen`, `minid`, `max_age` and `max_bytes`
/// must be given.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrimSpec {
    /// Keep at most this many events (XTRIM MAXLEN).
    pub(crate) maxlen: Option<u64>,
    /// Remove events with ids below this one (XTRIM MINID).
    pub(crate) minid: Option<String>,
    /// Remove events older than this, written for humans ("1h", "30m").
    pub(crate) max_age: Option<String>,
    /// Drop whole oldest segments while the stream is larger than this.
    pub(crate) max_bytes: Option<u64>,
    /// Let the store keep more so it can drop whole segments (`~`).
    pub(crate) approx: Option<bool>,
}

impl TrimSpec {
    /// Whether any trim was asked for.
    pub(crate) fn is_empty(&self) -> bool {
        self.maxlen.is_none()
            && self.minid.is_none()
            && self.max_age.is_none()
            && self.max_bytes.is_none()
    }

    /// The store's trim.
    ///
    /// # Errors
    /// [`ApiError::InvalidParam`] when none or several kinds are given, or a
    /// value does not parse.
    pub(crate) fn to_trim(&self) -> Result<Trim, ApiError> {
        let given = [
            self.maxlen.is_some(),
            self.minid.is_some(),
            self.max_age.is_some(),
            self.max_bytes.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(ApiError::param(
                "trim",
                "give exactly one of maxlen, minid, max_age, max_bytes",
            ));
        }
        let approx = self.approx.unwrap_or(false);
        if let Some(max) = self.maxlen {
            return Ok(Trim::MaxLen { max, approx });
        }
        if let Some(id) = &self.minid {
            let id = EventId::parse_bound(id, true)?;
            return Ok(Trim::MinId { id, approx });
        }
        if let Some(age) = &self.max_age {
            let age = parse_age(age)?;
            return Ok(Trim::MaxAge { age, approx });
        }
        if self.approx == Some(false) {
            return Err(ApiError::param(
                "approx",
                "max_bytes trims whole segments and is always approximate",
            ));
        }
        Ok(Trim::MaxBytes {
            max: self.max_bytes.unwrap_or_default(),
        })
    }
}

fn parse_age(text: &str) -> Result<Duration, ApiError> {
    let age = humantime::parse_duration(text)
        .map_err(|e| ApiError::param("max_age", format!("{e} (expected e.g. \"1h\", \"30m\")")))?;
    if age.is_zero() {
        return Err(ApiError::param("max_age", "must be greater than zero"));
    }
    Ok(age)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Result<Trim, ApiError> {
        serde_json::from_str::<TrimSpec>(json).unwrap().to_trim()
    }

    #[test]
    fn trims_parse() {
        assert_eq!(
            spec(r#"{"maxlen":5,"approx":true}"#).unwrap(),
            Trim::MaxLen {
                max: 5,
                approx: true
            }
        );
        assert_eq!(
            spec(r#"{"minid":"7-1"}"#).unwrap(),
            Trim::MinId {
                id: EventId::new(7, 1),
                approx: false
            }
        );
        assert_eq!(
            spec(r#"{"max_age":"1h"}"#).unwrap(),
            Trim::MaxAge {
                age: Duration::from_secs(3600),
                approx: false
            }
        );
        assert_eq!(
            spec(r#"{"max_bytes":10}"#).unwrap(),
            Trim::MaxBytes { max: 10 }
        );
    }

    #[test]
    fn bounds_take_ids_millis_and_times() {
        assert_eq!(bound("from", "5-1", true).unwrap(), EventId::new(5, 1));
        assert_eq!(bound("to", "7", false).unwrap(), EventId::new(7, u64::MAX));
        assert_eq!(
            bound("from", "2025-12-01T00:00:00Z", true).unwrap(),
            EventId::new(1_764_547_200_000, 0)
        );
        assert_eq!(
            bound("to", "2025-12-01T00:00:01.5Z", false).unwrap(),
            EventId::new(1_764_547_201_500, u64::MAX)
        );
        let err = bound("from", "yesterday", true).unwrap_err();
        assert!(err.to_string().contains("RFC 3339"), "{err}");
    }

    #[test]
    fn type_lists_split_on_commas() {
        assert_eq!(
            type_filter(["a, b.*", ""]),
            Some(TypeFilter::new(["a", "b.*"]))
        );
        assert_eq!(type_filter([" , "]), None);
    }

    #[test]
    fn bad_trims_are_refused() {
        assert!(spec("{}").is_err());
        assert!(spec(r#"{"maxlen":1,"minid":"1-0"}"#).is_err());
        assert!(spec(r#"{"max_age":"soon"}"#).is_err());
        assert!(spec(r#"{"minid":"x"}"#).is_err());
        assert!(spec(r#"{"max_bytes":1,"approx":false}"#).is_err());
    }
}
