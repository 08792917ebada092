//! The ops listener: `/livez`, `/readyz` and Prometheus `/metrics` with
//! the request, actor and log families an operator scales and pages on.

use gatehouse_tests::TestServer;
use serde_json::json;

/// The value of the first sample line starting with `prefix`.
fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ops_listener_serves_probes_and_metrics() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let mut a = s.agent(1);
    assert!(a.enroll().await?.agent_success());
    assert!(a.config().await?.agent_success());
    let line = json!([{"name": "users", "unixTime": 1_717_496_431, "columns": {"u": "1"}, "action": "added"}]);
    assert!(a.log("result", line).await?.agent_success());
    // A forged key is counted as an unauthorized outcome, not ok.
    let mut forged = s.agent(2);
    forged.node_key = Some("0123456789abcdef0123456789abcdef.1.AAAAAAAAAAAAAAAAAAAAAAAAAAA".into());
    let _ = forged.config().await?;
    let _ = s.get("/api/v1/hosts").await?;

    let http = reqwest::Client::new();
    for probe in ["/livez", "/readyz"] {
        let r = http.get(format!("{}{probe}", s.ops_url)).send().await?;
        assert_eq!(r.status().as_u16(), 200, "{probe}");
    }
    let r = http.get(format!("{}/metrics", s.ops_url)).send().await?;
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/openmetrics-text"))
    );
    let m = r.text().await?;
    // The server has a registry of its own: its counts are exact, whatever
    // other servers this test process runs.
    let count = |endpoint: &str, outcome: &str| {
        sample(
            &m,
            &format!(
                "gatehouse_edge_requests_total{{endpoint=\"/api/v1/osquery/{endpoint}\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    assert_eq!(count("enroll", "ok"), Some(1.0), "{m}");
    assert_eq!(count("log", "ok"), Some(1.0), "{m}");
    assert_eq!(count("config", "ok"), Some(1.0), "{m}");
    assert_eq!(
        count("config", "unauthorized"),
        Some(1.0),
        "the forged key's request is counted apart: {m}"
    );
    assert!(m.contains("gatehouse_edge_request_seconds_bucket{"), "{m}");
    assert_eq!(
        sample(
            &m,
            "gatehouse_api_requests_total{endpoint=\"/api/v1/hosts\",outcome=\"ok\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert!(m.contains("# TYPE gatehouse_hostd_actors gauge"), "{m}");

    // The embedded store's journal syncs and the batches they made
    // durable, as its readiness check (every 2 s) last read them, of its
    // database and of its log database: the enrollment and the log batch
    // were synced, never fewer batches than syncs.
    let [syncs, batches, log_syncs, log_batches] =
        gatehouse_tests::eventually(std::time::Duration::from_secs(10), || async {
            let m = s.metrics().await?;
            let n = [
                "gatehouse_store_journal_syncs_total ",
                "gatehouse_store_journal_batches_total ",
                "gatehouse_store_log_journal_syncs_total ",
                "gatehouse_store_log_journal_batches_total ",
            ]
            .map(|name| sample(&m, name).unwrap_or(0.0));
            Ok((n[0] >= 1.0 && n[1] >= 2.0 && n[2] >= 1.0 && n[3] >= 1.0).then_some(n))
        })
        .await?;
    assert!(batches >= syncs, "{batches} batches in {syncs} syncs");
    assert!(
        log_batches >= log_syncs,
        "{log_batches} log batches in {log_syncs} syncs"
    );
    s.stop().await?;
    Ok(())
}
