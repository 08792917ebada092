//! What a [`HostClient`](crate::HostClient) may answer without asking a
//! host's actor: an empty distributed read and an accepted touch (a log or
//! carve request's key check).
//!
//! Almost every distributed read is empty and every log batch only needs
//! its key checked, yet each used to cost a hop to the host's actor (and in
//! a cluster a NATS request and reply). The actor now says, with each empty
//! read and each touch, how long that answer stays right (`quiet_ms`:
//! nothing pending for the host, no label query due, at most the hostd's
//! `answer_for`). Until then the client answers the same itself for the
//! same key epoch.
//!
//! What would change the answer is announced: hostd publishes
//! [`HOSTS_CHANGED`] once its actors know (a campaign queued, a key
//! re-issued or revoked, a host deleted, label queries changed), and the
//! client forgets itself the hosts it re-enrolls, re-keys or deletes. An
//! answer from an actor that was asked before such a change arrived is
//! not kept (each shard of the table counts its changes). A lost
//! announcement delays a live query or a revocation by at most the
//! quiet time. See ADR 0031.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use gatehouse_core::HostId;
use gatehouse_core::ports::{Bus, BusError};
use gatehouse_proto::topics::HOSTS_CHANGED;
use tokio::time::Instant;

/// Shards of the table: changes to one host only discard the answers in
/// flight for hosts of its shard.
const SHARDS: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Quiet {
    epoch: u64,
    until: Instant,
}

#[derive(Debug, Default)]
struct Shard {
    /// Bumped by every change announced for a host of this shard.
    changes: u64,
    quiet: HashMap<HostId, Quiet>,
}

/// Taken before asking an actor; an answer is kept only if no change to
/// the host's shard was announced meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    shard: usize,
    changes: u64,
}

/// The hosts whose reads and touches may be answered without asking.
pub struct Answers {
    shards: Box<[Mutex<Shard>]>,
    /// Set once the change announcements are subscribed to: before, no
    /// answer is kept (a change could go unheard).
    following: AtomicBool,
    started: AtomicBool,
    /// Requests answered here.
    answered: AtomicU64,
    /// Told of each request answered here (a metric).
    on_answer: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Answers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answers")
            .field("following", &self.following())
            .field("answered", &self.answered())
            .finish()
    }
}

impl Default for Answers {
    fn default() -> Self {
        Self::new(|| {})
    }
}

fn shard_index(host: &HostId) -> usize {
    // Host ids are hex digests: their first bytes are uniform.
    host.as_str().bytes().take(4).fold(0usize, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(usize::from(b))
    }) % SHARDS
}

