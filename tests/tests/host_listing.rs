//! Operator host listing: every host once when paging, filters by label
//! and platform answered from the label index, cursors that resume where
//! the last page ended, and a clear 400 for a bad cursor.

use std::collections::BTreeSet;

use gatehouse_tests::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

async fn all_pages(s: &TestServer, query: &str, limit: usize) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("/api/v1/hosts?limit={limit}{query}");
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let page = s.get(&url).await?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        anyhow::ensure!(items.len() <= limit, "page over the limit: {page}");
        ids.extend(
            items
                .iter()
                .map(|h| h["id"].as_str().unwrap_or_default().to_owned()),
        );
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => return Ok(ids),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_listing_pages_and_filters_without_losing_hosts() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let mut agents = Vec::new();
    for n in 0..7 {
        let mut a = s.agent(n);
        assert!(a.enroll().await?.agent_success());
        agents.push(a);
    }
    for a in &agents[..3] {
        let (st, v) = s
            .api(
                Method::PUT,
                &format!("/api/v1/hosts/{}/labels", a.host_id()),
                Some(json!({"labels": ["db"]})),
            )
            .await?;
        assert_eq!(st, 200, "{v}");
    }
    let everyone: BTreeSet<String> = agents.iter().map(|a| a.host_id()).collect();

    let listed = all_pages(&s, "", 3).await?;
    assert_eq!(listed.len(), 7, "{listed:?}");
    assert_eq!(listed.iter().cloned().collect::<BTreeSet<_>>(), everyone);

    let db = all_pages(&s, "&label=db", 2).await?;
    let want: BTreeSet<String> = agents[..3].iter().map(|a| a.host_id()).collect();
    assert_eq!(db.len(), 3);
    assert_eq!(db.iter().cloned().collect::<BTreeSet<_>>(), want);

    assert_eq!(all_pages(&s, "&platform=linux", 3).await?.len(), 7);
    assert!(all_pages(&s, "&platform=darwin", 3).await?.is_empty());
    assert_eq!(all_pages(&s, "&label=db&online=true", 10).await?.len(), 3);
    assert!(
        all_pages(&s, "&label=db&online=false", 10)
            .await?
            .is_empty()
    );
    assert_eq!(all_pages(&s, "&online=true", 2).await?.len(), 7);

    for bad in ["&after=nonsense", "&label=db&after=nonsense"] {
        let (st, v): (u16, Value) = s
            .api(Method::GET, &format!("/api/v1/hosts?limit=2{bad}"), None)
            .await?;
        assert_eq!(st, 400, "{bad}: {v}");
        assert!(
            v["error"].as_str().unwrap_or_default().contains("cursor"),
            "{v}"
        );
    }
    s.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_are_searched_by_text_and_last_seen_and_deleted_by_admins() -> anyhow::Result<()> {
    use gatehouse_proto::v1 as pb;
    use gatehouse_proto::v1::admin_client::AdminClient;
    let s = TestServer::start().await?;
    let admin = s.boot.admin_token.clone();
    let olga = s.user_token("olga", "operator").await?;
    let mut agents = Vec::new();
    for n in [1, 2, 12] {
        let mut a = s.agent(n);
        anyhow::ensure!(a.enroll().await?.agent_success());
        agents.push(a);
    }
    let ids = |v: &Value| -> BTreeSet<String> {
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| h["hostname"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    // Text search, any case, over hostname, identifier, id and IP.
    let found = s.get("/api/v1/hosts?search=WEB-1").await?;
    assert_eq!(
        ids(&found),
        BTreeSet::from(["web-12.example.com".to_owned()])
    );
    let by_id = s
        .get(&format!(
            "/api/v1/hosts?search={}",
            &agents[0].host_id()[..12]
        ))
        .await?;
    assert_eq!(ids(&by_id).len(), 1);
    // Last-seen windows: everyone was seen just now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let stale = s
        .get(&format!("/api/v1/hosts?seen_before={}", now - 60_000))
        .await?;
    assert!(ids(&stale).is_empty(), "{stale}");
    let fresh = s
        .get(&format!(
            "/api/v1/hosts?seen_after={}&platform=linux",
            now - 60_000
        ))
        .await?;
    assert_eq!(ids(&fresh).len(), 3);

    // Deleting: admins only; the host is gone and its agent must enroll again.
    let victim = agents[1].host_id();
    let path = format!("/api/v1/hosts/{victim}");
    assert_eq!(s.call(&olga, Method::DELETE, &path, None).await?.0, 403);
    assert_eq!(s.call(&admin, Method::DELETE, &path, None).await?.0, 204);
    assert_eq!(s.call(&admin, Method::GET, &path, None).await?.0, 404);
    assert_eq!(s.call(&admin, Method::DELETE, &path, None).await?.0, 404);
    assert_eq!(ids(&s.get("/api/v1/hosts").await?).len(), 2);
    assert_eq!(ids(&s.get("/api/v1/hosts?label=all").await?).len(), 2);
    let r = agents[1].config().await?;
    assert!(r.node_invalid(), "a deleted host's key is refused");
    assert!(agents[1].enroll().await?.agent_success());
    assert_eq!(ids(&s.get("/api/v1/hosts").await?).len(), 3);

    // gRPC: the same filters and the same delete.
    let mut grpc = AdminClient::new(s.grpc_channel().await?);
    let req = gatehouse_tests::as_user(
        &admin,
        pb::ListHostsRequest {
            search: Some("web-02".into()),
            ..Default::default()
        },
    )?;
    let page = grpc.list_hosts(req).await?.into_inner();
    assert_eq!(page.hosts.len(), 1);
    let req = gatehouse_tests::as_user(
        &admin,
        pb::HostRef {
            id: page.hosts[0].id.clone(),
        },
    )?;
    grpc.delete_host(req).await?;
    let (_, audit) = s.call(&admin, Method::GET, "/api/v1/audit", None).await?;
    let mut deletes: Vec<String> = audit
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["action"] == "host.delete")
        .map(|e| e["outcome"].as_str().unwrap_or_default().to_owned())
        .collect();
    deletes.sort();
    assert_eq!(
        deletes,
        ["accepted", "accepted", "denied", "failed"],
        "an operator's refused delete, two REST deletes (one of a missing host, which failed) and one gRPC: one row each"
    );
    Ok(())
}
