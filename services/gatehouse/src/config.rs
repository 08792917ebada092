//! `gatehouse serve` configuration: a TOML file (all keys optional) with
//! `GATEHOUSE_*` environment overrides, validated before any port is bound.
//! `docs/gatehouse.example.toml` documents every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use gatehouse_edge::EndpointPaths;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("config file {path} is invalid: {reason}")]
    Parse { path: String, reason: String },
    #[error("environment variable {name}={value:?} is invalid: {reason}")]
    Env {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// Agent endpoint (osquery TLS API).
    pub listen: SocketAddr,
    /// Operator REST API.
    pub api_listen: SocketAddr,
    /// Plain-HTTP `/livez`, `/readyz` and Prometheus `/metrics` of every
    /// role (not exposed to agents); none when unset.
    pub ops_listen: Option<SocketAddr>,
    /// Host name agents use (`--tls_hostname`); put in the generated
    /// certificate. Defaults to `localhost`.
    pub public_host: String,
    pub data_dir: PathBuf,
    pub tls: TlsConfig,
    pub paths: EndpointPaths,
    pub limits: Limits,
    /// Fixed shard count hosts are spread over.
    pub shards: u32,
    /// A host seen within this many seconds counts as online.
    pub online_window_secs: u64,
    /// Keep-alive connections idle longer than this are closed; keep it
    /// above the agents' longest polling interval.
    pub idle_timeout_secs: u64,
    /// Time allowed to drain on shutdown.
    pub shutdown_grace_secs: u64,
    pub store: StoreConfig,
    /// Used by the cluster roles (`gatehouse edge|hostd|ingest|api`).
    pub cluster: ClusterConfig,
    /// The rule engine (runs in `serve` and in each `ingest`).
    pub rules: RulesSection,
    /// Server log lines on stderr: `text` (coloured only on a terminal) or
    /// `json` (one object per line, for log collectors).
    pub log_format: LogFormat,
    /// Where stored result and status lines are forwarded
    /// (`[[destinations]]`, `docs/operations/destinations.md`); run by
    /// `gatehouse serve`, or by the cluster's ingest holding the forward
    /// lease.
    pub destinations: Vec<gatehouse_forward::DestinationConfig>,
    /// What the forward log keeps for destinations that fall behind.
    pub forward: ForwardSection,
    /// People's console sessions and sign-in limits.
    pub sessions: SessionsSection,
}

/// `[sessions]`: people's console sessions (`docs/operations/console.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsSection {
    /// A session unused this long ends.
    pub idle_secs: u64,
    /// A session ends this long after sign-in, however used.
    pub max_age_secs: u64,
    /// Failed sign-ins per user (and per client address) within
    /// `lockout_secs` before further attempts are refused.
    pub max_failed_sign_ins: usize,
    pub lockout_secs: u64,
    /// How long an invitation (`ctl users invite`) is valid.
    pub invite_secs: u64,
}

impl Default for SessionsSection {
    fn default() -> Self {
        Self {
            idle_secs: 30 * 60,
            max_age_secs: 12 * 3600,
            max_failed_sign_ins: 5,
            lockout_secs: 15 * 60,
            invite_secs: 72 * 3600,
        }
    }
}

/// `[forward]`: the forward log's retention. A destination further behind
/// than this misses lines (counted, logged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardSection {
    pub max_bytes: u64,
    pub max_age_secs: u64,
}

