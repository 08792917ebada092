//! HTTPS the way the agent does it: one keep-alive HTTP/1.1 connection per
//! plugin thread, POST with a JSON body, 16 s for the whole exchange, and
//! one silent reconnect-and-resend when a request fails for any reason but
//! that timeout (§2.6).
//!
//! A [`Channel`] is one such connection slot. By default every simulated
//! agent owns its channels, as osqueryd does; [`Pool`] lets agents share a
//! fixed number of connections instead (needed when the per-process file
//! limit is below the agent count). Connections leave from a spread of
//! loopback source addresses so tens of thousands of them do not exhaust
//! one address's ephemeral ports.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpSocket;

/// The agent's whole-request timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(16);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    Timeout,
    Connect(String),
    Tls(String),
    Http(String),
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportError::Timeout => f.write_str("timeout"),
            TransportError::Connect(e) => write!(f, "connect: {e}"),
            TransportError::Tls(e) => write!(f, "tls: {e}"),
            TransportError::Http(e) => write!(f, "http: {e}"),
        }
    }
}

/// A response as the agent receives it.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    pub body: Bytes,
}

/// Where and how to connect.
pub struct Target {
    pub addr: SocketAddr,
    /// Further endpoints behind the same TLS name (several edges): new
    /// connections go round-robin over `addr` and these, as a TCP load
    /// balancer in front of edges would spread them.
    more: Vec<SocketAddr>,
    next_addr: AtomicUsize,
    /// `Host` header and TLS server name (`--tls_hostname` without port).
    pub host_header: String,
    server_name: ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
    sources: Vec<IpAddr>,
    next_source: AtomicUsize,
    pub connects: AtomicUsize,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("addr", &self.addr).finish()
    }
}

impl Target {
    /// `host` is the `--tls_hostname` value (`name[:port]`), resolved to
    /// `addr`. `sources` spreads connections over local addresses (empty:
    /// let the OS choose).
    pub fn new(
        addr: SocketAddr,
        host: &str,
        tls: Arc<rustls::ClientConfig>,
        sources: Vec<IpAddr>,
    ) -> anyhow::Result<Self> {
        let name = host.rsplit_once(':').map_or(host, |(h, _)| h).to_owned();
        let server_name = ServerName::try_from(name)?;
        let host_header = if addr.port() == 443 {
            host.split(':').next().unwrap_or(host).to_owned()
        } else {
            host.to_owned()
        };
        Ok(Self {
            addr,
            more: Vec::new(),
            next_addr: AtomicUsize::new(0),
            host_header,
            server_name,
            tls: tokio_rustls::TlsConnector::from(tls),
            sources,
            next_source: AtomicUsize::new(0),
            connects: AtomicUsize::new(0),
        })
    }

    /// Spreads new connections over `more` endpoints too.
    pub fn with_more(mut self, more: Vec<SocketAddr>) -> Self {
        self.more = more;
        self
    }

    /// Connects once to every endpoint (TCP and the TLS handshake) so a
    /// run against a wrong or stopped server fails at once, naming the URL
    /// and the cause, instead of counting transport errors.
    pub async fn preflight(&self) -> anyhow::Result<()> {
        for addr in std::iter::once(self.addr).chain(self.more.iter().copied()) {
            let url = if self.host_header == addr.to_string() {
                format!("https://{addr}")
            } else {
                format!("https://{addr} (as {})", self.host_header)
            };
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot reach the agent endpoint {url}: {e}"))?;
            self.tls
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|e| anyhow::anyhow!("TLS with the agent endpoint {url}: {e}"))?;
        }
        Ok(())
    }

    fn pick(&self) -> SocketAddr {
        if self.more.is_empty() {
            return self.addr;
        }
        match self.next_addr.fetch_add(1, Ordering::Relaxed) % (self.more.len() + 1) {
            0 => self.addr,
            i => self.more[i - 1],
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, TransportError> {
        let addr = self.pick();
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|e| TransportError::Connect(e.to_string()))?;
        if !self.sources.is_empty() {
            let i = self.next_source.fetch_add(1, Ordering::Relaxed) % self.sources.len();
            socket
                .bind(SocketAddr::new(self.sources[i], 0))
                .map_err(|e| TransportError::Connect(format!("bind {}: {e}", self.sources[i])))?;
        }
        let tcp = socket
            .connect(addr)
            .await
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| TransportError::Tls(e.to_string()))?;
        // Agents' responses are small (a config of a few KB): a fixed
        // 4 KB read buffer instead of hyper's adaptive one, which grows
        // towards 400 KB and stays grown on every idle connection.
        let (send, conn) = hyper::client::conn::http1::Builder::new()
            .read_buf_exact_size(Some(4096))
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| TransportError::Http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.connects.fetch_add(1, Ordering::Relaxed);
        Ok(send)
    }
}

