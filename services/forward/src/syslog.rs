//! The syslog destination: RFC 5424 messages over TCP with octet counting
//! (RFC 6587), in the clear or over TLS (RFC 5425), one message per line:
//! `<PRI>1 TIME HOST APP - MSGID - LINE`, where TIME is the agent's time,
//! HOST its `hostIdentifier`, MSGID `result` or `status`, and LINE the
//! agent's JSON line. Results are `info`; status lines take their
//! severity from osquery's (0 info, 1 warning, 2 error, 3 critical).
//!
//! Syslog over TCP has no acknowledgement: a batch counts as delivered
//! once it is written and flushed to the connection, and a connection that
//! breaks is opened again for the next attempt (which sends the batch
//! again: at least once, up to what the network had in flight).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::destination::{DeliveryError, Destination};
use crate::line::{Line, LogType};

fn default_app() -> String {
    "osquery".into()
}

fn default_facility() -> u8 {
    // local0
    16
}

fn default_timeout() -> u64 {
    30
}

/// `[destinations.syslog]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// `host:port` of the collector.
    pub address: String,
    /// RFC 5425: TLS, the collector's certificate checked against the
    /// system's CAs and `ca`.
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The name the certificate must carry (default: the host of
    /// `address`).
    #[serde(default)]
    pub server_name: Option<String>,
    /// APP-NAME.
    #[serde(default = "default_app")]
    pub app_name: String,
    /// The facility number (default 16, local0).
    #[serde(default = "default_facility")]
    pub facility: u8,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

impl SyslogConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self
            .address
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(format!("address {:?}: host:port", self.address));
        }
        if self.facility > 23 {
            return Err(format!("facility {}: 0 to 23", self.facility));
        }
        if self.app_name.is_empty()
            || self.app_name.len() > 48
            || !self.app_name.bytes().all(|b| (33..=126).contains(&b))
        {
            return Err(format!(
                "app_name {:?}: 1 to 48 printable characters",
                self.app_name
            ));
        }
        Ok(())
    }
}

trait Stream: AsyncWrite + Unpin + Send {}
impl<T: AsyncWrite + Unpin + Send> Stream for T {}

/// Sends lines to a syslog collector.
pub struct SyslogDestination {
    cfg: SyslogConfig,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
    conn: Mutex<Option<Box<dyn Stream>>>,
}

impl std::fmt::Debug for SyslogDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogDestination")
            .field("address", &self.cfg.address)
            .finish()
    }
}

/// RFC 3339 UTC (`2024-06-04T10:20:31Z`) of a unix time.
fn timestamp(unix: i64) -> String {
    let (days, rem) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let (y, m, d) = gatehouse_core::time::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// HOSTNAME: printable ASCII, at most 255, `-` when empty.
fn host_field(h: &str) -> String {
    let s: String = h
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if s.is_empty() { "-".into() } else { s }
}

impl SyslogDestination {
    pub fn new(cfg: SyslogConfig) -> Result<Self, String> {
        cfg.validate()?;
        let tls = if cfg.tls {
            let host = cfg
                .server_name
                .clone()
                .or_else(|| {
                    cfg.address
                        .rsplit_once(':')
                        .map(|(h, _)| h.trim_matches(['[', ']']).to_owned())
                })
                .unwrap_or_default();
            let name = rustls_pki_types::ServerName::try_from(host.clone())
                .map_err(|e| format!("server_name {host:?}: {e}"))?;
            let config = gatehouse_runtime::tls::client_config(cfg.ca.as_deref())?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Self {
            cfg,
            tls,
            conn: Mutex::new(None),
        })
    }

    /// One message, octet-counted.
    fn frame(&self, l: &Line) -> Vec<u8> {
        let severity: u8 = match l.log_type {
            LogType::Results => 6,
            LogType::Status => match l.body.get("severity").and_then(|v| {
                v.as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            }) {
                Some(1) => 4,
                Some(2) => 3,
                Some(s) if s >= 3 => 2,
                _ => 6,
            },
            // notice, warning
            LogType::Audit => 5,
            LogType::Alerts => 4,
        };
        let pri = u16::from(self.cfg.facility) * 8 + u16::from(severity);
        let msgid = match l.log_type {
            LogType::Results => "result",
            LogType::Status => "status",
            LogType::Audit => "audit",
            LogType::Alerts => "alert",
        };
        let mut msg = format!(
            "<{pri}>1 {} {} {} - {msgid} - ",
            timestamp(l.unix_time),
            host_field(l.host_identifier()),
            self.cfg.app_name
        )
        .into_bytes();
        msg.extend(l.to_json());
        let mut out = format!("{} ", msg.len()).into_bytes();
        out.extend(msg);
        out
    }

    async fn connect(&self) -> Result<Box<dyn Stream>, DeliveryError> {
        let retry = |e: String| DeliveryError::Retry(format!("{}: {e}", self.cfg.address));
        let tcp = tokio::net::TcpStream::connect(&self.cfg.address)
            .await
            .map_err(|e| retry(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        Ok(match &self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| retry(format!("TLS: {e}")))?,
            ),
        })
    }
}

