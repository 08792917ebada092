//! The server configured with a ScyllaDB store (`store.kind = "scylla"`)
//! creates its schema and serves agents: enrollment, config, logs, a live
//! query, host listing, and a restart that finds everything again. The
//! CQL server is kassandra in-process (the real `scylla` driver over TCP);
//! what kassandra cannot execute is covered in `gatehouse-store`'s
//! `real_*` tests against a real node.

use gatehouse::config::StoreKind;
use gatehouse_store::ScyllaConfig;
use gatehouse_store::cql_test_server::CqlTestServer;
use gatehouse_tests::TestServer;
use reqwest::Method;
use serde_json::json;

fn on_cql(addr: std::net::SocketAddr) -> impl FnOnce(&mut gatehouse::config::ServeConfig) {
    move |cfg| {
        cfg.store.kind = StoreKind::Scylla;
        cfg.store.scylla = ScyllaConfig {
            contact_points: vec![addr.to_string()],
            keyspace: "gatehouse_e2e".into(),
            // A single in-process node sends no schema events.
            await_schema_agreement: false,
            ..ScyllaConfig::default()
        };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_are_served_from_a_cql_store_across_a_restart() -> anyhow::Result<()> {
    let cql = CqlTestServer::start().await?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let s = TestServer::start_in(&data, on_cql(cql.addr())).await?;

    let mut agents = Vec::new();
    for n in 0..4 {
        let mut a = s.agent(n);
        assert!(a.enroll().await?.agent_success());
        assert!(a.config().await?.agent_success());
        agents.push(a);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let mut acked = 0usize;
    for round in 0..5i64 {
        for a in &agents {
            let data: Vec<_> = (0..8)
                .map(|i| json!({"name": "users", "unixTime": now - 600 + round, "columns": {"uid": format!("{round}-{i}")}, "action": "added"}))
                .collect();
            let r = a.log("result", json!(data)).await?;
            assert!(r.agent_success(), "{r:?}");
            acked += 8;
            // A re-send after a lost acknowledgement stores nothing new.
            assert!(a.log("result", json!(data)).await?.agent_success());
        }
    }
    let st = agents[0]
        .log(
            "status",
            json!([{"severity": 0, "unixTime": now, "message": "osqueryd started", "filename": "init.cpp", "line": 1}]),
        )
        .await?;
    assert!(st.agent_success());

    // Results are kept per host; a fleet-wide search by name says so.
    let mut total = 0;
    for a in &agents {
        let one = s
            .get(&format!(
                "/api/v1/results?host={}&name=users&limit=10000",
                a.host_id()
            ))
            .await?;
        assert_eq!(
            one["items"].as_array().map(Vec::len),
            Some(acked / agents.len())
        );
        total += acked / agents.len();
    }
    assert_eq!(total, acked);
    let (code, body) = s
        .api(Method::GET, "/api/v1/results?name=users", None)
        .await?;
    assert_eq!(code, 400, "{body}");
    assert!(body.to_string().contains("give a host_id"), "{body}");
    let (code, body) = s.api(Method::GET, "/api/v1/results", None).await?;
    assert_eq!(code, 400, "{body}");

    // A live query: every host gets it, answers land in the store.
    let (code, c) = s
        .api(
            Method::POST,
            "/api/v1/campaigns",
            Some(json!({"sql": "SELECT 1 AS one", "all": true, "expires_in": 600})),
        )
        .await?;
    assert_eq!(code, 201, "{c}");
    let id = c["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(c["coverage"]["targeted"], 4);
    for a in &agents[..3] {
        let r = a
            .answer_within(
                &id,
                json!([{"one": "1"}]),
                std::time::Duration::from_secs(5),
            )
            .await?;
        assert_eq!(r["queries"][&id], "SELECT 1 AS one");
    }
    let d = s.get(&format!("/api/v1/campaigns/{id}")).await?;
    assert_eq!(d["coverage"]["answered"], 3, "{d}");
    assert_eq!(d["non_responders"], json!([agents[3].host_id()]));

    let (dir_path, _) = s.stop().await?;
    let s = TestServer::start_in(&dir_path, on_cql(cql.addr())).await?;
    for a in &mut agents {
        a.base = s.agent_url.clone();
        a.http = s.http.clone();
        assert!(a.config().await?.agent_success(), "node key still valid");
    }
    let mut after = 0;
    for a in &agents {
        after += s
            .get(&format!("/api/v1/results?host={}&limit=10000", a.host_id()))
            .await?["items"]
            .as_array()
            .map_or(0, Vec::len);
    }
    assert_eq!(after, acked, "acknowledged lines lost across the restart");
    let hosts = s.get("/api/v1/hosts?limit=2").await?;
    assert_eq!(hosts["items"].as_array().map(Vec::len), Some(2), "{hosts}");
    let next = hosts["next"].as_str().unwrap_or_default().to_owned();
    let rest = s
        .get(&format!("/api/v1/hosts?limit=10&after={next}"))
        .await?;
    assert_eq!(rest["items"].as_array().map(Vec::len), Some(2), "{rest}");
    // Labels land in the store's label index; filtered listings read it.
    let (code, v) = s
        .api(
            Method::PUT,
            &format!("/api/v1/hosts/{}/labels", agents[2].host_id()),
            Some(json!({"labels": ["db"]})),
        )
        .await?;
    assert_eq!(code, 200, "{v}");
    let db = s.get("/api/v1/hosts?label=db").await?;
    assert_eq!(db["items"].as_array().map(Vec::len), Some(1), "{db}");
    assert_eq!(db["items"][0]["id"], agents[2].host_id());
    let linux = s.get("/api/v1/hosts?platform=linux&limit=3").await?;
    assert_eq!(linux["items"].as_array().map(Vec::len), Some(3), "{linux}");
    let rest = s
        .get(&format!(
            "/api/v1/hosts?platform=linux&limit=3&after={}",
            linux["next"].as_str().unwrap_or_default()
        ))
        .await?;
    assert_eq!(rest["items"].as_array().map(Vec::len), Some(1), "{rest}");
    // The host that never answered still has the query waiting.
    let r = agents[3].read().await?.json.unwrap_or_default();
    assert_eq!(r["queries"][&id], "SELECT 1 AS one");
    s.stop().await?;
    Ok(())
}
