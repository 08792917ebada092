//! The cluster sandbox: a real nats-server (JetStream) on a random port, a
//! real CQL server (kassandra, in-process), two edges, three hostd, one
//! ingest and the api, each role with its own NATS connection and its own
//! store session, driven by agents over TLS through both edges.
//!
//! It shows: hosts spread over every hostd; killing a hostd during traffic
//! loses no acknowledged log line and no live-query answer, and its shards
//! are served again within the lease TTL; a live query reaches hosts on
//! every shard; a nats-server crash and restart loses no acknowledged log
//! line either. Store faults: the CQL server stopped under load and
//! started again (edges go on acknowledging log batches, which reach the
//! store once it is back; the roles that need it are unready meanwhile and
//! recover by themselves), and a log stream at its byte limit (edges
//! refuse batches with error bodies until ingest drains it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_core::ports::Store;
use gatehouse_runtime::health::Check;
use gatehouse_runtime::metrics::Metrics;
use gatehouse_store::cql_test_server::CqlTestServer;
use gatehouse_store::{ScyllaConfig, ScyllaStore};
use gatehouse_tests::sandbox::{Sandbox, SandboxConfig, StoreFactory};
use gatehouse_tests::{Agent, eventually};
use reqwest::Method;
use serde_json::json;

const AGENTS: u32 = 12;
const SHARDS: u32 = 32;

/// The sandbox over the in-process CQL server (a session per role).
async fn start() -> anyhow::Result<Sandbox> {
    Ok(start_with(|_| {}).await?.0)
}

/// [`start`] with its shape adjusted; also returns the CQL server (to take
/// it down and bring it back).
async fn start_with(
    adjust: impl FnOnce(&mut SandboxConfig),
) -> anyhow::Result<(Sandbox, Arc<CqlTestServer>)> {
    let cql = Arc::new(CqlTestServer::start().await?);
    let server = cql.clone();
    let stores: StoreFactory = Arc::new(move || {
        let cql = cql.clone();
        Box::pin(async move {
            let store = ScyllaStore::connect(&ScyllaConfig {
                contact_points: vec![cql.addr().to_string()],
                keyspace: "sandbox".into(),
                await_schema_agreement: false,
                ..ScyllaConfig::default()
            })
            .await?;
            Ok(Arc::new(store) as Arc<dyn Store>)
        })
    });
    let mut cfg = SandboxConfig {
        edges: 2,
        hostd: 3,
        shards: SHARDS,
        lease_ttl_ms: 2_000,
        lease_renew_ms: 250,
        max_log_stream_bytes: 256 * 1024 * 1024,
        ingest_ack_wait_ms: 2_000,
        data_dir: None,
        edge_port: None,
        api_port: None,
        destinations: Vec::new(),
    };
    adjust(&mut cfg);
    Ok((Sandbox::start(cfg, stores).await?, server))
}

