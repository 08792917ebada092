//! Sharded hostd over a real nats-server: hosts spread over every hostd;
//! one that joins takes its share, one that drains hands its shards over
//! and stays out of the ring until it stops, one that crashes has its
//! shards served again after the lease TTL; callers keep being answered throughout (within their budget).
//! The instances share one store, as cluster processes share ScyllaDB.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_bus::nats_test_server::NatsTestServer;
use gatehouse_bus::{HostClient, NatsBus, NatsConfig};
use gatehouse_core::HostId;
use gatehouse_core::nodekey::NodeKeys;
use gatehouse_core::ports::{Bus, Store};
use gatehouse_hostd::actor::HostCtx;
use gatehouse_hostd::leases::{LeaseConfig, Leases};
use gatehouse_hostd::sharded::served;
use gatehouse_hostd::{HostdConfig, HostdDeps, Ownership, run};
use gatehouse_proto::v1::{EnrollOp, TouchOp, host_reply, host_request};
use gatehouse_runtime::Shutdown;
use gatehouse_runtime::metrics::Metrics;
use gatehouse_store::EmbeddedStore;

const SHARDS: u32 = 16;
const HOSTS: usize = 40;

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    // Display, not Debug: the error says what failed in words.
    match r {
        Ok(v) => v,
        Err(e) => panic!("call failed: {e}"),
    }
}

fn lease_cfg() -> LeaseConfig {
    LeaseConfig {
        shards: SHARDS,
        ttl: Duration::from_secs(2),
        renew_every: Duration::from_millis(250),
        member_ttl: Duration::from_secs(2),
        replicas: 1,
    }
}

async fn bus(server: &NatsTestServer, name: &str) -> Arc<dyn Bus> {
    Arc::new(ok(NatsBus::connect(&NatsConfig {
        servers: vec![server.url()],
        name: name.into(),
        ..NatsConfig::default()
    })
    .await))
}

