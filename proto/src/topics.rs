//! Every bus subject and the one protobuf message it carries, declared
//! once. Publishers encode and subscribers decode through these typed
//! topics, so a subject can never carry a payload its readers do not
//! expect, and adding a bus message is one message in `gatehouse/v1/*.proto`
//! plus one constant here.
//!
//! Subjects follow NATS rules (`.`-separated tokens, `*` one token); the
//! in-process bus implements the same rules, so the topics are the same in
//! the all-in-one and in a cluster.

use std::marker::PhantomData;

use bytes::Bytes;
use prost::Message;

use crate::v1;

/// One subject carrying messages of type `M`.
#[derive(Debug)]
pub struct Topic<M> {
    subject: &'static str,
    _message: PhantomData<fn() -> M>,
}

impl<M: Message + Default> Topic<M> {
    pub const fn new(subject: &'static str) -> Self {
        Self {
            subject,
            _message: PhantomData,
        }
    }

    pub const fn subject(&self) -> &'static str {
        self.subject
    }

    pub fn encode(&self, message: &M) -> Bytes {
        Bytes::from(message.encode_to_vec())
    }

    pub fn decode(&self, payload: Bytes) -> Result<M, prost::DecodeError> {
        M::decode(payload)
    }
}

/// A family of subjects `<prefix>.<key>` carrying messages of type `M`
/// (one subject per shard, per campaign...).
#[derive(Debug)]
pub struct TopicFamily<M> {
    prefix: &'static str,
    _message: PhantomData<fn() -> M>,
}

impl<M: Message + Default> TopicFamily<M> {
    pub const fn new(prefix: &'static str) -> Self {
        Self {
            prefix,
            _message: PhantomData,
        }
    }

    /// The subject of one member.
    pub fn subject(&self, key: impl std::fmt::Display) -> String {
        format!("{}.{key}", self.prefix)
    }

    /// The pattern matching every member.
    pub fn every(&self) -> String {
        format!("{}.*", self.prefix)
    }

    pub fn encode(&self, message: &M) -> Bytes {
        Bytes::from(message.encode_to_vec())
    }

    pub fn decode(&self, payload: Bytes) -> Result<M, prost::DecodeError> {
        M::decode(payload)
    }
}

/// Requests to the actor of a host, on the subject of its shard
/// (`gatehouse.host.<shard>`); the owner answers with a [`v1::HostReply`].
pub const HOST_REQUESTS: TopicFamily<v1::HostRequest> = TopicFamily::new("gatehouse.host");

/// An operator started a live-query campaign (one message per shard with
/// targets).
pub const CAMPAIGN_CREATED: Topic<v1::CampaignCreated> = Topic::new("gatehouse.events.campaign");

/// The config generation changed.
pub const CONFIG_CHANGED: Topic<v1::ConfigChanged> = Topic::new("gatehouse.events.config");

/// What a hostd's actors would answer some hosts' reads and touches
/// changed (every edge listens and stops answering them itself).
pub const HOSTS_CHANGED: Topic<v1::HostsChanged> = Topic::new("gatehouse.events.hosts");

/// A host enrolled; the rule engines consume it as one queue group.
pub const HOST_ENROLLED: Topic<v1::HostEnrolled> = Topic::new("gatehouse.events.enrolled");

/// Answers to one campaign, once stored (`gatehouse.events.results.<id>`).
pub const CAMPAIGN_ANSWERS: TopicFamily<v1::CampaignAnswer> =
    TopicFamily::new("gatehouse.events.results");

/// A campaign was cancelled (every hostd listens).
pub const CAMPAIGN_CANCELLED: Topic<v1::CampaignCancelled> =
    Topic::new("gatehouse.events.campaign.cancelled");

/// The rule definitions changed.
pub const RULES_CHANGED: Topic<v1::RulesChanged> = Topic::new("gatehouse.events.rules");

/// Result log batches on the durable log stream (JetStream), appended by
/// edges and drained by ingest.
pub const LOG_RESULTS: Topic<v1::LogBatch> = Topic::new("gatehouse.logs.result");

/// Status log batches on the durable log stream.
pub const LOG_STATUS: Topic<v1::LogBatch> = Topic::new("gatehouse.logs.status");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_round_trips_its_message_and_names_its_subjects() {
        let m = v1::ConfigChanged { generation: 7 };
        assert_eq!(CONFIG_CHANGED.decode(CONFIG_CHANGED.encode(&m)), Ok(m));
        assert_eq!(HOST_REQUESTS.subject(12), "gatehouse.host.12");
        assert_eq!(HOST_REQUESTS.every(), "gatehouse.host.*");
        assert_eq!(
            CAMPAIGN_ANSWERS.subject("c1"),
            "gatehouse.events.results.c1"
        );
    }

    #[test]
    fn subjects_are_distinct() {
        let mut all = vec![
            HOST_REQUESTS.every(),
            CAMPAIGN_CREATED.subject().to_owned(),
            CONFIG_CHANGED.subject().to_owned(),
            HOSTS_CHANGED.subject().to_owned(),
            HOST_ENROLLED.subject().to_owned(),
            CAMPAIGN_ANSWERS.every(),
            RULES_CHANGED.subject().to_owned(),
            CAMPAIGN_CANCELLED.subject().to_owned(),
            LOG_RESULTS.subject().to_owned(),
            LOG_STATUS.subject().to_owned(),
        ];
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
