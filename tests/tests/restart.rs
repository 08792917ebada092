//! Every log line acknowledged before a restart is there after it; hosts,
//! keys, config and pending live queries survive too.

use gatehouse_tests::TestServer;
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_logs_and_state_survive_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let s = TestServer::start_in(&data, |_| {}).await?;
    let mut agents = Vec::new();
    for n in 0..5 {
        let mut a = s.agent(n);
        assert!(a.enroll().await?.agent_success());
        agents.push(a);
    }
    s.api(
        Method::PUT,
        "/api/v1/queries/users",
        Some(json!({"sql": "SELECT * FROM users"})),
    )
    .await?;
    s.api(
        Method::PUT,
        "/api/v1/schedules/users",
        Some(json!({"query": "users", "interval": 60, "labels": ["all"]})),
    )
    .await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let mut acked = 0usize;
    for round in 0..20i64 {
        for a in &agents {
            let data: Vec<_> = (0..10)
                .map(|i| json!({"name": "users", "unixTime": now - 3_600 + round, "columns": {"uid": format!("{round}-{i}")}, "action": "added"}))
                .collect();
            let r = if round % 2 == 0 {
                a.log("result", json!(data)).await?
            } else {
                a.log_gzip("result", json!(data)).await?
            };
            assert!(r.agent_success(), "{r:?}");
            acked += 10;
        }
    }
    let (_, c) = s
        .api(
            Method::POST,
            "/api/v1/campaigns",
            Some(json!({"sql": "SELECT 1", "all": true, "expires_in": 600})),
        )
        .await?;
    let campaign = c["id"].as_str().unwrap_or_default().to_owned();
    let config_before = agents[0].config().await?.json;
    let mut before = 0usize;
    for a in &agents {
        before += s
            .get(&format!("/api/v1/results?host={}&limit=10000", a.host_id()))
            .await?["items"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0);
    }
    assert_eq!(before, acked, "lines missing before the restart");
    let (dir_path, _) = s.stop().await?;

    let s = TestServer::start_in(&dir_path, |_| {}).await?;
    let mut total = 0usize;
    for a in &mut agents {
        // Same ports changed, same keys: the agent does not notice.
        a.base = s.agent_url.clone();
        a.http = s.http.clone();
        let rows = s
            .get(&format!("/api/v1/results?host={}&limit=10000", a.host_id()))
            .await?;
        total += rows["items"].as_array().map(Vec::len).unwrap_or(0);
        assert!(
            a.config().await?.agent_success(),
            "node key still valid after restart"
        );
    }
    assert_eq!(
        total, acked,
        "acknowledged log lines lost across the restart"
    );
    assert_eq!(agents[0].config().await?.json, config_before);
    // The live query still waits for every host.
    let r = agents[1].read().await?.json.unwrap_or_default();
    assert_eq!(r["queries"][&campaign], "SELECT 1");
    let d = s.get(&format!("/api/v1/campaigns/{campaign}")).await?;
    assert_eq!(d["coverage"]["targeted"], 5);
    s.stop().await?;
    Ok(())
}
