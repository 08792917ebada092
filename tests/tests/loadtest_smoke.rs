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
        live_single: 0,
        live_window: Duration::from_secs(2),
        outage: Duration::from_secs(600),
        storm_timeout: Duration::from_secs(30),
    }
}

fn port(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(0)
}

/// Simulated agents against `s`, fast intervals, an hour of buffered
/// output so lines flow at once.
fn fleet(
    s: &TestServer,
    tls: Arc<rustls::ClientConfig>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Fleet> {
    let agents = port(&s.agent_url);
    Ok(Fleet {
        target: Arc::new(Target::new(
            ([127, 0, 0, 1], agents).into(),
            &format!("localhost:{agents}"),
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
        metrics,
        answers: Arc::new(Answers::default()),
        release: None,
        backlog_secs: 3600,
        second: Duration::from_secs(1),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_drives_the_all_in_one() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let tls = client_tls(&std::fs::read(&s.boot.ca_path)?)?;
    let admin = Arc::new(AdminClient::new(
        ([127, 0, 0, 1], port(&s.api_url)).into(),
        "localhost",
        &s.boot.admin_token,
        tls.clone(),
    ));
    install_typical_schedule(&admin, false).await?;
    let metrics = Arc::new(Metrics::default());
    let fleet = fleet(&s, tls, metrics.clone())?;
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
    let (result, _, _) = modes::run(live.clone(), c, Some(admin.clone())).await?;
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

    // Campaigns to one host each, created at once: each reaches its host,
    // and both check-in windows saw requests.
    live.metrics = Arc::new(Metrics::default());
    let mut c = cfg(Mode::LiveQuery, 10);
    c.run_id = 9;
    c.live_single = 5;
    let (single, _, _) = modes::run(live, c, Some(admin)).await?;
    assert_eq!(single["created"], 5, "{single}");
    assert_eq!(single["refused"], 0, "{single}");
    assert_eq!(single["answered"], 5, "{single}");
    assert!(
        single["seconds_to_answer"]["max"]
            .as_f64()
            .is_some_and(|t| t < 10.0),
        "{single}"
    );
    for w in ["before", "during"] {
        assert!(
            single["distributed_read_ms"][w]["requests"]
                .as_u64()
                .is_some_and(|n| n > 0),
            "{single}"
        );
    }
    Ok(())
}

/// `--setup-schedule` leaves the operator's own definitions of the same
/// names alone unless forced, and a server that is not there is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_setup_keeps_the_operators_definitions() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let tls = client_tls(&std::fs::read(&s.boot.ca_path)?)?;
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

/// The starter packs (`examples/packs`) apply cleanly with `ctl apply`,
/// twice without a change, and every simulated agent runs its platform's
/// pack (and the privacy pack on macOS and Linux), nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starter_packs_apply_and_agents_run_them() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/packs");
    let apply = || -> anyhow::Result<std::process::Output> {
        Ok(
            std::process::Command::new(gatehouse_tests::gatehouse_bin()?)
                .args(["ctl", "--data"])
                .arg(&s.boot.data_dir)
                .args(["--url", &s.api_url, "apply", "-f"])
                .arg(&root)
                .arg("-f")
                .arg(root.join("privacy"))
                .env_clear()
                .output()?,
        )
    };
    let first = apply()?;
    let out = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let schedules: Vec<(String, String)> = s
        .get("/api/v1/schedules")
        .await?
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            (
                d["name"].as_str().unwrap_or_default().to_owned(),
                d["pack"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(schedules.len(), 34, "{out}");
    assert!(out.contains("68 to create"), "{out}");
    let again = String::from_utf8_lossy(&apply()?.stdout).into_owned();
    assert!(
        again.contains("0 to create, 0 to change, 68 unchanged"),
        "{again}"
    );

    let tls = client_tls(&std::fs::read(&s.boot.ca_path)?)?;
    let fleet = fleet(&s, tls, Arc::new(Metrics::default()))?;
    // Two days of buffered output (every query fired at least once: a
    // daily interval is splayed up to 10 % longer), sent once the
    // "outage" ends; the run waits, bounded, until every agent drained it.
    let mut c = cfg(Mode::Storm, 6);
    c.outage = Duration::from_secs(2 * 86_400);
    c.storm_timeout = Duration::from_secs(60);
    c.os_mix = "macos=1,ubuntu=1,windows=1"
        .parse()
        .map_err(anyhow::Error::msg)?;
    let (result, cost, _) = modes::run(fleet, c, None).await?;
    assert_eq!(cost["enrolled"], 6, "{cost}");
    assert_eq!(
        result["drained"], true,
        "every agent sent its backlog: {result}"
    );

    let hosts = s.get("/api/v1/hosts?limit=100").await?;
    let mut seen_platforms = std::collections::BTreeSet::new();
    for h in hosts["items"].as_array().cloned().unwrap_or_default() {
        let id = h["id"].as_str().unwrap_or_default();
        let platform = h["platform"].as_str().unwrap_or_default().to_owned();
        let lines = s
            .get(&format!("/api/v1/results?host={id}&limit=10000"))
            .await?;
        let names: std::collections::BTreeSet<String> = lines["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["name"].as_str().map(str::to_owned))
            .collect();
        let prefix = match platform.as_str() {
            "darwin" => "macos_",
            "linux" => "linux_",
            "windows" => "windows_",
            other => panic!("unexpected platform {other}"),
        };
        let mut expected: std::collections::BTreeSet<String> = schedules
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(n, p)| format!("pack_{p}_{n}"))
            .collect();
        if platform != "windows" {
            expected.insert("pack_privacy_sensitive_shell_history".into());
        }
        assert_eq!(names, expected, "{platform} host {id}");
        seen_platforms.insert(platform);
    }
    assert_eq!(seen_platforms.len(), 3, "{seen_platforms:?}");
    s.stop().await?;
    Ok(())
}
