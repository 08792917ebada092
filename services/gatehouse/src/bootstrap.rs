//! First start: the data directory, its secrets, TLS material, and the
//! osquery flagfile an agent needs.
//!
//! ```text
//! <data_dir>/
//!   store/                 embedded database
//!   secrets/enroll_secret  agents' enroll secret (--enroll_secret_path)
//!   secrets/admin_token    bearer token for the REST API
//!   secrets/node_key_secret HMAC key node keys are signed with
//!   tls/ca.pem, ca.key     generated CA (agents trust ca.pem)
//!   tls/server.pem, .key   server certificate for public_host
//!   osquery.flags          a ready flagfile
//!   endpoints.json         URLs of the running all-in-one ([`Endpoints`])
//! ```
//!
//! Everything is created once and reused; a server certificate is re-issued
//! (by the same CA) when `public_host` changes.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use ring::rand::{SecureRandom, SystemRandom};

use crate::config::ServeConfig;

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
    #[error("certificate generation failed: {0}")]
    Cert(String),
    #[error("random generator failed")]
    Random,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> BootstrapError + '_ {
    move |e| BootstrapError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn cert_err(e: rcgen::Error) -> BootstrapError {
    BootstrapError::Cert(e.to_string())
}

/// What the server needs from the data directory.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub data_dir: PathBuf,
    pub store_dir: PathBuf,
    pub enroll_secret: String,
    pub enroll_secret_path: PathBuf,
    pub admin_token: String,
    pub node_key_secret: Vec<u8>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// The CA agents should trust (`--tls_server_certs`).
    pub ca_path: PathBuf,
    pub flagfile_path: PathBuf,
    pub flagfile: String,
    /// True when this start created the directory.
    pub created: bool,
}

fn random_token(bytes: usize) -> Result<String, BootstrapError> {
    let mut b = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| BootstrapError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

fn write_private(path: &Path, contents: &[u8]) -> Result<(), BootstrapError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io(path))?;
    f.write_all(contents).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Reads a secret file, creating it with `make` when absent.
fn secret(
    path: &Path,
    make: impl FnOnce() -> Result<String, BootstrapError>,
) -> Result<String, BootstrapError> {
    if path.exists() {
        let s = fs::read_to_string(path)
            .map_err(io(path))?
            .trim()
            .to_owned();
        if !s.is_empty() {
            return Ok(s);
        }
    }
    let s = make()?;
    write_private(path, s.as_bytes())?;
    Ok(s)
}

fn mkdir(path: &Path) -> Result<(), BootstrapError> {
    fs::create_dir_all(path).map_err(io(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(io(path))?;
    }
    Ok(())
}

fn ca_params() -> Result<CertificateParams, BootstrapError> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "Gatehouse CA");
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_after = rcgen::date_time_ymd(2045, 1, 1);
    Ok(p)
}

/// Generates (or reuses) the CA and a server certificate for `host`.
fn ensure_tls(dir: &Path, host: &str) -> Result<(PathBuf, PathBuf, PathBuf), BootstrapError> {
    mkdir(dir)?;
    let (ca_pem, ca_key_pem) = (dir.join("ca.pem"), dir.join("ca.key"));
    let (srv_pem, srv_key, srv_host) = (
        dir.join("server.pem"),
        dir.join("server.key"),
        dir.join("server.host"),
    );
    if !ca_pem.exists() || !ca_key_pem.exists() {
        let key = KeyPair::generate().map_err(cert_err)?;
        let cert = ca_params()?.self_signed(&key).map_err(cert_err)?;
        write_private(&ca_key_pem, key.serialize_pem().as_bytes())?;
        fs::write(&ca_pem, cert.pem()).map_err(io(&ca_pem))?;
        let _ = fs::remove_file(&srv_pem);
    }
    let current = fs::read_to_string(&srv_host).unwrap_or_default();
    if !srv_pem.exists() || !srv_key.exists() || current.trim() != host {
        let ca_key = KeyPair::from_pem(&fs::read_to_string(&ca_key_pem).map_err(io(&ca_key_pem))?)
            .map_err(cert_err)?;
        let issuer = Issuer::new(ca_params()?, ca_key);
        let mut names = vec![host.to_owned()];
        for n in ["localhost", "127.0.0.1", "::1"] {
            if n != host {
                names.push(n.to_owned());
            }
        }
        let mut p = CertificateParams::new(names).map_err(cert_err)?;
        p.distinguished_name.push(DnType::CommonName, host);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        p.not_after = rcgen::date_time_ymd(2044, 1, 1);
        let key = KeyPair::generate().map_err(cert_err)?;
        let cert = p.signed_by(&key, &issuer).map_err(cert_err)?;
        write_private(&srv_key, key.serialize_pem().as_bytes())?;
        fs::write(&srv_pem, cert.pem()).map_err(io(&srv_pem))?;
        fs::write(&srv_host, host).map_err(io(&srv_host))?;
    }
    Ok((srv_pem, srv_key, ca_pem))
}

