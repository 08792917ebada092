//! The shard-lease port: who is a live hostd member, and who holds each
//! shard, with fencing tokens. Two adapters pass the same conformance
//! suite (`conformance::leases`):
//!
//! - [`NatsLeases`]: JetStream KV, for the cluster. A lease is key `s<n>`
//!   in the lease bucket: acquiring is a `create` (only if absent), renewing
//!   an `update` that must match the last revision, and the bucket's max age
//!   drops a lease that stops being renewed. The fencing token is the KV
//!   revision, the stream's sequence number, so a shard's next holder always
//!   gets a larger token than anything its predecessor held. Members
//!   heartbeat into a bucket whose entries expire after the member TTL.
//! - [`InProcLeases`]: the same rules in memory, with expiry read from a
//!   [`Clock`], for one process and for tests that move time instead of
//!   waiting for it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use async_trait::async_trait;
use futures_util::TryStreamExt;
use gatehouse_core::time::Clock;

pub const LEASE_BUCKET: &str = "gatehouse_shard_leases";
pub const MEMBER_BUCKET: &str = "gatehouse_hostd_members";

#[derive(Debug, thiserror::Error)]
#[error("shard leases: {0}")]
pub struct LeaseError(pub String);

fn err(e: impl std::fmt::Display) -> LeaseError {
    LeaseError(e.to_string())
}

/// The outcome of renewing a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Still held; the new fencing token.
    Renewed(u64),
    /// Taken by someone else (or expired and taken): stop serving it.
    Lost,
}

/// How long leases and memberships live without renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTtls {
    /// A lease not renewed for this long expires (the crash takeover bound).
    pub lease: Duration,
    /// A member not heard from for this long is gone.
    pub member: Duration,
}

/// Shard ownership and membership, shared by every hostd of a cluster.
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Announces `member` as live until the member TTL passes.
    async fn heartbeat(&self, member: &str) -> Result<(), LeaseError>;
    /// Removes `member` at once (a clean stop).
    async fn leave(&self, member: &str) -> Result<(), LeaseError>;
    /// Live members, sorted.
    async fn members(&self) -> Result<Vec<String>, LeaseError>;
    /// Takes `shard` for `holder` if nobody holds it: its fencing token.
    async fn acquire(&self, shard: u32, holder: &str) -> Result<Option<u64>, LeaseError>;
    /// Renews `shard`, held with `token`.
    async fn renew(&self, shard: u32, holder: &str, token: u64) -> Result<Renewal, LeaseError>;
    /// Gives `shard` up if it is still held with `token`; false when
    /// someone else holds it (nothing of ours to release).
    async fn release(&self, shard: u32, token: u64) -> Result<bool, LeaseError>;
}

fn key(shard: u32) -> String {
    format!("s{shard}")
}

/// Leases in JetStream KV.
pub struct NatsLeases {
    leases: kv::Store,
    members: kv::Store,
}

impl std::fmt::Debug for NatsLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NatsLeases")
    }
}

