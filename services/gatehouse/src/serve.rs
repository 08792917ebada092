//! `gatehouse serve`: every role in one process, over the in-process bus
//! and the embedded store (or a ScyllaDB cluster, `store.kind = "scylla"`).
//!
//! Shutdown is ordered: readiness fails and the edge and api stop
//! accepting and drain their requests first; then hostd stops every actor
//! (persisting its state) and ingest's background work ends; the store is
//! closed last.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_api::{Admin, ApiConfig};
use gatehouse_bus::{HostClient, InProcBus};
use gatehouse_core::nodekey::NodeKeys;
use gatehouse_core::ports::{Bus, LogSink, Store};
use gatehouse_edge::{EdgeConfig, EdgeDeps};
use gatehouse_hostd::HostdConfig;
use gatehouse_ingest::{DirectSink, IngestConfig};
use gatehouse_runtime::{ServeOptions, Shutdown};
use gatehouse_store::{EmbeddedStore, ScyllaStore};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::bootstrap::Bootstrap;
use crate::config::{ServeConfig, StoreKind};

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

/// A running server or cluster role.
#[derive(Debug)]
pub struct Running {
    pub shutdown: Shutdown,
    task: JoinHandle<anyhow::Result<()>>,
    /// The role's control service, if it has one (hostd, ingest).
    pub control: Option<Control>,
}

