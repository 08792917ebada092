//! Cross-service test harness: starts the real all-in-one server
//! in-process on random loopback ports (its own data directory), and an
//! agent client that speaks the osquery TLS API as the wire spec describes
//! (`shared/docs/osquery-protocol.md`) over real TLS.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gatehouse::bootstrap::Bootstrap;
use gatehouse::config::ServeConfig;
use gatehouse::serve::Running;
use gatehouse_core::time::ShiftedClock;
use reqwest::header::{HeaderMap, HeaderValue};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};

pub use serde_json;

pub mod sandbox;
pub mod webhook;

/// A server plus clients for both of its ports.
pub struct TestServer {
    pub cfg: ServeConfig,
    pub boot: Bootstrap,
    pub agent_url: String,
    /// Plain-HTTP probes and `/metrics`.
    pub ops_url: String,
    pub api_url: String,
    pub http: reqwest::Client,
    running: Option<Running>,
    /// The server's clock: real time, moved ahead with `advance` to check
    /// expiry without waiting for it.
    pub clock: Arc<ShiftedClock>,
    _dir: Option<tempfile::TempDir>,
}

fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    }
}

/// A port free right now and not handed out before in this process (the
/// kernel may give a just-closed port again: two roles once got the same).
pub fn free_port() -> anyhow::Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut given = GIVEN
            .lock()
            .map_err(|_| anyhow::anyhow!("port list poisoned"))?;
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
}

/// The `gatehouse` binary next to the running test's (scripts/test.sh
/// builds it before the tests). When it is missing (a bare `cargo test`),
/// it is built into a target directory of its own: the running
/// `cargo test` holds the lock of this one.
pub fn gatehouse_bin() -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow::anyhow!("no target directory"))?;
    let bin = dir.join("gatehouse");
    if bin.exists() {
        return Ok(bin);
    }
    let own = dir.join("processes-test");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ok = std::process::Command::new(cargo)
        .args(["build", "--locked", "-p", "gatehouse", "--target-dir"])
        .arg(&own)
        .status()?
        .success();
    anyhow::ensure!(ok, "cargo build -p gatehouse failed");
    Ok(own.join("debug").join("gatehouse"))
}

/// An HTTPS client trusting only `ca`.
pub fn client_for(ca: &Path) -> anyhow::Result<reqwest::Client> {
    gatehouse_runtime_provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)? {
        roots.add(c?)?;
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(16))
        .pool_idle_timeout(Duration::from_secs(90))
        .build()?)
}

