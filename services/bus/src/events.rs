//! Typed publishing over any [`Bus`] and the conversions between the
//! domain model and the bus messages of `gatehouse/v1/events.proto`.
//!
//! Subjects and payload types are declared once in
//! [`gatehouse_proto::topics`]; this module only moves them over the port,
//! so no role hand-builds a subject or encodes a payload itself.

use bytes::Bytes;
use gatehouse_core::HostId;
use gatehouse_core::logline::LogLine;
use gatehouse_core::model::{
    CampaignResult, Host, HostDetails, LogRecords, ResultKind, ResultLog, StatusLog,
};
use gatehouse_core::ports::{Bus, BusError};
use gatehouse_proto::topics::{Topic, TopicFamily};
use gatehouse_proto::v1 as pb;
use serde_json::{Map, Value};

/// Publishes `message` on `topic`.
pub async fn publish<M: prost::Message + Default>(
    bus: &dyn Bus,
    topic: &Topic<M>,
    message: &M,
) -> Result<(), BusError> {
    bus.publish(topic.subject(), topic.encode(message)).await
}

/// Publishes `message` on the member `key` of `family`.
pub async fn publish_to<M: prost::Message + Default>(
    bus: &dyn Bus,
    family: &TopicFamily<M>,
    key: impl std::fmt::Display,
    message: &M,
) -> Result<(), BusError> {
    bus.publish(&family.subject(key), family.encode(message))
        .await
}

/// A bus message that does not describe a valid domain value.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("undecodable message: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("{field} is not valid: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn host_id(field: &'static str, s: &str) -> Result<HostId, EventError> {
    HostId::parse(s).ok_or_else(|| EventError::Invalid {
        field,
        reason: format!("{s:?} is not a host id"),
    })
}

fn json_object(field: &'static str, b: &[u8]) -> Result<Map<String, Value>, EventError> {
    if b.is_empty() {
        return Ok(Map::new());
    }
    serde_json::from_slice(b).map_err(|e| EventError::Invalid {
        field,
        reason: e.to_string(),
    })
}

pub fn host_record(h: &Host) -> pb::HostRecord {
    pb::HostRecord {
        id: h.id.to_string(),
        identity: h.identity.clone(),
        host_identifier: h.host_identifier.clone(),
        hostname: h.hostname.clone(),
        platform: h.platform.clone(),
        platform_type: h.platform_type.clone(),
        os_name: h.os_name.clone(),
        os_version: h.os_version.clone(),
        osquery_version: h.osquery_version.clone(),
        details_json: h.details.as_json().as_bytes().to_vec().into(),
        labels: h.labels.clone(),
        enrolled_at: h.enrolled_at,
        last_enrolled_at: h.last_enrolled_at,
        enroll_count: h.enroll_count,
        key_epoch: h.key_epoch,
        key_revoked: h.key_revoked,
        last_seen: h.last_seen,
        last_ip: h.last_ip.clone(),
        config_hash: h.config_hash.clone(),
        config_generation: h.config_generation,
        dynamic_labels: h.dynamic_labels.clone(),
        label_checks: h.label_checks.clone(),
    }
}

pub fn host_from_record(r: pb::HostRecord) -> Result<Host, EventError> {
    Ok(Host {
        id: host_id("host.id", &r.id)?,
        details: HostDetails::from_map(&json_object("host.details_json", &r.details_json)?),
        identity: r.identity,
        host_identifier: r.host_identifier,
        hostname: r.hostname,
        platform: r.platform,
        platform_type: r.platform_type,
        os_name: r.os_name,
        os_version: r.os_version,
        osquery_version: r.osquery_version,
        labels: r.labels,
        enrolled_at: r.enrolled_at,
        last_enrolled_at: r.last_enrolled_at,
        enroll_count: r.enroll_count,
        key_epoch: r.key_epoch,
        key_revoked: r.key_revoked,
        last_seen: r.last_seen,
        last_ip: r.last_ip,
        config_hash: r.config_hash,
        config_generation: r.config_generation,
        dynamic_labels: r.dynamic_labels,
        label_checks: r.label_checks,
    })
}

