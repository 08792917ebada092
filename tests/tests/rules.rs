//! Rules and alerts end to end on the all-in-one: rules defined through
//! REST and gRPC fire on matching result rows (and not on others), post
//! webhooks to a real receiver, retry a failing one and dead-letter it,
//! redrive it once the receiver recovers; a re-sent batch fires nothing
//! twice; enrollments fire host-enrolled rules; roles decide who may add
//! webhooks, read their URLs and manage dead letters; the audit log
//! records each change.

use std::time::Duration;

use gatehouse_proto::v1 as pb;
use gatehouse_proto::v1::admin_client::AdminClient;
use gatehouse_tests::webhook::WebhookReceiver;
use gatehouse_tests::{TestServer, as_user, eventually};
use reqwest::Method;
use serde_json::{Value, json};

fn event_line(host: &str, name: &str, columns: Value, t: i64) -> Value {
    json!({
        "name": name, "hostIdentifier": host, "calendarTime": "Mon Jun  3 10:00:00 2024 UTC",
        "unixTime": t, "epoch": 0, "counter": 1, "numerics": false,
        "decorations": {"hostname": host}, "columns": columns, "action": "added"
    })
}

/// The alert history over gRPC, as `token`'s holder sees it.
async fn alerts_over_grpc(
    grpc: &AdminClient<tonic::transport::Channel>,
    token: &str,
) -> anyhow::Result<pb::Alerts> {
    Ok(grpc
        .clone()
        .list_alerts(as_user(
            token,
            pb::ListAlertsRequest {
                limit: 100,
                ..Default::default()
            },
        )?)
        .await?
        .into_inner())
}

