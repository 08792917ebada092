//! The bus conformance suite: every `Bus` adapter runs [`run_all`] (the
//! in-process bus in its unit tests, NATS against a real nats-server).
//!
//! Test code compiled into the library (feature `conformance`) so other
//! crates' tests can run it: a failed unwrap is a failed check here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use gatehouse_core::ports::{Bus, BusError};

/// How long a check waits for a message it expects (only a failing check
/// waits this long; two seconds proved too short on a loaded 2-core CI run).
const T: Duration = Duration::from_secs(10);

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    // Display, not Debug: the error says what failed in words.
    match r {
        Ok(v) => v,
        Err(e) => panic!("call failed: {e}"),
    }
}

pub async fn run_all(bus: &dyn Bus) {
    request_reply(bus).await;
    no_responders(bus).await;
    timeout(bus).await;
    wildcards_and_fanout(bus).await;
    queue_groups(bus).await;
    unsubscribe_on_drop(bus).await;
}

async fn request_reply(bus: &dyn Bus) {
    let mut sub = ok(bus.subscribe("conf.echo", None).await);
    let server = tokio::spawn(async move {
        for _ in 0..3 {
            let Some(m) = sub.next().await else { return };
            let mut out = b"re:".to_vec();
            out.extend_from_slice(&m.payload);
            if let Some(r) = m.reply {
                let _ = r.reply(Bytes::from(out)).await;
            }
        }
    });
    for i in 0..3 {
        let reply = ok(bus
            .request("conf.echo", Bytes::from(format!("m{i}")), T)
            .await);
        assert_eq!(reply, Bytes::from(format!("re:m{i}")));
    }
    let _ = server.await;
}

async fn no_responders(bus: &dyn Bus) {
    let r = bus
        .request("conf.nobody", Bytes::from_static(b"x"), T)
        .await;
    assert!(matches!(r, Err(BusError::NoResponders(_))), "got {r:?}");
}

async fn timeout(bus: &dyn Bus) {
    let _sub = ok(bus.subscribe("conf.silent", None).await);
    let r = bus
        .request(
            "conf.silent",
            Bytes::from_static(b"x"),
            Duration::from_millis(200),
        )
        .await;
    assert!(
        matches!(
            r,
            Err(BusError::Timeout(_)) | Err(BusError::NoResponders(_))
        ),
        "got {r:?}"
    );
}

async fn wildcards_and_fanout(bus: &dyn Bus) {
    let mut star = ok(bus.subscribe("conf.fan.*", None).await);
    let mut tail = ok(bus.subscribe("conf.>", None).await);
    let mut exact = ok(bus.subscribe("conf.fan.x", None).await);
    ok(bus.publish("conf.fan.x", Bytes::from_static(b"1")).await);
    for sub in [&mut star, &mut tail, &mut exact] {
        let m = tokio::time::timeout(T, sub.next())
            .await
            .ok()
            .flatten()
            .expect("fan-out missed a subscriber");
        assert_eq!(m.subject, "conf.fan.x");
        assert_eq!(m.payload, Bytes::from_static(b"1"));
    }
    ok(bus.publish("conf.fan.y.z", Bytes::from_static(b"2")).await);
    let m = tokio::time::timeout(T, tail.next())
        .await
        .ok()
        .flatten()
        .expect("'>' missed");
    assert_eq!(m.subject, "conf.fan.y.z");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), star.next())
            .await
            .is_err(),
        "'*' matched two tokens"
    );
}

async fn queue_groups(bus: &dyn Bus) {
    let mut a = ok(bus.subscribe("conf.q", Some("workers")).await);
    let mut b = ok(bus.subscribe("conf.q", Some("workers")).await);
    for i in 0..20 {
        ok(bus.publish("conf.q", Bytes::from(format!("{i}"))).await);
    }
    let mut got = 0;
    for sub in [&mut a, &mut b] {
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
            got += 1;
        }
    }
    assert_eq!(
        got, 20,
        "each message goes to exactly one member of a queue group"
    );
}

