//! HostActor lifecycle against the real embedded store: spawned on demand,
//! one actor per host under concurrent first requests, passivated when
//! idle with its state persisted, rebuilt from the store afterwards; a stop
//! queued behind requests.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::HostId;
use gatehouse_core::nodekey::NodeKeys;
use gatehouse_core::ports::Store;
use gatehouse_core::time::ShiftedClock;
use gatehouse_hostd::actor::{ActorSettings, HostCtx};
use gatehouse_hostd::service::{Router, context};
use gatehouse_proto::v1::{ConfigOp, EnrollOp, HostRequest, TouchOp, host_reply, host_request};
use gatehouse_store::EmbeddedStore;

/// A hostd's router over a fresh embedded store, with these settings.
struct Hostd {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    ctx: Arc<HostCtx>,
    router: Router,
}

fn hostd(settings: ActorSettings) -> Hostd {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("a temporary directory: {e}"),
    };
    let store: Arc<dyn Store> = match EmbeddedStore::open(dir.path()) {
        Ok(s) => Arc::new(s),
        Err(e) => panic!("opening the store: {e}"),
    };
    let ctx = context(
        store.clone(),
        NodeKeys::new(b"0123456789abcdef0123456789abcdef"),
        settings,
    );
    let router = Router::new(ctx.clone(), Duration::from_secs(5));
    Hostd {
        _dir: dir,
        store,
        ctx,
        router,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_spawn_once_passivate_and_rebuild_from_the_store() {
    let clock = Arc::new(ShiftedClock::new());
    let Hostd { store, router, .. } = &hostd(ActorSettings {
        passivate_after: Duration::from_millis(300),
        tick: Duration::from_millis(50),
        last_seen_flush: Duration::from_secs(3600),
        clock: clock.clone(),
        ..ActorSettings::default()
    });
    let host = HostId::from_identity("hw:actor-test");

    let enroll = host_request::Op::Enroll(EnrollOp {
        identity: "hw:actor-test".into(),
        host_identifier: "h1".into(),
        platform_type: "21".into(),
        host_details_json: b"{\"system_info\":{\"hostname\":\"mac-1\"}}"
            .to_vec()
            .into(),
        remote_addr: "10.0.0.1".into(),
        labels: vec![],
    });
    let epoch = match router.route(HostRequest::new(&host, 0, enroll)).await {
        host_reply::Result::Enrolled(k) => k.epoch,
        other => panic!("enroll failed: {other:?}"),
    };
    assert_eq!(epoch, 1);

    // Later requests move last_seen past the enrollment time.
    clock.advance(Duration::from_millis(30));
    // Fifty concurrent requests: one actor serves them all, in order.
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let r = router.clone();
        let h = host.clone();
        tasks.push(tokio::spawn(async move {
            r.route(HostRequest::new(&h, 1, host_request::Op::Touch(TouchOp {})))
                .await
        }));
    }
    for t in tasks {
        assert!(matches!(t.await, Ok(host_reply::Result::Ok(_))));
    }
    assert_eq!(router.live_actors(), 1);
    assert!(matches!(
        router
            .route(HostRequest::new(
                &host,
                1,
                host_request::Op::Config(ConfigOp {})
            ))
            .await,
        host_reply::Result::Config(_)
    ));

    // Idle: the actor passivates and writes its lazy state (last_seen).
    gatehouse_testkit::until(
        "the idle actor passivates",
        Duration::from_secs(5),
        async || router.live_actors() == 0,
    )
    .await;
    let stored = store
        .get_host(&host)
        .await
        .ok()
        .flatten()
        .expect("host not stored");
    assert_eq!(stored.platform, "darwin");
    assert_eq!(stored.hostname, "mac-1");
    assert_eq!(stored.config_hash.len(), 64);
    // last_seen is flushed only hourly here, so this came from passivation.
    assert!(
        stored.last_seen >= stored.enrolled_at + 30,
        "last_seen not persisted on passivation"
    );

    // A new request rebuilds it from the store; old epochs stay invalid.
    assert!(matches!(
        router
            .route(HostRequest::new(
                &host,
                1,
                host_request::Op::Touch(TouchOp {})
            ))
            .await,
        host_reply::Result::Ok(_)
    ));
    assert!(matches!(
        router
            .route(HostRequest::new(
                &host,
                0,
                host_request::Op::Touch(TouchOp {})
            ))
            .await,
        host_reply::Result::NodeInvalid(_)
    ));
    assert_eq!(router.live_actors(), 1);
    // Unknown hosts are node_invalid, not an error.
    let stranger = HostId::from_identity("hw:stranger");
    assert!(matches!(
        router
            .route(HostRequest::new(
                &stranger,
                1,
                host_request::Op::Touch(TouchOp {})
            ))
            .await,
        host_reply::Result::NodeInvalid(_)
    ));
}

