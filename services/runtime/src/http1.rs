//! The agent port's HTTP/1.1 server (ADR 0044): a connection between two
//! requests holds its TLS state and nothing else.
//!
//! osquery keeps two to four mostly idle keep-alive connections per agent
//! (`osquery-protocol.md` §2.6). hyper keeps a read buffer (8 to 16 KiB
//! here) and a write buffer (8 KiB) for every connection for as long as
//! it lives: about 25 of the 36 KiB an agent connection held. Here the
//! head is read into a buffer made when its first bytes arrive, the body
//! is read from the connection as the handler asks for it (so the edge's
//! log admission still leaves unread bodies in the sockets, ADR 0035),
//! the answer is written in one piece, and every buffer is gone before
//! the connection waits for its next request.
//!
//! What it speaks: HTTP/1.1 (and 1.0) requests without a body or with a
//! `Content-Length` one; `Expect: 100-continue`; keep-alive unless the
//! request or the answer says `Connection: close` (or HTTP/1.0 does not
//! ask for it). osquery never sends chunked bodies: a request with a
//! `Transfer-Encoding` is answered 411 and the connection closed. Bytes of
//! a next request that arrive early are kept for it. An answer's body is
//! collected and sent with a `Content-Length`. Bodies the handler left
//! unread are drained (up to 8 MiB), else the connection closes after the
//! answer. Errors of the protocol itself are answered as osquery's error
//! body (`{"error": ...}`), which agents treat as a failure to retry.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tower::ServiceExt;

use crate::serve::next_connection;
use crate::{RemoteAddr, ServeOptions, Shutdown};

/// Headers a request may carry.
const MAX_HEADERS: usize = 64;
/// A request head's buffer grows by this much at a time.
const HEAD_CHUNK: usize = 2048;
/// Most bytes one read of a body asks for.
const BODY_CHUNK: usize = 16 * 1024;
/// Unread body bytes drained after an answer to keep the connection;
/// with more left unread it closes. Closing a socket with unread bytes
/// resets it (RST): the agent, still writing its body, loses the busy
/// answer it was given, counts a transport failure, and reconnects and
/// sends the batch again at once, where a drained body costs a
/// decryption of bytes already on their way and the agent backs off
/// (ADR 0051). Agent log batches are well under this.
const DRAIN_MAX: u64 = 8 * 1024 * 1024;

/// A connection's byte stream, and the TCP socket under it (waited on for
/// readability while idle, without a buffer).
trait Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn tcp(&self) -> &TcpStream;
}

impl Conn for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Conn for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// A TLS connection's state (about 1.2 KB) is boxed once, so the futures
/// that pass the connection along carry a pointer, not copies of it.
impl<T: Conn> Conn for Box<T> {
    fn tcp(&self) -> &TcpStream {
        (**self).tcp()
    }
}

/// What every connection of one listener shares.
struct Shared {
    router: axum::Router,
    opts: ServeOptions,
    stop: Shutdown,
}

/// Serves `router` over HTTP/1.1 on `listener` (over TLS when `tls` is
/// set) until `shutdown` triggers: the listener closes, idle connections
/// close at once, requests in flight are answered (with `Connection:
/// close`), all within `opts.grace`.
///
/// `opts.idle_timeout` bounds the wait for a next request,
/// `opts.handshake_timeout` the TLS handshake and the rest of a head once
/// its first bytes arrived, `opts.max_read_buffer` a request head's size.
pub async fn serve_http1(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: axum::Router,
    opts: ServeOptions,
    shutdown: Shutdown,
) -> io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let name = opts.name;
    tracing::info!(server = name, addr = %listener.local_addr()?, tls = acceptor.is_some(), "listening (HTTP/1.1)");
    let grace = opts.grace;
    let shared = Arc::new(Shared {
        router,
        opts,
        stop: shutdown.clone(),
    });
    // Every connection holds a sender: when all are dropped, all closed.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    while let Some((stream, peer)) = next_connection(&listener, &shutdown, name).await {
        tokio::spawn(accepted(
            stream,
            peer,
            acceptor.clone(),
            shared.clone(),
            alive.clone(),
        ));
    }
    drop(listener);
    drop(alive);
    tracing::info!(server = name, "draining connections");
    tokio::select! {
        _ = all_closed.recv() => tracing::info!(server = name, "all connections closed"),
        _ = tokio::time::sleep(grace) => tracing::warn!(server = name, "grace period over, closing remaining connections"),
    }
    Ok(())
}

