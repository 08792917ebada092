//! The cluster roles, each startable on its own (one per process in a
//! deployment, several per process in the test sandbox): `edge`, `hostd`,
//! `ingest` and `api`. They meet over NATS (host RPC, broadcasts, the log
//! stream, shard leases) and share the store (ScyllaDB in production).
//!
//! Every role shares the secrets and certificates of one [`Bootstrap`]
//! directory (a mounted Kubernetes Secret in production).

use std::sync::Arc;
use std::time::Duration;

use gatehouse_api::Admin;
use gatehouse_bus::{HostClient, NatsBus};
use gatehouse_core::nodekey::NodeKeys;
use gatehouse_core::ports::{Bus, LogSink, Store};
use gatehouse_edge::EdgeDeps;
use gatehouse_hostd::HostdConfig;
use gatehouse_hostd::actor::HostCtx;
use gatehouse_hostd::leases::{LeaseConfig, Leases};
use gatehouse_ingest::jetstream::{ConsumerConfig, LogStreamConfig, StreamSink};
use gatehouse_runtime::Shutdown;
use tokio::net::TcpListener;

use crate::bootstrap::Bootstrap;
use crate::config::ServeConfig;
use crate::serve::{api_config, edge_config, ingest_config, serve_options};

/// A running role (the same handle as the all-in-one server's).
pub type Role = crate::serve::Running;

/// A started hostd, with what tests and probes look at.
#[derive(Debug)]
pub struct HostdRole {
    pub role: Role,
    pub leases: Arc<Leases>,
    pub ctx: Arc<HostCtx>,
}

fn lease_cfg(cfg: &ServeConfig) -> LeaseConfig {
    let c = &cfg.cluster;
    LeaseConfig {
        shards: cfg.shards,
        ttl: Duration::from_millis(c.lease_ttl_ms),
        renew_every: Duration::from_millis(c.lease_renew_ms),
        member_ttl: Duration::from_millis(c.lease_ttl_ms),
        replicas: c.replicas,
    }
}

fn consumer_cfg(cfg: &ServeConfig) -> ConsumerConfig {
    ConsumerConfig {
        ack_wait: Duration::from_millis(cfg.cluster.ingest_ack_wait_ms),
        ..ConsumerConfig::default()
    }
}

fn stream_cfg(cfg: &ServeConfig) -> LogStreamConfig {
    LogStreamConfig {
        replicas: cfg.cluster.replicas,
        max_backlog: cfg.cluster.max_log_backlog,
        max_bytes: cfg.cluster.max_log_stream_bytes,
        ..LogStreamConfig::default()
    }
}

async fn nats(cfg: &ServeConfig, role: &str) -> anyhow::Result<NatsBus> {
    let mut n = cfg.cluster.nats.clone();
    n.name = format!("gatehouse-{role}");
    NatsBus::connect(&n)
        .await
        .map_err(|e| anyhow::anyhow!("{role}: NATS: {e}"))
}

fn host_client(cfg: &ServeConfig, bus: Arc<dyn Bus>) -> HostClient {
    // Short attempts inside the budget: a retry reaches a shard's next
    // owner before the agent's 16 s timeout.
    HostClient::new(
        bus,
        cfg.shards,
        Duration::from_secs(4),
        Duration::from_secs(12),
    )
}

/// Agent-facing edge: verifies node keys, routes host requests to the
/// owning hostd over NATS, appends logs to the JetStream log stream.
pub async fn start_edge(
    cfg: &ServeConfig,
    boot: &Bootstrap,
    store: Arc<dyn Store>,
    listener: TcpListener,
) -> anyhow::Result<Role> {
    let tls = gatehouse_runtime::tls::server_config(
        &boot.cert_path,
        &boot.key_path,
        cfg.tls.client_ca.as_deref(),
    )?;
    // The shared data directory's enroll secret, listed and revocable
    // like any other (idempotent across edges).
    crate::bootstrap::register_enroll_secret(store.as_ref(), boot, gatehouse_core::time::now_ms())
        .await?;
    let bus = nats(cfg, "edge").await?;
    let sink: Arc<dyn LogSink> = Arc::new(
        StreamSink::jetstream(bus.client().clone(), &stream_cfg(cfg))
            .await
            .map_err(|e| anyhow::anyhow!("edge: {e}"))?,
    );
    let bus: Arc<dyn Bus> = Arc::new(bus);
    let edge_cfg = edge_config(cfg);
    let deps = EdgeDeps {
        keys: NodeKeys::new(&boot.node_key_secret),
        hosts: host_client(cfg, bus),
        store,
        sink,
        clock: gatehouse_core::time::system_clock(),
    };
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    let task = tokio::spawn(async move {
        gatehouse_edge::run(edge_cfg, deps, listener, Some(tls), s).await?;
        Ok(())
    });
    Ok(Role::new(shutdown, task))
}

