//! forward: log destinations. Every stored result and status line is
//! forwarded, at least once, to each configured destination, each reading
//! the forward log ([`gatehouse_core::ports::ForwardLog`]) from a cursor
//! of its own, advanced only after the destination acknowledged: a slow or
//! dead destination falls behind and catches up, and agents never wait
//! for it.
//!
//! - [`log`]: the forward log of one process (fjall); [`jetstream`]: a
//!   cluster's (a JetStream stream); `conformance`: the
//!   port's checks (feature `conformance`);
//! - [`line`]: the lines, their filters and reshaping;
//! - [`destination`]: the destination port;
//! - [`file`], [`http`], [`syslog`], [`kafka`], [`nats`]: the destinations;
//! - [`runner`]: one destination's delivery loop, its status and metrics;
//! - [`supervisor`]: the running set (the configuration file's and the
//!   API's destinations, started and stopped as they change) and the
//!   operators' handle on it;
//! - [`alerts`]: lines a destination missed, raised as an alert.

pub mod alerts;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod destination;
pub mod file;
pub mod http;
pub mod jetstream;
pub mod kafka;
pub mod line;
pub mod log;
pub mod nats;
pub mod runner;
pub mod supervisor;
pub mod syslog;

pub use supervisor::{Handle, Supervisor};

use std::sync::Arc;

use gatehouse_core::ports::ForwardLog;
use gatehouse_core::time::Clock;
use serde::{Deserialize, Serialize};

use crate::destination::Destination;
use crate::line::{Filter, Shape};
use crate::runner::{Forwarder, Pacing, Route, Start};

/// One `[[destinations]]` entry: a name, exactly one kind's table, and
/// what it takes and how it is paced.
///
/// ```toml
/// [[destinations]]
/// name = "siem"
/// start = "oldest"
/// [destinations.splunk_hec]
/// url = "https://splunk.example.com:8088"
/// token_file = "/etc/gatehouse/hec_token"
/// [destinations.filter]
/// logs = ["results"]
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// Unique; `[a-z0-9_-]`, up to 64 characters (its cursor is kept
    /// under this name: renaming one starts it afresh).
    pub name: String,
    /// Where it starts the first time: `now` or `oldest` (retained).
    #[serde(default)]
    pub start: Start,
    #[serde(default)]
    pub filter: Filter,
    #[serde(default)]
    pub shape: Shape,
    #[serde(default)]
    pub pacing: Pacing,
    #[serde(default)]
    pub file: Option<file::FileConfig>,
    #[serde(default)]
    pub splunk_hec: Option<http::HecConfig>,
    #[serde(default)]
    pub elasticsearch: Option<http::BulkConfig>,
    #[serde(default)]
    pub webhook: Option<http::WebhookConfig>,
    #[serde(default)]
    pub syslog: Option<syslog::SyslogConfig>,
    #[serde(default)]
    pub kafka: Option<kafka::KafkaConfig>,
    #[serde(default)]
    pub nats: Option<nats::NatsDestConfig>,
}

impl DestinationConfig {
    /// Its kind's name, when exactly one kind is given.
    pub fn kind(&self) -> Result<&'static str, String> {
        let kinds: Vec<&'static str> = [
            ("file", self.file.is_some()),
            ("splunk_hec", self.splunk_hec.is_some()),
            ("elasticsearch", self.elasticsearch.is_some()),
            ("webhook", self.webhook.is_some()),
            ("syslog", self.syslog.is_some()),
            ("kafka", self.kafka.is_some()),
            ("nats", self.nats.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        match kinds.as_slice() {
            [k] => Ok(k),
            [] => Err(format!(
                "destination {:?}: give one of file, splunk_hec, elasticsearch, webhook, syslog, kafka, nats",
                self.name
            )),
            many => Err(format!(
                "destination {:?}: one kind per destination, got {}",
                self.name,
                many.join(" and ")
            )),
        }
    }

    /// Checks every field; the error names the destination and the field.
    pub fn validate(&self) -> Result<(), String> {
        let ok_name = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !ok_name {
            return Err(format!(
                "destinations.name {:?}: 1 to 64 of a-z, 0-9, _ and -",
                self.name
            ));
        }
        self.kind()?;
        let p = &self.pacing;
        if p.max_lines == 0 || p.max_bytes == 0 {
            return Err(format!(
                "destination {:?}: pacing.max_lines and pacing.max_bytes must be positive",
                self.name
            ));
        }
        if let Some(f) = &self.file {
            f.validate()
                .map_err(|e| format!("destination {:?}: file.{e}", self.name))?;
        }
        let at = |kind: &str, e: String| format!("destination {:?}: {kind}.{e}", self.name);
        if let Some(c) = &self.splunk_hec {
            http::check_url(&c.url).map_err(|e| at("splunk_hec", e))?;
            if c.token.is_some() == c.token_file.is_some() {
                return Err(at("splunk_hec", "token or token_file: give one".into()));
            }
        }
        if let Some(c) = &self.elasticsearch {
            http::check_url(&c.url).map_err(|e| at("elasticsearch", e))?;
        }
        if let Some(c) = &self.webhook {
            http::check_url(&c.url).map_err(|e| at("webhook", e))?;
        }
        if let Some(n) = &self.nats {
            n.validate().map_err(|e| at("nats", e))?;
        }
        if let Some(k) = &self.kafka {
            k.validate().map_err(|e| at("kafka", e))?;
        }
        if let Some(s) = &self.syslog {
            s.validate()
                .map_err(|e| format!("destination {:?}: syslog.{e}", self.name))?;
        }
        Ok(())
    }

