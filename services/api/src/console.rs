//! The web console's assets, embedded in the binary and served by the api
//! role at `/` (the REST API stays under `/api/v1`): plain HTML, CSS and
//! JavaScript in `services/api/console/`, no build step and no third-party
//! code (`osquery-schema.json` is data: osquery's table and column names
//! and types, for SQL completion). The console is a client of the public API only. Served with a
//! strict content security policy (scripts, styles and connections to
//! this origin only; no framing).

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, header};

const INDEX: &str = include_str!("../console/index.html");
const APP_JS: &str = include_str!("../console/app.js");
const APP_CSS: &str = include_str!("../console/app.css");
/// osquery's tables and columns (names and types) for SQL completion,
/// extracted from osquery's table specs by `scripts/osquery-schema.py`.
const OSQUERY_SCHEMA: &str = include_str!("../console/osquery-schema.json");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str, cache: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// `/`, `/console/app.js`, `/console/app.css`,
/// `/console/osquery-schema.json` (no session needed: the
/// page asks the API, which signs the person in).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX, "text/html; charset=utf-8", "no-store") }),
        )
        .route(
            "/console/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8", "no-cache") }),
        )
        .route(
            "/console/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8", "no-cache") }),
        )
        .route(
            "/console/osquery-schema.json",
            get(|| async { asset(OSQUERY_SCHEMA, "application/json", "no-cache") }),
        )
}