impl Answers {
    /// An empty table; `on_answer` is told of each request answered here.
    pub fn new(on_answer: impl Fn() + Send + Sync + 'static) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            following: AtomicBool::new(false),
            started: AtomicBool::new(false),
            answered: AtomicU64::new(0),
            on_answer: Box::new(on_answer),
        }
    }

    fn shard(&self, i: usize) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `host`'s reads and touches with key `epoch` may be answered
    /// here now (counted as answered when so).
    pub fn quiet(&self, host: &HostId, epoch: u64) -> bool {
        let now = Instant::now();
        let mut shard = self.shard(shard_index(host));
        match shard.quiet.get(host) {
            Some(q) if q.until > now => {
                if q.epoch != epoch {
                    return false;
                }
                drop(shard);
                self.answered.fetch_add(1, Ordering::Relaxed);
                (self.on_answer)();
                true
            }
            Some(_) => {
                shard.quiet.remove(host);
                false
            }
            None => false,
        }
    }

    /// To take before asking `host`'s actor (see [`Answers::remember`]).
    pub fn ticket(&self, host: &HostId) -> Ticket {
        let i = shard_index(host);
        Ticket {
            shard: i,
            changes: self.shard(i).changes,
        }
    }

    /// Keeps an actor's word that `host`'s reads and touches with key
    /// `epoch` are answered empty and accepted for `quiet`, unless a change
    /// to the host's shard was announced since `ticket` was taken.
    pub fn remember(&self, host: &HostId, epoch: u64, ticket: Ticket, quiet: Duration) {
        if quiet.is_zero() || !self.following.load(Ordering::Acquire) {
            return;
        }
        let mut shard = self.shard(ticket.shard);
        if shard.changes != ticket.changes {
            return;
        }
        let until = Instant::now() + quiet;
        shard.quiet.insert(host.clone(), Quiet { epoch, until });
    }

    /// Forgets what was said about `hosts` (and discards answers in flight
    /// for hosts of their shards).
    pub fn forget(&self, hosts: &[HostId]) {
        for h in hosts {
            let mut shard = self.shard(shard_index(h));
            shard.changes += 1;
            shard.quiet.remove(h);
        }
    }

    /// Forgets the hosts of these `shards` (of `count`): a new owner's
    /// actors start from the store.
    pub fn forget_shards(&self, shards: &[u32], count: u32) {
        for i in 0..SHARDS {
            let mut shard = self.shard(i);
            shard.changes += 1;
            shard
                .quiet
                .retain(|h, _| !shards.contains(&gatehouse_core::shard_of(h, count)));
        }
    }

    /// Applies one announcement.
    fn apply(&self, c: &gatehouse_proto::v1::HostsChanged) {
        if c.all {
            self.forget_all();
            return;
        }
        if !c.shards.is_empty() {
            self.forget_shards(&c.shards, c.shard_count.max(1));
        }
        let hosts: Vec<HostId> = c.host_ids.iter().filter_map(|h| HostId::parse(h)).collect();
        self.forget(&hosts);
    }

    /// Forgets every host.
    pub fn forget_all(&self) {
        for i in 0..SHARDS {
            let mut shard = self.shard(i);
            shard.changes += 1;
            shard.quiet.clear();
        }
    }

    /// Requests answered without asking an actor so far.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Hosts currently answered here.
    pub fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.shard(i).quiet.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Follows the change announcements on `bus` from a task: subscribes
    /// (retrying each second while the bus refuses), from then on keeps
    /// actors' answers and applies the announcements, and ends with the
    /// subscription (the bus going away). Once per table; later calls do
    /// nothing. Must be called within a tokio runtime.
    pub fn follow(self: &Arc<Self>, bus: Arc<dyn Bus>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut sub = loop {
                match bus.subscribe(HOSTS_CHANGED.subject(), None).await {
                    Ok(s) => break s,
                    Err(BusError::Closed) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "host changes not subscribed yet; every read and touch asks its actor");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            };
            // The subscription alone keeps the task going: a dropped bus
            // ends it.
            drop(bus);
            me.following.store(true, Ordering::Release);
            while let Some(m) = sub.next().await {
                match HOSTS_CHANGED.decode(m.payload) {
                    Ok(c) => me.apply(&c),
                    Err(e) => {
                        tracing::warn!(error = %e, "undecodable host change; forgetting every host");
                        me.forget_all();
                    }
                }
            }
            // No more announcements: keep nothing that could go stale.
            me.following.store(false, Ordering::Release);
            me.forget_all();
        });
    }

    /// Whether announcements are being heard (answers are kept).
    pub fn following(&self) -> bool {
        self.following.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_testkit::until;

    const WAIT: Duration = Duration::from_secs(5);

    fn host(n: u32) -> HostId {
        HostId::from_identity(&format!("hw:{n}"))
    }

    fn following() -> Answers {
        let a = Answers::default();
        a.following.store(true, Ordering::Release);
        a
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_holds_for_its_epoch_until_its_time_is_up() {
        let a = following();
        let h = host(1);
        assert!(!a.quiet(&h, 1));
        let t = a.ticket(&h);
        a.remember(&h, 1, t, Duration::from_secs(30));
        assert!(a.quiet(&h, 1));
        assert!(!a.quiet(&h, 2), "another key epoch is asked about");
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(!a.quiet(&h, 1), "expired");
        assert!(a.is_empty(), "an expired answer is dropped when looked up");
        assert_eq!(a.answered(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_announced_while_asking_discards_the_answer() {
        let a = following();
        let h = host(2);
        let t = a.ticket(&h);
        a.forget(std::slice::from_ref(&h));
        a.remember(&h, 1, t, Duration::from_secs(30));
        assert!(!a.quiet(&h, 1));
        let t = a.ticket(&h);
        a.remember(&h, 1, t, Duration::from_secs(30));
        assert!(a.quiet(&h, 1));
        a.forget(std::slice::from_ref(&h));
        assert!(!a.quiet(&h, 1), "forgotten");
        let t = a.ticket(&h);
        a.remember(&h, 1, t, Duration::from_secs(30));
        a.forget_all();
        assert!(!a.quiet(&h, 1), "forgotten with every host");
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_kept_before_the_announcements_are_heard_or_for_zero() {
        let a = Answers::default();
        let h = host(3);
        let t = a.ticket(&h);
        a.remember(&h, 1, t, Duration::from_secs(30));
        assert!(!a.quiet(&h, 1), "not following yet");
        let a = following();
        let t = a.ticket(&h);
        a.remember(&h, 1, t, Duration::ZERO);
        assert!(!a.quiet(&h, 1), "zero quiet: always ask");
    }

    #[tokio::test(start_paused = true)]
    async fn a_shard_taken_over_forgets_its_hosts_only() {
        let a = following();
        let hosts: Vec<HostId> = (0..40).map(host).collect();
        for h in &hosts {
            let t = a.ticket(h);
            a.remember(h, 1, t, Duration::from_secs(30));
        }
        let moved = gatehouse_core::shard_of(&hosts[0], 8);
        a.apply(&gatehouse_proto::v1::HostsChanged {
            shards: vec![moved],
            shard_count: 8,
            ..Default::default()
        });
        for h in &hosts {
            let in_moved = gatehouse_core::shard_of(h, 8) == moved;
            assert_eq!(a.quiet(h, 1), !in_moved, "{h}");
        }
    }

    #[tokio::test]
    async fn announcements_on_the_bus_are_applied() {
        let bus: Arc<dyn Bus> = Arc::new(crate::InProcBus::new());
        let a = Arc::new(Answers::default());
        a.follow(bus.clone());
        until("following", WAIT, async || a.following()).await;
        let (h1, h2) = (host(4), host(5));
        for h in [&h1, &h2] {
            let t = a.ticket(h);
            a.remember(h, 1, t, Duration::from_secs(30));
        }
        crate::events::publish(
            bus.as_ref(),
            &HOSTS_CHANGED,
            &gatehouse_proto::v1::HostsChanged {
                host_ids: vec![h1.to_string()],
                ..Default::default()
            },
        )
        .await
        .expect("published");
        until("the named host forgotten", WAIT, async || !a.quiet(&h1, 1)).await;
        assert!(a.quiet(&h2, 1), "only the named host is forgotten");
        crate::events::publish(
            bus.as_ref(),
            &HOSTS_CHANGED,
            &gatehouse_proto::v1::HostsChanged {
                all: true,
                ..Default::default()
            },
        )
        .await
        .expect("published");
        until("every host forgotten", WAIT, async || a.is_empty()).await;
    }
}