    /// The destination itself (files opened, clients built).
    pub fn build(&self, clock: Arc<dyn Clock>) -> Result<Arc<dyn Destination>, String> {
        self.validate()?;
        let named = |e: String| format!("destination {:?}: {e}", self.name);
        let d: Arc<dyn Destination> = if let Some(c) = &self.file {
            Arc::new(file::FileDestination::new(c.clone(), clock).map_err(named)?)
        } else if let Some(c) = &self.splunk_hec {
            Arc::new(http::HttpDestination::hec(c).map_err(named)?)
        } else if let Some(c) = &self.elasticsearch {
            Arc::new(http::HttpDestination::bulk(c).map_err(named)?)
        } else if let Some(c) = &self.webhook {
            Arc::new(http::HttpDestination::webhook(c).map_err(named)?)
        } else if let Some(c) = &self.syslog {
            Arc::new(syslog::SyslogDestination::new(c.clone()).map_err(named)?)
        } else if let Some(c) = &self.kafka {
            Arc::new(kafka::KafkaDestination::new(c.clone()).map_err(named)?)
        } else if let Some(c) = &self.nats {
            Arc::new(nats::NatsDestination::new(c.clone()).map_err(named)?)
        } else {
            return Err(named("no kind".into()));
        };
        Ok(d)
    }
}

impl DestinationConfig {
    /// Checks what only the configuration file may give: secrets read
    /// from files on the server (an API caller could otherwise send any
    /// file the server can read to a receiver of their choosing).
    pub fn for_api(&self) -> Result<(), String> {
        let files = [
            (
                "splunk_hec.token_file",
                self.splunk_hec
                    .as_ref()
                    .is_some_and(|c| c.token_file.is_some()),
            ),
            (
                "elasticsearch.api_key_file",
                self.elasticsearch
                    .as_ref()
                    .is_some_and(|c| c.api_key_file.is_some()),
            ),
            (
                "webhook.secret_file",
                self.webhook
                    .as_ref()
                    .is_some_and(|c| c.secret_file.is_some()),
            ),
            (
                "nats.connection.credentials_file",
                self.nats
                    .as_ref()
                    .is_some_and(|c| c.connection.credentials_file.is_some()),
            ),
        ];
        match files.iter().find(|(_, set)| *set) {
            Some((field, _)) => Err(format!(
                "destination {:?}: {field}: secrets read from the server's files are for the configuration file; give the secret itself through the API",
                self.name
            )),
            None => Ok(()),
        }
    }

    /// Its forwarder over `log` (the destination built); `since_ms`: when
    /// it was defined (see [`Route::since_ms`]).
    pub fn forwarder(
        &self,
        log: Arc<dyn ForwardLog>,
        services: Services,
        clock: Arc<dyn Clock>,
        metrics: &gatehouse_runtime::metrics::Metrics,
        since_ms: Option<i64>,
    ) -> Result<Forwarder, String> {
        let dest = self.build(clock.clone())?;
        Ok(Forwarder::new(
            &self.name,
            self.kind()?,
            log,
            dest,
            Route {
                filter: self.filter.clone(),
                shape: self.shape.clone(),
                pacing: self.pacing.clone(),
                start: self.start,
                hosts: services.hosts,
                alerts: services.alerts,
                since_ms,
            },
            clock,
            metrics,
        ))
    }
}

/// Checks a set of destinations (each valid, names unique).
pub fn validate(all: &[DestinationConfig]) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    for d in all {
        d.validate()?;
        if !names.insert(&d.name) {
            return Err(format!("destinations: {:?} is named twice", d.name));
        }
    }
    Ok(())
}

/// What forwarders use besides the log.
#[derive(Clone, Default)]
pub struct Services {
    /// Answers filters by label and platform.
    pub hosts: Option<Arc<dyn line::HostDirectory>>,
    /// Raises an alert when a destination missed lines.
    pub alerts: Option<Arc<dyn runner::MissedLines>>,
}
