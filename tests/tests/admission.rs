//! Overload turns into fast error bodies, not timeouts: past
//! `max_in_flight_requests` the edge refuses at once, the agent keeps its
//! data, and service resumes as soon as load drops.

use std::time::Duration;

use bytes::Bytes;
use gatehouse_tests::{TestServer, eventually};
use serde_json::Value;

/// A log POST whose body trickles in: its first part is sent, the rest
/// when the returned sender sends it (and is dropped).
fn slow_upload(
    s: &TestServer,
    path: &str,
    key: &str,
) -> (
    tokio::sync::mpsc::Sender<Bytes>,
    tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    let _ = tx.try_send(Bytes::from_static(b"{\"log_type\":\"result\","));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    let req = s
        .http
        .post(format!("{}{}", s.agent_url, path))
        .header("Authorization", format!("NodeKey {key}"))
        .body(reqwest::Body::wrap_stream(stream))
        .send();
    (tx, tokio::spawn(req))
}

/// `a`'s result batch `lines`, sent by a task of its own (another agent
/// value with `a`'s node key), so the test can watch it wait.
fn log_in_background(
    s: &TestServer,
    a: &gatehouse_tests::Agent,
    lines: &Value,
) -> tokio::task::JoinHandle<anyhow::Result<gatehouse_tests::Reply>> {
    let mut b = s.agent(1);
    b.node_key = a.node_key.clone();
    let lines = lines.clone();
    tokio::spawn(async move { b.log("result", lines).await })
}