/// Once every shard is served: `AGENTS` agents enrolled through both
/// edges, and the time (seconds) their log lines use.
async fn enrolled_agents(s: &Sandbox) -> anyhow::Result<(Vec<Agent>, i64)> {
    wait_until("three hostd split every shard", || {
        s.served() == SHARDS as usize
    })
    .await?;
    let mut agents = Vec::new();
    for n in 0..AGENTS {
        let mut a = s.agent(n);
        anyhow::ensure!(a.enroll().await?.agent_success());
        agents.push(a);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    Ok((agents, now))
}

/// Result lines stored for `host`.
async fn lines_of(s: &Sandbox, host: &str) -> anyhow::Result<usize> {
    let (code, v) = s
        .api(
            Method::GET,
            &format!("/api/v1/results?host={host}&limit=10000"),
            None,
        )
        .await?;
    anyhow::ensure!(code == 200, "results: {code} {v}");
    Ok(v["items"].as_array().map_or(0, Vec::len))
}

/// One log POST of 5 lines per agent; the lines each got acknowledged.
async fn post_round(round: i64, agents: &[Agent], now: i64) -> anyhow::Result<Vec<usize>> {
    let mut got = Vec::new();
    for (n, a) in agents.iter().enumerate() {
        let data: Vec<_> = (0..5)
            .map(|i| json!({"name": "users", "hostIdentifier": format!("agent-{n}"), "unixTime": now - 600 + round, "columns": {"uid": format!("{round}-{i}")}, "action": "added"}))
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
    let mut s = start().await?;
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
            Ok((lines_of(&s, &host).await? == *want).then_some(()))
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
    let mut s = start().await?;
    let (agents, now) = enrolled_agents(&s).await?;
    // Ingest is down: acknowledged batches wait in the stream only.
    if let Some(i) = s.ingest.take() {
        i.stop().await?;
    }
    let mut acked = vec![0usize; agents.len()];
    post_rounds(0..3, &agents, now, &mut acked).await?;
    assert_eq!(
        lines_of(&s, &agents[0].host_id()).await?,
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
    s.start_ingest().await?;
    for (a, want) in agents.iter().zip(&acked) {
        let host = a.host_id();
        eventually(Duration::from_secs(30), || async {
            Ok((lines_of(&s, &host).await? == *want).then_some(()))
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
    let metrics = Metrics::new();
    let ready = gatehouse_runtime::health::Readiness::new(&metrics);
    gatehouse::serve::spawn_ops(l, ready, done.clone(), control, metrics);
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

    let mut s = start().await?;
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
        .status(with_token(&s.boot.admin_token, StatusRequest {})?)
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
        .drain(with_token(&s.boot.admin_token, DrainRequest {})?)
        .await?
        .into_inner();
    assert_eq!(r.released as usize, held.len());
    let st = hostd
        .status(with_token(&s.boot.admin_token, StatusRequest {})?)
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
            .status(with_token(&s.boot.admin_token, StatusRequest {})?)
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
    let mut s = start().await?;
    let (mut agents, now) = enrolled_agents(&s).await?;
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
    s.start_ingest().await?;

    // The api crashes; a new one serves operators at once (it holds nothing).
    if let Some((_, a)) = s.api.take() {
        a.kill();
    }
    s.start_api().await?;
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
            let n = lines_of(&s, &host).await?;
            Ok((n >= *want).then_some(n))
        })
        .await?;
        assert!(stored <= 8 * 5, "{host}: {stored} lines stored of 40 sent");
    }
    s.stop().await
}

/// Whether each role is ready: (edges, hostd, ingest, api).
fn readiness(s: &Sandbox) -> (Vec<bool>, Vec<bool>, bool, bool) {
    let ready = |r: &gatehouse::cluster::Role| r.readiness.as_ref().is_some_and(|r| r.is_ready());
    (
        s.edges.iter().map(|(_, r)| ready(r)).collect(),
        s.hostd.iter().map(|h| ready(&h.role)).collect(),
        s.ingest.as_ref().is_some_and(ready),
        s.api.as_ref().is_some_and(|(_, r)| ready(r)),
    )
}

/// A role's readiness check `name`, as its `/readyz` shows it.
fn check(r: &gatehouse::cluster::Role, name: &str) -> Option<Check> {
    r.readiness
        .as_ref()
        .and_then(|r| r.report().checks.get(name).cloned())
}

/// ScyllaDB (here the CQL server) goes down for a while under load and
/// comes back on the same address with its data: edges go on
/// acknowledging log batches (the stream holds them); hostd, ingest and the
/// api are unready naming the store, the api answers 503, enrollment gets
/// the osquery error body; afterwards every role is ready again without a
/// restart, and every acknowledged line is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_is_ridden_out_and_recovered_from_without_a_restart() -> anyhow::Result<()> {
    let (s, cql) = start_with(|_| {}).await?;
    let (agents, now) = enrolled_agents(&s).await?;
    let mut acked = vec![0usize; agents.len()];
    post_rounds(0..2, &agents, now, &mut acked).await?;
    wait_until("every role ready", || {
        let (e, h, i, a) = readiness(&s);
        e.iter().chain(&h).all(|r| *r) && i && a
    })
    .await?;

    cql.stop().await;
    let down = Instant::now();
    gatehouse_testkit::eventually(
        "hostd, ingest and the api unready",
        Duration::from_secs(30),
        async || {
            let (_, h, i, a) = readiness(&s);
            Ok::<_, std::convert::Infallible>((h.iter().all(|r| !r) && !i && !a).then_some(()))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (edges, ..) = readiness(&s);
    assert!(edges.iter().all(|r| *r), "edges stay ready: {edges:?}");
    let why = check(&s.api.as_ref().expect("api").1, "store");
    assert!(
        matches!(&why, Some(Check::Failing(m)) if m.contains("ScyllaDB")),
        "the api names the store: {why:?}"
    );
    let (code, body) = s.api(Method::GET, "/api/v1/hosts", None).await?;
    assert_eq!(
        code, 503,
        "operators are told the store is unavailable: {body}"
    );

    // Agents keep logging: the edges acknowledge what the stream holds.
    let before: usize = acked.iter().sum();
    post_rounds(2..6, &agents, now, &mut acked).await?;
    let during: usize = acked.iter().sum::<usize>() - before;
    assert_eq!(
        during,
        AGENTS as usize * 4 * 5,
        "every batch acknowledged during the outage: {acked:?}"
    );
    // Enrollment needs the store: an error body, never a success it did
    // not store.
    let r = s.agent(AGENTS).enroll().await?;
    assert!(r.is_error_body() && !r.agent_success(), "{r:?}");

    cql.restart().await?;
    println!("CQL server down for {:?}", down.elapsed());
    gatehouse_testkit::eventually(
        "every role ready again",
        Duration::from_secs(60),
        async || {
            let (e, h, i, a) = readiness(&s);
            Ok::<_, std::convert::Infallible>(
                (e.iter().chain(&h).all(|r| *r) && i && a).then_some(()),
            )
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    eventually(Duration::from_secs(30), || async {
        let mut newcomer = s.agent(AGENTS);
        Ok(newcomer.enroll().await?.agent_success().then_some(()))
    })
    .await?;
    post_rounds(6..7, &agents, now, &mut acked).await?;
    // Exactly once: the stored count equals what was acknowledged (each
    // round's lines are distinct, a re-sent batch is stored once).
    for (a, want) in agents.iter().zip(&acked) {
        let host = a.host_id();
        eventually(Duration::from_secs(60), || async {
            Ok((lines_of(&s, &host).await? == *want).then_some(()))
        })
        .await?;
    }
    assert_eq!(acked.iter().sum::<usize>(), AGENTS as usize * 7 * 5);
    s.stop().await
}

/// The log stream at its byte limit (ingest is down): edges refuse log
/// batches with the osquery error body (the agent keeps them), stay ready
/// and say why; once ingest drains the stream, batches are acknowledged
/// again, and every acknowledged line is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_log_stream_refuses_batches_until_ingest_drains_it() -> anyhow::Result<()> {
    let (mut s, _cql) = start_with(|c| c.max_log_stream_bytes = 48 * 1024).await?;
    let (agents, now) = enrolled_agents(&s).await?;
    if let Some(i) = s.ingest.take() {
        i.stop().await?;
    }
    let mut acked = vec![0usize; agents.len()];
    let mut round = 0;
    let refused = loop {
        anyhow::ensure!(round < 400, "the stream never filled: {acked:?}");
        let a = &agents[round as usize % agents.len()];
        let data: Vec<_> = (0..5)
            .map(|i| json!({"name": "users", "unixTime": now - 600, "columns": {"uid": format!("{round}-{i}")}, "action": "added"}))
            .collect();
        let r = a.log("result", json!(data)).await?;
        if r.agent_success() {
            acked[round as usize % agents.len()] += 5;
        } else {
            break r;
        }
        round += 1;
    };
    assert!(
        refused.is_error_body() && !refused.node_invalid(),
        "a refusal is the error body (the agent keeps its batch): {refused:?}"
    );
    let e = (round as usize % agents.len()) % s.edges.len();
    eventually(Duration::from_secs(10), || async {
        Ok(matches!(check(&s.edges[e].1, "log_stream"), Some(Check::Degraded(m)) if m.contains("log stream full")).then_some(()))
    })
    .await?;
    assert!(
        s.edges[e]
            .1
            .readiness
            .as_ref()
            .is_some_and(|r| r.is_ready()),
        "a full stream does not take the edge out of service"
    );
    println!(
        "log stream full after {} acknowledged lines",
        acked.iter().sum::<usize>()
    );

    s.start_ingest().await?;
    // The agents' next posts are acknowledged once ingest made room.
    for (n, a) in agents.iter().enumerate() {
        eventually(Duration::from_secs(30), || async {
            let data: Vec<_> = (0..5)
                .map(|i| json!({"name": "users", "unixTime": now - 600, "columns": {"uid": format!("after-{n}-{i}")}, "action": "added"}))
                .collect();
            Ok(a.log("result", json!(data)).await?.agent_success().then_some(()))
        })
        .await?;
        acked[n] += 5;
    }
    eventually(Duration::from_secs(10), || async {
        Ok((check(&s.edges[e].1, "log_stream") == Some(Check::Ok)).then_some(()))
    })
    .await?;
    for (a, want) in agents.iter().zip(&acked) {
        let host = a.host_id();
        eventually(Duration::from_secs(30), || async {
            Ok((lines_of(&s, &host).await? == *want).then_some(()))
        })
        .await?;
    }
    s.stop().await
}

/// Every line in a file destination's files and every JSON body a webhook
/// received, keyed by host and uid (duplicates kept).
fn forwarded_keys(lines: impl IntoIterator<Item = serde_json::Value>) -> Vec<(String, String)> {
    lines
        .into_iter()
        .map(|v| {
            (
                v["hostIdentifier"].as_str().unwrap_or_default().to_owned(),
                v["columns"]["uid"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn file_keys(dir: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(dir.join("osqueryd.results.log")).unwrap_or_default();
    let mut out = Vec::new();
    for l in text.lines() {
        out.push(serde_json::from_str(l)?);
    }
    Ok(forwarded_keys(out))
}

fn hook_keys(hook: &gatehouse_tests::webhook::WebhookReceiver) -> Vec<(String, String)> {
    forwarded_keys(
        hook.hits("/lines")
            .into_iter()
            .filter(|h| h.accepted)
            .flat_map(|h| h.body.as_array().cloned().unwrap_or_default()),
    )
}

/// No key missing, none twice beyond one batch (a takeover may deliver the
/// batch in flight again).
fn check_once(what: &str, keys: &[(String, String)], want: usize) -> anyhow::Result<()> {
    let unique: std::collections::BTreeSet<_> = keys.iter().collect();
    anyhow::ensure!(
        unique.len() == want,
        "{what}: {} distinct lines, want {want}",
        unique.len()
    );
    anyhow::ensure!(
        keys.len() - unique.len() <= 500,
        "{what}: {} duplicates",
        keys.len() - unique.len()
    );
    Ok(())
}

/// Log destinations in the cluster: each stored line reaches a destination
/// of the configuration file and one defined through the api, from the
/// forward stream, delivered by the one ingest holding the forward lease;
/// that ingest crashes and the other takes over (a paused destination
/// stays paused), and the api lists, pauses, resumes and deletes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_are_run_by_one_ingest_and_steered_through_the_api() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let files = dir.path().join("files");
    let shipper: gatehouse_forward::DestinationConfig = serde_json::from_value(json!({
        "name": "shipper",
        "file": {"dir": files},
        "pacing": {"linger_ms": 0}
    }))?;
    let (mut s, _cql) = start_with(|c| c.destinations = vec![shipper]).await?;
    let (agents, now) = enrolled_agents(&s).await?;
    let mut acked = vec![0usize; agents.len()];
    post_rounds(0..3, &agents, now, &mut acked).await?;
    let first: usize = acked.iter().sum();
    anyhow::ensure!(first > 0, "nothing acknowledged");
    eventually(Duration::from_secs(30), || async {
        Ok((file_keys(&files)?.len() >= first).then_some(()))
    })
    .await?;
    check_once("file", &file_keys(&files)?, first)?;

    // Defined through the api, from the oldest retained line.
    let hook = gatehouse_tests::webhook::WebhookReceiver::start().await?;
    let def = json!({
        "webhook": {"url": format!("{}/lines", hook.url), "secret": "hook-secret"},
        "start": "oldest",
        "pacing": {"linger_ms": 0}
    });
    let (code, v) = s
        .api(Method::PUT, "/api/v1/destinations/hook", Some(def.clone()))
        .await?;
    anyhow::ensure!(code == 200, "put: {code} {v}");
    anyhow::ensure!(v["source"] == "api" && v["kind"] == "webhook", "{v}");
    anyhow::ensure!(!v.to_string().contains("hook-secret"), "secret shown: {v}");
    // Bad input names the field; the configuration file's is not the api's.
    let (code, v) = s
        .api(
            Method::PUT,
            "/api/v1/destinations/bad",
            Some(json!({"webhook": {"url": "ftp://x"}})),
        )
        .await?;
    anyhow::ensure!(
        code == 400 && v.to_string().contains("webhook.url"),
        "{code} {v}"
    );
    let (code, v) = s
        .api(
            Method::PUT,
            "/api/v1/destinations/shipper",
            Some(json!({"file": {"dir": "x"}})),
        )
        .await?;
    anyhow::ensure!(code == 409 || code == 400, "{code} {v}");
    eventually(Duration::from_secs(30), || async {
        Ok((hook_keys(&hook).len() >= first).then_some(()))
    })
    .await?;
    check_once("webhook", &hook_keys(&hook), first)?;
    eventually(Duration::from_secs(20), || async {
        let (_, v) = s.api(Method::GET, "/api/v1/destinations", None).await?;
        let names: Vec<(String, String)> = v
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|d| {
                        (
                            d["name"].as_str().unwrap_or_default().to_owned(),
                            d["source"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok((names
            == [
                ("hook".to_owned(), "api".to_owned()),
                ("shipper".to_owned(), "config".to_owned()),
            ])
        .then_some(()))
    })
    .await?;

    // Paused through the api; once the forwarding ingest applied it, that
    // ingest crashes and a second one takes the forward lease over.
    let (code, v) = s
        .api(Method::POST, "/api/v1/destinations/shipper/pause", None)
        .await?;
    anyhow::ensure!(code == 200 && v["paused"] == true, "{code} {v}");
    let second = s.another_ingest().await?;
    if let Some(i) = s.ingest.take() {
        i.kill();
    }
    post_rounds(3..6, &agents, now, &mut acked).await?;
    let total: usize = acked.iter().sum();
    eventually(Duration::from_secs(40), || async {
        Ok((hook_keys(&hook).len() >= total).then_some(()))
    })
    .await?;
    check_once("webhook after the takeover", &hook_keys(&hook), total)?;
    anyhow::ensure!(
        file_keys(&files)?
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            == first,
        "the paused destination stayed paused across the takeover"
    );
    let (code, v) = s
        .api(Method::POST, "/api/v1/destinations/shipper/resume", None)
        .await?;
    anyhow::ensure!(code == 200 && v["paused"] == false, "{code} {v}");
    eventually(Duration::from_secs(30), || async {
        Ok((file_keys(&files)?.len() >= total).then_some(()))
    })
    .await?;
    check_once("file after resuming", &file_keys(&files)?, total)?;

    // The api's audit log reaches a destination that takes it.
    let ops = gatehouse_tests::webhook::WebhookReceiver::start().await?;
    let (code, v) = s
        .api(
            Method::PUT,
            "/api/v1/destinations/ops",
            Some(json!({"webhook": {"url": format!("{}/audit", ops.url)}, "filter": {"logs": ["audit"]}, "pacing": {"linger_ms": 0}})),
        )
        .await?;
    anyhow::ensure!(code == 200, "put: {code} {v}");
    eventually(Duration::from_secs(30), || async {
        // Paused and resumed again until the api has seen the destination
        // (within 2 s) and the record of it reached the receiver.
        s.api(Method::POST, "/api/v1/destinations/shipper/resume", None)
            .await?;
        let seen = ops
            .hits("/audit")
            .iter()
            .flat_map(|h| h.body.as_array().cloned().unwrap_or_default())
            .any(|e| e["action"] == "destination.resume" && e["outcome"] == "accepted");
        Ok(seen.then_some(()))
    })
    .await?;
    let (code, v) = s
        .api(Method::DELETE, "/api/v1/destinations/ops", None)
        .await?;
    anyhow::ensure!(code == 204, "delete: {code} {v}");
    let (code, v) = s
        .api(Method::DELETE, "/api/v1/destinations/hook", None)
        .await?;
    anyhow::ensure!(code == 204, "delete: {code} {v}");
    eventually(Duration::from_secs(20), || async {
        let (_, v) = s.api(Method::GET, "/api/v1/destinations", None).await?;
        Ok((v.as_array().map(Vec::len) == Some(1)).then_some(()))
    })
    .await?;
    second.stop().await?;
    s.stop().await
}
