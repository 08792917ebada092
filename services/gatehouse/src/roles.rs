//! The one wiring: each role (edge, hostd, ingest with the rule engine,
//! api) is started here from the configuration over the [`Ports`] it is
//! given, through that role's `run(config, deps, listeners, shutdown)`.
//!
//! The all-in-one ([`crate::serve`]) starts every role in one process over
//! in-process ports: the in-process bus, hostd serving every shard, and the
//! edge writing log batches straight into the store. A cluster process
//! ([`crate::cluster`]) starts one role over NATS ports: the NATS bus, shard
//! leases in JetStream KV, the JetStream log stream. Nothing else differs.
//!
//! Two in-process ports are deliberately not the cluster's: the all-in-one
//! hostd takes no shard leases (the data directory's lock already makes it
//! the only writer, and lease tokens kept in memory would restart below the
//! fences the store keeps), and the all-in-one edge stores each batch
//! before it answers the agent rather than appending to an in-memory
//! stream that a kill -9 would lose (ADR 0015).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use gatehouse_bus::HostClient;
use gatehouse_bus::answers::Answers;
use gatehouse_bus::hostrpc::LocalHosts;
use gatehouse_bus::leases::LeaseStore;
use gatehouse_bus::logstream::JetStreamLog;
use gatehouse_core::nodekey::NodeKeys;
use gatehouse_core::ports::{Bus, LogObserver, LogSink, Store};
use gatehouse_core::time::Clock;
use gatehouse_edge::{EdgeConfig, EdgeDeps};
use gatehouse_hostd::actor::HostCtx;
use gatehouse_hostd::leases::{LeaseConfig, Leases};
use gatehouse_hostd::{HostdConfig, HostdDeps, Ownership};
use gatehouse_ingest::jetstream::{ConsumerConfig, LogStreamConfig, StreamSink};
use gatehouse_ingest::{DirectSink, IngestConfig, IngestDeps};
use gatehouse_runtime::health::{Check, Readiness};
use gatehouse_runtime::metrics::Metrics;
use gatehouse_runtime::{Listener, ServeOptions, Shutdown};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::bootstrap::Bootstrap;
use crate::config::ServeConfig;

/// What a process's roles run over.
pub struct Ports {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub logs: Logs,
    /// Shard leases; `None`: this process's hostd serves every shard.
    pub leases: Option<Arc<dyn LeaseStore>>,
    pub clock: Arc<dyn Clock>,
    /// The instance's metrics registry, served at its ops port's `/metrics`.
    pub metrics: Metrics,
    /// Bound on one host-RPC attempt (a retry inside the overall budget
    /// reaches a shard's next owner).
    pub rpc_attempt: Duration,
    /// The instance's readiness: its roles add their dependency checks
    /// ([`Ports::watch_store`], [`Ports::watch_stream`]).
    pub readiness: Readiness,
    /// The forward log the log destinations read, and whether any is
    /// defined: whoever stores a batch appends it (the all-in-one's edge,
    /// a cluster's ingest), ingest runs the destinations (in a cluster,
    /// the one holding the forward lease), the api steers them.
    pub forward: Option<gatehouse_ingest::Forwarding>,
    /// The reads and touches this instance's host clients answer without
    /// asking the hosts' actors (ADR 0031), shared by its edge and api so
    /// a key the api re-issues is forgotten at once.
    pub answers: Arc<Answers>,
    /// This process's hostd, which its edge and api ask without the bus
    /// when it serves every shard (the all-in-one, ADR 0054); set once it
    /// is started ([`HostdRole::local`]).
    pub local: Option<Arc<dyn LocalHosts>>,
}

impl std::fmt::Debug for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ports")
            .field("logs", &self.logs)
            .field("leased", &self.leases.is_some())
            .finish()
    }
}

/// Where the edge puts agents' log batches.
#[derive(Debug)]
pub enum Logs {
    /// Into the store, before the agent is answered; nothing to drain.
    Direct,
    /// Appended to the durable log stream; ingest drains it into the store.
    Stream(Arc<JetStreamLog>),
}

