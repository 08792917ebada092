//! Enroll secrets managed through the API (REST and gRPC): several at
//! once, each with default labels an enrolling host gets, optional expiry,
//! revocable; only admins see or manage them; agents enrolling with a
//! revoked, expired or unknown secret are refused (and keep retrying, as
//! osquery does), while hosts already enrolled keep working.

use std::time::Duration;

use gatehouse_proto::v1 as pb;
use gatehouse_proto::v1::admin_client::AdminClient;
use gatehouse_tests::TestServer;
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_secrets_label_expire_and_revoke() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let admin = s.boot.admin_token.clone();

    let (code, created) = s
        .call(
            &admin,
            Method::POST,
            "/api/v1/enroll_secrets",
            Some(json!({"id": "laptops", "labels": ["laptops", "emea"]})),
        )
        .await?;
    assert_eq!(code, 201, "{created}");
    let laptops = created["secret"].as_str().unwrap_or_default().to_owned();
    assert!(laptops.len() >= 32);
    // Listed without the value.
    let (_, listed) = s
        .call(&admin, Method::GET, "/api/v1/enroll_secrets", None)
        .await?;
    let ids: Vec<&str> = listed
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, ["bootstrap", "laptops"], "{listed}");
    assert!(listed[1].get("secret").is_none(), "{listed}");
    assert!(!listed.to_string().contains(&laptops));
    // Validation and uniqueness.
    for (body, want) in [
        (json!({"id": "laptops"}), 409),
        (json!({"id": "bad id"}), 400),
        (json!({"id": "x", "labels": ["no spaces allowed"]}), 400),
        (json!({"id": "y", "secret": "short"}), 400),
        (json!({"id": "z", "expires_in": 0}), 400),
    ] {
        let (code, e) = s
            .call(
                &admin,
                Method::POST,
                "/api/v1/enroll_secrets",
                Some(body.clone()),
            )
            .await?;
        assert_eq!(code, want, "{body}: {e}");
    }

    // An agent enrolls with it and gets its labels.
    let mut a = s.agent(1);
    a.set_enroll_secret(laptops.clone());
    let r = a.enroll().await?;
    anyhow::ensure!(r.agent_success(), "enroll with a managed secret: {r:?}");
    let (_, host) = s
        .call(
            &admin,
            Method::GET,
            &format!("/api/v1/hosts/{}", a.host_id()),
            None,
        )
        .await?;
    assert_eq!(host["labels"], json!(["emea", "laptops"]), "{host}");
    assert!(
        host["label_set"]
            .as_array()
            .is_some_and(|l| l.contains(&json!("laptops")))
    );

    // Over gRPC: a chosen value that expires after a second.
    let mut rpc = AdminClient::new(s.grpc_channel().await?);
    let req = gatehouse_tests::as_user(
        &admin,
        pb::CreateEnrollSecretRequest {
            id: "burst".into(),
            labels: vec!["burst".into()],
            expires_in: Some(1),
            secret: Some("a-chosen-secret-value".into()),
        },
    )?;
    let burst = rpc.create_enroll_secret(req).await?.into_inner();
    assert_eq!(burst.secret, "a-chosen-secret-value");
    let mut b = s.agent(2);
    b.set_enroll_secret(burst.secret.clone());
    anyhow::ensure!(b.enroll().await?.agent_success());
    // Its second passes on the server's clock, not the test's.
    s.clock.advance(Duration::from_millis(1_100));
    let mut late = s.agent(3);
    late.set_enroll_secret(burst.secret.clone());
    let r = late.enroll().await?;
    assert!(
        !r.agent_success(),
        "an expired secret enrolled a host: {r:?}"
    );

    // Revoked: no new enrollments; enrolled hosts keep their node keys.
    let (code, revoked) = s
        .call(
            &admin,
            Method::POST,
            "/api/v1/enroll_secrets/laptops/revoke",
            None,
        )
        .await?;
    assert_eq!(code, 200);
    assert_eq!(revoked["revoked"], true);
    let mut c = s.agent(4);
    c.set_enroll_secret(laptops.clone());
    assert!(!c.enroll().await?.agent_success());
    anyhow::ensure!(
        a.config().await?.agent_success(),
        "an enrolled host lost access"
    );
    // Unknown secrets are refused; the bootstrap secret still works.
    let mut d = s.agent(5);
    d.set_enroll_secret("never-issued-anywhere".into());
    assert!(!d.enroll().await?.agent_success());
    anyhow::ensure!(s.agent(6).enroll().await?.agent_success());

    // Only admins see or manage enroll secrets, and every change is audited.
    let (_, u) = s
        .call(
            &admin,
            Method::POST,
            "/api/v1/users",
            Some(json!({"name": "olga", "role": "operator"})),
        )
        .await?;
    assert_eq!(u["role"], "operator");
    let (_, t) = s
        .call(&admin, Method::POST, "/api/v1/users/olga/tokens", None)
        .await?;
    let olga = t["secret"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        s.call(&olga, Method::GET, "/api/v1/enroll_secrets", None)
            .await?
            .0,
        403
    );
    assert_eq!(
        s.call(
            &olga,
            Method::POST,
            "/api/v1/enroll_secrets",
            Some(json!({"id": "mine"}))
        )
        .await?
        .0,
        403
    );
    let (_, audit) = s
        .call(&admin, Method::GET, "/api/v1/audit?limit=100", None)
        .await?;
    let actions: Vec<(String, String, String)> = audit
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["actor"].as_str().unwrap_or_default().to_owned(),
                        e["action"].as_str().unwrap_or_default().to_owned(),
                        e["outcome"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    for want in [
        ("admin", "enroll_secret.create", "accepted"),
        ("admin", "enroll_secret.revoke", "accepted"),
        ("olga", "enroll_secret.list", "denied"),
        ("olga", "enroll_secret.create", "denied"),
    ] {
        assert!(
            actions
                .iter()
                .any(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()) == want),
            "{want:?} not in the audit log"
        );
    }
    // The value never reaches the audit log.
    assert!(!audit.to_string().contains("a-chosen-secret-value"));
    s.stop().await?;
    Ok(())
}

/// The enroll secret of the first start is listed as `bootstrap` (by hash
/// only), can be revoked like any other, and stays revoked across a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_secret_is_listed_and_revocable() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let s = TestServer::start_in(&data, |_| {}).await?;
    let admin = s.boot.admin_token.clone();
    let (code, listed) = s
        .call(&admin, Method::GET, "/api/v1/enroll_secrets", None)
        .await?;
    assert_eq!(code, 200);
    let boot = &listed[0];
    assert_eq!(boot["id"], "bootstrap", "{listed}");
    assert_eq!(boot["revoked"], false);
    assert!(!listed.to_string().contains(&s.boot.enroll_secret));
    anyhow::ensure!(s.agent(1).enroll().await?.agent_success());

    let (code, revoked) = s
        .call(
            &admin,
            Method::POST,
            "/api/v1/enroll_secrets/bootstrap/revoke",
            None,
        )
        .await?;
    assert_eq!(code, 200, "{revoked}");
    assert!(!s.agent(2).enroll().await?.agent_success());
    s.stop().await?;

    let s = TestServer::start_in(&data, |_| {}).await?;
    let (_, listed) = s
        .call(&admin, Method::GET, "/api/v1/enroll_secrets", None)
        .await?;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["revoked"], true, "{listed}");
    assert!(
        !s.agent(3).enroll().await?.agent_success(),
        "a revoked bootstrap secret came back after a restart"
    );
    s.stop().await?;
    Ok(())
}