impl Running {
    pub(crate) fn new(shutdown: Shutdown, task: JoinHandle<anyhow::Result<()>>) -> Self {
        Self {
            shutdown,
            task,
            control: None,
        }
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

/// The edge's settings from the configuration and the bootstrap secrets.
pub(crate) fn edge_config(cfg: &ServeConfig) -> EdgeConfig {
    EdgeConfig {
        paths: cfg.paths.clone(),
        max_body_bytes: cfg.limits.max_body_bytes,
        max_inflated_bytes: cfg.limits.max_inflated_bytes,
        max_carve_bytes: cfg.limits.max_carve_bytes,
        max_in_flight: cfg.limits.max_in_flight_requests,
        serve: serve_options(cfg, "edge"),
    }
}

pub(crate) fn api_config(cfg: &ServeConfig) -> ApiConfig {
    ApiConfig {
        online_window: Duration::from_secs(cfg.online_window_secs),
        max_campaign_targets: cfg.limits.max_campaign_targets,
        max_active_campaigns: cfg.limits.max_active_campaigns,
        max_active_campaigns_per_user: cfg.limits.max_active_campaigns_per_user,
        ..ApiConfig::default()
    }
}

pub(crate) fn ingest_config(cfg: &ServeConfig) -> IngestConfig {
    IngestConfig {
        retention_days: cfg.limits.retention_days,
        ..IngestConfig::default()
    }
}

pub(crate) fn rules_config(cfg: &ServeConfig) -> gatehouse_rules::RulesConfig {
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

/// The webhook client of the rule engine's settings, for the API's
/// dead-letter redrive.
pub(crate) fn webhook_client(cfg: &ServeConfig) -> anyhow::Result<gatehouse_rules::WebhookClient> {
    let r = rules_config(cfg);
    gatehouse_rules::WebhookClient::new(r.webhook_timeout, r.webhook_ca.as_deref())
        .map_err(|e| anyhow::anyhow!("rules.webhook_ca: {e}"))
}

/// `gatehouse_store_requests_total` and `gatehouse_store_request_seconds`,
/// fed by the ScyllaDB adapter.
struct StoreMetrics(gatehouse_runtime::metrics::RequestMetrics);

impl gatehouse_core::ports::RequestObserver for StoreMetrics {
    fn observe(&self, request: &str, outcome: &str, seconds: f64) {
        self.0.observe(request, outcome, seconds);
    }
}

/// Opens the configured store: the embedded one in the data directory, or
/// a ScyllaDB cluster (connecting and applying schema migrations).
pub async fn open_store(cfg: &ServeConfig, boot: &Bootstrap) -> anyhow::Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = match cfg.store.kind {
        // The error names the directory (and says when another process
        // holds it).
        StoreKind::Embedded => {
            Arc::new(EmbeddedStore::open(&boot.store_dir).map_err(|e| anyhow::anyhow!("{e}"))?)
        }
        StoreKind::Scylla => {
            let mut sc = cfg.store.scylla.clone();
            sc.ttl.logs_days = cfg.limits.retention_days;
            let store = ScyllaStore::connect(&sc)
                .await
                .map_err(|e| anyhow::anyhow!("opening the ScyllaDB store: {e}"))?;
            store.observe_requests(Arc::new(StoreMetrics(
                gatehouse_runtime::metrics::RequestMetrics::new("store", "ScyllaDB"),
            )));
            Arc::new(store)
        }
    };
    crate::bootstrap::register_enroll_secret(store.as_ref(), boot, gatehouse_core::time::now_ms())
        .await?;
    Ok(store)
}

/// Starts every role on the given listeners over `store`, reading time
/// from `clock` (the system clock; tests move a manual one to check
/// expiry). Returns once serving.
pub fn start(
    cfg: &ServeConfig,
    boot: &Bootstrap,
    store: Arc<dyn Store>,
    clock: Arc<dyn gatehouse_core::time::Clock>,
    agents: TcpListener,
    api: TcpListener,
    ops: Option<TcpListener>,
) -> anyhow::Result<Running> {
    crate::bootstrap::Endpoints::local(&cfg.public_host, agents.local_addr()?, api.local_addr()?)
        .write(&boot.data_dir)?;
    let tls = gatehouse_runtime::tls::server_config(
        &boot.cert_path,
        &boot.key_path,
        cfg.tls.client_ca.as_deref(),
    )?;
    let api_tls = gatehouse_runtime::tls::server_config(&boot.cert_path, &boot.key_path, None)?;
    let bus: Arc<dyn Bus> = Arc::new(InProcBus::new());
    let keys = NodeKeys::new(&boot.node_key_secret);
    let hosts = HostClient::new(
        bus.clone(),
        cfg.shards,
        Duration::from_secs(10),
        Duration::from_secs(12),
    );
    let ingest_cfg = ingest_config(cfg);
    let (rules, deliveries) = gatehouse_rules::Engine::new(store.clone(), rules_config(cfg))?;
    let sink: Arc<dyn LogSink> = Arc::new(
        DirectSink::new(store.clone(), &ingest_cfg).with_observer(Arc::new(rules.clone())),
    );
    let edge_cfg = edge_config(cfg);
    let admin = Arc::new(
        Admin::new(
            store.clone(),
            bus.clone(),
            hosts.clone(),
            Arc::new(webhook_client(cfg)?),
            api_config(cfg),
        )
        .with_bootstrap_tokens(vec![boot.admin_token.clone()])
        .with_clock(clock.clone()),
    );
    let front = Shutdown::new();
    let back = Shutdown::new();
    let hostd_ctx =
        gatehouse_hostd::service::context(store.clone(), keys.clone(), Default::default());
    let hostd = tokio::spawn(gatehouse_hostd::run(
        HostdConfig::default(),
        hostd_ctx,
        bus.clone(),
        back.clone(),
    ));
    let rule_engine = tokio::spawn(gatehouse_rules::run(
        rules,
        deliveries,
        bus.clone(),
        back.clone(),
    ));
    let retention = tokio::spawn(gatehouse_ingest::run_retention(
        store.clone(),
        ingest_cfg,
        back.clone(),
    ));
    let edge = tokio::spawn(gatehouse_edge::run(
        edge_cfg,
        EdgeDeps {
            keys,
            hosts,
            store: store.clone(),
            sink,
            clock,
        },
        agents,
        Some(tls),
        front.clone(),
    ));
    let api = tokio::spawn(gatehouse_api::run(
        admin,
        serve_options(cfg, "api"),
        api,
        Some(api_tls),
        front.clone(),
    ));
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let ops = ops.map(|l| spawn_ops(l, ready.clone(), back.clone(), None));
    let shutdown = Shutdown::new();
    let front_tasks: Vec<Task> = vec![
        ("edge", tokio::spawn(async move { Ok(edge.await??) })),
        ("api", tokio::spawn(async move { Ok(api.await??) })),
    ];
    let mut back_tasks: Vec<Task> = vec![
        ("hostd", tokio::spawn(async move { Ok(hostd.await??) })),
        (
            "retention",
            tokio::spawn(async move { Ok(retention.await?) }),
        ),
        ("rules", tokio::spawn(async move { Ok(rule_engine.await?) })),
    ];
    if let Some(o) = ops {
        back_tasks.push(("ops", o));
    }
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let r = supervise(stop, ready, (front, front_tasks), (back, back_tasks)).await;
        drop(store);
        tracing::info!("shutdown complete");
        r
    });
    Ok(Running::new(shutdown, task))
}

