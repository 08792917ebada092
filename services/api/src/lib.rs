//! api: the operator-facing service.
//!
//! [`service::AdminService`] is the one trait every operator surface is
//! built on (REST now; gRPC and the CLI reuse it). [`service::Admin`]
//! implements it over the store and the bus: host changes go to the host's
//! actor (the only writer of a host record), config changes are validated
//! against the 1 MiB agent limit for every label set in the fleet before
//! they are saved and broadcast, and campaigns are stored as per-host
//! deliveries that wait for offline hosts until they expire.

pub mod error;
pub mod rest;
pub mod service;

use std::sync::Arc;

use gatehouse_runtime::{ServeOptions, Shutdown};
use tokio::net::TcpListener;

pub use error::ApiError;
pub use service::{Admin, AdminService, ApiConfig};

/// Serves the REST API on `listener` until `shutdown`.
pub async fn run(
    service: Arc<dyn AdminService>,
    admin_tokens: Vec<String>,
    opts: ServeOptions,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let app = rest::router(service, admin_tokens, shutdown.clone());
    gatehouse_runtime::serve(listener, tls, app, opts, shutdown).await
}
