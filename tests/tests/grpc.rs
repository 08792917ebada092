//! The operator API over gRPC (`gatehouse.v1.Admin`), on the same TLS
//! listener as REST (HTTP/2 by ALPN): a real tonic client with the server's
//! CA. The same operations give the same answers as REST, errors arrive as
//! gRPC status codes, calls without the admin token are refused, and the
//! standard health service answers.

use gatehouse_proto::v1 as pb;
use gatehouse_proto::v1::admin_client::AdminClient;
use gatehouse_tests::TestServer;
use reqwest::Method;
use serde_json::json;
use tonic::Code;

fn authed<T>(s: &TestServer, msg: T) -> anyhow::Result<tonic::Request<T>> {
    gatehouse_tests::as_user(&s.boot.admin_token, msg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_service_over_grpc_matches_rest() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let mut a = s.agent(1);
    anyhow::ensure!(a.enroll().await?.agent_success());
    let mut admin = AdminClient::new(s.grpc_channel().await?);

    // No token, or a wrong one: UNAUTHENTICATED, nothing done.
    let e = admin
        .list_queries(pb::Empty {})
        .await
        .err()
        .map(|e| e.code());
    assert_eq!(e, Some(Code::Unauthenticated));
    let mut wrong = tonic::Request::new(pb::Empty {});
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer nope".parse()?);
    assert_eq!(
        admin.list_queries(wrong).await.err().map(|e| e.code()),
        Some(Code::Unauthenticated)
    );

    // Hosts: the same host REST lists, with its details as a Struct.
    let hosts = admin
        .list_hosts(authed(&s, pb::ListHostsRequest::default())?)
        .await?
        .into_inner();
    assert_eq!(hosts.hosts.len(), 1);
    let h = &hosts.hosts[0];
    let (code, rest) = s
        .api(Method::GET, &format!("/api/v1/hosts/{}", h.id), None)
        .await?;
    assert_eq!(code, 200);
    assert_eq!(rest["hostname"], json!(h.hostname));
    assert_eq!(rest["key_epoch"], json!(h.key_epoch));
    assert_eq!(rest["label_set"], json!(h.label_set));
    assert!(h.details.as_ref().is_some_and(|d| !d.fields.is_empty()));

    // Labels go through the host's actor.
    let v = admin
        .set_host_labels(authed(
            &s,
            pb::SetHostLabelsRequest {
                id: h.id.clone(),
                labels: vec!["prod".into()],
            },
        )?)
        .await?
        .into_inner();
    assert_eq!(v.labels, vec!["prod".to_owned()]);

    // Definitions: written over gRPC, read over REST, and back.
    let q = admin
        .put_query(authed(
            &s,
            pb::Query {
                name: "users".into(),
                sql: "SELECT * FROM users".into(),
                description: "local users".into(),
                updated_at: 0,
            },
        )?)
        .await?
        .into_inner();
    assert!(q.updated_at > 0);
    let (_, rest) = s.api(Method::GET, "/api/v1/queries", None).await?;
    assert_eq!(rest[0]["name"], "users");
    let sched = admin
        .put_schedule(authed(
            &s,
            pb::Schedule {
                name: "users_hourly".into(),
                query: "users".into(),
                interval: 3600,
                snapshot: true,
                shard: Some(50),
                labels: vec!["all".into()],
                ..Default::default()
            },
        )?)
        .await?
        .into_inner();
    assert_eq!(sched.shard, Some(50));
    let listed = admin
        .list_schedules(authed(&s, pb::Empty {})?)
        .await?
        .into_inner();
    assert_eq!(listed.schedules.len(), 1);
    let mut options = prost_types::Struct::default();
    options.fields.insert(
        "distributed_interval".into(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::NumberValue(10.0)),
        },
    );
    admin
        .put_label_config(authed(
            &s,
            pb::LabelConfig {
                label: "prod".into(),
                options: Some(options),
                ..Default::default()
            },
        )?)
        .await?;
    let (_, rest) = s.api(Method::GET, "/api/v1/label_configs", None).await?;
    assert_eq!(rest[0]["options"]["distributed_interval"], json!(10));
    let config = admin
        .host_config(authed(&s, pb::HostRef { id: h.id.clone() })?)
        .await?
        .into_inner();
    assert!(config.fields.contains_key("schedule"), "{config:?}");

    // Validation errors are INVALID_ARGUMENT with the REST message.
    let bad = admin
        .put_schedule(authed(
            &s,
            pb::Schedule {
                name: "broken".into(),
                query: "no_such_query".into(),
                interval: 60,
                labels: vec!["all".into()],
                ..Default::default()
            },
        )?)
        .await
        .expect_err("a schedule of a missing query was accepted");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("no_such_query"), "{}", bad.message());
    let missing = admin
        .get_host(authed(&s, pb::HostRef { id: "0".repeat(32) })?)
        .await
        .err()
        .map(|e| e.code());
    assert_eq!(missing, Some(Code::NotFound));

    // A live query: created over gRPC, answered by the agent, read back.
    let c = admin
        .create_campaign(authed(
            &s,
            pb::CreateCampaignRequest {
                sql: "SELECT 1 AS one".into(),
                all: true,
                ..Default::default()
            },
        )?)
        .await?
        .into_inner();
    assert_eq!(c.target_count, 1);
    a.read_until(&c.id).await?;
    let w = a
        .write(json!({
            "queries": {c.id.clone(): [{"one": "1"}]},
            "statuses": {c.id.clone(): 0}
        }))
        .await?;
    anyhow::ensure!(w.agent_success(), "{w:?}");
    let detail = admin
        .get_campaign(authed(&s, pb::CampaignRef { id: c.id.clone() })?)
        .await?
        .into_inner();
    assert_eq!(
        detail.campaign.and_then(|c| c.coverage).map(|c| c.answered),
        Some(1)
    );
    assert!(detail.non_responders.is_empty());
    let results = admin
        .campaign_results(authed(&s, pb::CampaignRef { id: c.id.clone() })?)
        .await?
        .into_inner();
    let row = results.results[0].rows[0].fields.get("one").cloned();
    assert_eq!(
        row.and_then(|v| v.kind),
        Some(prost_types::value::Kind::StringValue("1".into()))
    );

    // Key rotation goes through the host's actor too.
    let k = admin
        .rotate_key(authed(
            &s,
            pb::RotateKeyRequest {
                id: h.id.clone(),
                revoke: false,
            },
        )?)
        .await?
        .into_inner();
    assert_eq!(k.epoch, h.key_epoch + 1);

    // Deleting over gRPC; REST sees it gone.
    admin
        .delete_schedule(authed(
            &s,
            pb::NameRef {
                name: "users_hourly".into(),
            },
        )?)
        .await?;
    let (_, rest) = s.api(Method::GET, "/api/v1/schedules", None).await?;
    assert_eq!(rest, json!([]));

    // The standard health service, on the same listener.
    let mut health = tonic_health::pb::health_client::HealthClient::new(s.grpc_channel().await?);
    let st = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "gatehouse.v1.Admin".into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        st.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    s.stop().await?;
    Ok(())
}
