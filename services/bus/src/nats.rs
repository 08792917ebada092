//! The NATS bus: the `Bus` port over a real NATS connection (async-nats).
//!
//! Subjects, wildcards, queue groups, request/reply and no-responders are
//! NATS's own; this adapter only maps errors and turns each subscription
//! into the port's channel. `subscribe` returns once the server has the
//! subscription (a round trip through the server, not only a flush), so a
//! message published by any process after it returns is delivered.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use gatehouse_core::ports::{Bus, BusError, BusMessage, Replier, Subscription};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

const SUBSCRIPTION_BUFFER: usize = 4096;

/// How to reach NATS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// `nats://host:port` (or `tls://`) of one or more servers.
    pub servers: Vec<String>,
    /// Shown in the server's connection list (`gatehouse-edge-<pod>`).
    pub name: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A `.creds` file (JWT + nkey seed) for operator-mode servers.
    pub credentials_file: Option<PathBuf>,
    /// CA bundle for `tls://` servers; TLS is then required.
    pub tls_ca_file: Option<PathBuf>,
    pub connect_timeout_ms: u64,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            servers: vec!["nats://127.0.0.1:4222".into()],
            name: "gatehouse".into(),
            username: None,
            password: None,
            credentials_file: None,
            tls_ca_file: None,
            connect_timeout_ms: 5_000,
        }
    }
}

impl NatsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.servers.is_empty() {
            return Err("nats.servers must name at least one server".into());
        }
        if let Some(s) = self
            .servers
            .iter()
            .find(|s| !(s.starts_with("nats://") || s.starts_with("tls://")) || s.contains(' '))
        {
            return Err(format!(
                "nats.servers: {s:?} must look like nats://host:port or tls://host:port"
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err("nats.username and nats.password go together".into());
        }
        Ok(())
    }
}

/// A NATS connection; cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("state", &self.client.connection_state())
            .finish()
    }
}

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

impl NatsBus {
    /// Returns once the server has processed everything this connection
    /// sent before (a flush only hands the bytes to the socket): a probe
    /// published to this connection's own inbox comes back only after the
    /// server handled the commands ahead of it, such as a new
    /// subscription.
    async fn barrier(&self) -> Result<(), BusError> {
        let inbox = self.client.new_inbox();
        let mut probe = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(unavailable)?;
        self.client
            .publish(inbox, Bytes::new())
            .await
            .map_err(unavailable)?;
        self.client.flush().await.map_err(unavailable)?;
        match tokio::time::timeout(Duration::from_secs(10), probe.next()).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(BusError::Closed),
            Err(_) => Err(BusError::Unavailable(
                "the server did not confirm a subscription within 10 s".into(),
            )),
        }
    }

    /// Connects; reconnects by itself afterwards (async-nats retries
    /// forever and buffers publishes while disconnected).
    pub async fn connect(cfg: &NatsConfig) -> Result<Self, BusError> {
        cfg.validate().map_err(BusError::Unavailable)?;
        let mut opts = async_nats::ConnectOptions::new()
            .name(&cfg.name)
            .connection_timeout(Duration::from_millis(cfg.connect_timeout_ms))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("nats connected"),
                    async_nats::Event::Disconnected => tracing::warn!("nats disconnected"),
                    other => tracing::debug!(event = %other, "nats event"),
                }
            });
        if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
            opts = opts.user_and_password(u.clone(), p.clone());
        }
        if let Some(creds) = &cfg.credentials_file {
            opts = opts
                .credentials_file(creds)
                .await
                .map_err(|e| unavailable(format!("nats credentials {}: {e}", creds.display())))?;
        }
        if let Some(ca) = &cfg.tls_ca_file {
            opts = opts.add_root_certificates(ca.clone()).require_tls(true);
        }
        let client = opts
            .connect(cfg.servers.clone())
            .await
            .map_err(|e| unavailable(format!("connect to {:?}: {e}", cfg.servers)))?;
        Ok(Self { client })
    }

    /// The underlying client (JetStream, KV).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }
}

struct NatsReplier {
    client: async_nats::Client,
    subject: async_nats::Subject,
}

#[async_trait]
impl Replier for NatsReplier {
    async fn reply(self: Box<Self>, payload: Bytes) -> Result<(), BusError> {
        self.client
            .publish(self.subject, payload)
            .await
            .map_err(unavailable)
    }
}

