//! The cluster sandbox: a real nats-server (JetStream) on a random port, a
//! real CQL server (kassandra, in-process), two edges, three hostd, one
//! ingest and the api, each role with its own NATS connection and its own
//! store session, driven by agents over TLS through both edges.
//!
//! It shows: hosts spread over every hostd; killing a hostd during traffic
//! loses no acknowledged log line and no live-query answer, and its shards
//! are served again within the lease TTL; a live query reaches hosts on
//! every shard; a nats-server crash and restart loses no acknowledged log
//! line either.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse::cluster::{self, HostdRole, Role};
use gatehouse::config::{ServeConfig, StoreKind};
use gatehouse_bus::nats_test_server::NatsTestServer;
use gatehouse_core::ports::Store;
use gatehouse_store::cql_test_server::CqlTestServer;
use gatehouse_store::{ScyllaConfig, ScyllaStore};
use gatehouse_tests::{Agent, client_for, eventually};
use reqwest::Method;
use serde_json::{Value, json};

const AGENTS: u32 = 12;
const SHARDS: u32 = 32;

struct Sandbox {
    cfg: ServeConfig,
    boot: gatehouse::bootstrap::Bootstrap,
    cql: CqlTestServer,
    nats: NatsTestServer,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
    edges: Vec<(String, Role)>,
    hostd: Vec<HostdRole>,
    ingest: Option<Role>,
    api: Option<(String, Role)>,
    admin_token: String,
}

async fn store(cql: &CqlTestServer) -> anyhow::Result<Arc<dyn Store>> {
    Ok(Arc::new(
        ScyllaStore::connect(&ScyllaConfig {
            contact_points: vec![cql.addr().to_string()],
            keyspace: "sandbox".into(),
            await_schema_agreement: false,
            ..ScyllaConfig::default()
        })
        .await?,
    ))
}

async fn listener() -> anyhow::Result<(tokio::net::TcpListener, String)> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("https://localhost:{}", l.local_addr()?.port());
    Ok((l, url))
}

