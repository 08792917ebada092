//! api: the operator-facing service.
//!
//! [`service::AdminService`] is the one trait every operator surface is
//! built on: REST ([`rest`]) and gRPC ([`grpc`], `gatehouse.v1.Admin`) on
//! one listener, with the same errors and the same tokens. [`service::Admin`]
//! implements it over the store and the bus: host changes go to the host's
//! actor (the only writer of a host record), config changes are validated
//! against the 1 MiB agent limit for every label set in the fleet before
//! they are saved and broadcast, and campaigns are stored as per-host
//! deliveries that wait for offline hosts until they expire.

pub mod error;
pub mod grpc;
mod grpc_rules;
pub mod openapi;
pub mod rest;
pub mod service;

use std::sync::Arc;

use gatehouse_runtime::{ServeOptions, Shutdown};
use tokio::net::TcpListener;

pub use error::ApiError;
pub use service::{Admin, AdminService, ApiConfig};

/// The full name of the gRPC admin service.
pub const GRPC_SERVICE: &str = "gatehouse.v1.Admin";

/// Serves the REST API and the gRPC admin service (with health) on
/// `listener` until `shutdown`.
pub async fn run(
    service: Arc<dyn AdminService>,
    opts: ServeOptions,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let rest = rest::router(service.clone(), shutdown.clone());
    let routes = grpc::routes(service).add_service(gatehouse_runtime::grpc::health(
        &[GRPC_SERVICE],
        shutdown.clone(),
    ));
    let app = gatehouse_runtime::grpc::mount(
        rest,
        routes,
        &[GRPC_SERVICE, gatehouse_runtime::grpc::HEALTH],
    );
    let opts = ServeOptions {
        http2: true,
        ..opts
    };
    let tls = tls.map(|t| gatehouse_runtime::tls::with_h2(&t));
    gatehouse_runtime::serve(listener, tls, app, opts, shutdown).await
}