/// Waits until the edge counts `n` agent requests in flight (read on the
/// probe port, which is not subject to admission).
async fn in_flight(s: &TestServer, n: u32) -> anyhow::Result<()> {
    let want = format!("gatehouse_edge_requests_in_flight {n}");
    eventually(Duration::from_secs(20), || async {
        let m = s.metrics().await?;
        Ok(m.lines().any(|l| l == want).then_some(()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_in_flight_bound_are_refused_at_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let s = TestServer::start_in(&dir.path().join("data"), |c| {
        c.limits.max_in_flight_requests = 2
    })
    .await?;
    let mut a = s.agent(1);
    assert!(a.enroll().await?.agent_success());

    // Two log POSTs whose bodies arrive slowly hold both slots.
    let key = a.node_key.clone().unwrap_or_default();
    let holds: Vec<_> = (0..2)
        .map(|_| slow_upload(&s, &a.paths.logger, &key))
        .collect();
    in_flight(&s, 2).await?;
    // The next request is refused at once: a queued one would wait for the
    // uploads, which finish only below, and run into this bound.
    let r = tokio::time::timeout(Duration::from_secs(10), a.config())
        .await
        .map_err(|_| anyhow::anyhow!("a request past the bound was queued, not refused"))??;
    assert!(r.is_error_body() && !r.node_invalid(), "{r:?}");
    assert_eq!(r.status, 429);
    // Health checks are not subject to admission.
    assert_eq!(
        s.http
            .get(format!("{}/readyz", s.agent_url))
            .send()
            .await?
            .status()
            .as_u16(),
        200
    );

    // Finish the slow uploads: both complete normally.
    for (tx, task) in holds {
        tx.send(Bytes::from_static(b"\"data\":[]}")).await?;
        drop(tx);
        let resp = task.await??;
        let body: Value = resp.json().await?;
        assert_eq!(body, serde_json::json!({}));
    }
    // Load is gone: requests are served again.
    assert!(a.config().await?.agent_success());
    Ok(())
}

/// Log bodies are admitted by bytes before they are read: a request past
/// `max_log_bytes_in_flight` waits (its body unread) instead of failing,
/// is served once room frees, and gets a busy error body only when no
/// room frees within the admission wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_bodies_wait_for_room_then_are_stored() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let s = TestServer::start_in(&dir.path().join("data"), |c| {
        c.limits.max_log_bytes_in_flight = 1024 * 1024
    })
    .await?;
    let mut a = s.agent(1);
    assert!(a.enroll().await?.agent_success());
    let key = a.node_key.clone().unwrap_or_default();

    // A log POST without a declared length is counted at the largest body
    // allowed: it takes the whole budget while its body trickles in.
    let (tx, hold) = slow_upload(&s, &a.paths.logger, &key);
    in_flight(&s, 1).await?;

    // A normal batch now waits for room rather than being refused.
    let line = serde_json::json!([{"name": "q", "hostIdentifier": "h", "unixTime": 1_717_496_431,
        "columns": {"a": "1"}, "action": "added"}]);
    let waiting = log_in_background(&s, &a, &line);
    in_flight(&s, 2).await?;
    assert!(
        !waiting.is_finished(),
        "the second batch was answered without room"
    );

    // Room frees when the first upload is stored: the waiting batch is.
    tx.send(Bytes::from_static(b"\"data\":[]}")).await?;
    drop(tx);
    let first: Value = hold.await??.json().await?;
    assert_eq!(first, serde_json::json!({}));
    let r = waiting.await??;
    assert!(r.agent_success(), "{r:?}");
    let lines = s
        .get(&format!("/api/v1/results?host={}&name=q", a.host_id()))
        .await?;
    assert_eq!(lines["items"].as_array().map(Vec::len), Some(1), "{lines}");

    // Room that never frees: after the admission wait, a busy error body
    // (the agent keeps the batch and retries).
    let (tx, hold) = slow_upload(&s, &a.paths.logger, &key);
    in_flight(&s, 1).await?;
    let r = a.log("result", line).await?;
    assert!(r.is_error_body() && !r.node_invalid(), "{r:?}");
    assert_eq!(r.status, 429);
    tx.send(Bytes::from_static(b"\"data\":[]}")).await?;
    drop(tx);
    hold.await??;
    Ok(())
}

/// Log POSTs waiting for room for their bodies wait in slots of their
/// own: a wave of them leaves the in-flight slots to enrollments, configs
/// and distributed reads, and past `max_in_flight_requests` of them
/// waiting the next log POST gets a busy error body at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_posts_waiting_for_room_leave_the_slots_to_other_requests() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let s = TestServer::start_in(&dir.path().join("data"), |c| {
        c.limits.max_in_flight_requests = 2;
        c.limits.max_log_bytes_in_flight = 1024 * 1024;
    })
    .await?;
    let mut a = s.agent(1);
    assert!(a.enroll().await?.agent_success());
    let key = a.node_key.clone().unwrap_or_default();

    // One upload takes the whole log budget and one in-flight slot.
    let (tx, hold) = slow_upload(&s, &a.paths.logger, &key);
    in_flight(&s, 1).await?;

    // Two batches wait for room, in waiting slots.
    let line = serde_json::json!([{"name": "q", "hostIdentifier": "h", "unixTime": 1_717_496_431,
        "columns": {"a": "1"}, "action": "added"}]);
    let waiting: Vec<_> = (0..2).map(|_| log_in_background(&s, &a, &line)).collect();
    in_flight(&s, 3).await?;

    // A third finds no waiting slot: refused at once, not queued.
    let r = tokio::time::timeout(Duration::from_secs(6), a.log("result", line.clone()))
        .await
        .map_err(|_| anyhow::anyhow!("a log POST past the waiting slots was queued"))??;
    assert!(r.is_error_body() && !r.node_invalid(), "{r:?}");
    assert_eq!(r.status, 429);
    // The in-flight slot the waiting batches do not hold serves a config.
    let c = a.config().await?;
    assert!(c.agent_success(), "{c:?}");

    // Room frees: both waiting batches are stored.
    tx.send(Bytes::from_static(b"\"data\":[]}")).await?;
    drop(tx);
    hold.await??;
    for w in waiting {
        let r = w.await??;
        assert!(r.agent_success(), "{r:?}");
    }
    let lines = s
        .get(&format!("/api/v1/results?host={}&name=q", a.host_id()))
        .await?;
    assert_eq!(lines["items"].as_array().map(Vec::len), Some(1), "{lines}");
    Ok(())
}
