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
use busbar_engine::{bearer_token, Principal, Transport};

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
            .and_then(bearer_token);
        match state.engine.auth().authenticate(presented) {
            Ok(principal) => Ok(Caller(principal)),
            Err(e) => {
                state.engine.count_error(Transport::Http, &e);
                Err(e.into())
            }
        }
    }
}
