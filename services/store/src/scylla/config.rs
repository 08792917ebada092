//! Configuration of the ScyllaDB adapter: where the cluster is, how the
//! keyspace is replicated, the consistency of each operation class, the
//! retention (TTL) of each data class, and the client's own limits.

use std::collections::BTreeMap;
use std::path::PathBuf;

use scylla::statement::{Consistency, SerialConsistency};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScyllaConfig {
    /// `host:port` of one or more nodes; the driver discovers the rest.
    pub contact_points: Vec<String>,
    pub keyspace: String,
    pub replication: Replication,
    /// The local datacenter: requests stay in it and `local_*`
    /// consistency levels refer to it. Required with more than one DC.
    pub local_datacenter: Option<String>,
    pub consistency: ConsistencyConfig,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: Option<ScyllaTls>,
    /// Requests in flight from this process; past it callers wait up to
    /// `queue_timeout_ms`, then get `StoreError::Busy`.
    pub max_in_flight: usize,
    pub queue_timeout_ms: u64,
    /// Client-side timeout of one request.
    pub request_timeout_ms: u64,
    /// Concurrency of one scatter read or fan-out write (campaign
    /// deliveries, bucketed listings).
    pub fan_out: usize,
    /// Wait for every node to agree on the schema after migrations.
    /// Only a single-node test server without schema events needs false.
    pub await_schema_agreement: bool,
    pub ttl: TtlConfig,
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        Self {
            contact_points: vec!["127.0.0.1:9042".into()],
            keyspace: "gatehouse".into(),
            replication: Replication::default(),
            local_datacenter: None,
            consistency: ConsistencyConfig::default(),
            username: None,
            password: None,
            tls: None,
            max_in_flight: 2048,
            queue_timeout_ms: 5_000,
            request_timeout_ms: 10_000,
            fan_out: 64,
            await_schema_agreement: true,
            ttl: TtlConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "class", deny_unknown_fields)]
pub enum Replication {
    /// Production: a replication factor per datacenter.
    NetworkTopologyStrategy { factors: BTreeMap<String, u8> },
    /// Single-DC development clusters only.
    SimpleStrategy { replication_factor: u8 },
}

impl Default for Replication {
    fn default() -> Self {
        Self::SimpleStrategy {
            replication_factor: 1,
        }
    }
}

impl Replication {
    /// The CQL map literal for `CREATE KEYSPACE ... WITH replication = `.
    pub fn cql(&self) -> String {
        match self {
            Self::SimpleStrategy { replication_factor } => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {replication_factor}}}")
            }
            Self::NetworkTopologyStrategy { factors } => {
                let mut s = String::from("{'class': 'NetworkTopologyStrategy'");
                for (dc, rf) in factors {
                    s.push_str(&format!(", '{dc}': {rf}"));
                }
                s.push('}');
                s
            }
        }
    }
}

/// Consistency per operation class, as CQL names (`local_quorum`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsistencyConfig {
    /// Host records, deliveries and campaign results (actor state).
    pub hosts: String,
    /// Result and status log writes (acknowledged to agents after them).
    pub logs: String,
    /// Operator reads: listings and searches.
    pub reads: String,
    /// Definitions, campaigns, carves, config blobs, meta.
    pub admin: String,
    /// Conditional writes (generation counter, carve sessions).
    pub serial: String,
}

impl Default for ConsistencyConfig {
    fn default() -> Self {
        Self {
            hosts: "local_quorum".into(),
            logs: "local_quorum".into(),
            reads: "local_quorum".into(),
            admin: "local_quorum".into(),
            serial: "local_serial".into(),
        }
    }
}

/// Time-to-live per data class, in days (0 keeps data forever).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TtlConfig {
    pub logs_days: u32,
    pub campaigns_days: u32,
    pub carves_days: u32,
    pub audit_days: u32,
}

