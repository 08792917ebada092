//! Hosts addressed by name: every host endpoint and live-query target
//! takes a hostname or host identifier where a host id goes (any case);
//! a name several hosts share is refused with the candidates; a bare
//! target name is a label or a host, and one that could be either is
//! refused saying so.

use gatehouse_tests::TestServer;
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_are_addressable_by_hostname_and_targets_by_bare_names() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let mut a1 = s.agent(1);
    let mut a2 = s.agent(2);
    anyhow::ensure!(a1.enroll().await?.agent_success());
    anyhow::ensure!(a2.enroll().await?.agent_success());
    // Two clones report the same hostname (each its own identifier).
    let mut twins = Vec::new();
    for n in [3, 4] {
        let mut t = s.agent(n);
        t.details["system_info"]["hostname"] = json!("shared.example.com");
        anyhow::ensure!(t.enroll().await?.agent_success());
        twins.push(t);
    }

    let (code, h) = s
        .api(Method::GET, "/api/v1/hosts/web-01.example.com", None)
        .await?;
    assert_eq!(code, 200, "{h}");
    assert_eq!(h["id"], a1.host_id().as_str());
    let (code, h) = s
        .api(Method::GET, "/api/v1/hosts/WEB-02.Example.COM", None)
        .await?;
    assert_eq!((code, h["id"].clone()), (200, json!(a2.host_id())), "{h}");
    // By host identifier, where the hostname is shared.
    let (code, h) = s
        .api(Method::GET, "/api/v1/hosts/web-03.example.com", None)
        .await?;
    assert_eq!(
        (code, h["id"].clone()),
        (200, json!(twins[0].host_id())),
        "{h}"
    );
    let (code, e) = s
        .api(Method::GET, "/api/v1/hosts/shared.example.com", None)
        .await?;
    assert_eq!(code, 400, "{e}");
    let msg = e["error"].as_str().unwrap_or_default();
    assert!(msg.contains("names 2 hosts"), "{msg}");
    for t in &twins {
        assert!(msg.contains(&t.host_id()), "{msg}");
    }
    let (code, e) = s
        .api(Method::GET, "/api/v1/hosts/nobody.example.com", None)
        .await?;
    assert_eq!(code, 404, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap_or_default()
            .contains("nobody.example.com"),
        "{e}"
    );

    // Labels set by hostname; live-query targets by bare names.
    let (code, v) = s
        .api(
            Method::PUT,
            "/api/v1/hosts/web-02.example.com/labels",
            Some(json!({"labels": ["servers", "web-01.example.com"]})),
        )
        .await?;
    assert_eq!(code, 200, "{v}");
    let create = |names: serde_json::Value| {
        s.api(
            Method::POST,
            "/api/v1/campaigns",
            Some(json!({"sql": "SELECT 1", "names": names})),
        )
    };
    let (code, c) = create(json!(["servers"])).await?;
    assert_eq!((code, c["target_count"].clone()), (201, json!(1)), "{c}");
    let (code, c) = create(json!(["web-03.example.com"])).await?;
    assert_eq!((code, c["target_count"].clone()), (201, json!(1)), "{c}");
    let (code, e) = create(json!(["web-01.example.com"])).await?;
    assert_eq!(code, 400, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap_or_default()
            .contains("both a label"),
        "a name that is a label and a host is refused: {e}"
    );
    let (code, e) = create(json!(["shared.example.com"])).await?;
    assert_eq!(code, 400, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap_or_default()
            .contains("names 2 hosts"),
        "{e}"
    );
    let (code, e) = create(json!(["nothing-at-all"])).await?;
    assert_eq!(code, 400, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap_or_default()
            .contains("neither a label"),
        "{e}"
    );
    // The same host given by id and by name counts once.
    let (code, c) = s
        .api(
            Method::POST,
            "/api/v1/campaigns",
            Some(json!({"sql": "SELECT 1", "hosts": [a1.host_id(), "WEB-01.EXAMPLE.COM"]})),
        )
        .await?;
    assert_eq!((code, c["target_count"].clone()), (201, json!(1)), "{c}");

    // ctl takes the name too.
    let out = s.ctl(&s.boot.admin_token, &["hosts", "get", "web-01.example.com"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(&a1.host_id()),
        "{text}"
    );
    s.stop().await?;
    Ok(())
}