/// One accepted connection: its TLS handshake (bounded), then its
/// requests. `alive` is dropped when it closes.
async fn accepted(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    alive: mpsc::Sender<()>,
) {
    let _alive = alive;
    let name = shared.opts.name;
    match acceptor {
        Some(acceptor) => {
            // Boxed: the handshake's state lives while it runs.
            let handshake =
                tokio::time::timeout(shared.opts.handshake_timeout, acceptor.accept(stream));
            match Box::pin(handshake).await {
                Ok(Ok(tls)) => connection(Box::new(tls), peer, &shared).await,
                Ok(Err(e)) => {
                    tracing::debug!(server = name, %peer, error = %e, "tls handshake failed");
                }
                Err(_) => {
                    tracing::debug!(server = name, %peer, "tls handshake timed out");
                }
            }
        }
        None => connection(stream, peer, &shared).await,
    }
}

/// Why a connection stopped serving (logged at debug).
#[derive(Debug)]
enum End {
    /// The peer closed, went idle too long, or the server is stopping.
    Quiet,
    Io(io::Error),
    /// The request could not be served; answered with this status and
    /// message, then closed.
    Refused(StatusCode, String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Quiet => f.write_str("closed"),
            End::Io(e) => write!(f, "i/o error: {e}"),
            End::Refused(status, msg) => write!(f, "refused ({status}): {msg}"),
        }
    }
}

/// Serves requests on one connection until it closes.
async fn connection<S: Conn>(mut io: S, peer: SocketAddr, shared: &Shared) {
    // Bytes of the next request that came with the previous one: empty,
    // and without an allocation, between requests as agents send them.
    let mut early = BytesMut::new();
    let end = loop {
        if early.is_empty() {
            early = BytesMut::new();
            match idle(&mut io, shared).await {
                Ok(Some(bytes)) => early.extend_from_slice(&bytes),
                Ok(None) => break End::Quiet,
                Err(e) => break End::Io(e),
            }
        }
        // Boxed: a request's state (its head, the handler's answer, the
        // writes) exists while it is served, not in every idle task.
        match Box::pin(request(io, peer, &mut early, shared)).await {
            Ok(Some(kept)) => io = kept,
            Ok(None) => break End::Quiet,
            Err((end, back)) => {
                if let (End::Refused(status, msg), Some(mut io)) = (&end, back) {
                    let refused = refusal(*status, msg);
                    let _ = Box::pin(write_answer(&mut io, refused, false, false, shared)).await;
                    let _ = io.shutdown().await;
                }
                break end;
            }
        }
    };
    if !matches!(end, End::Quiet) {
        tracing::debug!(server = shared.opts.name, %peer, %end, "connection ended");
    }
}

/// Waits, holding no buffer, until the connection has bytes for a next
/// request: those already read (a TLS record's plaintext), or none when
/// they are waiting in the socket. `None` when the peer closed, the
/// connection stayed idle past `idle_timeout` or the server is stopping.
async fn idle<S: Conn>(io: &mut S, shared: &Shared) -> io::Result<Option<Vec<u8>>> {
    match read_now(io) {
        Poll::Ready(Ok(bytes)) if bytes.is_empty() => Ok(None),
        Poll::Ready(Ok(bytes)) => Ok(Some(bytes)),
        Poll::Ready(Err(e)) => Err(e),
        Poll::Pending => {
            tokio::select! {
                _ = shared.stop.wait() => Ok(None),
                _ = tokio::time::sleep(shared.opts.idle_timeout) => Ok(None),
                ready = io.tcp().readable() => ready.map(|()| Some(Vec::new())),
            }
        }
    }
}

