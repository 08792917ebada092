//! Which shards a hostd serves ([`Ownership`]): every shard (the
//! all-in-one, one queue-group subscription to every shard subject), or in
//! a cluster only the shards it holds leases for.
//!
//! A leased hostd runs one lease round ([`Leases::rebalance`]) every
//! `renew_every`:
//! - a newly acquired shard gets its own subscription (`gatehouse.host.<n>`,
//!   no queue group: the lease makes this instance its only server);
//! - a shard another live member prefers is handed over: its subscription is
//!   dropped, its actors are stopped (each persists its state), then the
//!   lease is released and the new owner picks the shard up;
//! - a shard found taken by someone else (this instance stalled past the
//!   lease TTL) is dropped at once.
//!
//! Requests that arrive for a shard this instance no longer holds are
//! answered "shard moved"; the client retries and reaches the new owner.
//! Actors are rebuilt from the store on their first request, so nothing
//! else moves. At shutdown every shard is handed over the same way; so on
//! `drain` (the control service's Drain), after which the instance stays
//! up but out of the ring (no heartbeat, no shards) until it stops.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_bus::hostrpc::host_subject;
use gatehouse_core::ids::shard_of;
use gatehouse_core::ports::{Bus, BusMessage, Subscription};
use gatehouse_proto::topics::HOST_REQUESTS;
use tokio::sync::mpsc;

use crate::leases::Leases;
use crate::service::{HostdError, Router};

/// Forwards one shard's requests into hostd's request channel.
struct ShardSub {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ShardSub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards a subscription's requests into hostd's request channel.
fn forward(mut sub: Subscription, tx: mpsc::Sender<BusMessage>) -> ShardSub {
    let task = tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if tx.send(m).await.is_err() {
                break;
            }
        }
    });
    ShardSub { task }
}

/// Which shards a hostd serves.
#[derive(Debug, Clone)]
pub enum Ownership {
    /// Every shard, unfenced: the one hostd of a process holding the data
    /// directory's lock (the all-in-one); the lock is its fence.
    Every,
    /// The shards whose leases it holds (a cluster member); its writes
    /// carry the leases' fencing tokens.
    Leased(Arc<Leases>),
}

impl Ownership {
    /// The actors' fences for this ownership.
    pub fn fences(&self) -> crate::actor::FenceFn {
        match self {
            Self::Every => crate::actor::unfenced(),
            Self::Leased(l) => lease_fences(l.clone(), l.config().shards),
        }
    }

    /// Whether this hostd serves `host` right now.
    pub(crate) fn owns(&self, host: &gatehouse_core::HostId) -> bool {
        match self {
            Self::Every => true,
            Self::Leased(l) => l.token(shard_of(host, l.config().shards)).is_some(),
        }
    }
}

