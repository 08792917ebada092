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
    // Still ready (it serves everything but logs), and says why it refuses
    // them.
    let readyz = format!("{}/readyz", s.ops_url);
    let why = gatehouse_testkit::eventually(
        "readiness shows the refused logs",
        std::time::Duration::from_secs(10),
        async || {
            let r = reqwest::get(&readyz).await?;
            anyhow::ensure!(r.status().is_success(), "unready: {}", r.text().await?);
            let body: serde_json::Value = r.json().await?;
            Ok(body["checks"]["store"]
                .as_str()
                .filter(|w| w.starts_with("degraded"))
                .map(str::to_owned))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert!(why.contains("disk nearly full at"), "{why}");
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

/// The disk filled to its last byte under logging agents (a real tmpfs;
/// NOT RUN without root): log batches get the osquery error body, the
/// server is unready and says "disk full at PATH: N bytes free" at
/// `/readyz` and in its metrics; once space is freed it is ready again and
/// takes batches without a restart, every acknowledged line is stored
/// exactly once, and a file destination gets each of them once (the
/// forward log on the same disk recovers too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_makes_the_server_unready_until_space_is_freed() -> anyhow::Result<()> {
    let Some(fs) = gatehouse_testkit::tmpfs::Tmpfs::mount(64, "the all-in-one full-disk test")
    else {
        return Ok(());
    };
    let data = fs.path().join("data");
    // A file destination (off the full disk) forwards every stored line.
    let shipped = tempfile::tempdir()?;
    let dest: gatehouse_forward::DestinationConfig = serde_json::from_value(json!({
        "name": "shipper",
        "file": {"dir": shipped.path()},
        "pacing": {"linger_ms": 0}
    }))?;
    let s = TestServer::start_in(&data, |c| {
        c.limits.min_free_disk_bytes = 8 << 20;
        c.destinations = vec![dest];
    })
    .await?;
    let mut agents = Vec::new();
    for n in 0..4 {
        let mut a = s.agent(n);
        assert!(a.enroll().await?.agent_success());
        agents.push(a);
    }
    let mut acked = vec![0usize; agents.len()];
    // One POST of 5 distinct lines per agent; returns the refusals.
    let post = async |round: u32, acked: &mut Vec<usize>| -> anyhow::Result<usize> {
        let mut refused = 0;
        for (n, a) in agents.iter().enumerate() {
            let lines: Vec<_> = (0..5)
                .map(|i| json!({"name": "users", "unixTime": 1_717_496_431, "columns": {"uid": format!("{round}-{i}")}, "action": "added"}))
                .collect();
            let r = a.log("result", json!(lines)).await?;
            if r.agent_success() {
                acked[n] += 5;
            } else {
                assert!(r.is_error_body() && !r.node_invalid(), "{r:?}");
                refused += 1;
            }
        }
        Ok(refused)
    };
    assert_eq!(post(0, &mut acked).await?, 0);

    let ballast = fs.fill_up()?;
    let readyz = format!("{}/readyz", s.ops_url);
    let http = reqwest::Client::new();
    let why = gatehouse_testkit::eventually(
        "the server unready",
        std::time::Duration::from_secs(30),
        async || {
            let r = http.get(&readyz).send().await?;
            if r.status().as_u16() != 503 {
                return Ok::<_, anyhow::Error>(None);
            }
            let body: serde_json::Value = r.json().await?;
            // The forward log, on the same disk, is failing too.
            let forward = body["checks"]["forward_log"].as_str().unwrap_or("");
            if !(forward.starts_with("failing") && forward.contains("disk full at")) {
                return Ok(None);
            }
            Ok(body["checks"]["store"].as_str().map(str::to_owned))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert!(
        why.contains(&format!("disk full at {}", data.join("store").display()))
            && why.contains("bytes free"),
        "{why}"
    );
    assert_eq!(
        post(1, &mut acked).await?,
        agents.len(),
        "every batch refused"
    );
    let metrics = s.metrics().await?;
    assert!(metrics.contains("gatehouse_ready 0"), "{metrics}");
    assert!(
        metrics.contains("gatehouse_check_status{check=\"store\"} 2"),
        "{metrics}"
    );

    std::fs::remove_file(&ballast)?;
    gatehouse_testkit::eventually(
        "the server ready again",
        std::time::Duration::from_secs(60),
        async || {
            Ok::<_, anyhow::Error>(
                http.get(&readyz)
                    .send()
                    .await?
                    .status()
                    .is_success()
                    .then_some(()),
            )
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    // The agents' next attempts succeed (they re-send what was refused).
    let mut round = 1;
    gatehouse_testkit::eventually(
        "log batches acknowledged again",
        std::time::Duration::from_secs(30),
        async || {
            round += 1;
            Ok::<_, anyhow::Error>((post(round, &mut acked).await? == 0).then_some(()))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (a, want) in agents.iter().zip(&acked) {
        let (code, v) = s
            .api(
                reqwest::Method::GET,
                &format!("/api/v1/results?host={}&limit=10000", a.host_id()),
                None,
            )
            .await?;
        assert_eq!(code, 200, "{v}");
        let stored = v["items"].as_array().map_or(0, Vec::len);
        assert_eq!(stored, *want, "exactly the acknowledged lines");
    }
    // The forward log recovered with the store: the destination has every
    // acknowledged line, once.
    let total: usize = acked.iter().sum();
    let file = shipped.path().join("osqueryd.results.log");
    gatehouse_testkit::until(
        "every line forwarded",
        std::time::Duration::from_secs(30),
        async || std::fs::read_to_string(&file).is_ok_and(|t| t.lines().count() >= total),
    )
    .await;
    let text = std::fs::read_to_string(&file)?;
    assert_eq!(text.lines().count(), total, "each acknowledged line once");
    assert!(
        text.lines().all(|l| l.contains("\"name\":\"users\"")),
        "the lines as sent"
    );
    s.stop().await?;
    Ok(())
}
