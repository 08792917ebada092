//! The osquery TLS API end to end: real TLS, a real HTTP client, the
//! request shapes of the wire spec, against the all-in-one server.

use std::time::Duration;

use gatehouse_tests::{TestServer, eventually};
use reqwest::Method;
use serde_json::{Value, json};

type R = anyhow::Result<()>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_identifies_hosts_by_hardware_uuid_and_reenroll_keeps_history() -> R {
    let s = TestServer::start().await?;
    let mut a = s.agent(1);
    let r = a.enroll().await?;
    assert!(r.agent_success(), "{r:?}");
    let first_key = a.node_key.clone().unwrap_or_default();
    assert!(!first_key.is_empty());
    let host = a.host_id();

    // Operator labels the host; history must survive re-enrollment.
    let (st, _) = s
        .api(
            Method::PUT,
            &format!("/api/v1/hosts/{host}/labels"),
            Some(json!({"labels": ["servers"]})),
        )
        .await?;
    assert_eq!(st, 200);

    // Same machine re-enrolls (wiped database) under another hostname.
    let mut again = s.agent(1);
    again.details["system_info"]["hostname"] = json!("renamed.example.com");
    assert!(again.enroll().await?.agent_success());
    assert_eq!(again.host_id(), host, "same hardware uuid, same host");
    assert_ne!(again.node_key, a.node_key);

    let h = s.get(&format!("/api/v1/hosts/{host}")).await?;
    assert_eq!(h["enroll_count"], 2);
    assert_eq!(h["hostname"], "renamed.example.com");
    assert_eq!(h["labels"], json!(["servers"]));
    assert_eq!(h["platform"], "linux");
    assert_eq!(h["online"], true);

    // The older key was superseded: node_invalid, so that agent re-enrolls.
    let old = a.config().await?;
    assert!(old.node_invalid(), "{old:?}");
    assert!(old.is_error_body());
    assert!(again.config().await?.agent_success());

    // Another machine with the same hostname is another host.
    let mut other = s.agent(2);
    other.details["system_info"]["hostname"] = json!("renamed.example.com");
    other.enroll().await?;
    assert_ne!(other.host_id(), host);
    let hosts = s.get("/api/v1/hosts").await?;
    assert_eq!(hosts["items"].as_array().map(Vec::len), Some(2));

    // A wrong secret gets an error body and no key.
    let mut bad = s.agent(3);
    bad.secret = "wrong".into();
    let r = bad.enroll().await?;
    assert!(r.is_error_body());
    assert!(r.json.as_ref().and_then(|j| j.get("node_key")).is_none());
    assert_eq!(r.status, 401);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_follows_labels_and_refuses_oversized_configs() -> R {
    let s = TestServer::start().await?;
    let mut a = s.agent(1);
    a.enroll().await?;
    let mut b = s.agent(2);
    b.enroll().await?;

    for (name, sql) in [
        ("users", "SELECT * FROM users"),
        ("listening", "SELECT * FROM listening_ports"),
    ] {
        let (st, v) = s
            .api(
                Method::PUT,
                &format!("/api/v1/queries/{name}"),
                Some(json!({"sql": sql})),
            )
            .await?;
        assert_eq!(st, 200, "{v}");
    }
    let (st, v) = s
        .api(
            Method::PUT,
            "/api/v1/schedules/users",
            Some(json!({"query": "users", "interval": 3600, "labels": ["all"]})),
        )
        .await?;
    assert_eq!(st, 200, "{v}");
    let (st, v) = s
        .api(Method::PUT, "/api/v1/schedules/ports", Some(json!({"query": "listening", "interval": 300, "snapshot": true, "pack": "network", "labels": ["servers"]})))
        .await?;
    assert_eq!(st, 200, "{v}");
    let (st, v) = s
        .api(
            Method::PUT,
            "/api/v1/label_configs/all",
            Some(
                json!({"options": {"logger_tls_period": 4, "distributed_interval": 10},
                        "decorators": {"load": ["SELECT uuid AS host_uuid FROM system_info"]},
                        "file_paths": {"etc": ["/etc/%%"]}}),
            ),
        )
        .await?;
    assert_eq!(st, 200, "{v}");
    let (st, _) = s
        .api(
            Method::PUT,
            &format!("/api/v1/hosts/{}/labels", a.host_id()),
            Some(json!({"labels": ["servers"]})),
        )
        .await?;
    assert_eq!(st, 200);

    let ca = a.config().await?;
    assert!(ca.agent_success(), "{ca:?}");
    let ca = ca.json.unwrap_or_default();
    assert_eq!(ca["schedule"]["users"]["query"], "SELECT * FROM users");
    assert_eq!(ca["packs"]["network"]["queries"]["ports"]["snapshot"], true);
    assert_eq!(ca["options"]["logger_tls_period"], 4);
    assert_eq!(
        ca["decorators"]["load"][0],
        "SELECT uuid AS host_uuid FROM system_info"
    );
    assert_eq!(ca["file_paths"]["etc"][0], "/etc/%%");
    let cb = b.config().await?.json.unwrap_or_default();
    assert!(cb.get("packs").is_none(), "b is not a server: {cb}");
    assert_eq!(cb["schedule"]["users"]["interval"], 3600);

    // The preview matches what the agent got; the host records its version.
    let preview = s
        .get(&format!("/api/v1/hosts/{}/config", a.host_id()))
        .await?;
    assert_eq!(preview, ca);
    let h = s.get(&format!("/api/v1/hosts/{}", a.host_id())).await?;
    assert_eq!(h["config_hash"].as_str().map(str::len), Some(64));

    // CLI-only flags and invalid schedules are refused with a reason.
    let (st, v) = s
        .api(
            Method::PUT,
            "/api/v1/label_configs/all",
            Some(json!({"options": {"config_refresh": 10}})),
        )
        .await?;
    assert_eq!(st, 400);
    assert!(
        v["error"].as_str().unwrap_or("").contains("command line"),
        "{v}"
    );
    let (st, _) = s
        .api(
            Method::PUT,
            "/api/v1/schedules/x",
            Some(json!({"query": "nope", "interval": 60, "labels": ["all"]})),
        )
        .await?;
    assert_eq!(st, 400);

    // A config over 1 MiB is never published; agents keep the old one.
    let big = format!("SELECT '{}'", "x".repeat(1_100_000));
    let (st, _) = s
        .api(
            Method::PUT,
            "/api/v1/queries/big",
            Some(json!({"sql": big})),
        )
        .await?;
    assert_eq!(st, 200, "an unscheduled query is fine");
    let (st, v) = s
        .api(
            Method::PUT,
            "/api/v1/schedules/big",
            Some(json!({"query": "big", "interval": 60, "labels": ["all"]})),
        )
        .await?;
    assert_eq!(st, 422, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("limit"), "{v}");
    let again = b.config().await?.json.unwrap_or_default();
    assert_eq!(again, cb);
    // Nor can relabelling a host put it into an oversized combination.
    let (st, v) = s
        .api(
            Method::PUT,
            "/api/v1/schedules/big",
            Some(json!({"query": "big", "interval": 60, "labels": ["huge"]})),
        )
        .await?;
    assert_eq!(st, 200, "no host carries 'huge' yet: {v}");
    let (st, v) = s
        .api(
            Method::PUT,
            &format!("/api/v1/hosts/{}/labels", b.host_id()),
            Some(json!({"labels": ["huge"]})),
        )
        .await?;
    assert_eq!(st, 422, "{v}");
    let h = s.get(&format!("/api/v1/hosts/{}", b.host_id())).await?;
    assert_eq!(h["labels"], json!([]));
    assert_eq!(b.config().await?.json.unwrap_or_default(), cb);
    Ok(())
}

fn event(name: &str, t: i64, cols: Value, action: &str) -> Value {
    json!({"name": name, "hostIdentifier": "web-01.example.com", "calendarTime": "Tue Jun  4 10:20:31 2024 UTC",
           "unixTime": t, "epoch": 0, "counter": 1, "numerics": false,
           "decorations": {"host_uuid": "EC2A1B2C", "hostname": "web-01.example.com"},
           "columns": cols, "action": action})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_in_every_format_gzip_and_resends_are_stored_once() -> R {
    let s = TestServer::start().await?;
    let mut a = s.agent(1);
    a.enroll().await?;
    let t = 1_717_496_431i64;
    let batch = json!([
        event("pack_inventory_users", t, json!({"uid": "1001", "username": "alice"}), "removed"),
        event("pack_inventory_users", t, json!({"uid": "1002", "username": "bob"}), "added"),
        {"snapshot": [{"total_seconds": "123456"}, {"total_seconds": "7"}], "action": "snapshot", "name": "uptime",
         "hostIdentifier": "web-01.example.com", "calendarTime": "x", "unixTime": t + 1, "epoch": 0, "counter": 0, "numerics": false},
        {"diffResults": {"removed": [{"p": "1"}], "added": [{"p": "2"}, {"p": "3"}]}, "name": "procs",
         "hostIdentifier": "web-01.example.com", "calendarTime": "x", "unixTime": t + 2, "epoch": 0, "counter": 5, "numerics": false}
    ]);
    let r = a.log("result", batch.clone()).await?;
    assert!(r.agent_success(), "{r:?}");
    // The same batch again (a timeout re-send), gzip this time.
    let r = a.log_gzip("result", batch).await?;
    assert!(r.agent_success(), "{r:?}");
    // Status lines, with an older agent that sends no Authorization header.
    a.send_header = false;
    let r = a
        .log("status", json!([{"hostIdentifier": "web-01", "calendarTime": "x", "unixTime": t, "severity": 2,
             "filename": "distributed.cpp", "line": 187, "message": "Error executing distributed query: q42: no such table: foo",
             "version": "5.23.1"}]))
        .await?;
    assert!(r.agent_success(), "{r:?}");

    let host = a.host_id();
    let rows = s.get(&format!("/api/v1/results?host={host}")).await?;
    let rows = rows["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 4, "re-sent batch stored twice: {rows:?}");
    let kinds: Vec<&str> = rows.iter().filter_map(|r| r["kind"].as_str()).collect();
    assert!(
        kinds.contains(&"snapshot") && kinds.contains(&"batched") && kinds.contains(&"event"),
        "{kinds:?}"
    );
    let batched = rows
        .iter()
        .find(|r| r["kind"] == "batched")
        .cloned()
        .unwrap_or_default();
    assert_eq!(batched["rows"], 3);
    let ev = rows
        .iter()
        .find(|r| r["action"] == "added")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        ev["line"]["decorations"]["host_uuid"], "EC2A1B2C",
        "lines are stored as given"
    );
    let users = s
        .get(&format!(
            "/api/v1/results?host={host}&name=pack_inventory_users&since={}&until={}",
            t * 1000,
            (t + 1) * 1000
        ))
        .await?;
    assert_eq!(users["items"].as_array().map(Vec::len), Some(2), "{users}");
    let status = s.get(&format!("/api/v1/hosts/{host}/status_logs")).await?;
    assert_eq!(status[0]["severity"], 2);
    assert!(
        status[0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("no such table")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_invalid_then_reenroll_then_the_batch_gets_through() -> R {
    let s = TestServer::start().await?;
    let mut a = s.agent(1);
    a.enroll().await?;
    let host = a.host_id();
    let v = s.rotate_key(&host, true).await?;
    assert_eq!(v["revoked"], true);
    let line = json!([event("q", 1_717_496_431, json!({"a": "1"}), "added")]);
    let r = a.log("result", line.clone()).await?;
    assert!(r.node_invalid() && r.is_error_body(), "{r:?}");
    // The agent wipes its key and enrolls before its next request.
    a.node_key = None;
    assert!(a.enroll().await?.agent_success());
    assert_eq!(a.host_id(), host);
    assert!(a.log("result", line).await?.agent_success());
    assert_eq!(
        s.get(&format!("/api/v1/results?host={host}")).await?["items"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let h = s.get(&format!("/api/v1/hosts/{host}")).await?;
    assert_eq!(h["key_revoked"], false);
    assert_eq!(h["key_epoch"], 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_round_trip_waits_for_offline_hosts_and_reports_non_responders() -> R {
    let s = TestServer::start().await?;
    let mut online = s.agent(1);
    online.enroll().await?;
    let mut offline = s.agent(2);
    offline.enroll().await?;
    let mut late = s.agent(3);
    late.enroll().await?;
    assert_eq!(
        online.read().await?.json,
        Some(json!({"queries": {}})),
        "nothing to do yet"
    );

    let (st, c) = s.api(Method::POST, "/api/v1/campaigns", Some(json!({"sql": "SELECT version FROM osquery_info", "labels": ["platform:linux"], "expires_in": 60}))).await?;
    assert_eq!(st, 201, "{c}");
    let id = c["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(c["coverage"]["targeted"], 3, "{c}");

    // The campaign reaches host actors asynchronously (a broadcast), within
    // milliseconds; a poll racing it gets the query on the next poll.
    let r = online.read_until(&id).await?;
    assert_eq!(r["queries"][&id], "SELECT version FROM osquery_info");
    // Delivered once: the next poll does not repeat it.
    assert_eq!(
        online.read().await?.json.unwrap_or_default()["queries"],
        json!({})
    );
    let w = online
        .write(json!({"queries": {&id: [{"version": "5.23.1"}]}, "statuses": {&id: 0}, "messages": {&id: ""},
                      "stats": {&id: {"wall_time_ms": 3, "user_time": 1, "system_time": 0, "memory": 0}}}))
        .await?;
    assert!(w.agent_success(), "{w:?}");
    // A duplicate write (retry after a timeout) is harmless.
    assert!(
        online
            .write(json!({"queries": {&id: [{"version": "5.23.1"}]}, "statuses": {&id: 0}}))
            .await?
            .agent_success()
    );

    // A host that comes back later still gets the query, and a failure is recorded.
    let r = late.read_until(&id).await?;
    assert!(r["queries"].get(&id).is_some());
    late.write(json!({"queries": {&id: []}, "statuses": {&id: 1}, "messages": {&id: "no such table: osquery_info"}, "stats": {&id: {}}})).await?;

    let d = s.get(&format!("/api/v1/campaigns/{id}")).await?;
    assert_eq!(d["coverage"]["answered"], 1, "{d}");
    assert_eq!(d["coverage"]["failed"], 1, "{d}");
    assert_eq!(d["coverage"]["queued"], 1, "{d}");
    assert_eq!(d["non_responders"], json!([offline.host_id()]));
    let results = s.get(&format!("/api/v1/campaigns/{id}/results")).await?;
    let ok = results
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["status"] == 0))
        .cloned()
        .unwrap_or_default();
    assert_eq!(ok["rows"], json!([{"version": "5.23.1"}]));
    assert_eq!(ok["stats"]["wall_time_ms"], 3);
    let failed = results
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["status"] == 1))
        .cloned()
        .unwrap_or_default();
    assert_eq!(failed["message"], "no such table: osquery_info");

    // A short campaign nobody answers expires, and says so.
    let (_, c2) = s
        .api(
            Method::POST,
            "/api/v1/campaigns",
            Some(json!({"sql": "SELECT 1", "hosts": [offline.host_id()], "expires_in": 1})),
        )
        .await?;
    let id2 = c2["id"].as_str().unwrap_or_default().to_owned();
    let d2 = eventually(Duration::from_secs(5), || async {
        let d = s.get(&format!("/api/v1/campaigns/{id2}")).await?;
        Ok((d["coverage"]["expired"] == 1).then_some(d))
    })
    .await?;
    assert_eq!(d2["expired"], true);
    assert_eq!(d2["non_responders"], json!([offline.host_id()]));
    // The expired query is never handed out.
    let r = offline.read().await?.json.unwrap_or_default();
    assert!(r["queries"].get(&id2).is_none(), "{r}");
    assert!(
        r["queries"].get(&id).is_some(),
        "the first campaign still waits for it"
    );

    // Bad campaign requests are refused with reasons.
    let (st, v) = s
        .api(
            Method::POST,
            "/api/v1/campaigns",
            Some(json!({"sql": "SELECT 1"})),
        )
        .await?;
    assert_eq!(st, 400, "{v}");
    let (st, _) = s
        .api(
            Method::POST,
            "/api/v1/campaigns",
            Some(json!({"sql": "SELECT 1", "labels": ["nobody-has-this"]})),
        )
        .await?;
    assert_eq!(st, 400);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carve_with_out_of_order_and_repeated_blocks_is_assembled_and_hashed() -> R {
    use base64::Engine;
    let s = TestServer::start().await?;
    let mut a = s.agent(1);
    a.enroll().await?;
    let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let block_size = 8192usize;
    let blocks: Vec<&[u8]> = data.chunks(block_size).collect();
    // The carve answers a live query that names the path.
    let (_, campaign) = s
        .api(
            reqwest::Method::POST,
            "/api/v1/campaigns",
            Some(json!({"sql": "SELECT * FROM carves WHERE path = '/etc/hosts' AND carve = 1", "all": true})),
        )
        .await?;
    let request_id = campaign["id"].as_str().unwrap_or_default().to_owned();
    let session = a
        .carve_begin(
            &request_id,
            "e6e12098-40fc-4ef7-837d-e0ed42cee879",
            data.len(),
            block_size,
        )
        .await?;
    for id in [2usize, 0, 0, 1, 2] {
        let r = a.carve_block(&session, &request_id, id, blocks[id]).await?;
        assert!(r.agent_success(), "block {id}: {r:?}");
    }
    let carve = eventually(Duration::from_secs(5), || async {
        let c = s.get(&format!("/api/v1/carves/{session}")).await?;
        Ok((c["state"] == "complete").then_some(c))
    })
    .await?;
    assert_eq!(carve["blocks_received"], 3);
    assert_eq!(carve["sha256"], gatehouse_core::ids::sha256_hex(&data));
    let resp = s
        .http
        .get(format!("{}/api/v1/carves/{session}/download", s.api_url))
        .bearer_auth(&s.boot.admin_token)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.bytes().await?.to_vec(), data);
    // One block at a time (to resume a download), over REST and gRPC; the
    // whole archive over gRPC.
    let resp = s
        .http
        .get(format!("{}/api/v1/carves/{session}/blocks/1", s.api_url))
        .bearer_auth(&s.boot.admin_token)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.bytes().await?.to_vec(), blocks[1]);
    let mut rpc = gatehouse_proto::v1::admin_client::AdminClient::new(s.grpc_channel().await?);
    let token = &s.boot.admin_token;
    let mut stream = rpc
        .download_carve(gatehouse_tests::as_user(
            token,
            gatehouse_proto::v1::CarveRef {
                id: session.clone(),
            },
        )?)
        .await?
        .into_inner();
    let mut archive = Vec::new();
    while let Some(chunk) = stream.message().await? {
        archive.extend_from_slice(&chunk.data);
    }
    assert_eq!(archive, data);
    let mut stream = rpc
        .carve_block(gatehouse_tests::as_user(
            token,
            gatehouse_proto::v1::CarveBlockRequest {
                id: session.clone(),
                block: 2,
            },
        )?)
        .await?
        .into_inner();
    let mut block = Vec::new();
    while let Some(chunk) = stream.message().await? {
        block.extend_from_slice(&chunk.data);
    }
    assert_eq!(block, blocks[2]);
    let listed = s.get("/api/v1/carves").await?;
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert_eq!(listed[0]["path"], "/etc/hosts", "{listed}");
    assert_eq!(listed[0]["hostname"], "web-01.example.com", "{listed}");

    // ctl lists it by host name and path, and downloads it (checked).
    let ctl = |args: &[&str]| s.ctl(&s.boot.admin_token, args);
    let out = ctl(&["carves", "list"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("/etc/hosts") && text.contains("web-01.example.com"),
        "{text}"
    );
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("hosts.tar");
    let out = ctl(&[
        "carves",
        "download",
        &session,
        "-o",
        &file.display().to_string(),
    ])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&file)?, data);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&gatehouse_core::ids::sha256_hex(&data)),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = ctl(&["carves", "download", "no-such-carve"])?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A block of the wrong size, an unknown session, a wrong block count,
    // and an oversize carve are all refused with error bodies.
    let bad = json!({"block_id": 0, "session_id": session, "data": base64::engine::general_purpose::STANDARD.encode(b"short")});
    assert!(
        a.post_raw(
            &a.paths.carve_block.clone(),
            serde_json::to_vec(&bad)?,
            true,
            false
        )
        .await?
        .is_error_body()
    );
    let unknown = json!({"block_id": 0, "session_id": "nope", "data": ""});
    assert!(
        a.post_raw(
            &a.paths.carve_block.clone(),
            serde_json::to_vec(&unknown)?,
            true,
            false
        )
        .await?
        .is_error_body()
    );
    let r = a
        .post(
            &a.paths.carve_begin.clone(),
            json!({"block_count": 5, "block_size": 8192, "carve_size": 10, "carve_id": "c"}),
        )
        .await?;
    assert!(
        r.is_error_body() && r.json.as_ref().and_then(|j| j.get("session_id")).is_none(),
        "{r:?}"
    );
    let r = a
        .post(&a.paths.carve_begin.clone(), json!({"block_count": 1_000_000, "block_size": 8192, "carve_size": 8_192_000_000u64, "carve_id": "c"}))
        .await?;
    assert!(
        r.is_error_body() && r.json.as_ref().and_then(|j| j.get("session_id")).is_none(),
        "{r:?}"
    );
    Ok(())
}