impl Ports {
    /// The all-in-one's: the in-process bus, every shard served here, log
    /// batches stored directly.
    pub fn in_process(store: Arc<dyn Store>, clock: Arc<dyn Clock>, metrics: Metrics) -> Self {
        Self {
            store,
            bus: Arc::new(gatehouse_bus::InProcBus::new()),
            logs: Logs::Direct,
            leases: None,
            clock,
            readiness: Readiness::new(&metrics),
            answers: answers(&metrics),
            metrics,
            rpc_attempt: Duration::from_secs(10),
            forward: None,
            local: None,
        }
    }

    /// Opens the forward log under the data directory (appended to only
    /// while a destination is defined: one more synced write per log
    /// batch then).
    pub fn open_forward(&mut self, cfg: &ServeConfig, boot: &Bootstrap) -> anyhow::Result<()> {
        let retention = gatehouse_forward::log::Retention {
            max_bytes: cfg.forward.max_bytes,
            max_age: Duration::from_secs(cfg.forward.max_age_secs),
            ..Default::default()
        };
        let log = gatehouse_forward::log::EmbeddedForwardLog::open(
            &boot.data_dir.join("forward"),
            retention,
            self.clock.clone(),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.forward = Some(gatehouse_ingest::Forwarding {
            log: Arc::new(log),
            active: Arc::new(AtomicBool::new(!cfg.destinations.is_empty())),
        });
        Ok(())
    }

    /// Checks the store every [`CHECK_EVERY`] for readiness: failing while
    /// it cannot be reached or cannot write (a full disk), degraded while
    /// it refuses log batches (the free-space watermark);
    /// `gatehouse_store_free_bytes` follows an embedded store's free space.
    pub fn watch_store(&self) {
        let store = self.store.clone();
        let free = self.metrics.gauge(
            "store_free_bytes",
            "Free bytes on the filesystem of the embedded store",
        );
        // Counters that follow the store's own counts: journal syncs and
        // the batches they made durable, of its database and of its log
        // database (batches per sync: how many writers share one).
        type Count = fn(&gatehouse_core::ports::StoreHealth) -> Option<u64>;
        let counts: Vec<(CountFrom, Count)> = [
            (
                "store_journal_syncs",
                "Journal syncs of the embedded store (each makes every write batch waiting for it durable)",
                (|h| h.journal_syncs) as Count,
            ),
            (
                "store_journal_batches",
                "Write batches the embedded store's journal syncs made durable (batches per sync: how many writers share one)",
                |h| h.journal_batches,
            ),
            (
                "store_log_journal_syncs",
                "Journal syncs of the embedded store's log database (each makes every log batch committed before it durable)",
                |h| h.log_journal_syncs,
            ),
            (
                "store_log_journal_batches",
                "Log batches the embedded store's log journal syncs made durable (batches per sync: how many share one)",
                |h| h.log_journal_batches,
            ),
        ]
        .into_iter()
        .map(|(name, help, get)| (CountFrom::new(self.metrics.counter(name, help)), get))
        .collect();
        self.readiness.watch("store", CHECK_EVERY, move || {
            let (store, free, counts) = (store.clone(), free.clone(), counts.clone());
            async move {
                match store.health().await {
                    Ok(h) => {
                        if let Some(f) = h.free_bytes {
                            free.set(i64::try_from(f).unwrap_or(i64::MAX));
                        }
                        for (count, get) in &counts {
                            count.observe(get(&h));
                        }
                        match (h.writes_refused, h.logs_refused) {
                            (Some(why), _) => Check::Failing(why),
                            (None, Some(why)) => Check::Degraded(why),
                            (None, None) => Check::Ok,
                        }
                    }
                    Err(e) => Check::Failing(e.to_string()),
                }
            }
        });
    }

    /// Checks the forward log (when destinations are configured) every
    /// [`CHECK_EVERY`]: failing while it cannot take appends (log batches
    /// are refused then).
    pub fn watch_forward(&self) {
        let Some(log) = self.forward.as_ref().map(|f| f.log.clone()) else {
            return;
        };
        self.readiness.watch("forward_log", CHECK_EVERY, move || {
            let log = log.clone();
            async move {
                match log.health().await {
                    Ok(()) => Check::Ok,
                    Err(e) => Check::Failing(e.to_string()),
                }
            }
        });
    }

    /// Checks the log stream every [`CHECK_EVERY`] for readiness: failing
    /// while JetStream cannot be reached, degraded while `sink` (an
    /// edge's) refuses log batches (the stream full, the backlog limit).
    pub fn watch_stream(&self, sink: Option<Arc<StreamSink>>) {
        let Logs::Stream(log) = &self.logs else {
            return;
        };
        let log = log.clone();
        self.readiness.watch("log_stream", CHECK_EVERY, move || {
            let (log, sink) = (log.clone(), sink.clone());
            async move {
                use gatehouse_bus::logstream::LogStream;
                if let Err(e) = log.backlog().await {
                    return Check::Failing(format!("JetStream log stream: {e}"));
                }
                match sink.and_then(|s| s.refusing()) {
                    Some(why) => Check::Degraded(why),
                    None => Check::Ok,
                }
            }
        });
    }

    /// A client for the host RPC that answers empty reads and touches
    /// itself while the actors say it may (following their change
    /// announcements from now on).
    fn host_client(&self, cfg: &ServeConfig) -> HostClient {
        self.answers.follow(self.bus.clone());
        let client = HostClient::new(
            self.bus.clone(),
            cfg.shards,
            self.rpc_attempt,
            Duration::from_secs(12),
        )
        .with_answers(self.answers.clone());
        match &self.local {
            Some(local) => client.with_local(local.clone()),
            None => client,
        }
    }
}

/// An empty table of host answers counted in
/// `gatehouse_host_answers_without_actor_total`.
pub fn answers(metrics: &Metrics) -> Arc<Answers> {
    let counter = metrics.counter(
        "host_answers_without_actor",
        "Agent reads and touches answered without asking the host's actor (its last word held)",
    );
    Arc::new(Answers::new(move || {
        counter.inc();
    }))
}

/// A Prometheus counter following a count read from elsewhere (one that
/// starts again from zero when its source restarts: a reopened store).
#[derive(Clone)]
struct CountFrom {
    counter: prometheus_client::metrics::counter::Counter,
    last: Arc<std::sync::atomic::AtomicU64>,
}

impl CountFrom {
    fn new(counter: prometheus_client::metrics::counter::Counter) -> Self {
        Self {
            counter,
            last: Arc::default(),
        }
    }

