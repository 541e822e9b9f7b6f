//! The `/api/ops/*` routes: registered by other crates, served by the HTTP
//! listener, authenticated here.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use busbar_engine::{Engine, EngineError, Principal, Scope};

use crate::events::EventsQuery;
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

/// An engine error as the API's JSON error body, with its status.
pub fn deny(e: &EngineError) -> Response {
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

/// A query string axum could not read, as the API's JSON error body (400
/// `invalid_param`).
pub fn bad_query(rejection: &QueryRejection) -> Response {
    let body = serde_json::json!({"error": "invalid_param", "message": rejection.body_text()});
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// The routes every daemon has: `GET /api/ops/events`,
/// `GET /api/ops/summary`.
pub(crate) fn register_builtins(ops: &Arc<Ops>) {
    register_traces(ops);
    let weak = Arc::downgrade(ops);
    ops.route_with(
        &["POST"],
        "/api/ops/support-pack",
        axum::routing::post(move |caller: OpsCaller, body: axum::body::Bytes| {
            let ops = weak.upgrade();
            async move {
                let Some(ops) = ops else {
                    return deny(&EngineError::Store(busbar_store::StoreError::Closed));
                };
                if !ops.diagnostics.load(std::sync::atomic::Ordering::Relaxed) {
                    return diagnostics_off();
                }
                let request: crate::pack::PackRequest = match json_body(&body) {
                    Ok(r) => r,
                    Err(response) => return *response,
                };
                match crate::pack::build(&ops, &caller.principal, &request).await {
                    Ok((name, bytes)) => (
                        [
                            (header::CONTENT_TYPE, "application/gzip".to_owned()),
                            (
                                header::CONTENT_DISPOSITION,
                                format!("attachment; filename=\"{name}\""),
                            ),
                        ],
                        bytes,
                    )
                        .into_response(),
                    Err(e) => {
                        let status =
                            StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
                        let body = serde_json::json!({"error": e.reason, "message": e.message});
                        (status, Json(body)).into_response()
                    }
                }
            }
        }),
    );
    let weak = Arc::downgrade(ops);
    ops.route(
        "/api/ops/summary",
        get(move |caller: OpsCaller| {
            let ops = weak.upgrade();
            async move {
                match ops {
                    Some(ops) => Json(ops.summary(&caller.principal).await).into_response(),
                    None => deny(&EngineError::Store(busbar_store::StoreError::Closed)),
                }
            }
        }),
    );
    ops.route(
        "/api/ops/events",
        get(
            |caller: OpsCaller,
             Extension(engine): Extension<Arc<Engine>>,
             query: Result<Query<EventsQuery>, QueryRejection>| async move {
                let Query(query) = match query {
                    Ok(q) => q,
                    Err(rejection) => return bad_query(&rejection),
                };
                match crate::events::recent(&engine, &caller.principal, &query).await {
                    Ok(events) => Json(serde_json::json!({"events": events})).into_response(),
                    Err(e) => deny(&e),
                }
            },
        ),
    );
}

pub(crate) fn router(ops: &Ops) -> Router {
    let mut router = Router::new();
    for (path, _, methods) in ops.routes.read().iter() {
        router = router.route(path, methods.clone());
    }
    router.layer(Extension(ops.engine.clone()))
}

/// A JSON request body, with or without a `Content-Type` (the runbooks'
/// `curl -d` sends none); an empty body is `{}`.
///
/// # Errors
/// A 400 `invalid_param` answer naming what is wrong.
pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        body
    };
    if let Err(e) = busbar_event::check_json(body, 16) {
        let body = serde_json::json!({"error": "invalid_param", "message": e.to_string()});
        return Err(Box::new(
            (StatusCode::BAD_REQUEST, Json(body)).into_response(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        let body = serde_json::json!({"error": "invalid_param", "message": format!("invalid request body: {e}")});
        Box::new((StatusCode::BAD_REQUEST, Json(body)).into_response())
    })
}

fn trace_error(e: &crate::trace::TraceError) -> Response {
    let (status, reason, message) = e.parts();
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        Json(serde_json::json!({"error": reason, "message": message})),
    )
        .into_response()
}

/// The answer of a diagnostics route while `[ops] diagnostics` is off.
fn diagnostics_off() -> Response {
    let body = serde_json::json!({
        "error": "diagnostics_off",
        "message": "traces and support packs are off ([ops] diagnostics = false)",
    });
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// `POST /api/ops/trace/start`, `GET /api/ops/trace/{id}`,
/// `GET /api/ops/trace`.
fn register_traces(ops: &Arc<Ops>) {
    let on = ops.diagnostics.clone();
    let traces = ops.traces().clone();
    ops.route_with(
        &["POST"],
        "/api/ops/trace/start",
        axum::routing::post(
            move |caller: OpsCaller,
                  Extension(engine): Extension<Arc<Engine>>,
                  body: axum::body::Bytes| {
                let traces = traces.clone();
                let on = on.load(std::sync::atomic::Ordering::Relaxed);
                async move {
                    if !on {
                        return diagnostics_off();
                    }
                    let request: crate::trace::TraceRequest = match json_body(&body) {
                        Ok(r) => r,
                        Err(response) => return *response,
                    };
                    match traces.start(&engine, &caller.principal, &request) {
                        Ok(answer) => (StatusCode::CREATED, Json(answer)).into_response(),
                        Err(e) => trace_error(&e),
                    }
                }
            },
        ),
    );
    let on = ops.diagnostics.clone();
    let traces = ops.traces().clone();
    ops.route(
        "/api/ops/trace/{id}",
        get(
            move |caller: OpsCaller,
                  Extension(engine): Extension<Arc<Engine>>,
                  Path(id): Path<String>| {
                let traces = traces.clone();
                let on = on.load(std::sync::atomic::Ordering::Relaxed);
                async move {
                    if !on {
                        return diagnostics_off();
                    }
                    match traces.show(&engine, &caller.principal, &id).await {
                        Ok(trace) => Json(trace).into_response(),
                        Err(e) => trace_error(&e),
                    }
                }
            },
        ),
    );
    let on = ops.diagnostics.clone();
    let traces = ops.traces().clone();
    ops.route(
        "/api/ops/trace",
        get(move |caller: OpsCaller| {
            let traces = traces.clone();
            let on = on.load(std::sync::atomic::Ordering::Relaxed);
            async move {
                if !on {
                    return diagnostics_off();
                }
                Json(serde_json::json!({"traces": traces.list(&caller.principal)})).into_response()
            }
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
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
        assert!(ops.paths().contains(&"/api/ops/who"));
    }
}
