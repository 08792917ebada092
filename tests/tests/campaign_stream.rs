//! Live campaigns as operators watch them: answers stream over
//! Server-Sent Events (REST) and server streaming (gRPC) as hosts send
//! them, a host that was offline gets the query when it polls again and
//! its answer streams too, the stream ends with a `done` event naming the
//! hosts that never answered; targets by platform; limits on running
//! campaigns, in all and per user.

use std::time::Duration;

use futures_util::StreamExt;
use gatehouse_proto::v1 as pb;
use gatehouse_proto::v1::admin_client::AdminClient;
use gatehouse_tests::{Agent, TestServer, eventually};
use reqwest::Method;
use serde_json::{Value, json};

/// Reads SSE frames (`event`, `data` as JSON) into a channel.
fn sse_events(resp: reqwest::Response) -> tokio::sync::mpsc::Receiver<(String, Value)> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let mut stream = resp.bytes_stream();
        let mut buf = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            for ev in gatehouse::ctl::sse_events(&mut buf) {
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
        }
    });
    rx
}

async fn next_event(
    rx: &mut tokio::sync::mpsc::Receiver<(String, Value)>,
    kind: &str,
) -> anyhow::Result<Value> {
    loop {
        let (k, v) = tokio::time::timeout(Duration::from_secs(15), rx.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("stream ended before a {kind} event"))?;
        if k == kind {
            return Ok(v);
        }
    }
}