impl Sandbox {
    async fn start() -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let nats = NatsTestServer::start()?;
        let cql = CqlTestServer::start().await?;
        let dir = tempfile::tempdir()?;
        let mut cfg = ServeConfig {
            data_dir: dir.path().join("secrets"),
            shards: SHARDS,
            ..ServeConfig::default()
        };
        cfg.store.kind = StoreKind::Scylla;
        cfg.cluster.nats.servers = vec![nats.url()];
        cfg.cluster.lease_ttl_ms = 2_000;
        cfg.cluster.lease_renew_ms = 250;
        cfg.cluster.max_log_stream_bytes = 256 * 1024 * 1024;
        cfg.cluster.ingest_ack_wait_ms = 2_000;
        cfg.validate()?;
        // One bootstrap directory: every role shares its secrets and
        // certificates (a mounted Secret in Kubernetes).
        let boot = gatehouse::bootstrap::prepare(&cfg)?;
        let http = client_for(&boot.ca_path)?;
        let mut s = Self {
            admin_token: boot.admin_token.clone(),
            cfg,
            boot,
            cql,
            nats,
            _dir: dir,
            http,
            edges: Vec::new(),
            hostd: Vec::new(),
            ingest: None,
            api: None,
        };
        for n in 0..3 {
            s.add_hostd(&format!("hostd-{n}")).await?;
        }
        s.ingest = Some(cluster::start_ingest(&s.cfg, &s.boot, store(&s.cql).await?).await?);
        for _ in 0..2 {
            let (l, url) = listener().await?;
            let role = cluster::start_edge(&s.cfg, &s.boot, store(&s.cql).await?, l).await?;
            s.edges.push((url, role));
        }
        let (l, url) = listener().await?;
        let role = cluster::start_api(&s.cfg, &s.boot, store(&s.cql).await?, l).await?;
        s.api = Some((url, role));
        Ok(s)
    }

    async fn add_hostd(&mut self, name: &str) -> anyhow::Result<()> {
        let h = cluster::start_hostd(&self.cfg, &self.boot, store(&self.cql).await?, name).await?;
        self.hostd.push(h);
        Ok(())
    }

    /// Drains every role: edges and api first, then hostd, then ingest.
    async fn stop(mut self) -> anyhow::Result<()> {
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

    /// Once every shard is served: `AGENTS` agents enrolled through both
    /// edges, and the time (seconds) their log lines use.
    async fn enrolled_agents(&self) -> anyhow::Result<(Vec<Agent>, i64)> {
        wait_until("three hostd split every shard", || {
            self.served() == SHARDS as usize
        })
        .await?;
        let mut agents = Vec::new();
        for n in 0..AGENTS {
            let mut a = self.agent(n);
            anyhow::ensure!(a.enroll().await?.agent_success());
            agents.push(a);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64;
        Ok((agents, now))
    }

    fn served(&self) -> usize {
        self.hostd.iter().map(|h| h.leases.held().len()).sum()
    }

    fn agent(&self, n: u32) -> Agent {
        let base = self.edges[(n % 2) as usize].0.clone();
        Agent::at(&self.cfg, &self.boot, self.http.clone(), base, n)
    }

    async fn api(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let base = &self.api.as_ref().map(|a| a.0.clone()).unwrap_or_default();
        let mut req = self
            .http
            .request(method, format!("{base}{path}"))
            .bearer_auth(&self.admin_token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    async fn lines_of(&self, host: &str) -> anyhow::Result<usize> {
        let (code, v) = self
            .api(
                Method::GET,
                &format!("/api/v1/results?host={host}&limit=10000"),
                None,
            )
            .await?;
        anyhow::ensure!(code == 200, "results: {code} {v}");
        Ok(v["items"].as_array().map_or(0, Vec::len))
    }
}

/// One log POST of 5 lines per agent; the lines each got acknowledged.
async fn post_round(round: i64, agents: &[Agent], now: i64) -> anyhow::Result<Vec<usize>> {
    let mut got = Vec::new();
    for a in agents {
        let data: Vec<_> = (0..5)
            .map(|i| json!({"name": "users", "unixTime": now - 600 + round, "columns": {"uid": format!("{round}-{i}")}, "action": "added"}))
            .collect();
        // An error body, or no answer at all (a dead edge), means "keep the
        // batch and retry": count only what the cluster acknowledged.
        let acked = match a.log("result", json!(data)).await {
            Ok(r) => r.agent_success(),
            Err(_) => false,
        };
        got.push(if acked { 5 } else { 0 });
    }
    Ok(got)
}

/// [`post_round`] for each round, adding what was acknowledged.
async fn post_rounds(
    rounds: std::ops::Range<i64>,
    agents: &[Agent],
    now: i64,
    acked: &mut [usize],
) -> anyhow::Result<()> {
    for round in rounds {
        for (i, n) in post_round(round, agents, now)
            .await?
            .into_iter()
            .enumerate()
        {
            acked[i] += n;
        }
    }
    Ok(())
}

async fn wait_until(what: &str, f: impl Fn() -> bool) -> anyhow::Result<()> {
    gatehouse_testkit::eventually(what, Duration::from_secs(20), async || {
        Ok::<_, std::convert::Infallible>(f().then_some(()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_serves_agents_through_any_edge_and_survives_a_hostd_crash() -> anyhow::Result<()>
{
    let mut s = Sandbox::start().await?;
    wait_until("three hostd split every shard", || {
        s.served() == SHARDS as usize && s.hostd.iter().all(|h| !h.leases.held().is_empty())
    })
    .await?;

    let mut agents = Vec::new();
    for n in 0..AGENTS {
        let mut a = s.agent(n);
        let r = a.enroll().await?;
        anyhow::ensure!(r.agent_success(), "enroll through an edge: {r:?}");
        anyhow::ensure!(a.config().await?.agent_success());
        agents.push(a);
    }
    let spread: Vec<usize> = s.hostd.iter().map(|h| h.ctx.registry.len()).collect();
    assert_eq!(spread.iter().sum::<usize>(), AGENTS as usize, "{spread:?}");
    assert!(
        spread.iter().all(|n| *n > 0),
        "hosts on every hostd: {spread:?}"
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let mut acked = vec![0usize; agents.len()];
    post_rounds(0..3, &agents, now, &mut acked).await?;

    // A live query while one hostd crashes: no drain, no handover.
    let (code, c) = s
        .api(
            Method::POST,
            "/api/v1/campaigns",
            Some(json!({"sql": "SELECT 1 AS one", "all": true, "expires_in": 600})),
        )
        .await?;
    assert_eq!(code, 201, "{c}");
    let id = c["id"].as_str().unwrap_or_default().to_owned();
    let victim = s.hostd.remove(0);
    let victim_shards = victim.leases.held().len();
    victim.role.kill();
    drop(victim.leases);
    let crashed = Instant::now();

    // Traffic goes on through both edges during the takeover.
    post_rounds(3..6, &agents, now, &mut acked).await?;
    for a in &agents {
        let r = a.read_until_within(&id, Duration::from_secs(20)).await?;
        assert_eq!(r["queries"][&id], "SELECT 1 AS one");
        let w = a
            .write(json!({"queries": {&id: [{"one": "1"}]}, "statuses": {&id: 0}}))
            .await?;
        anyhow::ensure!(w.agent_success(), "answer through an edge: {w:?}");
    }
    wait_until("the survivors serve every shard", || {
        s.served() == SHARDS as usize
    })
    .await?;
    let recovered = crashed.elapsed();
    println!("hostd crash: {victim_shards} shards served again after {recovered:?}");

    // Every acknowledged line reaches the store (through the stream and
    // ingest), and every answer is recorded.
    for (a, want) in agents.iter().zip(&acked) {
        let host = a.host_id();
        eventually(Duration::from_secs(20), || async {
            Ok((s.lines_of(&host).await? == *want).then_some(()))
        })
        .await?;
    }
    let total: usize = acked.iter().sum();
    println!("lines acknowledged: {total} of {}", AGENTS as usize * 6 * 5);
    assert!(
        total >= (AGENTS as usize) * 5 * 5,
        "most batches were acknowledged: {total}"
    );
    let d = eventually(Duration::from_secs(10), || async {
        let (_, d) = s
            .api(Method::GET, &format!("/api/v1/campaigns/{id}"), None)
            .await?;
        Ok((d["coverage"]["answered"] == AGENTS).then_some(d))
    })
    .await?;
    assert_eq!(d["coverage"]["targeted"], AGENTS, "{d}");

    // A new hostd joins and takes its share.
    s.add_hostd("hostd-3").await?;
    wait_until("the newcomer takes a share", || {
        s.hostd.last().is_some_and(|h| !h.leases.held().is_empty())
    })
    .await?;
    for a in &agents {
        anyhow::ensure!(a.config().await?.agent_success());
    }

    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_lines_survive_a_nats_server_crash() -> anyhow::Result<()> {
    let mut s = Sandbox::start().await?;
    let (agents, now) = s.enrolled_agents().await?;
    // Ingest is down: acknowledged batches wait in the stream only.
    if let Some(i) = s.ingest.take() {
        i.stop().await?;
    }
    let mut acked = vec![0usize; agents.len()];
    post_rounds(0..3, &agents, now, &mut acked).await?;
    assert_eq!(
        s.lines_of(&agents[0].host_id()).await?,
        0,
        "nothing ingested yet"
    );
    // nats-server dies (SIGKILL) with those batches in its files, and comes
    // back on the same port; every role reconnects by itself.
    s.nats.crash_and_restart()?;
    let restarted = Instant::now();
    // Agents keep posting; during the outage they get error bodies and
    // keep their batches (only acknowledged lines are counted).
    post_rounds(3..8, &agents, now, &mut acked).await?;
    let total: usize = acked.iter().sum();
    println!(
        "nats-server crash: {total} of {} lines acknowledged; {:?} after the restart",
        AGENTS as usize * 8 * 5,
        restarted.elapsed()
    );
    // Ingest comes back and drains everything that was acknowledged.
    s.ingest = Some(cluster::start_ingest(&s.cfg, &s.boot, store(&s.cql).await?).await?);
    for (a, want) in agents.iter().zip(&acked) {
        let host = a.host_id();
        eventually(Duration::from_secs(30), || async {
            Ok((s.lines_of(&host).await? == *want).then_some(()))
        })
        .await?;
    }
    // After the restart the cluster serves agents again.
    eventually(Duration::from_secs(20), || async {
        Ok(agents[0].config().await?.agent_success().then_some(()))
    })
    .await?;
    s.stop().await
}

/// Serves a role's ops port (probes, metrics, health, its control
/// service); returns a plain-HTTP/2 gRPC channel to it.
async fn ops_channel(
    control: Option<gatehouse::serve::Control>,
    done: &gatehouse_runtime::Shutdown,
) -> anyhow::Result<tonic::transport::Channel> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", l.local_addr()?);
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(true));
    gatehouse::serve::spawn_ops(l, ready, done.clone(), control);
    Ok(tonic::transport::Channel::from_shared(url)?
        .connect()
        .await?)
}

fn with_token<T>(token: &str, msg: T) -> anyhow::Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_services_report_and_drain_over_grpc() -> anyhow::Result<()> {
    use gatehouse_proto::v1::hostd_control_client::HostdControlClient;
    use gatehouse_proto::v1::ingest_control_client::IngestControlClient;
    use gatehouse_proto::v1::{DrainRequest, StatusRequest};

    let mut s = Sandbox::start().await?;
    wait_until("three hostd split every shard", || {
        s.served() == SHARDS as usize && s.hostd.iter().all(|h| !h.leases.held().is_empty())
    })
    .await?;
    let done = gatehouse_runtime::Shutdown::new();
    let hostd_ch = ops_channel(s.hostd[0].role.control.take(), &done).await?;
    let mut hostd = HostdControlClient::new(hostd_ch.clone());

    // Without the admin token: refused.
    let e = hostd.status(StatusRequest {}).await.err().map(|e| e.code());
    assert_eq!(e, Some(tonic::Code::Unauthenticated));
    let st = hostd
        .status(with_token(&s.admin_token, StatusRequest {})?)
        .await?
        .into_inner();
    let held: Vec<u32> = s.hostd[0].leases.held().into_keys().collect();
    assert_eq!(st.shards, held);
    assert_eq!(st.shard_count, SHARDS);
    assert_eq!(st.instance, s.hostd[0].leases.me());
    assert_eq!(st.members.len(), 3, "{:?}", st.members);
    assert!(!st.draining);

    // The health service on the ops port.
    let mut health = tonic_health::pb::health_client::HealthClient::new(hostd_ch);
    let h = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await?
        .into_inner();
    assert_eq!(
        h.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // Agents served while hostd-0 drains: its shards move to the others.
    let mut agents = Vec::new();
    for n in 0..4 {
        let mut a = s.agent(n);
        anyhow::ensure!(a.enroll().await?.agent_success());
        agents.push(a);
    }
    let r = hostd
        .drain(with_token(&s.admin_token, DrainRequest {})?)
        .await?
        .into_inner();
    assert_eq!(r.released as usize, held.len());
    let st = hostd
        .status(with_token(&s.admin_token, StatusRequest {})?)
        .await?
        .into_inner();
    assert!(st.draining && st.shards.is_empty(), "{st:?}");
    wait_until("the other two serve every shard", || {
        s.hostd[1..]
            .iter()
            .map(|h| h.leases.held().len())
            .sum::<usize>()
            == SHARDS as usize
    })
    .await?;
    for a in &agents {
        anyhow::ensure!(a.config().await?.agent_success());
    }

    // Ingest reports the stream and what it wrote.
    let ingest_ch = ops_channel(s.ingest.as_mut().and_then(|i| i.control.take()), &done).await?;
    let ingest = IngestControlClient::new(ingest_ch);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let mut acked = vec![0usize; agents.len()];
    post_rounds(0..2, &agents, now, &mut acked).await?;
    let st = eventually(Duration::from_secs(20), || async {
        let st = ingest
            .clone()
            .status(with_token(&s.admin_token, StatusRequest {})?)
            .await?
            .into_inner();
        Ok((st.batches_written >= 8 && st.backlog_messages == 0).then_some(st))
    })
    .await?;
    assert_eq!(
        (st.lag, st.pending_acks, st.oldest_unacked_ms),
        (0, 0, 0),
        "{st:?}"
    );
    done.trigger();
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_edge_ingest_or_api_under_load_loses_no_acknowledged_line() -> anyhow::Result<()>
{
    let mut s = Sandbox::start().await?;
    let (mut agents, now) = s.enrolled_agents().await?;
    let mut acked = vec![0usize; agents.len()];
    post_rounds(0..2, &agents, now, &mut acked).await?;

    // Edge 0 crashes: no drain. Its agents' next posts fail (nothing is
    // acknowledged, they keep their batches); then they reach the other
    // edge, as behind a load balancer, with the same node keys.
    let (dead, edge) = s.edges.remove(0);
    edge.kill();
    post_rounds(2..3, &agents, now, &mut acked).await?;
    let survivor = s.edges[0].0.clone();
    for a in agents.iter_mut() {
        a.set_base(survivor.clone());
    }
    let _ = dead;
    post_rounds(3..5, &agents, now, &mut acked).await?;

    // Ingest crashes holding batches; a new one takes over (unacknowledged
    // batches are redelivered after the ack wait).
    if let Some(i) = s.ingest.take() {
        i.kill();
    }
    post_rounds(5..7, &agents, now, &mut acked).await?;
    s.ingest = Some(cluster::start_ingest(&s.cfg, &s.boot, store(&s.cql).await?).await?);

    // The api crashes; a new one serves operators at once (it holds nothing).
    if let Some((_, a)) = s.api.take() {
        a.kill();
    }
    let (l, url) = listener().await?;
    let role = cluster::start_api(&s.cfg, &s.boot, store(&s.cql).await?, l).await?;
    s.api = Some((url, role));
    post_rounds(7..8, &agents, now, &mut acked).await?;

    let total: usize = acked.iter().sum();
    println!(
        "edge, ingest and api crashes: {total} of {} lines acknowledged",
        AGENTS as usize * 8 * 5
    );
    assert!(
        total >= AGENTS as usize * 6 * 5,
        "too few acknowledged: {acked:?}"
    );
    // Every acknowledged line is stored. (A post cut off by the crash may
    // have been stored without its acknowledgement reaching the agent,
    // which would send it again: stored lines may exceed acknowledged
    // ones, never the lines sent.)
    for (a, want) in agents.iter().zip(&acked) {
        let host = a.host_id();
        let stored = eventually(Duration::from_secs(30), || async {
            let n = s.lines_of(&host).await?;
            Ok((n >= *want).then_some(n))
        })
        .await?;
        assert!(stored <= 8 * 5, "{host}: {stored} lines stored of 40 sent");
    }
    s.stop().await
}
