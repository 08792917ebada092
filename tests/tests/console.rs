//! The web console in a real headless Chromium (Debian's), driven by
//! Playwright-core (`tests/browser/console.mjs`) against the real server
//! with agents enrolled: a person signs in (a wrong password first), sees
//! the overview and the enrolled hosts, searches one and opens it, runs a
//! live query and watches the agents' rows arrive, exports them as CSV,
//! and signs out; an observer is offered no Run button and is refused a
//! live query forced from the page; the
//! session cookie's flags and the CSRF refusal are checked from the page.
//! Also the console's own headers (no browser needed). Without chromium,
//! node or playwright-core (the test script installs them) the browser
//! part prints NOT RUN.

use std::path::Path;
use std::process::Command;

use gatehouse_tests::TestServer;
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
    for asset in ["/console/app.js", "/console/app.css"] {
        let r = s.http.get(format!("{}{asset}", s.api_url)).send().await?;
        assert_eq!(r.status().as_u16(), 200, "{asset}");
    }

    s.create_user("ops", "operator").await?;
    s.create_user("viewer", "observer").await?;
    let password = "console test passphrase";
    for user in ["ops", "viewer"] {
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
    assert!(
        text.contains("ok: after signing out the API answers 401"),
        "{text}"
    );
    s.stop().await?;
    Ok(())
}
