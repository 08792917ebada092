//! Overload turns into fast error bodies, not timeouts: past
//! `max_in_flight_requests` the edge refuses at once, the agent keeps its
//! data, and service resumes as soon as load drops.

use std::time::Duration;

use bytes::Bytes;
use gatehouse_tests::{TestServer, eventually};
use serde_json::Value;

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
    let mut holds = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        tx.send(Bytes::from_static(b"{\"log_type\":\"result\","))
            .await?;
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
        });
        let req = s
            .http
            .post(format!("{}{}", s.agent_url, a.paths.logger))
            .header(
                "Authorization",
                format!("NodeKey {}", a.node_key.clone().unwrap_or_default()),
            )
            .body(reqwest::Body::wrap_stream(stream))
            .send();
        holds.push((tx, tokio::spawn(req)));
    }
    // Both uploads hold their slots once the edge counts them in flight
    // (the probe port is not subject to admission).
    eventually(Duration::from_secs(20), || async {
        let m = s
            .http
            .get(format!("{}/metrics", s.ops_url))
            .send()
            .await?
            .text()
            .await?;
        Ok(m.lines()
            .any(|l| l == "gatehouse_edge_requests_in_flight 2")
            .then_some(()))
    })
    .await?;
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
