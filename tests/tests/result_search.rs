//! `/api/v1/results`: time windows in milliseconds as documented (a "last
//! ten minutes" window once returned nothing: it was compared with the
//! lines' seconds), newest first, and cursor paging that visits every
//! line once and says when there is more.

use gatehouse_tests::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

fn line(t: i64, n: u32) -> Value {
    json!({"name": "users", "hostIdentifier": "web-01", "calendarTime": "Tue Jun  4 10:20:31 2024 UTC",
           "unixTime": t, "epoch": 0, "counter": n, "numerics": false,
           "columns": {"n": n.to_string()}, "action": "added"})
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_search_windows_order_and_pages() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let mut a = s.agent(1);
    anyhow::ensure!(a.enroll().await?.agent_success());
    let host = a.host_id();
    let now_s = gatehouse_core::time::now_ms() / 1000;
    // Five lines a minute apart, the last one a minute ago; one an hour ago.
    let mut lines: Vec<Value> = (0..5)
        .map(|n| line(now_s - 60 * (5 - n), n as u32))
        .collect();
    lines.push(line(now_s - 3600, 99));
    anyhow::ensure!(a.log("result", json!(lines)).await?.agent_success());

    // The last ten minutes, in milliseconds.
    let now_ms = now_s * 1000;
    let recent = s
        .get(&format!(
            "/api/v1/results?host={host}&since={}&until={}",
            now_ms - 600_000,
            now_ms + 1
        ))
        .await?;
    assert_eq!(items(&recent).len(), 5, "{recent}");
    assert!(recent["next"].is_null(), "{recent}");

    // Newest first: the line a minute ago leads.
    let newest = s
        .get(&format!("/api/v1/results?host={host}&order=newest&limit=2"))
        .await?;
    let first = items(&newest);
    assert_eq!(first.len(), 2);
    assert_eq!(first[0]["unix_time"], now_s - 60, "{newest}");
    assert_eq!(first[1]["unix_time"], now_s - 120);
    let cursor = newest["next"].as_str().unwrap_or_default().to_owned();
    assert!(!cursor.is_empty(), "a next page is announced: {newest}");

    // Paging by cursor visits all six once, newest to oldest.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/results?host={host}&order=newest&limit=2");
        if let Some(c) = &after {
            path.push_str(&format!("&after={}", urlencode(c)));
        }
        let page = s.get(&path).await?;
        seen.extend(
            items(&page)
                .iter()
                .map(|l| l["unix_time"].as_i64().unwrap_or(0)),
        );
        match page["next"].as_str() {
            Some(c) => after = Some(c.to_owned()),
            None => break,
        }
        assert!(seen.len() <= 6, "paging does not end: {seen:?}");
    }
    let mut want: Vec<i64> = (0..5).map(|n| now_s - 60 * (5 - n)).collect();
    want.push(now_s - 3600);
    want.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(seen, want);

    // Bad order and cursor values are named.
    for (q, field) in [("order=latest", "order"), ("after=nonsense", "after")] {
        let (code, e) = s
            .api(
                Method::GET,
                &format!("/api/v1/results?host={host}&{q}"),
                None,
            )
            .await?;
        assert_eq!(code, 400, "{q}: {e}");
        assert!(
            e["error"].as_str().unwrap_or("").contains(field),
            "{q}: {e}"
        );
    }
    s.stop().await?;
    Ok(())
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
