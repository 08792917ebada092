//! Empty distributed reads and log-batch key checks are answered without
//! asking the host's actor while its last word holds (ADR 0031), and every
//! change that alters that word reaches the agent's very next request: a
//! live query, a re-issued or revoked key, a re-enrollment.

use gatehouse_tests::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

fn event(n: i64) -> Value {
    json!([{"name": "q", "hostIdentifier": "h", "unixTime": 1_717_496_431 + n,
        "columns": {"n": n.to_string()}, "action": "added"}])
}

/// `gatehouse_host_answers_without_actor_total` from the ops port.
async fn answered_here(s: &TestServer) -> anyhow::Result<u64> {
    Ok(s.metrics()
        .await?
        .lines()
        .find_map(|l| l.strip_prefix("gatehouse_host_answers_without_actor_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hosts_are_answered_at_the_edge_and_changes_reach_the_next_request()
-> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let mut a = s.agent(1);
    assert!(a.enroll().await?.agent_success());
    assert!(a.config().await?.agent_success());
    let host = a.host_id();

    // The first read asks the actor; while nothing is pending the next
    // reads and log batches are answered by the edge (and stored).
    let before = answered_here(&s).await?;
    for n in 0..5 {
        let r = a.read().await?;
        assert!(r.agent_success(), "{r:?}");
        assert_eq!(
            r.json.as_ref().map(|j| j["queries"].clone()),
            Some(json!({}))
        );
        assert!(a.log("result", event(n)).await?.agent_success());
    }
    let skipped = answered_here(&s).await? - before;
    assert!(skipped >= 8, "answered without the actor: {skipped} of 10");
    let stored = s.get(&format!("/api/v1/results?host={host}")).await?;
    assert_eq!(
        stored["items"].as_array().map(Vec::len),
        Some(5),
        "{stored}"
    );

    // A live query: the very next polls deliver it (the edge's word is
    // withdrawn when the campaign is queued), well before it would expire.
    let (st, c) = s
        .api(
            Method::POST,
            "/api/v1/campaigns",
            Some(json!({"sql": "SELECT 1 AS one", "hosts": [host], "expires_in": 60})),
        )
        .await?;
    assert_eq!(st, 201, "{c}");
    let id = c["id"].as_str().unwrap_or_default().to_owned();
    let r = a
        .answer_within(
            &id,
            json!([{"one": "1"}]),
            std::time::Duration::from_secs(5),
        )
        .await?;
    assert_eq!(r["queries"][&id], "SELECT 1 AS one");
    // Answered: quiet again.
    let r = a.read().await?;
    assert_eq!(
        r.json.as_ref().map(|j| j["queries"].clone()),
        Some(json!({}))
    );

    // A rotated key: the old one is refused on the next request, read or
    // log batch, with no wait.
    let old = a.node_key.clone();
    s.rotate_key(&host, false).await?;
    let r = a.read().await?;
    assert!(r.node_invalid(), "old key after rotation, read: {r:?}");
    assert!(a.log("result", event(10)).await?.node_invalid());

    // Re-enrolled: the new key works at once and the one before is refused.
    a.node_key = None;
    assert!(a.enroll().await?.agent_success());
    assert!(a.read().await?.agent_success());
    assert!(a.log("result", event(11)).await?.agent_success());
    let fresh = a.node_key.clone();
    a.node_key = old;
    assert!(a.read().await?.node_invalid(), "the first key again");
    a.node_key = fresh;

    // Revoked: refused on the next request.
    s.rotate_key(&host, true).await?;
    assert!(a.log("result", event(12)).await?.node_invalid());
    assert!(a.read().await?.node_invalid());
    let stored = s.get(&format!("/api/v1/results?host={host}")).await?;
    assert_eq!(
        stored["items"].as_array().map(Vec::len),
        Some(6),
        "{stored}"
    );
    s.stop().await?;
    Ok(())
}
