//! An in-process CQL v4 server for tests: the `kassandra` engine behind a
//! TCP listener on a random loopback port, so the real `scylla` driver talks
//! to it over the wire exactly as it talks to ScyllaDB.
//!
//! kassandra executes a subset of CQL. It parses a statement's longest
//! prefix it understands and ignores the rest, so `USING TTL`, clustering
//! range predicates, `ORDER BY` and `IF NOT EXISTS` are silently dropped.
//! Tests that need those semantics run against a real node
//! (`GATEHOUSE_TEST_SCYLLA`); see `scylla::tests`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use kassandra::KassandraSession;
use kassandra::error::DbError;
use kassandra::frame::request::Request;
use kassandra::frame::response::Response;
use kassandra::frame::response::error::Error as CqlError;
use kassandra::frame::{request_stream, response_sink};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

/// A running test server; stops when dropped.
pub struct CqlTestServer {
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for CqlTestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CqlTestServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl CqlTestServer {
    /// Binds `127.0.0.1:0` and serves plain CQL until dropped.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(None).await
    }

    /// Like [`CqlTestServer::start`], over TLS when `tls` is given (as a
    /// ScyllaDB node with `client_encryption_options` enabled).
    pub async fn start_with(tls: Option<Arc<ServerConfig>>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let engine = Arc::new(Mutex::new(KassandraSession::new()));
        let acceptor = tls.map(TlsAcceptor::from);
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let engine = engine.clone();
                match &acceptor {
                    None => {
                        tokio::spawn(serve_connection(stream, engine));
                    }
                    Some(a) => {
                        let a = a.clone();
                        tokio::spawn(async move {
                            // A failed handshake just closes the connection.
                            if let Ok(s) = a.accept(stream).await {
                                serve_connection(s, engine).await;
                            }
                        });
                    }
                }
            }
        });
        Ok(Self { addr, accept })
    }

    /// `host:port` for the driver's contact points.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for CqlTestServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve_connection<S>(stream: S, engine: Arc<Mutex<KassandraSession>>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (read, write) = tokio::io::split(stream);
    let mut frames = request_stream(read);
    let mut sink = response_sink(write);
    while let Some(frame) = frames.next().await {
        let Ok((header, opcode, data)) = frame else {
            break;
        };
        let response = match Request::deserialize(opcode, &data, header.flags) {
            Ok(request) => answer(&engine, request),
            Err(_) => Response::Error(CqlError::new(
                DbError::ProtocolError,
                "could not parse request",
            )),
        };
        if sink.send((response, header.stream)).await.is_err() {
            break;
        }
    }
}

fn answer(engine: &Mutex<KassandraSession>, request: Request<'_>) -> Response {
    let Ok(mut kass) = engine.lock() else {
        return Response::Error(CqlError::new(DbError::ServerError, "engine lock poisoned"));
    };
    let result = match request {
        Request::StartUp(_) | Request::Register { .. } => return Response::Ready,
        Request::Options => return Response::options(),
        Request::Query(q) => kass.process(q),
        Request::Prepare(p) => kass.prepare(p),
        Request::Execute(e) => kass.execute(e),
        Request::Batch(b) => kass.process_batch(b),
        Request::AuthResponse => {
            return Response::Error(CqlError::new(
                DbError::ProtocolError,
                "authentication is not supported by the test server",
            ));
        }
    };
    match result {
        Ok(r) => Response::Result(r),
        Err(e) => Response::Error(e),
    }
}