async fn answer(agent: &Agent, value: &str) -> anyhow::Result<String> {
    let id = agent.next_live_query().await?;
    let w = agent
        .write(json!({"queries": {id.clone(): [{"v": value}]}, "statuses": {id.clone(): 0}}))
        .await?;
    anyhow::ensure!(w.agent_success());
    Ok(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_answers_stream_over_sse_and_grpc_and_running_campaigns_are_limited()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let s = TestServer::start_in(&dir.path().join("data"), |c| {
        c.limits.max_active_campaigns = 3;
        c.limits.max_active_campaigns_per_user = 2;
    })
    .await?;
    let admin = s.boot.admin_token.clone();
    let olga = s.user_token("olga", "operator").await?;
    let bob = s.user_token("bob", "observer").await?;
    let mut a = s.agent(1);
    let mut b = s.agent(2);
    anyhow::ensure!(a.enroll().await?.agent_success());
    anyhow::ensure!(b.enroll().await?.agent_success());

    // Targets by platform.
    let (code, e) = s
        .call(
            &olga,
            Method::POST,
            "/api/v1/campaigns",
            Some(json!({"sql": "SELECT 1", "platforms": ["beos"]})),
        )
        .await?;
    assert_eq!(code, 400, "{e}");
    // Watching a campaign that timed out reports who never answered.
    let (_, short) = s
        .call(
            &admin,
            Method::POST,
            "/api/v1/campaigns",
            Some(json!({"sql": "SELECT 3", "all": true, "expires_in": 1})),
        )
        .await?;
    assert_eq!(short["target_count"], 2, "{short}");
    let sid = short["id"].as_str().unwrap_or_default();
    let resp = s
        .http
        .get(format!("{}/api/v1/campaigns/{sid}/events", s.api_url))
        .bearer_auth(&bob)
        .send()
        .await?;
    let done = next_event(&mut sse_events(resp), "done").await?;
    assert_eq!(done["expired"], true);
    assert_eq!(done["non_responders"].as_array().map(Vec::len), Some(2));
    let (code, c1) = s
        .call(
            &olga,
            Method::POST,
            "/api/v1/campaigns",
            Some(json!({"sql": "SELECT v FROM t", "platforms": ["linux"], "expires_in": 60})),
        )
        .await?;
    assert_eq!(code, 201, "{c1}");
    assert_eq!(c1["target_count"], 2);
    let id = c1["id"].as_str().unwrap_or_default().to_owned();

    // An observer watches over SSE, and over gRPC.
    let resp = s
        .http
        .get(format!("{}/api/v1/campaigns/{id}/events", s.api_url))
        .bearer_auth(&bob)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"))
    );
    let mut sse = sse_events(resp);
    let first = next_event(&mut sse, "progress").await?;
    assert_eq!(first["coverage"]["targeted"], 2);
    assert_eq!(first["coverage"]["answered"], 0);
    let mut grpc = AdminClient::new(s.grpc_channel().await?);
    let req = gatehouse_tests::as_user(&bob, pb::CampaignRef { id: id.clone() })?;
    let mut watch = grpc.watch_campaign(req).await?.into_inner();

    // a answers: its row streams to both watchers.
    answer(&a, "from-a").await?;
    let r = next_event(&mut sse, "result").await?;
    assert_eq!(r["result"]["host_id"], a.host_id().as_str());
    assert_eq!(r["result"]["rows"][0]["v"], "from-a");
    let mut grpc_results = Vec::new();
    let mut grpc_done = None;
    while grpc_results.is_empty() {
        match tokio::time::timeout(Duration::from_secs(15), watch.message())
            .await??
            .and_then(|e| e.event)
        {
            Some(pb::campaign_event::Event::Result(r)) => grpc_results.push(r),
            Some(_) => {}
            None => anyhow::bail!("grpc stream ended early"),
        }
    }
    assert_eq!(grpc_results[0].host_id, a.host_id());

    // Running-campaign limits: olga may run 2, everyone together 3.
    let a_id = a.host_id();
    let run = |token: String| {
        let (s, a_id) = (&s, a_id.clone());
        async move {
            s.call(
                &token,
                Method::POST,
                "/api/v1/campaigns",
                Some(json!({"sql": "SELECT 2", "hosts": [a_id], "expires_in": 60})),
            )
            .await
        }
    };
    assert_eq!(run(olga.clone()).await?.0, 201);
    let (code, e) = run(olga.clone()).await?;
    assert_eq!(code, 429, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap_or("")
            .contains("limit per user is 2"),
        "{e}"
    );
    assert_eq!(run(admin.clone()).await?.0, 201);
    let (code, e) = run(admin.clone()).await?;
    assert_eq!(code, 429, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap_or("")
            .contains("3 campaigns are running"),
        "{e}"
    );

    // b was offline; it polls now, gets the query and answers: the
    // watchers see it and the stream ends with nobody left out.
    eventually(Duration::from_secs(20), || async {
        let r = b.read().await?.json.unwrap_or_default();
        Ok(r["queries"]
            .as_object()
            .is_some_and(|q| q.contains_key(&id))
            .then_some(()))
    })
    .await?;
    let w = b
        .write(json!({"queries": {id.clone(): [{"v": "from-b"}]}, "statuses": {id.clone(): 0}}))
        .await?;
    anyhow::ensure!(w.agent_success());
    let r = next_event(&mut sse, "result").await?;
    assert_eq!(r["result"]["host_id"], b.host_id().as_str());
    let done = next_event(&mut sse, "done").await?;
    assert_eq!(done["coverage"]["answered"], 2);
    assert_eq!(done["non_responders"], json!([]));
    assert_eq!(done["expired"], false);
    while grpc_done.is_none() {
        match tokio::time::timeout(Duration::from_secs(15), watch.message())
            .await??
            .and_then(|e| e.event)
        {
            Some(pb::campaign_event::Event::Result(r)) => grpc_results.push(r),
            Some(pb::campaign_event::Event::Done(d)) => grpc_done = Some(d),
            Some(_) => {}
            None => anyhow::bail!("grpc stream ended before done"),
        }
    }
    assert_eq!(grpc_results.len(), 2);
    let d = grpc_done.unwrap_or_default();
    assert!(d.non_responders.is_empty());
    assert_eq!(d.coverage.map(|c| c.answered), Some(2));
    assert!(
        tokio::time::timeout(Duration::from_secs(15), watch.message())
            .await??
            .is_none(),
        "the stream ends after done"
    );

    // The finished campaign no longer counts: olga may run another.
    assert_eq!(run(olga.clone()).await?.0, 201);

    let (code, _) = s
        .call(&bob, Method::GET, "/api/v1/campaigns/nope/events", None)
        .await?;
    assert_eq!(code, 404);
    Ok(())
}

