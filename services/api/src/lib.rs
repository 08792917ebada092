//! api: the operator-facing service.
//!
//! Every operator operation is declared once in the registry
//! ([`registry`]; the operations themselves in [`ops`], one module per
//! resource): REST ([`rest`]), gRPC ([`grpc`], `gatehouse.v1.Admin`, on the
//! same listener), the OpenAPI document ([`openapi`]), role checks and the
//! audit log are derived from that declaration. [`Admin`] holds the store,
//! the bus and the host-RPC client the operations use: host changes go to the host's
//! actor (the only writer of a host record), config changes are validated
//! against the 1 MiB agent limit for every label set in the fleet before
//! they are saved and broadcast, and campaigns are stored as per-host
//! deliveries that wait for offline hosts until they expire.

pub mod admin;
pub mod audit_forward;
pub mod console;
pub mod error;
pub mod grpc;
pub mod openapi;
pub mod ops;
pub mod registry;
pub mod rest;
pub mod session;

use std::sync::Arc;

use gatehouse_runtime::{Listener, ServeOptions, Shutdown};

pub use admin::{Admin, ApiConfig, ApiDeps, Caller};
pub use error::ApiError;

/// The full name of the gRPC admin service.
pub const GRPC_SERVICE: &str = "gatehouse.v1.Admin";

/// Serves the REST API and the gRPC admin service (with health) on
/// `listener` until `shutdown`.
pub async fn run(
    cfg: ApiConfig,
    deps: ApiDeps,
    listener: Listener,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let opts = ServeOptions {
        http2: true,
        ..cfg.serve.clone()
    };
    let metrics = deps.metrics.clone();
    let admin = Arc::new(Admin::new(cfg, deps));
    tokio::spawn(ops::fleet::keep_fresh(admin.clone(), shutdown.clone()));
    // A mark, and what a stopped process left forwarded, before the first
    // call (bounded: a forward log that does not answer is retried later).
    if tokio::time::timeout(
        std::time::Duration::from_secs(5),
        audit_forward::renew(&admin, true),
    )
    .await
    .is_err()
    {
        tracing::warn!(
            "the forward log did not answer within 5 s; audit forwarding marks are retried every 2 s"
        );
    }
    tokio::spawn(audit_forward::keep(admin.clone(), shutdown.clone()));
    let rest = rest::router(admin.clone(), shutdown.clone());
    let routes = grpc::routes(admin.clone()).add_service(gatehouse_runtime::grpc::health(
        &[GRPC_SERVICE],
        admin.readiness.clone(),
        shutdown.clone(),
    ));
    let app = gatehouse_runtime::grpc::mount(
        rest,
        routes,
        &[GRPC_SERVICE, gatehouse_runtime::grpc::HEALTH],
        &metrics,
    );
    let tls = listener.tls.map(|t| gatehouse_runtime::tls::with_h2(&t));
    gatehouse_runtime::serve(listener.tcp, tls, app, opts, shutdown).await
}
