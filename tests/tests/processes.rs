//! The cluster as the README runs it: every role a separate `gatehouse`
//! process (the real binary), configured by one TOML file and GATEHOUSE_*
//! variables, over a real nats-server and a CQL server (kassandra, hosted
//! by this test process, reached over TCP like ScyllaDB). It shows that the
//! processes start, report ready on their own ops ports, serve agents
//! through the edge and operators through the api, hand shards over when a
//! hostd gets SIGTERM, ride out a store outage (unready while it lasts,
//! ready again by themselves), and all exit cleanly on SIGTERM.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gatehouse::config::ServeConfig;
use gatehouse_bus::nats_test_server::NatsTestServer;
use gatehouse_proto::v1::StatusRequest;
use gatehouse_proto::v1::hostd_control_client::HostdControlClient;
use gatehouse_store::cql_test_server::CqlTestServer;
use gatehouse_tests::{Agent, client_for, eventually, free_port, gatehouse_bin};
use serde_json::json;

const SHARDS: u32 = 16;

/// A role process; SIGKILLed if still running when dropped.
struct Proc {
    name: String,
    child: Child,
    ops: u16,
}

impl Proc {
    fn sigterm(&self) -> anyhow::Result<()> {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?
            .success();
        anyhow::ensure!(ok, "kill -TERM {}", self.name);
        Ok(())
    }

