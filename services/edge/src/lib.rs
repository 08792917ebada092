//! edge: the agent-facing osquery TLS remote API.
//!
//! Terminates agent TLS, parses and bounds every request, verifies node
//! keys by their MAC alone (no storage lookup), and routes each request to
//! the host's actor over the bus. Log batches are acknowledged only after
//! the log sink has made them durable. Every failure is answered with a
//! JSON object carrying `error` (and `node_invalid` for bad keys), never an
//! empty body, because the agent ignores HTTP status codes. The edge keeps
//! no per-host state: a cache of immutable config blobs is all it holds.

mod admission;
mod body;
mod carve;
mod error;
mod handlers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::{get, post};
use bytes::Bytes;
use gatehouse_bus::HostClient;
use gatehouse_core::nodekey::NodeKeys;
use gatehouse_core::ports::{LogSink, Store};
use gatehouse_runtime::{Listener, ServeOptions, Shutdown};
use serde::{Deserialize, Serialize};

pub use error::EdgeError;

/// The request paths of the agent endpoints (the osquery `*_endpoint` flags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointPaths {
    pub enroll: String,
    pub config: String,
    pub logger: String,
    pub distributed_read: String,
    pub distributed_write: String,
    pub carve_begin: String,
    pub carve_block: String,
}

impl Default for EndpointPaths {
    fn default() -> Self {
        Self {
            enroll: "/api/v1/osquery/enroll".into(),
            config: "/api/v1/osquery/config".into(),
            logger: "/api/v1/osquery/log".into(),
            distributed_read: "/api/v1/osquery/distributed/read".into(),
            distributed_write: "/api/v1/osquery/distributed/write".into(),
            carve_begin: "/api/v1/osquery/carve/begin".into(),
            carve_block: "/api/v1/osquery/carve/block".into(),
        }
    }
}

impl EndpointPaths {
    pub fn all(&self) -> [(&'static str, &str); 7] {
        [
            ("enroll", &self.enroll),
            ("config", &self.config),
            ("logger", &self.logger),
            ("distributed_read", &self.distributed_read),
            ("distributed_write", &self.distributed_write),
            ("carve_begin", &self.carve_begin),
            ("carve_block", &self.carve_block),
        ]
    }

    /// Every path absolute, distinct, and not one of the health paths.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for (name, p) in self.all() {
            if !p.starts_with('/')
                || p.contains(char::is_whitespace)
                || p.contains('?')
                || p.contains('{')
            {
                return Err(format!(
                    "paths.{name} = {p:?} must be an absolute path without spaces, '?' or '{{'"
                ));
            }
            if p == "/livez" || p == "/readyz" {
                return Err(format!(
                    "paths.{name} = {p:?} collides with a health endpoint"
                ));
            }
            if !seen.insert(p) {
                return Err(format!("paths.{name} = {p:?} is used by another endpoint"));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub paths: EndpointPaths,
    /// Largest request body accepted, as sent (compressed or not).
    pub max_body_bytes: usize,
    /// Largest log body after gunzip (bounds gzip bombs).
    pub max_inflated_bytes: usize,
    /// Largest carve accepted; larger ones are refused at carve begin.
    pub max_carve_bytes: u64,
    /// Agent requests handled at once; past this a request (not a log
    /// POST) waits for a slot in turn, up to `slot_wait`, then gets
    /// `{"error": ...}`, so agents back off instead of timing out. Log
    /// POSTs waiting for room for their bodies (bodies unread) are
    /// counted apart, up to the same number, and a log POST gives its slot
    /// back once its body is read and checked, so a wave of them never
    /// takes the slots of enrollments, configs and distributed reads
    /// (`admission`).
    pub max_in_flight: usize,
    /// Bytes of log POST bodies read and not yet stored, at most: a log
    /// request waits for room (up to `log_admission_wait`) before its body
    /// is read, so a wave of large batches queues in the sockets instead
    /// of in memory, then gets a busy error body.
    pub max_log_bytes_in_flight: usize,
    pub log_admission_wait: std::time::Duration,
    /// How long a request waits for an in-flight slot before a busy
    /// answer (ADR 0053): no longer than the 1 s an agent sleeps before
    /// it retries a refused request.
    pub slot_wait: std::time::Duration,
    pub serve: ServeOptions,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            paths: EndpointPaths::default(),
            max_body_bytes: 32 * 1024 * 1024,
            max_inflated_bytes: 128 * 1024 * 1024,
            max_carve_bytes: 4 * 1024 * 1024 * 1024,
            max_in_flight: 4096,
            max_log_bytes_in_flight: 64 * 1024 * 1024,
            log_admission_wait: std::time::Duration::from_secs(8),
            slot_wait: std::time::Duration::from_secs(1),
            serve: ServeOptions {
                name: "edge",
                max_read_buffer: gatehouse_runtime::AGENT_MAX_READ_BUFFER,
                ..ServeOptions::default()
            },
        }
    }
}

/// What the edge talks to.
#[derive(Clone)]
pub struct EdgeDeps {
    pub keys: NodeKeys,
    pub hosts: HostClient,
    pub store: Arc<dyn Store>,
    pub sink: Arc<dyn LogSink>,
    /// Where "now" comes from (enroll-secret expiry, receive times).
    pub clock: Arc<dyn gatehouse_core::time::Clock>,
    pub metrics: gatehouse_runtime::metrics::Metrics,
    /// The instance's readiness, answered at `/readyz` on the agent port.
    pub readiness: gatehouse_runtime::health::Readiness,
}