/// Alerts of `rule` currently in the history.
async fn alerts_of(s: &TestServer, token: &str, rule: &str) -> anyhow::Result<Vec<Value>> {
    let (code, all) = s
        .call(token, Method::GET, "/api/v1/alerts?limit=1000", None)
        .await?;
    anyhow::ensure!(code == 200, "{all}");
    Ok(all
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a["rule"] == rule)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_fire_on_matching_rows_and_webhooks_retry_dead_letter_and_redrive()
-> anyhow::Result<()> {
    let hook = WebhookReceiver::start().await?;
    let dir = tempfile::tempdir()?;
    let s = TestServer::start_in(&dir.path().join("data"), |c| {
        c.rules.webhook_attempts = 3;
        c.rules.webhook_backoff_ms = 50;
    })
    .await?;
    let admin = s.boot.admin_token.clone();
    let alice = s.user_token("alice", "operator").await?;
    let bob = s.user_token("bob", "observer").await?;

    let nc_rule = json!({
        "description": "netcat listening on a high port",
        "when": {"event": "results", "query": "listening", "condition": {"all": [
            {"column": "name", "op": "eq", "value": "nc"},
            {"any": [
                {"column": "port", "op": "ge", "value": "30000"},
                {"column": "port", "op": "eq", "value": "4444"}
            ]}
        ]}},
        "actions": [{"type": "webhook", "url": format!("{}/ok/secret-token", hook.url)}, {"type": "log"}]
    });
    // Webhooks send fleet data out: operators may not add them.
    let (code, e) = s
        .call(
            &alice,
            Method::PUT,
            "/api/v1/rules/nc",
            Some(nc_rule.clone()),
        )
        .await?;
    assert_eq!(code, 403, "{e}");
    assert!(e["error"].as_str().unwrap_or("").contains("admin"), "{e}");
    let (code, saved) = s
        .call(&admin, Method::PUT, "/api/v1/rules/nc", Some(nc_rule))
        .await?;
    assert_eq!(code, 200, "{saved}");
    assert!(saved["enabled"].as_bool().unwrap_or(false));
    // A log-only rule is an operator's to add.
    let (code, e) = s
        .call(
            &alice,
            Method::PUT,
            "/api/v1/rules/root-shell",
            Some(json!({
                "when": {"event": "results", "query": "listening",
                         "condition": {"column": "path", "op": "regex", "value": "^/(tmp|dev/shm)/"}},
                "actions": [{"type": "log"}]
            })),
        )
        .await?;
    assert_eq!(code, 200, "{e}");
    // Bad rules are refused with what to fix.
    for (body, want) in [
        (
            json!({"when": {"event": "results", "query": "q", "condition": {"column": "a", "op": "regex", "value": "(["}}, "actions": [{"type": "log"}]}),
            "not a valid regex",
        ),
        (
            json!({"when": {"event": "results", "query": "q", "condition": {"column": "a", "op": "like", "value": "x"}}, "actions": [{"type": "log"}]}),
            "",
        ),
        (
            json!({"when": {"event": "host_silent", "after_secs": 10}, "actions": [{"type": "log"}]}),
            "at least 60",
        ),
        (
            json!({"when": {"event": "host_enrolled"}, "actions": []}),
            "at least one action",
        ),
    ] {
        let (code, e) = s
            .call(&alice, Method::PUT, "/api/v1/rules/bad", Some(body.clone()))
            .await?;
        assert_eq!(code, 400, "{body}: {e}");
        assert!(e["error"].as_str().unwrap_or("").contains(want), "{e}");
    }
    // Observers read rules, without the webhook's secret path.
    let (code, rules) = s.call(&bob, Method::GET, "/api/v1/rules", None).await?;
    assert_eq!(code, 200);
    assert_eq!(rules.as_array().map(Vec::len), Some(2));
    assert!(!rules.to_string().contains("secret-token"), "{rules}");
    assert!(rules.to_string().contains("/…"), "{rules}");
    let (_, rules) = s.call(&admin, Method::GET, "/api/v1/rules", None).await?;
    assert!(rules.to_string().contains("secret-token"));
    let (code, _) = s
        .call(&bob, Method::DELETE, "/api/v1/rules/nc", None)
        .await?;
    assert_eq!(code, 403);

    // A failing receiver: retried, then dead-lettered.
    hook.set_failing(true);
    let (code, e) = s
        .call(
            &admin,
            Method::PUT,
            "/api/v1/rules/any-listener",
            Some(json!({
                "when": {"event": "results", "query": "listening", "row_actions": ["added"],
                         "condition": {"column": "port", "op": "not_empty"}},
                "actions": [{"type": "webhook", "url": format!("{}/flaky", hook.url)}]
            })),
        )
        .await?;
    assert_eq!(code, 200, "{e}");

    let mut agent = s.agent(1);
    anyhow::ensure!(agent.enroll().await?.agent_success());
    let host = agent.host_id();
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let batch = json!([
        event_line(
            "web-01",
            "listening",
            json!({"name": "nc", "port": "31337", "path": "/usr/bin/nc"}),
            t
        ),
        event_line(
            "web-01",
            "listening",
            json!({"name": "nc", "port": "22", "path": "/usr/bin/nc"}),
            t
        ),
        event_line(
            "web-01",
            "listening",
            json!({"name": "sshd", "port": "4444", "path": "/usr/sbin/sshd"}),
            t
        ),
        event_line(
            "web-01",
            "processes",
            json!({"name": "nc", "port": "4444"}),
            t
        ),
    ]);
    // The receiver fails while the first webhook is tried, so the second
    // rule's retries run out; make the first rule's receiver path succeed.
    let r = agent.log("result", batch.clone()).await?;
    assert!(r.agent_success());

    // The nc rule fired once: only the high-port nc row.
    let nc = eventually(Duration::from_secs(20), || async {
        let a = alerts_of(&s, &bob, "nc").await?;
        Ok((!a.is_empty()).then_some(a))
    })
    .await?;
    assert_eq!(nc.len(), 1, "{nc:?}");
    let alert = &nc[0];
    assert_eq!(alert["host_id"], host.as_str());
    assert_eq!(alert["hostname"], "web-01");
    assert_eq!(alert["detail"]["columns"]["port"], "31337");
    assert_eq!(alert["actions"][1]["state"], "delivered", "log action");
    assert!(!alert.to_string().contains("secret-token"), "{alert}");
    // The receiver was failing: the nc webhook retried and died too. The
    // three listening rows of one run make one alert (ADR 0020).
    let flaky = eventually(Duration::from_secs(20), || async {
        let a = alerts_of(&s, &bob, "any-listener").await?;
        let done = a.len() == 1 && a.iter().all(|x| x["actions"][0]["state"] == "dead");
        Ok(done.then_some(a))
    })
    .await?;
    assert_eq!(flaky[0]["detail"]["matched"], 3, "{flaky:?}");
    assert_eq!(
        flaky[0]["detail"]["rows"].as_array().map(Vec::len),
        Some(3),
        "{flaky:?}"
    );
    assert!(
        flaky[0]["summary"]
            .as_str()
            .unwrap_or("")
            .contains("3 rows of listening"),
        "{flaky:?}"
    );
    assert!(
        flaky.iter().all(|a| a["actions"][0]["attempts"] == 3),
        "{flaky:?}"
    );
    assert!(
        flaky[0]["actions"][0]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("503")
    );
    assert_eq!(hook.hits("/flaky").len(), 3, "1 alert x 3 attempts");
    let nc = eventually(Duration::from_secs(20), || async {
        let a = alerts_of(&s, &bob, "nc").await?;
        Ok((a[0]["actions"][0]["state"] == "dead").then_some(a))
    })
    .await?;
    let nc_id = nc[0]["id"].as_str().unwrap_or_default().to_owned();
    let hits = hook.hits("/ok/secret-token");
    assert_eq!(hits.len(), 3);
    assert!(
        hits.iter()
            .all(|h| h.alert_id == nc_id && h.body["rule"] == "nc")
    );

    // Dead letters: admins only.
    let (code, _) = s
        .call(&bob, Method::GET, "/api/v1/dead_letters", None)
        .await?;
    assert_eq!(code, 403);
    let (_, dead) = s
        .call(&admin, Method::GET, "/api/v1/dead_letters", None)
        .await?;
    assert_eq!(dead.as_array().map(Vec::len), Some(2), "{dead}");
    let nc_dead = format!("{nc_id}.0");
    // Redriving while the receiver still fails: 502, the letter stays.
    let path = format!("/api/v1/dead_letters/{nc_dead}/redrive");
    let (code, e) = s.call(&admin, Method::POST, &path, None).await?;
    assert_eq!(code, 502, "{e}");
    hook.set_failing(false);
    let (code, redriven) = s.call(&admin, Method::POST, &path, None).await?;
    assert_eq!(code, 200, "{redriven}");
    assert_eq!(redriven["actions"][0]["state"], "delivered");
    assert_eq!(redriven["actions"][0]["attempts"], 5);
    let (_, dead) = s
        .call(&admin, Method::GET, "/api/v1/dead_letters", None)
        .await?;
    assert_eq!(dead.as_array().map(Vec::len), Some(1));
    assert_eq!(
        alerts_of(&s, &bob, "nc").await?[0]["actions"][0]["state"],
        "delivered"
    );
    // A dead letter can also be dropped.
    let drop_id = dead[0]["id"].as_str().unwrap_or_default().to_owned();
    let (code, _) = s
        .call(
            &admin,
            Method::DELETE,
            &format!("/api/v1/dead_letters/{drop_id}"),
            None,
        )
        .await?;
    assert_eq!(code, 204);
    let (code, _) = s
        .call(
            &admin,
            Method::POST,
            &format!("/api/v1/dead_letters/{drop_id}/redrive"),
            None,
        )
        .await?;
    assert_eq!(code, 404);

    // The agent re-sends the same batch: nothing fires twice.
    // The sink shows a batch to the rule engine before it acknowledges, so
    // once the agent has its answer any alert it fired is stored.
    assert!(agent.log("result", batch).await?.agent_success());
    assert_eq!(alerts_of(&s, &bob, "nc").await?.len(), 1);
    assert_eq!(
        hook.hits("/ok/secret-token").len(),
        5,
        "3 attempts and 2 redrives"
    );

    // Every change is in the audit log, webhook URLs without secrets.
    let (_, audit) = s
        .call(&admin, Method::GET, "/api/v1/audit?limit=200", None)
        .await?;
    let actions: Vec<String> = audit
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["action"].as_str().unwrap_or(""),
                e["target"].as_str().unwrap_or(""),
                e["outcome"].as_str().unwrap_or("")
            )
        })
        .collect();
    for want in [
        "rule.put nc denied",
        "rule.put nc accepted",
        "rule.put root-shell accepted",
        "rule.delete nc denied",
        "dead_letter.redrive",
        "dead_letter.delete",
    ] {
        assert!(
            actions.iter().any(|a| a.starts_with(want)),
            "{want} missing from {actions:?}"
        );
    }
    assert!(!audit.to_string().contains("secret-token"));

    // The engine's metrics.
    let metrics = s.metrics().await?;
    // This server's own registry: exact counts. Two alerts died (one
    // any-listener, one nc) after two retries each; one nc alert fired.
    for line in [
        "gatehouse_alerts_total{rule=\"nc\",outcome=\"fired\"} 1",
        "gatehouse_alert_deliveries_total{action=\"webhook\",outcome=\"dead\"} 2",
        "gatehouse_alert_deliveries_total{action=\"webhook\",outcome=\"retried\"} 4",
        "gatehouse_rules_loaded 3",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    assert!(
        metrics.contains("gatehouse_rule_evaluations_total{event=\"results\"}"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollments_fire_rules_and_grpc_manages_rules_and_reads_alerts() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let admin = s.boot.admin_token.clone();
    let bob = s.user_token("bob", "observer").await?;
    let mut grpc = AdminClient::new(s.grpc_channel().await?);
    let to_struct = |v: Value| -> prost_types::Struct {
        match gatehouse_api::grpc::to_pb_value(v).kind {
            Some(prost_types::value::Kind::StructValue(s)) => s,
            _ => prost_types::Struct::default(),
        }
    };
    let rule = pb::Rule {
        name: "new-host".into(),
        description: "every first enrollment".into(),
        enabled: true,
        when: Some(to_struct(
            json!({"event": "host_enrolled", "first_only": true}),
        )),
        actions: vec![to_struct(json!({"type": "log"}))],
        updated_at: 0,
        throttle_secs: 0,
    };
    // Observers may not write rules.
    let e = grpc
        .put_rule(as_user(&bob, rule.clone())?)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("accepted"))?;
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let saved = grpc.put_rule(as_user(&admin, rule)?).await?.into_inner();
    assert!(saved.updated_at > 0);
    // A bad trigger is INVALID_ARGUMENT with serde's reason.
    let bad = pb::Rule {
        name: "bad".into(),
        when: Some(to_struct(json!({"event": "host_exploded"}))),
        actions: vec![to_struct(json!({"type": "log"}))],
        ..Default::default()
    };
    let e = grpc
        .put_rule(as_user(&admin, bad)?)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("accepted"))?;
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("host_exploded"), "{}", e.message());

    let listed = grpc
        .list_rules(as_user(&bob, pb::Empty {})?)
        .await?
        .into_inner();
    assert_eq!(listed.rules.len(), 1);
    assert_eq!(listed.rules[0].name, "new-host");

    // The engine loads the rule from the change broadcast; enroll two hosts.
    let mut a = s.agent(1);
    let mut b = s.agent(2);
    anyhow::ensure!(a.enroll().await?.agent_success());
    anyhow::ensure!(b.enroll().await?.agent_success());
    // A re-enrollment is not a first enrollment: it fires nothing.
    anyhow::ensure!(a.enroll().await?.agent_success());
    let alerts = eventually(Duration::from_secs(10), || async {
        let r = alerts_over_grpc(&grpc, &bob).await?;
        Ok((r.alerts.len() >= 2).then_some(r.alerts))
    })
    .await?;
    let mut hosts: Vec<&str> = alerts.iter().map(|a| a.host_id.as_str()).collect();
    hosts.sort();
    hosts.dedup();
    assert_eq!(
        alerts.len(),
        2,
        "one per host's first enrollment: {alerts:?}"
    );
    assert_eq!(hosts.len(), 2);
    assert!(
        alerts
            .iter()
            .all(|x| x.event == "host_enrolled" && x.actions[0].state == "delivered")
    );

    // Turned off (gRPC), a rule fires nothing; turned on again (REST), it
    // fires. The engine's gauge says when it has the change.
    let enabled_rules = |want: &'static str| {
        let url = format!("{}/metrics", s.ops_url);
        async move {
            eventually(Duration::from_secs(10), || async {
                let m = reqwest::get(&url).await?.text().await?;
                Ok(m.lines()
                    .any(|l| l == format!("gatehouse_rules_enabled {want}"))
                    .then_some(()))
            })
            .await
        }
    };
    let e = grpc
        .set_rule_enabled(as_user(
            &bob,
            pb::RuleSwitch {
                name: "new-host".into(),
                enabled: false,
            },
        )?)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("accepted"))?;
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let off = grpc
        .set_rule_enabled(as_user(
            &admin,
            pb::RuleSwitch {
                name: "new-host".into(),
                enabled: false,
            },
        )?)
        .await?
        .into_inner();
    assert!(!off.enabled);
    enabled_rules("0").await?;
    let mut c = s.agent(3);
    anyhow::ensure!(c.enroll().await?.agent_success());
    let (code, on) = s
        .api(
            Method::PUT,
            "/api/v1/rules/new-host/enabled",
            Some(json!({"enabled": true})),
        )
        .await?;
    assert_eq!(code, 200, "{on}");
    assert_eq!(on["enabled"], true);
    let (code, e) = s
        .api(
            Method::PUT,
            "/api/v1/rules/nope/enabled",
            Some(json!({"enabled": true})),
        )
        .await?;
    assert_eq!(code, 404, "{e}");
    enabled_rules("1").await?;
    let mut d = s.agent(4);
    anyhow::ensure!(d.enroll().await?.agent_success());
    // Enrollments are evaluated in order: once d's alert is in, c's
    // enrollment was evaluated (while the rule was off).
    let alerts = eventually(Duration::from_secs(10), || async {
        let r = alerts_over_grpc(&grpc, &bob).await?;
        Ok(r.alerts
            .iter()
            .any(|x| x.host_id == d.host_id())
            .then_some(r.alerts))
    })
    .await?;
    assert!(
        alerts.iter().all(|x| x.host_id != c.host_id()),
        "a disabled rule fired: {alerts:?}"
    );
    assert_eq!(alerts.len(), 3);

    // Dead letters over gRPC are admin-only; deleting a rule is audited.
    let e = grpc
        .list_dead_letters(as_user(&bob, pb::Empty {})?)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("accepted"))?;
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(
        grpc.list_dead_letters(as_user(&admin, pb::Empty {})?)
            .await?
            .into_inner()
            .dead_letters
            .is_empty()
    );
    grpc.delete_rule(as_user(
        &admin,
        pb::NameRef {
            name: "new-host".into(),
        },
    )?)
    .await?;
    let e = grpc
        .delete_rule(as_user(
            &admin,
            pb::NameRef {
                name: "new-host".into(),
            },
        )?)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("accepted"))?;
    assert_eq!(e.code(), tonic::Code::NotFound);
    let (_, audit) = s.call(&admin, Method::GET, "/api/v1/audit", None).await?;
    assert!(audit.to_string().contains("rule.delete"));
    Ok(())
}