/// Host actors for the shards this instance holds leases for. `instance`
/// must be unique among running hostd (pod name plus a start nonce).
pub async fn start_hostd(
    cfg: &ServeConfig,
    boot: &Bootstrap,
    store: Arc<dyn Store>,
    instance: &str,
) -> anyhow::Result<HostdRole> {
    let bus = nats(cfg, "hostd").await?;
    let leases = Arc::new(
        Leases::open(bus.client().clone(), instance, lease_cfg(cfg))
            .await
            .map_err(|e| anyhow::anyhow!("hostd: {e}"))?,
    );
    let ctx = gatehouse_hostd::service::fenced_context(
        store,
        NodeKeys::new(&boot.node_key_secret),
        Default::default(),
        gatehouse_hostd::sharded::lease_fences(leases.clone(), cfg.shards),
    );
    let (drain, shutdown) = (Shutdown::new(), Shutdown::new());
    let hostd_cfg = HostdConfig::default();
    let control = gatehouse_hostd::control::Control {
        leases: leases.clone(),
        ctx: ctx.clone(),
        shards: cfg.shards,
        drain: drain.clone(),
        drain_wait: hostd_cfg.drain_timeout + Duration::from_secs(10),
    };
    let run = gatehouse_hostd::sharded::run_sharded(
        hostd_cfg,
        ctx.clone(),
        Arc::new(bus),
        leases.clone(),
        lease_cfg(cfg),
        drain,
        shutdown.clone(),
    );
    let task = tokio::spawn(async move {
        run.await?;
        Ok(())
    });
    let mut role = Role::new(shutdown, task);
    role.control = Some(crate::serve::Control {
        routes: control.routes(admin_tokens(boot)),
        name: gatehouse_hostd::control::SERVICE,
    });
    Ok(HostdRole { role, leases, ctx })
}

/// The admin tokens every role's control service accepts.
fn admin_tokens(boot: &Bootstrap) -> gatehouse_runtime::grpc::TokenCheck {
    gatehouse_api::grpc::token_check(vec![boot.admin_token.clone()])
}

/// Drains the log stream into the store.
pub async fn start_ingest(
    cfg: &ServeConfig,
    boot: &Bootstrap,
    store: Arc<dyn Store>,
) -> anyhow::Result<Role> {
    let bus = nats(cfg, "ingest").await?;
    let log = gatehouse_ingest::jetstream::open_jetstream(
        bus.client().clone(),
        &stream_cfg(cfg),
        &consumer_cfg(cfg),
    )
    .await
    .map_err(|e| anyhow::anyhow!("ingest: {e}"))?;
    let control = gatehouse_ingest::jetstream::Control {
        log: log.clone(),
        clock: gatehouse_core::time::system_clock(),
    };
    let shutdown = Shutdown::new();
    let (rules, deliveries) =
        gatehouse_rules::Engine::new(store.clone(), crate::serve::rules_config(cfg))?;
    tracing::info!(
        stream = gatehouse_ingest::jetstream::STREAM,
        consumer = gatehouse_ingest::jetstream::DURABLE,
        "ingest consuming"
    );
    let run = gatehouse_ingest::jetstream::consume(
        Arc::new(log),
        store.clone(),
        consumer_cfg(cfg),
        Some(Arc::new(rules.clone())),
        shutdown.clone(),
    );
    let engine = gatehouse_rules::run(rules, deliveries, Arc::new(bus), shutdown.clone());
    let retention = gatehouse_ingest::run_retention(store, ingest_config(cfg), shutdown.clone());
    let task = tokio::spawn(async move {
        let (r, (), ()) = tokio::join!(run, retention, engine);
        r.map_err(|e| anyhow::anyhow!("ingest: {e}"))
    });
    let mut role = Role::new(shutdown, task);
    role.control = Some(crate::serve::Control {
        routes: control.routes(admin_tokens(boot)),
        name: gatehouse_ingest::jetstream::CONTROL_SERVICE,
    });
    Ok(role)
}

/// The operator API.
pub async fn start_api(
    cfg: &ServeConfig,
    boot: &Bootstrap,
    store: Arc<dyn Store>,
    listener: TcpListener,
) -> anyhow::Result<Role> {
    let tls = gatehouse_runtime::tls::server_config(&boot.cert_path, &boot.key_path, None)?;
    let bus: Arc<dyn Bus> = Arc::new(nats(cfg, "api").await?);
    let admin = Arc::new(
        Admin::new(
            store,
            bus.clone(),
            host_client(cfg, bus),
            Arc::new(crate::serve::webhook_client(cfg)?),
            api_config(cfg),
        )
        .with_bootstrap_tokens(vec![boot.admin_token.clone()]),
    );
    let shutdown = Shutdown::new();
    let (s, opts) = (shutdown.clone(), serve_options(cfg, "api"));
    let task = tokio::spawn(async move {
        gatehouse_api::run(admin, opts, listener, Some(tls), s).await?;
        Ok(())
    });
    Ok(Role::new(shutdown, task))
}