fn gatehouse_runtime_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl TestServer {
    /// Starts a server on a fresh data directory.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("data");
        let mut s = Self::start_in(&path, |_| {}).await?;
        s._dir = Some(dir);
        Ok(s)
    }

    /// Starts a server on `data_dir` (kept across restarts), letting the
    /// caller adjust the configuration first.
    pub async fn start_in(
        data_dir: &Path,
        adjust: impl FnOnce(&mut ServeConfig),
    ) -> anyhow::Result<Self> {
        init_tracing();
        let mut cfg = ServeConfig {
            listen: "127.0.0.1:0".parse()?,
            api_listen: "127.0.0.1:0".parse()?,
            data_dir: data_dir.to_path_buf(),
            ..ServeConfig::default()
        };
        adjust(&mut cfg);
        cfg.validate()?;
        let boot = gatehouse::bootstrap::prepare(&cfg)?;
        let agents = gatehouse_runtime::bind(cfg.listen)?;
        let api = gatehouse_runtime::bind(cfg.api_listen)?;
        let agent_url = format!("https://localhost:{}", agents.local_addr()?.port());
        let api_url = format!("https://localhost:{}", api.local_addr()?.port());
        let ops = gatehouse_runtime::bind("127.0.0.1:0".parse()?)?;
        let ops_url = format!("http://127.0.0.1:{}", ops.local_addr()?.port());
        // Its own metrics: counts in a test are this server's alone.
        let metrics = gatehouse_runtime::metrics::Metrics::new();
        let store = gatehouse::serve::open_store(&cfg, &boot, &metrics).await?;
        let clock = Arc::new(ShiftedClock::new());
        let deps = gatehouse::serve::ServeDeps {
            store,
            clock: clock.clone(),
            metrics,
        };
        let listeners = gatehouse::serve::ServeListeners {
            agents,
            api,
            ops: Some(ops),
        };
        let running = gatehouse::serve::start(&cfg, &boot, deps, listeners)?;
        let http = client_for(&boot.ca_path)?;
        Ok(Self {
            cfg,
            boot,
            agent_url,
            ops_url,
            api_url,
            http,
            running: Some(running),
            clock,
            _dir: None,
        })
    }

    /// Stops (ordered drain) and returns the data directory it used.
    pub async fn stop(mut self) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
        if let Some(r) = self.running.take() {
            r.stop().await?;
        }
        Ok((self.cfg.data_dir.clone(), self._dir.take()))
    }

    pub fn agent(&self, n: u32) -> Agent {
        Agent::new(self, n)
    }

    /// An operator request with the admin token.
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        self.call(&self.boot.admin_token, method, path, body).await
    }

    /// A TLS gRPC channel to the API port (HTTP/2 by ALPN), trusting the
    /// server's CA.
    pub async fn grpc_channel(&self) -> anyhow::Result<tonic::transport::Channel> {
        let ca = std::fs::read(&self.boot.ca_path)?;
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca))
            .domain_name("localhost");
        Ok(
            tonic::transport::Channel::from_shared(self.api_url.clone())?
                .tls_config(tls)?
                .connect()
                .await?,
        )
    }

    /// An API request with `token`; the status and the JSON body (null when
    /// empty).
    pub async fn call(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.api_url))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)?
        };
        Ok((status, v))
    }

    /// Creates a user with `role` and returns a bearer token of theirs.
    /// Runs `gatehouse ctl ARGS` against this server as `token`'s holder
    /// (a clean environment: only the URL, token and CA are set).
    pub fn ctl(&self, token: &str, args: &[&str]) -> anyhow::Result<std::process::Output> {
        Ok(std::process::Command::new(gatehouse_bin()?)
            .arg("ctl")
            .args(args)
            .env_clear()
            .env("GATEHOUSE_URL", &self.api_url)
            .env("GATEHOUSE_TOKEN", token)
            .env("GATEHOUSE_CA", &self.boot.ca_path)
            .stdin(std::process::Stdio::null())
            .output()?)
    }

    /// Creates a user with `role` (as the bootstrap admin).
    pub async fn create_user(&self, name: &str, role: &str) -> anyhow::Result<Value> {
        let admin = self.boot.admin_token.clone();
        let body = json!({"name": name, "role": role});
        let (code, u) = self
            .call(&admin, reqwest::Method::POST, "/api/v1/users", Some(body))
            .await?;
        anyhow::ensure!(code == 201, "creating user {name}: {code} {u}");
        Ok(u)
    }

    /// Creates a user with `role` and a token for it: the token's secret.
    pub async fn user_token(&self, name: &str, role: &str) -> anyhow::Result<String> {
        let admin = self.boot.admin_token.clone();
        self.create_user(name, role).await?;
        let path = format!("/api/v1/users/{name}/tokens");
        let (code, t) = self
            .call(&admin, reqwest::Method::POST, &path, Some(json!({})))
            .await?;
        anyhow::ensure!(code == 201, "creating a token for {name}: {code} {t}");
        Ok(t["secret"].as_str().unwrap_or_default().to_owned())
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let (status, v) = self.api(reqwest::Method::GET, path, None).await?;
        anyhow::ensure!(status == 200, "GET {path} answered {status}: {v}");
        Ok(v)
    }

    /// The ops port's `/metrics` text (this server's own registry).
    pub async fn metrics(&self) -> anyhow::Result<String> {
        Ok(self
            .http
            .get(format!("{}/metrics", self.ops_url))
            .send()
            .await?
            .text()
            .await?)
    }

    /// Re-issues (or with `revoke`, revokes) `host`'s node key through the
    /// API; the answer's body.
    pub async fn rotate_key(&self, host: &str, revoke: bool) -> anyhow::Result<Value> {
        let (status, v) = self
            .api(
                reqwest::Method::POST,
                &format!("/api/v1/hosts/{host}/rotate_key"),
                Some(serde_json::json!({"revoke": revoke})),
            )
            .await?;
        anyhow::ensure!(status == 200, "rotate_key answered {status}: {v}");
        Ok(v)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.shutdown.trigger();
        }
    }
}

