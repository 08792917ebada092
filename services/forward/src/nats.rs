//! The NATS JetStream destination: each line published to a subject of a
//! JetStream stream the operator defines (for bridges to anything else),
//! with the line's id as `Nats-Msg-Id` (a line sent again within the
//! stream's duplicate window is stored once), delivered once every
//! message of the batch is acknowledged by the stream. The subject is a
//! template: `{log}` becomes `results` or `status`, `{query}` the query
//! name (`status` for status lines), with characters a subject token
//! cannot hold replaced by `_`.

use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use async_trait::async_trait;
use gatehouse_bus::NatsConfig;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::destination::{DeliveryError, Destination};
use crate::line::{Line, LogType};

/// `[destinations.nats]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsDestConfig {
    /// The subject each line is published to (`osquery.{log}.{query}`).
    pub subject: String,
    /// How to reach NATS (`servers`, credentials, TLS), as `[cluster.nats]`.
    #[serde(default)]
    pub connection: NatsConfig,
}

impl NatsDestConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.connection
            .validate()
            .map_err(|e| format!("connection.{e}"))?;
        let probe = self.subject.replace("{log}", "x").replace("{query}", "x");
        let bad = probe.is_empty()
            || probe
                .split('.')
                .any(|t| t.is_empty() || t.contains(['*', '>', ' ', '\t']));
        if bad || probe.contains(['{', '}']) {
            return Err(format!(
                "subject {:?}: dot-separated tokens without wildcards; {{log}} and {{query}} may be used",
                self.subject
            ));
        }
        Ok(())
    }
}

/// A subject token from free text.
fn token(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() { "_".into() } else { t }
}

/// Publishes lines to a JetStream stream.
pub struct NatsDestination {
    cfg: NatsDestConfig,
    js: OnceCell<async_nats::jetstream::Context>,
}

impl std::fmt::Debug for NatsDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsDestination")
            .field("subject", &self.cfg.subject)
            .finish()
    }
}

impl NatsDestination {
    pub fn new(cfg: NatsDestConfig) -> Result<Self, String> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            js: OnceCell::new(),
        })
    }

    fn subject(&self, l: &Line) -> String {
        let (log, query) = match l.log_type {
            LogType::Status => ("status", "status".to_owned()),
            t => (t.as_str(), token(l.name.as_deref().unwrap_or(""))),
        };
        self.cfg
            .subject
            .replace("{log}", log)
            .replace("{query}", &query)
    }

    async fn context(&self) -> Result<&async_nats::jetstream::Context, DeliveryError> {
        self.js
            .get_or_try_init(|| async {
                let bus = gatehouse_bus::NatsBus::connect(&self.cfg.connection)
                    .await
                    .map_err(|e| DeliveryError::Retry(e.to_string()))?;
                Ok(async_nats::jetstream::new(bus.client().clone()))
            })
            .await
    }
}

#[async_trait]
impl Destination for NatsDestination {
    async fn deliver(&self, lines: &[Line]) -> Result<(), DeliveryError> {
        let js = self.context().await?;
        let mut acks = Vec::with_capacity(lines.len());
        for l in lines {
            let subject = self.subject(l);
            let ack = js
                .send_publish(
                    subject.clone(),
                    PublishMessage::build()
                        .payload(l.to_json().into())
                        .message_id(&l.line_id),
                )
                .await
                .map_err(|e| DeliveryError::Retry(format!("publishing to {subject}: {e}")))?;
            acks.push((subject, ack));
        }
        for (subject, ack) in acks {
            match tokio::time::timeout(Duration::from_secs(30), ack).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(DeliveryError::Retry(format!(
                        "{subject}: {e} (does a JetStream stream take this subject?)"
                    )));
                }
                Err(_) => {
                    return Err(DeliveryError::Retry(format!(
                        "{subject}: no acknowledgement within 30 s"
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(n: u32, name: &str) -> Line {
        Line {
            log_type: LogType::Results,
            host_id: "h".into(),
            name: Some(name.into()),
            unix_time: 1,
            line_id: format!("id-{n}"),
            body: json!({"name": name, "columns": {"n": n}})
                .as_object()
                .cloned()
                .unwrap(),
        }
    }

    fn cfg(url: &str, subject: &str) -> NatsDestConfig {
        NatsDestConfig {
            subject: subject.into(),
            connection: NatsConfig {
                servers: vec![url.into()],
                ..NatsConfig::default()
            },
        }
    }

    #[test]
    fn subjects_are_checked_and_filled_in() {
        assert!(cfg("nats://x:4222", "osq.>").validate().is_err());
        assert!(cfg("nats://x:4222", "osq..a").validate().is_err());
        assert!(cfg("nats://x:4222", "osq.{nope}").validate().is_err());
        let d = NatsDestination::new(cfg("nats://x:4222", "osq.{log}.{query}")).unwrap();
        assert_eq!(
            d.subject(&line(1, "pack/net.listening ports")),
            "osq.results.pack_net_listening_ports"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lines_land_in_the_operators_stream_once_each() {
        let nats = gatehouse_bus::nats_test_server::NatsTestServer::start().unwrap();
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut stream = js
            .get_or_create_stream(async_nats::jetstream::stream::Config {
                name: "OSQ".into(),
                subjects: vec!["osq.>".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        let d = NatsDestination::new(cfg(&nats.url(), "osq.{log}.{query}")).unwrap();
        let lines = [line(1, "users"), line(2, "users"), line(3, "processes")];
        d.deliver(&lines).await.unwrap();
        // Sent again (a crash before the cursor moved): stored once.
        d.deliver(&lines).await.unwrap();
        assert_eq!(stream.info().await.unwrap().state.messages, 3);
        let m = stream.get_raw_message(3).await.unwrap();
        assert_eq!(m.subject.as_str(), "osq.results.processes");
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(v["columns"]["n"], 3);
        // A subject no stream takes: an error to retry, saying why.
        let lost = NatsDestination::new(cfg(&nats.url(), "elsewhere.{log}")).unwrap();
        let e = lost.deliver(&lines[..1]).await.unwrap_err();
        assert!(
            matches!(&e, DeliveryError::Retry(m) if m.contains("elsewhere.results")),
            "{e:?}"
        );
    }
}
