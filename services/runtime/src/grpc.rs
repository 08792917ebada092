//! gRPC plumbing shared by the roles: the standard health service
//! (`grpc.health.v1.Health`, serving while the instance is ready, not
//! serving while it is not and after shutdown, so balancers stop sending) and request metrics by method and status code.

use std::sync::Arc;

use tonic::{Request, Status};

use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthReporter;

use crate::Shutdown;
use crate::metrics::{Metrics, RequestMetrics};

/// The health service: `""` (the whole process) and each of `services`
/// report SERVING while `readiness` is ready and until `shutdown`
/// triggers, NOT_SERVING otherwise.
pub fn health(
    services: &[&'static str],
    readiness: crate::health::Readiness,
    shutdown: Shutdown,
) -> HealthServer<impl tonic_health::pb::health_server::Health> {
    let (reporter, server) = tonic_health::server::health_reporter();
    let names: Vec<&'static str> = std::iter::once("")
        .chain(services.iter().copied())
        .collect();
    let mut ready = readiness.subscribe();
    tokio::spawn(async move {
        loop {
            let status = if *ready.borrow_and_update() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_all(&reporter, &names, status).await;
            tokio::select! {
                _ = shutdown.wait() => break,
                changed = ready.changed() => if changed.is_err() { break },
            }
        }
        set_all(&reporter, &names, ServingStatus::NotServing).await;
    });
    server
}

async fn set_all(r: &HealthReporter, names: &[&'static str], status: ServingStatus) {
    for n in names {
        r.set_service_status(*n, status).await;
    }
}

/// Whether a presented bearer token is valid.
pub type TokenCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// An interceptor accepting calls with `authorization: Bearer <token>`
/// metadata that `check` accepts; others fail UNAUTHENTICATED.
pub fn bearer(check: TokenCheck) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let presented = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match presented {
            Some(t) if !t.is_empty() && check(t) => Ok(req),
            _ => Err(Status::unauthenticated("missing or invalid API token")),
        }
    }
}

/// Middleware (as an axum layer on the gRPC routes): counts and times each
/// call by method and outcome. Failed calls answer "trailers only", so
/// their `grpc-status` is in the response headers; a call that fails in
/// mid-stream counts as ok.
pub async fn track(
    axum::extract::State(m): axum::extract::State<RequestMetrics>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = req.uri().path();
    // Known services only: a scanner's paths must not grow the label set.
    let method = if path.starts_with("/gatehouse.v1.") || path.starts_with("/grpc.health.v1.") {
        path.to_owned()
    } else {
        "unknown".to_owned()
    };
    let start = std::time::Instant::now();
    let resp = next.run(req).await;
    let outcome = match resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(tonic::Code::from_i32)
    {
        None | Some(tonic::Code::Ok) => "ok",
        Some(tonic::Code::Unauthenticated | tonic::Code::PermissionDenied) => "unauthorized",
        Some(tonic::Code::ResourceExhausted) => "busy",
        Some(
            tonic::Code::InvalidArgument
            | tonic::Code::NotFound
            | tonic::Code::FailedPrecondition
            | tonic::Code::AlreadyExists
            | tonic::Code::OutOfRange
            | tonic::Code::Unimplemented,
        ) => "rejected",
        Some(_) => "unavailable",
    };
    m.observe(&method, outcome, start.elapsed().as_secs_f64());
    resp
}

/// The health service's full name.
pub const HEALTH: &str = "grpc.health.v1.Health";

/// Mounts `routes` (with request metrics in `metrics`) on `app` under each of the gRPC
/// `services` they hold (full names, such as `gatehouse.v1.Admin` or
/// [`HEALTH`]); every other path stays `app`'s.
pub fn mount(
    app: axum::Router,
    routes: tonic::service::Routes,
    services: &[&str],
    metrics: &Metrics,
) -> axum::Router {
    let grpc = routes
        .into_axum_router()
        .layer(axum::middleware::from_fn_with_state(
            RequestMetrics::new(metrics, "grpc", "gRPC"),
            track,
        ));
    // axum refuses a Router as a route's service: hand it over as a plain
    // service (the path stays whole, so tonic's own routing still works).
    let svc = tower::service_fn(move |req: axum::extract::Request| {
        tower::ServiceExt::oneshot(grpc.clone(), req)
    });
    let mut app = app;
    for name in services {
        app = app.route_service(&format!("/{name}/{{*method}}"), svc.clone());
    }
    app
}
