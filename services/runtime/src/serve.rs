//! The HTTP serve loop shared by the agent edge, the operator API and the
//! ops port. HTTP/1.1 always; HTTP/2 too when `http2` is set (gRPC: by
//! ALPN over TLS, by prior knowledge in plain text).
//!
//! Each accepted connection does its TLS handshake (bounded), then serves
//! requests with keep-alive. An idle keep-alive connection is closed after
//! `idle_timeout` (hyper starts its header-read timer when a connection
//! goes idle); keep it above the agents' longest polling interval, or every
//! poll pays a new handshake. On shutdown the listener stops accepting,
//! in-flight requests finish, and idle connections close, all within
//! `grace`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::Shutdown;

/// The peer address, available to handlers as a request extension.
#[derive(Clone, Copy, Debug)]
pub struct RemoteAddr(pub SocketAddr);

/// A role's bound listener and the TLS it serves with (`None`: plain
/// HTTP, for tests and a TLS-terminating proxy in front).
#[derive(Debug)]
pub struct Listener {
    pub tcp: TcpListener,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub idle_timeout: Duration,
    pub handshake_timeout: Duration,
    pub grace: Duration,
    /// Name used in logs (`edge`, `api`).
    pub name: &'static str,
    /// Serve HTTP/2 beside HTTP/1.1 (gRPC). Agents speak HTTP/1.1 only.
    pub http2: bool,
    /// Under [`serve`] (hyper): the largest HTTP/1 read buffer of one
    /// connection, in bytes (at least 8 KiB; request heads must fit). A
    /// connection's buffer keeps the size it grew to while the connection
    /// lives; hyper's default lets it grow to about 400 KiB on large
    /// bodies. Under [`crate::serve_http1`] (the agent port, ADR 0044):
    /// the largest request head, held only while it is read.
    pub max_read_buffer: usize,
}

/// hyper's own cap on a connection's read buffer (8 KiB + 100 × 4 KiB).
pub const HYPER_MAX_READ_BUFFER: usize = 8192 + 4096 * 100;

/// The agent edge's cap on a request head (ADR 0044; far above any
/// agent's).
pub const AGENT_MAX_READ_BUFFER: usize = 16 * 1024;

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(120),
            handshake_timeout: Duration::from_secs(10),
            grace: Duration::from_secs(20),
            name: "http",
            http2: false,
            max_read_buffer: HYPER_MAX_READ_BUFFER,
        }
    }
}

/// Connections the kernel queues for a listener before the server
/// accepts them (clamped by `net.core.somaxconn`, 4096 by default since
/// Linux 5.4). The standard library and tokio ask for 128: agents back
/// from an outage open thousands of connections within a second or two,
/// and past the queue the kernel drops their handshakes, so each retries
/// its SYN after 1 s, 3 s, 7 s, inside the agent's 16 s for the whole
/// request (ADR 0051).
pub const LISTEN_BACKLOG: u32 = 4096;

/// A TCP listener on `addr` (address reuse on, as `TcpListener::bind`)
/// with a [`LISTEN_BACKLOG`]-deep accept queue.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The next connection on `listener`, with Nagle's algorithm off; `None`
/// once `shutdown` triggers. A failed accept (out of file descriptors and
/// the like) is logged and retried after a pause: the server keeps
/// serving.
pub(crate) async fn next_connection(
    listener: &TcpListener,
    shutdown: &Shutdown,
    name: &str,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            _ = shutdown.wait() => return None,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((stream, peer));
                }
                Err(e) => {
                    tracing::warn!(server = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Serves `router` on `listener` (over TLS when `tls` is set) until
/// `shutdown` triggers, then drains within the grace period.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: axum::Router,
    opts: ServeOptions,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let name = opts.name;
    tracing::info!(server = name, addr = %listener.local_addr()?, tls = acceptor.is_some(), "listening");
    while let Some((stream, peer)) = next_connection(&listener, &shutdown, name).await {
        let router = router.clone();
        let svc =
            hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(RemoteAddr(peer));
                router.clone().oneshot(req.map(axum::body::Body::new))
            });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(opts.idle_timeout)
            .max_buf_size(opts.max_read_buffer.max(8192))
            .keep_alive(true);
        let builder = if opts.http2 {
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(Duration::from_secs(30)))
                .keep_alive_timeout(Duration::from_secs(20));
            builder
        } else {
            builder.http1_only()
        };
        match &acceptor {
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                let hs_timeout = opts.handshake_timeout;
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(hs_timeout, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(server = name, %peer, error = %e, "tls handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(server = name, %peer, "tls handshake timed out");
                            return;
                        }
                    };
                    let conn = builder.serve_connection(TokioIo::new(tls), svc);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(server = name, %peer, error = %e, "connection ended with error");
                    }
                });
            }
            None => {
                let conn = builder
                    .serve_connection(TokioIo::new(stream), svc)
                    .into_owned();
                let fut = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = fut.await {
                        tracing::debug!(server = name, %peer, error = %e, "connection ended with error");
                    }
                });
            }
        }
    }
    drop(listener);
    tracing::info!(server = name, "draining connections");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!(server = name, "all connections closed"),
        _ = tokio::time::sleep(opts.grace) => tracing::warn!(server = name, "grace period over, closing remaining connections"),
    }
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Connections beyond a full accept queue have their handshakes
    /// dropped (and would wait out SYN retries of 1, 3, 7 s...): 300
    /// connections, none accepted yet, all complete with the deep queue,
    /// where tokio's and the standard library's 128 would leave most of
    /// them hanging until the bound below fails the test.
    #[tokio::test]
    async fn a_listener_queues_hundreds_of_connections_before_it_accepts() {
        let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(LISTEN_BACKLOG);
        let n = 300;
        if somaxconn <= n {
            eprintln!("net.core.somaxconn is {somaxconn}: the kernel clamps every backlog to it");
            return;
        }
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut connects = tokio::task::JoinSet::new();
        for _ in 0..n {
            connects.spawn(tokio::net::TcpStream::connect(addr));
        }
        let connected = tokio::time::timeout(Duration::from_secs(30), async {
            let mut streams = Vec::new();
            while let Some(c) = connects.join_next().await {
                streams.push(c.unwrap().unwrap());
            }
            streams
        })
        .await
        .expect("every connection completes its handshake while none is accepted");
        assert_eq!(connected.len(), n as usize);
    }
}