/// A throttled rule alerts once per host and window, however many runs
/// match; a webhook sends its custom headers and an HMAC-SHA256 signature
/// of the exact body; secrets and header values never leave in listings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_rules_alert_once_per_host_and_webhooks_are_signed() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let admin = s.boot.admin_token.clone();
    let hook = WebhookReceiver::start().await?;
    let secret = "0123456789abcdef-signing";
    let (code, e) = s
        .api(
            Method::PUT,
            "/api/v1/rules/shells",
            Some(json!({
                "when": {"event": "results", "query": "shells", "row_actions": ["added", "snapshot"]},
                "throttle_secs": 3600,
                "actions": [{"type": "webhook", "url": format!("{}/signed", hook.url),
                             "headers": {"Authorization": "Splunk abc-123", "X-Route": "secops"},
                             "secret": secret}]
            })),
        )
        .await?;
    assert_eq!(code, 200, "{e}");
    // Headers Gatehouse sets itself, and short secrets, are refused.
    for (action, want) in [
        (
            json!({"type": "webhook", "url": "https://x.example/h", "headers": {"Content-Type": "text/plain"}}),
            "set by Gatehouse",
        ),
        (
            json!({"type": "webhook", "url": "https://x.example/h", "headers": {"bad name": "v"}}),
            "not an HTTP header name",
        ),
        (
            json!({"type": "webhook", "url": "https://x.example/h", "secret": "short"}),
            "at least 16 characters",
        ),
    ] {
        let (code, e) = s
            .api(
                Method::PUT,
                "/api/v1/rules/bad",
                Some(json!({"when": {"event": "host_enrolled"}, "actions": [action]})),
            )
            .await?;
        assert_eq!(code, 400, "{e}");
        assert!(e["error"].as_str().unwrap_or("").contains(want), "{e}");
    }
    let (_, rules) = s.api(Method::GET, "/api/v1/rules", None).await?;
    assert_eq!(rules[0]["throttle_secs"], 3600, "{rules}");
    let bob = s.user_token("bob", "observer").await?;
    let (_, seen_by_bob) = s.call(&bob, Method::GET, "/api/v1/rules", None).await?;
    let text = seen_by_bob.to_string();
    assert!(
        !text.contains(secret) && !text.contains("abc-123"),
        "{text}"
    );

    let mut a = s.agent(1);
    let mut b = s.agent(2);
    anyhow::ensure!(a.enroll().await?.agent_success());
    anyhow::ensure!(b.enroll().await?.agent_success());
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    // Three runs on a, ten minutes apart, each matching; one run on b.
    for (agent, at) in [(&a, t - 1200), (&a, t - 600), (&a, t), (&b, t)] {
        let batch = json!([
            event_line("h", "shells", json!({"shell": "/bin/bash", "pid": "1"}), at),
            event_line("h", "shells", json!({"shell": "/bin/zsh", "pid": "2"}), at),
        ]);
        anyhow::ensure!(agent.log("result", batch).await?.agent_success());
    }
    let hits = eventually(Duration::from_secs(20), || async {
        let h = hook.hits("/signed");
        Ok((h.len() >= 2).then_some(h))
    })
    .await?;
    let alerts = alerts_of(&s, &admin, "shells").await?;
    assert_eq!(alerts.len(), 2, "one per host in the window: {alerts:?}");
    let mut hosts: Vec<&str> = alerts
        .iter()
        .filter_map(|x| x["host_id"].as_str())
        .collect();
    hosts.sort();
    let mut want = vec![a.host_id(), b.host_id()];
    want.sort();
    assert_eq!(hosts, want);
    assert!(
        alerts.iter().all(|x| x["detail"]["matched"] == 2),
        "{alerts:?}"
    );
    for h in &hits {
        assert_eq!(h.header("authorization"), Some("Splunk abc-123"));
        assert_eq!(h.header("x-route"), Some("secops"));
        assert_eq!(
            h.header("x-gatehouse-signature"),
            Some(gatehouse_rules::signature(secret, h.raw.as_bytes()).as_str()),
            "the signature covers the exact body"
        );
    }
    // The throttled runs are counted.
    let metrics = s.metrics().await?;
    assert!(
        metrics
            .lines()
            .any(|l| l == "gatehouse_alerts_total{rule=\"shells\",outcome=\"throttled\"} 2"),
        "{metrics}"
    );
    s.stop().await?;
    Ok(())
}