    /// Adds what `now` counted since the last reading.
    fn observe(&self, now: Option<u64>) {
        let Some(now) = now else { return };
        let last = self.last.swap(now, std::sync::atomic::Ordering::Relaxed);
        // A smaller count is a restarted source: all of it is new.
        self.counter
            .inc_by(if now >= last { now - last } else { now });
    }
}

/// How often readiness checks run.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// A role's control service, served on its ops port.
pub struct Control {
    pub routes: tonic::service::Routes,
    /// The service's full name (`gatehouse.v1.HostdControl`).
    pub name: &'static str,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").field("name", &self.name).finish()
    }
}

/// A running role, or the all-in-one server.
#[derive(Debug)]
pub struct Running {
    pub shutdown: Shutdown,
    task: JoinHandle<anyhow::Result<()>>,
    /// The role's control service, if it has one (a leased hostd, ingest
    /// over a stream).
    pub control: Option<Control>,
    /// The instance's readiness (served on its ops port).
    pub readiness: Option<Readiness>,
}

impl Running {
    pub(crate) fn new(shutdown: Shutdown, task: JoinHandle<anyhow::Result<()>>) -> Self {
        Self {
            shutdown,
            task,
            control: None,
            readiness: None,
        }
    }

    /// Runs `f(shutdown)` as a role's task.
    fn spawn<F, E>(f: impl FnOnce(Shutdown) -> F) -> Self
    where
        F: std::future::Future<Output = Result<(), E>> + Send + 'static,
        E: Into<anyhow::Error>,
    {
        let shutdown = Shutdown::new();
        let run = f(shutdown.clone());
        Self::new(
            shutdown,
            tokio::spawn(async move { run.await.map_err(Into::into) }),
        )
    }