/// One ticker serves every actor of a hostd (ADR 0046): actors of many
/// hosts, whose ids fall in different rounds of the tick, all get their
/// housekeeping and passivate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ticker_reaches_every_actor() {
    let Hostd { router, .. } = &hostd(ActorSettings {
        passivate_after: Duration::from_millis(200),
        tick: Duration::from_millis(40),
        ..ActorSettings::default()
    });
    for n in 0..40 {
        let identity = format!("hw:ticked-{n}");
        let host = HostId::from_identity(&identity);
        let enroll = host_request::Op::Enroll(EnrollOp {
            identity,
            host_identifier: format!("h{n}"),
            platform_type: "9".into(),
            host_details_json: b"{}".to_vec().into(),
            remote_addr: "10.0.0.2".into(),
            labels: vec![],
        });
        assert!(matches!(
            router.route(HostRequest::new(&host, 0, enroll)).await,
            host_reply::Result::Enrolled(_)
        ));
    }
    assert_eq!(router.live_actors(), 40);
    gatehouse_testkit::until(
        "every idle actor passivates",
        Duration::from_secs(10),
        async || router.live_actors() == 0,
    )
    .await;
}

/// A stop is queued behind the messages sent before it: those are
/// answered, the stop waits for the last write (last seen), and a request
/// sent after it is never run by the stopping actor; its caller hears
/// `Stopped` and the router runs it on a fresh actor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_answers_what_was_queued_before_it_and_hands_on_what_came_after() {
    use gatehouse_hostd::actor::{HostMsg, Unanswered};
    use tokio::sync::oneshot;

    let clock = Arc::new(ShiftedClock::new());
    let Hostd {
        store, ctx, router, ..
    } = &hostd(ActorSettings {
        last_seen_flush: Duration::from_secs(3600),
        clock: clock.clone(),
        ..ActorSettings::default()
    });
    let host = HostId::from_identity("hw:stop-test");
    let enroll = host_request::Op::Enroll(EnrollOp {
        identity: "hw:stop-test".into(),
        host_identifier: "h1".into(),
        platform_type: "9".into(),
        host_details_json: b"{}".to_vec().into(),
        remote_addr: "10.0.0.1".into(),
        labels: vec![],
    });
    let epoch = match router.route(HostRequest::new(&host, 0, enroll)).await {
        host_reply::Result::Enrolled(k) => k.epoch,
        other => panic!("enroll failed: {other:?}"),
    };
    let enrolled_seen = store.get_host(&host).await.unwrap().unwrap().last_seen;
    let actor = ctx.registry.get(&host).expect("the enrolled host's actor");

    clock.advance(Duration::from_secs(60));
    let touch = || host_request::Op::Touch(TouchOp {});
    let (before, answered) = oneshot::channel();
    let (done, stopped) = oneshot::channel();
    let (after, dropped) = oneshot::channel();
    for msg in [
        HostMsg::Request {
            op: touch(),
            key_epoch: epoch,
            reply: before,
        },
        HostMsg::Stop { why: "test", done },
        HostMsg::Request {
            op: touch(),
            key_epoch: epoch,
            reply: after,
        },
    ] {
        actor.send(msg).expect("the actor is live");
    }
    assert!(matches!(answered.await, Ok(host_reply::Result::Ok(_))));
    stopped.await.expect("the stop is confirmed");
    assert!(dropped.await.is_err(), "the later request was not run");
    let seen = store.get_host(&host).await.unwrap().unwrap().last_seen;
    assert!(
        seen > enrolled_seen,
        "the stop wrote last seen ({seen} after {enrolled_seen})"
    );
    assert!(ctx.registry.get(&host).is_none(), "it left the registry");
    assert_eq!(
        actor.call(touch(), epoch, Duration::from_secs(5)).await,
        Err(Unanswered::Stopped)
    );
    actor.stop_and_wait("again").await;

    // The router starts a fresh actor for the next request.
    assert!(matches!(
        router.route(HostRequest::new(&host, epoch, touch())).await,
        host_reply::Result::Ok(_)
    ));
    let fresh = ctx.registry.get(&host).expect("a fresh actor");
    assert_ne!(fresh.id(), actor.id());
}
