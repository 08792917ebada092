//! The cluster sandbox, shared by the cluster tests (`tests/cluster.rs`)
//! and the load-test binary (`gatehouse-cluster-sandbox`): a real
//! nats-server (JetStream) on a random port, N edges, M hostd, one ingest
//! and the api in this process, every role with its own NATS connection and
//! the store its caller supplies (a session of the in-process CQL server
//! per role in tests; one embedded store for load tests), all sharing one
//! bootstrap directory (a mounted Secret in Kubernetes). Each role counts
//! in a metrics registry of its own, as in its own process.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use gatehouse::bootstrap::Bootstrap;
use gatehouse::cluster::{self, HostdRole, Role};
use gatehouse::config::{ServeConfig, StoreKind};
use gatehouse_bus::nats_test_server::NatsTestServer;
use gatehouse_core::ports::Store;
use gatehouse_runtime::metrics::Metrics;
use reqwest::Method;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::{Agent, client_for};

/// Gives each role its store (a new session, or a shared handle).
pub type StoreFactory = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = anyhow::Result<Arc<dyn Store>>> + Send>> + Send + Sync,
>;

/// The sandbox's shape.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub edges: u16,
    pub hostd: u16,
    pub shards: u32,
    pub lease_ttl_ms: u64,
    pub lease_renew_ms: u64,
    pub max_log_stream_bytes: i64,
    pub ingest_ack_wait_ms: u64,
    /// Secrets and certificates (created if missing); `None`: a temporary
    /// directory the sandbox removes.
    pub data_dir: Option<PathBuf>,
    /// The first edge's port (the next ones 10 apart); `None`: random.
    pub edge_port: Option<u16>,
    /// The api's port; `None`: random.
    pub api_port: Option<u16>,
    /// `[[destinations]]` of every role's configuration (ingest runs them).
    pub destinations: Vec<gatehouse_forward::DestinationConfig>,
}

/// A running cluster in this process.
pub struct Sandbox {
    pub cfg: ServeConfig,
    pub boot: Bootstrap,
    pub nats: NatsTestServer,
    stores: StoreFactory,
    _dir: Option<tempfile::TempDir>,
    api_port: Option<u16>,
    pub http: reqwest::Client,
    /// Each edge's agent URL and role.
    pub edges: Vec<(String, Role)>,
    pub hostd: Vec<HostdRole>,
    pub ingest: Option<Role>,
    /// The api's URL and role.
    pub api: Option<(String, Role)>,
}

/// Binds `port` on loopback (`None`: a random one); returns the listener
/// and its `https://localhost:PORT` URL (the certificate's name).
pub async fn listener(port: Option<u16>) -> anyhow::Result<(TcpListener, String)> {
    let l = TcpListener::bind(("127.0.0.1", port.unwrap_or(0))).await?;
    let url = format!("https://localhost:{}", l.local_addr()?.port());
    Ok((l, url))
}