    /// The task, for a supervisor that triggers `shutdown` itself.
    pub(crate) fn task_mut(&mut self) -> &mut JoinHandle<anyhow::Result<()>> {
        &mut self.task
    }

    /// Triggers shutdown and waits for the ordered drain.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        self.task.await?
    }

    /// Waits until it stops by itself (signal).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await?
    }

    /// Waits for the task after its shutdown was triggered: its result, or
    /// `None` if it panicked or was cancelled.
    pub(crate) async fn stop_result(self) -> Option<anyhow::Result<()>> {
        self.task.await.ok()
    }

    /// Ends it at once, as a crash would: no drain, no handover.
    pub fn kill(self) {
        self.task.abort();
    }
}

/// HTTP serving options of a role's listener.
pub(crate) fn serve_options(cfg: &ServeConfig, name: &'static str) -> ServeOptions {
    ServeOptions {
        idle_timeout: Duration::from_secs(cfg.idle_timeout_secs),
        grace: Duration::from_secs(cfg.shutdown_grace_secs),
        name,
        ..ServeOptions::default()
    }
}

/// The agent listener's: as [`serve_options`], with the agent edge's cap
/// on a request head (its own HTTP/1.1 server, ADR 0044).
fn agent_serve_options(cfg: &ServeConfig) -> ServeOptions {
    ServeOptions {
        max_read_buffer: gatehouse_runtime::AGENT_MAX_READ_BUFFER,
        ..serve_options(cfg, "edge")
    }
}

fn edge_config(cfg: &ServeConfig) -> EdgeConfig {
    EdgeConfig {
        paths: cfg.paths.clone(),
        max_body_bytes: cfg.limits.max_body_bytes,
        max_inflated_bytes: cfg.limits.max_inflated_bytes,
        max_carve_bytes: cfg.limits.max_carve_bytes,
        max_in_flight: cfg.limits.max_in_flight_requests,
        max_log_bytes_in_flight: cfg.limits.max_log_bytes_in_flight,
        serve: agent_serve_options(cfg),
        ..EdgeConfig::default()
    }
}

fn api_config(cfg: &ServeConfig) -> gatehouse_api::ApiConfig {
    gatehouse_api::ApiConfig {
        online_window: Duration::from_secs(cfg.online_window_secs),
        max_campaign_targets: cfg.limits.max_campaign_targets,
        max_active_campaigns: cfg.limits.max_active_campaigns,
        max_active_campaigns_per_user: cfg.limits.max_active_campaigns_per_user,
        serve: serve_options(cfg, "api"),
        sessions: gatehouse_api::session::SessionConfig {
            idle: Duration::from_secs(cfg.sessions.idle_secs),
            max_age: Duration::from_secs(cfg.sessions.max_age_secs),
            max_failures: cfg.sessions.max_failed_sign_ins,
            lockout: Duration::from_secs(cfg.sessions.lockout_secs),
            invite_ttl: Duration::from_secs(cfg.sessions.invite_secs),
        },
        ..gatehouse_api::ApiConfig::default()
    }
}

fn ingest_config(cfg: &ServeConfig) -> IngestConfig {
    IngestConfig {
        retention_days: cfg.limits.retention_days,
        consumer: ConsumerConfig {
            ack_wait: Duration::from_millis(cfg.cluster.ingest_ack_wait_ms),
            ..ConsumerConfig::default()
        },
        ..IngestConfig::default()
    }
}

