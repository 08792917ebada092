//! The all-in-one's edge reaches its own hostd without the bus (ADR 0054):
//! the in-process route answers only while `run` serves every shard; before
//! hostd starts and after it stops it gives requests back and the client
//! asks over the bus; a hostd whose shards are leased never opens it.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_bus::hostrpc::LocalHosts;
use gatehouse_bus::{HostClient, InProcBus, RpcError};
use gatehouse_core::HostId;
use gatehouse_core::nodekey::NodeKeys;
use gatehouse_core::ports::{Bus, BusError, Store};
use gatehouse_hostd::service::run;
use gatehouse_hostd::{HostdConfig, HostdDeps, Ownership};
use gatehouse_proto::v1::{EnrollOp, HostRequest, TouchOp, host_reply, host_request};
use gatehouse_runtime::Shutdown;
use gatehouse_runtime::metrics::Metrics;
use gatehouse_store::EmbeddedStore;

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("call failed: {e}"),
    }
}

fn enroll(identity: &str) -> host_request::Op {
    host_request::Op::Enroll(EnrollOp {
        identity: identity.into(),
        host_identifier: "laptop-01".into(),
        platform_type: "9".into(),
        host_details_json: b"{}".to_vec().into(),
        remote_addr: "10.0.0.9".into(),
        labels: vec![],
    })
}

fn touch() -> host_request::Op {
    host_request::Op::Touch(TouchOp {})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_reaches_its_own_hostd_without_the_bus_only_while_it_serves() {
    let dir = ok(tempfile::tempdir());
    let store: Arc<dyn Store> = Arc::new(ok(EmbeddedStore::open(dir.path())));
    let deps = HostdDeps::new(
        store.clone(),
        NodeKeys::new(b"0123456789abcdef0123456789abcdef"),
        Default::default(),
        Arc::new(InProcBus::new()),
        Ownership::Every,
        Metrics::new(),
    );
    let local = deps.local.clone();
    // The client's own bus has nobody serving: only the in-process route
    // can answer it.
    let nobody: Arc<dyn Bus> = Arc::new(InProcBus::new());
    let client = HostClient::new(
        nobody,
        1024,
        Duration::from_millis(200),
        Duration::from_millis(300),
    )
    .with_local(Arc::new(local.clone()));
    let host = HostId::from_identity("hw:local-1");

    // Not started yet: the request is given back whole, and the client
    // finds nobody on the bus.
    let given_back = local
        .route(HostRequest::new(&host, 0, enroll("hw:local-1")))
        .await;
    match given_back {
        Err(req) => {
            assert_eq!(req.host_id, host.to_string());
            assert!(matches!(req.op, Some(host_request::Op::Enroll(_))));
        }
        Ok(r) => panic!("answered before hostd started: {r:?}"),
    }
    let r = client.call(&host, 0, enroll("hw:local-1")).await;
    assert!(
        matches!(r, Err(RpcError::Bus(BusError::NoResponders(_)))),
        "{r:?}"
    );
    assert!(ok(store.get_host(&host).await).is_none(), "nothing stored");

    let shutdown = Shutdown::new();
    let hostd = tokio::spawn(run(HostdConfig::default(), deps, shutdown.clone()));
    let epoch = ok(gatehouse_testkit::eventually(
        "hostd answers in process",
        Duration::from_secs(10),
        async || match client.call(&host, 0, enroll("hw:local-1")).await {
            Ok(host_reply::Result::Enrolled(k)) => Ok(Some(k.epoch)),
            Ok(other) => Err(format!("enroll answered {other:?}")),
            Err(RpcError::Bus(BusError::NoResponders(_))) => Ok(None),
            Err(e) => Err(e.to_string()),
        },
    )
    .await);
    assert!(ok(store.get_host(&host).await).is_some());
    // The actor's checks hold as over the bus: the key epoch it issued is
    // accepted, another is refused.
    assert!(matches!(
        ok(client.call(&host, epoch, touch()).await),
        host_reply::Result::Ok(_)
    ));
    assert!(matches!(
        ok(client.call(&host, epoch + 1, touch()).await),
        host_reply::Result::NodeInvalid(_)
    ));

    // hostd stops: the route closes, and requests are given back again.
    shutdown.trigger();
    ok(ok(hostd.await));
    assert!(
        local
            .route(HostRequest::new(&host, epoch, touch()))
            .await
            .is_err(),
        "answered after hostd stopped"
    );
    let r = client.call(&host, epoch, touch()).await;
    assert!(
        matches!(r, Err(RpcError::Bus(BusError::NoResponders(_)))),
        "{r:?}"
    );
}

/// A leased hostd's shards move between processes: even one in the same
/// process as the edge is asked over the bus, which finds each shard's
/// owner, and its in-process route stays closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_hostd_is_always_asked_over_the_bus() {
    use gatehouse_bus::leases::{InProcLeases, LeaseTtls};
    use gatehouse_hostd::leases::{LeaseConfig, Leases};

    let dir = ok(tempfile::tempdir());
    let store: Arc<dyn Store> = Arc::new(ok(EmbeddedStore::open(dir.path())));
    let lease_cfg = LeaseConfig {
        shards: 16,
        ttl: Duration::from_secs(2),
        renew_every: Duration::from_millis(100),
        member_ttl: Duration::from_secs(2),
        replicas: 1,
    };
    let leases = Arc::new(Leases::new(
        Arc::new(InProcLeases::new(
            LeaseTtls {
                lease: lease_cfg.ttl,
                member: lease_cfg.member_ttl,
            },
            gatehouse_core::time::system_clock(),
        )),
        "hostd-a",
        lease_cfg,
    ));
    let bus: Arc<dyn Bus> = Arc::new(InProcBus::new());
    let deps = HostdDeps::new(
        store.clone(),
        NodeKeys::new(b"0123456789abcdef0123456789abcdef"),
        Default::default(),
        bus.clone(),
        Ownership::Leased(leases),
        Metrics::new(),
    );
    let local = deps.local.clone();
    let client = HostClient::new(bus, 16, Duration::from_secs(2), Duration::from_secs(12))
        .with_local(Arc::new(local.clone()));
    let shutdown = Shutdown::new();
    let hostd = tokio::spawn(run(HostdConfig::default(), deps, shutdown.clone()));
    let host = HostId::from_identity("hw:leased-1");

    // Answered once the first lease round took the shard, over the bus.
    match ok(client.call(&host, 0, enroll("hw:leased-1")).await) {
        host_reply::Result::Enrolled(k) => assert_eq!(k.epoch, 1),
        other => panic!("enroll over the bus: {other:?}"),
    }
    assert!(
        local
            .route(HostRequest::new(&host, 1, touch()))
            .await
            .is_err(),
        "a leased hostd answered in process"
    );
    shutdown.trigger();
    ok(ok(hostd.await));
}
