//! The `/api/ops/*` routes: registered by other crates, served by the HTTP
//! listener, authenticated here.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use busbar_engine::{Engine, EngineError, Principal, Scope};

use crate::Ops;

/// The caller of an ops route: authenticated with the `admin` scope (open
/// when no token is configured). A tenant-bound admin token keeps its
/// tenant, so an answer can be filtered by it
/// ([`Principal::can_access`]).
#[derive(Debug, Clone)]
pub struct OpsCaller {
    /// Who is calling.
    pub principal: Principal,
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    busbar_engine::bearer_token(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

/// An engine error as the API's JSON error body.
pub(crate) fn deny(e: &EngineError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::FORBIDDEN);
    let body = serde_json::json!({"error": e.reason(), "message": e.to_string()});
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"busbar\""),
        );
    }
    response
}

impl<S: Send + Sync> FromRequestParts<S> for OpsCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(engine) = parts.extensions.get::<Arc<Engine>>().cloned() else {
            let e = EngineError::Unauthenticated;
            return Err(deny(&e));
        };
        engine
            .auth()
            .authenticate(bearer(&parts.headers))
            .and_then(|p| p.require(Scope::Admin).map(|()| p))
            .map(|principal| OpsCaller { principal })
            .map_err(|e| deny(&e))
    }
}

pub(crate) fn router(ops: &Ops) -> Router {
    let mut router = Router::new();
    for (path, methods) in ops.routes.read().iter() {
        router = router.route(path, methods.clone());
    }
    router.layer(Extension(ops.engine.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use busbar_engine::{Auth, TokenSpec};
    use busbar_store::memory::MemoryStore;

    async fn call(router: &Router, token: Option<&str>) -> (StatusCode, serde_json::Value) {
        use tower::ServiceExt;
        let mut request = axum::http::Request::get("/api/ops/who");
        if let Some(t) = token {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        let response = router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn tokens() -> Vec<TokenSpec> {
        serde_json::from_value(serde_json::json!([
            {"name": "a", "secret": "admin-a", "scopes": ["admin"], "tenant": "a"},
            {"name": "r", "secret": "reader", "scopes": ["consume"]},
        ]))
        .unwrap()
    }

    #[tokio::test]
    async fn ops_routes_need_an_admin_token_and_keep_its_tenant() {
        let engine = Engine::builder(Arc::new(MemoryStore::new()))
            .auth(Auth::new(tokens()))
            .build();
        let ops = Ops::new(engine);
        ops.route(
            "/api/ops/who",
            get(|caller: OpsCaller| async move {
                Json(serde_json::json!({"tenant": caller.principal.tenant()}))
            }),
        );
        let router = ops.router();
        assert_eq!(call(&router, None).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            call(&router, Some("nope")).await.0,
            StatusCode::UNAUTHORIZED
        );
        let (status, body) = call(&router, Some("reader")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["error"], "forbidden");
        let (status, body) = call(&router, Some("admin-a")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["tenant"], "a");
        assert_eq!(ops.paths(), ["/api/ops/who"]);
    }
}
