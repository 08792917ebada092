//! Below the free-space watermark (`limits.min_free_disk_bytes`) the
//! all-in-one refuses log batches with the osquery error body (the agent
//! keeps its lines and retries) while enrollment, config and live-query
//! traffic go on.

use gatehouse_tests::TestServer;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_watermark_logs_get_error_bodies_and_the_rest_goes_on() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // No disk has this much free: every log batch is below the watermark.
    let s = TestServer::start_in(&dir.path().join("data"), |c| {
        c.limits.min_free_disk_bytes = u64::MAX;
    })
    .await?;
    let mut a = s.agent(1);
    assert!(a.enroll().await?.agent_success(), "enrollment goes on");
    assert!(a.config().await?.agent_success(), "config goes on");
    let line = json!([{"name": "users", "unixTime": 1_717_496_431, "columns": {"u": "1"}, "action": "added"}]);
    let r = a.log("result", line).await?;
    assert!(r.is_error_body() && !r.node_invalid(), "{r:?}");
    let msg = r
        .json
        .as_ref()
        .and_then(|j| j["error"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(
        msg.contains("disk nearly full"),
        "the agent is told why: {msg}"
    );
    assert!(a.read().await?.agent_success(), "live queries go on");
    let (code, h) = s
        .api(
            reqwest::Method::GET,
            &format!("/api/v1/hosts/{}", a.host_id()),
            None,
        )
        .await?;
    assert_eq!(code, 200, "{h}");
    s.stop().await?;
    Ok(())
}