/// Waits for, reads and answers one request. The connection back when it
/// stays open; `None` when it closed in order; on failure why, with the
/// connection when an answer can still be written on it.
async fn request<S: Conn>(
    mut io: S,
    peer: SocketAddr,
    early: &mut BytesMut,
    shared: &Shared,
) -> Result<Option<S>, (End, Option<S>)> {
    let opts = &shared.opts;
    let head = tokio::time::timeout(
        opts.handshake_timeout,
        read_head(&mut io, early, opts.max_read_buffer.max(HEAD_CHUNK)),
    )
    .await;
    let (req, head_len) = match head {
        Ok(Ok(Some(h))) => h,
        Ok(Ok(None)) => return Ok(None),
        Ok(Err(End::Refused(s, m))) => return Err((End::Refused(s, m), Some(io))),
        Ok(Err(e)) => return Err((e, None)),
        Err(_) if early.is_empty() => return Ok(None),
        Err(_) => {
            let msg = format!(
                "request head not complete within {} s",
                opts.handshake_timeout.as_secs()
            );
            return Err((End::Refused(StatusCode::REQUEST_TIMEOUT, msg), Some(io)));
        }
    };
    early.advance(head_len);
    let (mut parts, ()) = req.into_parts();
    let framing = match framing(&parts.headers) {
        Ok(f) => f,
        Err(e) => return Err((e, Some(io))),
    };
    let mut keep = wants_keep_alive(parts.version, &parts.headers);
    if framing != Framing::Length(0)
        && parts
            .headers
            .get(EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
        && let Err(e) = io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await
    {
        return Err((End::Io(e), None));
    }
    // The body's first bytes may have come with the head (and after them
    // the next request's): the body reads them first and hands back what
    // it did not take.
    let (back, returned) = oneshot::channel();
    let body = StreamedBody {
        buf: std::mem::take(early),
        framing,
        trailer: 0,
        io: Some(io),
        back: Some(back),
    };
    parts.extensions.insert(RemoteAddr(peer));
    let head_only = parts.method == Method::HEAD;
    let req = Request::from_parts(parts, axum::body::Body::new(body));
    // Boxed: the handler's future lives only while the request does, not
    // in every idle connection's task.
    let answer = match Box::pin(shared.router.clone().oneshot(req)).await {
        Ok(a) => a,
        Err(never) => match never {},
    };
    // The body (and with it the connection) comes back when the handler
    // drops the request.
    let Ok(Returned {
        mut io,
        unread,
        buf,
    }) = returned.await
    else {
        return Err((
            End::Io(io::Error::other("the request body was not given back")),
            None,
        ));
    };
    *early = buf;
    // A body left unread is drained when its length is known and small.
    let drain = match unread {
        Framing::Length(n) if n <= DRAIN_MAX => Some(n),
        Framing::Length(_) | Framing::Chunked(_) => None,
    };
    keep &= !shared.stop.is_triggered() && drain.is_some();
    let keep = match write_answer(&mut io, answer, head_only, keep, shared).await {
        Ok(keep) => keep,
        Err(e) => return Err((e, None)),
    };
    if !keep {
        let _ = io.shutdown().await;
        return Ok(None);
    }
    let mut left = drain.unwrap_or(0);
    let buffered = early.len().min(usize::try_from(left).unwrap_or(usize::MAX));
    early.advance(buffered);
    left -= buffered as u64;
    if left > 0 {
        let drained = tokio::time::timeout(
            opts.handshake_timeout,
            tokio::io::copy(&mut (&mut io).take(left), &mut tokio::io::sink()),
        )
        .await;
        if !matches!(drained, Ok(Ok(n)) if n == left) {
            return Ok(None);
        }
    }
    Ok(Some(io))
}

/// Bytes the connection holds already (a TLS record's plaintext not yet
/// read, or a next request), without waiting: a read polled once. Empty
/// when the peer closed.
fn read_now<S: Conn>(io: &mut S) -> Poll<io::Result<Vec<u8>>> {
    let mut buf = [0u8; 512];
    let mut rb = ReadBuf::new(&mut buf);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match Pin::new(io).poll_read(&mut cx, &mut rb) {
        Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().to_vec())),
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

/// Reads until `buf` holds a whole request head of at most `max` bytes:
/// the request (with an empty body) and the head's length; `None` when the
/// peer closed before sending any of it.
async fn read_head<S: Conn>(
    io: &mut S,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<(Request<()>, usize)>, End> {
    loop {
        if !buf.is_empty()
            && let Some(parsed) = parse_head(buf)?
        {
            return Ok(Some(parsed));
        }
        if buf.len() >= max {
            return Err(End::Refused(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("request head exceeds {max} bytes"),
            ));
        }
        let start = buf.len();
        buf.resize(start + HEAD_CHUNK.min(max - start), 0);
        let n = match io.read(&mut buf[start..]).await {
            Ok(n) => n,
            Err(e) => {
                buf.truncate(start);
                return Err(End::Io(e));
            }
        };
        buf.truncate(start + n);
        if n == 0 {
            return if start == 0 {
                Ok(None)
            } else {
                Err(End::Io(io::ErrorKind::UnexpectedEof.into()))
            };
        }
    }
}

/// The request of a complete head at the start of `buf`, and the head's
/// length; `None` while incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<(Request<()>, usize)>, End> {
    let bad = |m: String| End::Refused(StatusCode::BAD_REQUEST, m);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(End::Refused(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("more than {MAX_HEADERS} request headers"),
            ));
        }
        Err(e) => return Err(bad(format!("malformed request head: {e}"))),
    };
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|e| bad(format!("request method: {e}")))?;
    let uri: http::Uri = parsed
        .path
        .unwrap_or_default()
        .parse()
        .map_err(|e| bad(format!("request target: {e}")))?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    let map = req.headers_mut();
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|e| bad(format!("header name {:?}: {e}", h.name)))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|e| bad(format!("value of header {name}: {e}")))?;
        map.append(name, value);
    }
    Ok(Some((req, len)))
}