pub fn campaign_answer(r: &CampaignResult) -> pb::CampaignAnswer {
    pb::CampaignAnswer {
        campaign_id: r.campaign_id.clone(),
        host_id: r.host_id.to_string(),
        rows_json: serde_json::to_vec(&r.rows).unwrap_or_default().into(),
        status: r.status,
        message: r.message.clone(),
        stats_json: serde_json::to_vec(&r.stats).unwrap_or_default().into(),
        received_at: r.received_at,
    }
}

pub fn campaign_result(a: pb::CampaignAnswer) -> Result<CampaignResult, EventError> {
    let rows = if a.rows_json.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice(&a.rows_json).map_err(|e| EventError::Invalid {
            field: "answer.rows_json",
            reason: e.to_string(),
        })?
    };
    Ok(CampaignResult {
        host_id: host_id("answer.host_id", &a.host_id)?,
        stats: json_object("answer.stats_json", &a.stats_json)?,
        campaign_id: a.campaign_id,
        rows,
        status: a.status,
        message: a.message,
        received_at: a.received_at,
    })
}

fn result_kind(k: ResultKind) -> pb::ResultKind {
    match k {
        ResultKind::Event => pb::ResultKind::Event,
        ResultKind::Snapshot => pb::ResultKind::Snapshot,
        ResultKind::Batched => pb::ResultKind::Batched,
        ResultKind::Other => pb::ResultKind::Other,
    }
}

fn result_kind_from(k: i32) -> Result<ResultKind, EventError> {
    match pb::ResultKind::try_from(k) {
        Ok(pb::ResultKind::Event) => Ok(ResultKind::Event),
        Ok(pb::ResultKind::Snapshot) => Ok(ResultKind::Snapshot),
        Ok(pb::ResultKind::Batched) => Ok(ResultKind::Batched),
        Ok(pb::ResultKind::Other) => Ok(ResultKind::Other),
        Ok(pb::ResultKind::Unspecified) | Err(_) => Err(EventError::Invalid {
            field: "result.kind",
            reason: format!("{k} is not a result kind"),
        }),
    }
}

fn json_line(field: &'static str, b: &[u8]) -> Result<LogLine, EventError> {
    let invalid = |reason: String| EventError::Invalid { field, reason };
    let text = String::from_utf8(b.to_vec()).map_err(|e| invalid(e.to_string()))?;
    LogLine::from_json(text).map_err(|e| invalid(e.to_string()))
}

/// One agent log POST as the log stream carries it.
pub fn log_batch(records: &LogRecords) -> pb::LogBatch {
    let lines = match records {
        LogRecords::Results(rs) => pb::log_batch::Lines::Results(pb::ResultLines {
            lines: rs
                .iter()
                .map(|r| pb::ResultLine {
                    host_id: r.host_id.to_string(),
                    name: r.name.clone(),
                    unix_time: r.unix_time,
                    kind: result_kind(r.kind).into(),
                    action: r.action.clone(),
                    rows: r.rows,
                    line_id: r.line_id.clone(),
                    received_at: r.received_at,
                    line_json: r.line.json().as_bytes().to_vec().into(),
                })
                .collect(),
        }),
        LogRecords::Status(ss) => pb::log_batch::Lines::Status(pb::StatusLines {
            lines: ss
                .iter()
                .map(|s| pb::StatusLine {
                    host_id: s.host_id.to_string(),
                    unix_time: s.unix_time,
                    severity: s.severity,
                    message: s.message.clone(),
                    line_id: s.line_id.clone(),
                    received_at: s.received_at,
                    line_json: s.line.json().as_bytes().to_vec().into(),
                })
                .collect(),
        }),
    };
    pb::LogBatch { lines: Some(lines) }
}

