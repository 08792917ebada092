//! The little of the Gatehouse admin API the harness needs (live-query
//! mode and schedule setup): bearer-token JSON over HTTPS.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// The URLs a running all-in-one server wrote into its data directory
/// (`endpoints.json`, see `gatehouse::bootstrap::Endpoints`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Endpoints {
    /// The osquery TLS API, `https://host:port`.
    pub agents: String,
    /// The operator API, `https://host:port`.
    pub api: String,
}

impl Endpoints {
    /// `dir/endpoints.json`, when a server wrote one.
    pub fn read(dir: &std::path::Path) -> Option<Self> {
        let bytes = std::fs::read(dir.join("endpoints.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// A minimal HTTPS JSON client for the operator API.
pub struct AdminClient {
    addr: std::net::SocketAddr,
    host: String,
    token: String,
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("addr", &self.addr)
            .finish()
    }
}

impl AdminClient {
    pub fn new(
        addr: std::net::SocketAddr,
        host: &str,
        token: &str,
        tls: Arc<rustls::ClientConfig>,
    ) -> Self {
        Self {
            addr,
            host: host.to_owned(),
            token: token.to_owned(),
            tls: tokio_rustls::TlsConnector::from(tls),
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let url = format!("https://{}", self.addr);
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the operator API at {url}: {e}"))?;
        let name = rustls_pki_types::ServerName::try_from(self.host.clone())?;
        let tls = self.tls.connect(name, tcp).await.map_err(|e| {
            anyhow::anyhow!(
                "TLS with the operator API at {url} (name {}): {e}",
                self.host
            )
        })?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let payload = body
            .map(serde_json::to_vec)
            .transpose()?
            .unwrap_or_default();
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("Host", &self.host)
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Content-Type", "application/json")
            .body(Full::new(Bytes::from(payload)))?;
        let resp = send.send_request(req).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)?
        };
        Ok((status, v))
    }

    /// PUT/POST that must succeed.
    pub async fn ok(&self, method: &str, path: &str, body: &Value) -> anyhow::Result<Value> {
        let (st, v) = self.call(method, path, Some(body)).await?;
        anyhow::ensure!(
            (200..300).contains(&st),
            "{method} {path} answered {st}: {v}"
        );
        Ok(v)
    }
}

/// A dozen typical scheduled queries (the published benchmarks' schedule),
/// as (name, sql, interval, snapshot).
pub const TYPICAL_SCHEDULE: [(&str, &str, u32, bool); 12] = [
    (
        "processes",
        "SELECT pid, name, path, cmdline, uid, parent, resident_size, start_time FROM processes",
        60,
        false,
    ),
    (
        "listening_ports",
        "SELECT pid, port, protocol, family, address FROM listening_ports",
        300,
        false,
    ),
    (
        "users",
        "SELECT uid, username, directory, shell FROM users",
        3600,
        true,
    ),
    (
        "logged_in_users",
        "SELECT * FROM logged_in_users",
        300,
        false,
    ),
    ("crontab", "SELECT * FROM crontab", 3600, false),
    (
        "kernel_modules",
        "SELECT * FROM kernel_modules",
        3600,
        false,
    ),
    ("startup_items", "SELECT * FROM startup_items", 3600, false),
    ("uptime", "SELECT * FROM uptime", 900, true),
    (
        "interface_addresses",
        "SELECT * FROM interface_addresses",
        600,
        false,
    ),
    ("os_version", "SELECT * FROM os_version", 3600, true),
    ("osquery_info", "SELECT * FROM osquery_info", 3600, true),
    ("usb_devices", "SELECT * FROM usb_devices", 600, false),
];

/// What [`install_typical_schedule`] did with each of the typical queries.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Installed {
    /// Queries and schedules it created (or replaced, with `force`).
    pub written: Vec<String>,
    /// Names whose query or schedule the operator already had: left as
    /// they were.
    pub kept: Vec<String>,
}

/// Names of the definitions at `path` (`/api/v1/queries` or
/// `/api/v1/schedules`).
async fn names(admin: &AdminClient, path: &str) -> anyhow::Result<Vec<String>> {
    let (st, v) = admin.call("GET", path, None).await?;
    anyhow::ensure!((200..300).contains(&st), "GET {path} answered {st}: {v}");
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// Installs the typical schedule on every host (label `all`). A query or
/// schedule of the same name the operator already has is left alone (its
/// SQL, interval, labels, pack, platform are theirs) unless `force`.
pub async fn install_typical_schedule(
    admin: &AdminClient,
    force: bool,
) -> anyhow::Result<Installed> {
    let queries = names(admin, "/api/v1/queries").await?;
    let schedules = names(admin, "/api/v1/schedules").await?;
    let mut done = Installed::default();
    for (name, sql, interval, snapshot) in TYPICAL_SCHEDULE {
        let exists = queries.iter().any(|q| q == name) || schedules.iter().any(|s| s == name);
        if exists && !force {
            done.kept.push(name.to_owned());
            continue;
        }
        admin
            .ok(
                "PUT",
                &format!("/api/v1/queries/{name}"),
                &serde_json::json!({"sql": sql}),
            )
            .await?;
        admin
            .ok(
                "PUT",
                &format!("/api/v1/schedules/{name}"),
                &serde_json::json!({"query": name, "interval": interval, "snapshot": snapshot, "labels": ["all"]}),
            )
            .await?;
        done.written.push(name.to_owned());
    }
    Ok(done)
}
