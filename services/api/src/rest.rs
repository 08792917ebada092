//! REST over the operation registry: every route is an
//! [`Operation`](crate::registry::Operation) served by one generic handler.
//! Bearer-token auth; input decoded strictly (path parameters plus the
//! query string for GET and DELETE, plus the JSON body for the others;
//! unknown fields refused); errors as `{"error": "..."}` with a 4xx/5xx
//! status, query-string and path errors included.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{Extension, RawPathParams, RawQuery, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, get};
use bytes::Bytes;
use gatehouse_runtime::Shutdown;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};

use crate::ApiError;
use crate::admin::{Admin, Caller};
use crate::registry::{Input, Operation, Reply, Verb};

/// Resolves the caller for the handlers: a bearer token (scripts, `ctl`),
/// else a console session cookie, whose state changes must carry its CSRF
/// token (see [`crate::session`]).
async fn authenticate(State(admin): State<Arc<Admin>>, mut req: Request, next: Next) -> Response {
    use crate::session::{CSRF_HEADER, SESSION_COOKIE, cookie};
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    let caller = if !presented.is_empty() {
        admin.authenticate(presented).await
    } else if let Some(secret) = cookie(req.headers(), SESSION_COOKIE) {
        let safe = matches!(
            *req.method(),
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        );
        let csrf = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        admin.session_caller(secret, csrf, safe).await
    } else {
        Err(ApiError::Unauthorized)
    };
    match caller {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e @ (ApiError::Unavailable(_) | ApiError::Forbidden(_))) => e.into_response(),
        Err(_) => {
            tracing::info!(path = %req.uri().path(), "api request without a valid token or session");
            let mut r = ApiError::Unauthorized.into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

fn filter(v: Verb) -> MethodFilter {
    match v {
        Verb::Get => MethodFilter::GET,
        Verb::Post => MethodFilter::POST,
        Verb::Put => MethodFilter::PUT,
        Verb::Patch => MethodFilter::PATCH,
        Verb::Delete => MethodFilter::DELETE,
    }
}

/// The route of `O` (see [`crate::registry::Entry`]).
pub(crate) fn route<O: Operation>() -> MethodRouter<Arc<Admin>> {
    axum::routing::on(filter(O::SPEC.verb), call::<O>)
}

/// Decodes `O`'s request, invokes it for the caller, answers.
async fn call<O: Operation>(
    State(admin): State<Arc<Admin>>,
    Extension(caller): Extension<Caller>,
    path: Result<RawPathParams, RawPathParamsRejection>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let spec = O::SPEC;
    let path = match path {
        Ok(p) => p
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        Err(e) => {
            return ApiError::BadRequest(format!("invalid path: {}", e.body_text()))
                .into_response();
        }
    };
    let req = match decode::<O::Req>(spec.verb, path, query.as_deref(), &body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let status = if spec.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    match admin.invoke::<O>(&caller, req).await {
        Ok(r) => r.into_rest(status),
        Err(e) => e.into_response(),
    }
}

/// A request from its path parameters and, for GET and DELETE, the query
/// string, for the others the JSON body (an empty body is `{}`).
fn decode<T: Input>(
    verb: Verb,
    path: Vec<(String, String)>,
    query: Option<&str>,
    body: &Bytes,
) -> Result<T, ApiError> {
    let query = query.unwrap_or("");
    if !verb.has_body() {
        let mut pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|e| ApiError::BadRequest(format!("invalid query string: {e}")))?;
        for (k, _) in &pairs {
            if path.iter().any(|(p, _)| p == k) {
                return Err(ApiError::BadRequest(format!(
                    "invalid query string: `{k}` is given in the path"
                )));
            }
        }
        pairs.extend(path);
        let encoded = serde_urlencoded::to_string(&pairs)
            .map_err(|e| ApiError::BadRequest(format!("invalid query string: {e}")))?;
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(encoded.as_bytes()));
        return serde_path_to_error::deserialize(de)
            .map_err(|e| ApiError::BadRequest(format!("invalid query string: {}", named(&e))));
    }
    if !query.is_empty() {
        return Err(ApiError::BadRequest(
            "invalid query string: this operation takes its input in the body".into(),
        ));
    }
    let mut object = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                return Err(ApiError::BadRequest(
                    "invalid request body: expected a JSON object".into(),
                ));
            }
            Err(e) => return Err(ApiError::BadRequest(format!("invalid request body: {e}"))),
        }
    };
    for (k, v) in path {
        if object.contains_key(&k) {
            return Err(ApiError::BadRequest(format!(
                "invalid request body: unknown field `{k}` (it is given in the path)"
            )));
        }
        object.insert(k, Value::String(v));
    }
    serde_path_to_error::deserialize(Value::Object(object))
        .map_err(|e| ApiError::BadRequest(format!("invalid request body: {}", named(&e))))
}

/// A decoding error with the field it is about (`interval: invalid type:
/// string "often", expected u32`); unknown and missing fields name
/// themselves.
fn named<E: std::fmt::Display>(e: &serde_path_to_error::Error<E>) -> String {
    let path = e.path().to_string();
    if path.is_empty() || path == "." {
        e.inner().to_string()
    } else {
        format!("{path}: {}", e.inner())
    }
}

/// The OpenAPI document of the REST API (also served at
/// `/api/v1/openapi.json`).
pub fn openapi() -> Value {
    crate::openapi::document(&crate::registry::operations())
}

