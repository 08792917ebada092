//! Log destinations: each one's state (cursor, lag, delivered, failed,
//! dropped, missed, last error and dead letter), and pause, resume and
//! replay; destinations defined through the API (admins), beside those of
//! the configuration file (`[[destinations]]`), run by the process that
//! forwards (the all-in-one, or the cluster's ingest holding the forward
//! lease).

use gatehouse_core::model::Role::{Admin as AdminRole, Operator};
use gatehouse_core::model::{DestinationDeadLetter, DestinationState};
use gatehouse_core::ports::{DestinationError, ReplayFrom};
use gatehouse_proto::v1 as pb;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::NoInput;
use super::definitions::NameRef;
use crate::ApiError;
use crate::admin::{Admin, Caller};
use crate::registry::{Audit, Entry, Input, IntoPb, Operation, Spec, Verb, entry};

pub(super) fn entries() -> Vec<Entry> {
    vec![
        entry::<ListDestinations>(),
        entry::<PauseDestination>(),
        entry::<ResumeDestination>(),
        entry::<ReplayDestination>(),
        entry::<PutDestination>(),
        entry::<DeleteDestination>(),
    ]
}

impl IntoPb for DestinationState {
    type Pb = pb::Destination;
    fn into_pb(self) -> pb::Destination {
        pb::Destination {
            name: self.name,
            kind: self.kind,
            paused: self.paused,
            cursor: self.cursor,
            lag_lines: self.lag_lines,
            lag_seconds: self.lag_seconds,
            delivered: self.delivered,
            failed: self.failed,
            dropped: self.dropped,
            missed: self.missed,
            last_error: self.last_error.unwrap_or_default(),
            last_dead_letter: self.last_dead_letter.map(|d: DestinationDeadLetter| {
                pb::DestinationDeadLetter {
                    at_ms: d.at_ms,
                    lines: d.lines,
                    response: d.response,
                }
            }),
            source: self.source,
            config_json: self.config.map(|c| c.to_string()).unwrap_or_default(),
        }
    }
}

impl IntoPb for Vec<DestinationState> {
    type Pb = pb::Destinations;
    fn into_pb(self) -> pb::Destinations {
        pb::Destinations {
            destinations: self.into_iter().map(IntoPb::into_pb).collect(),
        }
    }
}

/// The running destinations, or why there are none to act on.
fn destinations(a: &Admin) -> Result<&dyn gatehouse_core::ports::Destinations, ApiError> {
    a.destinations.as_deref().ok_or_else(|| {
        ApiError::NotFound(
            "log destinations: none run in this process (configure [[destinations]] in gatehouse serve)".into(),
        )
    })
}

impl From<DestinationError> for ApiError {
    fn from(e: DestinationError) -> Self {
        match e {
            DestinationError::Invalid(m) => ApiError::BadRequest(m),
            DestinationError::NotFound(n) => ApiError::NotFound(format!("destination {n}")),
            DestinationError::Conflict(m) => ApiError::Conflict(m),
            DestinationError::Forward(e) => ApiError::Unavailable(e.to_string()),
        }
    }
}

pub struct ListDestinations;

impl Operation for ListDestinations {
    const SPEC: Spec = Spec {
        id: "listDestinations",
        verb: Verb::Get,
        path: "/api/v1/destinations",
        grpc: "ListDestinations",
        summary: "Log destinations: cursor, lag, delivered, failed, dropped, missed, last error",
        role: Operator,
        action: "destination.list",
        audit: Audit::Refusals,
        created: false,
    };
    type Req = NoInput;
    type Resp = Vec<DestinationState>;

    async fn run(a: &Admin, _: &Caller, _: NoInput) -> Result<Vec<DestinationState>, ApiError> {
        match &a.destinations {
            Some(d) => d
                .list()
                .await
                .map_err(|e| ApiError::Unavailable(e.to_string())),
            None => Ok(Vec::new()),
        }
    }
}

pub struct PauseDestination;

impl Operation for PauseDestination {
    const SPEC: Spec = Spec {
        id: "pauseDestination",
        verb: Verb::Post,
        path: "/api/v1/destinations/{name}/pause",
        grpc: "PauseDestination",
        summary: "Stop delivering to a destination (it falls behind) until resumed, restarts included",
        role: AdminRole,
        action: "destination.pause",
        audit: Audit::Calls,
        created: false,
    };
    type Req = NameRef;
    type Resp = DestinationState;

    async fn run(a: &Admin, _: &Caller, r: NameRef) -> Result<DestinationState, ApiError> {
        Ok(destinations(a)?.set_paused(&r.name, true).await?)
    }
}

pub struct ResumeDestination;

impl Operation for ResumeDestination {
    const SPEC: Spec = Spec {
        id: "resumeDestination",
        verb: Verb::Post,
        path: "/api/v1/destinations/{name}/resume",
        grpc: "ResumeDestination",
        summary: "Deliver to a paused destination again (it catches up)",
        role: AdminRole,
        action: "destination.resume",
        audit: Audit::Calls,
        created: false,
    };
    type Req = NameRef;
    type Resp = DestinationState;

    async fn run(a: &Admin, _: &Caller, r: NameRef) -> Result<DestinationState, ApiError> {
        Ok(destinations(a)?.set_paused(&r.name, false).await?)
    }
}

