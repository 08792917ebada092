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
