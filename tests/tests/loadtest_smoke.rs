//! The load harness against the real all-in-one server: a small steady run
//! (every acknowledged line is stored), then a live query answered by
//! every simulated host.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_loadtest::admin::{AdminClient, install_typical_schedule};
use gatehouse_loadtest::agent::{Answers, Fleet, Paths};
use gatehouse_loadtest::metrics::Metrics;
use gatehouse_loadtest::modes::{self, Mode, RunCfg, SweepCfg};
use gatehouse_loadtest::osinfo::OsMix;
use gatehouse_loadtest::schedule::Options;
use gatehouse_loadtest::transport::{Target, client_tls};
use gatehouse_tests::TestServer;

fn cfg(mode: Mode, hosts: usize) -> RunCfg {
    RunCfg {
        mode,
        hosts,
        duration: Duration::from_secs(6),
        ramp: Duration::from_secs(1),
        os_mix: OsMix::default(),
        run_id: 7,
        server_pid: None,
        progress: false,
        sweep: SweepCfg {
            start: 1,
            step: 1,
            step_duration: Duration::from_secs(1),
            max_hosts: 1,
            max_error_rate: 0.01,
            max_p99_ms: 1000.0,
        },
        live_sql: "SELECT * FROM osquery_info".into(),
        live_warmup: Duration::from_secs(1),
        live_timeout: Duration::from_secs(30),
        outage: Duration::from_secs(600),
        storm_timeout: Duration::from_secs(30),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_drives_the_all_in_one() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let tls = client_tls(&std::fs::read(&s.boot.ca_path)?)?;
    let port = |u: &str| {
        u.rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(0)
    };
    let agent_addr = ([127, 0, 0, 1], port(&s.agent_url)).into();
    let admin = Arc::new(AdminClient::new(
        ([127, 0, 0, 1], port(&s.api_url)).into(),
        "localhost",
        &s.boot.admin_token,
        tls.clone(),
    ));
    install_typical_schedule(&admin, false).await?;
    let metrics = Arc::new(Metrics::default());
    let fleet = Fleet {
        target: Arc::new(Target::new(
            agent_addr,
            &format!("localhost:{}", port(&s.agent_url)),
            tls,
            vec![],
        )?),
        paths: Paths::with_prefix("/api/v1/osquery"),
        enroll_secret: s.boot.enroll_secret.clone(),
        options: Options {
            logger_tls_period_ms: 1000,
            distributed_interval_ms: 1000,
            logger_tls_compress: true,
            ..Options::default()
        },
        config_refresh_ms: 2000,
        config_accelerated_refresh_ms: 2000,
        enroll_max_attempts: 3,
        logger_backoff_max_ms: 3_600_000,
        distributed: true,
        carver: false,
        carver_block_size: 8192,
        carve_size: 0,
        send_status_logs: true,
        pool: None,
        metrics: metrics.clone(),
        answers: Arc::new(Answers::default()),
        release: None,
        // Start with an hour of buffered output so lines flow at once.
        backlog_secs: 3600,
        second: Duration::from_secs(1),
    };
    let (_, cost, timeline) = modes::run(fleet.clone(), cfg(Mode::Steady, 20), None).await?;
    assert!(!timeline.is_empty());
    assert_eq!(cost["enrolled"], 20);
    let summary = metrics.summary();
    let failed: u64 = summary.iter().map(|e| e.requests - e.ok).sum();
    assert_eq!(failed, 0, "{summary:?}");
    assert!(
        summary
            .iter()
            .any(|e| e.endpoint == "config" && e.requests >= 40),
        "config refreshed: {summary:?}"
    );
    let acked = cost["lines_acked"].as_u64().unwrap_or(0);
    assert!(acked > 1000, "{cost}");
    // Every line the agents saw acknowledged is in the store.
    let hosts = s.get("/api/v1/hosts?limit=1000").await?;
    let mut stored = 0;
    for h in hosts["items"].as_array().cloned().unwrap_or_default() {
        let id = h["id"].as_str().unwrap_or_default();
        stored += s
            .get(&format!("/api/v1/results?host={id}&limit=10000"))
            .await?["items"]
            .as_array()
            .map_or(0, Vec::len);
        stored += s
            .get(&format!("/api/v1/hosts/{id}/status_logs?limit=10000"))
            .await?
            .as_array()
            .map_or(0, Vec::len);
    }
    assert_eq!(
        stored as u64, acked,
        "acknowledged lines missing from the store"
    );

    // A live query reaches every simulated host.
    let mut live = fleet;
    live.metrics = Arc::new(Metrics::default());
    live.backlog_secs = 0;
    let mut c = cfg(Mode::LiveQuery, 10);
    c.run_id = 8;
    let (result, _, _) = modes::run(live, c, Some(admin)).await?;
    assert_eq!(result["answered"], 10, "{result}");
    assert_eq!(result["server_coverage"]["answered"], 10, "{result}");
    assert_eq!(
        result["server_targeted"], 30,
        "the 20 hosts of the first run are enrolled but gone: {result}"
    );
    assert!(
        result["seconds_to_100pct"]
            .as_f64()
            .is_some_and(|t| t < 10.0),
        "{result}"
    );
    Ok(())
}

/// `--setup-schedule` leaves the operator's own definitions of the same
/// names alone unless forced, and a server that is not there is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_setup_keeps_the_operators_definitions() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let tls = client_tls(&std::fs::read(&s.boot.ca_path)?)?;
    let port = |u: &str| {
        u.rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(0)
    };
    let admin = AdminClient::new(
        ([127, 0, 0, 1], port(&s.api_url)).into(),
        "localhost",
        &s.boot.admin_token,
        tls.clone(),
    );
    let mine = "SELECT pid, name FROM processes WHERE on_disk = 0";
    admin
        .ok(
            "PUT",
            "/api/v1/queries/processes",
            &serde_json::json!({"sql": mine}),
        )
        .await?;
    admin
        .ok(
            "PUT",
            "/api/v1/schedules/processes",
            &serde_json::json!({"query": "processes", "interval": 7200, "snapshot": true, "labels": ["all"]}),
        )
        .await?;
    let schedule = |name: &'static str| {
        let admin = &admin;
        async move {
            let (_, all) = admin.call("GET", "/api/v1/schedules", None).await?;
            anyhow::Ok(
                all.as_array()
                    .into_iter()
                    .flatten()
                    .find(|d| d["name"] == name)
                    .cloned()
                    .unwrap_or_default(),
            )
        }
    };

    let done = install_typical_schedule(&admin, false).await?;
    assert_eq!(done.kept, ["processes"]);
    assert_eq!(done.written.len(), 11);
    assert_eq!(schedule("processes").await?["interval"], 7200);
    let (_, queries) = admin.call("GET", "/api/v1/queries", None).await?;
    assert!(
        queries
            .as_array()
            .into_iter()
            .flatten()
            .any(|q| q["name"] == "processes" && q["sql"] == mine),
        "{queries}"
    );
    // Run again: everything is the server's now, nothing is written.
    let again = install_typical_schedule(&admin, false).await?;
    assert!(again.written.is_empty(), "{again:?}");

    let forced = install_typical_schedule(&admin, true).await?;
    assert_eq!(forced.written.len(), 12);
    assert_eq!(schedule("processes").await?["interval"], 60);

    // Nothing listens: the error names the endpoint and the cause.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let err = Target::new(
        dead,
        &format!("localhost:{}", dead.port()),
        tls.clone(),
        vec![],
    )?
    .preflight()
    .await
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(err.contains(&format!("https://{dead}")), "{err}");
    assert!(err.to_lowercase().contains("refused"), "{err}");
    let err = AdminClient::new(dead, "localhost", "t", tls)
        .call("GET", "/api/v1/hosts", None)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains(&format!("https://{dead}")), "{err}");
    s.stop().await?;
    Ok(())
}