fn absolute(p: &Path) -> PathBuf {
    fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The osquery flagfile for this server.
pub fn flagfile(cfg: &ServeConfig, ca: &Path, secret: &Path) -> String {
    let port = cfg.listen.port();
    let host = if port == 443 {
        cfg.public_host.clone()
    } else {
        format!("{}:{port}", cfg.public_host)
    };
    let p = &cfg.paths;
    format!(
        "# osquery flags for Gatehouse (generated; see docs/architecture/overview.md)\n\
--tls_hostname={host}\n\
--tls_server_certs={ca}\n\
--enroll_secret_path={secret}\n\
--enroll_tls_endpoint={enroll}\n\
--host_identifier=uuid\n\
--config_plugin=tls\n\
--config_tls_endpoint={config}\n\
--config_refresh=60\n\
--logger_plugin=tls\n\
--logger_tls_endpoint={logger}\n\
--logger_tls_period=4\n\
--logger_tls_compress=true\n\
--disable_distributed=false\n\
--distributed_plugin=tls\n\
--distributed_interval=10\n\
--distributed_tls_read_endpoint={dread}\n\
--distributed_tls_write_endpoint={dwrite}\n\
--disable_carver=false\n\
--carver_disable_function=false\n\
--carver_start_endpoint={cstart}\n\
--carver_continue_endpoint={cblock}\n\
--carver_block_size=2000000\n",
        ca = absolute(ca).display(),
        secret = absolute(secret).display(),
        enroll = p.enroll,
        config = p.config,
        logger = p.logger,
        dread = p.distributed_read,
        dwrite = p.distributed_write,
        cstart = p.carve_begin,
        cblock = p.carve_block,
    )
}

/// The URLs a running all-in-one server answers on, written to
/// `endpoints.json` in its data directory once it listens, so local tools
/// (`ctl --data`, the harness's `--gatehouse-data`) need no URL flags. An
/// address bound to every interface is written as loopback (the generated
/// certificate names `127.0.0.1` and `::1`); any other as the public host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Endpoints {
    /// The osquery TLS API.
    pub agents: String,
    /// The operator API (REST under `/api/v1`).
    pub api: String,
}

impl Endpoints {
    pub const FILE: &str = "endpoints.json";

    pub fn local(
        public_host: &str,
        agents: std::net::SocketAddr,
        api: std::net::SocketAddr,
    ) -> Self {
        let url = |a: std::net::SocketAddr| {
            let host = match a.ip() {
                std::net::IpAddr::V4(v4) if v4.is_loopback() => v4.to_string(),
                std::net::IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_owned(),
                std::net::IpAddr::V6(v6) if v6.is_loopback() || v6.is_unspecified() => {
                    "[::1]".to_owned()
                }
                _ => public_host.to_owned(),
            };
            format!("https://{host}:{}", a.port())
        };
        Self {
            agents: url(agents),
            api: url(api),
        }
    }

    pub fn write(&self, dir: &Path) -> Result<(), BootstrapError> {
        let path = dir.join(Self::FILE);
        let body = serde_json::to_vec_pretty(self).unwrap_or_default();
        fs::write(&path, body).map_err(io(&path))
    }

    /// `dir/endpoints.json`, when a server wrote one.
    pub fn read(dir: &Path) -> Option<Self> {
        serde_json::from_slice(&fs::read(dir.join(Self::FILE)).ok()?).ok()
    }
}

/// The id the first start's enroll secret is listed under.
pub const BOOTSTRAP_SECRET_ID: &str = "bootstrap";