/// How a request's body is framed, and how much of it is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `Content-Length`: bytes left (0: no body, or all read).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunk),
}

/// Where a chunked body's reading stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Next: a chunk-size line.
    Size,
    /// Inside a chunk, with this many bytes left.
    Data(u64),
    /// Next: the CRLF that ends a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailers,
}

/// The longest chunk-size line, and the most trailer bytes, accepted.
const MAX_CHUNK_LINE: usize = 1024;
const MAX_TRAILERS: usize = 8 * 1024;

/// The body's framing from `Transfer-Encoding` (chunked only) or
/// `Content-Length` (no body without either). Both at once, other
/// transfer codings and bad or conflicting lengths are refused.
fn framing(headers: &http::HeaderMap) -> Result<Framing, End> {
    let bad = |m: String| End::Refused(StatusCode::BAD_REQUEST, m);
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    if let Some(te) = headers.get(TRANSFER_ENCODING) {
        if lengths.next().is_some() {
            return Err(bad(
                "a request has either Content-Length or Transfer-Encoding, not both".into(),
            ));
        }
        let codings: Vec<&str> = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("?").split(','))
            .map(str::trim)
            .collect();
        return match codings.as_slice() {
            [c] if c.eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked(Chunk::Size)),
            _ => Err(End::Refused(
                StatusCode::NOT_IMPLEMENTED,
                format!("transfer coding {te:?} is not supported (chunked only)"),
            )),
        };
    }
    let Some(first) = lengths.next() else {
        return Ok(Framing::Length(0));
    };
    let parse = |v: &HeaderValue| {
        v.to_str()
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
    };
    let n = parse(first).ok_or_else(|| bad(format!("invalid Content-Length {first:?}")))?;
    if lengths.any(|v| parse(v) != Some(n)) {
        return Err(bad("conflicting Content-Length headers".into()));
    }
    Ok(Framing::Length(n))
}