/// A role's task and its name.
pub(crate) type Task = (&'static str, JoinHandle<anyhow::Result<()>>);

/// Runs one process's roles until `stop`, or until a front role (edge,
/// api) ends by itself (a failed listener), then drains in order whatever
/// happened: readiness fails, the front roles stop accepting and drain
/// their requests, then the back roles (hostd persisting its actors,
/// background work) stop. Every role is drained even after another
/// failed; the first failure is the result.
pub(crate) async fn supervise(
    stop: Shutdown,
    ready: Arc<std::sync::atomic::AtomicBool>,
    (front, mut front_tasks): (Shutdown, Vec<Task>),
    (back, back_tasks): (Shutdown, Vec<Task>),
) -> anyhow::Result<()> {
    let mut drain = Drain::default();
    if !front_tasks.is_empty() {
        let names: Vec<&'static str> = front_tasks.iter().map(|t| t.0).collect();
        let first_end = futures_util::future::select_all(front_tasks.iter_mut().map(|(_, h)| h));
        let ended = tokio::select! {
            _ = stop.wait() => None,
            (r, i, _) = first_end => Some((i, r)),
        };
        if let Some((i, r)) = ended {
            tracing::warn!(
                role = names[i],
                "role ended before shutdown; draining the others"
            );
            drain.note(names[i], r.ok());
            front_tasks.remove(i);
        }
    }
    ready.store(false, std::sync::atomic::Ordering::Relaxed);
    tracing::info!("shutting down: draining agent and operator requests");
    front.trigger();
    for (name, t) in front_tasks {
        drain.note(name, t.await.ok());
    }
    tracing::info!("stopping host actors and background work");
    back.trigger();
    for (name, t) in back_tasks {
        drain.note(name, t.await.ok());
    }
    drain.finish()
}

/// What the roles of one process ended with, in drain order: every role is
/// drained whatever an earlier one returned, and the first failure is the
/// process's result.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    first: Option<anyhow::Error>,
}

impl Drain {
    /// Records how `role` ended; `None` is a task that panicked or was
    /// cancelled.
    pub(crate) fn note(&mut self, role: &'static str, r: Option<anyhow::Result<()>>) {
        let err = match r {
            Some(Ok(())) => return,
            Some(Err(e)) => e.context(role),
            None => anyhow::anyhow!("{role}: task ended abnormally"),
        };
        tracing::error!(role, error = %format!("{err:#}"), "role failed");
        self.first.get_or_insert(err);
    }

    pub(crate) fn finish(self) -> anyhow::Result<()> {
        self.first.map_or(Ok(()), Err)
    }
}

/// Serves `/livez`, `/readyz`, `/metrics`, the gRPC health service and
/// the role's `control` service (plain HTTP/1.1 and HTTP/2) until
/// `shutdown`.
pub fn spawn_ops(
    listener: TcpListener,
    ready: Arc<std::sync::atomic::AtomicBool>,
    shutdown: Shutdown,
    control: Option<Control>,
) -> JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        use gatehouse_runtime::grpc::{HEALTH, health, mount};
        let mut app = mount(
            gatehouse_runtime::metrics::ops_router(ready),
            tonic::service::Routes::new(health(&[], shutdown.clone())),
            &[HEALTH],
        );
        if let Some(c) = control {
            app = mount(app, c.routes, &[c.name]);
        }
        let opts = ServeOptions {
            name: "ops",
            http2: true,
            ..ServeOptions::default()
        };
        gatehouse_runtime::serve(listener, None, app, opts, shutdown).await?;
        Ok(())
    })
}

