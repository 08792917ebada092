//! The Kafka destination (a pure-Rust client, `rskafka`): each line a
//! record of the agent's JSON line, keyed by the host's id (all of a
//! host's lines in one partition, in order), with the line's id and log
//! type as headers (`gatehouse-line-id`, `gatehouse-log`: a consumer can
//! drop what a retry sent twice). The topic is a template: `{log}` becomes
//! `results`, `status`, `audit` or `alerts`, `{query}` the query name,
//! with characters a topic cannot hold replaced by `_`. The partition is
//! the Java client's default for a key (murmur2), so Gatehouse and other
//! producers agree. A batch is delivered once every record is acknowledged
//! by all in-sync replicas (`acks = -1`); topics are not created (a
//! missing one is an error to retry, saying so).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::record::Record;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::destination::{DeliveryError, Destination};
use crate::line::{Line, LogType};

fn default_timeout() -> u64 {
    30
}

fn default_client_id() -> String {
    "gatehouse".into()
}

/// SASL mechanisms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    #[default]
    #[serde(rename = "plain")]
    Plain,
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "scram-sha-512")]
    ScramSha512,
}

/// `[destinations.kafka]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// The topic each line goes to: `osquery_{log}` (a topic per log
    /// type) or `osquery.{query}` (a topic per query name).
    pub topic: String,
    /// TLS to the brokers, their certificates checked against the
    /// system's CAs and `ca`.
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// SASL credentials (over TLS, please).
    #[serde(default)]
    pub sasl_username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub sasl_mechanism: SaslMechanism,
    /// Gzip each produced batch.
    #[serde(default)]
    pub gzip: bool,
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Bound on connecting and on one produce, seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

impl KafkaConfig {
    /// `brokers` and `topic`, everything else as the configuration file's
    /// defaults.
    pub fn new(brokers: Vec<String>, topic: &str) -> Self {
        Self {
            brokers,
            topic: topic.to_owned(),
            tls: false,
            ca: None,
            sasl_username: None,
            password: None,
            sasl_mechanism: SaslMechanism::Plain,
            gzip: false,
            client_id: default_client_id(),
            timeout_secs: default_timeout(),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.brokers.is_empty() {
            return Err("brokers: give at least one host:port".into());
        }
        for b in &self.brokers {
            let ok = b
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return Err(format!("brokers {b:?}: host:port"));
            }
        }
        let probe = self.topic.replace("{log}", "x").replace("{query}", "x");
        let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if probe.is_empty() || probe.len() > 249 || !probe.chars().all(legal) {
            return Err(format!(
                "topic {:?}: up to 249 of a-z, A-Z, 0-9, '.', '_' and '-'; {{log}} and {{query}} may be used",
                self.topic
            ));
        }
        if self.sasl_username.is_some() != self.password.is_some() {
            return Err("sasl_username and password: give both or neither".into());
        }
        if self.timeout_secs == 0 {
            return Err("timeout_secs: at least 1".into());
        }
        Ok(())
    }
}

/// A topic name from free text.
fn topic_part(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() { "_".into() } else { t }
}

/// Kafka's murmur2 (the Java client's `Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The Java client's default partition of a keyed record.
pub fn partition_of(key: &[u8], partitions: usize) -> i32 {
    let positive = (murmur2(key) & 0x7fff_ffff) as usize;
    (positive % partitions.max(1)) as i32
}

/// What the client knows, rebuilt after a failure.
#[derive(Default)]
struct Conn {
    client: Option<Arc<Client>>,
    /// Partition count per topic.
    partitions: HashMap<String, usize>,
    producers: HashMap<(String, i32), Arc<PartitionClient>>,
}

/// Produces lines to Kafka.
pub struct KafkaDestination {
    cfg: KafkaConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    conn: Mutex<Conn>,
}

impl std::fmt::Debug for KafkaDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaDestination")
            .field("brokers", &self.cfg.brokers)
            .field("topic", &self.cfg.topic)
            .finish()
    }
}

fn retry(what: &str, e: impl std::fmt::Display) -> DeliveryError {
    DeliveryError::Retry(format!("kafka: {what}: {e}"))
}