async fn bucket(
    js: &async_nats::jetstream::Context,
    name: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<kv::Store, LeaseError> {
    if let Ok(s) = js.get_key_value(name).await {
        return Ok(s);
    }
    js.create_key_value(kv::Config {
        bucket: name.into(),
        history: 1,
        max_age,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .map_err(err)
}

impl NatsLeases {
    /// Opens (creating if needed) the buckets, with `replicas` copies (3
    /// in production).
    pub async fn open(
        client: async_nats::Client,
        ttls: LeaseTtls,
        replicas: usize,
    ) -> Result<Self, LeaseError> {
        let js = async_nats::jetstream::new(client);
        Ok(Self {
            leases: bucket(&js, LEASE_BUCKET, ttls.lease, replicas).await?,
            members: bucket(&js, MEMBER_BUCKET, ttls.member, replicas).await?,
        })
    }
}

#[async_trait]
impl LeaseStore for NatsLeases {
    async fn heartbeat(&self, member: &str) -> Result<(), LeaseError> {
        self.members
            .put(member, bytes::Bytes::from(member.to_owned()))
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn leave(&self, member: &str) -> Result<(), LeaseError> {
        self.members.delete(member).await.map_err(err)
    }

    async fn members(&self) -> Result<Vec<String>, LeaseError> {
        let keys: BTreeSet<String> = self
            .members
            .keys()
            .await
            .map_err(err)?
            .try_collect()
            .await
            .map_err(err)?;
        Ok(keys.into_iter().collect())
    }

    async fn acquire(&self, shard: u32, holder: &str) -> Result<Option<u64>, LeaseError> {
        match self
            .leases
            .create(key(shard), bytes::Bytes::from(holder.to_owned()))
            .await
        {
            Ok(rev) => Ok(Some(rev)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(err(e)),
        }
    }

    async fn renew(&self, shard: u32, holder: &str, token: u64) -> Result<Renewal, LeaseError> {
        match self
            .leases
            .update(key(shard), bytes::Bytes::from(holder.to_owned()), token)
            .await
        {
            Ok(rev) => Ok(Renewal::Renewed(rev)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(Renewal::Lost),
            Err(e) => Err(err(e)),
        }
    }

    async fn release(&self, shard: u32, token: u64) -> Result<bool, LeaseError> {
        match self
            .leases
            .delete_expect_revision(key(shard), Some(token))
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(err(e)),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Shard -> (holder, token, expires at ms).
    leases: BTreeMap<u32, (String, u64, i64)>,
    /// Member -> expires at ms.
    members: BTreeMap<String, i64>,
    /// The last token handed out: tokens only grow.
    last_token: u64,
}

/// Leases in memory: the same rules as [`NatsLeases`], with expiry read
/// from a clock.
#[derive(Debug, Clone)]
pub struct InProcLeases {
    state: Arc<Mutex<State>>,
    ttls: LeaseTtls,
    clock: Arc<dyn Clock>,
}

impl InProcLeases {
    pub fn new(ttls: LeaseTtls, clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Arc::default(),
            ttls,
            clock,
        }
    }

    fn ms(d: Duration) -> i64 {
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    }

    /// The state with everything expired at `now` removed.
    fn live(&self) -> Result<(std::sync::MutexGuard<'_, State>, i64), LeaseError> {
        let now = self.clock.now_ms();
        let mut s = self
            .state
            .lock()
            .map_err(|_| LeaseError("lease state poisoned".into()))?;
        s.leases.retain(|_, (_, _, until)| *until > now);
        s.members.retain(|_, until| *until > now);
        Ok((s, now))
    }
}

#[async_trait]
impl LeaseStore for InProcLeases {
    async fn heartbeat(&self, member: &str) -> Result<(), LeaseError> {
        let (mut s, now) = self.live()?;
        s.members.insert(
            member.to_owned(),
            now.saturating_add(Self::ms(self.ttls.member)),
        );
        Ok(())
    }

    async fn leave(&self, member: &str) -> Result<(), LeaseError> {
        let (mut s, _) = self.live()?;
        s.members.remove(member);
        Ok(())
    }

    async fn members(&self) -> Result<Vec<String>, LeaseError> {
        let (s, _) = self.live()?;
        Ok(s.members.keys().cloned().collect())
    }

    async fn acquire(&self, shard: u32, holder: &str) -> Result<Option<u64>, LeaseError> {
        let (mut s, now) = self.live()?;
        if s.leases.contains_key(&shard) {
            return Ok(None);
        }
        s.last_token += 1;
        let token = s.last_token;
        let until = now.saturating_add(Self::ms(self.ttls.lease));
        s.leases.insert(shard, (holder.to_owned(), token, until));
        Ok(Some(token))
    }

    async fn renew(&self, shard: u32, holder: &str, token: u64) -> Result<Renewal, LeaseError> {
        let (mut s, now) = self.live()?;
        if s.leases.get(&shard).map(|l| l.1) != Some(token) {
            return Ok(Renewal::Lost);
        }
        s.last_token += 1;
        let next = s.last_token;
        let until = now.saturating_add(Self::ms(self.ttls.lease));
        s.leases.insert(shard, (holder.to_owned(), next, until));
        Ok(Renewal::Renewed(next))
    }

    async fn release(&self, shard: u32, token: u64) -> Result<bool, LeaseError> {
        let (mut s, _) = self.live()?;
        if s.leases.get(&shard).map(|l| l.1) == Some(token) {
            s.leases.remove(&shard);
            Ok(true)
        } else {
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::time::ShiftedClock;

    #[tokio::test]
    async fn the_in_process_leases_pass_the_conformance_suite() {
        let clock = Arc::new(ShiftedClock::new());
        let ttls = LeaseTtls {
            lease: Duration::from_secs(15),
            member: Duration::from_secs(15),
        };
        let leases = InProcLeases::new(ttls, clock.clone());
        let past_ttl = || {
            let clock = clock.clone();
            async move { clock.advance(Duration::from_secs(16)) }
        };
        crate::conformance::leases::run_all(&leases, past_ttl).await;
    }
}
