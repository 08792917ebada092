//! The cluster roles, each startable on its own (one per process in a
//! deployment, several per process in the test sandbox): `edge`, `hostd`,
//! `ingest` and `api`. Each connects its NATS ports (host RPC and
//! broadcasts, the JetStream log stream, shard leases in JetStream KV) and
//! starts the same role the all-in-one runs ([`crate::roles`]); they share
//! the store (ScyllaDB in production).
//!
//! Each role counts in the metrics registry it is given (its process's,
//! served on its ops port; its own, in the test sandbox), and reports its
//! readiness ([`Role::readiness`]): hostd, ingest and the api check the
//! store, ingest and the edge the log stream.
//!
//! Every role shares the secrets and certificates of one [`Bootstrap`]
//! directory (a mounted Kubernetes Secret in production).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use gatehouse_bus::NatsBus;
use gatehouse_bus::leases::{LeaseTtls, NatsLeases};
use gatehouse_core::ports::Store;
use gatehouse_hostd::actor::HostCtx;
use gatehouse_hostd::leases::Leases;
use gatehouse_runtime::metrics::Metrics;
use tokio::net::TcpListener;

use crate::bootstrap::Bootstrap;
use crate::config::ServeConfig;
use crate::roles::{self, Logs, Ports};

/// A running role (the same handle as the all-in-one server's).
pub type Role = roles::Running;

/// A started hostd, with what tests and probes look at.
#[derive(Debug)]
pub struct HostdRole {
    pub role: Role,
    pub leases: Arc<Leases>,
    pub ctx: Arc<HostCtx>,
}

/// Which role a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    Edge,
    Hostd,
    Ingest,
    Api,
}