/// The lines of a log stream batch.
pub fn log_records(b: pb::LogBatch) -> Result<LogRecords, EventError> {
    match b.lines {
        Some(pb::log_batch::Lines::Results(rs)) => rs
            .lines
            .into_iter()
            .map(|r| {
                Ok(ResultLog {
                    host_id: host_id("result.host_id", &r.host_id)?,
                    kind: result_kind_from(r.kind)?,
                    line: json_line("result.line_json", &r.line_json)?,
                    name: r.name,
                    unix_time: r.unix_time,
                    action: r.action,
                    rows: r.rows,
                    line_id: r.line_id,
                    received_at: r.received_at,
                })
            })
            .collect::<Result<_, _>>()
            .map(LogRecords::Results),
        Some(pb::log_batch::Lines::Status(ss)) => ss
            .lines
            .into_iter()
            .map(|s| {
                Ok(StatusLog {
                    host_id: host_id("status.host_id", &s.host_id)?,
                    line: json_line("status.line_json", &s.line_json)?,
                    unix_time: s.unix_time,
                    severity: s.severity,
                    message: s.message,
                    line_id: s.line_id,
                    received_at: s.received_at,
                })
            })
            .collect::<Result<_, _>>()
            .map(LogRecords::Status),
        None => Err(EventError::Invalid {
            field: "batch.lines",
            reason: "neither result nor status lines".into(),
        }),
    }
}

/// A log batch's payload on the stream and in the forward log: the
/// `gatehouse.v1.LogBatch` of its topic.
pub fn encode_log_batch(records: &LogRecords) -> Bytes {
    match records {
        LogRecords::Results(_) => gatehouse_proto::topics::LOG_RESULTS.encode(&log_batch(records)),
        LogRecords::Status(_) => gatehouse_proto::topics::LOG_STATUS.encode(&log_batch(records)),
    }
}

/// What a forward-log entry holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Forwarded {
    Logs(LogRecords),
    /// Operator events (`audit`, `alert`), each as its JSON.
    Events {
        kind: String,
        events: Vec<serde_json::Value>,
    },
}

/// A stored log batch as a forward-log entry.
pub fn encode_forward_logs(records: &LogRecords) -> Bytes {
    Bytes::from(prost::Message::encode_to_vec(&pb::ForwardPayload {
        body: Some(pb::forward_payload::Body::Logs(log_batch(records))),
    }))
}

/// Operator events (`kind`: `audit` or `alert`) as a forward-log entry.
pub fn encode_forward_events<T: serde::Serialize>(kind: &str, events: &[T]) -> Bytes {
    Bytes::from(prost::Message::encode_to_vec(&pb::ForwardPayload {
        body: Some(pb::forward_payload::Body::Events(pb::OperatorEvents {
            kind: kind.to_owned(),
            events_json: events
                .iter()
                .map(|e| serde_json::to_vec(e).unwrap_or_default().into())
                .collect(),
        })),
    }))
}

/// Decodes a forward-log entry.
pub fn decode_forward(payload: Bytes) -> Result<Forwarded, EventError> {
    let p = <pb::ForwardPayload as prost::Message>::decode(payload)?;
    match p.body {
        Some(pb::forward_payload::Body::Logs(b)) => log_records(b).map(Forwarded::Logs),
        Some(pb::forward_payload::Body::Events(e)) => Ok(Forwarded::Events {
            kind: e.kind,
            events: e
                .events_json
                .iter()
                .map(|j| {
                    serde_json::from_slice(j).map_err(|err| EventError::Invalid {
                        field: "events_json",
                        reason: err.to_string(),
                    })
                })
                .collect::<Result<_, _>>()?,
        }),
        None => Err(EventError::Invalid {
            field: "body",
            reason: "neither logs nor events".into(),
        }),
    }
}

