//! The typed host RPC over any [`Bus`]: subjects, and the client edge and
//! api use to reach the actor that owns a host.
//!
//! A request for host `h` goes to `gatehouse.host.<shard(h)>`; whoever owns
//! that shard answers. In the all-in-one the client asks its own hostd
//! first, without the bus ([`LocalHosts`], ADR 0054), and uses the bus
//! only while that route is closed. Until its budget runs out (well inside the agent's
//! 16 s request timeout) the client retries "no responders" and "shard
//! moved" (a shard between owners) with back-off, and a timed-out attempt
//! (a stalled owner whose lease is about to pass on). Every host operation
//! is safe to repeat: reads and touches change nothing twice, the first
//! answer to a live query wins, and a repeated enrollment only moves the
//! key epoch once more (the agent uses the key it receives). Keep the
//! per-attempt timeout well under the budget so a retry fits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse_core::ports::{Bus, BusError};
use gatehouse_core::{HostId, shard_of};
use gatehouse_proto::topics::HOST_REQUESTS;
use gatehouse_proto::v1::{
    FailureKind, HostReply, HostRequest, Ok as OkReply, ReadOk, host_reply, host_request,
};

use crate::answers::Answers;
use prost::Message;

/// The campaign broadcasts for `hosts`: one message per shard that has
/// targets, so no message grows with the campaign (NATS refuses payloads
/// over 1 MB by default; 100,000 targets in one message would be 3.4 MB).
pub fn campaign_messages(
    campaign_id: &str,
    hosts: &[HostId],
    shards: u32,
) -> Vec<gatehouse_proto::v1::CampaignCreated> {
    let mut by_shard: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
    for h in hosts {
        by_shard
            .entry(shard_of(h, shards))
            .or_default()
            .push(h.to_string());
    }
    by_shard
        .into_values()
        .map(|host_ids| gatehouse_proto::v1::CampaignCreated {
            campaign_id: campaign_id.to_owned(),
            host_ids,
        })
        .collect()
}

/// The subject of one shard's host requests.
pub fn host_subject(shard: u32) -> String {
    HOST_REQUESTS.subject(shard)
}

/// A failure reply's kind; an unset kind (an older hostd) counts as
/// unavailable.
pub fn failure_kind(f: &gatehouse_proto::v1::Failure) -> FailureKind {
    FailureKind::try_from(f.kind).unwrap_or(FailureKind::Unspecified)
}

/// Host requests this process answers itself, without the bus: the
/// all-in-one's hostd, which serves every shard (ADR 0054). A cluster
/// member's shards move between processes, so it is always asked over
/// the bus.
#[async_trait::async_trait]
pub trait LocalHosts: Send + Sync + std::fmt::Debug + 'static {
    /// Runs `req` on its host's actor here; gives it back when this
    /// process does not answer host requests now (not started yet, or
    /// stopping): the caller asks over the bus.
    async fn route(&self, req: HostRequest) -> Result<host_reply::Result, HostRequest>;
}

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("host service sent an undecodable reply: {0}")]
    Decode(String),
    #[error("host service sent an empty reply")]
    Empty,
}

/// Client for the host RPC; cheap to clone.
#[derive(Clone)]
pub struct HostClient {
    bus: Arc<dyn Bus>,
    shards: u32,
    timeout: Duration,
    budget: Duration,
    /// Calls repeated so far (see [`HostClient::retries`]).
    retries: Arc<std::sync::atomic::AtomicU64>,
    /// Reads and touches answered without asking (`None`: always ask).
    answers: Option<Arc<Answers>>,
    /// This process's own hostd, asked before the bus (`None`: the bus).
    local: Option<Arc<dyn LocalHosts>>,
}

impl std::fmt::Debug for HostClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostClient")
            .field("shards", &self.shards)
            .finish()
    }
}

impl HostClient {
    /// `timeout` bounds one attempt; `budget` bounds all retries.
    pub fn new(bus: Arc<dyn Bus>, shards: u32, timeout: Duration, budget: Duration) -> Self {
        Self {
            bus,
            shards,
            timeout,
            budget,
            retries: Arc::default(),
            answers: None,
            local: None,
        }
    }

    /// This client asks `local` (this process's hostd) first, the bus only
    /// when `local` does not answer now.
    #[must_use]
    pub fn with_local(mut self, local: Arc<dyn LocalHosts>) -> Self {
        self.local = Some(local);
        self
    }

    /// This client answers empty reads and touches itself while the
    /// host's actor said it may ([`Answers`]); the table should already
    /// follow the change announcements ([`Answers::follow`]).
    #[must_use]
    pub fn with_answers(mut self, answers: Arc<Answers>) -> Self {
        self.answers = Some(answers);
        self
    }

