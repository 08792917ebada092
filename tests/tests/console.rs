//! The web console in a real headless Chromium (Debian's), driven by
//! Playwright-core (`tests/browser/console.mjs`) against the real server
//! with agents enrolled: a person signs in (a wrong password first), sees
//! the overview and the enrolled hosts, searches one and opens it, picks
//! hosts for a live query (target count, osquery table and column
//! completion), runs one and watches the agents' rows arrive, exports
//! them as CSV, edits a schedule (the API's refusal shown next to the
//! field, then the host's config changing), downloads a carve byte for
//! byte, and signs out; an observer is offered no write controls and is
//! refused a live query and a schedule change forced from the page; an
//! admin manages tokens and filters the audit log; the session cookie's
//! flags and the CSRF refusal are checked from the page.
//! Also the console's own headers (no browser needed). Without chromium,
//! node or playwright-core (the test script installs them) the browser
//! part prints NOT RUN.

use std::path::Path;
use std::process::Command;

use std::time::Duration;

use gatehouse_tests::{TestServer, eventually};
use reqwest::Method;
use serde_json::json;

fn browser_ready(dir: &Path) -> bool {
    Path::new("/usr/bin/chromium").exists()
        && dir.join("node_modules/playwright-core").exists()
        && Command::new("node").arg("--version").output().is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_sees_the_fleet_and_signs_out_in_a_real_browser() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let admin = s.boot.admin_token.clone();

    // The page and its assets, with a strict content security policy.
    let r = s.http.get(format!("{}/", s.api_url)).send().await?;
    assert_eq!(r.status().as_u16(), 200);
    let csp = r
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(r.text().await?.contains("/console/app.js"));
    for asset in [
        "/console/app.js",
        "/console/app.css",
        "/console/osquery-schema.json",
    ] {
        let r = s.http.get(format!("{}{asset}", s.api_url)).send().await?;
        assert_eq!(r.status().as_u16(), 200, "{asset}");
    }

    s.create_user("ops", "operator").await?;
    s.create_user("viewer", "observer").await?;
    s.create_user("root", "admin").await?;
    let password = "console test passphrase";
    for user in ["ops", "viewer", "root"] {
        let (code, v) = s
            .call(
                &admin,
                Method::PUT,
                &format!("/api/v1/users/{user}/password"),
                Some(json!({"password": password})),
            )
            .await?;
        assert_eq!(code, 200, "{v}");
    }
    let mut hostnames = Vec::new();
    let mut agents = Vec::new();
    for n in 0..3 {
        let mut a = s.agent(n);
        assert!(a.enroll().await?.agent_success());
        let (_, h) = s
            .call(
                &admin,
                Method::GET,
                &format!("/api/v1/hosts/{}", a.host_id()),
                None,
            )
            .await?;
        hostnames.push(h["hostname"].as_str().unwrap_or_default().to_owned());
        agents.push(a);
    }

    // A schedule every host runs, for the console to edit.
    for (path, body) in [
        (
            "/api/v1/queries/uptime",
            json!({"sql": "SELECT * FROM uptime;"}),
        ),
        (
            "/api/v1/schedules/uptime",
            json!({"query": "uptime", "interval": 3600, "labels": ["all"]}),
        ),
    ] {
        let (code, v) = s.call(&admin, Method::PUT, path, Some(body)).await?;
        assert_eq!(code, 200, "{path}: {v}");
    }
    // What the first host logged: a scheduled query's rows and status
    // lines, one of them an error (the host page shows them).
    let t = chrono_secs();
    let r = agents[0]
        .log(
            "result",
            json!([{"name": "uptime", "hostIdentifier": hostnames[0], "unixTime": t,
                    "columns": {"days": "3", "hours": "4", "total_seconds": "273600"}, "action": "snapshot"}]),
        )
        .await?;
    assert!(r.agent_success(), "{r:?}");
    let r = agents[0]
        .log(
            "status",
            json!([
                {"hostIdentifier": hostnames[0], "unixTime": t, "severity": 0, "filename": "scheduler.cpp",
                 "line": 83, "message": "Executing scheduled query uptime: SELECT * FROM uptime;"},
                {"hostIdentifier": hostnames[0], "unixTime": t, "severity": 2, "filename": "distributed.cpp",
                 "line": 187, "message": "Error executing distributed query: no such table: foo"}
            ]),
        )
        .await?;
    assert!(r.agent_success(), "{r:?}");
    // A carve, asked for by a live query and sent by the first agent.
    let carved: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let (code, campaign) = s
        .call(
            &admin,
            Method::POST,
            "/api/v1/campaigns",
            Some(json!({"sql": "SELECT * FROM carves WHERE path = '/etc/hosts' AND carve = 1", "hosts": [agents[0].host_id().to_string()]})),
        )
        .await?;
    assert_eq!(code, 201, "{campaign}");
    carve(
        &agents[0],
        campaign["id"].as_str().unwrap_or_default(),
        &carved,
    )
    .await?;
    let session = {
        let (_, list) = s.call(&admin, Method::GET, "/api/v1/carves", None).await?;
        list[0]["session_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    eventually(Duration::from_secs(10), || async {
        let (_, c) = s
            .call(
                &admin,
                Method::GET,
                &format!("/api/v1/carves/{session}"),
                None,
            )
            .await?;
        Ok((c["state"] == "complete").then_some(()))
    })
    .await?;

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    if !browser_ready(&dir) {
        println!(
            "NOT RUN: the console in a real browser (needs /usr/bin/chromium, node and `npm ci` in tests/browser; the test script installs them)"
        );
        return s.stop().await.map(|_| ());
    }
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("console.mjs"))
        .current_dir(&dir)
        .env("GATEHOUSE_URL", &s.api_url)
        .env("GATEHOUSE_USER", "ops")
        .env("GATEHOUSE_PASSWORD", password)
        .env("VIEWER_USER", "viewer")
        .env("VIEWER_PASSWORD", password)
        .env("ADMIN_USER", "root")
        .env("ADMIN_PASSWORD", password)
        .env("SCHEDULE", "uptime")
        .env("LOGGING_HOST", agents[0].host_id())
        .env("CARVE_SHA256", gatehouse_core::ids::sha256_hex(&carved))
        .env("EXPECT_HOSTS", "3")
        .env("SEARCH", &hostnames[1]);
    if let Some(d) = std::env::var_os("GATEHOUSE_SCREENSHOTS") {
        cmd.env("SCREENSHOTS", d);
    }
    // The agents poll for live queries every 200 ms, as osquery's
    // distributed_interval would, and answer each with one row.
    let polling = gatehouse_runtime::Shutdown::new();
    let answering = {
        let stop = polling.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
            while !stop.is_triggered() {
                tick.tick().await;
                for a in &agents {
                    let Ok(r) = a.read().await else { continue };
                    let queries = r.json.unwrap_or_default()["queries"].clone();
                    for id in queries.as_object().into_iter().flat_map(|q| q.keys()) {
                        let _ = a
                            .write(json!({"queries": {id: [{"one": "1"}]}, "statuses": {id: 0}}))
                            .await;
                    }
                }
            }
        })
    };
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    polling.trigger();
    answering.await?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "the browser run failed:\n{text}");
    for step in [
        "ok: after signing out the API answers 401",
        "ok: the carve downloads, byte for byte",
        "ok: the audit log filters",
    ] {
        assert!(text.contains(step), "{step}:\n{text}");
    }
    // What the console changed, the API has.
    let (_, schedules) = s
        .call(&admin, Method::GET, "/api/v1/schedules", None)
        .await?;
    assert_eq!(schedules[0]["interval"], 120, "{schedules}");
    s.stop().await?;
    Ok(())
}

/// Now in whole seconds, as the agent stamps its lines.
fn chrono_secs() -> i64 {
    gatehouse_core::time::now_ms() / 1000
}

/// The agent's side of a carve (osquery-protocol.md: carve start, then
/// each block with the session id).
async fn carve(a: &gatehouse_tests::Agent, request_id: &str, data: &[u8]) -> anyhow::Result<()> {
    let block_size = 8192;
    let session = a
        .carve_begin(
            request_id,
            "5b1c1f46-4f8e-4a43-9c0d-1b2b1a2b3c4d",
            data.len(),
            block_size,
        )
        .await?;
    for (id, block) in data.chunks(block_size).enumerate() {
        let r = a.carve_block(&session, request_id, id, block).await?;
        anyhow::ensure!(r.agent_success(), "block {id}: {r:?}");
    }
    Ok(())
}