impl Sandbox {
    /// Starts nats-server and every role: hostd first, then ingest, the
    /// edges and the api.
    pub async fn start(c: SandboxConfig, stores: StoreFactory) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let nats = NatsTestServer::start()?;
        let (dir, data_dir) = match c.data_dir.clone() {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir()?;
                let d = t.path().join("secrets");
                (Some(t), d)
            }
        };
        let mut cfg = ServeConfig {
            data_dir,
            shards: c.shards,
            ..ServeConfig::default()
        };
        cfg.store.kind = StoreKind::Scylla;
        cfg.cluster.nats.servers = vec![nats.url()];
        cfg.cluster.lease_ttl_ms = c.lease_ttl_ms;
        cfg.cluster.lease_renew_ms = c.lease_renew_ms;
        cfg.cluster.max_log_stream_bytes = c.max_log_stream_bytes;
        cfg.cluster.ingest_ack_wait_ms = c.ingest_ack_wait_ms;
        cfg.destinations = c.destinations.clone();
        // Creating the forward stream reserves `max_bytes` of nats-server's
        // storage (75 % of the free disk by default): keep the tests'
        // reservation small so a busy disk cannot refuse it.
        cfg.forward.max_bytes = 64 * 1024 * 1024;
        cfg.validate()?;
        let boot = gatehouse::bootstrap::prepare(&cfg)?;
        let http = client_for(&boot.ca_path)?;
        let mut s = Self {
            cfg,
            boot,
            nats,
            stores,
            _dir: dir,
            api_port: c.api_port,
            http,
            edges: Vec::new(),
            hostd: Vec::new(),
            ingest: None,
            api: None,
        };
        for n in 0..c.hostd {
            s.add_hostd(&format!("hostd-{n}")).await?;
        }
        s.start_ingest().await?;
        for n in 0..c.edges {
            s.add_edge(c.edge_port.map(|p| p + n * 10)).await?;
        }
        s.start_api().await?;
        Ok(s)
    }

    /// A store for a new role.
    pub async fn store(&self) -> anyhow::Result<Arc<dyn Store>> {
        (self.stores)().await
    }

    pub async fn add_hostd(&mut self, name: &str) -> anyhow::Result<()> {
        let h = cluster::start_hostd(
            &self.cfg,
            &self.boot,
            self.store().await?,
            Metrics::new(),
            name,
        )
        .await?;
        self.hostd.push(h);
        Ok(())
    }

    /// Starts an edge on `port` (`None`: a random one).
    pub async fn add_edge(&mut self, port: Option<u16>) -> anyhow::Result<()> {
        let (l, url) = listener(port).await?;
        let role = cluster::start_edge(
            &self.cfg,
            &self.boot,
            self.store().await?,
            Metrics::new(),
            l,
        )
        .await?;
        self.edges.push((url, role));
        Ok(())
    }

    /// Starts ingest (again, after the last one stopped or crashed).
    pub async fn start_ingest(&mut self) -> anyhow::Result<()> {
        self.ingest = Some(self.another_ingest().await?);
        Ok(())
    }

    /// Starts one more ingest process, which the caller runs and stops
    /// (ingests share the log stream's work and compete for the forward
    /// lease).
    pub async fn another_ingest(&self) -> anyhow::Result<Role> {
        cluster::start_ingest(&self.cfg, &self.boot, self.store().await?, Metrics::new()).await
    }

    /// Starts the api (again, after the last one stopped or crashed: on a
    /// new random port unless the sandbox was given one).
    pub async fn start_api(&mut self) -> anyhow::Result<()> {
        let port = if self.api.is_some() {
            None
        } else {
            self.api_port
        };
        let (l, url) = listener(port).await?;
        let role = cluster::start_api(
            &self.cfg,
            &self.boot,
            self.store().await?,
            Metrics::new(),
            l,
        )
        .await?;
        self.api = Some((url, role));
        Ok(())
    }

    /// Shards held by some hostd.
    pub fn served(&self) -> usize {
        self.hostd.iter().map(|h| h.leases.held().len()).sum()
    }

    /// Agent `n`, talking to edge `n` modulo the edges.
    pub fn agent(&self, n: u32) -> Agent {
        let base = self.edges[n as usize % self.edges.len()].0.clone();
        Agent::at(&self.cfg, &self.boot, self.http.clone(), base, n)
    }

    /// Calls the api as the bootstrap admin: status and JSON body.
    pub async fn api(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let base = self.api.as_ref().map(|a| a.0.clone()).unwrap_or_default();
        let mut req = self
            .http
            .request(method, format!("{base}{path}"))
            .bearer_auth(&self.boot.admin_token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// Drains every role: edges and api first, then hostd, then ingest.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        for (_, e) in self.edges.drain(..) {
            e.stop().await?;
        }
        if let Some((_, a)) = self.api.take() {
            a.stop().await?;
        }
        for h in self.hostd.drain(..) {
            h.role.stop().await?;
        }
        if let Some(i) = self.ingest.take() {
            i.stop().await?;
        }
        Ok(())
    }
}
