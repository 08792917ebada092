//! Process plumbing every Gatehouse role shares: the one rustls crypto
//! provider, TLS server configs from PEM files, an HTTP/1.1 (and HTTP/2 for
//! gRPC) serve loop over TLS with keep-alive idle timeouts and graceful
//! shutdown, the agent port's own HTTP/1.1 server (no buffers held by idle
//! connections), shutdown signals, the process's Prometheus metrics with the ops
//! endpoints, and gRPC health and metrics.
//! Roles depend on this crate, never on each other.

pub mod grpc;
pub mod health;
pub mod http1;
pub mod metrics;
pub mod serve;
pub mod shutdown;
pub mod throttle;
pub mod tls;

pub use http1::serve_http1;
pub use serve::{
    AGENT_MAX_READ_BUFFER, HYPER_MAX_READ_BUFFER, LISTEN_BACKLOG, Listener, RemoteAddr,
    ServeOptions, bind, serve,
};
pub use shutdown::Shutdown;
