//! forward: log destinations. Every stored result and status line is
//! forwarded, at least once, to each configured destination, each reading
//! the forward log ([`gatehouse_core::ports::ForwardLog`]) from a cursor
//! of its own, advanced only after the destination acknowledged: a slow or
//! dead destination falls behind and catches up, and agents never wait
//! for it.
//!
//! - [`log`]: the forward log of one process (fjall); `conformance`: the
//!   port's checks (feature `conformance`);
//! - [`line`]: the lines, their filters and reshaping;
//! - [`destination`]: the destination port;
//! - [`file`], [`http`], [`syslog`], [`nats`]: the destinations;
//! - [`runner`]: one destination's delivery loop, its status and metrics;
//! - [`alerts`]: lines a destination missed, raised as an alert.

pub mod alerts;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod destination;
pub mod file;
pub mod http;
pub mod line;
pub mod log;
pub mod nats;
pub mod runner;
pub mod syslog;

use std::sync::Arc;

use gatehouse_core::model::DestinationState;
use gatehouse_core::ports::{Destinations, ForwardError, ForwardLog, ReplayFrom};
use gatehouse_core::time::Clock;
use gatehouse_runtime::Shutdown;
use serde::{Deserialize, Serialize};

use crate::destination::Destination;
use crate::line::{Filter, Shape};
use crate::runner::{Control, Forwarder, Pacing, Route, Start};

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
            ("nats", self.nats.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        match kinds.as_slice() {
            [k] => Ok(k),
            [] => Err(format!(
                "destination {:?}: give one of file, splunk_hec, elasticsearch, webhook, syslog, nats",
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
        } else if let Some(c) = &self.nats {
            Arc::new(nats::NatsDestination::new(c.clone()).map_err(named)?)
        } else {
            return Err(named("no kind".into()));
        };
        Ok(d)
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

/// The running destinations, for operators (the API's
/// [`gatehouse_core::ports::Destinations`]).
#[derive(Clone, Default)]
pub struct Handle {
    log: Option<Arc<dyn ForwardLog>>,
    controls: Vec<(String, Arc<Control>)>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.controls.iter().map(|(n, _)| n))
            .finish()
    }
}

impl Handle {
    fn control(&self, name: &str) -> Option<&Arc<Control>> {
        self.controls
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
    }
}

#[async_trait::async_trait]
impl Destinations for Handle {
    fn list(&self) -> Vec<DestinationState> {
        self.controls.iter().map(|(_, c)| c.state()).collect()
    }

    async fn set_paused(&self, name: &str, paused: bool) -> Option<DestinationState> {
        let c = self.control(name)?;
        c.set_paused(paused);
        Some(c.state())
    }

    async fn replay(
        &self,
        name: &str,
        from: ReplayFrom,
    ) -> Result<Option<DestinationState>, ForwardError> {
        let (Some(c), Some(log)) = (self.control(name), &self.log) else {
            return Ok(None);
        };
        let cursor = match from {
            ReplayFrom::Oldest => log.bounds().await?.oldest(),
            ReplayFrom::Time(at) => log.seek(at).await?,
        };
        c.replay(cursor);
        Ok(Some(c.state()))
    }
}

/// What forwarders use besides the log.
#[derive(Clone, Default)]
pub struct Services {
    /// Answers filters by label and platform.
    pub hosts: Option<Arc<dyn line::HostDirectory>>,
    /// Raises an alert when a destination missed lines.
    pub alerts: Option<Arc<dyn runner::MissedLines>>,
}

/// Builds a forwarder per destination over `log`.
pub fn forwarders(
    all: &[DestinationConfig],
    log: Arc<dyn ForwardLog>,
    services: Services,
    clock: Arc<dyn Clock>,
    metrics: &gatehouse_runtime::metrics::Metrics,
) -> Result<(Vec<Forwarder>, Handle), String> {
    validate(all)?;
    let mut out = Vec::new();
    let mut controls = Vec::new();
    for d in all {
        let dest = d.build(clock.clone())?;
        let f = Forwarder::new(
            &d.name,
            d.kind()?,
            log.clone(),
            dest,
            Route {
                filter: d.filter.clone(),
                shape: d.shape.clone(),
                pacing: d.pacing.clone(),
                start: d.start,
                hosts: services.hosts.clone(),
                alerts: services.alerts.clone(),
            },
            clock.clone(),
            metrics,
        );
        controls.push((d.name.clone(), f.control()));
        out.push(f);
    }
    Ok((
        out,
        Handle {
            log: Some(log),
            controls,
        },
    ))
}

/// Runs every forwarder until `shutdown`.
pub async fn run(forwarders: Vec<Forwarder>, shutdown: Shutdown) {
    let tasks: Vec<_> = forwarders
        .into_iter()
        .map(|f| tokio::spawn(f.run(shutdown.clone())))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}