impl Default for ForwardSection {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 30,
            max_age_secs: 7 * 24 * 3600,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesSection {
    /// How often hosts are checked for silence and config drift.
    pub sweep_interval_secs: u64,
    /// Attempts per webhook before it goes to the dead letters.
    pub webhook_attempts: u32,
    /// Wait before the second attempt (doubles each time, at most 60 s).
    pub webhook_backoff_ms: u64,
    pub webhook_timeout_secs: u64,
    /// Alerts stored per rule per minute; the rest are counted only.
    pub max_alerts_per_rule_per_minute: u32,
    /// Extra CA certificates (PEM) for webhook receivers.
    pub webhook_ca: Option<PathBuf>,
}

impl Default for RulesSection {
    fn default() -> Self {
        Self {
            sweep_interval_secs: 60,
            webhook_attempts: 5,
            webhook_backoff_ms: 2_000,
            webhook_timeout_secs: 10,
            max_alerts_per_rule_per_minute: 600,
            webhook_ca: None,
        }
    }
}

/// What the cluster roles share: NATS, shard leases, the log stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    pub nats: gatehouse_bus::NatsConfig,
    /// JetStream replicas of the log stream and the lease buckets.
    pub replicas: usize,
    /// A hostd that stops renewing loses its shards after this long.
    pub lease_ttl_ms: u64,
    pub lease_renew_ms: u64,
    /// Unconsumed log batches past which edges push back.
    pub max_log_backlog: u64,
    /// Bytes the log stream may hold (-1: the server's limit).
    pub max_log_stream_bytes: i64,
    /// A batch an ingest process took and did not acknowledge within this
    /// (it died) goes to another ingest. Set when the stream's consumer is
    /// first created.
    pub ingest_ack_wait_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            nats: gatehouse_bus::NatsConfig::default(),
            replicas: 1,
            lease_ttl_ms: 15_000,
            lease_renew_ms: 5_000,
            max_log_backlog: 1_000_000,
            max_log_stream_bytes: -1,
            ingest_ack_wait_ms: 60_000,
        }
    }
}

/// Where data lives: the embedded store in `data_dir` (one process) or a
/// ScyllaDB cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub kind: StoreKind,
    /// Used when `kind = "scylla"`. The log TTL follows
    /// `limits.retention_days`.
    pub scylla: gatehouse_store::ScyllaConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    #[default]
    Embedded,
    Scylla,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain; generated under the data dir when empty.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// With a client CA, agents must present a certificate it signed.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_inflated_bytes: usize,
    pub max_carve_bytes: u64,
    /// Days of result/status logs kept; 0 keeps everything.
    pub retention_days: u32,
    pub max_campaign_targets: usize,
    /// Campaigns running at once (not expired, not every target answered);
    /// another is refused until one finishes or expires.
    pub max_active_campaigns: usize,
    /// The same, per user.
    pub max_active_campaigns_per_user: usize,
    /// Agent requests the edge handles at once; beyond, a request other
    /// than a log POST waits up to a second for a slot, in turn (as many
    /// waiting as handled), then gets a busy error, which a log POST gets
    /// at once (the agent backs off and retries; ADR 0053). Log POSTs
    /// waiting for room for their bodies are counted apart, up to as many
    /// again, and a log POST waiting for the store holds no slot (ADR
    /// 0047).
    pub max_in_flight_requests: usize,
    /// Bytes of agent log bodies read and not yet stored; a log request
    /// beyond waits (its body unread) up to 8 s for room, then gets a busy
    /// error body. Bounds the memory a wave of large batches takes.
    pub max_log_bytes_in_flight: usize,
    /// The embedded store refuses log batches (agents keep them and retry)
    /// while its filesystem has less free space than this, so enrollment,
    /// last-seen and campaign writes still find room; 0 turns it off.
    pub min_free_disk_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 32 * 1024 * 1024,
            max_inflated_bytes: 128 * 1024 * 1024,
            max_carve_bytes: 4 * 1024 * 1024 * 1024,
            retention_days: 30,
            max_campaign_targets: 100_000,
            max_active_campaigns: 50,
            max_active_campaigns_per_user: 10,
            max_in_flight_requests: 4096,
            max_log_bytes_in_flight: 64 * 1024 * 1024,
            min_free_disk_bytes: 256 * 1024 * 1024,
        }
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            api_listen: SocketAddr::from(([127, 0, 0, 1], 8444)),
            ops_listen: Some(SocketAddr::from(([127, 0, 0, 1], 8445))),
            public_host: "localhost".into(),
            data_dir: PathBuf::from("gatehouse-data"),
            tls: TlsConfig::default(),
            paths: EndpointPaths::default(),
            limits: Limits::default(),
            shards: 1024,
            online_window_secs: 180,
            idle_timeout_secs: 120,
            shutdown_grace_secs: 20,
            store: StoreConfig::default(),
            cluster: ClusterConfig::default(),
            rules: RulesSection::default(),
            log_format: LogFormat::Text,
            destinations: Vec::new(),
            forward: ForwardSection::default(),
            sessions: SessionsSection::default(),
        }
    }
}

fn env_parse<T: std::str::FromStr>(
    name: &'static str,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<T>, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match get(name) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|e: T::Err| ConfigError::Env {
            name,
            value: v,
            reason: e.to_string(),
        }),
    }
}

