//! The lines a destination sends: each agent line as osquery wrote it,
//! with what routing needs ([`Line`]), chosen by a [`Filter`] and reshaped
//! by a [`Shape`] (field selection, renaming, decorations flattened).

use std::collections::BTreeMap;

use bytes::Bytes;
use gatehouse_bus::events::Forwarded;
use gatehouse_core::model::LogRecords;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Which log a line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogType {
    Results,
    Status,
    /// The operator audit log (each call's final record).
    Audit,
    /// Alerts the rule engine raised.
    Alerts,
}

impl LogType {
    pub fn as_str(self) -> &'static str {
        match self {
            LogType::Results => "results",
            LogType::Status => "status",
            LogType::Audit => "audit",
            LogType::Alerts => "alerts",
        }
    }
}

/// One agent log line and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub log_type: LogType,
    /// Gatehouse's host id.
    pub host_id: String,
    /// The scheduled query's name (result lines).
    pub name: Option<String>,
    /// Agent time (seconds).
    pub unix_time: i64,
    /// Content hash plus occurrence: the same line always has the same id.
    pub line_id: String,
    /// The line as the agent sent it, reshaped for the destination.
    pub body: Map<String, Value>,
}

impl Line {
    /// The agent's `hostIdentifier` (the host id when it sent none).
    pub fn host_identifier(&self) -> &str {
        self.body
            .get("hostIdentifier")
            .and_then(Value::as_str)
            .unwrap_or(&self.host_id)
    }

    /// The line as one JSON object (no newline).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.body).unwrap_or_default()
    }
}

/// The lines of one forward-log entry (a `gatehouse.v1.ForwardPayload`):
/// agent lines, or operator events (an audit record: `name` its action,
/// `line_id` its id; an alert: `name` its rule, `host_id` its host).
pub fn lines_of(payload: Bytes) -> Result<Vec<Line>, String> {
    let records = match gatehouse_bus::events::decode_forward(payload).map_err(|e| e.to_string())? {
        Forwarded::Logs(r) => r,
        Forwarded::Events { kind, events } => {
            let log_type = match kind.as_str() {
                "audit" => LogType::Audit,
                "alert" => LogType::Alerts,
                other => return Err(format!("unknown operator event kind {other:?}")),
            };
            return Ok(events
                .into_iter()
                .map(|e| event_line(log_type, e))
                .collect());
        }
    };
    let obj = |v: Value| match v {
        Value::Object(m) => m,
        other => {
            let mut m = Map::new();
            m.insert("line".into(), other);
            m
        }
    };
    Ok(match records {
        LogRecords::Results(rs) => rs
            .into_iter()
            .map(|r| Line {
                log_type: LogType::Results,
                host_id: r.host_id.to_string(),
                name: Some(r.name),
                unix_time: r.unix_time,
                line_id: r.line_id,
                body: obj(r.line.into_value()),
            })
            .collect(),
        LogRecords::Status(ss) => ss
            .into_iter()
            .map(|s| Line {
                log_type: LogType::Status,
                host_id: s.host_id.to_string(),
                name: None,
                unix_time: s.unix_time,
                line_id: s.line_id,
                body: obj(s.line.into_value()),
            })
            .collect(),
    })
}

/// An audit record or an alert as a line.
fn event_line(log_type: LogType, e: Value) -> Line {
    let text = |k: &str| {
        e.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (name, host_id, at_ms) = match log_type {
        LogType::Audit => (
            text("action"),
            String::new(),
            e.get("at").and_then(Value::as_i64),
        ),
        _ => (
            text("rule"),
            text("host_id"),
            e.get("at").and_then(Value::as_i64),
        ),
    };
    let line_id = format!("{}-{}", log_type.as_str(), text("id"));
    Line {
        log_type,
        host_id,
        name: Some(name),
        unix_time: at_ms.unwrap_or(0) / 1000,
        line_id,
        body: match e {
            Value::Object(m) => m,
            _ => Map::new(),
        },
    }
}

/// Which lines a destination takes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// What is taken: `results`, `status`, `audit`, `alerts` (empty: the
    /// agents' results and status; operator events only when listed).
    #[serde(default)]
    pub logs: Vec<LogType>,
    /// Scheduled query names of the result lines taken (empty: all); a
    /// trailing `*` matches a prefix (`pack_*`).
    #[serde(default)]
    pub queries: Vec<String>,
    /// Lines of hosts carrying any of these labels (empty: any host);
    /// `platform:linux` and `all` work too.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Lines of hosts on any of these platforms (`linux`, `darwin`,
    /// `windows`, ...; empty: any).
    #[serde(default)]
    pub platforms: Vec<String>,
}

impl Filter {
    /// Whether deciding needs the host's labels or platform.
    pub fn needs_host(&self) -> bool {
        !self.labels.is_empty() || !self.platforms.is_empty()
    }

    /// The host part of the filter (`None`: the host is unknown).
    pub fn takes_host(&self, host: Option<&HostFacts>) -> bool {
        if !self.needs_host() {
            return true;
        }
        let Some(h) = host else { return false };
        (self.platforms.is_empty() || self.platforms.contains(&h.platform))
            && (self.labels.is_empty() || self.labels.iter().any(|l| h.labels.contains(l)))
    }

    /// The line part of the filter (log type, query name).
    pub fn takes(&self, line: &Line) -> bool {
        let listed = if self.logs.is_empty() {
            matches!(line.log_type, LogType::Results | LogType::Status)
        } else {
            self.logs.contains(&line.log_type)
        };
        if !listed {
            return false;
        }
        if self.queries.is_empty() || line.log_type != LogType::Results {
            return true;
        }
        let name = line.name.as_deref().unwrap_or("");
        self.queries.iter().any(|q| match q.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == q,
        })
    }
}

