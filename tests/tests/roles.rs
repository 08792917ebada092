//! Users, API tokens and roles, and the audit log, through REST and gRPC
//! against the all-in-one server: an observer cannot run a query, change
//! a definition or read users, tokens or the audit log; an operator runs
//! queries but manages nobody; revoked, expired and disabled users' tokens
//! stop working at once; every write and every query run is in the audit
//! log with who, what, when and the outcome, refusals included.

use std::time::Duration;

use gatehouse_proto::v1 as pb;
use gatehouse_proto::v1::admin_client::AdminClient;
use gatehouse_tests::{TestServer, as_user};
use reqwest::Method;
use serde_json::json;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_limit_what_each_caller_may_do_and_everything_is_audited() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let admin = s.boot.admin_token.clone();
    let mut agent = s.agent(1);
    anyhow::ensure!(agent.enroll().await?.agent_success());
    let host = agent.host_id();

    // The admin creates an operator and an observer, with a token each.
    for (name, role) in [("alice", "operator"), ("bob", "observer")] {
        let (code, u) = s
            .call(
                &admin,
                Method::POST,
                "/api/v1/users",
                Some(json!({"name": name, "role": role})),
            )
            .await?;
        assert_eq!(code, 201, "{u}");
        assert_eq!(u["role"], role);
    }
    let (code, e) = s
        .call(
            &admin,
            Method::POST,
            "/api/v1/users",
            Some(json!({"name": "alice", "role": "observer"})),
        )
        .await?;
    assert_eq!(code, 409, "{e}");
    let (code, e) = s
        .call(
            &admin,
            Method::POST,
            "/api/v1/users",
            Some(json!({"name": "carol", "role": "superuser"})),
        )
        .await?;
    assert_eq!(code, 400, "{e}");
    let mut tokens = std::collections::HashMap::new();
    for name in ["alice", "bob"] {
        let (code, t) = s
            .call(
                &admin,
                Method::POST,
                &format!("/api/v1/users/{name}/tokens"),
                Some(json!({"description": format!("{name}'s laptop")})),
            )
            .await?;
        assert_eq!(code, 201, "{t}");
        let secret = t["secret"].as_str().unwrap_or_default().to_owned();
        assert!(secret.starts_with("ght_") && secret.len() > 60);
        assert!(t.get("secret_sha256").is_some_and(|h| h != &json!(secret)));
        tokens.insert(
            name,
            (secret, t["id"].as_str().unwrap_or_default().to_owned()),
        );
    }
    let (alice, alice_id) = tokens["alice"].clone();
    let (bob, _) = tokens["bob"].clone();
    let (_, me) = s.call(&bob, Method::GET, "/api/v1/whoami", None).await?;
    assert_eq!(me, json!({"name": "bob", "role": "observer"}));

    // The observer reads, and nothing else.
    assert_eq!(
        s.call(&bob, Method::GET, "/api/v1/hosts", None).await?.0,
        200
    );
    assert_eq!(
        s.call(
            &bob,
            Method::GET,
            &format!("/api/v1/hosts/{host}/config"),
            None
        )
        .await?
        .0,
        200
    );
    let (code, e) = s
        .call(
            &bob,
            Method::POST,
            "/api/v1/campaigns",
            Some(json!({"sql": "SELECT * FROM users", "all": true})),
        )
        .await?;
    assert_eq!(code, 403, "{e}");
    assert!(
        e["error"].as_str().is_some_and(|m| m.contains("operator")),
        "{e}"
    );
    let (code, _) = s
        .call(
            &bob,
            Method::PUT,
            "/api/v1/queries/users",
            Some(json!({"sql": "SELECT * FROM users"})),
        )
        .await?;
    assert_eq!(code, 403);
    for path in ["/api/v1/users", "/api/v1/tokens", "/api/v1/audit"] {
        assert_eq!(
            s.call(&bob, Method::GET, path, None).await?.0,
            403,
            "{path}"
        );
    }
    let mut rpc = AdminClient::new(s.grpc_channel().await?);
    let denied = rpc
        .create_campaign(as_user(
            &bob,
            pb::CreateCampaignRequest {
                sql: "SELECT 1".into(),
                all: true,
                ..Default::default()
            },
        )?)
        .await
        .err()
        .map(|e| e.code());
    assert_eq!(denied, Some(Code::PermissionDenied));
    assert_eq!(
        rpc.list_users(as_user(&bob, pb::Empty {})?)
            .await
            .err()
            .map(|e| e.code()),
        Some(Code::PermissionDenied)
    );
    let hosts = rpc
        .list_hosts(as_user(&bob, pb::ListHostsRequest::default())?)
        .await?
        .into_inner();
    assert_eq!(hosts.hosts.len(), 1);

    // The operator runs queries and changes definitions, but manages no one
    // and cannot touch node keys.
    let (code, _) = s
        .call(
            &alice,
            Method::PUT,
            "/api/v1/queries/users",
            Some(json!({"sql": "SELECT * FROM users"})),
        )
        .await?;
    assert_eq!(code, 200);
    let campaign = rpc
        .create_campaign(as_user(
            &alice,
            pb::CreateCampaignRequest {
                sql: "SELECT 1 AS one".into(),
                all: true,
                ..Default::default()
            },
        )?)
        .await?
        .into_inner();
    assert_eq!(campaign.created_by, "alice");
    let (code, _) = s
        .call(
            &alice,
            Method::POST,
            &format!("/api/v1/hosts/{host}/rotate_key"),
            Some(json!({})),
        )
        .await?;
    assert_eq!(code, 403);
    assert_eq!(
        s.call(
            &alice,
            Method::POST,
            "/api/v1/users",
            Some(json!({"name": "mallory", "role": "admin"}))
        )
        .await?
        .0,
        403
    );
    // A failing write is one audit row, its outcome `failed` (ADR 0019).
    let (code, _) = s
        .call(
            &alice,
            Method::PUT,
            "/api/v1/schedules/broken",
            Some(json!({"query": "missing", "interval": 60, "labels": ["all"]})),
        )
        .await?;
    assert_eq!(code, 400);

    // Users and tokens over gRPC too.
    let who = rpc
        .whoami(as_user(&alice, pb::Empty {})?)
        .await?
        .into_inner();
    assert_eq!(
        (who.name.as_str(), who.role.as_str()),
        ("alice", "operator")
    );
    let users = rpc
        .list_users(as_user(&admin, pb::Empty {})?)
        .await?
        .into_inner();
    let names: Vec<_> = users.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);
    let short = rpc
        .create_token(as_user(
            &admin,
            pb::CreateTokenRequest {
                user: "bob".into(),
                description: "one second".into(),
                expires_in: Some(1),
            },
        )?)
        .await?
        .into_inner();
    assert_eq!(
        rpc.whoami(as_user(&short.secret, pb::Empty {})?)
            .await?
            .into_inner()
            .name,
        "bob"
    );
    // Its second passes on the server's clock, not the test's.
    s.clock.advance(Duration::from_millis(1_100));
    assert_eq!(
        rpc.whoami(as_user(&short.secret, pb::Empty {})?)
            .await
            .err()
            .map(|e| e.code()),
        Some(Code::Unauthenticated),
        "an expired token still works"
    );

    // Revoking a token and disabling a user take effect at once.
    let (code, t) = s
        .call(
            &admin,
            Method::POST,
            &format!("/api/v1/tokens/{alice_id}/revoke"),
            None,
        )
        .await?;
    assert_eq!(code, 200, "{t}");
    assert_eq!(t["revoked"], true);
    assert_eq!(
        s.call(&alice, Method::GET, "/api/v1/hosts", None).await?.0,
        401
    );
    rpc.update_user(as_user(
        &admin,
        pb::UpdateUserRequest {
            name: "bob".into(),
            disabled: Some(true),
            ..Default::default()
        },
    )?)
    .await?;
    assert_eq!(
        s.call(&bob, Method::GET, "/api/v1/hosts", None).await?.0,
        401
    );

    // The audit log: who, what, when, and the outcome, newest first.
    let audit = rpc
        .list_audit(as_user(
            &admin,
            pb::ListAuditRequest {
                limit: 1000,
                ..Default::default()
            },
        )?)
        .await?
        .into_inner()
        .events;
    let has = |actor: &str, action: &str, outcome: &str| {
        audit
            .iter()
            .any(|e| e.actor == actor && e.action == action && e.outcome == outcome)
    };
    assert!(has("admin", "user.create", "accepted"));
    assert!(has("admin", "token.create", "accepted"));
    assert!(has("bob", "campaign.create", "denied"), "REST refusal");
    assert!(has("bob", "query.put", "denied"));
    assert!(has("bob", "user.list", "denied"), "gRPC refusal");
    assert!(has("alice", "query.put", "accepted"));
    assert!(has("alice", "campaign.create", "accepted"));
    assert!(has("alice", "host.rotate_key", "denied"));
    let broken: Vec<_> = audit
        .iter()
        .filter(|e| e.action == "schedule.put" && e.target == "broken")
        .collect();
    assert_eq!(broken.len(), 1, "one row per call: {broken:?}");
    assert_eq!(broken[0].outcome, "failed");
    assert!(
        !audit.iter().any(|e| e.outcome == "pending"),
        "every finished call has its outcome"
    );
    assert!(has("admin", "token.revoke", "accepted"));
    assert!(has("admin", "user.update", "accepted"));
    let run = audit
        .iter()
        .find(|e| e.action == "campaign.create" && e.actor == "alice")
        .and_then(|e| e.detail.clone())
        .map(gatehouse_api::grpc::from_pb_value);
    assert_eq!(
        run.as_ref().map(|d| d["sql"].clone()),
        Some(json!("SELECT 1 AS one"))
    );
    // The row names the campaign the call made.
    let made = audit
        .iter()
        .find(|e| e.action == "campaign.create" && e.actor == "alice")
        .ok_or_else(|| anyhow::anyhow!("no campaign.create row"))?;
    let detail = made
        .detail
        .clone()
        .map(gatehouse_api::grpc::from_pb_value)
        .unwrap_or_default();
    assert_eq!(detail["campaign_id"], json!(made.target), "{detail}");
    assert!(
        detail["target_count"].as_u64().is_some_and(|n| n >= 1),
        "{detail}"
    );
    assert_eq!(made.target.len(), 32, "the campaign id is the target");
    assert!(audit.windows(2).all(|w| w[0].at >= w[1].at), "newest first");
    // Pages: the REST listing continues where the previous page stopped.
    let (_, first) = s
        .call(&admin, Method::GET, "/api/v1/audit?limit=3", None)
        .await?;
    let last = &first[2];
    let (_, next) = s
        .call(
            &admin,
            Method::GET,
            &format!(
                "/api/v1/audit?limit=3&before_at={}&before_id={}",
                last["at"],
                last["id"].as_str().unwrap_or_default()
            ),
            None,
        )
        .await?;
    assert_eq!(next[0]["id"], json!(audit[3].id));
    s.stop().await?;
    Ok(())
}
