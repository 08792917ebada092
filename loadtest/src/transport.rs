//! HTTPS the way the agent does it: one keep-alive HTTP/1.1 connection per
//! plugin thread, POST with a JSON body, 16 s for the whole exchange, and
//! one silent reconnect-and-resend when a request fails for any reason but
//! that timeout (§2.6).
//!
//! Requests are written and responses read by hand (httparse for the
//! head), on the requesting task: the agent's client is a blocking one,
//! and an HTTP client with a task per connection cost the harness a wake-up
//! between tasks on every request (ADR 0043).
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
use rustls_pki_types::ServerName;
use tokio::io::AsyncRead;
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
    /// Requests whose 16 s ran out, by where they were then
    /// ([`Stage`]): connecting (TCP and TLS), sending, or waiting for
    /// the answer.
    pub timeouts: [AtomicUsize; 3],
    /// Requests that failed otherwise (reset, closed, refused), after the
    /// one silent re-send, by where the re-send failed.
    pub failures: [AtomicUsize; 3],
}

/// Where an exchange is, so a timeout can say where the time went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// TCP connect and TLS handshake of a new connection.
    Connecting = 0,
    /// Writing the request's head and body.
    Sending = 1,
    /// The request is written; reading the answer.
    Awaiting = 2,
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
            timeouts: Default::default(),
            failures: Default::default(),
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

    async fn connect(&self) -> Result<Box<Wire>, TransportError> {
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
        self.connects.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(Wire { tls }))
    }
}

/// One open keep-alive connection. Nothing runs on it between requests:
/// a request writes its head and body and reads one response on the
/// caller's task, as the agent's blocking Boost.Beast client does, so an
/// exchange costs no task of its own and no wake-up between tasks.
struct Wire {
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
}

impl Wire {
    /// Whether the server closed the connection (or sent something
    /// unasked) while it was idle: one poll of a read, which costs no
    /// system call unless the socket was reported readable.
    fn closed_while_idle(&mut self) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut byte = [0u8; 1];
        let mut rb = tokio::io::ReadBuf::new(&mut byte);
        !matches!(
            std::pin::Pin::new(&mut self.tls).poll_read(&mut cx, &mut rb),
            std::task::Poll::Pending
        )
    }
}

/// The largest response head accepted; a larger one is a broken server.
const MAX_HEAD: usize = 64 * 1024;

/// The request head as the agent writes it: Boost.Beast's header order
/// (§2.3), no `Connection` header, never chunked.
fn request_head(host: &str, path: &str, h: &Headers, body_len: usize, body_room: usize) -> Vec<u8> {
    use std::io::Write;
    let mut head = Vec::with_capacity(256 + body_room);
    let ua = if h.user_agent.is_empty() {
        "osquery/5.23.1"
    } else {
        h.user_agent
    };
    let _ = write!(
        head,
        "POST {path} HTTP/1.1\r\nContent-Type: application/json\r\nAccept: application/json\r\nUser-Agent: {ua}\r\n"
    );
    if let Some(k) = h.node_key.as_deref().filter(|k| !k.is_empty()) {
        let _ = write!(head, "Authorization: NodeKey {k}\r\n");
    }
    if h.gzip {
        head.extend_from_slice(b"Content-Encoding: gzip\r\n");
    }
    let _ = write!(head, "Host: {host}\r\nContent-Length: {body_len}\r\n\r\n");
    head
}

/// How a response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    /// Until the server closes the connection.
    Close,
}

