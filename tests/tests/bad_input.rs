//! Garbage in: every bad request gets a clear error (an osquery error body
//! for agents, a 4xx JSON error for operators), and nothing stored changes.

use std::io::Write;

use gatehouse_tests::{Agent, TestServer};
use reqwest::Method;
use serde_json::{Value, json};

type R = anyhow::Result<()>;

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(9));
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

async fn snapshot(s: &TestServer, host: &str) -> anyhow::Result<(Value, Value, Value)> {
    Ok((
        s.get(&format!("/api/v1/hosts/{host}")).await?,
        s.get(&format!("/api/v1/results?host={host}")).await?,
        s.get("/api/v1/hosts").await?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_get_error_bodies_and_nothing_is_harmed() -> R {
    let s = TestServer::start_in(&tempfile::tempdir()?.keep().join("d"), |c| {
        c.limits.max_body_bytes = 256 * 1024;
        c.limits.max_inflated_bytes = 1024 * 1024;
    })
    .await?;
    let mut a = s.agent(1);
    a.enroll().await?;
    let good =
        json!([{"name": "q", "unixTime": 1_717_496_431, "columns": {"a": "1"}, "action": "added"}]);
    assert!(a.log("result", good).await?.agent_success());
    let host = a.host_id();
    let before = snapshot(&s, &host).await?;
    let log = a.paths.logger.clone();
    let key = a.node_key.clone().unwrap_or_default();

    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("malformed json", b"{\"node_key\": ".to_vec(), false),
        (
            "truncated json",
            format!("{{\"node_key\":\"{key}\",\"log_type\":\"result\",\"data\":[{{\"name\":")
                .into_bytes(),
            false,
        ),
        ("array root", b"[1,2,3]".to_vec(), false),
        ("scalar root", b"\"hello\"".to_vec(), false),
        (
            "wrong log_type type",
            serde_json::to_vec(&json!({"node_key": key, "log_type": 5, "data": []}))?,
            false,
        ),
        (
            "unknown log_type",
            serde_json::to_vec(&json!({"node_key": key, "log_type": "debug", "data": []}))?,
            false,
        ),
        (
            "data not array",
            serde_json::to_vec(&json!({"node_key": key, "log_type": "result", "data": {"a": 1}}))?,
            false,
        ),
        (
            "data with scalars",
            serde_json::to_vec(&json!({"node_key": key, "log_type": "result", "data": [1, "x"]}))?,
            false,
        ),
        (
            "oversized body",
            serde_json::to_vec(
                &json!({"node_key": key, "log_type": "result", "data": [{"x": "y".repeat(300_000)}]}),
            )?,
            false,
        ),
        ("invalid gzip", b"definitely not gzip".to_vec(), true),
        ("empty gzip", Vec::new(), true),
        ("gzip bomb", gz(&vec![b' '; 20 * 1024 * 1024]), true),
        (
            "truncated gzip",
            {
                let g = gz(serde_json::to_vec(
                    &json!({"node_key": key, "log_type": "result", "data": []}),
                )?
                .as_slice());
                g[..g.len() / 2].to_vec()
            },
            true,
        ),
    ];
    for (name, body, gzip) in cases {
        let r = a.post_raw(&log, body, true, gzip).await?;
        assert!(
            r.is_error_body(),
            "{name}: expected an error body, got {} {:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            !r.agent_success(),
            "{name}: the agent would delete its logs"
        );
        assert!(
            (400..500).contains(&r.status),
            "{name}: status {}",
            r.status
        );
    }

    // Missing and forged keys: node_invalid, so the agent re-enrolls.
    let mut anon = Agent::new(&s, 9);
    for (name, k) in [
        ("missing", None),
        (
            "forged",
            Some(format!("{host}.1.AAAAAAAAAAAAAAAAAAAAAAAAAAA")),
        ),
        ("garbage", Some("x".to_owned())),
    ] {
        anon.node_key = k;
        for path in [
            a.paths.config.clone(),
            a.paths.logger.clone(),
            a.paths.read.clone(),
            a.paths.write.clone(),
        ] {
            let r = anon
                .post(&path, json!({"log_type": "result", "data": []}))
                .await?;
            assert!(
                r.node_invalid() && r.is_error_body(),
                "{name} key on {path}: {r:?}"
            );
        }
    }
    // A key from another server (another HMAC secret) is forged too.
    let other = TestServer::start().await?;
    let mut foreign = other.agent(1);
    foreign.enroll().await?;
    let mut stray = Agent::new(&s, 1);
    stray.node_key = foreign.node_key.clone();
    assert!(stray.config().await?.node_invalid());

    // Unknown paths and wrong methods.
    let r = a
        .post_raw("/api/v1/osquery/nope", b"{}".to_vec(), true, false)
        .await?;
    assert!(r.is_error_body() && r.status == 404, "{r:?}");
    let resp = s
        .http
        .get(format!("{}{}", s.agent_url, a.paths.config))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 405);
    let body: Value = resp.json().await?;
    assert!(body["error"].is_string());

    // Wrong types in enroll and distributed write.
    let r = a
        .post_raw(
            &a.paths.enroll.clone(),
            serde_json::to_vec(&json!({"enroll_secret": 1}))?,
            false,
            false,
        )
        .await?;
    assert!(r.is_error_body() && r.json.as_ref().and_then(|j| j.get("node_key")).is_none());
    let r = a
        .post_raw(
            &a.paths.enroll.clone(),
            serde_json::to_vec(
                &json!({"enroll_secret": s.boot.enroll_secret, "host_details": []}),
            )?,
            false,
            false,
        )
        .await?;
    assert!(r.is_error_body(), "{r:?}");
    let r = a.write(json!({"queries": {"q": "not rows"}})).await?;
    assert!(r.is_error_body(), "{r:?}");
    let r = a
        .write(json!({"queries": {"q": []}, "statuses": {"q": "zero"}}))
        .await?;
    assert!(r.is_error_body(), "{r:?}");

    let after = snapshot(&s, &host).await?;
    assert_eq!(before.1, after.1, "stored results changed");
    assert_eq!(
        before.2["items"].as_array().map(Vec::len),
        after.2["items"].as_array().map(Vec::len),
        "hosts changed"
    );
    assert_eq!(before.0["key_epoch"], after.0["key_epoch"]);
    // And the host still works.
    assert!(a.config().await?.agent_success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_get_4xx_with_messages() -> R {
    let s = TestServer::start().await?;
    // No token, wrong token.
    let r = s
        .http
        .get(format!("{}/api/v1/hosts", s.api_url))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.json::<Value>().await?["error"].is_string());
    let r = s
        .http
        .get(format!("{}/api/v1/hosts", s.api_url))
        .bearer_auth("nope")
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 401);
    // Health needs no token.
    let r = s.http.get(format!("{}/readyz", s.api_url)).send().await?;
    assert_eq!(r.status().as_u16(), 200);
    // Query-string errors answer the JSON error body and name the field.
    for (query, needle) in [("limit=abc", "limit: "), ("lable=x", "lable")] {
        let (st, v) = s
            .api(Method::GET, &format!("/api/v1/hosts?{query}"), None)
            .await?;
        assert_eq!(st, 400, "{query}: {v}");
        let e = v["error"].as_str().unwrap_or("");
        assert!(
            e.starts_with("invalid query string") && e.contains(needle),
            "{e}"
        );
    }
    // Malformed and mistyped bodies name the problem.
    let r = s
        .http
        .put(format!("{}/api/v1/queries/q", s.api_url))
        .bearer_auth(&s.boot.admin_token)
        .body("{\"sql\": ")
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 400);
    assert!(
        r.json::<Value>().await?["error"]
            .as_str()
            .unwrap_or("")
            .contains("invalid request body")
    );
    let (st, v) = s
        .api(
            Method::PUT,
            "/api/v1/queries/q",
            Some(json!({"sql": "SELECT 1", "sqll": "typo"})),
        )
        .await?;
    assert_eq!(st, 400);
    assert!(v["error"].as_str().unwrap_or("").contains("sqll"), "{v}");
    let (st, _) = s
        .api(
            Method::PUT,
            "/api/v1/queries/bad%20name",
            Some(json!({"sql": "SELECT 1"})),
        )
        .await?;
    assert_eq!(st, 400);
    let (st, _) = s
        .api(
            Method::PUT,
            "/api/v1/schedules/s",
            Some(json!({"query": "q", "interval": "often", "labels": ["all"]})),
        )
        .await?;
    assert_eq!(st, 400);
    // Not an id: looked up as a hostname or host identifier (hosts are
    // addressable by name), and no host has it.
    let (st, e) = s.api(Method::GET, "/api/v1/hosts/not-a-host", None).await?;
    assert_eq!(st, 404, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no host has this id, hostname or host identifier"),
        "{e}"
    );
    let (st, _) = s
        .api(
            Method::GET,
            "/api/v1/hosts/0123456789abcdef0123456789abcdef",
            None,
        )
        .await?;
    assert_eq!(st, 404);
    let (st, _) = s.api(Method::GET, "/api/v1/campaigns/nope", None).await?;
    assert_eq!(st, 404);
    let (st, _) = s.api(Method::GET, "/api/v1/nothing-here", None).await?;
    assert_eq!(st, 404);
    let (st, _) = s.api(Method::DELETE, "/api/v1/hosts", None).await?;
    assert_eq!(st, 405);
    // Deleting: missing things are 404, a query still scheduled is refused.
    let (st, _) = s
        .api(Method::DELETE, "/api/v1/schedules/nope", None)
        .await?;
    assert_eq!(st, 404);
    let (st, _) = s
        .api(Method::DELETE, "/api/v1/label_configs/nope", None)
        .await?;
    assert_eq!(st, 404);
    s.api(
        Method::PUT,
        "/api/v1/queries/q",
        Some(json!({"sql": "SELECT 1"})),
    )
    .await?;
    s.api(
        Method::PUT,
        "/api/v1/schedules/s",
        Some(json!({"query": "q", "interval": 60, "labels": ["all"]})),
    )
    .await?;
    let (st, v) = s.api(Method::DELETE, "/api/v1/queries/q", None).await?;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap_or("").contains("schedules"),
        "{v}"
    );
    let (st, _) = s.api(Method::DELETE, "/api/v1/schedules/s", None).await?;
    assert_eq!(st, 204);
    let (st, _) = s.api(Method::DELETE, "/api/v1/queries/q", None).await?;
    assert_eq!(st, 204);
    assert_eq!(s.get("/api/v1/queries").await?, json!([]));
    let (st, v) = s
        .api(
            Method::PUT,
            "/api/v1/hosts/0123456789abcdef0123456789abcdef/labels",
            Some(json!({"labels": ["all"]})),
        )
        .await?;
    assert_eq!(st, 400, "{v}");
    Ok(())
}