/// Whether the request lets the connection stay open after its answer.
fn wants_keep_alive(version: Version, headers: &http::HeaderMap) -> bool {
    let says = |token: &str| {
        headers.get_all(CONNECTION).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if version == Version::HTTP_10 {
        says("keep-alive")
    } else {
        !says("close")
    }
}

/// An answer the server writes itself: osquery's error body.
fn refusal(status: StatusCode, msg: &str) -> Response<axum::body::Body> {
    let body = serde_json::json!({ "error": msg }).to_string();
    let mut r = Response::new(axum::body::Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Writes `answer` (its body collected, with a `Content-Length`, none
/// when `head_only`) in one write; `Connection: close` unless `keep` and
/// the answer does not say it. Whether the connection stays open.
async fn write_answer<S: Conn>(
    io: &mut S,
    answer: Response<axum::body::Body>,
    head_only: bool,
    keep: bool,
    shared: &Shared,
) -> Result<bool, End> {
    let (parts, body) = answer.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| End::Io(io::Error::other(format!("answer body: {e}"))))?
        .to_bytes();
    let keep = keep
        && !parts
            .headers
            .get_all(CONNECTION)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let bodyless = head_only
        || parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    let mut out = Vec::with_capacity(256 + if bodyless { 0 } else { body.len() });
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name == CONNECTION {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if parts.status != StatusCode::NO_CONTENT && !parts.status.is_informational() {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    if !keep {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !bodyless {
        out.extend_from_slice(&body);
    }
    drop(body);
    let write = async {
        io.write_all(&out).await?;
        io.flush().await
    };
    match tokio::time::timeout(shared.opts.idle_timeout, write).await {
        Ok(r) => r.map(|()| keep).map_err(End::Io),
        Err(_) => Err(End::Io(io::ErrorKind::TimedOut.into())),
    }
}

/// A request body read from its connection as the handler polls it; the
/// connection goes back to the server when the body is dropped.
struct StreamedBody<S: Conn> {
    /// Bytes read from the connection and not yet taken: the body's, and
    /// after the body's end the next request's.
    buf: BytesMut,
    framing: Framing,
    /// Trailer bytes seen (bounded by [`MAX_TRAILERS`]).
    trailer: usize,
    io: Option<S>,
    back: Option<oneshot::Sender<Returned<S>>>,
}

/// The connection, what of the body nobody read, and the bytes read past
/// the point where reading stopped.
struct Returned<S> {
    io: S,
    unread: Framing,
    buf: BytesMut,
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("chunked body: {what}"))
}

impl<S: Conn> StreamedBody<S> {
    /// Reads up to `want` more bytes into `buf`; an error when the
    /// connection closed first.
    fn fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<()>> {
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Err(io::Error::other("connection gone")));
        };
        let start = self.buf.len();
        self.buf.resize(start + want, 0);
        let mut rb = ReadBuf::new(&mut self.buf[start..]);
        let r = Pin::new(io).poll_read(cx, &mut rb);
        let n = rb.filled().len();
        self.buf.truncate(start + n);
        match r {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) if n == 0 => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the request body's end",
            ))),
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
        }
    }

    /// A CRLF-ended line at the start of `buf`, without its CRLF, taken
    /// from `buf`; `None` while incomplete.
    fn line(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        match self.buf.windows(2).position(|w| w == b"\r\n") {
            Some(end) => {
                let line = self.buf.split_to(end).freeze();
                self.buf.advance(2);
                Ok(Some(line))
            }
            None if self.buf.len() > max => Err(malformed("line too long")),
            None => Ok(None),
        }
    }

    fn next_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            match self.framing {
                Framing::Length(0) => return Poll::Ready(None),
                Framing::Length(n) | Framing::Chunked(Chunk::Data(n)) => {
                    if self.buf.is_empty() {
                        let want = usize::try_from(n).unwrap_or(usize::MAX).min(BODY_CHUNK);
                        if let Err(e) = std::task::ready!(self.fill(cx, want)) {
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                    let take = self.buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                    let left = n - take as u64;
                    self.framing = match self.framing {
                        Framing::Length(_) => Framing::Length(left),
                        _ if left == 0 => Framing::Chunked(Chunk::DataEnd),
                        _ => Framing::Chunked(Chunk::Data(left)),
                    };
                    return Poll::Ready(Some(Ok(self.buf.split_to(take).freeze())));
                }
                Framing::Chunked(Chunk::Size) => match self.line(MAX_CHUNK_LINE) {
                    Err(e) => return Poll::Ready(Some(Err(e))),
                    Ok(Some(line)) => {
                        let hex = line.split(|&b| b == b';').next().unwrap_or_default();
                        let size = std::str::from_utf8(hex)
                            .ok()
                            .map(str::trim)
                            .filter(|h| !h.is_empty() && h.len() <= 16)
                            .and_then(|h| u64::from_str_radix(h, 16).ok())
                            .ok_or_else(|| malformed("bad chunk size"));
                        self.framing = match size {
                            Err(e) => return Poll::Ready(Some(Err(e))),
                            Ok(0) => Framing::Chunked(Chunk::Trailers),
                            Ok(n) => Framing::Chunked(Chunk::Data(n)),
                        };
                    }
                    Ok(None) => {
                        if let Err(e) = std::task::ready!(self.fill(cx, MAX_CHUNK_LINE)) {
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                },
                Framing::Chunked(Chunk::DataEnd) => {
                    if self.buf.len() >= 2 {
                        if &self.buf[..2] != b"\r\n" {
                            return Poll::Ready(Some(Err(malformed("chunk not ended by CRLF"))));
                        }
                        self.buf.advance(2);
                        self.framing = Framing::Chunked(Chunk::Size);
                    } else if let Err(e) = std::task::ready!(self.fill(cx, 2 - self.buf.len())) {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Framing::Chunked(Chunk::Trailers) => match self.line(MAX_TRAILERS) {
                    Err(e) => return Poll::Ready(Some(Err(e))),
                    Ok(Some(line)) if line.is_empty() => {
                        self.framing = Framing::Length(0);
                    }
                    Ok(Some(line)) => {
                        self.trailer += line.len() + 2;
                        if self.trailer > MAX_TRAILERS {
                            return Poll::Ready(Some(Err(malformed("trailers too long"))));
                        }
                    }
                    Ok(None) => {
                        if let Err(e) = std::task::ready!(self.fill(cx, MAX_CHUNK_LINE)) {
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                },
            }
        }
    }
}

impl<S: Conn> http_body::Body for StreamedBody<S> {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        loop {
            match std::task::ready!(self.next_frame(cx)) {
                // A chunk's bytes may be split by reads: no empty frames.
                Some(Ok(b)) if b.is_empty() => continue,
                Some(r) => return Poll::Ready(Some(r.map(Frame::data))),
                None => return Poll::Ready(None),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Length(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Chunked(_) => SizeHint::default(),
        }
    }
}

impl<S: Conn> Drop for StreamedBody<S> {
    fn drop(&mut self) {
        if let (Some(io), Some(back)) = (self.io.take(), self.back.take()) {
            let _ = back.send(Returned {
                io,
                unread: self.framing,
                buf: std::mem::take(&mut self.buf),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use axum::routing::{get, post};
    use std::time::Duration;

    /// A router that echoes a body's length, ignores one, or says hello.
    fn router() -> axum::Router {
        axum::Router::new()
            .route(
                "/echo",
                post(|body: Bytes| async move { body.len().to_string() }),
            )
            .route("/ignore", post(|| async { "ignored" }))
            .route("/hello", get(|| async { "hello" }))
            .route(
                "/bye",
                get(|| async { ([(http::header::CONNECTION, "close")], "bye") }),
            )
    }

    async fn start(
        idle: Duration,
    ) -> (
        SocketAddr,
        Shutdown,
        tokio::task::JoinHandle<io::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Shutdown::new();
        let opts = ServeOptions {
            idle_timeout: idle,
            name: "test",
            max_read_buffer: 4096,
            ..ServeOptions::default()
        };
        let task = tokio::spawn(serve_http1(listener, None, router(), opts, stop.clone()));
        (addr, stop, task)
    }

    fn post_req(path: &str, body: &[u8], extra: &str) -> Vec<u8> {
        let mut r = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\n{extra}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    }

    /// Reads one answer: its head (lower-cased) and body.
    async fn answer<R: AsyncRead + Unpin>(s: &mut R, buf: &mut Vec<u8>) -> (String, Vec<u8>) {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(buf[..end].to_vec())
                    .unwrap()
                    .to_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |n| n.trim().parse::<usize>().unwrap());
                while buf.len() < end + 4 + len {
                    read_more(s, buf).await;
                }
                let body = buf[end + 4..end + 4 + len].to_vec();
                buf.drain(..end + 4 + len);
                return (head, body);
            }
            read_more(s, buf).await;
        }
    }

    async fn read_more<R: AsyncRead + Unpin>(s: &mut R, buf: &mut Vec<u8>) {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "connection closed; read so far: {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }

    /// Whether the server closed the connection (after what was read);
    /// false if it still has not after 30 s (a bound against hanging, not
    /// a timing assertion).
    async fn closed(s: &mut TcpStream) -> bool {
        let mut chunk = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn one_connection_serves_requests_one_after_another() {
        let (addr, _stop, _task) = start(Duration::from_secs(60)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        for size in [0usize, 10, 40_000, 100_000] {
            s.write_all(&post_req("/echo", &vec![b'x'; size], ""))
                .await
                .unwrap();
            let (head, body) = answer(&mut s, &mut buf).await;
            assert!(head.starts_with("http/1.1 200 ok"), "{head}");
            assert!(!head.contains("connection: close"), "{head}");
            assert_eq!(body, size.to_string().as_bytes());
        }
        s.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(answer(&mut s, &mut buf).await.1, b"hello");
    }

    #[tokio::test]
    async fn requests_sent_together_are_answered_in_order() {
        let (addr, _stop, _task) = start(Duration::from_secs(60)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut both = post_req("/echo", b"abc", "");
        both.extend_from_slice(&post_req("/echo", &[b'y'; 5000], ""));
        both.extend_from_slice(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
        s.write_all(&both).await.unwrap();
        let mut buf = Vec::new();
        assert_eq!(answer(&mut s, &mut buf).await.1, b"3");
        assert_eq!(answer(&mut s, &mut buf).await.1, b"5000");
        assert_eq!(answer(&mut s, &mut buf).await.1, b"hello");
    }

    #[tokio::test]
    async fn an_unread_small_body_is_drained_and_a_large_one_closes_the_connection() {
        let (addr, _stop, _task) = start(Duration::from_secs(60)).await;
        let s = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        // A batch of a busy answer: answered, drained, kept. The client
        // writes from its own task (the body is larger than the socket
        // buffers, and the answer comes before the server reads it).
        let (mut r, mut w) = s.into_split();
        let batch = post_req("/ignore", &vec![b'z'; 1 << 20], "");
        let writer = tokio::spawn(async move {
            w.write_all(&batch).await.unwrap();
            w
        });
        let (head, body) = answer(&mut r, &mut buf).await;
        assert_eq!(body, b"ignored");
        assert!(!head.contains("connection: close"), "{head}");
        let mut w = writer.await.unwrap();
        w.write_all(&post_req("/echo", b"four", "")).await.unwrap();
        assert_eq!(answer(&mut r, &mut buf).await.1, b"4");

        // More than DRAIN_MAX unread: answered, then closed.
        let s = TcpStream::connect(addr).await.unwrap();
        let (mut r, mut w) = s.into_split();
        let big = post_req("/ignore", &vec![b'z'; 2 * DRAIN_MAX as usize], "");
        let writer = tokio::spawn(async move {
            let _ = w.write_all(&big).await;
        });
        let mut head = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = r.read(&mut chunk).await.unwrap();
            head.extend_from_slice(&chunk[..n]);
            if n == 0 || head.windows(7).any(|w| w == b"ignored") {
                break;
            }
        }
        let head = String::from_utf8_lossy(&head).to_lowercase();
        assert!(head.contains("connection: close"), "{head}");
        assert!(matches!(r.read(&mut chunk).await, Ok(0) | Err(_)));
        writer.abort();
    }

    #[tokio::test]
    async fn chunked_bodies_are_read_whole_and_what_follows_is_the_next_request() {
        let (addr, _stop, _task) = start(Duration::from_secs(60)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut both = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\n"
            .to_vec();
        both.extend_from_slice(&post_req("/echo", b"after", ""));
        s.write_all(&both).await.unwrap();
        let mut buf = Vec::new();
        assert_eq!(answer(&mut s, &mut buf).await.1, b"31");
        assert_eq!(answer(&mut s, &mut buf).await.1, b"5");

        // Sent in pieces, and a large one.
        let mut big = Vec::new();
        for _ in 0..20 {
            big.extend_from_slice(b"1000\r\n");
            big.extend_from_slice(&[b'q'; 0x1000]);
            big.extend_from_slice(b"\r\n");
        }
        big.extend_from_slice(b"0\r\n\r\n");
        s.write_all(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        for piece in big.chunks(777) {
            s.write_all(piece).await.unwrap();
        }
        assert_eq!(answer(&mut s, &mut buf).await.1, b"81920");

        // A bad chunk size: the handler sees an error (axum answers 400).
        s.write_all(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
            .await
            .unwrap();
        let (head, _) = answer(&mut s, &mut buf).await;
        assert!(head.starts_with("http/1.1 400"), "{head}");
        assert!(head.contains("connection: close"), "{head}");
    }

    /// An idle connection's task holds little: no buffer, the TLS state
    /// boxed once, the handshake's and a request's state boxed while they
    /// run (11,272 bytes before that boxing, about 2,200 after).
    #[tokio::test]
    async fn an_idle_connection_task_is_small() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let stream = TcpStream::connect(addr).await.unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(rustls::server::ResolvesServerCertUsingSni::new()));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let shared = Arc::new(Shared {
            router: router(),
            opts: ServeOptions::default(),
            stop: Shutdown::new(),
        });
        let (alive, _all_closed) = mpsc::channel(1);
        let task = accepted(stream, addr, Some(acceptor), shared, alive);
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= 4096,
            "an accepted connection's future is {size} bytes"
        );
    }

    #[tokio::test]
    async fn expect_continue_is_answered_before_the_body_is_sent() {
        let (addr, _stop, _task) = start(Duration::from_secs(60)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 6\r\n\r\n",
        )
        .await
        .unwrap();
        let mut buf = Vec::new();
        let (head, _) = answer(&mut s, &mut buf).await;
        assert!(head.starts_with("http/1.1 100 continue"), "{head}");
        s.write_all(b"sixsix").await.unwrap();
        assert_eq!(answer(&mut s, &mut buf).await.1, b"6");
    }

    #[tokio::test]
    async fn bad_requests_get_an_error_body_and_a_closed_connection() {
        let (addr, _stop, _task) = start(Duration::from_secs(60)).await;
        let cases: [(&[u8], &str); 6] = [
            (
                b"POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                "501",
            ),
            (
                b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                "400",
            ),
            (b"POST /echo HTTP/1.1\r\nContent-Length: x1\r\n\r\n", "400"),
            (
                b"POST /echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "400",
            ),
            (b"NOT HTTP AT ALL\r\n\r\n", "400"),
            (&[b'a'; 5000], "431"),
        ];
        for (request, status) in cases {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(request).await.unwrap();
            let mut buf = Vec::new();
            let (head, body) = answer(&mut s, &mut buf).await;
            assert!(head.starts_with(&format!("http/1.1 {status}")), "{head}");
            assert!(head.contains("connection: close"), "{head}");
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
            assert!(closed(&mut s).await);
        }
    }

    #[tokio::test]
    async fn http10_and_connection_close_on_either_side_end_the_connection_after_the_answer() {
        let (addr, _stop, _task) = start(Duration::from_secs(60)).await;
        for (request, expected) in [
            (&b"GET /hello HTTP/1.0\r\n\r\n"[..], &b"hello"[..]),
            (
                b"GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n",
                b"hello",
            ),
            // The answer's own `Connection: close` ends it too.
            (b"GET /bye HTTP/1.1\r\n\r\n", b"bye"),
        ] {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(request).await.unwrap();
            let mut buf = Vec::new();
            let (head, body) = answer(&mut s, &mut buf).await;
            assert_eq!(body, expected);
            assert!(head.contains("connection: close"), "{head}");
            assert!(closed(&mut s).await);
        }

        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        assert!(
            !answer(&mut s, &mut buf)
                .await
                .0
                .contains("connection: close")
        );
    }

    #[tokio::test]
    async fn idle_connections_close_after_the_idle_timeout_and_on_shutdown() {
        let (addr, stop, task) = start(Duration::from_millis(200)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /hello HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = Vec::new();
        assert_eq!(answer(&mut s, &mut buf).await.1, b"hello");
        assert!(closed(&mut s).await, "idle past the timeout");

        let (addr, stop2, task2) = start(Duration::from_secs(600)).await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET /hello HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        assert_eq!(answer(&mut idle, &mut buf).await.1, b"hello");
        stop2.trigger();
        assert!(closed(&mut idle).await, "idle at shutdown");
        task2.await.unwrap().unwrap();
        stop.trigger();
        task.await.unwrap().unwrap();
    }
}