/// Reads one HTTP/1.1 response from `r`: the status, the body, and
/// whether the connection must be closed after it.
async fn read_response<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
) -> Result<(u16, Bytes, bool), TransportError> {
    use tokio::io::AsyncReadExt;
    let closed = || TransportError::Http("connection closed before a whole response".into());
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let (status, framing, close, head_len) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let status = resp.code.unwrap_or(0);
                let mut framing = None;
                let mut close = resp.version == Some(0);
                for h in resp.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        let len = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse().ok())
                            .ok_or_else(|| TransportError::Http("bad content-length".into()))?;
                        framing = framing.or(Some(Framing::Length(len)));
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding")
                        && h.value.eq_ignore_ascii_case(b"chunked")
                    {
                        framing = Some(Framing::Chunked);
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        if h.value.eq_ignore_ascii_case(b"close") {
                            close = true;
                        } else if h.value.eq_ignore_ascii_case(b"keep-alive") {
                            close = false;
                        }
                    }
                }
                let framing = match framing {
                    Some(f) => f,
                    None if status == 204 || status == 304 || (100..200).contains(&status) => {
                        Framing::Length(0)
                    }
                    None => Framing::Close,
                };
                break (status, framing, close, n);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => {
                return Err(TransportError::Http("response head too large".into()));
            }
            Err(e) => return Err(TransportError::Http(format!("bad response: {e}"))),
        }
        if r.read_buf(&mut buf).await.map_err(io_error)? == 0 {
            return Err(closed());
        }
    };
    let body = match framing {
        Framing::Length(len) => {
            let want = head_len + len;
            if buf.capacity() < want {
                buf.reserve(want - buf.len());
            }
            while buf.len() < want {
                if r.read_buf(&mut buf).await.map_err(io_error)? == 0 {
                    return Err(closed());
                }
            }
            Bytes::from(buf).slice(head_len..want)
        }
        Framing::Close => {
            r.read_to_end(&mut buf).await.map_err(io_error)?;
            Bytes::from(buf).slice(head_len..)
        }
        Framing::Chunked => {
            let mut body = Vec::new();
            let mut at = head_len;
            loop {
                // One chunk: `size[;ext]\r\n data \r\n`; size 0 ends it
                // (trailers, rare, are read up to the blank line).
                let line_end = loop {
                    if let Some(i) = buf[at..].windows(2).position(|w| w == b"\r\n") {
                        break at + i;
                    }
                    if buf.len() - at > MAX_HEAD {
                        return Err(TransportError::Http("bad chunk size line".into()));
                    }
                    if r.read_buf(&mut buf).await.map_err(io_error)? == 0 {
                        return Err(closed());
                    }
                };
                let size = std::str::from_utf8(&buf[at..line_end])
                    .ok()
                    .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok())
                    .ok_or_else(|| TransportError::Http("bad chunk size".into()))?;
                at = line_end + 2;
                if size == 0 {
                    loop {
                        if let Some(i) = buf[at..].windows(2).position(|w| w == b"\r\n") {
                            if i == 0 {
                                break;
                            }
                            at += i + 2;
                            continue;
                        }
                        if r.read_buf(&mut buf).await.map_err(io_error)? == 0 {
                            return Err(closed());
                        }
                    }
                    break;
                }
                while buf.len() < at + size + 2 {
                    if r.read_buf(&mut buf).await.map_err(io_error)? == 0 {
                        return Err(closed());
                    }
                }
                body.extend_from_slice(&buf[at..at + size]);
                at += size + 2;
            }
            Bytes::from(body)
        }
    };
    Ok((status, body, close))
}

fn io_error(e: std::io::Error) -> TransportError {
    TransportError::Http(e.to_string())
}

