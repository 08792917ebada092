//! Turning an agent's log POST into idempotent records.
//!
//! Each line gets a `line_id`: the SHA-256 of its canonical JSON (keys
//! sorted, so member order does not matter) plus its occurrence number among
//! identical lines in the same POST. A re-sent batch therefore yields the
//! same ids and overwrites itself instead of doubling, while two identical
//! lines in one batch are both kept.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::HostId;
use crate::ids::sha256_hex;
use crate::model::{LogRecords, ResultKind, ResultLog, StatusLog};
use crate::wire::{LogRequest, LogType};

/// Agent clocks this far behind the server are still trusted for bucketing.
pub const CLOCK_TRUST_PAST_SECS: i64 = 7 * 86_400;
/// ... and this far ahead.
pub const CLOCK_TRUST_FUTURE_SECS: i64 = 86_400;

/// The storage day of a line: the agent's day when its clock is plausible
/// (so a re-sent line lands on the same key), otherwise the day it was
/// received (so retention never drops a just-acknowledged line because an
/// agent's clock is years off).
pub fn bucket_day(unix_time: i64, received_ms: i64) -> u32 {
    crate::time::unix_day(bucket_time(unix_time, received_ms).0)
}

/// The time a line is bucketed by (seconds), and whether that is the
/// receive time because the agent's clock was implausible ("skewed").
pub fn bucket_time(unix_time: i64, received_ms: i64) -> (i64, bool) {
    let received = received_ms / 1000;
    if unix_time >= received - CLOCK_TRUST_PAST_SECS
        && unix_time <= received + CLOCK_TRUST_FUTURE_SECS
    {
        (unix_time, false)
    } else {
        (received, true)
    }
}

fn int_field(m: &Map<String, Value>, k: &str) -> Option<i64> {
    match m.get(k)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn line_ids(lines: &[Map<String, Value>]) -> Vec<String> {
    let mut seen: HashMap<String, u32> = HashMap::new();
    lines
        .iter()
        .map(|l| {
            let canonical = serde_json::to_vec(l).unwrap_or_default();
            let h = sha256_hex(&canonical);
            let n = seen.entry(h.clone()).or_insert(0);
            let id = format!("{}-{}", &h[..32], n);
            *n += 1;
            id
        })
        .collect()
}

/// Classifies a result line and counts its rows.
pub fn classify(line: &Map<String, Value>) -> (ResultKind, String, u32) {
    let action = line
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if let Some(Value::Array(rows)) = line.get("snapshot") {
        return (
            ResultKind::Snapshot,
            action,
            u32::try_from(rows.len()).unwrap_or(u32::MAX),
        );
    }
    if let Some(Value::Object(d)) = line.get("diffResults") {
        let n = ["added", "removed"]
            .iter()
            .filter_map(|k| d.get(*k).and_then(Value::as_array))
            .map(Vec::len)
            .sum::<usize>();
        return (
            ResultKind::Batched,
            action,
            u32::try_from(n).unwrap_or(u32::MAX),
        );
    }
    if line.get("columns").is_some_and(Value::is_object) {
        return (ResultKind::Event, action, 1);
    }
    (ResultKind::Other, action, 0)
}

/// Derives the records to store for one POST from `host`.
pub fn records(host: &HostId, req: LogRequest, received_at: i64) -> LogRecords {
    let ids = line_ids(&req.data);
    let fallback_time = received_at / 1000;
    match req.log_type {
        LogType::Result => LogRecords::Results(
            req.data
                .into_iter()
                .zip(ids)
                .map(|(line, line_id)| {
                    let (kind, action, rows) = classify(&line);
                    ResultLog {
                        host_id: host.clone(),
                        name: line
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                        unix_time: int_field(&line, "unixTime").unwrap_or(fallback_time),
                        kind,
                        action,
                        rows,
                        line_id,
                        received_at,
                        line: Value::Object(line),
                    }
                })
                .collect(),
        ),
        LogType::Status => LogRecords::Status(
            req.data
                .into_iter()
                .zip(ids)
                .map(|(line, line_id)| StatusLog {
                    host_id: host.clone(),
                    unix_time: int_field(&line, "unixTime").unwrap_or(fallback_time),
                    severity: int_field(&line, "severity").unwrap_or(0),
                    message: line
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    line_id,
                    received_at,
                    line: Value::Object(line),
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{parse_log, parse_object};

    #[test]
    fn skewed_clocks_bucket_by_receive_day() {
        let now_ms = 1_800_000_000_000;
        assert_eq!(
            bucket_day(1_800_000_000 - 3_600, now_ms),
            crate::time::unix_day(1_800_000_000 - 3_600)
        );
        assert_eq!(
            bucket_day(946_684_800, now_ms),
            crate::time::unix_day(1_800_000_000)
        );
        assert_eq!(
            bucket_day(2_900_000_000, now_ms),
            crate::time::unix_day(1_800_000_000)
        );
    }

    #[test]
    fn ids_ignore_member_order_and_count_repeats() {
        let a = parse_object(br#"{"log_type":"result","data":[{"name":"q","unixTime":5,"columns":{"a":"1"},"action":"added"},
            {"action":"added","columns":{"a":"1"},"unixTime":5,"name":"q"},
            {"name":"q","unixTime":5,"snapshot":[{"a":"1"},{"a":"2"}],"action":"snapshot"}]}"#)
            .unwrap_or_default();
        let host = HostId::from_identity("x");
        let LogRecords::Results(r) = records(&host, parse_log(a).unwrap(), 1000) else {
            panic!("expected results")
        };
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].line_id[..32], r[1].line_id[..32]);
        assert_ne!(r[0].line_id, r[1].line_id);
        assert_eq!(r[2].kind, ResultKind::Snapshot);
        assert_eq!(r[2].rows, 2);
        assert_eq!(r[0].unix_time, 5);
    }
}