/// The request subscriptions of one hostd: one queue-group subscription to
/// every shard (`Every`), or one per held shard, moved by lease rounds.
pub(crate) struct Serving {
    ownership: Ownership,
    bus: Arc<dyn Bus>,
    tx: mpsc::Sender<BusMessage>,
    subs: BTreeMap<u32, ShardSub>,
    drain_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Serving {
    /// Starts serving: `Every` subscribes at once; `Leased` waits for its
    /// first lease round. Requests arrive on the returned channel.
    pub(crate) async fn start(
        ownership: Ownership,
        bus: Arc<dyn Bus>,
        drain_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, mpsc::Receiver<BusMessage>), HostdError> {
        let (tx, rx) = mpsc::channel::<BusMessage>(4096);
        let mut subs = BTreeMap::new();
        match &ownership {
            Ownership::Every => {
                let sub = bus.subscribe(&HOST_REQUESTS.every(), Some("hostd")).await?;
                subs.insert(0, forward(sub, tx.clone()));
                tracing::info!("hostd serving every shard");
            }
            Ownership::Leased(l) => {
                tracing::info!(
                    me = l.me(),
                    shards = l.config().shards,
                    "hostd joining the shard ring"
                );
            }
        }
        let serving = Self {
            ownership,
            bus,
            tx,
            subs,
            drain_timeout,
            metrics,
        };
        Ok((serving, rx))
    }

    pub(crate) fn ownership(&self) -> &Ownership {
        &self.ownership
    }

    /// How often lease rounds run (`None`: never, every shard is served).
    pub(crate) fn round_every(&self) -> Option<Duration> {
        match &self.ownership {
            Ownership::Every => None,
            Ownership::Leased(l) => Some(l.config().renew_every),
        }
    }

    /// One lease round: takes the shards this instance prefers, hands over
    /// those another member prefers, drops those found taken.
    pub(crate) async fn round(&mut self, router: &Router) {
        let Ownership::Leased(leases) = &self.ownership else {
            return;
        };
        let leases = leases.clone();
        let shards = leases.config().shards;
        let m = self.metrics.clone();
        let r = match leases.rebalance().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "shard lease round failed");
                return;
            }
        };
        m.lost.inc_by(r.lost.len() as u64);
        m.handed_over.inc_by(r.to_release.len() as u64);
        for shard in r.lost {
            self.subs.remove(&shard);
            router.stop_shard(shard, shards, self.drain_timeout).await;
        }
        for shard in r.to_release {
            self.subs.remove(&shard);
            let n = router.stop_shard(shard, shards, self.drain_timeout).await;
            if let Err(e) = leases.release(shard).await {
                tracing::warn!(shard, error = %e, "shard release failed; it expires instead");
            }
            tracing::info!(shard, actors = n, "shard handed over");
        }
        m.acquired.inc_by(r.acquired.len() as u64);
        let mut taken = Vec::new();
        for (shard, token) in r.acquired {
            match self.bus.subscribe(&host_subject(shard), None).await {
                Ok(sub) => {
                    self.subs.insert(shard, forward(sub, self.tx.clone()));
                    taken.push(shard);
                    tracing::debug!(shard, token, "shard acquired");
                }
                Err(e) => {
                    tracing::warn!(shard, error = %e, "shard subscription failed; releasing it");
                    let _ = leases.release(shard).await;
                }
            }
        }
        if !taken.is_empty() {
            // What the previous owner's actors said about these hosts
            // (a crashed one may not have announced a campaign) no longer
            // holds: edges ask the new actors.
            router.announce_shards(taken, shards).await;
        }
        m.shards
            .set(i64::try_from(self.subs.len()).unwrap_or(i64::MAX));
    }

    /// Stops serving: drops every subscription, stops every actor (each
    /// persists its state) and releases every lease.
    pub(crate) async fn hand_over_all(&mut self, router: &Router) {
        self.subs.clear();
        tracing::info!(actors = router.live_actors(), "hostd draining");
        router.stop_all(self.drain_timeout).await;
        if let Ownership::Leased(leases) = &self.ownership {
            self.metrics.shards.set(0);
            leases.release_all().await;
        }
    }
}

pub(crate) struct Metrics {
    shards: prometheus_client::metrics::gauge::Gauge,
    pub(crate) actors: prometheus_client::metrics::gauge::Gauge,
    pub(crate) hosts_online: prometheus_client::metrics::gauge::Gauge,
    acquired: prometheus_client::metrics::counter::Counter,
    handed_over: prometheus_client::metrics::counter::Counter,
    lost: prometheus_client::metrics::counter::Counter,
}

impl Metrics {
    pub(crate) fn new(m: &gatehouse_runtime::metrics::Metrics) -> Self {
        Self {
            shards: m.gauge("hostd_shards", "Shards this hostd holds leases for"),
            actors: m.gauge("hostd_actors", "Host actors alive in this hostd"),
            hosts_online: m.gauge(
                "hostd_hosts_online",
                "Hosts that made an agent request to this hostd within the online window",
            ),
            acquired: m.counter("hostd_shards_acquired", "Shard leases acquired"),
            handed_over: m.counter(
                "hostd_shards_handed_over",
                "Shards handed over to another hostd",
            ),
            lost: m.counter(
                "hostd_shards_lost",
                "Shards found taken by another hostd (this one stalled past the lease TTL)",
            ),
        }
    }
}

/// Fencing tokens from this instance's shard leases: a host's writes carry
/// its shard's lease revision, and stop (shard moved) once the lease is gone.
pub fn lease_fences(leases: Arc<Leases>, shards: u32) -> crate::actor::FenceFn {
    Arc::new(move |h| {
        leases
            .token(shard_of(h, shards))
            .map(gatehouse_core::ports::Fence)
    })
}

/// Shards this instance serves right now.
pub fn served(leases: &Leases) -> Vec<u32> {
    leases.held().into_keys().collect()
}