/// What a filter knows of a host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    pub platform: String,
    /// Every label, `all` and `platform:<p>` included.
    pub labels: Vec<String>,
}

/// Where a forwarder learns a line's host's labels and platform.
#[async_trait::async_trait]
pub trait HostDirectory: Send + Sync + 'static {
    /// `Ok(None)`: no such host (deleted). An error is retried.
    async fn facts(&self, host_id: &str) -> Result<Option<HostFacts>, String>;
}

/// Host facts from the store, each kept for a minute (labels change
/// rarely; a minute-old label set routes a line).
pub struct StoreDirectory {
    store: std::sync::Arc<dyn gatehouse_core::ports::Store>,
    cache: std::sync::Mutex<
        std::collections::HashMap<String, (Option<HostFacts>, std::time::Instant)>,
    >,
}

impl std::fmt::Debug for StoreDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreDirectory")
    }
}

/// Entries kept before the cache starts afresh.
const DIRECTORY_ENTRIES: usize = 200_000;
const DIRECTORY_TTL: std::time::Duration = std::time::Duration::from_secs(60);

impl StoreDirectory {
    pub fn new(store: std::sync::Arc<dyn gatehouse_core::ports::Store>) -> Self {
        Self {
            store,
            cache: std::sync::Mutex::default(),
        }
    }
}

#[async_trait::async_trait]
impl HostDirectory for StoreDirectory {
    async fn facts(&self, host_id: &str) -> Result<Option<HostFacts>, String> {
        if let Ok(c) = self.cache.lock()
            && let Some((f, at)) = c.get(host_id)
            && at.elapsed() < DIRECTORY_TTL
        {
            return Ok(f.clone());
        }
        let Some(id) = gatehouse_core::HostId::parse(host_id) else {
            return Ok(None);
        };
        let facts = self
            .store
            .get_host(&id)
            .await
            .map_err(|e| e.to_string())?
            .map(|h| HostFacts {
                labels: h.label_set(),
                platform: h.platform,
            });
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= DIRECTORY_ENTRIES {
                c.clear();
            }
            c.insert(
                host_id.to_owned(),
                (facts.clone(), std::time::Instant::now()),
            );
        }
        Ok(facts)
    }
}

/// How a destination reshapes each line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shape {
    /// Top-level fields kept (empty: all), after flattening.
    #[serde(default)]
    pub fields: Vec<String>,
    /// Top-level fields renamed (`{"hostIdentifier" = "host"}`).
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// `decorations.x` becomes top-level `x` (an existing `x` wins).
    #[serde(default)]
    pub flatten_decorations: bool,
}

impl Shape {
    pub fn is_identity(&self) -> bool {
        self.fields.is_empty() && self.rename.is_empty() && !self.flatten_decorations
    }

    pub fn apply(&self, body: &mut Map<String, Value>) {
        if self.flatten_decorations
            && let Some(Value::Object(decorations)) = body.remove("decorations")
        {
            for (k, v) in decorations {
                body.entry(k).or_insert(v);
            }
        }
        if !self.fields.is_empty() {
            body.retain(|k, _| self.fields.iter().any(|f| f == k));
        }
        for (from, to) in &self.rename {
            if let Some(v) = body.remove(from) {
                body.insert(to.clone(), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(name: &str, body: Value) -> Line {
        Line {
            log_type: LogType::Results,
            host_id: "h1".into(),
            name: Some(name.into()),
            unix_time: 1,
            line_id: "l1".into(),
            body: body.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn filters_take_log_types_and_query_names_or_prefixes() {
        let f = Filter {
            logs: vec![LogType::Results],
            queries: vec!["pack_net_*".into(), "users".into()],
            ..Filter::default()
        };
        assert!(f.takes(&line("users", json!({}))));
        assert!(f.takes(&line("pack_net_listening", json!({}))));
        assert!(!f.takes(&line("processes", json!({}))));
        let mut status = line("", json!({}));
        status.log_type = LogType::Status;
        status.name = None;
        assert!(!f.takes(&status));
        assert!(Filter::default().takes(&status));
    }

    #[test]
    fn host_filters_take_labels_or_platforms() {
        let linux = HostFacts {
            platform: "linux".into(),
            labels: vec!["all".into(), "platform:linux".into(), "pci".into()],
        };
        let f = Filter {
            labels: vec!["pci".into()],
            ..Filter::default()
        };
        assert!(f.needs_host() && f.takes_host(Some(&linux)));
        assert!(!f.takes_host(None), "an unknown host is not taken");
        let f = Filter {
            platforms: vec!["darwin".into()],
            ..Filter::default()
        };
        assert!(!f.takes_host(Some(&linux)));
        assert!(Filter::default().takes_host(None));
    }

    #[test]
    fn shapes_flatten_select_and_rename() {
        let mut body = json!({
            "name": "users", "hostIdentifier": "web-01", "columns": {"uid": "0"},
            "decorations": {"env": "prod", "name": "not-this"}, "unixTime": 5
        })
        .as_object()
        .cloned()
        .unwrap_or_default();
        let shape = Shape {
            fields: vec![
                "name".into(),
                "hostIdentifier".into(),
                "columns".into(),
                "env".into(),
            ],
            rename: BTreeMap::from([("hostIdentifier".into(), "host".into())]),
            flatten_decorations: true,
        };
        shape.apply(&mut body);
        assert_eq!(
            Value::Object(body),
            json!({"name": "users", "host": "web-01", "columns": {"uid": "0"}, "env": "prod"})
        );
    }
}
