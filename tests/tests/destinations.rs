//! Log destinations in the all-in-one: agents log, and every line reaches
//! a file (read the way a file shipper reads it, across rotations) and a
//! Splunk HEC collector, as the agent sent it. The collector is down at
//! first: agents never notice, and it catches up once back. After a
//! restart each destination goes on from its cursor without sending a
//! line twice.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use gatehouse_forward::DestinationConfig;
use gatehouse_testkit::process::Process;
use gatehouse_tests::TestServer;
use gatehouse_tests::webhook::WebhookReceiver;
use serde_json::{Value, json};

fn destinations(files: &Path, hec: &str, ops: &str) -> anyhow::Result<Vec<DestinationConfig>> {
    let toml = format!(
        r#"
[[destinations]]
name = "shipper"
[destinations.file]
dir = "{}"
rotate_bytes = 4096
keep = 1000
[destinations.pacing]
linger_ms = 0

[[destinations]]
name = "operators"
[destinations.webhook]
url = "{ops}/events"
[destinations.filter]
logs = ["audit", "alerts"]
[destinations.pacing]
linger_ms = 0

[[destinations]]
name = "pci"
[destinations.file]
dir = "{pci}"
[destinations.filter]
labels = ["pci"]
platforms = ["linux"]
[destinations.pacing]
linger_ms = 0

[[destinations]]
name = "siem"
[destinations.splunk_hec]
url = "{hec}"
token = "hec-token"
index = "osquery"
[destinations.filter]
logs = ["results"]
[destinations.pacing]
linger_ms = 0
"#,
        files.display(),
        pci = files.with_extension("pci").display()
    );
    #[derive(serde::Deserialize)]
    struct Doc {
        destinations: Vec<DestinationConfig>,
    }
    Ok(toml::from_str::<Doc>(&toml)?.destinations)
}

/// Every JSON line of the file destination, rotated files (gzipped)
/// first, the way a shipper reads them.
fn file_lines(dir: &Path) -> anyhow::Result<Vec<Value>> {
    use std::io::Read;
    let mut rotated: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "gz"))
        .collect();
    rotated.sort();
    let mut out = Vec::new();
    for p in rotated.iter().chain([&dir.join("osqueryd.results.log")]) {
        let raw = std::fs::read(p).unwrap_or_default();
        let mut text = String::new();
        if p.extension().is_some_and(|e| e == "gz") {
            flate2::read::GzDecoder::new(&raw[..]).read_to_string(&mut text)?;
        } else {
            text = String::from_utf8(raw)?;
        }
        anyhow::ensure!(
            text.is_empty() || text.ends_with('\n'),
            "{p:?} ends mid-line"
        );
        for l in text.lines() {
            out.push(serde_json::from_str(l)?);
        }
    }
    Ok(out)
}

/// The events the collector accepted.
fn hec_events(hec: &WebhookReceiver) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for h in hec.hits("/services/collector/event") {
        if !h.accepted {
            continue;
        }
        anyhow::ensure!(h.header("authorization") == Some("Splunk hec-token"));
        for l in h.raw.lines() {
            out.push(serde_json::from_str(l)?);
        }
    }
    Ok(out)
}