/// Ends the forwarding task (and with it the NATS subscription) on drop.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        self.client
            .publish(subject.to_owned(), payload)
            .await
            .map_err(unavailable)
    }

    async fn request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        let req = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(timeout));
        match self.client.send_request(subject.to_owned(), req).await {
            Ok(m) => Ok(m.payload),
            Err(e) => Err(match e.kind() {
                async_nats::RequestErrorKind::NoResponders => {
                    BusError::NoResponders(subject.to_owned())
                }
                async_nats::RequestErrorKind::TimedOut => BusError::Timeout(subject.to_owned()),
                _ => unavailable(e),
            }),
        }
    }

    async fn subscribe(
        &self,
        subject: &str,
        queue_group: Option<&str>,
    ) -> Result<Subscription, BusError> {
        let mut sub = match queue_group {
            Some(g) => self
                .client
                .queue_subscribe(subject.to_owned(), g.to_owned())
                .await
                .map_err(unavailable)?,
            None => self
                .client
                .subscribe(subject.to_owned())
                .await
                .map_err(unavailable)?,
        };
        self.barrier().await?;
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
        let client = self.client.clone();
        let task = tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let reply = m.reply.map(|subject| {
                    Box::new(NatsReplier {
                        client: client.clone(),
                        subject,
                    }) as Box<dyn Replier>
                });
                let msg = BusMessage {
                    subject: m.subject.to_string(),
                    payload: m.payload,
                    reply,
                };
                if tx.send(msg).await.is_err() {
                    break;
                }
            }
            // Dropping `sub` unsubscribes.
        });
        Ok(Subscription {
            messages: rx,
            guard: Box::new(AbortOnDrop(task)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats_test_server::NatsTestServer;

    fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
        // Display, not Debug: the error says what failed in words.
        match r {
            Ok(v) => v,
            Err(e) => panic!("call failed: {e}"),
        }
    }

    async fn bus(server: &NatsTestServer, name: &str) -> NatsBus {
        ok(NatsBus::connect(&NatsConfig {
            servers: vec![server.url()],
            name: name.into(),
            ..NatsConfig::default()
        })
        .await)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_bus_passes_conformance_within_and_across_connections() {
        let server = ok(NatsTestServer::start());
        let a = bus(&server, "conformance-a").await;
        let b = bus(&server, "conformance-b").await;
        crate::conformance::run_all(&a).await;
        crate::conformance::run_pair(&a, &b).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jetstream_kv_leases_pass_the_lease_conformance_suite() {
        use crate::leases::{LeaseStore, LeaseTtls, NatsLeases};
        let server = ok(NatsTestServer::start());
        let b = bus(&server, "leases").await;
        let ttls = LeaseTtls {
            lease: std::time::Duration::from_secs(1),
            member: std::time::Duration::from_secs(1),
        };
        let leases = ok(NatsLeases::open(b.client().clone(), ttls, 1).await);
        // The server drops entries past the buckets' max age on its own
        // timer: wait (bounded) until the member written last has gone,
        // which also puts the lease written before it past its age.
        let past_ttl = || {
            gatehouse_testkit::until(
                "the member written last expires",
                std::time::Duration::from_secs(20),
                async || !ok(leases.members().await).iter().any(|m| m == "gone"),
            )
        };
        crate::conformance::leases::run_all(&leases, past_ttl).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_jetstream_log_passes_the_log_stream_conformance_suite() {
        use crate::logstream::JetStreamLog;
        let server = ok(NatsTestServer::start());
        let b = bus(&server, "logstream").await;
        let cfg = crate::conformance::logstream::config();
        let log = ok(JetStreamLog::open(b.client().clone(), &cfg).await);
        // The server's ack-wait timer runs in real time: the checks need it
        // to have passed (a terminated batch must stay gone after it; an
        // unsettled one comes back, which their fetch also waits for).
        let wait = cfg.ack_wait + std::time::Duration::from_millis(200);
        let past_ack_wait = || tokio::time::sleep(wait);
        crate::conformance::logstream::run_all(&log, past_ack_wait).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreachable_servers_and_bad_urls_are_named() {
        let e = NatsBus::connect(&NatsConfig {
            servers: vec!["nats://127.0.0.1:1".into()],
            connect_timeout_ms: 500,
            ..NatsConfig::default()
        })
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("127.0.0.1:1"), "{e}");
        let e = NatsConfig {
            servers: vec!["http://x:4222".into()],
            ..NatsConfig::default()
        }
        .validate()
        .err()
        .unwrap_or_default();
        assert!(e.contains("nats://host:port"), "{e}");
    }
}
