//! Dynamic labels: a label query is asked of matching hosts as a live
//! query; hosts whose answer has rows join the label (its config, its
//! listings, campaigns by label), others do not; it is asked again only
//! after its interval; deleting it takes hosts out. Through REST, gRPC
//! and `ctl apply`.

use std::collections::BTreeSet;
use std::time::Duration;

use gatehouse_proto::v1 as pb;
use gatehouse_proto::v1::admin_client::AdminClient;
use gatehouse_tests::{Agent, TestServer, eventually};
use reqwest::Method;
use serde_json::{Value, json};

const LABEL_QUERY: &str = "gatehouse-label:has-nc";

async fn label_query_asked(agent: &Agent) -> anyhow::Result<Option<String>> {
    let r = agent.read().await?.json.unwrap_or_default();
    Ok(r["queries"][LABEL_QUERY].as_str().map(str::to_owned))
}

fn members(v: &Value) -> BTreeSet<String> {
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| h["id"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_join_dynamic_labels_from_their_answers() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let olga = s.user_token("olga", "operator").await?;
    let bob = s.user_token("bob", "observer").await?;
    // Validation and roles.
    for (body, want) in [
        (json!({"sql": "SELECT 1", "interval": 5}), "at least 60"),
        (json!({"sql": " "}), "must not be empty"),
        (json!({"sql": "SELECT 1", "platforms": ["plan9"]}), "plan9"),
    ] {
        let (code, e) = s
            .call(
                &olga,
                Method::PUT,
                "/api/v1/label_queries/has-nc",
                Some(body),
            )
            .await?;
        assert_eq!(code, 400, "{e}");
        assert!(e["error"].as_str().unwrap_or("").contains(want), "{e}");
    }
    let (code, _) = s
        .call(
            &bob,
            Method::PUT,
            "/api/v1/label_queries/has-nc",
            Some(json!({"sql": "SELECT 1"})),
        )
        .await?;
    assert_eq!(code, 403);
    let sql = "SELECT pid FROM processes WHERE name = 'nc'";
    let (code, q) = s
        .call(
            &olga,
            Method::PUT,
            "/api/v1/label_queries/has-nc",
            Some(json!({"sql": sql, "interval": 600, "platforms": ["linux"]})),
        )
        .await?;
    assert_eq!(code, 200, "{q}");
    // A schedule for the label's members.
    for (path, body) in [
        (
            "/api/v1/queries/nc_sockets",
            json!({"sql": "SELECT * FROM process_open_sockets"}),
        ),
        (
            "/api/v1/schedules/nc_sockets",
            json!({"query": "nc_sockets", "interval": 60, "labels": ["has-nc"]}),
        ),
    ] {
        let (code, e) = s.call(&olga, Method::PUT, path, Some(body)).await?;
        assert_eq!(code, 200, "{e}");
    }

    let mut a = s.agent(1);
    let mut b = s.agent(2);
    anyhow::ensure!(a.enroll().await?.agent_success());
    anyhow::ensure!(b.enroll().await?.agent_success());
    // Both are asked; a has nc running, b does not.
    let asked = eventually(Duration::from_secs(10), || label_query_asked(&a)).await?;
    assert_eq!(asked, sql);
    assert_eq!(label_query_asked(&b).await?.as_deref(), Some(sql));
    let w = a
        .write(json!({"queries": {LABEL_QUERY: [{"pid": "812"}]}, "statuses": {LABEL_QUERY: 0}}))
        .await?;
    anyhow::ensure!(w.agent_success());
    let w = b
        .write(json!({"queries": {LABEL_QUERY: []}, "statuses": {LABEL_QUERY: 0}}))
        .await?;
    anyhow::ensure!(w.agent_success());

    let host = s.get(&format!("/api/v1/hosts/{}", a.host_id())).await?;
    assert!(
        host["label_set"]
            .as_array()
            .is_some_and(|l| l.contains(&json!("has-nc"))),
        "{host}"
    );
    assert_eq!(host["dynamic_labels"], json!(["has-nc"]));
    let listed = s.get("/api/v1/hosts?label=has-nc").await?;
    assert_eq!(members(&listed), BTreeSet::from([a.host_id()]));
    // Members get the label's schedule; others do not.
    let config = |r: gatehouse_tests::Reply| r.json.unwrap_or_default().to_string();
    assert!(config(a.config().await?).contains("nc_sockets"));
    assert!(!config(b.config().await?).contains("nc_sockets"));
    // Not asked again before the interval.
    assert_eq!(label_query_asked(&a).await?, None);
    // A campaign by the dynamic label reaches its members only.
    let (code, c) = s
        .call(
            &olga,
            Method::POST,
            "/api/v1/campaigns",
            Some(json!({"sql": "SELECT 1", "labels": ["has-nc"]})),
        )
        .await?;
    assert_eq!(code, 201, "{c}");
    assert_eq!(c["target_count"], 1);

    // gRPC lists it; deleting it takes a out of the label at its next poll.
    let mut grpc = AdminClient::new(s.grpc_channel().await?);
    let req = gatehouse_tests::as_user(&bob, pb::Empty {})?;
    let qs = grpc.list_label_queries(req).await?.into_inner();
    assert_eq!(qs.label_queries.len(), 1);
    assert_eq!(qs.label_queries[0].interval, 600);
    let (code, _) = s
        .call(&olga, Method::DELETE, "/api/v1/label_queries/has-nc", None)
        .await?;
    assert_eq!(code, 204);
    eventually(Duration::from_secs(10), || async {
        a.read().await?;
        let h = s.get(&format!("/api/v1/hosts/{}", a.host_id())).await?;
        Ok(h.get("dynamic_labels").is_none().then_some(()))
    })
    .await?;
    assert!(members(&s.get("/api/v1/hosts?label=has-nc").await?).is_empty());
    let (_, audit) = s
        .call(&s.boot.admin_token, Method::GET, "/api/v1/audit", None)
        .await?;
    for want in ["label_query.put", "label_query.delete"] {
        assert!(audit.to_string().contains(want), "{want}");
    }
    Ok(())
}