/// One keep-alive connection slot (one agent thread's client).
#[derive(Default)]
pub struct Channel {
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

/// Request headers the agent sends (§2.3).
#[derive(Debug, Clone, Default)]
pub struct Headers {
    pub node_key: Option<String>,
    pub gzip: bool,
    pub user_agent: &'static str,
}

impl Channel {
    async fn attempt(
        &mut self,
        target: &Target,
        path: &str,
        body: &Bytes,
        h: &Headers,
    ) -> Result<HttpReply, TransportError> {
        if self.conn.as_ref().is_none_or(|c| c.is_closed()) {
            self.conn = Some(target.connect().await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(TransportError::Connect("no connection".into()));
        };
        conn.ready()
            .await
            .map_err(|e| TransportError::Http(e.to_string()))?;
        let mut req = http::Request::post(path)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .header(
                "User-Agent",
                if h.user_agent.is_empty() {
                    "osquery/5.23.1"
                } else {
                    h.user_agent
                },
            );
        if let Some(k) = h.node_key.as_deref().filter(|k| !k.is_empty()) {
            req = req.header("Authorization", format!("NodeKey {k}"));
        }
        if h.gzip {
            req = req.header("Content-Encoding", "gzip");
        }
        let req = req
            .header("Host", target.host_header.as_str())
            .header("Content-Length", body.len())
            .body(Full::new(body.clone()))
            .map_err(|e| TransportError::Http(e.to_string()))?;
        let resp = conn
            .send_request(req)
            .await
            .map_err(|e| TransportError::Http(e.to_string()))?;
        let status = resp.status().as_u16();
        let close = resp
            .headers()
            .get("connection")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| TransportError::Http(e.to_string()))?
            .to_bytes();
        if close {
            self.conn = None;
        }
        Ok(HttpReply { status, body })
    }

    /// POSTs like the agent: 16 s for everything, and on a failure other
    /// than the timeout, one reconnect and re-send of the same request.
    pub async fn post(
        &mut self,
        target: &Target,
        path: &str,
        body: Bytes,
        h: &Headers,
    ) -> Result<HttpReply, TransportError> {
        self.post_until(
            target,
            path,
            body,
            h,
            tokio::time::Instant::now() + REQUEST_TIMEOUT,
        )
        .await
    }

