//! Shard leases: members split every shard exactly once, a joining member
//! takes its share, a leaving one hands over, a crashed one's shards are
//! taken after expiry, and fencing tokens grow so a deposed holder learns
//! it lost the shard. The expiry scenarios run over both lease adapters:
//! JetStream KV against a real nats-server (its own expiry sweep), and the
//! in-process store with a clock the test moves past the TTL.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_bus::leases::{InProcLeases, LeaseTtls};
use gatehouse_bus::nats_test_server::NatsTestServer;
use gatehouse_core::time::ShiftedClock;
use gatehouse_hostd::leases::{LeaseConfig, Leases};

const SHARDS: u32 = 64;

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    // Display, not Debug: the error says what failed in words.
    match r {
        Ok(v) => v,
        Err(e) => panic!("call failed: {e}"),
    }
}

fn cfg() -> LeaseConfig {
    LeaseConfig {
        shards: SHARDS,
        ttl: Duration::from_secs(2),
        renew_every: Duration::from_millis(300),
        member_ttl: Duration::from_secs(2),
        replicas: 1,
    }
}

async fn member(server: &NatsTestServer, name: &str) -> Leases {
    let client = ok(async_nats::connect(server.url()).await);
    ok(Leases::open(client, name, cfg()).await)
}

/// Two members over one in-process store, and the clock it reads.
fn in_process_pair() -> (Leases, Leases, Arc<ShiftedClock>) {
    let clock = Arc::new(ShiftedClock::new());
    let c = cfg();
    let store = Arc::new(InProcLeases::new(
        LeaseTtls {
            lease: c.ttl,
            member: c.member_ttl,
        },
        clock.clone(),
    ));
    (
        Leases::new(store.clone(), "hostd-a", c.clone()),
        Leases::new(store, "hostd-b", c),
        clock,
    )
}

/// Runs rebalance rounds (handing over at once) until nothing changes.
async fn settle(members: &[&Leases]) {
    // The first round only announces members; later rounds see them all.
    let mut round = 0;
    gatehouse_testkit::until("the shards settled", Duration::from_secs(20), async || {
        let mut changed = round == 0;
        round += 1;
        for m in members {
            let r = ok(m.rebalance().await);
            for shard in &r.to_release {
                ok(m.release(*shard).await);
            }
            changed |= !r.acquired.is_empty() || !r.to_release.is_empty() || !r.lost.is_empty();
        }
        let covered: usize = members.iter().map(|m| m.held().len()).sum();
        !changed && covered == SHARDS as usize
    })
    .await;
}

