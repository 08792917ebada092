//! Prometheus metrics of one instance ([`Metrics`]): a registry that each
//! role adds its families to when it starts (a process has one; tests give
//! every instance its own), rendered in the OpenMetrics text format
//! at `/metrics` of the ops listener ([`ops_router`]), next to `/livez` and
//! `/readyz`. The names and what to alert on are in
//! `docs/operations/metrics.md`.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

use crate::health::Readiness;

/// One instance's metrics: a process serves one at `/metrics`; tests run
/// several instances in one process, each with its own, so their counts
/// are exact. Clones share the registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Mutex<Registry>,
    /// The handle registered under each name, so asking for a name again
    /// (two parts of a role, a role restarted) shares it.
    handles: Mutex<HashMap<String, Box<dyn Any + Send + Sync>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// An empty registry; names get the `gatehouse_` prefix.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                registry: Mutex::new(Registry::with_prefix("gatehouse")),
                handles: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The metric under `gatehouse_<name>`: the one already registered
    /// under that name (a handle: clones share the value), or `make()`'s,
    /// registered now.
    pub fn get_or_register<M>(&self, name: &str, help: &str, make: impl FnOnce() -> M) -> M
    where
        M: Metric + Clone + Send + Sync + 'static,
    {
        let Ok(mut handles) = self.inner.handles.lock() else {
            return make();
        };
        if let Some(m) = handles.get(name).and_then(|h| h.downcast_ref::<M>()) {
            return m.clone();
        }
        let m = make();
        if !handles.contains_key(name)
            && let Ok(mut r) = self.inner.registry.lock()
        {
            r.register(name, help, m.clone());
            handles.insert(name.to_owned(), Box::new(m.clone()));
        }
        m
    }

    /// A gauge under `gatehouse_<name>`.
    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        self.get_or_register(name, help, Gauge::default)
    }

    /// A counter under `gatehouse_<name>` (exposed as `<name>_total`).
    pub fn counter(&self, name: &str, help: &str) -> Counter {
        self.get_or_register(name, help, Counter::default)
    }

    /// The registry in the text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.inner.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        }
        out
    }
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
    pub seconds: Seconds,
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestMetrics")
    }
}

type Seconds = Family<EndpointLabel, Histogram, fn() -> Histogram>;

fn latency_buckets() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 16.0,
    ])
}

impl RequestMetrics {
    /// `<prefix>_requests` and `<prefix>_request_seconds` in `metrics`.
    pub fn new(metrics: &Metrics, prefix: &str, what: &str) -> Self {
        Self {
            total: metrics.get_or_register(
                &format!("{prefix}_requests"),
                &format!("{what} requests by endpoint and outcome"),
                Family::default,
            ),
            seconds: metrics.get_or_register(
                &format!("{prefix}_request_seconds"),
                &format!("{what} request latency by endpoint"),
                || Seconds::new_with_constructor(latency_buckets),
            ),
        }
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

/// `/livez` (the process runs), `/readyz` (it serves: [`Readiness`]),
/// `/metrics`.
pub fn ops_router(ready: Readiness, metrics: Metrics) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move { ready.response() }
            }),
        )
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.render(),
                )
            }),
        )
}
