//! `gatehouse serve`: every role in one process, the cluster's roles
//! ([`crate::roles`]) over in-process ports and the embedded store (or a
//! ScyllaDB cluster, `store.kind = "scylla"`).
//!
//! Shutdown is ordered: readiness fails and the edge and api stop
//! accepting and drain their requests first; then hostd stops every actor
//! (persisting its state) and ingest's background work ends; the store is
//! closed last.

use std::sync::Arc;

use gatehouse_core::ports::Store;
use gatehouse_runtime::health::Readiness;
use gatehouse_runtime::metrics::Metrics;
use gatehouse_runtime::{ServeOptions, Shutdown};
use gatehouse_store::{EmbeddedStore, ScyllaStore};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::bootstrap::Bootstrap;
use crate::config::{ServeConfig, StoreKind};
use crate::roles::{self, Ports};

pub use crate::roles::{Control, Running};

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
/// Its request metrics go to `metrics`.
pub async fn open_store(
    cfg: &ServeConfig,
    boot: &Bootstrap,
    metrics: &Metrics,
) -> anyhow::Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = match cfg.store.kind {
        // The error names the directory (and says when another process
        // holds it).
        StoreKind::Embedded => Arc::new(
            EmbeddedStore::open_with(
                &boot.store_dir,
                gatehouse_store::embedded::StoreOptions {
                    min_free_disk_bytes: cfg.limits.min_free_disk_bytes,
                },
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        StoreKind::Scylla => {
            let mut sc = cfg.store.scylla.clone();
            sc.ttl.logs_days = cfg.limits.retention_days;
            let store = ScyllaStore::connect(&sc)
                .await
                .map_err(|e| anyhow::anyhow!("opening the ScyllaDB store: {e}"))?;
            store.observe_requests(Arc::new(StoreMetrics(
                gatehouse_runtime::metrics::RequestMetrics::new(metrics, "store", "ScyllaDB"),
            )));
            Arc::new(store)
        }
    };
    crate::bootstrap::register_enroll_secret(store.as_ref(), boot, gatehouse_core::time::now_ms())
        .await?;
    Ok(store)
}

/// What the all-in-one runs over.
pub struct ServeDeps {
    /// The opened store ([`open_store`]).
    pub store: Arc<dyn Store>,
    /// Where "now" comes from: the system clock; tests move a manual one
    /// to check expiry.
    pub clock: Arc<dyn gatehouse_core::time::Clock>,
    /// The server's metrics (the store's request metrics are already in
    /// it), served at the ops listener's `/metrics`.
    pub metrics: Metrics,
}

/// The all-in-one's listeners.
#[derive(Debug)]
pub struct ServeListeners {
    pub agents: TcpListener,
    pub api: TcpListener,
    /// `/livez`, `/readyz`, `/metrics` (optional).
    pub ops: Option<TcpListener>,
}

/// Starts every role on `listeners` over `deps` and in-process ports.
/// Returns once serving; the returned handle's shutdown drains in order.
pub fn start(
    cfg: &ServeConfig,
    boot: &Bootstrap,
    deps: ServeDeps,
    listeners: ServeListeners,
) -> anyhow::Result<Running> {
    let ServeDeps {
        store,
        clock,
        metrics,
    } = deps;
    let ServeListeners { agents, api, ops } = listeners;
    crate::bootstrap::Endpoints::local(&cfg.public_host, agents.local_addr()?, api.local_addr()?)
        .write(&boot.data_dir)?;
    let mut ports = Ports::in_process(store.clone(), clock, metrics.clone());
    ports.open_forward(cfg, boot)?;
    let hostd = roles::hostd(cfg, boot, &ports, "hostd");
    // The edge and api ask this hostd without the bus.
    ports.local = hostd.local.clone();
    // The edge stores log batches itself here, so it reports them to the
    // rule engine that ingest runs.
    let ingest = roles::ingest(cfg, boot, &ports)?;
    let edge = roles::edge(cfg, boot, &ports, Some(ingest.observer.clone()), agents)?;
    let destinations = ingest
        .destinations
        .clone()
        .map(|d| Arc::new(d) as Arc<dyn gatehouse_core::ports::Destinations>);
    let api = roles::api(cfg, boot, &ports, destinations, api)?;
    ports.watch_store();
    ports.watch_forward();
    let ready = ports.readiness.clone();
    let mut back = vec![("hostd", hostd.running), ("ingest", ingest.running)];
    if let Some(l) = ops {
        let done = Shutdown::new();
        let task = spawn_ops(l, ready.clone(), done.clone(), None, metrics);
        back.push(("ops", Running::new(done, task)));
    }
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let front = vec![("edge", edge), ("api", api)];
        let r = supervise(stop, ready, front, back).await;
        drop(store);
        tracing::info!("shutdown complete");
        r
    });
    Ok(Running::new(shutdown, task))
}