fn uid(v: &Value) -> String {
    v["columns"]["uid"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_reaches_each_destination_once_and_a_dead_one_catches_up() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let (data, files) = (dir.path().join("data"), dir.path().join("files"));
    let hec = WebhookReceiver::start().await?;
    hec.set_failing(true);
    let ops = WebhookReceiver::start().await?;
    let dests = destinations(&files, &hec.url, &ops.url)?;
    let s = TestServer::start_in(&data, |c| c.destinations = dests.clone()).await?;
    let mut agents = Vec::new();
    for n in 0..4 {
        let mut a = s.agent(n);
        assert!(a.enroll().await?.agent_success());
        agents.push(a);
    }
    // Host 0 is labelled pci: only its lines reach the "pci" destination.
    let (code, v) = s
        .api(
            reqwest::Method::PUT,
            &format!("/api/v1/hosts/{}/labels", agents[0].host_id()),
            Some(json!({"labels": ["pci"]})),
        )
        .await?;
    assert_eq!(code, 200, "{v}");
    // A rule that alerts on every users line of host 1 (the log action).
    let (code, v) = s
        .api(
            reqwest::Method::PUT,
            "/api/v1/rules/uid-watch",
            Some(json!({
                "when": {"event": "results", "query": "users",
                         "condition": {"column": "uid", "op": "regex", "value": "^1-0-0$"}},
                "actions": [{"type": "log"}]
            })),
        )
        .await?;
    assert_eq!(code, 200, "{v}");
    let mut sent = Vec::new();
    let post = async |round: usize, sent: &mut Vec<Value>| -> anyhow::Result<()> {
        for (n, a) in agents.iter().enumerate() {
            let lines: Vec<Value> = (0..5)
                .map(|i| json!({"name": "users", "hostIdentifier": format!("host-{n}"), "unixTime": 1_717_496_431, "columns": {"uid": format!("{n}-{round}-{i}")}, "action": "added", "decorations": {"env": "test"}}))
                .collect();
            // Agents never notice a destination: every batch is acknowledged.
            anyhow::ensure!(a.log("result", json!(lines.clone())).await?.agent_success());
            sent.extend(lines);
        }
        Ok(())
    };
    for round in 0..5 {
        post(round, &mut sent).await?;
    }
    // The file gets every line, exactly as the agent sent it, once.
    let want: BTreeSet<String> = sent.iter().map(|v| v.to_string()).collect();
    gatehouse_testkit::eventually(
        "the file has every line",
        Duration::from_secs(30),
        async || {
            let got = file_lines(&files)?;
            Ok::<_, anyhow::Error>((got.len() >= sent.len()).then_some(got))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
    .and_then(|got| {
        let got_set: BTreeSet<String> = got.iter().map(|v| v.to_string()).collect();
        anyhow::ensure!(
            got.len() == sent.len(),
            "no line twice: {} of {}",
            got.len(),
            sent.len()
        );
        anyhow::ensure!(got_set == want, "the lines as sent");
        Ok(())
    })?;
    assert!(
        std::fs::read_dir(&files)?.count() > 2,
        "the file was rotated (4 KiB) and the rotations compressed"
    );
    assert!(hec_events(&hec)?.is_empty(), "the collector is down");
    let pci = gatehouse_testkit::eventually("the pci file", Duration::from_secs(30), async || {
        let got = file_lines(&files.with_extension("pci"))?;
        Ok::<_, anyhow::Error>((got.len() >= 25).then_some(got))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(pci.len(), 25, "host 0's five rounds of five lines");
    assert!(
        pci.iter().all(|l| l["hostIdentifier"] == "host-0"),
        "only the pci host's lines"
    );

    // The collector comes back: the destination catches up by itself.
    hec.set_failing(false);
    let events = gatehouse_testkit::eventually(
        "the collector caught up",
        Duration::from_secs(60),
        async || {
            let ev = hec_events(&hec)?;
            Ok::<_, anyhow::Error>((ev.len() >= sent.len()).then_some(ev))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(events.len(), sent.len(), "each line once");
    let got: BTreeSet<String> = events.iter().map(|e| e["event"].to_string()).collect();
    assert_eq!(got, want, "each event is the line as sent");
    let e = &events[0];
    assert_eq!(e["index"], "osquery");
    assert_eq!(e["sourcetype"], "osquery:results");
    assert_eq!(e["time"], 1_717_496_431);
    assert!(e["host"].as_str().is_some_and(|h| h.starts_with("host-")));

    // The operators' destination got the audit records (final state) and
    // the alert; no agent line.
    let events = gatehouse_testkit::eventually(
        "operator events forwarded",
        Duration::from_secs(30),
        async || {
            let ev: Vec<Value> = ops
                .hits("/events")
                .iter()
                .flat_map(|h| h.body.as_array().cloned().unwrap_or_default())
                .collect();
            let has_alert = ev.iter().any(|e| e["rule"] == "uid-watch");
            let has_audit = ev
                .iter()
                .any(|e| e["action"] == "host.set_labels" && e["outcome"] == "accepted");
            Ok::<_, anyhow::Error>((has_alert && has_audit).then_some(ev))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert!(
        events.iter().all(|e| e["columns"].is_null()),
        "no agent lines"
    );
    assert!(
        events.iter().all(|e| e["outcome"] != "pending"),
        "final audit records only"
    );

    // Operators see each destination's state: the collector has every
    // event, and the destination shows them delivered with no lag once it
    // saved its cursor past them (the receiver may have the last batch a
    // moment before).
    let state = |list: &Value, name: &str| {
        list.as_array()
            .and_then(|a| a.iter().find(|d| d["name"] == name))
            .cloned()
            .unwrap_or_default()
    };
    let list = gatehouse_testkit::eventually(
        "the collector's destination caught up",
        Duration::from_secs(30),
        async || {
            let (code, list) = s
                .api(reqwest::Method::GET, "/api/v1/destinations", None)
                .await?;
            anyhow::ensure!(code == 200, "{list}");
            let siem = state(&list, "siem");
            Ok::<_, anyhow::Error>((siem["lag_lines"] == 0).then_some(list))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let siem = state(&list, "siem");
    assert_eq!(siem["kind"], "splunk_hec");
    assert_eq!(siem["delivered"], sent.len(), "each line delivered once");
    assert_eq!(state(&list, "shipper")["delivered"], sent.len());

    // Paused from the command line: it falls behind, agents do not notice;
    // resumed, it catches up. An observer may look but not pause.
    let observer = s.user_token("watcher", "observer").await?;
    let refused = s.ctl(&observer, &["destinations", "pause", "siem"])?;
    assert!(!refused.status.success(), "an observer cannot pause");
    let out = s.ctl(&s.boot.admin_token, &["destinations", "pause", "siem"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    post(5, &mut sent).await?;
    gatehouse_testkit::until(
        "the paused destination falls behind",
        Duration::from_secs(20),
        async || {
            let (_, list) = s
                .api(reqwest::Method::GET, "/api/v1/destinations", None)
                .await
                .unwrap_or_default();
            let d = state(&list, "siem");
            // The 20 new lines (and the audit records of the pause, which the
            // forward log holds too).
            d["paused"] == true && d["lag_lines"].as_u64().is_some_and(|l| l >= 20)
        },
    )
    .await;
    assert_eq!(
        hec_events(&hec)?.len(),
        sent.len() - 20,
        "nothing delivered while paused"
    );
    let out = s.ctl(&s.boot.admin_token, &["destinations", "resume", "siem"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    gatehouse_testkit::until(
        "resumed and caught up",
        Duration::from_secs(30),
        async || hec_events(&hec).is_ok_and(|e| e.len() == sent.len()),
    )
    .await;
    let listed = s.ctl(&s.boot.admin_token, &["destinations", "list"])?;
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(
        table.contains("siem") && table.contains("splunk_hec"),
        "{table}"
    );

    // A clean restart: each destination resumes at its cursor.
    let (data, _) = s.stop().await?;
    let s = TestServer::start_in(&data, |c| c.destinations = dests.clone()).await?;
    let mut more = Vec::new();
    for (n, a) in agents.iter_mut().enumerate() {
        a.set_base(s.agent_url.clone());
        let lines: Vec<Value> = (0..3)
            .map(|i| json!({"name": "users", "hostIdentifier": format!("host-{n}"), "unixTime": 1_717_496_500, "columns": {"uid": format!("{n}-after-{i}")}, "action": "added"}))
            .collect();
        anyhow::ensure!(a.log("result", json!(lines.clone())).await?.agent_success());
        more.extend(lines);
    }
    let total = sent.len() + more.len();
    gatehouse_testkit::until(
        "both caught up after the restart",
        Duration::from_secs(30),
        async || {
            file_lines(&files).is_ok_and(|l| l.len() >= total)
                && hec_events(&hec).is_ok_and(|e| e.len() >= total)
        },
    )
    .await;
    let file_uids: Vec<String> = file_lines(&files)?.iter().map(uid).collect();
    let hec_uids: Vec<String> = hec_events(&hec)?.iter().map(|e| uid(&e["event"])).collect();
    for (what, uids) in [("file", file_uids), ("collector", hec_uids)] {
        let distinct: BTreeSet<&String> = uids.iter().collect();
        assert_eq!(
            uids.len(),
            total,
            "{what}: nothing sent twice after a clean restart"
        );
        assert_eq!(distinct.len(), total, "{what}");
    }
    // Replay from the oldest retained line: the collector gets all again.
    let out = s.ctl(
        &s.boot.admin_token,
        &["destinations", "replay", "siem", "--oldest"],
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    gatehouse_testkit::until("replayed", Duration::from_secs(30), async || {
        hec_events(&hec).is_ok_and(|e| e.len() == 2 * total)
    })
    .await;
    s.stop().await?;
    Ok(())
}

/// A configuration file for `gatehouse serve` as a process in `dir`:
/// loopback ports of its own, data in `data`, no free-space floor, and the
/// given `[[destinations]]`. Returns the file and the agent, API and ops
/// ports.
fn serve_config(
    dir: &Path,
    data: &Path,
    destinations: &str,
) -> anyhow::Result<(std::path::PathBuf, u16, u16, u16)> {
    let (listen, api, ops) = (
        gatehouse_tests::free_port()?,
        gatehouse_tests::free_port()?,
        gatehouse_tests::free_port()?,
    );
    let config = dir.join("gatehouse.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:{listen}"
api_listen = "127.0.0.1:{api}"
ops_listen = "127.0.0.1:{ops}"
data_dir = "{data}"

[limits]
min_free_disk_bytes = 0

{destinations}"#,
            data = data.display(),
        ),
    )?;
    Ok((config, listen, api, ops))
}

/// `gatehouse serve` as a process (see [`spawn_serve`]), once its ops
/// port reports it ready.
async fn serve_ready(config: &Path, log: &Path, ops: u16) -> anyhow::Result<Process> {
    let server = spawn_serve(config, log)?;
    ready(ops).await?;
    Ok(server)
}

/// The configuration a served `config` runs with and its bootstrap
/// (CA, admin token, enroll secret).
fn bootstrap_of(
    config: &Path,
) -> anyhow::Result<(
    gatehouse::config::ServeConfig,
    gatehouse::bootstrap::Bootstrap,
)> {
    let cfg = gatehouse::config::ServeConfig::load(Some(config))?;
    let boot = gatehouse::bootstrap::prepare(&cfg)?;
    Ok((cfg, boot))
}

/// `gatehouse serve` as a process (killed when dropped), its output in
/// `log`.
fn spawn_serve(config: &Path, log: &Path) -> anyhow::Result<Process> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    Ok(Process(
        std::process::Command::new(gatehouse_tests::gatehouse_bin()?)
            .args(["serve", "--config"])
            .arg(config)
            .env_clear()
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?,
    ))
}

async fn ready(ops: u16) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{ops}/readyz");
    gatehouse_testkit::eventually("the server ready", Duration::from_secs(60), async || {
        Ok::<_, anyhow::Error>(
            reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
                .then_some(()),
        )
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The server is killed with SIGKILL while a slow receiver is taking its
/// batches; after a restart every acknowledged line reaches the receiver,
/// and no more than one batch (10 lines) arrives twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_delivery_delivers_every_line_with_at_most_one_batch_twice()
-> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let hook = WebhookReceiver::start().await?;
    hook.set_delay_ms(150);
    let (config, listen, api, ops) = serve_config(
        dir.path(),
        &dir.path().join("data"),
        &format!(
            r#"[[destinations]]
name = "siem"
[destinations.webhook]
url = "{url}/logs"
[destinations.pacing]
max_lines = 10
linger_ms = 0
"#,
            url = hook.url,
        ),
    )?;
    let log = dir.path().join("serve.log");
    let mut server = serve_ready(&config, &log, ops).await?;
    // The process runs without transparent huge pages (ADR 0046), on a
    // kernel that reports the flag.
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.id()))?;
    if let Some(thp) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
        assert_eq!(thp.split_whitespace().nth(1), Some("0"), "{thp}");
    }
    let (cfg, boot) = bootstrap_of(&config)?;
    let http = gatehouse_tests::client_for(&boot.ca_path)?;
    let base = format!("https://localhost:{listen}");
    let mut sent = BTreeSet::new();
    for n in 0..4 {
        let mut a = gatehouse_tests::Agent::at(&cfg, &boot, http.clone(), base.clone(), n);
        anyhow::ensure!(a.enroll().await?.agent_success());
        for round in 0..10 {
            let lines: Vec<Value> = (0..5)
                .map(|i| json!({"name": "users", "hostIdentifier": format!("host-{n}"), "unixTime": 1_717_496_431, "columns": {"uid": format!("{n}-{round}-{i}")}, "action": "added"}))
                .collect();
            anyhow::ensure!(a.log("result", json!(lines)).await?.agent_success());
            sent.extend((0..5).map(|i| format!("{n}-{round}-{i}")));
        }
    }
    let received = |hook: &WebhookReceiver| -> Vec<String> {
        hook.hits("/logs")
            .iter()
            .filter(|h| h.accepted)
            .flat_map(|h| h.body.as_array().cloned().unwrap_or_default())
            .map(|l| uid(&l))
            .collect()
    };
    // An operator defines a second destination with `ctl` (a file under
    // the data directory, from the oldest line), waits for it to catch up
    // and pauses it: it stays paused across the crash.
    let ctl = |args: &[&str]| -> anyhow::Result<Value> {
        let o = std::process::Command::new(gatehouse_tests::gatehouse_bin()?)
            .arg("ctl")
            .arg("--json")
            .args(args)
            .env_clear()
            .env("GATEHOUSE_URL", format!("https://localhost:{api}"))
            .env("GATEHOUSE_TOKEN", &boot.admin_token)
            .env("GATEHOUSE_CA", &boot.ca_path)
            .output()?;
        anyhow::ensure!(
            o.status.success(),
            "ctl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(serde_json::from_slice(&o.stdout).unwrap_or(Value::Null))
    };
    let def = dir.path().join("archive.toml");
    std::fs::write(
        &def,
        "start = \"oldest\"\n[file]\ndir = \"archive\"\n[pacing]\nlinger_ms = 0\n",
    )?;
    let put = ctl(&[
        "destinations",
        "put",
        "archive",
        "-f",
        &def.display().to_string(),
    ])?;
    assert_eq!(put[0]["source"], "api", "{put}");
    let archive = dir.path().join("data/destinations/archive");
    gatehouse_testkit::until(
        "the archive caught up",
        Duration::from_secs(30),
        async || file_lines(&archive).is_ok_and(|l| l.len() == sent.len()),
    )
    .await;
    let paused = ctl(&["destinations", "pause", "archive"])?;
    assert_eq!(paused[0]["paused"], true, "{paused}");
    // Mid-delivery: some batches are in, most are not.
    gatehouse_testkit::until("delivery under way", Duration::from_secs(30), async || {
        received(&hook).len() >= 30
    })
    .await;
    server.kill()?;
    server.wait()?;
    let before = received(&hook).len();
    assert!(
        before < sent.len(),
        "killed mid-delivery ({before} of {})",
        sent.len()
    );

    let mut server = serve_ready(&config, &log, ops).await?;
    hook.set_delay_ms(0);
    gatehouse_testkit::until(
        "every line delivered",
        Duration::from_secs(60),
        async || {
            let got: BTreeSet<String> = received(&hook).into_iter().collect();
            sent.is_subset(&got)
        },
    )
    .await;
    let got = received(&hook);
    let distinct: BTreeSet<&String> = got.iter().collect();
    assert_eq!(distinct.len(), sent.len(), "nothing but what was sent");
    let twice = got.len() - distinct.len();
    println!(
        "killed after {before} of {} lines delivered; {twice} delivered twice",
        sent.len()
    );
    assert!(twice <= 10, "at most one batch twice: {twice}");
    // The destination defined with ctl came back paused, then goes away.
    let listed = ctl(&["destinations", "list"])?;
    let archive_state = listed
        .as_array()
        .and_then(|a| a.iter().find(|d| d["name"] == "archive"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(archive_state["paused"], true, "{listed}");
    assert_eq!(archive_state["source"], "api", "{listed}");
    ctl(&["destinations", "delete", "archive"])?;
    let listed = ctl(&["destinations", "list"])?;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    server.kill()?;
    server.wait()?;
    Ok(())
}

/// The server is killed with SIGKILL right after it stored an audit record
/// and before it handed it to the forward log (planted in its store while
/// it is down, at the time of its last mark). Down for over 30 s, its
/// successor finds the mark stale at start and forwards that record; a
/// record stored before the mark is not sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_record_stored_as_the_server_died_is_forwarded_after_its_restart()
-> anyhow::Result<()> {
    use gatehouse_core::ports::{AuditStore, ForwardLog};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let hook = WebhookReceiver::start().await?;
    let data = dir.path().join("data");
    let (config, _, api, ops) = serve_config(
        dir.path(),
        &data,
        &format!(
            r#"[[destinations]]
name = "operators"
[destinations.webhook]
url = "{url}/events"
[destinations.filter]
logs = ["audit"]
[destinations.pacing]
linger_ms = 0
"#,
            url = hook.url,
        ),
    )?;
    let log = dir.path().join("serve.log");
    let mut server = serve_ready(&config, &log, ops).await?;
    // The api sets its mark before it serves its first call.
    let (_, boot) = bootstrap_of(&config)?;
    let listed = gatehouse_tests::client_for(&boot.ca_path)?
        .get(format!("https://localhost:{api}/api/v1/destinations"))
        .bearer_auth(&boot.admin_token)
        .send()
        .await?;
    assert!(listed.status().is_success(), "{}", listed.status());
    server.kill()?;
    server.wait()?;

    let clock = gatehouse_core::time::system_clock();
    let forward = gatehouse_forward::log::EmbeddedForwardLog::open(
        &data.join("forward"),
        gatehouse_forward::log::Retention::default(),
        clock.clone(),
    )?;
    let marks = forward
        .settings(gatehouse_api::audit_forward::MARKS)
        .await?;
    assert_eq!(marks.len(), 1, "the killed server's mark is left");
    // As if it had died over 30 s ago, the record in its last seconds.
    let died = clock.now_ms() - gatehouse_api::audit_forward::STALE_MS - 1_000;
    forward
        .put_setting(&marks[0].0, Some(format!("{died} {died}").into()))
        .await?;
    drop(forward);
    let store = gatehouse_store::EmbeddedStore::open(&data.join("store"))?;
    for (id, at) in [("before-the-mark", died - 1), ("as-it-died", died + 500)] {
        store
            .append_audit(&gatehouse_core::model::AuditEvent {
                id: id.into(),
                at,
                actor: "admin".into(),
                action: "query.put".into(),
                target: "processes".into(),
                outcome: "accepted".into(),
                detail: json!({}),
            })
            .await?;
    }
    drop(store);

    let mut server = serve_ready(&config, &log, ops).await?;
    let ids = || -> Vec<String> {
        hook.hits("/events")
            .iter()
            .flat_map(|h| h.body.as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["id"].as_str().map(str::to_owned))
            .collect()
    };
    gatehouse_testkit::until(
        "the record forwarded after the restart",
        Duration::from_secs(30),
        async || ids().iter().any(|id| id == "as-it-died"),
    )
    .await;
    assert!(
        !ids().iter().any(|id| id == "before-the-mark"),
        "{:?}",
        ids()
    );
    server.kill()?;
    server.wait()?;
    Ok(())
}