struct Hostd {
    ctx: Arc<HostCtx>,
    leases: Arc<Leases>,
    drain: Shutdown,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

async fn hostd(server: &NatsTestServer, store: &Arc<dyn Store>, name: &str) -> Hostd {
    let client = ok(async_nats::connect(server.url()).await);
    let leases = Arc::new(ok(Leases::open(client, name, lease_cfg()).await));
    let deps = HostdDeps::new(
        store.clone(),
        NodeKeys::new(b"0123456789abcdef0123456789abcdef"),
        Default::default(),
        bus(server, name).await,
        Ownership::Leased(leases.clone()),
        Metrics::new(),
    );
    let (ctx, drain, shutdown) = (deps.ctx.clone(), deps.drain.clone(), Shutdown::new());
    let run = run(HostdConfig::default(), deps, shutdown.clone());
    let task = tokio::spawn(async move { ok(run.await) });
    Hostd {
        ctx,
        leases,
        drain,
        shutdown,
        task,
    }
}

fn enroll(n: usize) -> host_request::Op {
    host_request::Op::Enroll(EnrollOp {
        identity: format!("hw:sharded-{n}"),
        host_identifier: format!("h{n}"),
        platform_type: "9".into(),
        host_details_json: b"{}".to_vec().into(),
        remote_addr: "10.0.0.1".into(),
        labels: vec![],
    })
}

/// Touches every host; returns the slowest call.
async fn touch_all(client: &HostClient, hosts: &[HostId]) -> Duration {
    let mut slowest = Duration::ZERO;
    for h in hosts {
        let t = Instant::now();
        match ok(client.call(h, 1, host_request::Op::Touch(TouchOp {})).await) {
            host_reply::Result::Ok(_) => {}
            other => panic!("touch {h}: {other:?}"),
        }
        slowest = slowest.max(t.elapsed());
    }
    slowest
}

async fn wait_until(what: &str, f: impl Fn() -> bool) {
    gatehouse_testkit::until(what, Duration::from_secs(20), async || f()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_spread_move_on_join_leave_and_crash_without_failed_calls() {
    let server = ok(NatsTestServer::start());
    let dir = ok(tempfile::tempdir());
    let store: Arc<dyn Store> = Arc::new(ok(EmbeddedStore::open(dir.path())));
    let client = HostClient::new(
        bus(&server, "edge").await,
        SHARDS,
        Duration::from_secs(2),
        Duration::from_secs(12),
    );

    let a = hostd(&server, &store, "hostd-a").await;
    let b = hostd(&server, &store, "hostd-b").await;
    // Settled: each holds the shards it prefers (until then lease rounds
    // hand shards over, stopping their actors).
    let members = ["hostd-a".to_owned(), "hostd-b".to_owned()];
    wait_until("a and b split the shards as they prefer", || {
        (0..SHARDS).all(|shard| {
            let holder = match gatehouse_hostd::leases::preferred(shard, &members) {
                Some("hostd-a") => &a.leases,
                _ => &b.leases,
            };
            served(holder).contains(&shard)
        }) && !served(&a.leases).is_empty()
            && !served(&b.leases).is_empty()
    })
    .await;

    let mut hosts = Vec::new();
    for n in 0..HOSTS {
        let h = HostId::from_identity(&format!("hw:sharded-{n}"));
        match ok(client.call(&h, 0, enroll(n)).await) {
            host_reply::Result::Enrolled(k) => assert_eq!(k.epoch, 1),
            other => panic!("enroll: {other:?}"),
        }
        hosts.push(h);
    }
    let (on_a, on_b) = (a.ctx.registry.len(), b.ctx.registry.len());
    assert_eq!(on_a + on_b, HOSTS, "one actor per host");
    assert!(
        on_a > 0 && on_b > 0,
        "hosts spread over both: {on_a}/{on_b}"
    );

    // A third hostd joins: it takes its share; every call still succeeds.
    let c = hostd(&server, &store, "hostd-c").await;
    wait_until("c takes a share", || !served(&c.leases).is_empty()).await;
    let slowest = touch_all(&client, &hosts).await;
    println!("calls during the join: slowest {slowest:?}");

    // a drains: hands its shards over and stays up, out of the ring.
    a.drain.trigger();
    wait_until("b and c serve every shard", || {
        served(&b.leases).len() + served(&c.leases).len() == SHARDS as usize
    })
    .await;
    let slowest = touch_all(&client, &hosts).await;
    println!("calls after a drained: slowest {slowest:?}");
    assert!(served(&a.leases).is_empty());
    assert_eq!(a.ctx.registry.len(), 0, "a drained its actors");
    assert!(!a.task.is_finished(), "a drained hostd keeps running");
    // Several lease rounds later on b and c, a still serves nothing and ran
    // no round of its own: it left the ring.
    let (a_rounds, b_rounds, c_rounds) = (a.leases.rounds(), b.leases.rounds(), c.leases.rounds());
    wait_until("b and c ran three more lease rounds", || {
        b.leases.rounds() >= b_rounds + 3 && c.leases.rounds() >= c_rounds + 3
    })
    .await;
    assert!(
        served(&a.leases).is_empty(),
        "a drained hostd took shards back"
    );
    assert_eq!(
        a.leases.rounds(),
        a_rounds,
        "a drained hostd runs lease rounds"
    );
    // Then it stops cleanly.
    a.shutdown.trigger();
    ok(a.task.await);

    // b crashes (no handover): its shards are served again after the TTL.
    let b_shards = served(&b.leases);
    b.task.abort();
    drop(b);
    let crashed = Instant::now();
    let slowest = touch_all(&client, &hosts).await;
    wait_until("c serves every shard", || {
        served(&c.leases).len() == SHARDS as usize
    })
    .await;
    let recovered = crashed.elapsed();
    println!(
        "b crashed holding {} shards: served again after {recovered:?}; slowest call {slowest:?}",
        b_shards.len()
    );
    assert!(
        slowest < Duration::from_secs(12),
        "a call outlived its budget"
    );
    c.shutdown.trigger();
    ok(c.task.await);
}
