//! The fleet summary (`GET /api/v1/fleet/summary`, the console's
//! overview) against the real server: counts by platform and osquery
//! version, online and silent hosts as the clock moves, hosts on an older
//! config, enrollments per day; a small fleet's snapshot reused for 5 s.

use std::time::Duration;

use gatehouse_tests::TestServer;
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_counts_the_fleet_from_a_recent_snapshot() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let admin = s.boot.admin_token.clone();
    for n in 0..3 {
        assert!(s.agent(n).enroll().await?.agent_success());
    }
    let (code, v) = s
        .call(&admin, Method::GET, "/api/v1/fleet/summary", None)
        .await?;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (
            v["hosts"].as_u64(),
            v["online"].as_u64(),
            v["offline"].as_u64()
        ),
        (Some(3), Some(3), Some(0))
    );
    assert_eq!(v["by_platform"], json!({"linux": 3}));
    assert_eq!(
        v["by_osquery_version"]
            .as_object()
            .map(|m| m.values().filter_map(|n| n.as_u64()).sum::<u64>()),
        Some(3)
    );
    let days = v["enrolled_by_day"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        days.values().filter_map(|n| n.as_u64()).sum::<u64>(),
        3,
        "{days:?}"
    );
    let first_at = v["at"].as_i64();

    // A small fleet's snapshot answers for 5 s (no pass over the hosts).
    assert!(s.agent(3).enroll().await?.agent_success());
    s.clock.advance(Duration::from_secs(3));
    let (_, v) = s
        .call(&admin, Method::GET, "/api/v1/fleet/summary", None)
        .await?;
    assert_eq!((v["at"].as_i64(), v["hosts"].as_u64()), (first_at, Some(3)));

    // A definition changes the config generation; two days pass.
    let (code, _) = s
        .call(
            &admin,
            Method::PUT,
            "/api/v1/queries/users",
            Some(json!({"sql": "SELECT * FROM users;"})),
        )
        .await?;
    assert_eq!(code, 200);
    let (code, v) = s
        .call(
            &admin,
            Method::PUT,
            "/api/v1/schedules/users",
            Some(json!({"query": "users", "interval": 3600, "labels": ["all"]})),
        )
        .await?;
    assert_eq!(code, 200, "{v}");
    s.clock.advance(Duration::from_secs(2 * 86_400));
    let (_, v) = s
        .call(&admin, Method::GET, "/api/v1/fleet/summary", None)
        .await?;
    assert_eq!(v["hosts"].as_u64(), Some(4));
    assert_eq!(
        (v["online"].as_u64(), v["offline"].as_u64()),
        (Some(0), Some(4))
    );
    assert_eq!(
        (v["silent_1d"].as_u64(), v["silent_7d"].as_u64()),
        (Some(4), Some(0))
    );
    assert!(v["at"].as_i64() > first_at);
    assert_eq!(
        v["older_config"].as_u64(),
        Some(4),
        "no host fetched the new config: {v}"
    );
    // An observer may read it.
    let observer = s.user_token("watcher", "observer").await?;
    let (code, _) = s
        .call(&observer, Method::GET, "/api/v1/fleet/summary", None)
        .await?;
    assert_eq!(code, 200);
    s.stop().await?;
    Ok(())
}
