//! Shard ownership for hostd instances, over the lease port
//! ([`gatehouse_bus::leases`]: JetStream KV in the cluster, in memory for
//! one process and for tests).
//!
//! - **Members**: each instance heartbeats its id into the members bucket,
//!   whose entries expire after `member_ttl` without a heartbeat.
//! - **Leases**: shard `n` is owned by whoever holds key `s<n>` in the lease
//!   bucket. Acquiring is a KV `create` (only if absent); holding is an
//!   `update` every `renew_every` that must match the last revision; the
//!   bucket's max age drops a lease that stops being renewed after `ttl`.
//! - **Fencing token**: the KV revision of the holder's last write. KV
//!   revisions are the stream's sequence numbers, so a shard's next owner
//!   always gets a larger token than anything its predecessor held, and a
//!   holder whose renewal fails (`WrongLastRevision`) knows it was deposed.
//! - **Assignment**: rendezvous hashing over the live members picks each
//!   shard's preferred owner, so a joining instance takes about `1/n` of
//!   the shards from the others and a leaving one's shards spread evenly.
//!   [`Leases::rebalance`] acquires the free shards this instance prefers
//!   and lists the held ones another live member prefers; the caller hands
//!   those over (persists and stops their actors) and then
//!   [`Leases::release`]s them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_bus::leases::{LeaseStore, LeaseTtls, NatsLeases, Renewal};
use gatehouse_core::ids::sha256_hex;

pub use gatehouse_bus::leases::{LEASE_BUCKET, LeaseError, MEMBER_BUCKET};

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub shards: u32,
    /// A lease not renewed for this long expires (the crash takeover bound).
    pub ttl: Duration,
    pub renew_every: Duration,
    /// A member not heard from for this long is gone.
    pub member_ttl: Duration,
    /// KV replicas (3 in production).
    pub replicas: usize,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            shards: 1024,
            ttl: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            member_ttl: Duration::from_secs(15),
            replicas: 1,
        }
    }
}

/// What one rebalance round changed or asks for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rebalance {
    /// Newly acquired, with their fencing tokens.
    pub acquired: Vec<(u32, u64)>,
    /// Held but preferred by another live member: hand over, then release.
    pub to_release: Vec<u32>,
    /// Taken by someone else while this instance thought it held them.
    pub lost: Vec<u32>,
}

/// This instance's view of shard ownership.
pub struct Leases {
    store: Arc<dyn LeaseStore>,
    me: String,
    cfg: LeaseConfig,
    held: Mutex<BTreeMap<u32, u64>>,
    /// Lease rounds run (see [`Leases::rounds`]).
    rounds: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("me", &self.me)
            .field("held", &self.held().len())
            .finish()
    }
}

/// The rendezvous (highest random weight) score of `member` for `shard`.
fn score(shard: u32, member: &str) -> String {
    sha256_hex(format!("{shard}/{member}").as_bytes())
}

/// The live member that should own `shard`.
pub fn preferred(shard: u32, members: &[String]) -> Option<&str> {
    members
        .iter()
        .max_by(|a, b| score(shard, a).cmp(&score(shard, b)).then(a.cmp(b)))
        .map(String::as_str)
}