/// Realistic `host_details` as osqueryd 5.23.1 on Ubuntu sends them.
pub fn linux_details(n: u32) -> Value {
    json!({
        "os_version": {"arch": "x86_64", "build": "", "codename": "jammy", "major": "22", "minor": "4",
            "name": "Ubuntu", "patch": "0", "pid_with_namespace": "0", "platform": "ubuntu",
            "platform_like": "debian", "version": "22.04.4 LTS (Jammy Jellyfish)"},
        "osquery_info": {"build_distro": "20.04", "build_platform": "ubuntu", "config_hash": "",
            "config_valid": "0", "extensions": "active", "instance_id": format!("inst-{n}"),
            "pid": "4242", "platform_mask": "9", "start_time": "1717000000",
            "uuid": format!("osq-{n}"), "version": "5.23.1", "watcher": "4200"},
        "system_info": {"board_model": "", "board_serial": "", "board_vendor": "Amazon EC2", "board_version": "",
            "computer_name": format!("web-{n:02}"), "cpu_brand": "Intel(R) Xeon(R)", "cpu_logical_cores": "4",
            "cpu_physical_cores": "2", "hardware_model": "m6i.xlarge", "hardware_vendor": "Amazon EC2",
            "hostname": format!("web-{n:02}.example.com"), "local_hostname": format!("web-{n:02}"),
            "physical_memory": "16456339456", "uuid": format!("EC2A1B2C-0000-0000-0000-{n:012}")}
    })
}

/// A simulated osqueryd: holds a node key and posts like the agent does.
pub struct Agent {
    pub n: u32,
    pub http: reqwest::Client,
    pub base: String,
    pub secret: String,
    pub paths: Paths,
    pub node_key: Option<String>,
    /// Send `Authorization: NodeKey` (≥ 5.23.0); older agents only put it in bodies.
    pub send_header: bool,
    pub details: Value,
}

/// Endpoint paths (the harness's type: the same osquery flags).
pub use gatehouse_loadtest::agent::Paths;

/// What came back: status, raw body, body as JSON (if it parsed).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub json: Option<Value>,
}

impl Reply {
    /// Success as the agent judges it (§3): empty, or a JSON object with no
    /// `error` and no `node_invalid: true`.
    pub fn agent_success(&self) -> bool {
        if self.body.is_empty() {
            return true;
        }
        match &self.json {
            Some(Value::Object(m)) => {
                !m.contains_key("error") && m.get("node_invalid") != Some(&Value::Bool(true))
            }
            _ => false,
        }
    }

    /// A failure the agent will notice: a JSON object with `error`.
    pub fn is_error_body(&self) -> bool {
        matches!(&self.json, Some(Value::Object(m)) if m.get("error").is_some_and(|e| e.as_str().is_some_and(|s| !s.is_empty())))
    }

    pub fn node_invalid(&self) -> bool {
        matches!(&self.json, Some(Value::Object(m)) if m.get("node_invalid") == Some(&Value::Bool(true)))
    }
}

impl Agent {
    pub fn new(server: &TestServer, n: u32) -> Self {
        Self::at(
            &server.cfg,
            &server.boot,
            server.http.clone(),
            server.agent_url.clone(),
            n,
        )
    }

    /// The enroll secret the agent presents (`--enroll_secret_path`).
    pub fn set_enroll_secret(&mut self, secret: String) {
        self.secret = secret;
    }

