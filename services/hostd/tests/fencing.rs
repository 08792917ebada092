//! Two owners of one shard, forced: hostd `a` holds the shard, stalls past
//! its lease, and `b` takes the shard over while `a` still believes it owns
//! it (it has not renewed yet). Real leases on a real nats-server, one real
//! store shared by both, the production actors. Whatever `a`'s stale actor
//! tries to write after `b` wrote the host is fenced off by the store: `a`
//! answers "shard moved" (the client retries at `b`) and steps down, and
//! the store keeps `b`'s state.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_bus::hostrpc::failure_kind;
use gatehouse_bus::nats_test_server::NatsTestServer;
use gatehouse_core::HostId;
use gatehouse_core::ids::shard_of;
use gatehouse_core::nodekey::NodeKeys;
use gatehouse_core::ports::Store;
use gatehouse_hostd::actor::ActorSettings;
use gatehouse_hostd::leases::{LeaseConfig, Leases};
use gatehouse_hostd::service::{Router, fenced_context};
use gatehouse_hostd::sharded::lease_fences;
use gatehouse_proto::v1::{
    ConfigOp, EnrollOp, FailureKind, HostRequest, RotateKeyOp, SetLabelsOp, TouchOp, host_reply,
    host_request,
};
use gatehouse_store::EmbeddedStore;

const SHARDS: u32 = 8;

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    // Display, not Debug: the error says what failed in words.
    match r {
        Ok(v) => v,
        Err(e) => panic!("call failed: {e}"),
    }
}

async fn hostd(
    server: &NatsTestServer,
    name: &str,
    store: &Arc<dyn Store>,
) -> (Arc<Leases>, Router) {
    let client = ok(async_nats::connect(server.url()).await);
    let leases = Arc::new(ok(Leases::open(
        client,
        name,
        LeaseConfig {
            shards: SHARDS,
            ttl: Duration::from_secs(2),
            renew_every: Duration::from_millis(500),
            member_ttl: Duration::from_secs(2),
            replicas: 1,
        },
    )
    .await));
    let ctx = fenced_context(
        store.clone(),
        NodeKeys::new(b"0123456789abcdef0123456789abcdef"),
        ActorSettings {
            last_seen_flush: Duration::from_secs(3600),
            ..ActorSettings::default()
        },
        lease_fences(leases.clone(), SHARDS),
    );
    (leases, Router::new(ctx, Duration::from_secs(5)))
}

fn moved(r: &host_reply::Result) -> bool {
    matches!(r, host_reply::Result::Failure(f) if failure_kind(f) == FailureKind::ShardMoved)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_owner_racing_its_successor_never_overwrites_it() {
    let server = ok(NatsTestServer::start());
    let dir = ok(tempfile::tempdir());
    let store: Arc<dyn Store> = Arc::new(ok(EmbeddedStore::open(dir.path())));
    let (a_leases, a) = hostd(&server, "hostd-a", &store).await;
    let (b_leases, b) = hostd(&server, "hostd-b", &store).await;
    let host = HostId::from_identity("hw:fenced-host");
    let shard = shard_of(&host, SHARDS);

    // a owns the shard and serves the host: enrollment, labels.
    let t_a = ok(a_leases.try_acquire(shard).await).expect("shard taken");
    let enroll = host_request::Op::Enroll(EnrollOp {
        identity: "hw:fenced-host".into(),
        host_identifier: "fenced".into(),
        platform_type: "9".into(),
        host_details_json: b"{}".to_vec().into(),
        remote_addr: "10.0.0.9".into(),
        labels: vec![],
    });
    assert!(matches!(
        a.route(HostRequest::new(&host, 0, enroll)).await,
        host_reply::Result::Enrolled(k) if k.epoch == 1
    ));
    let set_labels = |labels: &[&str]| {
        host_request::Op::SetLabels(SetLabelsOp {
            labels: labels.iter().map(|l| l.to_string()).collect(),
        })
    };
    assert!(matches!(
        a.route(HostRequest::new(&host, 0, set_labels(&["from-a"])))
            .await,
        host_reply::Result::Ok(_)
    ));

    // a stalls (no renewals); its lease expires and b takes the shard.
    let t_b = ok(gatehouse_testkit::eventually(
        "a's lease expires and b takes the shard",
        Duration::from_secs(20),
        async || b_leases.try_acquire(shard).await,
    )
    .await);
    assert!(t_b > t_a);
    // The race: both believe they own the shard.
    assert_eq!(a_leases.token(shard), Some(t_a));
    assert_eq!(b_leases.token(shard), Some(t_b));

    // b serves the host: an operator rotates its key.
    assert!(matches!(
        b.route(HostRequest::new(&host, 0, host_request::Op::RotateKey(RotateKeyOp { revoke: false })))
            .await,
        host_reply::Result::Key(k) if k.epoch == 2
    ));

    // a's stale actor (still in memory with epoch 1) tries to write: an
    // operator's label change, then an agent's live-query answer. Both are
    // fenced off; a tells the client the shard moved and steps down.
    let stale = a
        .route(HostRequest::new(&host, 0, set_labels(&["stale-from-a"])))
        .await;
    assert!(moved(&stale), "stale label write answered {stale:?}");
    gatehouse_testkit::until(
        "the deposed actor stops",
        Duration::from_secs(5),
        async || a.live_actors() == 0,
    )
    .await;
    // A new actor in a is rebuilt from the store (epoch 2, b's state); its
    // writes are fenced too. An agent's config poll is answered (the config
    // is the fleet's, not a's), but the config version it would record is
    // fenced off and the actor steps down again.
    let config = a
        .route(HostRequest::new(
            &host,
            2,
            host_request::Op::Config(ConfigOp {}),
        ))
        .await;
    assert!(
        matches!(config, host_reply::Result::Config(_)),
        "config poll answered {config:?}"
    );
    gatehouse_testkit::until(
        "the deposed actor stops",
        Duration::from_secs(5),
        async || a.live_actors() == 0,
    )
    .await;
    let stored = ok(store.get_host(&host).await).expect("host missing");
    assert_eq!(stored.config_hash, "", "a's config version write landed");
    let late = a
        .route(HostRequest::new(&host, 0, set_labels(&["late-from-a"])))
        .await;
    assert!(moved(&late), "a's second stale write answered {late:?}");

    let stored = ok(store.get_host(&host).await).expect("host missing");
    assert_eq!(stored.key_epoch, 2, "b's key rotation was overwritten");
    assert_eq!(stored.labels, vec!["from-a".to_owned()]);

    // b keeps serving: the agent with its new key, and more writes.
    assert!(matches!(
        b.route(HostRequest::new(
            &host,
            2,
            host_request::Op::Touch(TouchOp {})
        ))
        .await,
        host_reply::Result::Ok(_)
    ));
    assert!(matches!(
        b.route(HostRequest::new(&host, 0, set_labels(&["from-b"])))
            .await,
        host_reply::Result::Ok(_)
    ));
    let stored = ok(store.get_host(&host).await).expect("host missing");
    assert_eq!(stored.labels, vec!["from-b".to_owned()]);

    // a finally renews and learns it lost the shard: without a token its
    // actors do not even try to write.
    assert_eq!(a_leases.renew().await, vec![shard]);
    assert_eq!(a_leases.token(shard), None);
    assert!(moved(
        &a.route(HostRequest::new(&host, 0, set_labels(&["after-renewal"])))
            .await
    ));
    let stored = ok(store.get_host(&host).await).expect("host missing");
    assert_eq!(stored.labels, vec!["from-b".to_owned()]);
}