fn rules_config(cfg: &ServeConfig) -> gatehouse_rules::RulesConfig {
    let r = &cfg.rules;
    gatehouse_rules::RulesConfig {
        sweep_interval: Duration::from_secs(r.sweep_interval_secs),
        online_window: Duration::from_secs(cfg.online_window_secs),
        webhook_timeout: Duration::from_secs(r.webhook_timeout_secs),
        webhook_attempts: r.webhook_attempts,
        webhook_backoff: Duration::from_millis(r.webhook_backoff_ms),
        max_alerts_per_rule_per_minute: r.max_alerts_per_rule_per_minute,
        webhook_ca: r.webhook_ca.clone(),
        ..gatehouse_rules::RulesConfig::default()
    }
}

/// The JetStream log stream's shape from the configuration.
pub(crate) fn stream_config(cfg: &ServeConfig) -> LogStreamConfig {
    LogStreamConfig {
        replicas: cfg.cluster.replicas,
        max_backlog: cfg.cluster.max_log_backlog,
        max_bytes: cfg.cluster.max_log_stream_bytes,
        ..LogStreamConfig::default()
    }
}

/// The consumer shape ingest reads the log stream with.
pub(crate) fn consumer_config(cfg: &ServeConfig) -> ConsumerConfig {
    ingest_config(cfg).consumer
}

/// Shard lease timing from the configuration.
pub(crate) fn lease_config(cfg: &ServeConfig) -> LeaseConfig {
    let c = &cfg.cluster;
    LeaseConfig {
        shards: cfg.shards,
        ttl: Duration::from_millis(c.lease_ttl_ms),
        renew_every: Duration::from_millis(c.lease_renew_ms),
        member_ttl: Duration::from_millis(c.lease_ttl_ms),
        replicas: c.replicas,
    }
}

/// The admin tokens every role's control service accepts.
fn admin_tokens(boot: &Bootstrap) -> gatehouse_runtime::grpc::TokenCheck {
    gatehouse_api::grpc::token_check(vec![boot.admin_token.clone()])
}

/// The agent-facing edge: verifies node keys, routes host requests to
/// their hostd, puts log batches where `ports.logs` says; `observer` sees
/// each batch the edge stores itself (the rule engine, all-in-one).
pub fn edge(
    cfg: &ServeConfig,
    boot: &Bootstrap,
    ports: &Ports,
    observer: Option<Arc<dyn LogObserver>>,
    tcp: TcpListener,
) -> anyhow::Result<Running> {
    let tls = gatehouse_runtime::tls::server_config(
        &boot.cert_path,
        &boot.key_path,
        cfg.tls.client_ca.as_deref(),
    )?;
    let sink: Arc<dyn LogSink> = match &ports.logs {
        Logs::Direct => {
            let mut sink = DirectSink::new(ports.store.clone(), &ingest_config(cfg));
            if let Some(o) = observer {
                sink = sink.with_observer(o);
            }
            if let Some(f) = &ports.forward {
                sink = sink.with_forward(f.clone());
            }
            Arc::new(sink)
        }
        Logs::Stream(log) => {
            let sink = Arc::new(StreamSink::new(
                log.clone(),
                &stream_config(cfg),
                &ports.metrics,
            ));
            ports.watch_stream(Some(sink.clone()));
            sink
        }
    };
    let deps = EdgeDeps {
        keys: NodeKeys::new(&boot.node_key_secret),
        hosts: ports.host_client(cfg),
        store: ports.store.clone(),
        sink,
        clock: ports.clock.clone(),
        metrics: ports.metrics.clone(),
        readiness: ports.readiness.clone(),
    };
    let (edge_cfg, listener) = (
        edge_config(cfg),
        Listener {
            tcp,
            tls: Some(tls),
        },
    );
    let mut running = Running::spawn(|s| gatehouse_edge::run(edge_cfg, deps, listener, s));
    running.readiness = Some(ports.readiness.clone());
    Ok(running)
}