/// One keep-alive connection slot (one agent thread's client).
#[derive(Default)]
pub struct Channel {
    /// Boxed: TLS state is about 1 KB and would otherwise sit inline in
    /// every agent task's future, connected or not.
    conn: Option<Box<Wire>>,
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

/// Bodies up to this size go out in the same write as the head (one TLS
/// record, one system call); larger ones follow it.
const INLINE_BODY: usize = 8 * 1024;

impl Channel {
    async fn attempt(
        &mut self,
        target: &Target,
        path: &str,
        body: &Bytes,
        h: &Headers,
        stage: &mut Stage,
    ) -> Result<HttpReply, TransportError> {
        use tokio::io::AsyncWriteExt;
        if self.conn.as_mut().is_none_or(|w| w.closed_while_idle()) {
            *stage = Stage::Connecting;
            self.conn = Some(target.connect().await?);
        }
        *stage = Stage::Sending;
        let Some(wire) = self.conn.as_mut() else {
            return Err(TransportError::Connect("no connection".into()));
        };
        let inline = body.len() <= INLINE_BODY;
        let mut head = request_head(
            &target.host_header,
            path,
            h,
            body.len(),
            if inline { body.len() } else { 0 },
        );
        if inline {
            head.extend_from_slice(body);
        }
        wire.tls.write_all(&head).await.map_err(io_error)?;
        if !inline {
            wire.tls.write_all(body).await.map_err(io_error)?;
        }
        wire.tls.flush().await.map_err(io_error)?;
        *stage = Stage::Awaiting;
        let (status, body, close) = read_response(&mut wire.tls).await?;
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
        let mut stage = Stage::Sending;
        let first =
            tokio::time::timeout_at(deadline, self.attempt(target, path, &body, h, &mut stage))
                .await;
        let second = match first {
            Ok(Ok(r)) => return Ok(r),
            Err(_) => Err(()),
            Ok(Err(_)) => {
                self.conn = None;
                tokio::time::timeout_at(deadline, self.attempt(target, path, &body, h, &mut stage))
                    .await
                    .map_err(|_| ())
            }
        };
        match second {
            Ok(r) => r.inspect_err(|_| {
                self.conn = None;
                target.failures[stage as usize].fetch_add(1, Ordering::Relaxed);
            }),
            Err(()) => {
                self.conn = None;
                target.timeouts[stage as usize].fetch_add(1, Ordering::Relaxed);
                Err(TransportError::Timeout)
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
mod wire_tests {
    use super::*;

    /// Hands out at most `step` bytes per read, as a slow TLS stream does.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let n = self
                .step
                .min(self.data.len() - self.at)
                .min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.data[at..at + n]);
            self.at += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    async fn parse(raw: &str, step: usize) -> Result<(u16, Bytes, bool), TransportError> {
        read_response(&mut Trickle {
            data: raw.as_bytes().to_vec(),
            at: 0,
            step,
        })
        .await
    }

    /// The same response read whole and a byte at a time gives the same
    /// status, body and keep-alive decision, for each way a body is
    /// delimited.
    #[tokio::test]
    async fn a_response_reads_the_same_whole_or_a_byte_at_a_time() {
        let cases = [
            (
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 18\r\n\r\n{\"node_invalid\":1}",
                200,
                "{\"node_invalid\":1}",
                false,
            ),
            (
                "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
                503,
                "{}",
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\n{\"a\"\r\n9\r\n:[1,2,3]}\r\n0\r\nX-T: 1\r\n\r\n",
                200,
                "{\"a\":[1,2,3]}",
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\n\r\n{\"until\":\"eof\"}",
                200,
                "{\"until\":\"eof\"}",
                true,
            ),
            ("HTTP/1.1 204 No Content\r\n\r\n", 204, "", false),
        ];
        for (raw, status, body, close) in cases {
            for step in [1, 7, raw.len()] {
                let (s, b, c) = parse(raw, step).await.expect(raw);
                assert_eq!(
                    (s, &b[..], c),
                    (status, body.as_bytes(), close),
                    "{raw:?} in steps of {step}"
                );
            }
        }
    }

    /// A connection that ends inside a response, or a response that is
    /// not HTTP, is a transport failure (the agent re-sends once), never
    /// a short body taken for an answer.
    #[tokio::test]
    async fn a_cut_or_garbled_response_is_a_transport_failure() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",
            "HTTP/1.1 200 OK\r\nContent-Le",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}",
            "",
            "SSH-2.0-OpenSSH_9.6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n{}",
        ] {
            assert!(
                matches!(parse(raw, 3).await, Err(TransportError::Http(_))),
                "{raw:?}"
            );
        }
    }

    /// The head the agent writes: Boost.Beast's order, the node key only
    /// when there is one, gzip only when asked, the exact length.
    #[test]
    fn the_request_head_is_the_agents() {
        let h = Headers {
            node_key: Some("k1".into()),
            gzip: true,
            user_agent: "",
        };
        let head = request_head("gh.example:8443", "/api/v1/osquery/log", &h, 42, 0);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "POST /api/v1/osquery/log HTTP/1.1\r\nContent-Type: application/json\r\nAccept: application/json\r\nUser-Agent: osquery/5.23.1\r\nAuthorization: NodeKey k1\r\nContent-Encoding: gzip\r\nHost: gh.example:8443\r\nContent-Length: 42\r\n\r\n"
        );
        let enroll = request_head("gh.example", "/e", &Headers::default(), 0, 0);
        let enroll = String::from_utf8(enroll).unwrap();
        assert!(!enroll.contains("Authorization") && !enroll.contains("Content-Encoding"));
    }
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