    /// How many times this client (and its clones) repeated a call: no
    /// hostd serving the shard yet, a shard moving, or an owner too slow.
    pub fn retries(&self) -> u64 {
        self.retries.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn retrying(&self) {
        self.retries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// Runs `op` on `host`'s actor, or answers it here: an empty read or
    /// an accepted touch while the actor's last word on them holds.
    pub async fn call(
        &self,
        host: &HostId,
        key_epoch: u64,
        op: host_request::Op,
    ) -> Result<host_reply::Result, RpcError> {
        let Some(answers) = &self.answers else {
            return self.ask(host, key_epoch, op).await;
        };
        let quiet_op = matches!(op, host_request::Op::Read(_) | host_request::Op::Touch(_));
        if quiet_op && answers.quiet(host, key_epoch) {
            return Ok(match op {
                host_request::Op::Read(_) => host_reply::Result::Read(ReadOk::default()),
                _ => host_reply::Result::Ok(OkReply::default()),
            });
        }
        if !quiet_op {
            // What this client changes itself it forgets at once (others
            // hear it from hostd).
            if matches!(
                op,
                host_request::Op::Enroll(_)
                    | host_request::Op::RotateKey(_)
                    | host_request::Op::DeleteHost(_)
            ) {
                answers.forget(std::slice::from_ref(host));
            }
            return self.ask(host, key_epoch, op).await;
        }
        let ticket = answers.ticket(host);
        let reply = self.ask(host, key_epoch, op).await?;
        let quiet = match &reply {
            host_reply::Result::Read(r) if r.queries.is_empty() && r.discovery.is_empty() => {
                r.quiet_ms
            }
            host_reply::Result::Ok(o) => o.quiet_ms,
            _ => 0,
        };
        answers.remember(host, key_epoch, ticket, Duration::from_millis(quiet));
        Ok(reply)
    }

    async fn ask(
        &self,
        host: &HostId,
        key_epoch: u64,
        op: host_request::Op,
    ) -> Result<host_reply::Result, RpcError> {
        let mut req = HostRequest::new(host, key_epoch, op);
        let start = Instant::now();
        if let Some(local) = &self.local {
            // Bounded as the bus's attempts together are (an actor that
            // starts from a stalled store).
            match tokio::time::timeout(self.budget, local.route(req)).await {
                Ok(Ok(result)) => return Ok(result),
                Ok(Err(not_here)) => req = not_here,
                Err(_) => {
                    return Err(BusError::Timeout(format!("host {host} (in process)")).into());
                }
            }
        }
        let payload = Bytes::from(req.encode_to_vec());
        let subject = host_subject(shard_of(host, self.shards));
        let mut backoff = Duration::from_millis(50);
        loop {
            let remaining = self.budget.saturating_sub(start.elapsed());
            match self
                .bus
                .request(
                    &subject,
                    payload.clone(),
                    self.timeout.min(remaining.max(Duration::from_millis(1))),
                )
                .await
            {
                Ok(bytes) => {
                    let reply =
                        HostReply::decode(bytes).map_err(|e| RpcError::Decode(e.to_string()))?;
                    match reply.result {
                        Some(host_reply::Result::Failure(f))
                            if failure_kind(&f) == FailureKind::ShardMoved
                                && start.elapsed() + backoff < self.budget =>
                        {
                            tracing::debug!(subject = %subject, "shard moving, retrying");
                            self.retrying();
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(1));
                        }
                        other => return other.ok_or(RpcError::Empty),
                    }
                }
                Err(BusError::NoResponders(s)) if start.elapsed() + backoff < self.budget => {
                    tracing::debug!(subject = %s, "no responders, retrying");
                    self.retrying();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                // A stalled owner: its lease expires and another hostd
                // takes the shard. Host operations are safe to repeat
                // (reads and touches; answers are first-wins; a repeated
                // enrollment only moves the key epoch once more).
                Err(BusError::Timeout(s)) if start.elapsed() + backoff < self.budget => {
                    tracing::debug!(subject = %s, "host request timed out, retrying");
                    self.retrying();
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_campaign_is_broadcast_in_bounded_messages() {
        let hosts: Vec<HostId> = (0..100_000)
            .map(|n| HostId::from_identity(&format!("hw:{n}")))
            .collect();
        let msgs = campaign_messages("c1", &hosts, 1024);
        assert_eq!(msgs.len(), 1024);
        assert_eq!(
            msgs.iter().map(|m| m.host_ids.len()).sum::<usize>(),
            100_000
        );
        let largest = msgs
            .iter()
            .map(|m| m.encode_to_vec().len())
            .max()
            .unwrap_or(0);
        assert!(largest < 16 * 1024, "largest broadcast is {largest} bytes");
        assert_eq!(campaign_messages("c2", &hosts[..3], 1024).len(), 3);
    }
}
