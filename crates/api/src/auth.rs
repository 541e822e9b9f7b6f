//! Bearer-token authentication for `/api/*` routes.
//!
//! Handlers take a [`Caller`]; extracting it resolves the
//! `Authorization: Bearer <token>` header through the engine's token list.
//! With no token configured every caller is open; otherwise a missing or
//! unknown token is a 401, and scope or tenant checks inside the engine give
//! 403s.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use busbar_engine::{Principal, Transport};

use crate::{ApiError, AppState};

/// The authenticated principal of a request.
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub(crate) Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer);
        match state.engine.auth().authenticate(presented) {
            Ok(principal) => Ok(Caller(principal)),
            Err(e) => {
                state.engine.count_error(Transport::Http, &e);
                Err(e.into())
            }
        }
    }
}

/// The token of a `Bearer` authorization value (the scheme is
/// case-insensitive, as RFC 7235 says).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn parses_bearer_values() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer  "), None);
    }
}
