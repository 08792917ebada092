//! hostd behind a real nats-server: a client in another connection (an
//! edge or api process) reaches host actors over NATS request/reply; calls
//! made while no hostd is up are retried within the budget and served once
//! one starts; after hostd stops, callers get no-responders, never a hang.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_bus::nats_test_server::NatsTestServer;
use gatehouse_bus::{HostClient, NatsBus, NatsConfig, RpcError};
use gatehouse_core::HostId;
use gatehouse_core::nodekey::NodeKeys;
use gatehouse_core::ports::{Bus, BusError, Store};
use gatehouse_hostd::service::run;
use gatehouse_hostd::{HostdConfig, HostdDeps, Ownership};
use gatehouse_proto::v1::{EnrollOp, TouchOp, host_reply, host_request};
use gatehouse_runtime::Shutdown;
use gatehouse_runtime::metrics::Metrics;
use gatehouse_store::EmbeddedStore;

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    // Display, not Debug: the error says what failed in words.
    match r {
        Ok(v) => v,
        Err(e) => panic!("call failed: {e}"),
    }
}

async fn connect(server: &NatsTestServer, name: &str) -> Arc<dyn Bus> {
    Arc::new(ok(NatsBus::connect(&NatsConfig {
        servers: vec![server.url()],
        name: name.into(),
        ..NatsConfig::default()
    })
    .await))
}

fn enroll(identity: &str) -> host_request::Op {
    host_request::Op::Enroll(EnrollOp {
        identity: identity.into(),
        host_identifier: "web-01".into(),
        platform_type: "9".into(),
        host_details_json: b"{\"system_info\":{\"hostname\":\"web-01\"}}"
            .to_vec()
            .into(),
        remote_addr: "10.0.0.7".into(),
        labels: vec![],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_actors_are_reached_over_nats_from_another_process() {
    let server = ok(NatsTestServer::start());
    let dir = ok(tempfile::tempdir());
    let store: Arc<dyn Store> = Arc::new(ok(EmbeddedStore::open(dir.path())));
    let edge_bus = connect(&server, "edge").await;
    let client = HostClient::new(
        edge_bus,
        1024,
        Duration::from_secs(5),
        Duration::from_secs(12),
    );
    let host = HostId::from_identity("hw:nats-1");

    // The edge calls before any hostd is up; hostd starts once the call
    // has found nobody serving its shard twice.
    let call = {
        let client = client.clone();
        let host = host.clone();
        tokio::spawn(async move { client.call(&host, 0, enroll("hw:nats-1")).await })
    };
    gatehouse_testkit::until(
        "the call finds no hostd twice",
        Duration::from_secs(10),
        async || client.retries() >= 2,
    )
    .await;
    assert!(!call.is_finished(), "the call gave up before hostd started");
    let hostd_bus = connect(&server, "hostd").await;
    let shutdown = Shutdown::new();
    let deps = HostdDeps::new(
        store.clone(),
        NodeKeys::new(b"0123456789abcdef0123456789abcdef"),
        Default::default(),
        hostd_bus,
        Ownership::Every,
        Metrics::new(),
    );
    let hostd = tokio::spawn(run(HostdConfig::default(), deps, shutdown.clone()));
    let epoch = match ok(ok(call.await)) {
        host_reply::Result::Enrolled(k) => k.epoch,
        other => panic!("enroll over NATS: {other:?}"),
    };
    assert_eq!(epoch, 1);
    assert!(ok(store.get_host(&host).await).is_some());
    match ok(client
        .call(&host, epoch, host_request::Op::Touch(TouchOp {}))
        .await)
    {
        host_reply::Result::Ok(_) => {}
        other => panic!("touch over NATS: {other:?}"),
    }
    // A superseded epoch is refused by the actor, across the wire.
    match ok(client
        .call(&host, epoch + 1, host_request::Op::Touch(TouchOp {}))
        .await)
    {
        host_reply::Result::NodeInvalid(_) => {}
        other => panic!("stale epoch: {other:?}"),
    }

    // hostd stops (its actors persist); callers learn it at once.
    shutdown.trigger();
    ok(ok(hostd.await));
    let quick = HostClient::new(
        connect(&server, "edge-2").await,
        1024,
        Duration::from_secs(5),
        Duration::from_millis(600),
    );
    let start = Instant::now();
    let r = quick
        .call(&host, epoch, host_request::Op::Touch(TouchOp {}))
        .await;
    assert!(
        matches!(r, Err(RpcError::Bus(BusError::NoResponders(_)))),
        "{r:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "no hang without hostd"
    );
}
