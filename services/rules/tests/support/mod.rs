//! What the rule engine's tests share: a result line as an agent sends
//! it, and a rule it matches.

use gatehouse_core::HostId;
use gatehouse_core::model::{LogRecords, ResultLog};
use gatehouse_core::rules::{Action, Rule, Trigger};
use gatehouse_core::wire::{LogRequest, LogType};
use serde_json::json;

/// One `listening` result line of `host` (nc on port 31337, added), sent
/// with `identifier` as its `hostIdentifier` and no decorations (osquery's
/// defaults), as the store hands it to the engine.
pub fn listening(host: &HostId, identifier: &str) -> Vec<ResultLog> {
    let line = json!({
        "name": "listening", "hostIdentifier": identifier,
        "calendarTime": "Mon Jun  3 10:00:00 2024 UTC", "unixTime": 1_717_408_800,
        "epoch": 0, "counter": 1, "numerics": false,
        "columns": {"name": "nc", "port": "31337"}, "action": "added"
    });
    let req = LogRequest {
        log_type: LogType::Result,
        data: line.as_object().into_iter().cloned().collect(),
    };
    match gatehouse_core::logs::records(host, req, 1_717_408_800_000) {
        LogRecords::Results(r) => r,
        LogRecords::Status(_) => Vec::new(),
    }
}

/// Rule `nc`: every added `listening` row, logged.
pub fn nc_rule() -> Rule {
    Rule {
        name: "nc".into(),
        description: String::new(),
        enabled: true,
        when: Trigger::Results {
            query: "listening".into(),
            row_actions: vec!["added".into()],
            condition: None,
        },
        actions: vec![Action::Log],
        throttle_secs: 0,
        updated_at: 1,
    }
}
