//! Turning an agent's log POST into idempotent records.
//!
//! Each line gets a `line_id`: the SHA-256 of its canonical JSON (keys
//! sorted, so member order does not matter) plus its occurrence number among
//! identical lines in the same POST. A re-sent batch therefore yields the
//! same ids and overwrites itself instead of doubling, while two identical
//! lines in one batch are both kept.

use std::collections::HashMap;

use serde_json::Value;
use serde_json::value::RawValue;

use crate::HostId;
use crate::ids::sha256_hex;
use crate::logline::{Canon, LogLine};
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

/// The id of each line: the hash of its canonical text, plus its
/// occurrence among identical lines of the same POST.
fn line_ids<'t>(texts: impl Iterator<Item = &'t str>) -> Vec<String> {
    let mut seen: HashMap<String, u32> = HashMap::new();
    texts
        .map(|t| {
            let h = sha256_hex(t.as_bytes());
            let n = seen.entry(h.clone()).or_insert(0);
            let id = format!("{}-{}", &h[..32], n);
            *n += 1;
            id
        })
        .collect()
}

/// Classifies a result line and counts its rows.
pub fn classify(line: &Canon<'_>) -> (ResultKind, String, u32) {
    let action = line
        .get("action")
        .and_then(Canon::as_str)
        .unwrap_or("")
        .to_owned();
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    if let Some(rows) = line.get("snapshot").and_then(Canon::as_array) {
        return (ResultKind::Snapshot, action, count(rows.len()));
    }
    if let Some(d) = line.get("diffResults").filter(|d| d.is_object()) {
        let n = ["added", "removed"]
            .iter()
            .filter_map(|k| d.get(k).and_then(Canon::as_array))
            .map(<[_]>::len)
            .sum::<usize>();
        return (ResultKind::Batched, action, count(n));
    }
    if line.get("columns").is_some_and(Canon::is_object) {
        return (ResultKind::Event, action, 1);
    }
    (ResultKind::Other, action, 0)
}

/// Derives the records to store for one POST from `host` (lines already
/// parsed into maps: tests, and requests the fast reading refused).
pub fn records(host: &HostId, req: LogRequest, received_at: i64) -> LogRecords {
    let texts: Vec<String> = req
        .data
        .into_iter()
        .map(|l| serde_json::to_string(&Value::Object(l)).unwrap_or_else(|_| "{}".into()))
        .collect();
    let lines: Vec<Canon<'_>> = texts
        .iter()
        .map(|t| Canon::parse(t).unwrap_or(Canon::Object(Vec::new())))
        .collect();
    records_of(host, req.log_type, lines, received_at)
}

/// Derives the records to store for one POST from `host`, its lines
/// parsed into [`Canon`] (object lines; anything else is stored as `{}`).
pub fn records_of(
    host: &HostId,
    log_type: LogType,
    lines: Vec<Canon<'_>>,
    received_at: i64,
) -> LogRecords {
    // Each line's canonical text, written once: hashed for its id and
    // stored as it is (serde_json wrote it, so it is not scanned again).
    let texts: Vec<Box<RawValue>> = lines
        .iter()
        .map(|l| serde_json::value::to_raw_value(l).unwrap_or_default())
        .collect();
    let ids = line_ids(texts.iter().map(|t| t.get()));
    let each = lines.iter().zip(texts).zip(ids);
    match log_type {
        LogType::Result => LogRecords::Results(
            each.map(|((line, text), line_id)| {
                result_record(host, line, text, line_id, received_at)
            })
            .collect(),
        ),
        LogType::Status => LogRecords::Status(
            each.map(|((line, text), line_id)| {
                status_record(host, line, text, line_id, received_at)
            })
            .collect(),
        ),
    }
}

fn str_of(l: &Canon<'_>, k: &str) -> String {
    l.get(k).and_then(Canon::as_str).unwrap_or("").to_owned()
}

fn int_of(l: &Canon<'_>, k: &str) -> Option<i64> {
    l.get(k).and_then(Canon::as_i64_lenient)
}