impl ServeConfig {
    /// Loads `file` (if any), applies environment overrides, validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(file, &|k| std::env::var(k).ok())
    }

    pub fn load_with(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut cfg = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
                    path: p.display().to_string(),
                    reason: e.to_string(),
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: p.display().to_string(),
                    reason: e.to_string(),
                })?
            }
            None => ServeConfig::default(),
        };
        if let Some(v) = env_parse("GATEHOUSE_LISTEN", env)? {
            cfg.listen = v;
        }
        if let Some(v) = env_parse("GATEHOUSE_API_LISTEN", env)? {
            cfg.api_listen = v;
        }
        if let Some(v) = env_parse("GATEHOUSE_OPS_LISTEN", env)? {
            cfg.ops_listen = Some(v);
        }
        if let Some(v) = env("GATEHOUSE_PUBLIC_HOST") {
            cfg.public_host = v;
        }
        if let Some(v) = env("GATEHOUSE_DATA_DIR") {
            cfg.data_dir = PathBuf::from(v);
        }
        if let Some(v) = env("GATEHOUSE_TLS_CERT") {
            cfg.tls.cert = Some(PathBuf::from(v));
        }
        if let Some(v) = env("GATEHOUSE_TLS_KEY") {
            cfg.tls.key = Some(PathBuf::from(v));
        }
        if let Some(v) = env("GATEHOUSE_TLS_CLIENT_CA") {
            cfg.tls.client_ca = Some(PathBuf::from(v));
        }
        if let Some(v) = env_parse("GATEHOUSE_MAX_BODY_BYTES", env)? {
            cfg.limits.max_body_bytes = v;
        }
        if let Some(v) = env_parse("GATEHOUSE_RETENTION_DAYS", env)? {
            cfg.limits.retention_days = v;
        }
        if let Some(v) = env_parse("GATEHOUSE_SHARDS", env)? {
            cfg.shards = v;
        }
        if let Some(v) = env("GATEHOUSE_LOG_FORMAT") {
            cfg.log_format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => {
                    return Err(ConfigError::Env {
                        name: "GATEHOUSE_LOG_FORMAT",
                        value: v,
                        reason: "expected text or json".into(),
                    });
                }
            };
        }
        if let Some(v) = env("GATEHOUSE_STORE") {
            cfg.store.kind = match v.as_str() {
                "embedded" => StoreKind::Embedded,
                "scylla" => StoreKind::Scylla,
                _ => {
                    return Err(ConfigError::Env {
                        name: "GATEHOUSE_STORE",
                        value: v,
                        reason: "expected embedded or scylla".into(),
                    });
                }
            };
        }
        let sc = &mut cfg.store.scylla;
        if let Some(v) = env("GATEHOUSE_SCYLLA_CONTACT_POINTS") {
            sc.contact_points = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(v) = env("GATEHOUSE_SCYLLA_KEYSPACE") {
            sc.keyspace = v;
        }
        if let Some(v) = env("GATEHOUSE_SCYLLA_LOCAL_DC") {
            sc.local_datacenter = Some(v);
        }
        if let Some(v) = env("GATEHOUSE_SCYLLA_USERNAME") {
            sc.username = Some(v);
        }
        if let Some(v) = env("GATEHOUSE_SCYLLA_PASSWORD") {
            sc.password = Some(v);
        }
        if let Some(v) = env("GATEHOUSE_NATS_USERNAME") {
            cfg.cluster.nats.username = Some(v);
        }
        if let Some(v) = env("GATEHOUSE_NATS_PASSWORD") {
            cfg.cluster.nats.password = Some(v);
        }
        if let Some(v) = env("GATEHOUSE_NATS_URL") {
            cfg.cluster.nats.servers = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// The TLS files exist (for the processes that serve TLS: the
    /// all-in-one, edge and api; hostd and ingest never open them).
    pub fn check_tls_files(&self) -> Result<(), ConfigError> {
        for p in [&self.tls.cert, &self.tls.key, &self.tls.client_ca]
            .into_iter()
            .flatten()
        {
            if !p.is_file() {
                return Err(ConfigError::Invalid(format!(
                    "TLS file {} does not exist",
                    p.display()
                )));
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let se = &self.sessions;
        if se.idle_secs < 60 || se.max_age_secs < se.idle_secs {
            return bad(format!(
                "sessions.idle_secs ({}) must be at least 60 and sessions.max_age_secs ({}) at least idle_secs",
                se.idle_secs, se.max_age_secs
            ));
        }
        if se.max_failed_sign_ins == 0 || se.lockout_secs == 0 || se.invite_secs == 0 {
            return bad(
                "sessions.max_failed_sign_ins, lockout_secs and invite_secs must be positive"
                    .into(),
            );
        }
        if self.listen == self.api_listen && self.listen.port() != 0 {
            return bad(format!("listen and api_listen are both {}", self.listen));
        }
        if let Some(o) = self.ops_listen
            && o.port() != 0
            && (o == self.listen || o == self.api_listen)
        {
            return bad(format!("ops_listen {o} is also listen or api_listen"));
        }
        if self.public_host.is_empty() || self.public_host.contains(['/', ' ', ':']) {
            return bad(format!(
                "public_host {:?} must be a bare host name or IP (no scheme, port or path)",
                self.public_host
            ));
        }
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) | (None, Some(_)) => {
                return bad("tls.cert and tls.key must be given together".into());
            }
            _ => {}
        }
        self.paths.validate().map_err(ConfigError::Invalid)?;
        let r = &self.rules;
        if r.sweep_interval_secs < 5 || r.webhook_attempts == 0 || r.webhook_timeout_secs == 0 {
            return bad(
                "rules.sweep_interval_secs must be at least 5, rules.webhook_attempts and rules.webhook_timeout_secs at least 1"
                    .into(),
            );
        }
        if !(1..=3_600_000).contains(&r.webhook_backoff_ms) {
            return bad("rules.webhook_backoff_ms must be within 1..=3600000".into());
        }
        if r.max_alerts_per_rule_per_minute == 0 {
            return bad("rules.max_alerts_per_rule_per_minute must be at least 1".into());
        }
        gatehouse_forward::validate(&self.destinations).map_err(ConfigError::Invalid)?;
        if self.forward.max_bytes < 1024 * 1024 || self.forward.max_age_secs < 60 {
            return bad(
                "forward.max_bytes must be at least 1048576 and forward.max_age_secs at least 60"
                    .into(),
            );
        }
        if !(1..=65_536).contains(&self.shards) {
            return bad(format!("shards = {} must be within 1..=65536", self.shards));
        }
        if self.limits.max_body_bytes < 64 * 1024 {
            return bad("limits.max_body_bytes must be at least 65536".into());
        }
        if self.limits.max_inflated_bytes < self.limits.max_body_bytes {
            return bad("limits.max_inflated_bytes must be at least limits.max_body_bytes".into());
        }
        if self.idle_timeout_secs < 10 {
            return bad("idle_timeout_secs must be at least 10".into());
        }
        if self.limits.max_in_flight_requests == 0 {
            return bad("limits.max_in_flight_requests must be positive".into());
        }
        if self.limits.max_log_bytes_in_flight < 1024 * 1024 {
            return bad("limits.max_log_bytes_in_flight must be at least 1048576 (1 MiB)".into());
        }
        if self.limits.max_active_campaigns == 0 || self.limits.max_active_campaigns_per_user == 0 {
            return bad(
                "limits.max_active_campaigns and limits.max_active_campaigns_per_user must be positive"
                    .into(),
            );
        }
        if self.limits.max_campaign_targets == 0 {
            return bad("limits.max_campaign_targets must be positive".into());
        }
        self.cluster.nats.validate().map_err(ConfigError::Invalid)?;
        if self.cluster.lease_renew_ms == 0
            || self.cluster.lease_renew_ms * 2 > self.cluster.lease_ttl_ms
        {
            return bad(
                "cluster.lease_renew_ms must be positive and at most half of cluster.lease_ttl_ms"
                    .into(),
            );
        }
        if self.store.kind == StoreKind::Scylla {
            let sc = &self.store.scylla;
            sc.validate().map_err(ConfigError::Invalid)?;
            let default_days = gatehouse_store::scylla::config::TtlConfig::default().logs_days;
            if sc.ttl.logs_days != default_days && sc.ttl.logs_days != self.limits.retention_days {
                return bad(
                    "store.scylla.ttl.logs_days follows limits.retention_days; set that instead"
                        .into(),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Why loading was refused (empty when it was not).
    fn load_error(file: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> String {
        ServeConfig::load_with(file, env)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn defaults_validate_and_env_overrides_apply() {
        let env = |k: &str| match k {
            "GATEHOUSE_LISTEN" => Some("127.0.0.1:9443".to_owned()),
            "GATEHOUSE_SHARDS" => Some("64".to_owned()),
            _ => None,
        };
        let c = ServeConfig::load_with(None, &env).unwrap();
        assert_eq!(c.listen.port(), 9443);
        assert_eq!(c.shards, 64);
    }

    #[test]
    fn bad_values_are_named() {
        let env = |k: &str| (k == "GATEHOUSE_SHARDS").then(|| "many".to_owned());
        let e = load_error(None, &env);
        assert!(e.contains("GATEHOUSE_SHARDS"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "listen = \"127.0.0.1:1\"\nunknown_key = 1\n").unwrap();
        let e = load_error(Some(&f), &|_| None);
        assert!(e.contains("unknown_key"), "{e}");
        std::fs::write(&f, "[paths]\nenroll = \"/same\"\nconfig = \"/same\"\n").unwrap();
        assert!(ServeConfig::load_with(Some(&f), &|_| None).is_err());
        std::fs::write(&f, "[tls]\ncert = \"/nonexistent.pem\"\n").unwrap();
        assert!(ServeConfig::load_with(Some(&f), &|_| None).is_err());
        std::fs::write(&f, "[limits]\nmax_log_bytes_in_flight = 1000\n").unwrap();
        let e = load_error(Some(&f), &|_| None);
        assert!(e.contains("limits.max_log_bytes_in_flight"), "{e}");
    }

    #[test]
    fn the_destinations_guide_configuration_loads() {
        let guide = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../docs/operations/destinations.md"),
        )
        .unwrap();
        let start = guide.find("```toml\n").unwrap() + "```toml\n".len();
        let block = &guide[start..start + guide[start..].find("```").unwrap()];
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("gatehouse.toml");
        std::fs::write(&f, block).unwrap();
        let c = ServeConfig::load_with(Some(&f), &|_| None).unwrap();
        let kinds: Vec<&str> = c.destinations.iter().map(|d| d.kind().unwrap()).collect();
        assert_eq!(
            kinds,
            vec![
                "file",
                "splunk_hec",
                "elasticsearch",
                "webhook",
                "syslog",
                "kafka",
                "nats"
            ]
        );
        // Two destinations of one name, or one with two kinds, are refused.
        let twice = format!(
            "{block}\n[[destinations]]\nname = \"hook\"\n[destinations.webhook]\nurl = \"http://x\"\n"
        );
        std::fs::write(&f, twice).unwrap();
        let e = ServeConfig::load_with(Some(&f), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"hook\" is named twice"), "{e}");
    }

    #[test]
    fn the_example_file_loads_and_the_scylla_store_is_configurable() {
        let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/gatehouse.example.toml");
        let c = ServeConfig::load_with(Some(&example), &|_| None).unwrap();
        assert_eq!(c.store.kind, StoreKind::Embedded);
        let env = |k: &str| match k {
            "GATEHOUSE_STORE" => Some("scylla".to_owned()),
            "GATEHOUSE_SCYLLA_CONTACT_POINTS" => Some("10.0.0.1:9042, 10.0.0.2:9042".to_owned()),
            "GATEHOUSE_SCYLLA_KEYSPACE" => Some("gh_prod".to_owned()),
            _ => None,
        };
        let c = ServeConfig::load_with(Some(&example), &env).unwrap();
        assert_eq!(c.store.kind, StoreKind::Scylla);
        assert_eq!(
            c.store.scylla.contact_points,
            vec!["10.0.0.1:9042", "10.0.0.2:9042"]
        );
        assert_eq!(c.store.scylla.keyspace, "gh_prod");
        let bad = |k: &str| match k {
            "GATEHOUSE_STORE" => Some("scylla".to_owned()),
            "GATEHOUSE_SCYLLA_KEYSPACE" => Some("drop table".to_owned()),
            _ => None,
        };
        let e = load_error(None, &bad);
        assert!(e.contains("store.scylla.keyspace"), "{e}");
        let e = load_error(None, &|k: &str| {
            (k == "GATEHOUSE_STORE").then(|| "postgres".to_owned())
        });
        assert!(e.contains("GATEHOUSE_STORE"), "{e}");
    }
}