async fn unsubscribe_on_drop(bus: &dyn Bus) {
    let x = || Bytes::from_static(b"x");
    let sub = ok(bus.subscribe("conf.drop", None).await);
    // Subscribed and silent: a request finds the subscriber and times out.
    let r = bus
        .request("conf.drop", x(), Duration::from_millis(200))
        .await;
    assert!(matches!(r, Err(BusError::Timeout(_))), "got {r:?}");
    drop(sub);
    // Once the bus has processed the unsubscribe (at once in process, a
    // round trip on a remote bus), nobody listens: each attempt is paced
    // by its own timeout, and the number of attempts is bounded.
    for attempt in 0.. {
        match bus
            .request("conf.drop", x(), Duration::from_millis(200))
            .await
        {
            Err(BusError::NoResponders(_)) => break,
            Err(BusError::Timeout(_)) if attempt < 50 => {}
            other => panic!("a dropped subscription still listens: {other:?}"),
        }
    }
}

/// Checks between two handles on one subject space: two processes on NATS,
/// two clones of the in-process bus. Subscriptions on `a`, publishers and
/// requesters on `b`.
pub async fn run_pair(a: &dyn Bus, b: &dyn Bus) {
    // A request from one process is answered by a subscriber in the other.
    let mut sub = ok(a.subscribe("pair.echo", None).await);
    let server = tokio::spawn(async move {
        if let Some(m) = sub.next().await
            && let Some(r) = m.reply
        {
            let _ = r.reply(m.payload).await;
        }
        sub
    });
    assert_eq!(
        ok(b.request("pair.echo", Bytes::from_static(b"hi"), T).await),
        Bytes::from_static(b"hi")
    );
    let sub = ok(server.await);
    drop(sub);

    // A queue group spread over both processes shares the messages.
    let mut qa = ok(a.subscribe("pair.q", Some("g")).await);
    let mut qb = ok(b.subscribe("pair.q", Some("g")).await);
    for i in 0..40 {
        ok(b.publish("pair.q", Bytes::from(format!("{i}"))).await);
    }
    let mut per = [0usize; 2];
    for (n, sub) in [&mut qa, &mut qb].into_iter().enumerate() {
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
            per[n] += 1;
        }
    }
    assert_eq!(per[0] + per[1], 40, "every message once: {per:?}");

    // A broadcast reaches every process. A subscription made on one
    // connection reaches the server asynchronously, so a publish on another
    // may precede it: publish until both heard one (bounded by T).
    let mut ba = ok(a.subscribe("pair.all", None).await);
    let mut bb = ok(b.subscribe("pair.all", None).await);
    let mut heard = [false; 2];
    let deadline = tokio::time::Instant::now() + T;
    while heard != [true; 2] && tokio::time::Instant::now() < deadline {
        ok(a.publish("pair.all", Bytes::from_static(b"x")).await);
        for (n, sub) in [&mut ba, &mut bb].into_iter().enumerate() {
            while let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(100), sub.next()).await
            {
                heard[n] = true;
            }
        }
    }
    assert_eq!(heard, [true; 2], "a broadcast missed a process");
}

/// The checks every [`crate::leases::LeaseStore`] adapter passes: leases
/// are exclusive, renewals and releases need the current token, tokens only
/// grow (fencing), memberships come and go, and leases and memberships
/// expire once their TTL passes without renewal.
pub mod leases {
    use crate::leases::{LeaseStore, Renewal};

    fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => panic!("lease store failed: {e}"),
        }
    }

    /// Runs every check; `past_ttl` makes more than the lease and member
    /// TTLs pass (moves a clock, or waits on a real server).
    pub async fn run_all<F, Fut>(store: &dyn LeaseStore, past_ttl: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        a_lease_is_exclusive(store).await;
        renewals_need_the_current_token_and_tokens_grow(store).await;
        releases_need_the_current_token(store).await;
        members_come_and_go(store).await;
        leases_and_members_expire_without_renewal(store, past_ttl).await;
    }

    async fn a_lease_is_exclusive(store: &dyn LeaseStore) {
        let t = ok(store.acquire(1, "a").await);
        assert!(t.is_some(), "a free shard is acquired");
        assert_eq!(ok(store.acquire(1, "b").await), None, "a held shard is not");
        assert_eq!(
            ok(store.acquire(1, "a").await),
            None,
            "not even by its holder"
        );
    }

    async fn renewals_need_the_current_token_and_tokens_grow(store: &dyn LeaseStore) {
        let Some(t1) = ok(store.acquire(2, "a").await) else {
            panic!("shard 2 is free")
        };
        let Renewal::Renewed(t2) = ok(store.renew(2, "a", t1).await) else {
            panic!("the holder renews with its token")
        };
        assert!(t2 > t1, "a renewal moves the token forward");
        assert_eq!(
            ok(store.renew(2, "a", t1).await),
            Renewal::Lost,
            "a stale token means the lease is lost"
        );
    }

    async fn releases_need_the_current_token(store: &dyn LeaseStore) {
        let Some(t1) = ok(store.acquire(3, "a").await) else {
            panic!("shard 3 is free")
        };
        let Renewal::Renewed(t2) = ok(store.renew(3, "a", t1).await) else {
            panic!("renewed")
        };
        assert!(
            !ok(store.release(3, t1).await),
            "a stale token releases nothing"
        );
        assert!(ok(store.release(3, t2).await), "the current token releases");
        let Some(t3) = ok(store.acquire(3, "b").await) else {
            panic!("a released shard is free")
        };
        assert!(t3 > t2, "the next holder's token is larger (fencing)");
        assert!(
            !ok(store.release(3, t2).await),
            "the old holder cannot release it"
        );
    }

    async fn members_come_and_go(store: &dyn LeaseStore) {
        ok(store.heartbeat("m-b").await);
        ok(store.heartbeat("m-a").await);
        ok(store.heartbeat("m-a").await);
        let members = ok(store.members().await);
        assert_eq!(
            members
                .iter()
                .filter(|m| m.starts_with("m-"))
                .collect::<Vec<_>>(),
            ["m-a", "m-b"],
            "live members, sorted, once each"
        );
        ok(store.leave("m-a").await);
        let members = ok(store.members().await);
        assert!(!members.iter().any(|m| m == "m-a") && members.iter().any(|m| m == "m-b"));
        ok(store.leave("m-b").await);
    }

    async fn leases_and_members_expire_without_renewal<F, Fut>(store: &dyn LeaseStore, past_ttl: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let Some(old) = ok(store.acquire(9, "a").await) else {
            panic!("shard 9 is free")
        };
        ok(store.heartbeat("gone").await);
        past_ttl().await;
        assert!(
            !ok(store.members().await).iter().any(|m| m == "gone"),
            "a member that stopped heartbeating is gone"
        );
        let Some(new) = ok(store.acquire(9, "b").await) else {
            panic!("an expired lease is free")
        };
        assert!(new > old, "the new holder's token is larger (fencing)");
        assert_eq!(
            ok(store.renew(9, "a", old).await),
            Renewal::Lost,
            "the deposed holder learns it lost the shard"
        );
    }
}

/// The checks every [`crate::logstream::LogStream`] adapter passes, on a
/// stream opened with [`logstream::config`]: batches come out in order and
/// leave once acknowledged, a re-sent id is dropped, a nak'd or unsettled
/// batch comes again, a terminated one never does, and a full stream
/// refuses appends (storing nothing) until it drains.
pub mod logstream {
    use std::time::Duration;

    use bytes::Bytes;

    use crate::logstream::{Appended, Entry, LogKind, LogStream, StreamConfig, StreamError};

    /// The stream shape the checks expect (64 KiB, 1 s ack wait).
    pub fn config() -> StreamConfig {
        StreamConfig {
            max_bytes: 64 * 1024,
            ack_wait: Duration::from_secs(1),
            duplicate_window: Duration::from_secs(60),
            ..StreamConfig::default()
        }
    }

    fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => panic!("log stream failed: {e}"),
        }
    }

    /// Fetches until `n` batches came (each fetch waits up to 5 s).
    async fn take(log: &dyn LogStream, n: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        for _ in 0..10 {
            if out.len() >= n {
                break;
            }
            out.extend(ok(log.fetch(n - out.len(), Duration::from_secs(5)).await));
        }
        assert_eq!(out.len(), n, "{n} batches delivered");
        out
    }

    async fn drained(log: &dyn LogStream) {
        for _ in 0..50 {
            if ok(log.backlog().await) == 0 {
                return;
            }
            let _ = log.fetch(1, Duration::from_millis(100)).await;
        }
        panic!("the stream never drained");
    }

    /// Runs every check; `past_ack_wait` makes the ack wait pass (moves a
    /// clock, or waits on a real server).
    pub async fn run_all<F, Fut>(log: &dyn LogStream, past_ack_wait: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        in_order_and_gone_once_acknowledged(log).await;
        a_resent_id_is_dropped(log).await;
        a_naked_batch_comes_again(log).await;
        an_unsettled_batch_comes_again_after_the_ack_wait(log, &past_ack_wait).await;
        a_terminated_batch_never_comes_again(log, &past_ack_wait).await;
        a_full_stream_refuses_until_it_drains(log).await;
    }

    async fn in_order_and_gone_once_acknowledged(log: &dyn LogStream) {
        for (i, kind) in [LogKind::Results, LogKind::Status, LogKind::Results]
            .into_iter()
            .enumerate()
        {
            let r = log
                .append(kind, &format!("order-{i}"), Bytes::from(format!("b{i}")))
                .await;
            assert_eq!(ok(r), Appended::Stored);
        }
        assert_eq!(ok(log.backlog().await), 3);
        let got = take(log, 3).await;
        let seen: Vec<(LogKind, Bytes)> = got.iter().map(|e| (e.kind, e.payload.clone())).collect();
        assert_eq!(
            seen,
            [
                (LogKind::Results, Bytes::from("b0")),
                (LogKind::Status, Bytes::from("b1")),
                (LogKind::Results, Bytes::from("b2")),
            ],
            "oldest first, with their kinds"
        );
        for e in got {
            ok(e.ack().await);
        }
        drained(log).await;
    }

    async fn a_resent_id_is_dropped(log: &dyn LogStream) {
        let p = Bytes::from_static(b"once");
        assert_eq!(
            ok(log.append(LogKind::Results, "dup", p.clone()).await),
            Appended::Stored
        );
        assert_eq!(
            ok(log.append(LogKind::Results, "dup", p).await),
            Appended::Duplicate
        );
        assert_eq!(ok(log.backlog().await), 1, "stored once");
        for e in take(log, 1).await {
            ok(e.ack().await);
        }
        drained(log).await;
    }

    async fn a_naked_batch_comes_again(log: &dyn LogStream) {
        ok(log
            .append(LogKind::Results, "nak", Bytes::from_static(b"again"))
            .await);
        let first = take(log, 1).await;
        for e in first {
            ok(e.nak(Duration::from_millis(10)).await);
        }
        let again = take(log, 1).await;
        assert_eq!(again[0].payload, Bytes::from_static(b"again"));
        for e in again {
            ok(e.ack().await);
        }
        drained(log).await;
    }

    async fn an_unsettled_batch_comes_again_after_the_ack_wait<F, Fut>(
        log: &dyn LogStream,
        past_ack_wait: &F,
    ) where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        ok(log
            .append(LogKind::Results, "crash", Bytes::from_static(b"held"))
            .await);
        // Its consumer dies holding it: no ack, no nak.
        drop(take(log, 1).await);
        past_ack_wait().await;
        let again = take(log, 1).await;
        assert_eq!(again[0].payload, Bytes::from_static(b"held"));
        for e in again {
            ok(e.ack().await);
        }
        drained(log).await;
    }

    async fn a_terminated_batch_never_comes_again<F, Fut>(log: &dyn LogStream, past_ack_wait: &F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        ok(log
            .append(LogKind::Results, "poison", Bytes::from_static(b"poison"))
            .await);
        for e in take(log, 1).await {
            ok(e.term().await);
        }
        past_ack_wait().await;
        let later = ok(log.fetch(10, Duration::from_millis(300)).await);
        assert!(later.is_empty(), "a terminated batch came again");
        drained(log).await;
    }

    async fn a_full_stream_refuses_until_it_drains(log: &dyn LogStream) {
        let chunk = Bytes::from(vec![b'x'; 8 * 1024]);
        let mut stored = 0;
        let mut refused = false;
        for i in 0..20 {
            match log
                .append(LogKind::Results, &format!("full-{i}"), chunk.clone())
                .await
            {
                Ok(Appended::Stored) => stored += 1,
                Err(StreamError::Full) => {
                    refused = true;
                    break;
                }
                other => panic!("append {i}: {other:?}"),
            }
        }
        assert!(refused, "a 64 KiB stream took {stored} batches of 8 KiB");
        assert_eq!(
            ok(log.backlog().await),
            stored,
            "a refused batch is not stored"
        );
        for e in take(log, stored as usize).await {
            ok(e.ack().await);
        }
        drained(log).await;
        assert_eq!(
            ok(log.append(LogKind::Results, "after-full", chunk).await),
            Appended::Stored,
            "a drained stream takes batches again"
        );
        for e in take(log, 1).await {
            ok(e.ack().await);
        }
        drained(log).await;
    }
}