impl Leases {
    /// Shard ownership for instance `me` (unique per running instance:
    /// pod name plus a start nonce) over `store`.
    pub fn new(store: Arc<dyn LeaseStore>, me: impl Into<String>, cfg: LeaseConfig) -> Self {
        Self {
            store,
            me: me.into(),
            cfg,
            held: Mutex::new(BTreeMap::new()),
            rounds: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Over JetStream KV (the buckets are created if needed).
    pub async fn open(
        client: async_nats::Client,
        me: impl Into<String>,
        cfg: LeaseConfig,
    ) -> Result<Self, LeaseError> {
        let ttls = LeaseTtls {
            lease: cfg.ttl,
            member: cfg.member_ttl,
        };
        let store = NatsLeases::open(client, ttls, cfg.replicas).await?;
        Ok(Self::new(Arc::new(store), me, cfg))
    }

    /// The shard count and lease timing this instance runs with.
    pub fn config(&self) -> &LeaseConfig {
        &self.cfg
    }

    /// How many lease rounds this instance started: lets an observer wait
    /// for the ring to have moved on instead of waiting for time.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// Held shards and their fencing tokens.
    pub fn held(&self) -> BTreeMap<u32, u64> {
        self.held.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// The fencing token of `shard`, if held.
    pub fn token(&self, shard: u32) -> Option<u64> {
        self.held.lock().ok()?.get(&shard).copied()
    }

    fn set(&self, shard: u32, token: Option<u64>) {
        if let Ok(mut h) = self.held.lock() {
            match token {
                Some(t) => h.insert(shard, t),
                None => h.remove(&shard),
            };
        }
    }

    /// Announces this instance as live.
    pub async fn heartbeat(&self) -> Result<(), LeaseError> {
        self.store.heartbeat(&self.me).await
    }

    /// Live members, sorted.
    pub async fn members(&self) -> Result<Vec<String>, LeaseError> {
        self.store.members().await
    }

    /// Takes `shard` if nobody holds it; returns its fencing token.
    pub async fn try_acquire(&self, shard: u32) -> Result<Option<u64>, LeaseError> {
        let token = self.store.acquire(shard, &self.me).await?;
        if let Some(t) = token {
            self.set(shard, Some(t));
        }
        Ok(token)
    }

    /// Renews every held lease; returns the shards found taken by others
    /// (this instance was deposed: it must stop serving them at once).
    pub async fn renew(&self) -> Vec<u32> {
        let mut lost = Vec::new();
        for (shard, token) in self.held() {
            match self.store.renew(shard, &self.me, token).await {
                Ok(Renewal::Renewed(next)) => self.set(shard, Some(next)),
                Ok(Renewal::Lost) => {
                    tracing::warn!(shard, "shard lease lost to another instance");
                    self.set(shard, None);
                    lost.push(shard);
                }
                // Transient (NATS unreachable): keep serving until the TTL
                // could have passed; the next renewal decides.
                Err(e) => tracing::warn!(shard, error = %e, "shard lease renewal failed"),
            }
        }
        lost
    }

    /// Gives `shard` up (after its actors were persisted and stopped).
    pub async fn release(&self, shard: u32) -> Result<(), LeaseError> {
        let Some(token) = self.token(shard) else {
            return Ok(());
        };
        self.set(shard, None);
        // False: someone else holds it already, nothing of ours to release.
        self.store.release(shard, token).await.map(|_| ())
    }

    /// Releases every held shard (shutdown, after persisting).
    pub async fn release_all(&self) {
        for shard in self.held().into_keys() {
            if let Err(e) = self.release(shard).await {
                tracing::warn!(shard, error = %e, "shard release failed; it expires instead");
            }
        }
        if let Err(e) = self.store.leave(&self.me).await {
            tracing::warn!(error = %e, "leaving the member list failed; it expires instead");
        }
    }

    /// One round: heartbeat, renew, acquire preferred free shards, and
    /// list held shards another live member prefers.
    pub async fn rebalance(&self) -> Result<Rebalance, LeaseError> {
        self.rounds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.heartbeat().await?;
        let mut out = Rebalance {
            lost: self.renew().await,
            ..Default::default()
        };
        let mut members = self.members().await?;
        if !members.iter().any(|m| m == &self.me) {
            members.push(self.me.clone());
            members.sort();
        }
        let held = self.held();
        for shard in 0..self.cfg.shards {
            let mine = preferred(shard, &members) == Some(self.me.as_str());
            match (mine, held.contains_key(&shard)) {
                (true, false) => {
                    if let Some(token) = self.try_acquire(shard).await? {
                        out.acquired.push((shard, token));
                    }
                }
                (false, true) => out.to_release.push(shard),
                _ => {}
            }
        }
        Ok(out)
    }
}