/// Cancelling a campaign: only its creator or an admin may; hosts that
/// have not answered are no longer asked (their deliveries expire); an
/// answer already given stays; the watch ends; a second cancel changes
/// nothing; the audit log records it; `ctl campaigns cancel` does the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_campaign_stops_asking_hosts_and_ends_its_watch() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let olga = s.user_token("olga", "operator").await?;
    let otto = s.user_token("otto", "operator").await?;
    let mut a = s.agent(1);
    let mut b = s.agent(2);
    anyhow::ensure!(a.enroll().await?.agent_success());
    anyhow::ensure!(b.enroll().await?.agent_success());
    let (code, c) = s
        .call(
            &olga,
            Method::POST,
            "/api/v1/campaigns",
            Some(json!({"sql": "SELECT 1 AS v", "all": true})),
        )
        .await?;
    assert_eq!(code, 201, "{c}");
    let id = c["id"].as_str().unwrap_or_default().to_owned();
    let resp = s
        .http
        .get(format!("{}/api/v1/campaigns/{id}/events", s.api_url))
        .bearer_auth(&olga)
        .send()
        .await?;
    let mut sse = sse_events(resp);
    next_event(&mut sse, "progress").await?;
    // a answers; b never polls before the cancellation.
    assert_eq!(answer(&a, "from-a").await?, id);

    let (code, e) = s
        .call(
            &otto,
            Method::DELETE,
            &format!("/api/v1/campaigns/{id}"),
            None,
        )
        .await?;
    assert_eq!(code, 403, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap_or("")
            .contains("started by olga"),
        "{e}"
    );
    let (code, cancelled) = s
        .call(
            &olga,
            Method::DELETE,
            &format!("/api/v1/campaigns/{id}"),
            None,
        )
        .await?;
    assert_eq!(code, 200, "{cancelled}");
    assert_eq!(cancelled["cancelled_by"], "olga");
    assert!(cancelled["cancelled_at"].as_i64().is_some_and(|t| t > 0));
    assert_eq!(cancelled["expired"], true);

    // The watch ends, naming b as the host that never answered.
    let done = next_event(&mut sse, "done").await?;
    assert_eq!(done["expired"], true, "{done}");
    assert_eq!(done["non_responders"], json!([b.host_id()]), "{done}");
    // b polls now and is not asked.
    let r = b.read().await?.json.unwrap_or_default();
    assert!(
        r["queries"]
            .as_object()
            .is_none_or(|q| !q.contains_key(&id)),
        "a cancelled campaign was still delivered: {r}"
    );
    let (_, d) = s
        .api(Method::GET, &format!("/api/v1/campaigns/{id}"), None)
        .await?;
    assert_eq!(d["coverage"]["answered"], 1, "{d}");
    assert_eq!(d["coverage"]["expired"], 1, "{d}");
    let (_, results) = s
        .api(
            Method::GET,
            &format!("/api/v1/campaigns/{id}/results"),
            None,
        )
        .await?;
    assert_eq!(results.as_array().map(Vec::len), Some(1), "{results}");

    // Again: nothing changes. An admin may cancel anyone's campaign.
    let (code, again) = s
        .api(Method::DELETE, &format!("/api/v1/campaigns/{id}"), None)
        .await?;
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["cancelled_at"], cancelled["cancelled_at"]);
    assert_eq!(again["cancelled_by"], "olga");
    let (code, _) = s
        .api(Method::DELETE, "/api/v1/campaigns/nope", None)
        .await?;
    assert_eq!(code, 404);
    let (_, audit) = s.api(Method::GET, "/api/v1/audit?limit=50", None).await?;
    let actions: Vec<String> = audit
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{} {} {} {}",
                e["action"], e["actor"], e["target"], e["outcome"]
            )
        })
        .collect();
    assert!(
        actions
            .iter()
            .any(|a| a.contains("campaign.cancel") && a.contains("otto")),
        "the refusal is audited: {actions:?}"
    );
    assert!(
        actions
            .iter()
            .any(|a| a.contains("campaign.cancel") && a.contains("olga")),
        "{actions:?}"
    );

    // The same from ctl, as the admin.
    let (_, c2) = s
        .api(
            Method::POST,
            "/api/v1/campaigns",
            Some(json!({"sql": "SELECT 2", "all": true})),
        )
        .await?;
    let id2 = c2["id"].as_str().unwrap_or_default().to_owned();
    let out = s.ctl(&s.boot.admin_token, &["campaigns", "cancel", &id2])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&id2) && text.contains("admin"), "{text}");
    s.stop().await?;
    Ok(())
}
