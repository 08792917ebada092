//! Typed publishing over any [`Bus`] and the conversions between the
//! domain model and the bus messages of `gatehouse/v1/events.proto`.
//!
//! Subjects and payload types are declared once in
//! [`gatehouse_proto::topics`]; this module only moves them over the port,
//! so no role hand-builds a subject or encodes a payload itself.

use gatehouse_core::HostId;
use gatehouse_core::model::{CampaignResult, Host};
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
        details_json: serde_json::to_vec(&h.details).unwrap_or_default().into(),
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
        details: json_object("host.details_json", &r.details_json)?,
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
            details,
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
}