/// The API routes; `/livez`, `/readyz` and `/api/v1/openapi.json` need no
/// token.
pub fn router(admin: Arc<Admin>, shutdown: Shutdown) -> Router {
    let doc = Arc::new(openapi());
    let readiness = admin.readiness.clone();
    let mut by_path: Vec<(&'static str, MethodRouter<Arc<Admin>>)> = Vec::new();
    for op in crate::registry::operations() {
        let handler = (op.rest)();
        match by_path.iter_mut().find(|(p, _)| *p == op.spec.path) {
            Some((_, existing)) => {
                let merged = std::mem::take(existing).merge(handler);
                *existing = merged;
            }
            None => by_path.push((op.spec.path, handler)),
        }
    }
    let mut api = Router::new();
    for (path, handler) in by_path {
        api = api.route(path, handler);
    }
    let metrics =
        gatehouse_runtime::metrics::RequestMetrics::new(&admin.metrics, "api", "Operator API");
    let api = api
        .route_layer(middleware::from_fn_with_state(admin.clone(), authenticate))
        .with_state(admin.clone());
    // Signing in and out, and accepting an invitation: no caller yet.
    let sessions = Router::new()
        .route(
            "/api/v1/session",
            axum::routing::post(crate::session::sign_in_route)
                .delete(crate::session::sign_out_route),
        )
        .route(
            "/api/v1/session/invite",
            axum::routing::post(crate::session::invite_route),
        )
        .with_state(admin);
    let ready = move || {
        let (s, readiness) = (shutdown.clone(), readiness.clone());
        async move {
            if s.is_triggered() {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(json!({"status": "draining"})),
                )
                    .into_response()
            } else {
                readiness.response()
            }
        }
    };
    let api = api.route_layer(axum::middleware::from_fn_with_state(
        metrics,
        gatehouse_runtime::metrics::track,
    ));
    Router::new()
        .route(
            "/livez",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/readyz", get(ready))
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { axum::Json((*doc).clone()) }
            }),
        )
        .merge(api)
        .merge(sessions)
        .merge(crate::console::routes())
        .fallback(|req: Request| async move {
            ApiError::NotFound(format!("route {} {}", req.method(), req.uri().path()))
                .into_response()
        })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                axum::Json(json!({"error": "method not allowed on this route"})),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::definitions::QueryDef;
    use crate::ops::hosts::{HostFilter, HostLogs};

    fn path(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn error<T: std::fmt::Debug>(r: Result<T, ApiError>) -> String {
        match r {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("expected a bad request, got {other:?}"),
        }
    }

    #[test]
    fn query_strings_are_typed_and_strict() {
        let f: HostFilter = decode(
            Verb::Get,
            vec![],
            Some("online=true&limit=5&search=web%2001"),
            &Bytes::new(),
        )
        .unwrap();
        assert_eq!(f.online, Some(true));
        assert_eq!(f.limit, Some(5));
        assert_eq!(f.search.as_deref(), Some("web 01"));
        let m = error(decode::<HostFilter>(
            Verb::Get,
            vec![],
            Some("limit=abc"),
            &Bytes::new(),
        ));
        assert!(m.starts_with("invalid query string: limit: "), "{m}");
        let m = error(decode::<HostFilter>(
            Verb::Get,
            vec![],
            Some("lable=x"),
            &Bytes::new(),
        ));
        assert!(m.contains("lable"), "{m}");
    }

    #[test]
    fn path_parameters_join_the_query_and_cannot_be_overridden() {
        let l: HostLogs = decode(
            Verb::Get,
            path(&[("id", "abc")]),
            Some("since=10"),
            &Bytes::new(),
        )
        .unwrap();
        assert_eq!((l.id.as_str(), l.since), ("abc", Some(10)));
        let m = error(decode::<HostLogs>(
            Verb::Get,
            path(&[("id", "abc")]),
            Some("id=other"),
            &Bytes::new(),
        ));
        assert!(m.contains("`id`"), "{m}");
    }

    #[test]
    fn bodies_are_strict_objects_and_path_fields_stay_in_the_path() {
        let q: QueryDef = decode(
            Verb::Put,
            path(&[("name", "q1")]),
            None,
            &Bytes::from_static(br#"{"sql": "SELECT 1"}"#),
        )
        .unwrap();
        assert_eq!((q.name.as_str(), q.sql.as_str()), ("q1", "SELECT 1"));
        for (body, needle) in [
            (&br#"{"sql": "SELECT 1", "sqll": 1}"#[..], "sqll"),
            (br#"{"sql": "SELECT 1", "name": "q2"}"#, "path"),
            (br#"["SELECT 1"]"#, "JSON object"),
            (br#"{"sql": "#, "invalid request body"),
            (br#"{"sql": 5}"#, "invalid request body: sql: invalid type"),
        ] {
            let m = error(decode::<QueryDef>(
                Verb::Put,
                path(&[("name", "q1")]),
                None,
                &Bytes::from_static(body),
            ));
            assert!(m.contains(needle), "{m}");
        }
        let m = error(decode::<QueryDef>(
            Verb::Put,
            path(&[("name", "q1")]),
            Some("sql=x"),
            &Bytes::from_static(br#"{"sql": "SELECT 1"}"#),
        ));
        assert!(m.starts_with("invalid query string"), "{m}");
    }
}
