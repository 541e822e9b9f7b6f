//! The API's error type and the JSON shape every error response has.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use busbar_engine::EngineError;
use serde::Serialize;
use thiserror::Error;

/// Why an API request failed.
///
/// Every variant maps to a status and a stable, machine-readable reason
/// ([`ApiError::reason`]); the response body is
/// `{"error":"<reason>","message":"<human text>"}`, plus `"index"` when one
/// event of a batch was refused. Messages never quote event payloads or
/// tokens.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The engine refused or failed the request.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// One event of a batch was refused, so nothing was appended.
    #[error("event {index}: {source}")]
    InBatch {
        /// Zero-based position of the event in the request.
        index: usize,
        /// Why it was refused.
        source: EngineError,
    },
    /// An event names a stream other than the one in the path.
    #[error("event {index} names stream `{named}` but was posted to `{path}`")]
    StreamMismatch {
        /// Zero-based position of the event in the request.
        index: usize,
        /// The stream the event names.
        named: String,
        /// The stream in the request path.
        path: String,
    },
    /// The request body is larger than the configured limit.
    #[error("request body is over the limit of {limit} bytes")]
    BodyTooLarge {
        /// `max_body_bytes`.
        limit: usize,
    },
    /// The request body could not be read (the client went away).
    #[error("could not read the request body")]
    BodyRead,
    /// The request body did not arrive within `[http] body_timeout`.
    #[error("the request body did not arrive within {timeout_ms} ms")]
    BodyTimeout {
        /// The deadline.
        timeout_ms: u64,
    },
    /// The request carried no event.
    #[error("the request holds no event")]
    EmptyBatch,
    /// A query parameter or JSON body field is invalid.
    #[error("invalid `{name}`: {reason}")]
    InvalidParam {
        /// The parameter.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The request body is not the JSON the route expects.
    #[error("invalid request body: {reason}")]
    InvalidBody {
        /// What the JSON parser reported.
        reason: String,
    },
    /// No route matches the path.
    #[error("no such route")]
    NotFound,
    /// The route exists but not for this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// A blocking task (the readiness probe) could not finish.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl ApiError {
    /// The stable reason string sent as `"error"`.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::Engine(e) | ApiError::InBatch { source: e, .. } => e.reason(),
            ApiError::StreamMismatch { .. } => "stream_mismatch",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::BodyRead => "body_read_failed",
            ApiError::BodyTimeout { .. } => "body_timeout",
            ApiError::EmptyBatch => "empty_batch",
            ApiError::InvalidParam { .. } => "invalid_param",
            ApiError::InvalidBody { .. } => "invalid_body",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The HTTP status of the response.
    pub fn status(&self) -> StatusCode {
        let code = match self {
            ApiError::Engine(e) | ApiError::InBatch { source: e, .. } => e.http_status(),
            ApiError::StreamMismatch { .. }
            | ApiError::BodyRead
            | ApiError::EmptyBatch
            | ApiError::InvalidParam { .. }
            | ApiError::InvalidBody { .. } => 400,
            ApiError::BodyTooLarge { .. } => 413,
            ApiError::BodyTimeout { .. } => 408,
            ApiError::NotFound => 404,
            ApiError::MethodNotAllowed => 405,
            ApiError::Internal(_) => 500,
        };
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The position of the refused event in a batch, if one was refused.
    pub fn index(&self) -> Option<usize> {
        match self {
            ApiError::InBatch { index, .. } | ApiError::StreamMismatch { index, .. } => {
                Some(*index)
            }
            _ => None,
        }
    }

    /// The engine error behind this one, if any.
    pub fn engine_error(&self) -> Option<&EngineError> {
        match self {
            ApiError::Engine(e) | ApiError::InBatch { source: e, .. } => Some(e),
            _ => None,
        }
    }

    pub(crate) fn param(name: &'static str, reason: impl Into<String>) -> Self {
        ApiError::InvalidParam {
            name,
            reason: reason.into(),
        }
    }
}

impl From<busbar_event::EventError> for ApiError {
    fn from(e: busbar_event::EventError) -> Self {
        ApiError::Engine(EngineError::Event(e))
    }
}

/// The JSON body of every error response.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            error: self.reason(),
            message: self.to_string(),
            index: self.index(),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"busbar\""),
            );
        }
        if status == StatusCode::REQUEST_TIMEOUT {
            // What is left of the body would be taken for the next request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(after) = self.engine_error().and_then(EngineError::retry_after) {
            // Whole seconds, rounded up: a client never retries too early.
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