/// A role and its name.
pub(crate) type Task = (&'static str, Running);

/// Runs one process's roles until `stop`, or until a front role (edge,
/// api) ends by itself (a failed listener), then drains in order whatever
/// happened: readiness fails, the front roles stop accepting and drain
/// their requests, then the back roles (hostd persisting its actors,
/// background work) stop. Every role is drained even after another
/// failed; the first failure is the result.
pub(crate) async fn supervise(
    stop: Shutdown,
    ready: Readiness,
    mut front_tasks: Vec<Task>,
    back_tasks: Vec<Task>,
) -> anyhow::Result<()> {
    let mut drain = Drain::default();
    if !front_tasks.is_empty() {
        let names: Vec<&'static str> = front_tasks.iter().map(|t| t.0).collect();
        let first_end =
            futures_util::future::select_all(front_tasks.iter_mut().map(|(_, r)| r.task_mut()));
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
    ready.drain();
    tracing::info!("shutting down: draining agent and operator requests");
    for (_, r) in &front_tasks {
        r.shutdown.trigger();
    }
    for (name, r) in front_tasks {
        drain.note(name, r.stop_result().await);
    }
    tracing::info!("stopping host actors and background work");
    for (_, r) in &back_tasks {
        r.shutdown.trigger();
    }
    for (name, r) in back_tasks {
        drain.note(name, r.stop_result().await);
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

/// Serves `/livez`, `/readyz`, `/metrics` (of `metrics`), the gRPC health service and
/// the role's `control` service (plain HTTP/1.1 and HTTP/2) until
/// `shutdown`.
pub fn spawn_ops(
    listener: TcpListener,
    ready: Readiness,
    shutdown: Shutdown,
    control: Option<Control>,
    metrics: Metrics,
) -> JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        use gatehouse_runtime::grpc::{HEALTH, health, mount};
        let mut app = mount(
            gatehouse_runtime::metrics::ops_router(ready.clone(), metrics.clone()),
            tonic::service::Routes::new(health(&[], ready, shutdown.clone())),
            &[HEALTH],
            &metrics,
        );
        if let Some(c) = control {
            app = mount(app, c.routes, &[c.name], &metrics);
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
\n  agents (osquery TLS API): https://{host}:{ap}\n  operator REST API:        https://{api}  (Authorization: Bearer <admin token>)\n  web console:              https://{host}:{apiport}/  (sign in as a person: gatehouse ctl --data {dir} users invite NAME)\n\
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
        apiport = api_addr.port(),
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
        let dir = tempfile::tempdir().unwrap();
        let cfg = ServeConfig {
            data_dir: dir.path().join("data"),
            ..ServeConfig::default()
        };
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], 8443).into();
        let first = crate::bootstrap::prepare(&cfg).unwrap();
        let text = banner(&cfg, &first, addr, addr);
        assert!(text.contains(&first.admin_token) && text.contains(&first.enroll_secret));
        let again = crate::bootstrap::prepare(&cfg).unwrap();
        assert!(!again.created);
        let text = banner(&cfg, &again, addr, addr);
        assert!(!text.contains(&again.admin_token), "{text}");
        assert!(!text.contains(&again.enroll_secret), "{text}");
        assert!(text.contains("secrets/admin_token") && text.contains("secrets/enroll_secret"));
    }

    /// A role that runs until its shutdown and then records that it
    /// drained.
    fn until_stopped(drained: &Arc<AtomicBool>) -> Running {
        let (s, d) = (Shutdown::new(), drained.clone());
        let wait = s.clone();
        Running::new(
            s,
            tokio::spawn(async move {
                wait.wait().await;
                d.store(true, Ordering::SeqCst);
                Ok(())
            }),
        )
    }

    #[tokio::test]
    async fn a_failed_front_role_still_drains_the_others_and_hostd() {
        let stop = Shutdown::new();
        let ready = Readiness::new(&Metrics::new());
        let api_drained = Arc::new(AtomicBool::new(false));
        let hostd_drained = Arc::new(AtomicBool::new(false));
        let edge = Running::new(
            Shutdown::new(),
            tokio::spawn(async { Err(anyhow::anyhow!("listener failed")) }),
        );
        let r = supervise(
            stop,
            ready.clone(),
            vec![("edge", edge), ("api", until_stopped(&api_drained))],
            vec![("hostd", until_stopped(&hostd_drained))],
        )
        .await;
        let e = r.expect_err("the edge's failure is the result");
        assert_eq!(format!("{e:#}"), "edge: listener failed");
        assert!(api_drained.load(Ordering::SeqCst), "the api was drained");
        assert!(
            hostd_drained.load(Ordering::SeqCst),
            "hostd persisted its actors"
        );
        assert!(!ready.is_ready(), "readiness fails");
    }

    #[tokio::test]
    async fn a_failing_back_role_does_not_stop_the_rest_draining() {
        let stop = Shutdown::new();
        let rules_drained = Arc::new(AtomicBool::new(false));
        let edge_drained = Arc::new(AtomicBool::new(false));
        stop.trigger();
        let hostd = {
            let s = Shutdown::new();
            let wait = s.clone();
            Running::new(
                s,
                tokio::spawn(async move {
                    wait.wait().await;
                    Err(anyhow::anyhow!("a write failed"))
                }),
            )
        };
        let r = supervise(
            stop,
            Readiness::new(&Metrics::new()),
            vec![("edge", until_stopped(&edge_drained))],
            vec![("hostd", hostd), ("rules", until_stopped(&rules_drained))],
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
        let stop = Shutdown::new();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let role = |name: &'static str| {
            let (s, o) = (Shutdown::new(), order.clone());
            let wait = s.clone();
            Running::new(
                s,
                tokio::spawn(async move {
                    wait.wait().await;
                    if let Ok(mut o) = o.lock() {
                        o.push(name);
                    }
                    Ok(())
                }),
            )
        };
        let (front, back) = (vec![("edge", role("edge"))], vec![("hostd", role("hostd"))]);
        stop.trigger();
        supervise(stop, Readiness::new(&Metrics::new()), front, back)
            .await
            .unwrap();
        assert_eq!(*order.lock().unwrap(), vec!["edge", "hostd"]);
    }
}
