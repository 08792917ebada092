//! The operations the console added to the public API, against the real
//! server: validation errors that name their field (REST `field`, gRPC
//! `gatehouse-field`), a live query's target count before it runs, the
//! live queries one host was asked with its answers, the audit log's
//! filters, and the hosts list sorted by hostname or last check-in and
//! paged by label from its cursor.

use std::collections::BTreeSet;
use std::time::Duration;

use gatehouse_core::time::Clock;
use gatehouse_proto::v1 as pb;
use gatehouse_tests::{TestServer, as_user};
use reqwest::Method;
use serde_json::{Value, json};

type R = anyhow::Result<()>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_errors_name_the_field_at_fault() -> R {
    let s = TestServer::start().await?;
    let (code, v) = s
        .api(
            Method::PUT,
            "/api/v1/queries/uptime",
            Some(json!({"sql": "SELECT * FROM uptime"})),
        )
        .await?;
    assert_eq!(code, 200, "{v}");
    for (path, body, field) in [
        (
            "/api/v1/schedules/u",
            json!({"query": "uptime", "interval": 0, "labels": ["all"]}),
            "interval",
        ),
        (
            "/api/v1/schedules/u",
            json!({"query": "nope", "interval": 60, "labels": ["all"]}),
            "query",
        ),
        (
            "/api/v1/schedules/u",
            json!({"query": "uptime", "interval": 60, "labels": ["bad label"]}),
            "labels",
        ),
        (
            "/api/v1/schedules/u",
            json!({"query": "uptime", "interval": 60, "labels": ["all"], "platform": "beos"}),
            "platform",
        ),
        (
            "/api/v1/queries/bad%20name",
            json!({"sql": "SELECT 1"}),
            "name",
        ),
        ("/api/v1/queries/q", json!({"sql": "  "}), "sql"),
        (
            "/api/v1/label_queries/web",
            json!({"sql": "SELECT 1", "interval": 10}),
            "interval",
        ),
        (
            "/api/v1/label_configs/web",
            json!({"options": {"logger_tls_period": "soon"}}),
            "options",
        ),
        (
            "/api/v1/rules/r",
            json!({"when": {"event": "host_silent", "after_secs": 5}, "actions": [{"type": "log"}]}),
            "when",
        ),
    ] {
        let (code, v) = s.api(Method::PUT, path, Some(body)).await?;
        assert_eq!(code, 400, "{path}: {v}");
        assert_eq!(v["field"], field, "{path}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    assert!(s.agent(0).enroll().await?.agent_success());
    let (code, v) = s
        .api(
            Method::POST,
            "/api/v1/campaigns",
            Some(json!({"sql": "SELECT 1", "all": true, "expires_in": 0})),
        )
        .await?;
    assert_eq!(
        (code, v["field"].as_str()),
        (400, Some("expires_in")),
        "{v}"
    );
    // A message without a single field at fault has no `field`.
    let (code, v) = s
        .api(
            Method::POST,
            "/api/v1/campaigns",
            Some(json!({"sql": "SELECT 1"})),
        )
        .await?;
    assert_eq!(code, 400);
    assert!(v.get("field").is_none(), "{v}");

    // gRPC: the same field, in the status metadata.
    let mut rpc = pb::admin_client::AdminClient::new(s.grpc_channel().await?);
    let err = rpc
        .put_schedule(as_user(
            &s.boot.admin_token,
            pb::Schedule {
                name: "u".into(),
                query: "uptime".into(),
                interval: 0,
                labels: vec!["all".into()],
                ..Default::default()
            },
        )?)
        .await
        .expect_err("interval 0 is refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        err.metadata()
            .get("gatehouse-field")
            .and_then(|v| v.to_str().ok()),
        Some("interval")
    );
    s.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_are_counted_before_a_live_query_runs() -> R {
    let s = TestServer::start().await?;
    let mut first = String::new();
    for n in 0..3 {
        let mut a = s.agent(n);
        assert!(a.enroll().await?.agent_success());
        if n == 0 {
            first = a.host_id();
        }
    }
    let count = |q: String| {
        let s = &s;
        async move {
            s.api(Method::GET, &format!("/api/v1/campaigns/targets?{q}"), None)
                .await
        }
    };
    let (code, v) = count("all=true".into()).await?;
    assert_eq!((code, v["count"].as_u64()), (200, Some(3)), "{v}");
    assert!(v["limit"].as_u64().is_some_and(|l| l >= 3), "{v}");
    let (_, v) = count(format!("hosts=web-01.example.com,{first}")).await?;
    assert_eq!(v["count"], 2, "{v}");
    let (_, v) = count("platforms=linux".into()).await?;
    assert_eq!(v["count"], 3, "{v}");
    let (code, v) = count("platforms=beos".into()).await?;
    assert_eq!((code, v["field"].as_str()), (400, Some("platforms")), "{v}");
    let (code, v) = count("hosts=no-such-host".into()).await?;
    assert_eq!((code, v["field"].as_str()), (400, Some("hosts")), "{v}");
    let (code, _) = count("labels=nobody-has-this".into()).await?;
    assert_eq!(code, 400);
    let (code, _) = count(String::new()).await?;
    assert_eq!(code, 400);
    // Counting runs nothing.
    let (_, list) = s.api(Method::GET, "/api/v1/campaigns", None).await?;
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
    // An observer may count (and may not run).
    let viewer = s.user_token("viewer", "observer").await?;
    let (code, v) = s
        .call(
            &viewer,
            Method::GET,
            "/api/v1/campaigns/targets?all=true",
            None,
        )
        .await?;
    assert_eq!((code, v["count"].as_u64()), (200, Some(3)), "{v}");
    s.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_lists_the_live_queries_it_was_asked_and_its_answers() -> R {
    let s = TestServer::start().await?;
    let mut a = s.agent(0);
    let mut b = s.agent(1);
    assert!(a.enroll().await?.agent_success());
    assert!(b.enroll().await?.agent_success());
    let run = |body: Value| {
        let s = &s;
        async move {
            let (code, v) = s.api(Method::POST, "/api/v1/campaigns", Some(body)).await?;
            anyhow::ensure!(code == 201, "{v}");
            Ok::<String, anyhow::Error>(v["id"].as_str().unwrap_or_default().to_owned())
        }
    };
    let only_a = run(json!({"sql": "SELECT 'a' AS who", "hosts": [a.host_id()]})).await?;
    s.clock.advance(Duration::from_secs(1));
    let everyone = run(json!({"sql": "SELECT 'all' AS who", "all": true})).await?;
    a.read_until(&everyone).await?;
    let reply = a
        .write(
            json!({"queries": {only_a.clone(): [{"who": "a"}], everyone.clone(): []},
                      "statuses": {only_a.clone(): 0, everyone.clone(): 1},
                      "messages": {everyone.clone(): "no such table"}}),
        )
        .await?;
    assert!(reply.agent_success(), "{reply:?}");

    let asked = |host: String, q: &'static str| {
        let s = &s;
        async move {
            let (code, v) = s
                .api(
                    Method::GET,
                    &format!("/api/v1/hosts/{host}/campaigns{q}"),
                    None,
                )
                .await?;
            anyhow::ensure!(code == 200, "{v}");
            Ok::<Value, anyhow::Error>(v)
        }
    };
    let v = gatehouse_tests::eventually(Duration::from_secs(5), || async {
        let v = asked(a.host_id(), "").await?;
        Ok(v["items"]
            .as_array()
            .is_some_and(|i| i.iter().all(|i| i["result"].is_object()))
            .then_some(v))
    })
    .await?;
    let items = v["items"].as_array().cloned().unwrap_or_default();
    // Newest first, each with what it asked and how the host answered.
    assert_eq!(items.len(), 2, "{v}");
    assert_eq!(items[0]["campaign"]["id"], everyone.as_str());
    assert_eq!(items[0]["delivery"]["state"], "failed");
    assert_eq!(items[0]["result"]["message"], "no such table");
    assert_eq!(items[1]["campaign"]["sql"], "SELECT 'a' AS who");
    assert_eq!(items[1]["delivery"]["state"], "answered");
    assert_eq!(items[1]["result"]["rows"], json!([{"who": "a"}]));
    assert!(v["next_before_id"].is_null(), "{v}");

    // The other host was asked one of them and has not answered.
    let v = asked(b.host_id(), "").await?;
    let items = v["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{v}");
    assert_eq!(items[0]["campaign"]["id"], everyone.as_str());
    assert!(items[0]["result"].is_null(), "{v}");

    // A page at a time.
    let first = asked(a.host_id(), "?limit=1").await?;
    assert_eq!(first["items"][0]["campaign"]["id"], everyone.as_str());
    let (at, id) = (
        first["next_before_at"].as_i64().unwrap_or_default(),
        first["next_before_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    assert!(!id.is_empty(), "{first}");
    let q: &'static str =
        Box::leak(format!("?limit=1&before_at={at}&before_id={id}").into_boxed_str());
    let second = asked(a.host_id(), q).await?;
    assert_eq!(second["items"][0]["campaign"]["id"], only_a.as_str());
    let (code, _) = s
        .api(Method::GET, "/api/v1/hosts/nosuchhost/campaigns", None)
        .await?;
    assert_eq!(code, 404);
    s.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_filters_by_actor_action_target_outcome_and_time() -> R {
    let s = TestServer::start().await?;
    let ops = s.user_token("ops", "operator").await?;
    let viewer = s.user_token("viewer", "observer").await?;
    let put = |token: String, name: &'static str, body: Value| {
        let s = &s;
        async move {
            s.call(
                &token,
                Method::PUT,
                &format!("/api/v1/queries/{name}"),
                Some(body),
            )
            .await
        }
    };
    let start = s.clock.now_ms();
    put(ops.clone(), "one", json!({"sql": "SELECT 1"})).await?;
    s.clock.advance(Duration::from_secs(60));
    let middle = start + 30_000;
    put(ops.clone(), "two", json!({"sql": " "})).await?;
    put(viewer.clone(), "three", json!({"sql": "SELECT 3"})).await?;
    let audit = |q: &str| {
        let s = &s;
        let q = q.to_owned();
        async move {
            let (code, v) = s
                .api(Method::GET, &format!("/api/v1/audit?{q}"), None)
                .await?;
            anyhow::ensure!(code == 200, "{q}: {v}");
            Ok::<Vec<Value>, anyhow::Error>(v.as_array().cloned().unwrap_or_default())
        }
    };
    let summary = |events: &[Value]| -> Vec<(String, String, String)> {
        events
            .iter()
            .map(|e| {
                (
                    e["actor"].as_str().unwrap_or_default().to_owned(),
                    e["target"].as_str().unwrap_or_default().to_owned(),
                    e["outcome"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let by_ops = audit("actor=ops&action=query").await?;
    assert_eq!(
        summary(&by_ops),
        vec![
            ("ops".into(), "two".into(), "failed".into()),
            ("ops".into(), "one".into(), "accepted".into()),
        ]
    );
    assert_eq!(
        summary(&audit("outcome=denied").await?),
        vec![("viewer".into(), "three".into(), "denied".into())]
    );
    assert_eq!(summary(&audit("target=one").await?).len(), 1);
    // `query` is a resource: `query.put` matches, `querying` would not.
    assert!(audit("action=quer").await?.is_empty());
    assert_eq!(audit("action=query.put&actor=ops").await?.len(), 2);
    // Time: since is inclusive, until exclusive.
    let late = audit(&format!("actor=ops&since={middle}")).await?;
    assert_eq!(
        summary(&late),
        vec![("ops".into(), "two".into(), "failed".into())]
    );
    let early = audit(&format!("actor=ops&until={middle}")).await?;
    assert_eq!(
        summary(&early),
        vec![("ops".into(), "one".into(), "accepted".into())]
    );
    let (code, v) = s
        .api(
            Method::GET,
            &format!("/api/v1/audit?since={middle}&until={start}"),
            None,
        )
        .await?;
    assert_eq!((code, v["field"].as_str()), (400, Some("since")), "{v}");
    // A filtered page pages on from its last event.
    let page = audit("actor=ops&limit=1").await?;
    assert_eq!(page.len(), 1);
    let rest = audit(&format!(
        "actor=ops&limit=10&before_at={}&before_id={}",
        page[0]["at"],
        page[0]["id"].as_str().unwrap_or_default()
    ))
    .await?;
    assert_eq!(
        summary(&rest).iter().filter(|(_, t, _)| t == "one").count(),
        1
    );
    s.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_sort_by_hostname_or_last_seen_and_page_by_label() -> R {
    let s = TestServer::start().await?;
    let mut agents = Vec::new();
    for n in [3, 0, 2, 1] {
        let mut a = s.agent(n);
        assert!(a.enroll().await?.agent_success());
        agents.push(a);
    }
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| h["hostname"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let (code, v) = s
        .api(Method::GET, "/api/v1/hosts?sort=hostname", None)
        .await?;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        names(&v),
        [
            "web-00.example.com",
            "web-01.example.com",
            "web-02.example.com",
            "web-03.example.com"
        ]
    );
    assert!(v["sorted_at"].as_i64().is_some(), "{v}");
    // Two at a time, every host once, in order.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let q = match &after {
            Some(a) => format!("/api/v1/hosts?sort=hostname&limit=2&after={}", urlencode(a)),
            None => "/api/v1/hosts?sort=hostname&limit=2".to_owned(),
        };
        let (code, v) = s.api(Method::GET, &q, None).await?;
        assert_eq!(code, 200, "{v}");
        seen.extend(names(&v));
        match v["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");

    // Most recent check-in first (the order is remade once it is 5 s old).
    s.clock.advance(Duration::from_secs(30));
    assert!(agents[2].config().await?.agent_success());
    let (_, v) = s
        .api(Method::GET, "/api/v1/hosts?sort=last_seen&limit=1", None)
        .await?;
    assert_eq!(names(&v), ["web-02.example.com"], "{v}");
    let (code, v) = s
        .api(
            Method::GET,
            "/api/v1/hosts?sort=last_seen&after=n%3Ax%3Ay",
            None,
        )
        .await?;
    assert_eq!(code, 400, "{v}");
    let (code, _) = s.api(Method::GET, "/api/v1/hosts?sort=size", None).await?;
    assert_eq!(code, 400);

    // A label's hosts a page at a time, from the cursor, each once.
    let mut ids = BTreeSet::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &after {
            Some(a) => format!(
                "/api/v1/hosts?label=platform:linux&limit=1&after={}",
                urlencode(a)
            ),
            None => "/api/v1/hosts?label=platform:linux&limit=1".to_owned(),
        };
        let (code, v) = s.api(Method::GET, &q, None).await?;
        assert_eq!(code, 200, "{v}");
        pages += 1;
        for h in v["items"].as_array().into_iter().flatten() {
            assert!(
                ids.insert(h["id"].as_str().unwrap_or_default().to_owned()),
                "{v}"
            );
        }
        match v["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!((ids.len(), pages), (4, 4));
    // With a second filter the page still fills from further on.
    let (_, v) = s
        .api(
            Method::GET,
            "/api/v1/hosts?label=all&search=web-03&limit=1",
            None,
        )
        .await?;
    assert_eq!(names(&v), ["web-03.example.com"], "{v}");
    s.stop().await?;
    Ok(())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