#[async_trait]
impl Destination for SyslogDestination {
    async fn deliver(&self, lines: &[Line]) -> Result<(), DeliveryError> {
        let mut bytes = Vec::new();
        for l in lines {
            bytes.extend(self.frame(l));
        }
        let mut conn = self.conn.lock().await;
        if conn.is_none() {
            let c = tokio::time::timeout(
                Duration::from_secs(self.cfg.timeout_secs.max(1)),
                self.connect(),
            )
            .await
            .map_err(|_| {
                DeliveryError::Retry(format!("{}: connect timed out", self.cfg.address))
            })??;
            *conn = Some(c);
        }
        let Some(c) = conn.as_mut() else {
            return Err(DeliveryError::Retry("no connection".into()));
        };
        let sent = tokio::time::timeout(Duration::from_secs(self.cfg.timeout_secs.max(1)), async {
            c.write_all(&bytes).await?;
            c.flush().await
        })
        .await;
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                *conn = None;
                Err(DeliveryError::Retry(format!("{}: {e}", self.cfg.address)))
            }
            Err(_) => {
                *conn = None;
                Err(DeliveryError::Retry(format!(
                    "{}: write timed out",
                    self.cfg.address
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(address: &str) -> SyslogConfig {
        SyslogConfig {
            address: address.into(),
            tls: false,
            ca: None,
            server_name: None,
            app_name: default_app(),
            facility: default_facility(),
            timeout_secs: 5,
        }
    }

    #[test]
    fn messages_are_rfc5424_and_octet_counted() {
        let d = SyslogDestination::new(cfg("127.0.0.1:6514")).unwrap();
        let line = Line {
            log_type: LogType::Status,
            host_id: "h".into(),
            name: None,
            unix_time: 1_717_496_431,
            line_id: "x".into(),
            body: json!({"hostIdentifier": "web 01", "severity": 2, "message": "boom é"})
                .as_object()
                .cloned()
                .unwrap(),
        };
        let framed = String::from_utf8(d.frame(&line)).unwrap();
        let (len, msg) = framed.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), msg.len(), "byte count");
        assert!(
            msg.starts_with("<131>1 2024-06-04T10:20:31Z web01 osquery - status - {"),
            "local0.err: {msg}"
        );
        let json: serde_json::Value = serde_json::from_str(&msg[msg.find('{').unwrap()..]).unwrap();
        assert_eq!(json["message"], "boom é");
    }

    #[test]
    fn configurations_are_checked() {
        assert!(cfg("nohost").validate().unwrap_err().contains("address"));
        let mut c = cfg("h:514");
        c.facility = 24;
        assert!(c.validate().unwrap_err().contains("facility"));
    }
}