/// The NATS ports of one role's process: the bus always, the log stream
/// for the roles that append to it or drain it, the shard leases for hostd.
async fn ports(
    cfg: &ServeConfig,
    store: Arc<dyn Store>,
    metrics: Metrics,
    member: Member,
) -> anyhow::Result<Ports> {
    let role = match member {
        Member::Edge => "edge",
        Member::Hostd => "hostd",
        Member::Ingest => "ingest",
        Member::Api => "api",
    };
    let mut n = cfg.cluster.nats.clone();
    n.name = format!("gatehouse-{role}");
    let bus = NatsBus::connect(&n)
        .await
        .map_err(|e| anyhow::anyhow!("{role}: NATS: {e}"))?;
    let logs = if matches!(member, Member::Edge | Member::Ingest) {
        let log = gatehouse_ingest::jetstream::open_jetstream(
            bus.client().clone(),
            &roles::stream_config(cfg),
            &roles::consumer_config(cfg),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{role}: {e}"))?;
        Logs::Stream(Arc::new(log))
    } else {
        Logs::Direct
    };
    // hostd's shard leases; ingest's forward lease (one bucket).
    let leases = if matches!(member, Member::Hostd | Member::Ingest) {
        let l = roles::lease_config(cfg);
        let ttls = LeaseTtls {
            lease: l.ttl,
            member: l.member_ttl,
        };
        let kv = NatsLeases::open(bus.client().clone(), ttls, l.replicas)
            .await
            .map_err(|e| anyhow::anyhow!("{role}: {e}"))?;
        Some(Arc::new(kv) as Arc<dyn gatehouse_bus::leases::LeaseStore>)
    } else {
        None
    };
    let ports_client = bus.client().clone();
    let ports = Ports {
        store,
        bus: Arc::new(bus),
        logs,
        leases,
        clock: gatehouse_core::time::system_clock(),
        readiness: gatehouse_runtime::health::Readiness::new(&metrics),
        answers: roles::answers(&metrics),
        metrics,
        // Short attempts inside the budget: a retry reaches a shard's next
        // owner before the agent's 16 s timeout.
        rpc_attempt: Duration::from_secs(4),
        forward: None,
        local: None,
    };
    let mut ports = ports;
    // Ingest appends what it stores to the forward log and runs the
    // destinations; the api steers them and forwards the audit log.
    if matches!(member, Member::Ingest | Member::Api) {
        let f = gatehouse_forward::jetstream::JetStreamForwardLog::open(
            ports_client.clone(),
            gatehouse_forward::jetstream::JetStreamForwardConfig {
                max_bytes: cfg.forward.max_bytes,
                max_age: Duration::from_secs(cfg.forward.max_age_secs),
                replicas: roles::stream_config(cfg).replicas,
                duplicate_window: Duration::from_secs(120),
            },
            ports.clock.clone(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{role}: {e}"))?;
        ports.forward = Some(gatehouse_ingest::Forwarding {
            log: Arc::new(f),
            active: Arc::new(AtomicBool::new(!cfg.destinations.is_empty())),
        });
    }
    // An edge needs no store to take log batches (they go to the stream):
    // it stays ready through a store outage; the others need it.
    if member != Member::Edge {
        ports.watch_store();
    }
    if member == Member::Ingest {
        ports.watch_stream(None);
        ports.watch_forward();
    }
    Ok(ports)
}

/// Agent-facing edge: verifies node keys, routes host requests to the
/// owning hostd over NATS, appends logs to the JetStream log stream.
pub async fn start_edge(
    cfg: &ServeConfig,
    boot: &Bootstrap,
    store: Arc<dyn Store>,
    metrics: Metrics,
    listener: TcpListener,
) -> anyhow::Result<Role> {
    // The shared data directory's enroll secret, listed and revocable
    // like any other (idempotent across edges).
    crate::bootstrap::register_enroll_secret(store.as_ref(), boot, gatehouse_core::time::now_ms())
        .await?;
    let ports = ports(cfg, store, metrics, Member::Edge).await?;
    roles::edge(cfg, boot, &ports, None, listener)
}

/// Host actors for the shards this instance holds leases for. `instance`
/// must be unique among running hostd (pod name plus a start nonce).
pub async fn start_hostd(
    cfg: &ServeConfig,
    boot: &Bootstrap,
    store: Arc<dyn Store>,
    metrics: Metrics,
    instance: &str,
) -> anyhow::Result<HostdRole> {
    let ports = ports(cfg, store, metrics, Member::Hostd).await?;
    let h = roles::hostd(cfg, boot, &ports, instance);
    let leases = h
        .leases
        .ok_or_else(|| anyhow::anyhow!("hostd: started without shard leases"))?;
    Ok(HostdRole {
        role: h.running,
        leases,
        ctx: h.ctx,
    })
}

/// Drains the log stream into the store, runs the rule engine and the
/// retention.
pub async fn start_ingest(
    cfg: &ServeConfig,
    boot: &Bootstrap,
    store: Arc<dyn Store>,
    metrics: Metrics,
) -> anyhow::Result<Role> {
    let ports = ports(cfg, store, metrics, Member::Ingest).await?;
    Ok(roles::ingest(cfg, boot, &ports)?.running)
}

/// The operator API.
pub async fn start_api(
    cfg: &ServeConfig,
    boot: &Bootstrap,
    store: Arc<dyn Store>,
    metrics: Metrics,
    listener: TcpListener,
) -> anyhow::Result<Role> {
    let ports = ports(cfg, store, metrics, Member::Api).await?;
    // The destinations run in the ingest holding the forward lease: the
    // api reaches them through the forward log's settings.
    let destinations = ports.forward.as_ref().map(|f| {
        Arc::new(gatehouse_forward::Handle::remote(f.log.clone()))
            as Arc<dyn gatehouse_core::ports::Destinations>
    });
    let role = roles::api(cfg, boot, &ports, destinations, listener)?;
    // It forwards the audit log while some destination is defined.
    if let Some(f) = ports.forward.clone() {
        tokio::spawn(gatehouse_forward::supervisor::keep_active(
            f,
            !cfg.destinations.is_empty(),
            role.shutdown.clone(),
        ));
    }
    Ok(role)
}