/// Records the data directory's enroll secret in the store (as
/// `bootstrap`, by its hash only) unless a secret with its value is there
/// already, so it is listed, expires and is revoked like any other; a
/// revoked one stays revoked. Idempotent: every role of a cluster calls it.
pub async fn register_enroll_secret(
    store: &dyn gatehouse_core::ports::Store,
    boot: &Bootstrap,
    now_ms: i64,
) -> anyhow::Result<()> {
    let sha = gatehouse_core::ids::sha256_hex(boot.enroll_secret.as_bytes());
    let unreadable = |e| anyhow::anyhow!("reading the enroll secrets: {e}");
    if store
        .enroll_secret_by_hash(&sha)
        .await
        .map_err(unreadable)?
        .is_some()
    {
        return Ok(());
    }
    let taken = store
        .list_enroll_secrets()
        .await
        .map_err(unreadable)?
        .iter()
        .any(|s| s.id == BOOTSTRAP_SECRET_ID);
    // An operator's own secret named `bootstrap` keeps its name.
    let id = if taken {
        format!("{BOOTSTRAP_SECRET_ID}-{}", &sha[..8])
    } else {
        BOOTSTRAP_SECRET_ID.to_owned()
    };
    store
        .put_enroll_secret(&gatehouse_core::model::EnrollSecret {
            id,
            secret_sha256: sha,
            labels: Vec::new(),
            created_at: now_ms,
            expires_at: None,
            revoked: false,
            created_by: format!("first start ({})", boot.enroll_secret_path.display()),
        })
        .await
        .map_err(|e| anyhow::anyhow!("recording the enroll secret: {e}"))
}

/// Prepares the data directory (idempotent).
pub fn prepare(cfg: &ServeConfig) -> Result<Bootstrap, BootstrapError> {
    let dir = &cfg.data_dir;
    let created = !dir.join("secrets").exists();
    mkdir(dir)?;
    let secrets = dir.join("secrets");
    mkdir(&secrets)?;
    let enroll_secret_path = secrets.join("enroll_secret");
    let enroll_secret = secret(&enroll_secret_path, || random_token(24))?;
    let admin_token = secret(&secrets.join("admin_token"), || random_token(32))?;
    let node_key_secret = secret(&secrets.join("node_key_secret"), || random_token(32))?;
    let (cert_path, key_path, ca_path) = match (&cfg.tls.cert, &cfg.tls.key) {
        (Some(c), Some(k)) => (c.clone(), k.clone(), c.clone()),
        _ => ensure_tls(&dir.join("tls"), &cfg.public_host)?,
    };
    let flagfile_path = dir.join("osquery.flags");
    let flags = flagfile(cfg, &ca_path, &enroll_secret_path);
    fs::write(&flagfile_path, &flags).map_err(io(&flagfile_path))?;
    Ok(Bootstrap {
        data_dir: dir.clone(),
        store_dir: dir.join("store"),
        enroll_secret,
        enroll_secret_path,
        admin_token,
        node_key_secret: node_key_secret.into_bytes(),
        cert_path,
        key_path,
        ca_path,
        flagfile_path,
        flagfile: flags,
        created,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_is_idempotent_and_reissues_for_new_host() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ServeConfig {
            data_dir: dir.path().join("d"),
            ..ServeConfig::default()
        };
        let a = prepare(&cfg).unwrap();
        assert!(a.created);
        let b = prepare(&cfg).unwrap();
        assert!(!b.created);
        assert_eq!(a.enroll_secret, b.enroll_secret);
        assert_eq!(a.admin_token, b.admin_token);
        let ca = fs::read(&a.ca_path).unwrap_or_default();
        let cert1 = fs::read(&a.cert_path).unwrap_or_default();
        cfg.public_host = "fleet.example.com".into();
        let c = prepare(&cfg).unwrap();
        assert_eq!(
            fs::read(&c.ca_path).unwrap_or_default(),
            ca,
            "the CA is kept"
        );
        assert_ne!(
            fs::read(&c.cert_path).unwrap_or_default(),
            cert1,
            "server cert re-issued"
        );
        assert!(c.flagfile.contains("--tls_hostname=fleet.example.com:8443"));
        assert!(
            c.flagfile
                .contains("--distributed_tls_write_endpoint=/api/v1/osquery/distributed/write")
        );
        gatehouse_runtime::tls::server_config(&c.cert_path, &c.key_path, None).unwrap();
    }
}