const CONFIG_CACHE_ENTRIES: usize = 512;

/// Failed agent requests of one kind are logged at most this often.
const FAILURE_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) struct Edge {
    cfg: EdgeConfig,
    deps: EdgeDeps,
    config_blobs: Mutex<HashMap<String, Bytes>>,
    shutdown: Shutdown,
    /// In-flight and waiting slots and the log-body budget.
    pub(crate) admission: admission::Admission,
    /// Failed agent requests are logged once per kind and interval.
    pub(crate) log_throttle: gatehouse_runtime::throttle::LogThrottle,
}

impl Edge {
    /// An immutable config blob by hash, cached.
    async fn config_blob(&self, hash: &str) -> Result<Bytes, EdgeError> {
        if let Some(b) = self
            .config_blobs
            .lock()
            .ok()
            .and_then(|m| m.get(hash).cloned())
        {
            return Ok(b);
        }
        let blob = self
            .deps
            .store
            .get_config_blob(hash)
            .await
            .map_err(|e| EdgeError::Unavailable(format!("config store: {e}")))?
            .ok_or_else(|| EdgeError::Unavailable("config blob not found, retry".into()))?;
        if let Ok(mut m) = self.config_blobs.lock() {
            if m.len() >= CONFIG_CACHE_ENTRIES {
                m.clear();
            }
            m.insert(hash.to_owned(), blob.clone());
        }
        Ok(blob)
    }
}

/// The edge's HTTP routes (exposed for tests that serve it themselves).
pub fn router(cfg: EdgeConfig, deps: EdgeDeps, shutdown: Shutdown) -> Router {
    let p = cfg.paths.clone();
    // `gatehouse_edge_requests_total{endpoint,outcome}` and
    // `gatehouse_edge_request_seconds{endpoint}`.
    let requests = gatehouse_runtime::metrics::RequestMetrics::new(&deps.metrics, "edge", "Agent");
    let edge = Arc::new(Edge {
        // `gatehouse_edge_requests_in_flight`: agent requests admitted
        // and not yet answered (refusals start at `max_in_flight`).
        admission: admission::Admission::new(
            cfg.max_in_flight,
            cfg.max_log_bytes_in_flight,
            cfg.slot_wait,
            cfg.log_admission_wait,
            deps.metrics.gauge(
                "edge_requests_in_flight",
                "Agent requests admitted and not yet answered",
            ),
        ),
        cfg,
        deps,
        config_blobs: Mutex::new(HashMap::new()),
        shutdown,
        log_throttle: gatehouse_runtime::throttle::LogThrottle::new(FAILURE_LOG_INTERVAL),
    });
    Router::new()
        .route(
            &p.enroll,
            post(handlers::enroll).fallback(handlers::method_not_allowed),
        )
        .route(
            &p.config,
            post(handlers::config).fallback(handlers::method_not_allowed),
        )
        .route(
            &p.distributed_read,
            post(handlers::distributed_read).fallback(handlers::method_not_allowed),
        )
        .route(
            &p.distributed_write,
            post(handlers::distributed_write).fallback(handlers::method_not_allowed),
        )
        .route(
            &p.carve_begin,
            post(carve::begin).fallback(handlers::method_not_allowed),
        )
        .route(
            &p.carve_block,
            post(carve::block).fallback(handlers::method_not_allowed),
        )
        // Admission covers the agent endpoints only, not health checks;
        // log POSTs admit themselves in two steps (`Edge::admit_log`).
        .route_layer(axum::middleware::from_fn_with_state(edge.clone(), admit))
        .route(
            &p.logger,
            post(handlers::log).fallback(handlers::method_not_allowed),
        )
        // Outermost: counts admission refusals too.
        .route_layer(axum::middleware::from_fn_with_state(
            requests,
            gatehouse_runtime::metrics::track,
        ))
        .route("/livez", get(handlers::livez))
        .route("/readyz", get(handlers::readyz))
        .fallback(handlers::not_found)
        .with_state(edge)
}

/// Past `max_in_flight`, waits for a slot up to `slot_wait` (at most a
/// second), then fails: an error body costs the server almost nothing and
/// makes the agent keep its data and back off, where a longer queue would
/// run into the agent's 16 s timeout, a reconnect and a re-send
/// (docs/benchmarks/README.md, ADR 0053).
async fn admit(
    axum::extract::State(edge): axum::extract::State<Arc<Edge>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match edge.admission.request().await {
        Ok(admitted) => {
            let resp = next.run(req).await;
            drop(admitted);
            resp
        }
        Err(_) => {
            tracing::debug!(path = %req.uri().path(), "agent request refused: too many in flight");
            axum::response::IntoResponse::into_response(EdgeError::Backpressure)
        }
    }
}

/// Serves the agent API on `listener` until `shutdown`.
pub async fn run(
    cfg: EdgeConfig,
    deps: EdgeDeps,
    listener: Listener,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let opts = cfg.serve.clone();
    let app = router(cfg, deps, shutdown.clone());
    // Agents speak HTTP/1.1 only, over connections they keep idle between
    // polls: served without per-connection buffers (ADR 0044).
    gatehouse_runtime::serve_http1(listener.tcp, listener.tls, app, opts, shutdown).await
}