impl Default for TtlConfig {
    fn default() -> Self {
        Self {
            logs_days: 30,
            campaigns_days: 90,
            carves_days: 30,
            audit_days: 365,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScyllaTls {
    /// PEM bundle of the CA that signed the nodes' certificates.
    pub ca_file: PathBuf,
    /// Client certificate and key, when the cluster requires them.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl ScyllaConfig {
    /// Checks everything that can be checked before connecting.
    pub fn validate(&self) -> Result<(), String> {
        if self.contact_points.is_empty() {
            return Err("store.scylla.contact_points must name at least one node".into());
        }
        if !valid_identifier(&self.keyspace) {
            return Err(format!(
                "store.scylla.keyspace {:?} must be 1-48 letters, digits or underscores, starting with a letter",
                self.keyspace
            ));
        }
        match &self.replication {
            Replication::SimpleStrategy { replication_factor } if *replication_factor == 0 => {
                return Err(
                    "store.scylla.replication.replication_factor must be at least 1".into(),
                );
            }
            Replication::NetworkTopologyStrategy { factors } => {
                if factors.is_empty() || factors.values().any(|rf| *rf == 0) {
                    return Err("store.scylla.replication.factors needs a factor of at least 1 for each datacenter".into());
                }
                if let Some(dc) = factors.keys().find(|dc| {
                    dc.is_empty()
                        || !dc
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                }) {
                    return Err(format!(
                        "store.scylla.replication: invalid datacenter name {dc:?}"
                    ));
                }
                if factors.len() > 1 && self.local_datacenter.is_none() {
                    return Err(
                        "store.scylla.local_datacenter is required with more than one datacenter"
                            .into(),
                    );
                }
            }
            Replication::SimpleStrategy { .. } => {}
        }
        let c = &self.consistency;
        for (name, v) in [
            ("hosts", &c.hosts),
            ("logs", &c.logs),
            ("reads", &c.reads),
            ("admin", &c.admin),
        ] {
            parse_consistency(v).map_err(|e| format!("store.scylla.consistency.{name}: {e}"))?;
        }
        parse_serial(&c.serial).map_err(|e| format!("store.scylla.consistency.serial: {e}"))?;
        if self.username.is_some() != self.password.is_some() {
            return Err("store.scylla.username and password go together".into());
        }
        if let Some(t) = &self.tls
            && t.cert_file.is_some() != t.key_file.is_some()
        {
            return Err("store.scylla.tls.cert_file and key_file go together".into());
        }
        if self.max_in_flight == 0 || self.fan_out == 0 {
            return Err("store.scylla.max_in_flight and fan_out must be at least 1".into());
        }
        Ok(())
    }
}

fn valid_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 48
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub fn parse_consistency(s: &str) -> Result<Consistency, String> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "any" => Consistency::Any,
        "one" => Consistency::One,
        "two" => Consistency::Two,
        "three" => Consistency::Three,
        "quorum" => Consistency::Quorum,
        "all" => Consistency::All,
        "local_quorum" => Consistency::LocalQuorum,
        "each_quorum" => Consistency::EachQuorum,
        "local_one" => Consistency::LocalOne,
        other => {
            return Err(format!(
                "unknown consistency {other:?} (one of any, one, two, three, quorum, all, local_quorum, each_quorum, local_one)"
            ));
        }
    })
}

pub fn parse_serial(s: &str) -> Result<SerialConsistency, String> {
    match s.to_ascii_lowercase().as_str() {
        "serial" => Ok(SerialConsistency::Serial),
        "local_serial" => Ok(SerialConsistency::LocalSerial),
        other => Err(format!(
            "unknown serial consistency {other:?} (serial or local_serial)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        assert_eq!(ScyllaConfig::default().validate(), Ok(()));
        let mut c = ScyllaConfig {
            keyspace: "gate-house".into(),
            ..Default::default()
        };
        assert!(c.validate().err().unwrap_or_default().contains("keyspace"));
        c.keyspace = "gh".into();
        c.consistency.logs = "most".into();
        assert!(
            c.validate()
                .err()
                .unwrap_or_default()
                .contains("consistency.logs")
        );
        c.consistency.logs = "LOCAL_ONE".into();
        c.replication = Replication::NetworkTopologyStrategy {
            factors: BTreeMap::from([("dc1".into(), 3), ("dc2".into(), 3)]),
        };
        assert!(
            c.validate()
                .err()
                .unwrap_or_default()
                .contains("local_datacenter")
        );
        c.local_datacenter = Some("dc1".into());
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(
            c.replication.cql(),
            "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 3}"
        );
    }
}