/// Decodes a log stream payload: a `LogBatch`, or the JSON `LogRecords`
/// that edges before the protobuf payload appended (still in a stream
/// during a rolling upgrade; a protobuf `LogBatch` never starts with `{`).
pub fn decode_log_batch(payload: Bytes) -> Result<LogRecords, EventError> {
    if payload.first() == Some(&b'{') {
        return serde_json::from_slice(&payload).map_err(|e| EventError::Invalid {
            field: "batch",
            reason: format!("legacy JSON batch: {e}"),
        });
    }
    log_records(<pb::LogBatch as prost::Message>::decode(payload)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_survives_the_trip_through_its_bus_record() {
        let mut details = Map::new();
        details.insert(
            "system_info".into(),
            serde_json::json!({"hostname": "web-01", "uuid": "U1"}),
        );
        let h = Host {
            id: HostId::from_identity("hw:U1"),
            identity: "hw:U1".into(),
            host_identifier: "web-01".into(),
            hostname: "web-01".into(),
            platform: "linux".into(),
            platform_type: "9".into(),
            os_name: "Ubuntu".into(),
            os_version: "22.04".into(),
            osquery_version: "5.23.1".into(),
            details: HostDetails::from_map(&details),
            labels: vec!["servers".into()],
            enrolled_at: 1,
            last_enrolled_at: 2,
            enroll_count: 3,
            key_epoch: 4,
            key_revoked: true,
            last_seen: 5,
            last_ip: "10.0.0.1".into(),
            config_hash: "abc".into(),
            config_generation: 6,
            dynamic_labels: vec!["has-docker".into()],
            label_checks: [("has-docker".to_owned(), 7)].into(),
        };
        let back = host_from_record(host_record(&h)).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&h).unwrap()
        );
    }

    #[test]
    fn an_answer_survives_the_trip_and_a_bad_host_id_is_named() {
        let r = CampaignResult {
            campaign_id: "c1".into(),
            host_id: HostId::from_identity("hw:U1"),
            rows: vec![serde_json::json!({"a": "1"})],
            status: 0,
            message: String::new(),
            stats: Map::new(),
            received_at: 9,
        };
        let back = campaign_result(campaign_answer(&r)).unwrap();
        assert_eq!(back, r);
        let mut bad = campaign_answer(&r);
        bad.host_id = "nope".into();
        let e = campaign_result(bad).unwrap_err();
        assert!(matches!(
            e,
            EventError::Invalid {
                field: "answer.host_id",
                ..
            }
        ));
    }

    fn sample_batches() -> Vec<LogRecords> {
        let host = HostId::from_identity("hw:log-batch");
        let results = LogRecords::Results(vec![ResultLog {
            host_id: host.clone(),
            name: "pack/it/users".into(),
            unix_time: 1_717_496_431,
            kind: ResultKind::Batched,
            action: "added".into(),
            rows: 2,
            line_id: "abc.0".into(),
            received_at: 1_717_496_432_000,
            line: serde_json::json!({"name": "users", "diffResults": {"added": [{"u": "1"}, {"u": "2"}]}}).into(),
        }]);
        let status = LogRecords::Status(vec![StatusLog {
            host_id: host,
            unix_time: 1_717_496_431,
            severity: 2,
            message: "query failed".into(),
            line_id: "def.0".into(),
            received_at: 1_717_496_432_000,
            line: serde_json::json!({"s": 2, "m": "query failed"}).into(),
        }]);
        vec![results, status]
    }

    /// A batch crosses the log stream unchanged, and a JSON batch appended
    /// by an older edge still reads.
    #[test]
    fn log_batches_round_trip_and_legacy_json_reads() {
        for records in sample_batches() {
            let bytes = gatehouse_proto::topics::LOG_RESULTS.encode(&log_batch(&records));
            assert_ne!(bytes.first(), Some(&b'{'));
            assert_eq!(decode_log_batch(bytes).unwrap(), records);
            let legacy = Bytes::from(serde_json::to_vec(&records).unwrap());
            assert_eq!(decode_log_batch(legacy).unwrap(), records);
        }
    }

    #[test]
    fn an_invalid_log_batch_names_what_is_wrong() {
        let e = decode_log_batch(Bytes::from_static(b"not a batch")).unwrap_err();
        assert!(matches!(e, EventError::Decode(_)), "{e}");
        let empty = gatehouse_proto::topics::LOG_RESULTS.encode(&pb::LogBatch { lines: None });
        assert_eq!(
            decode_log_batch(empty).unwrap_err().to_string(),
            "batch.lines is not valid: neither result nor status lines"
        );
        let mut bad = log_batch(&sample_batches()[0]);
        if let Some(pb::log_batch::Lines::Results(r)) = &mut bad.lines {
            r.lines[0].kind = 0;
        }
        let e = decode_log_batch(gatehouse_proto::topics::LOG_RESULTS.encode(&bad)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "result.kind is not valid: 0 is not a result kind"
        );
    }
}