fn assert_partition(members: &[&Leases]) {
    let mut seen = BTreeSet::new();
    for m in members {
        for shard in m.held().into_keys() {
            assert!(seen.insert(shard), "shard {shard} held twice");
        }
    }
    assert_eq!(seen.len(), SHARDS as usize, "every shard has an owner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_split_shards_join_and_leave() {
    let server = ok(NatsTestServer::start());
    let a = member(&server, "hostd-a").await;
    let b = member(&server, "hostd-b").await;
    settle(&[&a, &b]).await;
    assert_partition(&[&a, &b]);
    let before_a = a.held();

    // A third member joins and takes its share; the others keep the rest
    // (rendezvous hashing moves only what the newcomer prefers).
    let c = member(&server, "hostd-c").await;
    settle(&[&a, &b, &c]).await;
    assert_partition(&[&a, &b, &c]);
    for m in [&a, &b, &c] {
        println!("{} holds {} shards", m.me(), m.held().len());
    }
    for m in [&a, &b, &c] {
        let n = m.held().len();
        assert!((10..=32).contains(&n), "{} holds {n} of {SHARDS}", m.me());
    }
    assert!(
        a.held().keys().all(|s| before_a.contains_key(s)),
        "a only gave shards up; it took none from b"
    );

    // c leaves cleanly: releases its leases and its membership.
    c.release_all().await;
    settle(&[&a, &b]).await;
    assert_partition(&[&a, &b]);
}

/// b crashes (no renewals, no release, no goodbye); once `past_ttl` ran,
/// a takes every orphaned shard with a larger token than b held.
async fn crashed_members_shards_are_taken<F, Fut>(a: Leases, b: Leases, past_ttl: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    settle(&[&a, &b]).await;
    let b_shards = b.held();
    assert!(!b_shards.is_empty());
    drop(b);
    past_ttl().await;
    // Rounds until a holds everything (each round takes every free shard;
    // a is now the only member). A server sweeps each key on its own
    // schedule, so some of b's leases may outlive its membership briefly.
    gatehouse_testkit::until(
        "orphaned shards taken over",
        Duration::from_secs(20),
        async || {
            let r = ok(a.rebalance().await);
            for shard in &r.to_release {
                ok(a.release(*shard).await);
            }
            a.held().len() == SHARDS as usize
        },
    )
    .await;
    let held = a.held();
    for (shard, old) in b_shards {
        assert!(
            held[&shard] > old,
            "shard {shard}: token {} after {old}",
            held[&shard]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_members_shards_are_taken_after_expiry_in_jetstream() {
    let server = ok(NatsTestServer::start());
    let a = member(&server, "hostd-a").await;
    let b = member(&server, "hostd-b").await;
    let probe = member(&server, "probe").await;
    // The server expires entries on its own sweep: wait (bounded) until
    // b's membership is gone; its leases, older, are gone too.
    let past_ttl = || {
        gatehouse_testkit::until(
            "b's membership expires",
            Duration::from_secs(20),
            async || !ok(probe.members().await).iter().any(|m| m == "hostd-b"),
        )
    };
    crashed_members_shards_are_taken(a, b, past_ttl).await;
}

#[tokio::test]
async fn a_crashed_members_shards_are_taken_after_expiry_in_process() {
    let (a, b, clock) = in_process_pair();
    let past_ttl = || async { clock.advance(Duration::from_secs(3)) };
    crashed_members_shards_are_taken(a, b, past_ttl).await;
}

/// a stalls past the lease TTL (`past_ttl`); b takes the shard with a
/// larger token; a learns on its next renewal and cannot release b's lease.
async fn a_deposed_holder_learns_it<F, Fut>(a: Leases, b: Leases, past_ttl: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some(t1) = ok(a.try_acquire(5).await) else {
        panic!("shard 5 was free")
    };
    assert_eq!(ok(b.try_acquire(5).await), None, "one holder at a time");
    // Renewing moves the token forward.
    assert!(a.renew().await.is_empty());
    let t1b = a.token(5).unwrap_or_default();
    assert!(t1b > t1);
    past_ttl().await;
    let Some(t2) = ok(b.try_acquire(5).await) else {
        panic!("the stalled lease expired")
    };
    assert!(
        t2 > t1b,
        "the new holder's token {t2} exceeds the old {t1b}"
    );
    // a wakes up: its renewal fails, it drops the shard.
    assert_eq!(a.renew().await, vec![5]);
    assert_eq!(a.token(5), None);
    // Its late release cannot take the shard from b.
    ok(a.release(5).await);
    assert!(b.renew().await.is_empty());
    assert!(b.token(5).is_some_and(|t| t > t2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_holder_learns_it_and_tokens_only_grow_in_jetstream() {
    let server = ok(NatsTestServer::start());
    let a = member(&server, "hostd-a").await;
    let b = member(&server, "hostd-b").await;
    let probe = member(&server, "probe").await;
    // Bounded wait until the server's sweep dropped a's lease on shard 5.
    let past_ttl = || async {
        ok(gatehouse_testkit::eventually(
            "the stalled lease expires",
            Duration::from_secs(20),
            async || probe.try_acquire(5).await,
        )
        .await);
        // The probe held it only to see it free: give it back.
        ok(probe.release(5).await);
    };
    a_deposed_holder_learns_it(a, b, past_ttl).await;
}

#[tokio::test]
async fn a_deposed_holder_learns_it_and_tokens_only_grow_in_process() {
    let (a, b, clock) = in_process_pair();
    let past_ttl = || async { clock.advance(Duration::from_secs(3)) };
    a_deposed_holder_learns_it(a, b, past_ttl).await;
}