    /// Points the agent at another edge (as a load balancer would after
    /// its edge died); it keeps its node key.
    pub fn set_base(&mut self, base: String) {
        self.base = base;
    }

    /// An agent of any edge at `base` (a cluster's edges).
    pub fn at(
        cfg: &ServeConfig,
        boot: &gatehouse::bootstrap::Bootstrap,
        http: reqwest::Client,
        base: String,
        n: u32,
    ) -> Self {
        let p = &cfg.paths;
        Self {
            n,
            http,
            base,
            secret: boot.enroll_secret.clone(),
            paths: Paths {
                enroll: p.enroll.clone(),
                config: p.config.clone(),
                logger: p.logger.clone(),
                read: p.distributed_read.clone(),
                write: p.distributed_write.clone(),
                carve_begin: p.carve_begin.clone(),
                carve_block: p.carve_block.clone(),
            },
            node_key: None,
            send_header: true,
            details: linux_details(n),
        }
    }

    fn headers(&self, with_key: bool, gzip: bool) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("accept", HeaderValue::from_static("application/json"));
        h.insert("user-agent", HeaderValue::from_static("osquery/5.23.1"));
        if gzip {
            h.insert("content-encoding", HeaderValue::from_static("gzip"));
        }
        if with_key
            && self.send_header
            && let Some(k) = &self.node_key
            && let Ok(v) = HeaderValue::from_str(&format!("NodeKey {k}"))
        {
            h.insert("authorization", v);
        }
        h
    }

    /// POSTs raw bytes to `path` with the agent's headers.
    pub async fn post_raw(
        &self,
        path: &str,
        body: Vec<u8>,
        with_key: bool,
        gzip: bool,
    ) -> anyhow::Result<Reply> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .headers(self.headers(with_key, gzip))
            .body(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await?.to_vec();
        let json = serde_json::from_slice(&body).ok();
        Ok(Reply { status, body, json })
    }

    /// POSTs a JSON body with `node_key` added, as every agent request but
    /// enroll and carve blocks carries it.
    pub async fn post(&self, path: &str, mut body: Value) -> anyhow::Result<Reply> {
        if let (Some(m), Some(k)) = (body.as_object_mut(), &self.node_key) {
            m.insert("node_key".into(), json!(k));
        }
        self.post_raw(path, serde_json::to_vec(&body)?, true, false)
            .await
    }

    pub async fn enroll(&mut self) -> anyhow::Result<Reply> {
        // Member order differs from the spec's example on purpose.
        let body = json!({
            "host_details": self.details,
            "platform_type": "9",
            "host_identifier": format!("web-{:02}.example.com", self.n),
            "enroll_secret": self.secret,
        });
        let r = self
            .post_raw(
                &self.paths.enroll.clone(),
                serde_json::to_vec(&body)?,
                false,
                false,
            )
            .await?;
        if let Some(k) = r
            .json
            .as_ref()
            .and_then(|j| j.get("node_key"))
            .and_then(Value::as_str)
        {
            self.node_key = Some(k.to_owned());
        }
        Ok(r)
    }

    /// The host id the server derives for this agent.
    pub fn host_id(&self) -> String {
        self.node_key
            .as_deref()
            .and_then(|k| k.split('.').next())
            .unwrap_or("")
            .to_owned()
    }

    pub async fn config(&self) -> anyhow::Result<Reply> {
        self.post(&self.paths.config.clone(), json!({})).await
    }

    /// Starts a carve of `len` bytes in blocks of `block_size`, answering
    /// live query `request_id` (osquery's carve start): its session id.
    pub async fn carve_begin(
        &self,
        request_id: &str,
        carve_id: &str,
        len: usize,
        block_size: usize,
    ) -> anyhow::Result<String> {
        let begin = self
            .post(
                &self.paths.carve_begin.clone(),
                json!({"block_count": len.div_ceil(block_size), "block_size": block_size,
                       "carve_size": len, "carve_id": carve_id, "request_id": request_id}),
            )
            .await?;
        let session = begin
            .json
            .as_ref()
            .and_then(|j| j["session_id"].as_str())
            .unwrap_or_default()
            .to_owned();
        anyhow::ensure!(!session.is_empty(), "carve start refused: {begin:?}");
        Ok(session)
    }

    /// Sends one carve block as osquery does (no node_key in the body; the
    /// header carries it).
    pub async fn carve_block(
        &self,
        session: &str,
        request_id: &str,
        block_id: usize,
        data: &[u8],
    ) -> anyhow::Result<Reply> {
        use base64::Engine;
        let body = json!({"block_id": block_id, "session_id": session, "request_id": request_id,
                          "data": base64::engine::general_purpose::STANDARD.encode(data)});
        self.post_raw(
            &self.paths.carve_block.clone(),
            serde_json::to_vec(&body)?,
            true,
            false,
        )
        .await
    }

    pub async fn log(&self, log_type: &str, data: Value) -> anyhow::Result<Reply> {
        self.post(
            &self.paths.logger.clone(),
            json!({"log_type": log_type, "data": data}),
        )
        .await
    }

    /// A log POST compressed as `--logger_tls_compress` does (level 9).
    pub async fn log_gzip(&self, log_type: &str, data: Value) -> anyhow::Result<Reply> {
        let body = json!({"node_key": self.node_key, "log_type": log_type, "data": data});
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(9));
        e.write_all(&serde_json::to_vec(&body)?)?;
        self.post_raw(&self.paths.logger.clone(), e.finish()?, true, true)
            .await
    }

    pub async fn read(&self) -> anyhow::Result<Reply> {
        self.post(&self.paths.read.clone(), json!({})).await
    }

    /// Polls `distributed/read` until it hands out query `id` (campaigns
    /// reach host actors by broadcast, asynchronously, within
    /// milliseconds) and returns that read's body.
    pub async fn read_until(&self, id: &str) -> anyhow::Result<Value> {
        self.read_until_within(id, Duration::from_secs(5)).await
    }

    /// [`Agent::read_until`] with a longer patience (a cluster failing
    /// over).
    pub async fn read_until_within(&self, id: &str, timeout: Duration) -> anyhow::Result<Value> {
        eventually(timeout, || async {
            let r = self.read().await?.json.unwrap_or_default();
            Ok(r["queries"].get(id).is_some().then_some(r))
        })
        .await
    }

    /// Polls until a live query is delivered; its id.
    pub async fn next_live_query(&self) -> anyhow::Result<String> {
        eventually(Duration::from_secs(10), || async {
            let r = self.read().await?.json.unwrap_or_default();
            Ok(r["queries"]
                .as_object()
                .and_then(|q| q.keys().next().cloned()))
        })
        .await
    }

    /// Polls until live query `id` is delivered (within `timeout`), answers
    /// it with `rows` and status 0, and returns the read that delivered it.
    pub async fn answer_within(
        &self,
        id: &str,
        rows: Value,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let r = self.read_until_within(id, timeout).await?;
        let w = self
            .write(serde_json::json!({"queries": {id: rows}, "statuses": {id: 0}}))
            .await?;
        anyhow::ensure!(w.agent_success(), "answer to {id}: {w:?}");
        Ok(r)
    }

    pub async fn write(&self, body: Value) -> anyhow::Result<Reply> {
        self.post(&self.paths.write.clone(), body).await
    }
}

/// A gRPC request carrying `token` as its bearer token.
pub fn as_user<T>(token: &str, msg: T) -> anyhow::Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(r)
}

/// Polls `f` until it returns `Some`, for at most `timeout`
/// ([`gatehouse_testkit::eventually`], the one wait every test uses).
pub async fn eventually<T>(
    timeout: Duration,
    f: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    gatehouse_testkit::eventually("the condition", timeout, f)
        .await
        .map_err(|e| match e {
            gatehouse_testkit::Unmet::Failed(e) => e,
            timed_out => anyhow::anyhow!("{timed_out}"),
        })
}

/// Shared handle type for tests that need the server in several tasks.
pub type Shared = Arc<TestServer>;