/// Where a destination replays from: the oldest retained line, or the
/// first stored at or after a time.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    pub name: String,
    /// From the oldest line the forward log retains.
    #[serde(default)]
    pub oldest: bool,
    /// From the first line stored at or after this time (ms since the
    /// epoch).
    #[serde(default)]
    pub since_ms: Option<i64>,
}

impl ReplayRequest {
    fn from(&self) -> Result<ReplayFrom, ApiError> {
        match (self.oldest, self.since_ms) {
            (true, None) => Ok(ReplayFrom::Oldest),
            (false, Some(t)) if t >= 0 => Ok(ReplayFrom::Time(t)),
            (false, Some(_)) => Err(ApiError::BadRequest(
                "since_ms: a time in ms since the epoch".into(),
            )),
            _ => Err(ApiError::BadRequest(
                "give one of oldest (true) and since_ms".into(),
            )),
        }
    }
}

impl Input for ReplayRequest {
    type Pb = pb::ReplayRequest;
    fn from_pb(r: pb::ReplayRequest) -> Result<Self, ApiError> {
        Ok(ReplayRequest {
            name: r.name,
            oldest: r.oldest,
            since_ms: (r.since_ms != 0).then_some(r.since_ms),
        })
    }
    fn target(&self) -> String {
        self.name.clone()
    }
    fn detail(&self) -> serde_json::Value {
        serde_json::json!({"oldest": self.oldest, "since_ms": self.since_ms})
    }
}

pub struct ReplayDestination;

impl Operation for ReplayDestination {
    const SPEC: Spec = Spec {
        id: "replayDestination",
        verb: Verb::Post,
        path: "/api/v1/destinations/{name}/replay",
        grpc: "ReplayDestination",
        summary: "Deliver again from the oldest retained line or from a time",
        role: AdminRole,
        action: "destination.replay",
        audit: Audit::Calls,
        created: false,
    };
    type Req = ReplayRequest;
    type Resp = DestinationState;

    async fn run(a: &Admin, _: &Caller, r: ReplayRequest) -> Result<DestinationState, ApiError> {
        Ok(destinations(a)?.replay(&r.name, r.from()?).await?)
    }
}

/// A destination defined through the API: its name (from the path) and
/// the rest of a `[[destinations]]` entry as JSON, e.g.
/// `{"splunk_hec": {"url": "https://splunk:8088", "token": "..."},
/// "filter": {"logs": ["results"]}}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DestinationDef {
    pub name: String,
    /// One kind's table (`file`, `splunk_hec`, `elasticsearch`,
    /// `webhook`, `syslog`, `nats`, `kafka`) and optionally `start`,
    /// `filter`, `shape`, `pacing`, as in the configuration file.
    #[serde(flatten)]
    pub definition: serde_json::Map<String, serde_json::Value>,
}

impl Input for DestinationDef {
    type Pb = pb::PutDestinationRequest;
    fn from_pb(r: pb::PutDestinationRequest) -> Result<Self, ApiError> {
        let definition = match serde_json::from_str(&r.definition_json) {
            Ok(serde_json::Value::Object(m)) => m,
            Ok(_) => {
                return Err(ApiError::BadRequest(
                    "definition_json: a JSON object".into(),
                ));
            }
            Err(e) => return Err(ApiError::BadRequest(format!("definition_json: {e}"))),
        };
        Ok(DestinationDef {
            name: r.name,
            definition,
        })
    }
    fn target(&self) -> String {
        self.name.clone()
    }
    /// Its kind and routing, never its connection (which holds secrets).
    fn detail(&self) -> serde_json::Value {
        let mut d = serde_json::Map::new();
        for (k, v) in &self.definition {
            if ["start", "filter", "shape", "pacing"].contains(&k.as_str()) {
                d.insert(k.clone(), v.clone());
            } else {
                d.insert("kind".into(), k.clone().into());
            }
        }
        d.into()
    }
}

pub struct PutDestination;

impl Operation for PutDestination {
    const SPEC: Spec = Spec {
        id: "putDestination",
        verb: Verb::Put,
        path: "/api/v1/destinations/{name}",
        grpc: "PutDestination",
        summary: "Define or redefine a log destination (started at once, no restart; secrets redacted in the answer)",
        role: AdminRole,
        action: "destination.put",
        audit: Audit::Calls,
        created: false,
    };
    type Req = DestinationDef;
    type Resp = DestinationState;

    async fn run(a: &Admin, _: &Caller, d: DestinationDef) -> Result<DestinationState, ApiError> {
        Ok(destinations(a)?
            .put(&d.name, serde_json::Value::Object(d.definition))
            .await?)
    }
}

pub struct DeleteDestination;

impl Operation for DeleteDestination {
    const SPEC: Spec = Spec {
        id: "deleteDestination",
        verb: Verb::Delete,
        path: "/api/v1/destinations/{name}",
        grpc: "DeleteDestination",
        summary: "Remove a destination defined through the API (it stops after its batch in flight)",
        role: AdminRole,
        action: "destination.delete",
        audit: Audit::Calls,
        created: false,
    };
    type Req = NameRef;
    type Resp = super::Deleted;

    async fn run(a: &Admin, _: &Caller, r: NameRef) -> Result<super::Deleted, ApiError> {
        destinations(a)?.delete(&r.name).await?;
        Ok(super::Deleted)
    }
}