/// A started hostd, with what tests and probes look at.
#[derive(Debug)]
pub struct HostdRole {
    pub running: Running,
    pub ctx: Arc<HostCtx>,
    /// Its shard leases (`None`: it serves every shard).
    pub leases: Option<Arc<Leases>>,
    /// The route to it without the bus, for this process's edge and api
    /// (`None`: its shards are leased, so they are asked over the bus).
    pub local: Option<Arc<dyn LocalHosts>>,
}

/// Host actors: for every shard, or for the shards `instance` holds leases
/// for when `ports.leases` is set (`instance` must then be unique among
/// running hostd: pod name plus a start nonce).
pub fn hostd(cfg: &ServeConfig, boot: &Bootstrap, ports: &Ports, instance: &str) -> HostdRole {
    let leases = ports
        .leases
        .as_ref()
        .map(|store| Arc::new(Leases::new(store.clone(), instance, lease_config(cfg))));
    let ownership = match &leases {
        Some(l) => Ownership::Leased(l.clone()),
        None => Ownership::Every,
    };
    let deps = HostdDeps::new(
        ports.store.clone(),
        NodeKeys::new(&boot.node_key_secret),
        Default::default(),
        ports.bus.clone(),
        ownership,
        ports.metrics.clone(),
    );
    let (ctx, drain) = (deps.ctx.clone(), deps.drain.clone());
    let local = match &leases {
        Some(_) => None,
        None => Some(Arc::new(deps.local.clone()) as Arc<dyn LocalHosts>),
    };
    let hostd_cfg = HostdConfig::default();
    let drain_wait = hostd_cfg.drain_timeout + Duration::from_secs(10);
    let mut running = Running::spawn(|s| gatehouse_hostd::run(hostd_cfg, deps, s));
    running.readiness = Some(ports.readiness.clone());
    if let Some(leases) = &leases {
        let control = gatehouse_hostd::control::Control {
            leases: leases.clone(),
            ctx: ctx.clone(),
            shards: cfg.shards,
            drain,
            drain_wait,
        };
        running.control = Some(Control {
            routes: control.routes(admin_tokens(boot)),
            name: gatehouse_hostd::control::SERVICE,
        });
    }
    HostdRole {
        running,
        ctx,
        leases,
        local,
    }
}

/// A started ingest.
pub struct IngestRole {
    pub running: Running,
    /// The rule engine, which sees every stored batch: ingest reports to it
    /// from the stream; an edge that stores batches itself must too.
    pub observer: Arc<dyn LogObserver>,
    /// The log destinations, for operators (`None`: no forward log).
    pub destinations: Option<gatehouse_forward::Handle>,
}

impl std::fmt::Debug for IngestRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestRole")
            .field("running", &self.running)
            .finish()
    }
}