    /// Waits for the process to exit; its exit status.
    async fn wait_exit(&mut self, within: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let what = format!("{} exited", self.name);
        gatehouse_testkit::eventually(&what, within, async || self.child.try_wait())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cluster {
    bin: PathBuf,
    config: PathBuf,
    dir: PathBuf,
    nats: String,
}

impl Cluster {
    fn spawn(&self, name: &str, args: &[&str], env: &[(&str, String)]) -> anyhow::Result<Proc> {
        let ops = free_port()?;
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .arg("--config")
            .arg(&self.config)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("GATEHOUSE_NATS_URL", &self.nats)
            .env("GATEHOUSE_OPS_LISTEN", format!("127.0.0.1:{ops}"))
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Ok(Proc {
            name: name.to_owned(),
            child: cmd.spawn()?,
            ops,
        })
    }

    fn log_of(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }
}

async fn ready(http: &reqwest::Client, p: &mut Proc, c: &Cluster) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{}/readyz", p.ops);
    let what = format!("{} ready", p.name);
    gatehouse_testkit::eventually(&what, Duration::from_secs(30), async || {
        if let Ok(r) = http.get(&url).send().await
            && r.status().is_success()
        {
            return Ok(Some(()));
        }
        match p.child.try_wait()? {
            Some(s) => anyhow::bail!("{} exited ({s}):\n{}", p.name, c.log_of(&p.name)),
            None => Ok(None),
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}:\n{}", c.log_of(&p.name)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_roles_run_as_separate_processes() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bin = gatehouse_bin()?;
    let nats = NatsTestServer::start()?;
    let cql = CqlTestServer::start().await?;
    let tmp = tempfile::tempdir()?;
    let (edge_port, api_port) = (free_port()?, free_port()?);
    let config = tmp.path().join("gatehouse.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:{edge_port}"
api_listen = "127.0.0.1:{api_port}"
data_dir = "{data}"
shards = {SHARDS}

[store]
kind = "scylla"

[store.scylla]
contact_points = ["{cql}"]
keyspace = "processes"
await_schema_agreement = false

[cluster]
lease_ttl_ms = 3000
lease_renew_ms = 300
ingest_ack_wait_ms = 2000

# The forward stream reserves this much of nats-server's storage.
[forward]
max_bytes = 67108864
"#,
            data = tmp.path().join("data").display(),
            cql = cql.addr(),
        ),
    )?;
    let c = Cluster {
        bin,
        config: config.clone(),
        dir: tmp.path().to_owned(),
        nats: nats.url(),
    };
    let plain = reqwest::Client::new();

    // The first process creates the shared secrets and certificates; the
    // others start once it is up (a Kubernetes Secret in production).
    let mut h0 = c.spawn("hostd-0", &["hostd", "--instance", "hostd-0"], &[])?;
    ready(&plain, &mut h0, &c).await?;
    let mut h1 = c.spawn("hostd-1", &["hostd", "--instance", "hostd-1"], &[])?;
    let mut ingest = c.spawn("ingest", &["ingest"], &[])?;
    let mut edge = c.spawn("edge", &["edge"], &[])?;
    let mut api = c.spawn("api", &["api"], &[])?;
    for p in [&mut h1, &mut ingest, &mut edge, &mut api] {
        ready(&plain, p, &c).await?;
    }
    let metrics = plain
        .get(format!("http://127.0.0.1:{}/metrics", h0.ops))
        .send()
        .await?
        .text()
        .await?;
    assert!(metrics.contains("gatehouse_hostd_shards"), "{metrics}");

    // Agents through the edge; operators through the api.
    let cfg = ServeConfig::load(Some(&config))?;
    let boot = gatehouse::bootstrap::prepare(&cfg)?;
    let http = client_for(&boot.ca_path)?;
    let edge_url = format!("https://localhost:{edge_port}");
    let mut agents = Vec::new();
    for n in 0..6 {
        let mut a = Agent::at(&cfg, &boot, http.clone(), edge_url.clone(), n);
        let r = a.enroll().await?;
        anyhow::ensure!(r.agent_success(), "enroll: {r:?}");
        anyhow::ensure!(a.config().await?.agent_success());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let lines: Vec<_> = (0..3)
            .map(|i| json!({"name": "users", "unixTime": now, "columns": {"uid": i.to_string()}, "action": "added"}))
            .collect();
        anyhow::ensure!(a.log("result", json!(lines)).await?.agent_success());
        agents.push(a);
    }
    let api_url = format!("https://localhost:{api_port}");
    // Result lines the api has for a host.
    let stored = |host: String| {
        let (http, url, token) = (http.clone(), api_url.clone(), boot.admin_token.clone());
        async move {
            let v: serde_json::Value = http
                .get(format!("{url}/api/v1/results?host={host}&limit=100"))
                .bearer_auth(token)
                .send()
                .await?
                .json()
                .await?;
            anyhow::Ok(v["items"].as_array().map_or(0, Vec::len))
        }
    };
    for a in &agents {
        eventually(Duration::from_secs(20), || async {
            Ok((stored(a.host_id()).await? == 3).then_some(()))
        })
        .await?;
    }

    // SIGTERM to hostd-0: it hands its shards over and exits 0; hostd-1
    // then holds every shard, and agents keep being served.
    let control = |port: u16| async move {
        let ch = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))?
            .connect()
            .await?;
        anyhow::Ok(HostdControlClient::new(ch))
    };
    let status = |port: u16| {
        let token = boot.admin_token.clone();
        async move {
            let mut req = tonic::Request::new(StatusRequest {});
            req.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse()?);
            anyhow::Ok(control(port).await?.status(req).await?.into_inner())
        }
    };
    let before = status(h0.ops).await?;
    assert!(!before.shards.is_empty(), "{before:?}");
    h0.sigterm()?;
    let code = h0.wait_exit(Duration::from_secs(30)).await?;
    assert!(
        code.success(),
        "hostd-0 exited {code}:\n{}",
        c.log_of("hostd-0")
    );
    eventually(Duration::from_secs(15), || async {
        Ok((status(h1.ops).await?.shards.len() == SHARDS as usize).then_some(()))
    })
    .await?;
    for a in &agents {
        anyhow::ensure!(a.config().await?.agent_success(), "after the handover");
    }

    // ScyllaDB (here the CQL server) goes away: a supervisor sees hostd,
    // ingest and the api unready, naming the store, and the edge ready;
    // agents' log batches are still acknowledged (the stream holds them)
    // and operators get 503. Once it is back every role is ready again
    // without a restart, and the lines logged meanwhile are stored.
    cql.stop().await;
    let readyz = |port: u16| {
        let plain = plain.clone();
        async move {
            let r = plain
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await?;
            anyhow::Ok((r.status().as_u16(), r.text().await?))
        }
    };
    for p in [&h1, &ingest, &api] {
        let body = eventually(Duration::from_secs(30), || async {
            let (code, body) = readyz(p.ops).await?;
            Ok((code == 503).then_some(body))
        })
        .await?;
        assert!(
            body.contains("store") && body.contains("ScyllaDB"),
            "{}: {body}",
            p.name
        );
    }
    assert_eq!(readyz(edge.ops).await?.0, 200, "the edge stays ready");
    let code = http
        .get(format!("{api_url}/api/v1/hosts"))
        .bearer_auth(&boot.admin_token)
        .send()
        .await?
        .status();
    assert_eq!(
        code.as_u16(),
        503,
        "operators are told the store is unavailable"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    for a in &agents {
        let lines: Vec<_> = (3..6)
            .map(|i| json!({"name": "users", "unixTime": now, "columns": {"uid": i.to_string()}, "action": "added"}))
            .collect();
        anyhow::ensure!(
            a.log("result", json!(lines)).await?.agent_success(),
            "log batches are acknowledged during the outage"
        );
    }
    cql.restart().await?;
    for p in [&h1, &ingest, &api, &edge] {
        eventually(Duration::from_secs(60), || async {
            Ok((readyz(p.ops).await?.0 == 200).then_some(()))
        })
        .await?;
    }
    for a in &agents {
        eventually(Duration::from_secs(60), || async {
            Ok((stored(a.host_id()).await? == 6).then_some(()))
        })
        .await?;
    }

    // Every role drains and exits 0 on SIGTERM.
    for p in [&mut edge, &mut api, &mut h1, &mut ingest] {
        p.sigterm()?;
        let code = p.wait_exit(Duration::from_secs(40)).await?;
        assert!(
            code.success(),
            "{} exited {code}:\n{}",
            p.name,
            c.log_of(&p.name)
        );
    }
    Ok(())
}
