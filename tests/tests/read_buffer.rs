//! The agent listener reads a body 16 KiB at a time and caps a request
//! head at 16 KiB (ADR 0044; hyper's capped read buffer before, ADR 0030):
//! bodies far larger than one read still arrive whole, on a kept-alive
//! connection, and request heads of ordinary size are served.

use gatehouse_tests::TestServer;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_and_heads_pass_the_capped_read_buffer() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let mut a = s.agent(1);
    assert!(a.enroll().await?.agent_success());

    // About 2 MiB of lines in one batch, then a second one on the same
    // connection: every line of both is stored, in order of its batch.
    let batch = |tag: &str| -> Value {
        let pad = "x".repeat(600);
        Value::Array(
            (0..1_500)
                .map(|n| {
                    json!({"name": "big", "hostIdentifier": "h", "unixTime": 1_717_496_431 + n,
                        "columns": {"n": format!("{tag}-{n}"), "pad": pad}, "action": "added"})
                })
                .collect(),
        )
    };
    for tag in ["first", "second"] {
        let r = a.log("result", batch(tag)).await?;
        assert!(r.agent_success(), "{tag}: {r:?}");
    }
    let stored = s
        .get(&format!(
            "/api/v1/results?host={}&name=big&limit=5000",
            a.host_id()
        ))
        .await?;
    let items = stored["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 3_000, "{}", items.len());
    let mut seen: Vec<String> = items
        .iter()
        .filter_map(|i| i["line"]["columns"]["n"].as_str().map(str::to_owned))
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3_000, "every line once");
    assert!(
        items
            .iter()
            .all(|i| i["line"]["columns"]["pad"].as_str().map(str::len) == Some(600)),
        "a line was cut"
    );

    // A request head of 12 KiB (a large header, as a proxy in front may
    // add) fits in the capped buffer.
    let r = s
        .http
        .post(format!("{}{}", s.agent_url, a.paths.read))
        .header("X-Forwarded-Trace", "t".repeat(12 * 1024))
        .json(&json!({"node_key": a.node_key}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await?;
    assert!(body.get("queries").is_some(), "{body}");
    Ok(())
}