/// Log retention, the rule engine, and (over a stream) the drain of the
/// log stream into the store.
pub fn ingest(cfg: &ServeConfig, boot: &Bootstrap, ports: &Ports) -> anyhow::Result<IngestRole> {
    let (rules, deliveries) =
        gatehouse_rules::Engine::new(ports.store.clone(), rules_config(cfg), &ports.metrics)?;
    if let Some(f) = &ports.forward {
        rules.forward_to(f.clone());
    }
    let observer: Arc<dyn LogObserver> = Arc::new(rules.clone());
    let log = match &ports.logs {
        Logs::Direct => None,
        Logs::Stream(log) => Some(log.clone()),
    };
    let deps = IngestDeps {
        store: ports.store.clone(),
        log: log
            .clone()
            .map(|l| l as Arc<dyn gatehouse_bus::logstream::LogStream>),
        observer: Some(observer.clone()),
        // Over a stream, ingest stores batches and appends them; directly,
        // the edge does.
        forward: match ports.logs {
            Logs::Stream(_) => ports.forward.clone(),
            Logs::Direct => None,
        },
        metrics: ports.metrics.clone(),
    };
    let (ingest_cfg, bus) = (ingest_config(cfg), ports.bus.clone());
    let supervisor = match &ports.forward {
        Some(f) => Some(
            gatehouse_forward::Supervisor::new(
                cfg.destinations.clone(),
                f.log.clone(),
                gatehouse_forward::Services {
                    hosts: Some(Arc::new(gatehouse_forward::line::StoreDirectory::new(
                        ports.store.clone(),
                    ))),
                    alerts: Some(Arc::new(gatehouse_forward::alerts::StoreAlerts::new(
                        ports.store.clone(),
                        f.log.clone(),
                    ))),
                },
                ports.clock.clone(),
                &ports.metrics,
                // In a cluster the api of another process lists them.
                ports.leases.is_some(),
                f.active.clone(),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        None => None,
    };
    let destinations = supervisor.as_ref().map(|s| {
        s.handle()
            .with_file_root(boot.data_dir.join("destinations"))
    });
    let leased = ports
        .leases
        .clone()
        .map(|l| (l, lease_config(cfg).ttl, forward_holder()));
    let mut running = Running::spawn(|s| async move {
        let engine = gatehouse_rules::run(rules, deliveries, bus, s.clone());
        let stop = s.clone();
        let forwarding = async move {
            match (supervisor, leased) {
                (Some(sup), Some((leases, ttl, holder))) => {
                    sup.run_leased(leases, holder, ttl, stop).await
                }
                (Some(sup), None) => sup.run(stop).await,
                (None, _) => {}
            }
        };
        let (r, (), ()) = tokio::join!(
            gatehouse_ingest::run(ingest_cfg, deps, s),
            engine,
            forwarding
        );
        r.map_err(|e| anyhow::anyhow!("ingest: {e}"))
    });
    running.readiness = Some(ports.readiness.clone());
    if let Some(log) = log {
        let control = gatehouse_ingest::jetstream::Control {
            log: (*log).clone(),
            clock: ports.clock.clone(),
            metrics: ports.metrics.clone(),
        };
        running.control = Some(Control {
            routes: control.routes(admin_tokens(boot)),
            name: gatehouse_ingest::jetstream::CONTROL_SERVICE,
        });
    }
    Ok(IngestRole {
        running,
        observer,
        destinations,
    })
}

/// A unique name for this process as the forward lease's holder.
fn forward_holder() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "ingest".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        gatehouse_core::time::now_ms()
    )
}

/// The operator API (REST and gRPC on one listener).
pub fn api(
    cfg: &ServeConfig,
    boot: &Bootstrap,
    ports: &Ports,
    destinations: Option<Arc<dyn gatehouse_core::ports::Destinations>>,
    tcp: TcpListener,
) -> anyhow::Result<Running> {
    let tls = gatehouse_runtime::tls::server_config(&boot.cert_path, &boot.key_path, None)?;
    let r = rules_config(cfg);
    let webhooks = gatehouse_rules::WebhookClient::new(
        r.webhook_timeout,
        r.webhook_ca.as_deref(),
        &ports.metrics,
    )
    .map_err(|e| anyhow::anyhow!("rules.webhook_ca: {e}"))?;
    let deps = gatehouse_api::ApiDeps {
        store: ports.store.clone(),
        bus: ports.bus.clone(),
        hosts: ports.host_client(cfg),
        webhooks: Arc::new(webhooks),
        bootstrap_tokens: vec![boot.admin_token.clone()],
        clock: ports.clock.clone(),
        metrics: ports.metrics.clone(),
        readiness: ports.readiness.clone(),
        destinations,
        forward: ports.forward.clone(),
    };
    let (api_cfg, listener) = (
        api_config(cfg),
        Listener {
            tcp,
            tls: Some(tls),
        },
    );
    let mut running = Running::spawn(|s| gatehouse_api::run(api_cfg, deps, listener, s));
    running.readiness = Some(ports.readiness.clone());
    Ok(running)
}
