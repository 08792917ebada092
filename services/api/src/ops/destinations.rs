//! Log destinations: each one's state (cursor, lag, delivered, failed,
//! dropped, missed, last error and dead letter), and pause, resume and
//! replay. The destinations themselves are configured in the TOML
//! (`[[destinations]]`) and run by the process that stores log lines.

use gatehouse_core::model::Role::{Admin as AdminRole, Operator};
use gatehouse_core::model::{DestinationDeadLetter, DestinationState};
use gatehouse_core::ports::ReplayFrom;
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

fn unknown(name: &str) -> ApiError {
    ApiError::NotFound(format!("destination {name}"))
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
        Ok(a.destinations
            .as_ref()
            .map(|d| d.list())
            .unwrap_or_default())
    }
}

pub struct PauseDestination;

impl Operation for PauseDestination {
    const SPEC: Spec = Spec {
        id: "pauseDestination",
        verb: Verb::Post,
        path: "/api/v1/destinations/{name}/pause",
        grpc: "PauseDestination",
        summary: "Stop delivering to a destination (it falls behind; until resumed or restarted)",
        role: AdminRole,
        action: "destination.pause",
        audit: Audit::Calls,
        created: false,
    };
    type Req = NameRef;
    type Resp = DestinationState;

    async fn run(a: &Admin, _: &Caller, r: NameRef) -> Result<DestinationState, ApiError> {
        destinations(a)?
            .set_paused(&r.name, true)
            .await
            .ok_or_else(|| unknown(&r.name))
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
        destinations(a)?
            .set_paused(&r.name, false)
            .await
            .ok_or_else(|| unknown(&r.name))
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
        destinations(a)?
            .replay(&r.name, r.from()?)
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?
            .ok_or_else(|| unknown(&r.name))
    }
}