/// A result line's record: what it says (name, agent time, kind, action,
/// rows; the receive time when it has no time of its own) and its text.
fn result_record(
    host: &HostId,
    line: &Canon<'_>,
    text: Box<RawValue>,
    line_id: String,
    received_at: i64,
) -> ResultLog {
    let (kind, action, rows) = classify(line);
    ResultLog {
        host_id: host.clone(),
        name: str_of(line, "name"),
        unix_time: int_of(line, "unixTime").unwrap_or(received_at / 1000),
        kind,
        action,
        rows,
        line_id,
        received_at,
        line: LogLine::from_raw(text),
    }
}

/// A status line's record (see [`result_record`]).
fn status_record(
    host: &HostId,
    line: &Canon<'_>,
    text: Box<RawValue>,
    line_id: String,
    received_at: i64,
) -> StatusLog {
    StatusLog {
        host_id: host.clone(),
        unix_time: int_of(line, "unixTime").unwrap_or(received_at / 1000),
        severity: int_of(line, "severity").unwrap_or(0),
        message: str_of(line, "message"),
        line_id,
        received_at,
        line: LogLine::from_raw(text),
    }
}

/// A result line's record rebuilt from what a store kept of it: the
/// host, the line id, the receive time and the line's text; the rest is
/// derived from the text as at ingest.
pub fn stored_result(
    host: &HostId,
    line_id: String,
    received_at: i64,
    text: &str,
) -> Result<ResultLog, serde_json::Error> {
    rebuilt(text, |line, raw| {
        result_record(host, line, raw, line_id, received_at)
    })
}

/// A status line's record rebuilt from what a store kept of it (see
/// [`stored_result`]).
pub fn stored_status(
    host: &HostId,
    line_id: String,
    received_at: i64,
    text: &str,
) -> Result<StatusLog, serde_json::Error> {
    rebuilt(text, |line, raw| {
        status_record(host, line, raw, line_id, received_at)
    })
}

/// `build`'s record from a stored line's text, parsed once to read it
/// and kept once as it is.
fn rebuilt<T>(
    text: &str,
    build: impl FnOnce(&Canon<'_>, Box<RawValue>) -> T,
) -> Result<T, serde_json::Error> {
    let line = Canon::parse(text)?;
    Ok(build(&line, RawValue::from_string(text.to_owned())?))
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

    /// The one-pass reading and the strict one store the same records:
    /// same ids, same text, same fields.
    #[test]
    fn one_pass_and_strict_readings_agree() {
        let body = br#"{"node_key":"k","log_type":"result","data":[
            {"name":"q","hostIdentifier":"h\u00e9","unixTime":"17","columns":{"b":"2","a":"1"},"action":"added","decorations":{"x":"y"}},
            {"name":"q","unixTime":17,"diffResults":{"added":[{"a":"1"},{"a":"2"}],"removed":[{"a":"0"}]},"counter":2},
            {"name":"s","unixTime":1.5e9,"snapshot":[{"k":"v"}],"action":"snapshot"},
            {"action":"added","columns":{"a":"1","b":"2"},"unixTime":"17","name":"q","hostIdentifier":"h\u00e9","decorations":{"x":"y"}}]}"#;
        let host = HostId::from_identity("same");
        let post = crate::wire::read_log_post(body).expect("well formed");
        assert_eq!(post.node_key.as_deref(), Some("k"));
        let fast = records_of(&host, post.log_type, post.lines, 5_000);
        let strict = records(
            &host,
            parse_log(parse_object(body).unwrap()).unwrap(),
            5_000,
        );
        assert_eq!(fast, strict);
        let LogRecords::Results(r) = fast else {
            panic!("expected results")
        };
        assert_eq!(r[0].line_id[..32], r[3].line_id[..32]);
        assert_eq!((r[1].kind, r[1].rows), (ResultKind::Batched, 3));
        assert_eq!((r[2].kind, r[2].rows), (ResultKind::Snapshot, 1));
        assert_eq!(r[0].unix_time, 17);
        assert_eq!(r[0].line.value()["hostIdentifier"], "h\u{e9}");
        for bad in [
            &br#"{"log_type":"nope","data":[]}"#[..],
            br#"{"log_type":"result","data":[1]}"#,
            br#"{"log_type":"result","node_key":5,"data":[]}"#,
            br#"{"log_type":"result","log_type":"status","data":[]}"#,
            br#"{"data":[]}"#,
            b"[]",
        ] {
            assert!(
                crate::wire::read_log_post(bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
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
