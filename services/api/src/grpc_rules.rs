//! Rules, alerts and dead letters between the domain types and protobuf.
//! A rule's trigger and actions travel as Structs holding the same JSON the
//! REST API takes, so both APIs validate them with the same serde types.

use gatehouse_core::rules::{Action, ActionOutcome, Alert, DeadLetter, Rule, Trigger};
use gatehouse_proto::v1 as pb;
use serde_json::Value;
use tonic::Status;

use crate::grpc::{from_pb_struct, to_pb_struct, to_pb_value};

fn to_struct(v: impl serde::Serialize) -> prost_types::Struct {
    match serde_json::to_value(v) {
        Ok(Value::Object(m)) => to_pb_struct(m),
        _ => prost_types::Struct::default(),
    }
}

fn from_struct<T: serde::de::DeserializeOwned>(
    what: &str,
    s: Option<prost_types::Struct>,
) -> Result<T, Status> {
    let v = Value::Object(from_pb_struct(s.unwrap_or_default()));
    serde_json::from_value(v).map_err(|e| Status::invalid_argument(format!("{what}: {e}")))
}

pub fn rule_from_pb(r: pb::Rule) -> Result<Rule, Status> {
    let when: Trigger = from_struct("when", r.when)?;
    let actions = r
        .actions
        .into_iter()
        .enumerate()
        .map(|(i, a)| from_struct::<Action>(&format!("actions[{i}]"), Some(a)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rule {
        name: r.name,
        description: r.description,
        enabled: r.enabled,
        when,
        actions,
        updated_at: 0,
    })
}

pub fn rule_to_pb(r: Rule) -> pb::Rule {
    pb::Rule {
        name: r.name,
        description: r.description,
        enabled: r.enabled,
        when: Some(to_struct(&r.when)),
        actions: r.actions.iter().map(to_struct).collect(),
        updated_at: r.updated_at,
    }
}

fn outcome_to_pb(o: ActionOutcome) -> pb::ActionOutcome {
    pb::ActionOutcome {
        action: o.action.as_str().to_owned(),
        target: o.target,
        state: o.state.as_str().to_owned(),
        attempts: o.attempts,
        last_error: o.last_error,
        finished_at: o.finished_at,
    }
}

pub fn alert_to_pb(a: Alert) -> pb::Alert {
    pb::Alert {
        id: a.id,
        at: a.at,
        rule: a.rule,
        event: a.event,
        host_id: a.host_id.to_string(),
        hostname: a.hostname,
        summary: a.summary,
        detail: Some(to_pb_value(a.detail)),
        actions: a.actions.into_iter().map(outcome_to_pb).collect(),
    }
}

pub fn dead_letter_to_pb(d: DeadLetter) -> pb::DeadLetter {
    pb::DeadLetter {
        id: d.id,
        alert: Some(alert_to_pb(d.alert)),
        action_index: u32::try_from(d.action_index).unwrap_or(u32::MAX),
        url: d.url,
        attempts: d.attempts,
        last_error: d.last_error,
        dead_at: d.dead_at,
    }
}