    /// As [`Channel::post`], within an absolute deadline.
    pub async fn post_until(
        &mut self,
        target: &Target,
        path: &str,
        body: Bytes,
        h: &Headers,
        deadline: tokio::time::Instant,
    ) -> Result<HttpReply, TransportError> {
        let first = tokio::time::timeout_at(deadline, self.attempt(target, path, &body, h)).await;
        match first {
            Ok(Ok(r)) => Ok(r),
            Err(_) => {
                self.conn = None;
                Err(TransportError::Timeout)
            }
            Ok(Err(_)) => {
                self.conn = None;
                match tokio::time::timeout_at(deadline, self.attempt(target, path, &body, h)).await
                {
                    Ok(r) => r.inspect_err(|_| self.conn = None),
                    Err(_) => {
                        self.conn = None;
                        Err(TransportError::Timeout)
                    }
                }
            }
        }
    }
}

/// Connections shared by many agents (`--connections N`). A request takes
/// any idle connection (waiting, first come first served, while none is
/// idle) and its 16 s start once it holds one: an agent owns its
/// connections, so waiting for a shared one is the harness's own limit,
/// not the server's. The waits are kept apart ([`Pool::waits`]) and
/// reported, so a run where agents queued for connections says so.
pub struct Pool {
    idle: std::sync::Mutex<Vec<Channel>>,
    free: Arc<tokio::sync::Semaphore>,
    /// How long each request waited for a connection.
    pub waits: crate::metrics::Histogram,
}

/// A shared connection, held for one request; dropped, it goes back to
/// the pool.
#[derive(Debug)]
pub struct Checkout {
    channel: Channel,
    pool: Arc<Pool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl std::ops::Deref for Checkout {
    type Target = Channel;
    fn deref(&self) -> &Channel {
        &self.channel
    }
}

impl std::ops::DerefMut for Checkout {
    fn deref_mut(&mut self) -> &mut Channel {
        &mut self.channel
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        // Back in the pool before the permit (dropped after this) lets the
        // next request in.
        if let Ok(mut idle) = self.pool.idle.lock() {
            idle.push(std::mem::take(&mut self.channel));
        }
    }
}

impl Pool {
    pub fn new(size: usize) -> Self {
        let size = size.max(1);
        Self {
            idle: std::sync::Mutex::new((0..size).map(|_| Channel::default()).collect()),
            free: Arc::new(tokio::sync::Semaphore::new(size)),
            waits: crate::metrics::Histogram::default(),
        }
    }

    /// An idle connection, once there is one.
    pub async fn checkout(self: &Arc<Self>) -> Result<Checkout, TransportError> {
        let start = tokio::time::Instant::now();
        let permit = self
            .free
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| TransportError::Http("the connection pool is closed".into()))?;
        self.waits.record(start.elapsed());
        let channel = self
            .idle
            .lock()
            .ok()
            .and_then(|mut i| i.pop())
            .unwrap_or_default();
        Ok(Checkout {
            channel,
            pool: self.clone(),
            _permit: permit,
        })
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle", &self.idle.lock().map(|i| i.len()).unwrap_or(0))
            .finish()
    }
}

/// Builds the agent's TLS config: TLS 1.2+ and the given CA bundle
/// (`--tls_server_certs`), optionally a client certificate.
pub fn client_tls(ca_pem: &[u8]) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(c?)?;
    }
    anyhow::ensure!(!roots.is_empty(), "the CA bundle holds no certificate");
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

#[cfg(test)]
mod pool_tests {
    use super::*;

    /// Any idle connection serves a request (not the next one in turn,
    /// which may be busy); a request waits only while none is idle, and
    /// every wait is counted.
    #[tokio::test]
    async fn a_request_takes_any_idle_connection_and_waits_only_when_none_is() {
        let pool = Arc::new(Pool::new(2));
        let first = pool.checkout().await.unwrap();
        let second = pool.checkout().await.unwrap();
        drop(second);
        // The connection in turn is `first`'s, still busy: the idle one
        // serves at once.
        let third = tokio::time::timeout(Duration::from_secs(10), pool.checkout())
            .await
            .expect("an idle connection serves at once")
            .unwrap();
        let waiting = tokio::spawn({
            let pool = pool.clone();
            async move { pool.checkout().await.map(drop) }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "both connections are busy");
        drop(first);
        waiting.await.unwrap().unwrap();
        drop(third);
        let waits: u64 = pool.waits.snapshot().iter().sum();
        assert_eq!(waits, 4, "one wait per checkout");
        assert_eq!(
            pool.idle.lock().map(|i| i.len()).unwrap_or(0),
            2,
            "both back"
        );
    }
}
