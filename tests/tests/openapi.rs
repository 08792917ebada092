//! The OpenAPI document (`/api/v1/openapi.json`, no token needed) against
//! the routes that exist: every documented operation is routed (a request
//! never falls through to "no such route" or "method not allowed"), every
//! method a documented path does not list is refused with 405, and every
//! schema reference resolves.

use gatehouse_tests::TestServer;
use reqwest::Method;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_routes() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let doc: Value = s
        .http
        .get(format!("{}/api/v1/openapi.json", s.api_url))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().cloned().unwrap_or_default();
    assert!(paths.len() >= 25, "{} paths", paths.len());
    let schemas = doc["components"]["schemas"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = r.split('"').next().unwrap_or_default();
        assert!(schemas.contains_key(name), "dangling $ref to {name}");
    }
    let all = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];
    let mut checked = 0;
    for (path, item) in &paths {
        // Path parameters: a value that exists nowhere (handlers answer
        // 400 or 404 with their own message, not the router's).
        let url = path
            .split('/')
            .map(|seg| {
                if seg.starts_with('{') {
                    "zz-nonexistent"
                } else {
                    seg
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let documented: Vec<String> = item
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        for m in &all {
            let resp = s
                .http
                .request(m.clone(), format!("{}{url}", s.api_url))
                .bearer_auth(&s.boot.admin_token)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await?;
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            let routed = status != 405
                && !body["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("route ") && e.ends_with(" not found"));
            let lower = m.as_str().to_ascii_lowercase();
            if documented.contains(&lower) {
                assert!(
                    routed,
                    "{m} {path} is documented but not routed ({status} {body})"
                );
                let op = &item[&lower];
                assert!(op["operationId"].is_string() && op["x-gatehouse-role"].is_string());
                checked += 1;
            } else {
                assert_eq!(
                    status, 405,
                    "{m} {path} is routed but not documented ({body})"
                );
            }
        }
    }
    assert!(checked >= 34, "{checked} operations checked");
    // Unknown paths are the router's 404.
    let resp = s
        .http
        .get(format!("{}/api/v1/nothing-here", s.api_url))
        .bearer_auth(&s.boot.admin_token)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 404);
    s.stop().await?;
    Ok(())
}