/// Prints what a new user needs: URLs, secrets, files, the flagfile. The
/// enroll secret and admin token appear in clear on the first start only
/// (when they were generated); later starts say where they are, so logs
/// that keep stdout do not collect them on every restart.
pub fn banner(
    cfg: &ServeConfig,
    boot: &Bootstrap,
    agent_addr: std::net::SocketAddr,
    api_addr: std::net::SocketAddr,
) -> String {
    let token_file = boot.data_dir.join("secrets/admin_token");
    let (secret, token, try_token) = if boot.created {
        (
            boot.enroll_secret.clone(),
            boot.admin_token.clone(),
            boot.admin_token.clone(),
        )
    } else {
        (
            format!(
                "in {} (shown on the first start only)",
                boot.enroll_secret_path.display()
            ),
            format!("in {}", token_file.display()),
            format!("$(cat {})", token_file.display()),
        )
    };
    format!(
        "\nGatehouse is running{}.\n\
\n  agents (osquery TLS API): https://{host}:{ap}\n  operator REST API:        https://{api}  (Authorization: Bearer <admin token>)\n\
\n  enroll secret:   {secret}\n  admin token:     {token}\n  CA certificate:  {ca}\n  data directory:  {dir}\n  store:           {store}\n  osquery flagfile: {ff}\n\
\nStart an agent with:\n  osqueryd --flagfile={ff}\n\
\nTry the API:\n  curl --cacert {ca} -H \"Authorization: Bearer {try_token}\" https://{api}/api/v1/hosts\n  gatehouse ctl --data {dir} hosts list\n\
\n--- {ff} ---\n{flags}",
        if boot.created {
            " (first start: secrets and certificates were generated)"
        } else {
            ""
        },
        host = cfg.public_host,
        ap = agent_addr.port(),
        api = api_addr,
        ca = boot.ca_path.display(),
        dir = boot.data_dir.display(),
        store = match cfg.store.kind {
            StoreKind::Embedded => format!("embedded ({})", boot.store_dir.display()),
            StoreKind::Scylla => format!(
                "ScyllaDB {} (keyspace {})",
                cfg.store.scylla.contact_points.join(", "),
                cfg.store.scylla.keyspace
            ),
        },
        ff = boot.flagfile_path.display(),
        flags = boot.flagfile,
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Secrets are printed when they were generated, and only then.
    #[test]
    fn secrets_are_printed_on_the_first_start_only() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cfg = ServeConfig {
            data_dir: dir.path().join("data"),
            ..ServeConfig::default()
        };
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], 8443).into();
        let first = crate::bootstrap::prepare(&cfg).unwrap_or_else(|e| panic!("{e}"));
        let text = banner(&cfg, &first, addr, addr);
        assert!(text.contains(&first.admin_token) && text.contains(&first.enroll_secret));
        let again = crate::bootstrap::prepare(&cfg).unwrap_or_else(|e| panic!("{e}"));
        assert!(!again.created);
        let text = banner(&cfg, &again, addr, addr);
        assert!(!text.contains(&again.admin_token), "{text}");
        assert!(!text.contains(&again.enroll_secret), "{text}");
        assert!(text.contains("secrets/admin_token") && text.contains("secrets/enroll_secret"));
    }

    /// A role that runs until `s` and then records that it drained.
    fn until_stopped(s: &Shutdown, drained: &Arc<AtomicBool>) -> JoinHandle<anyhow::Result<()>> {
        let (s, d) = (s.clone(), drained.clone());
        tokio::spawn(async move {
            s.wait().await;
            d.store(true, Ordering::SeqCst);
            Ok(())
        })
    }

    #[tokio::test]
    async fn a_failed_front_role_still_drains_the_others_and_hostd() {
        let (stop, front, back) = (Shutdown::new(), Shutdown::new(), Shutdown::new());
        let ready = Arc::new(AtomicBool::new(true));
        let api_drained = Arc::new(AtomicBool::new(false));
        let hostd_drained = Arc::new(AtomicBool::new(false));
        let edge: JoinHandle<anyhow::Result<()>> =
            tokio::spawn(async { Err(anyhow::anyhow!("listener failed")) });
        let r = supervise(
            stop,
            ready.clone(),
            (
                front.clone(),
                vec![("edge", edge), ("api", until_stopped(&front, &api_drained))],
            ),
            (
                back.clone(),
                vec![("hostd", until_stopped(&back, &hostd_drained))],
            ),
        )
        .await;
        let e = r.expect_err("the edge's failure is the result");
        assert_eq!(format!("{e:#}"), "edge: listener failed");
        assert!(api_drained.load(Ordering::SeqCst), "the api was drained");
        assert!(
            hostd_drained.load(Ordering::SeqCst),
            "hostd persisted its actors"
        );
        assert!(!ready.load(Ordering::SeqCst), "readiness fails");
    }

    #[tokio::test]
    async fn a_failing_back_role_does_not_stop_the_rest_draining() {
        let (stop, front, back) = (Shutdown::new(), Shutdown::new(), Shutdown::new());
        let rules_drained = Arc::new(AtomicBool::new(false));
        let edge_drained = Arc::new(AtomicBool::new(false));
        stop.trigger();
        let hostd: JoinHandle<anyhow::Result<()>> = {
            let b = back.clone();
            tokio::spawn(async move {
                b.wait().await;
                Err(anyhow::anyhow!("a write failed"))
            })
        };
        let r = supervise(
            stop,
            Arc::new(AtomicBool::new(true)),
            (
                front.clone(),
                vec![("edge", until_stopped(&front, &edge_drained))],
            ),
            (
                back.clone(),
                vec![
                    ("hostd", hostd),
                    ("rules", until_stopped(&back, &rules_drained)),
                ],
            ),
        )
        .await;
        assert_eq!(
            format!("{:#}", r.expect_err("hostd failed")),
            "hostd: a write failed"
        );
        assert!(edge_drained.load(Ordering::SeqCst));
        assert!(rules_drained.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_clean_shutdown_drains_front_before_back() {
        let (stop, front, back) = (Shutdown::new(), Shutdown::new(), Shutdown::new());
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let role = |s: &Shutdown, name: &'static str| {
            let (s, o) = (s.clone(), order.clone());
            tokio::spawn(async move {
                s.wait().await;
                if let Ok(mut o) = o.lock() {
                    o.push(name);
                }
                Ok(())
            })
        };
        let tasks = (
            vec![("edge", role(&front, "edge"))],
            vec![("hostd", role(&back, "hostd"))],
        );
        stop.trigger();
        supervise(
            stop,
            Arc::new(AtomicBool::new(true)),
            (front, tasks.0),
            (back, tasks.1),
        )
        .await
        .unwrap();
        assert_eq!(*order.lock().unwrap(), vec!["edge", "hostd"]);
    }
}
