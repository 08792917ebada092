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

/// A running test server; stops when dropped. [`CqlTestServer::stop`] and
/// [`CqlTestServer::restart`] take it down and bring it back on the same
/// address with its data, as a node that is stopped and started again.
pub struct CqlTestServer {
    addr: SocketAddr,
    engine: Arc<Mutex<KassandraSession>>,
    acceptor: Option<TlsAcceptor>,
    /// Accepts connections and owns them: aborting it closes them all.
    accept: Mutex<Option<JoinHandle<()>>>,
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
        let s = Self {
            addr: listener.local_addr()?,
            engine: Arc::new(Mutex::new(KassandraSession::new())),
            acceptor: tls.map(TlsAcceptor::from),
            accept: Mutex::new(None),
        };
        s.serve(listener);
        Ok(s)
    }

    fn serve(&self, listener: TcpListener) {
        let (engine, acceptor) = (self.engine.clone(), self.acceptor.clone());
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                while connections.try_join_next().is_some() {}
                let _ = stream.set_nodelay(true);
                let engine = engine.clone();
                match &acceptor {
                    None => {
                        connections.spawn(serve_connection(stream, engine));
                    }
                    Some(a) => {
                        let a = a.clone();
                        connections.spawn(async move {
                            // A failed handshake just closes the connection.
                            if let Ok(s) = a.accept(stream).await {
                                serve_connection(s, engine).await;
                            }
                        });
                    }
                }
            }
        });
        if let Ok(mut a) = self.accept.lock()
            && let Some(old) = a.replace(task)
        {
            old.abort();
        }
    }

    /// `host:port` for the driver's contact points.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Takes the server down: the port refuses connections and every open
    /// connection is closed (both done when this returns). Its data is
    /// kept for [`CqlTestServer::restart`].
    pub async fn stop(&self) {
        let task = self.accept.lock().ok().and_then(|mut a| a.take());
        if let Some(task) = task {
            task.abort();
            // Cancelled: the listener and the connections are closed.
            let _ = task.await;
        }
    }

    /// Serves again on the same address, with the data it had.
    pub async fn restart(&self) -> std::io::Result<()> {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }
}

impl Drop for CqlTestServer {
    fn drop(&mut self) {
        if let Ok(mut a) = self.accept.lock()
            && let Some(task) = a.take()
        {
            task.abort();
        }
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
