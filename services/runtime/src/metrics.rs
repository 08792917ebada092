//! Prometheus metrics of one process: a single registry that each role adds
//! its families to when it starts, rendered in the OpenMetrics text format
//! at `/metrics` of the ops listener ([`ops_router`]), next to `/livez` and
//! `/readyz`. The names and what to alert on are in
//! `docs/operations/metrics.md`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Registry::with_prefix("gatehouse")))
}

/// Adds a metric (a handle: clones share the value) under `gatehouse_<name>`.
/// Registering one name twice (two roles in one process) keeps the first.
pub fn register<M: Metric + Clone>(name: &str, help: &str, metric: &M) {
    static NAMES: OnceLock<Mutex<std::collections::HashSet<String>>> = OnceLock::new();
    let names = NAMES.get_or_init(Default::default);
    let Ok(mut names) = names.lock() else { return };
    if !names.insert(name.to_owned()) {
        return;
    }
    if let Ok(mut r) = registry().lock() {
        r.register(name, help, metric.clone());
    }
}

/// The registry in the text exposition format.
pub fn render() -> String {
    let mut out = String::new();
    if let Ok(r) = registry().lock() {
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
    }
    out
}

/// Labels of a request counter or histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: String,
}

/// Request count by endpoint and outcome, and latency by endpoint.
#[derive(Clone)]
pub struct RequestMetrics {
    pub total: Family<RequestLabels, Counter>,
    pub seconds: Family<EndpointLabel, Histogram>,
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestMetrics")
    }
}

impl RequestMetrics {
    /// Registers `<prefix>_requests` and `<prefix>_request_seconds`.
    pub fn new(prefix: &str, what: &str) -> Self {
        let m = Self {
            total: Family::default(),
            seconds: Family::new_with_constructor(|| {
                Histogram::new([
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    16.0,
                ])
            }),
        };
        register(
            &format!("{prefix}_requests"),
            &format!("{what} requests by endpoint and outcome"),
            &m.total,
        );
        register(
            &format!("{prefix}_request_seconds"),
            &format!("{what} request latency by endpoint"),
            &m.seconds,
        );
        m
    }

    pub fn observe(&self, endpoint: &str, outcome: &str, seconds: f64) {
        self.total
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.seconds
            .get_or_create(&EndpointLabel {
                endpoint: endpoint.to_owned(),
            })
            .observe(seconds);
    }
}

/// Middleware: counts and times each request by its matched route (use as
/// a `route_layer`, where the route is known).
pub async fn track(
    axum::extract::State(m): axum::extract::State<RequestMetrics>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let endpoint = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let start = std::time::Instant::now();
    let resp = next.run(req).await;
    m.observe(
        &endpoint,
        outcome(resp.status()),
        start.elapsed().as_secs_f64(),
    );
    resp
}

/// Outcome label of an HTTP status.
pub fn outcome(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "ok",
        401 | 403 => "unauthorized",
        429 => "busy",
        400..=499 => "rejected",
        _ => "unavailable",
    }
}

/// A gauge under `gatehouse_<name>`.
pub fn gauge(name: &str, help: &str) -> Gauge {
    let g = Gauge::default();
    register(name, help, &g);
    g
}

/// A counter under `gatehouse_<name>` (exposed as `<name>_total`).
pub fn counter(name: &str, help: &str) -> Counter {
    let c = Counter::default();
    register(name, help, &c);
    c
}

/// `/livez` (the process runs), `/readyz` (it serves), `/metrics`.
pub fn ops_router(ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.load(Ordering::Relaxed) {
                        (StatusCode::OK, "ready").into_response()
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    render(),
                )
            }),
        )
}