impl KafkaDestination {
    pub fn new(cfg: KafkaConfig) -> Result<Self, String> {
        cfg.validate()?;
        let tls = if cfg.tls {
            Some(Arc::new(gatehouse_runtime::tls::client_config(
                cfg.ca.as_deref(),
            )?))
        } else {
            None
        };
        Ok(Self {
            cfg,
            tls,
            conn: Mutex::new(Conn::default()),
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.timeout_secs)
    }

    fn topic(&self, l: &Line) -> String {
        let query = match l.log_type {
            LogType::Status => "status".to_owned(),
            _ => topic_part(l.name.as_deref().unwrap_or(l.log_type.as_str())),
        };
        self.cfg
            .topic
            .replace("{log}", l.log_type.as_str())
            .replace("{query}", &query)
    }

    async fn client(&self, conn: &mut Conn) -> Result<Arc<Client>, DeliveryError> {
        if let Some(c) = &conn.client {
            return Ok(c.clone());
        }
        let mut b =
            ClientBuilder::new(self.cfg.brokers.clone()).client_id(self.cfg.client_id.as_str());
        if let Some(t) = &self.tls {
            b = b.tls_config(t.clone());
        }
        if let (Some(u), Some(p)) = (&self.cfg.sasl_username, &self.cfg.password) {
            let c = Credentials::new(u.clone(), p.clone());
            b = b.sasl_config(match self.cfg.sasl_mechanism {
                SaslMechanism::Plain => SaslConfig::Plain(c),
                SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(c),
                SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(c),
            });
        }
        let client = tokio::time::timeout(self.timeout(), b.build())
            .await
            .map_err(|_| retry("connecting", "no answer in time"))?
            .map_err(|e| retry("connecting", e))?;
        let client = Arc::new(client);
        conn.client = Some(client.clone());
        Ok(client)
    }

    async fn partitions(&self, conn: &mut Conn, topic: &str) -> Result<usize, DeliveryError> {
        if let Some(n) = conn.partitions.get(topic) {
            return Ok(*n);
        }
        let client = self.client(conn).await?;
        let topics = tokio::time::timeout(self.timeout(), client.list_topics())
            .await
            .map_err(|_| retry("listing topics", "no answer in time"))?
            .map_err(|e| retry("listing topics", e))?;
        for t in &topics {
            conn.partitions.insert(t.name.clone(), t.partitions.len());
        }
        match conn.partitions.get(topic) {
            Some(n) if *n > 0 => Ok(*n),
            _ => Err(retry(
                "producing",
                format!("topic {topic} does not exist (create it; Gatehouse does not)"),
            )),
        }
    }

    async fn producer(
        &self,
        conn: &mut Conn,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<PartitionClient>, DeliveryError> {
        let key = (topic.to_owned(), partition);
        if let Some(p) = conn.producers.get(&key) {
            return Ok(p.clone());
        }
        let client = self.client(conn).await?;
        let p = tokio::time::timeout(
            self.timeout(),
            client.partition_client(topic, partition, UnknownTopicHandling::Error),
        )
        .await
        .map_err(|_| retry("connecting to a partition leader", "no answer in time"))?
        .map_err(|e| retry(&format!("{topic}/{partition}"), e))?;
        let p = Arc::new(p);
        conn.producers.insert(key, p.clone());
        Ok(p)
    }

    async fn deliver_in(&self, conn: &mut Conn, lines: &[Line]) -> Result<(), DeliveryError> {
        // Records by topic and partition, each group in line order.
        let mut groups: BTreeMap<(String, i32), Vec<Record>> = BTreeMap::new();
        for l in lines {
            let topic = self.topic(l);
            let n = self.partitions(conn, &topic).await?;
            let key = l.host_id.as_bytes().to_vec();
            let partition = partition_of(&key, n);
            let timestamp = chrono::DateTime::from_timestamp(l.unix_time, 0).unwrap_or_default();
            groups.entry((topic, partition)).or_default().push(Record {
                key: Some(key),
                value: Some(l.to_json()),
                headers: BTreeMap::from([
                    (
                        "gatehouse-line-id".to_owned(),
                        l.line_id.clone().into_bytes(),
                    ),
                    (
                        "gatehouse-log".to_owned(),
                        l.log_type.as_str().as_bytes().to_vec(),
                    ),
                ]),
                timestamp,
            });
        }
        let compression = if self.cfg.gzip {
            Compression::Gzip
        } else {
            Compression::NoCompression
        };
        // Every partition's records at once: each request waits for its
        // acknowledgement (and, the client not disabling Nagle's algorithm,
        // sometimes for the broker's delayed ACK), so partitions overlap.
        let mut sends = Vec::with_capacity(groups.len());
        for ((topic, partition), records) in groups {
            let p = self.producer(conn, &topic, partition).await?;
            let timeout = self.timeout();
            sends.push(async move {
                tokio::time::timeout(timeout, p.produce(records, compression))
                    .await
                    .map_err(|_| {
                        retry(
                            &format!("{topic}/{partition}"),
                            "no acknowledgement in time",
                        )
                    })?
                    .map_err(|e| classify(&topic, partition, e))
                    .map(|_| ())
            });
        }
        futures_util::future::try_join_all(sends).await.map(|_| ())
    }
}

/// A produce error: refused for good (a record too large, invalid) or
/// to retry.
fn classify(topic: &str, partition: i32, e: rskafka::client::error::Error) -> DeliveryError {
    use rskafka::client::error::{Error, ProtocolError};
    let at = format!("kafka: {topic}/{partition}");
    match &e {
        Error::ServerError {
            protocol_error:
                ProtocolError::MessageTooLarge
                | ProtocolError::RecordListTooLarge
                | ProtocolError::InvalidRecord
                | ProtocolError::CorruptMessage
                | ProtocolError::TopicAuthorizationFailed
                | ProtocolError::InvalidTopicException,
            ..
        } => DeliveryError::Reject(format!("{at}: {e}")),
        _ => DeliveryError::Retry(format!("{at}: {e}")),
    }
}

#[async_trait]
impl Destination for KafkaDestination {
    async fn deliver(&self, lines: &[Line]) -> Result<(), DeliveryError> {
        let mut conn = self.conn.lock().await;
        let r = self.deliver_in(&mut conn, lines).await;
        if matches!(r, Err(DeliveryError::Retry(_))) {
            // Start afresh: leaders and partition counts may have moved.
            *conn = Conn::default();
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(topic: &str) -> KafkaConfig {
        KafkaConfig::new(vec!["kafka:9092".into()], topic)
    }

    #[test]
    fn murmur2_matches_the_java_client() {
        // Values from Kafka's own UtilsTest (murmur2 of these strings).
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58_897_971
        );
        assert_eq!(murmur2(b"abc"), 479_470_107);
    }

    #[test]
    fn configurations_are_checked() {
        assert!(cfg("osquery_{log}").validate().is_ok());
        assert!(cfg("osquery {log}").validate().is_err());
        assert!(cfg("").validate().is_err());
        let mut c = cfg("t");
        c.brokers = vec!["kafka".into()];
        assert!(c.validate().unwrap_err().contains("brokers"));
        let mut c = cfg("t");
        c.sasl_username = Some("u".into());
        assert!(c.validate().unwrap_err().contains("password"));
    }
}
