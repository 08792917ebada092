//! `HostActor`: one per host, the only writer of that host's record.
//!
//! State is rebuilt from the store as it starts (host record, open
//! live-query deliveries) and everything that must survive a crash is
//! written through before a reply goes out: enrollment, key changes,
//! labels, delivery state. Only `last_seen` is written lazily (at most
//! every `last_seen_flush`, and on passivation).
//!
//! Every write carries the fencing token of the host's shard
//! ([`HostCtx::fences`]). An actor whose shard moved (no token) or whose
//! write the store fenced off (a newer owner wrote the host) is deposed: it
//! answers "shard moved" (the client retries at the new owner) and stops
//! without writing again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_core::HostId;
use gatehouse_core::model::{
    Campaign, CampaignResult, Delivery, DeliveryState, Host, HostDetails, LABEL_QUERY_PREFIX,
};
use gatehouse_core::nodekey::NodeKeys;
use gatehouse_core::ports::{Fence, Store, StoreError};
use gatehouse_core::time::Clock;
use gatehouse_core::wire::platform_family;
use gatehouse_proto::topics::{CAMPAIGN_ANSWERS, HOST_ENROLLED};
use gatehouse_proto::v1::{
    ConfigOk, EnrollOk, EnrollOp, Failure, FailureKind, KeyOk, NodeInvalid, Ok as OkReply, ReadOk,
    WriteOp, host_reply, host_request,
};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::configs::ConfigCache;
use crate::registry::Registry;

/// Tunables shared by every actor of a hostd.
#[derive(Debug, Clone)]
pub struct ActorSettings {
    /// Stop an actor after this long without requests.
    pub passivate_after: Duration,
    /// Write `last_seen` at most this often while active.
    pub last_seen_flush: Duration,
    /// Re-send a delivered query that got no answer after this long (the
    /// read response may have been lost).
    pub redeliver_after: Duration,
    /// How often an actor checks for idleness.
    pub tick: Duration,
    /// The longest an edge may answer this host's empty reads and accept
    /// its touches without asking (`quiet_ms`; zero: always ask). It also
    /// bounds how stale `last_seen` gets (plus `last_seen_flush`) and how
    /// long a lost change announcement can delay a live query or a
    /// revocation (ADR 0031).
    pub answer_for: Duration,
    /// Where "now" comes from (enrollment and last-seen times, delivery
    /// deadlines).
    pub clock: Arc<dyn Clock>,
}

impl Default for ActorSettings {
    fn default() -> Self {
        Self {
            passivate_after: Duration::from_secs(600),
            last_seen_flush: Duration::from_secs(15),
            redeliver_after: Duration::from_secs(180),
            tick: Duration::from_secs(30),
            answer_for: Duration::from_secs(30),
            clock: gatehouse_core::time::system_clock(),
        }
    }
}

/// The fencing token for a host's writes; `None` when this hostd does not
/// own the host's shard (any more).
pub type FenceFn = Arc<dyn Fn(&HostId) -> Option<Fence> + Send + Sync>;

/// The unsharded writer's fences (the all-in-one owns every host).
pub fn unfenced() -> FenceFn {
    Arc::new(|_| Some(Fence::NONE))
}

/// What every actor of one hostd shares.
pub struct HostCtx {
    pub store: Arc<dyn Store>,
    pub keys: NodeKeys,
    pub configs: ConfigCache,
    pub registry: Registry,
    pub settings: ActorSettings,
    pub fences: FenceFn,
    /// Where enrollments are announced (the rule engine listens); set by
    /// the hostd run loop.
    pub events: std::sync::OnceLock<Arc<dyn gatehouse_core::ports::Bus>>,
    /// Failed background writes (last seen) are logged once per kind and
    /// interval: a store outage fails every actor's alike.
    pub log_throttle: gatehouse_runtime::throttle::LogThrottle,
    /// Set once the housekeeping ticker runs ([`start_ticker`]).
    pub ticking: std::sync::Once,
}

/// Rounds a tick period is split into: each round ticks the actors whose
/// id falls in it, so housekeeping (last-seen writes) is spread over the
/// period instead of arriving for every host at once.
const TICK_ROUNDS: u64 = 16;

/// Starts the ticker that sends every live actor of `ctx` a
/// [`HostMsg::Tick`] once per `settings.tick` (idempotent; needs a tokio
/// runtime). One task for the whole hostd rather than a timer task per
/// actor: an actor is then its own task and ports alone, about a
/// kilobyte less per host (ADR 0046). The ticker ends when `ctx` is gone.
pub fn start_ticker(ctx: &Arc<HostCtx>) {
    ctx.ticking.call_once(|| {
        let weak = Arc::downgrade(ctx);
        let round = ctx.settings.tick / TICK_ROUNDS as u32;
        tokio::spawn(async move {
            let mut every = tokio::time::interval(round.max(Duration::from_millis(1)));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for n in 0u64.. {
                every.tick().await;
                let Some(ctx) = weak.upgrade() else { return };
                let due = ctx
                    .registry
                    .picked(|a| a.id() % TICK_ROUNDS == n % TICK_ROUNDS);
                for actor in due {
                    let _ = actor.send(HostMsg::Tick);
                }
            }
        });
    });
}

impl std::fmt::Debug for HostCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostCtx")
            .field("registry", &self.registry)
            .finish()
    }
}

pub enum HostMsg {
    /// A host RPC; `key_epoch` is what the agent presented.
    Request {
        op: host_request::Op,
        key_epoch: u64,
        reply: oneshot::Sender<host_reply::Result>,
    },
    /// A campaign now targets this host.
    CampaignQueued(Arc<Campaign>),
    /// A campaign was cancelled: it ended at `ended_at` (ms), so an
    /// unanswered delivery expires instead of being sent again.
    CampaignEnded { campaign_id: String, ended_at: i64 },
    /// Periodic housekeeping (last-seen flush, passivation), from the
    /// hostd's ticker ([`start_ticker`]).
    Tick,
    /// Stop after the messages queued before this one (shard handed over,
    /// shutdown); `done` hears once the last write is made.
    Stop {
        why: &'static str,
        done: oneshot::Sender<()>,
    },
}

/// Why a call got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// The actor stopped before it took the request (passivation, a
    /// handed-over shard): the request never ran; retry on a fresh actor.
    Stopped,
    /// No answer within the call timeout.
    TimedOut,
}

/// A live host actor, as others reach it: its mailbox and the number that
/// tells this incarnation from the host's later ones.
///
/// An actor is a tokio task that owns its host's [`HostState`] and takes
/// one message at a time from an unbounded mailbox of boxed messages.
/// ractor's actors cost about 7.4 KB each before any state (two unbounded
/// channels, one of them for supervision events with a 32-slot block of
/// 80-byte events, its properties and its processing loop); this one about
/// 1.3 KB (ADR 0052).
#[derive(Clone)]
pub struct HostRef {
    mail: mpsc::UnboundedSender<Box<HostMsg>>,
    id: u64,
}

impl std::fmt::Debug for HostRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostRef").field("id", &self.id).finish()
    }
}

impl HostRef {
    /// This incarnation's number, unique in the process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Queues `msg` without waiting; `Err` when the actor has stopped.
    pub fn send(&self, msg: HostMsg) -> Result<(), Unanswered> {
        self.mail
            .send(Box::new(msg))
            .map_err(|_| Unanswered::Stopped)
    }

    /// Runs `op` on the actor and waits at most `timeout` for its answer.
    pub async fn call(
        &self,
        op: host_request::Op,
        key_epoch: u64,
        timeout: Duration,
    ) -> Result<host_reply::Result, Unanswered> {
        let (reply, answer) = oneshot::channel();
        self.send(HostMsg::Request {
            op,
            key_epoch,
            reply,
        })?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(r)) => Ok(r),
            // Dropped unanswered: the actor stopped with it still queued.
            Ok(Err(_)) => Err(Unanswered::Stopped),
            Err(_) => Err(Unanswered::TimedOut),
        }
    }

    /// Stops the actor once what is queued before is handled, and waits
    /// until its last write is made (at once when it has stopped).
    pub async fn stop_and_wait(&self, why: &'static str) {
        let (done, stopped) = oneshot::channel();
        if self.send(HostMsg::Stop { why, done }).is_ok() {
            let _ = stopped.await;
        }
    }
}

/// Incarnation numbers, process-wide (several hostds can share a process).
static INCARNATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// An actor's state while its task runs. However the task ends, a panic
/// included, its registry entry goes with it (a later request then starts
/// a fresh actor); holding the state, it needs no copy of the host id.
struct Live<'a> {
    ctx: &'a HostCtx,
    id: u64,
    state: HostState,
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.ctx.registry.remove(&self.state.id, Some(self.id));
    }
}

/// The live queries a host has not answered yet, each with its delivery:
/// a few at most, so a vector (none allocates nothing), and the campaign
/// shared with every other target's actor (a campaign to 50,000 hosts is
/// one `Campaign`, not 50,000 copies in 50,000 tree nodes).
#[derive(Default)]
struct Open(Vec<(Arc<Campaign>, Delivery)>);

impl Open {
    fn contains(&self, id: &str) -> bool {
        self.0.iter().any(|(c, _)| c.id == id)
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut (Arc<Campaign>, Delivery)> {
        self.0.iter_mut().find(|(c, _)| c.id == id)
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut (Arc<Campaign>, Delivery)> {
        self.0.iter_mut()
    }

    /// Adds `c` unless it is open already.
    fn insert(&mut self, c: Arc<Campaign>, d: Delivery) {
        if !self.contains(&c.id) {
            self.0.push((c, d));
        }
    }

    fn remove(&mut self, id: &str) -> Option<(Arc<Campaign>, Delivery)> {
        let at = self.0.iter().position(|(c, _)| c.id == id)?;
        let open = self.0.swap_remove(at);
        if self.0.is_empty() {
            self.0 = Vec::new();
        }
        Some(open)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn clear(&mut self) {
        self.0 = Vec::new();
    }
}

/// What the actor does after a message.
enum Next {
    Continue,
    /// Stop; `done` (from [`HostMsg::Stop`]) hears once the last write is made.
    Stop(Option<oneshot::Sender<()>>),
}

pub struct HostActor {
    pub ctx: Arc<HostCtx>,
}

pub struct HostState {
    id: HostId,
    host: Option<Host>,
    pending: Open,
    last_activity: Instant,
    persisted_last_seen: i64,
    dirty: bool,
    /// More than `last_seen` is unsaved (a failed record write).
    record_dirty: bool,
    /// The shard moved or a newer owner wrote the host: never write again.
    deposed: bool,
    /// Label queries sent and not answered yet: label -> when (ms).
    label_sent: BTreeMap<String, i64>,
}

/// Why a host operation did not happen, as its reply carries it: callers
/// act on the kind, the message is for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fail {
    kind: FailureKind,
    message: String,
}

impl Fail {
    pub(crate) fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The shard moved or a newer owner fenced this actor off.
    pub(crate) fn moved() -> Self {
        Self::new(FailureKind::ShardMoved, "shard moved, retry")
    }

    fn not_found() -> Self {
        Self::new(FailureKind::HostNotFound, "host not found")
    }

    /// The same failure with what was being done in front of its message
    /// (a moved shard is said as is).
    fn during(self, what: &str) -> Self {
        if self.kind == FailureKind::ShardMoved {
            return self;
        }
        Self::new(self.kind, format!("{what}: {}", self.message))
    }

    pub(crate) fn reply(self) -> host_reply::Result {
        host_reply::Result::Failure(Failure {
            message: self.message,
            kind: self.kind as i32,
        })
    }
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn invalid(reason: &str) -> host_reply::Result {
    host_reply::Result::NodeInvalid(NodeInvalid {
        reason: reason.to_owned(),
    })
}

fn detail<'a>(d: &'a Map<String, Value>, table: &str, col: &str) -> &'a str {
    d.get(table)
        .and_then(|t| t.get(col))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// When (ms) label query `q` is next due on host `h`: its interval after
/// the last answer, and a sent query is re-sent only `redeliver` after it
/// went out; `None` when the query does not apply to the host's platform.
fn label_due_at(
    h: &Host,
    sent: &BTreeMap<String, i64>,
    q: &gatehouse_core::model::LabelQuery,
    redeliver: i64,
) -> Option<i64> {
    if !q.platforms.is_empty() && !q.platforms.contains(&h.platform) {
        return None;
    }
    let last = h.label_checks.get(&q.label).copied().unwrap_or(0);
    let due = last.saturating_add(i64::from(q.interval) * 1000);
    Some(match sent.get(&q.label) {
        Some(t) => due.max(t.saturating_add(redeliver)),
        None => due,
    })
}

impl HostActor {
    /// This hostd's fencing token for the host, or "shard moved".
    fn fence(&self, state: &mut HostState) -> Result<Fence, Fail> {
        match (self.ctx.fences)(&state.id) {
            Some(f) if !state.deposed => Ok(f),
            _ => {
                state.deposed = true;
                Err(Fail::moved())
            }
        }
    }

    /// A store error as a write failure; a fenced write deposes the actor.
    fn store_error(&self, state: &mut HostState, e: StoreError) -> Fail {
        if let StoreError::Fenced { .. } = e {
            tracing::warn!(host = %state.id, error = %e, "host written by a newer owner; this actor steps down");
            state.deposed = true;
            return Fail::moved();
        }
        Fail::new(FailureKind::Unavailable, e.to_string())
    }

    async fn persist(&self, state: &mut HostState) -> Result<(), Fail> {
        let fence = self.fence(state)?;
        let Some(h) = &state.host else { return Ok(()) };
        if let Err(e) = self.ctx.store.put_host(h, fence).await {
            return Err(self.store_error(state, e));
        }
        let Some(h) = &state.host else { return Ok(()) };
        state.persisted_last_seen = h.last_seen;
        state.dirty = false;
        state.record_dirty = false;
        Ok(())
    }

    /// Writes what changed since the last write: the whole record when
    /// more than `last_seen` changed, else only the time (a small column
    /// write instead of the record with its host details).
    async fn flush(&self, state: &mut HostState) -> Result<(), Fail> {
        if state.record_dirty {
            return self.persist(state).await;
        }
        let fence = self.fence(state)?;
        let Some(h) = &state.host else { return Ok(()) };
        let last_seen = h.last_seen;
        if let Err(e) = self.ctx.store.touch_host(&h.id, last_seen, fence).await {
            return Err(self.store_error(state, e));
        }
        state.persisted_last_seen = last_seen;
        state.dirty = false;
        Ok(())
    }

    /// Validates the presented epoch and marks the host seen.
    async fn authenticate(
        &self,
        state: &mut HostState,
        epoch: u64,
    ) -> Result<(), host_reply::Result> {
        let Some(h) = state.host.as_mut() else {
            return Err(invalid("unknown host"));
        };
        if h.key_revoked {
            return Err(invalid("node key revoked"));
        }
        if h.key_epoch != epoch {
            return Err(invalid("node key superseded"));
        }
        let now = self.ctx.settings.clock.now_ms();
        h.last_seen = now;
        state.dirty = true;
        let flush =
            i64::try_from(self.ctx.settings.last_seen_flush.as_millis()).unwrap_or(i64::MAX);
        if now - state.persisted_last_seen >= flush
            && let Err(e) = self.flush(state).await
        {
            // Not fatal for the request: last_seen is best effort.
            if let Some(like_it) = self.ctx.log_throttle.admit("last_seen") {
                tracing::warn!(host = %state.id, error = %e, left_out_since_last = like_it, "last_seen write failed");
            }
        }
        Ok(())
    }

    async fn enroll(&self, state: &mut HostState, op: EnrollOp) -> host_reply::Result {
        let details: Map<String, Value> =
            serde_json::from_slice(&op.host_details_json).unwrap_or_default();
        let now = self.ctx.settings.clock.now_ms();
        let platform = platform_family(&op.platform_type, &details).to_owned();
        let hostname = {
            let h = detail(&details, "system_info", "hostname");
            if h.is_empty() {
                op.host_identifier.clone()
            } else {
                h.to_owned()
            }
        };
        let host = match state.host.take() {
            Some(mut h) => {
                h.key_epoch += 1;
                h.key_revoked = false;
                h.enroll_count += 1;
                h.last_enrolled_at = now;
                h.details = HostDetails::from_map(&details);
                h
            }
            None => Host {
                id: state.id.clone(),
                identity: op.identity.clone(),
                host_identifier: String::new(),
                hostname: String::new(),
                platform: String::new(),
                platform_type: String::new(),
                os_name: String::new(),
                os_version: String::new(),
                osquery_version: String::new(),
                details: HostDetails::from_map(&details),
                labels: Vec::new(),
                enrolled_at: now,
                last_enrolled_at: now,
                enroll_count: 1,
                key_epoch: 1,
                key_revoked: false,
                last_seen: now,
                last_ip: String::new(),
                config_hash: String::new(),
                config_generation: 0,
                dynamic_labels: Vec::new(),
                label_checks: Default::default(),
            },
        };
        let mut host = host;
        for l in op.labels {
            if !host.labels.contains(&l) {
                host.labels.push(l);
            }
        }
        host.labels.sort();
        host.host_identifier = op.host_identifier;
        host.hostname = hostname;
        host.platform = platform;
        host.platform_type = op.platform_type;
        host.os_name = detail(&details, "os_version", "name").to_owned();
        host.os_version = detail(&details, "os_version", "version").to_owned();
        host.osquery_version = detail(&details, "osquery_info", "version").to_owned();
        host.last_seen = now;
        host.last_ip = op.remote_addr;
        let epoch = host.key_epoch;
        let first = host.enroll_count == 1;
        state.host = Some(host);
        if let Err(e) = self.persist(state).await {
            // Keep memory consistent with the store: reload on next use.
            state.host = self.ctx.store.get_host(&state.id).await.ok().flatten();
            return e.during("enrollment could not be stored").reply();
        }
        tracing::info!(host = %state.id, epoch, first, "host enrolled");
        if let (Some(bus), Some(host)) = (self.ctx.events.get(), state.host.as_ref()) {
            let ev = gatehouse_proto::v1::HostEnrolled {
                host: Some(gatehouse_bus::events::host_record(host)),
                first,
            };
            // Fire and forget: a lost event only loses an alert.
            if let Err(e) = gatehouse_bus::events::publish(bus.as_ref(), &HOST_ENROLLED, &ev).await
            {
                tracing::warn!(host = %state.id, error = %e, "enrollment event not published");
            }
        }
        host_reply::Result::Enrolled(EnrollOk {
            node_key: self.ctx.keys.mint(&state.id, epoch),
            epoch,
        })
    }

    async fn config(&self, state: &mut HostState) -> host_reply::Result {
        let Some(labels) = state.host.as_ref().map(Host::label_set) else {
            return invalid("unknown host");
        };
        match self.ctx.configs.config_for(&labels).await {
            Ok((hash, generation)) => {
                if let Some(h) = state.host.as_mut()
                    && (h.config_hash != hash || h.config_generation != generation)
                {
                    h.config_hash = hash.clone();
                    h.config_generation = generation;
                    // The config version a host runs is worth writing through.
                    if let Err(e) = self.persist(state).await {
                        tracing::warn!(host = %state.id, error = %e, "config version write failed");
                        state.dirty = true;
                        state.record_dirty = true;
                    }
                }
                host_reply::Result::Config(ConfigOk { hash, generation })
            }
            Err(e) => {
                tracing::error!(host = %state.id, error = %e, "config assembly failed");
                Fail::new(FailureKind::Unavailable, format!("config unavailable: {e}")).reply()
            }
        }
    }

    async fn read(&self, state: &mut HostState) -> host_reply::Result {
        let fence = match self.fence(state) {
            Ok(f) => f,
            Err(e) => return e.reply(),
        };
        let mut fenced = false;
        let now = self.ctx.settings.clock.now_ms();
        let redeliver =
            i64::try_from(self.ctx.settings.redeliver_after.as_millis()).unwrap_or(i64::MAX);
        let mut queries = BTreeMap::new();
        let mut expired = Vec::new();
        let mut finished = Vec::new();
        for (campaign, delivery) in state.pending.iter_mut() {
            let id = &campaign.id;
            if campaign.is_expired(now) {
                expired.push(id.clone());
                continue;
            }
            let due = match delivery.state {
                DeliveryState::Queued => true,
                DeliveryState::Delivered => {
                    delivery.delivered_at.is_none_or(|t| now - t >= redeliver)
                }
                _ => false,
            };
            if !due {
                continue;
            }
            let mut d = delivery.clone();
            d.state = DeliveryState::Delivered;
            d.delivered_at = Some(now);
            d.delivery_count += 1;
            match self.ctx.store.put_delivery(&d, fence).await {
                Ok(true) => {
                    *delivery = d;
                    queries.insert(id.clone(), campaign.sql.clone());
                }
                // Answered or expired already (a campaign queued again
                // after its answer): not sent again.
                Ok(false) => finished.push(id.clone()),
                Err(e) => {
                    // Not recorded as delivered, so not sent: the next poll retries.
                    tracing::warn!(host = %state.id, campaign = %id, error = %e, "delivery write failed");
                    fenced |= matches!(e, StoreError::Fenced { .. });
                }
            }
        }
        for id in finished {
            state.pending.remove(&id);
        }
        for id in expired {
            if let Some((_, mut d)) = state.pending.remove(&id) {
                d.state = DeliveryState::Expired;
                d.finished_at = Some(now);
                if let Err(e) = self.ctx.store.put_delivery(&d, fence).await {
                    tracing::warn!(host = %state.id, campaign = %id, error = %e, "expiry write failed");
                    fenced |= matches!(e, StoreError::Fenced { .. });
                }
            }
        }
        if fenced {
            // A newer owner serves this host: the agent asks it instead.
            state.deposed = true;
            return Fail::moved().reply();
        }
        self.due_label_queries(state, now, redeliver, &mut queries)
            .await;
        let quiet_ms = if queries.is_empty() {
            self.quiet_ms(state, now).await
        } else {
            tracing::debug!(host = %state.id, queries = queries.len(), "live queries delivered");
            0
        };
        host_reply::Result::Read(ReadOk {
            queries,
            discovery: BTreeMap::new(),
            accelerate: 0,
            quiet_ms,
        })
    }

    /// How long (ms from `now`) this host's reads stay empty and its
    /// touches accepted unless a change is announced: zero while any
    /// campaign is pending for it (each read decides), else until its
    /// next label query is due, at most `answer_for`.
    async fn quiet_ms(&self, state: &HostState, now: i64) -> u64 {
        let most = i64::try_from(self.ctx.settings.answer_for.as_millis()).unwrap_or(i64::MAX);
        if most == 0 || state.deposed || !state.pending.is_empty() {
            return 0;
        }
        let Some(h) = state.host.as_ref() else {
            return 0;
        };
        let Ok((_, defs)) = self.ctx.configs.definitions().await else {
            return 0;
        };
        let redeliver =
            i64::try_from(self.ctx.settings.redeliver_after.as_millis()).unwrap_or(i64::MAX);
        let until = defs
            .label_queries
            .values()
            .filter_map(|q| label_due_at(h, &state.label_sent, q, redeliver))
            .fold(now.saturating_add(most), i64::min);
        u64::try_from(until - now).unwrap_or(0)
    }

    /// Adds the label queries due on this host (each every `interval`,
    /// re-sent when unanswered after `redeliver`), and drops dynamic labels
    /// whose query was deleted.
    async fn due_label_queries(
        &self,
        state: &mut HostState,
        now: i64,
        redeliver: i64,
        queries: &mut BTreeMap<String, String>,
    ) {
        let defs = match self.ctx.configs.definitions().await {
            Ok((_, d)) => d,
            Err(e) => {
                tracing::debug!(host = %state.id, error = %e, "label queries not readable");
                return;
            }
        };
        let Some(h) = state.host.as_mut() else { return };
        let before = h.dynamic_labels.len();
        h.dynamic_labels
            .retain(|l| defs.label_queries.contains_key(l));
        h.label_checks
            .retain(|l, _| defs.label_queries.contains_key(l));
        if h.dynamic_labels.len() != before {
            // Membership changes the host's config and listings: written
            // through (a failed write is retried by the next flush).
            state.dirty = true;
            state.record_dirty = true;
            if let Err(e) = self.persist(state).await {
                tracing::warn!(host = %state.id, error = %e, "dynamic label removal not stored yet");
            }
        }
        let Some(h) = state.host.as_ref() else { return };
        for q in defs.label_queries.values() {
            if label_due_at(h, &state.label_sent, q, redeliver).is_none_or(|due| now < due) {
                continue;
            }
            queries.insert(format!("{LABEL_QUERY_PREFIX}{}", q.label), q.sql.clone());
            state.label_sent.insert(q.label.clone(), now);
        }
    }

    /// Applies answers to label queries: membership while the query
    /// returns rows. A change of membership is written through (it changes
    /// the host's config and label index); a bare check time is flushed
    /// with the next write.
    async fn label_answers(
        &self,
        state: &mut HostState,
        answers: Vec<gatehouse_proto::v1::QueryResult>,
        now: i64,
    ) -> Result<(), Fail> {
        let mut changed = false;
        for r in answers {
            let label = r.query_id[LABEL_QUERY_PREFIX.len()..].to_owned();
            state.label_sent.remove(&label);
            let rows: Vec<Value> = serde_json::from_slice(&r.rows_json).unwrap_or_default();
            let member = r.status == 0 && !rows.is_empty();
            let Some(h) = state.host.as_mut() else {
                continue;
            };
            h.label_checks.insert(label.clone(), now);
            state.dirty = true;
            state.record_dirty = true;
            let has = h.dynamic_labels.contains(&label);
            if member && !has {
                h.dynamic_labels.push(label.clone());
                h.dynamic_labels.sort();
                changed = true;
            } else if !member && has {
                h.dynamic_labels.retain(|l| l != &label);
                changed = true;
            }
            if changed {
                tracing::info!(host = %state.id, label, member, "dynamic label membership changed");
            }
        }
        if changed {
            self.persist(state).await?;
        }
        Ok(())
    }

    async fn write(&self, state: &mut HostState, op: WriteOp) -> host_reply::Result {
        let now = self.ctx.settings.clock.now_ms();
        let (labels, campaign_answers): (Vec<_>, Vec<_>) = op
            .results
            .into_iter()
            .partition(|r| r.query_id.starts_with(LABEL_QUERY_PREFIX));
        if !labels.is_empty()
            && let Err(e) = self.label_answers(state, labels, now).await
        {
            return e.during("label membership could not be stored").reply();
        }
        let mut results = Vec::with_capacity(campaign_answers.len());
        for r in campaign_answers {
            // The first answer wins: a repeat (an agent retry after a lost
            // response) is ignored. A late answer to an expired delivery is
            // still recorded.
            let wanted = state.pending.contains(&r.query_id)
                || matches!(
                    self.ctx.store.get_delivery(&r.query_id, &state.id).await,
                    Ok(Some(d)) if !matches!(d.state, DeliveryState::Answered | DeliveryState::Failed)
                );
            if !wanted {
                tracing::debug!(host = %state.id, query = %r.query_id, "answer for an unknown or answered campaign ignored");
                continue;
            }
            let rows: Vec<Value> = serde_json::from_slice(&r.rows_json).unwrap_or_default();
            let stats: Map<String, Value> =
                serde_json::from_slice(&r.stats_json).unwrap_or_default();
            results.push(CampaignResult {
                campaign_id: r.query_id,
                host_id: state.id.clone(),
                rows,
                status: r.status,
                message: r.message,
                stats,
                received_at: now,
            });
        }
        if !results.is_empty() {
            let fence = match self.fence(state) {
                Ok(f) => f,
                Err(e) => return e.reply(),
            };
            if let Err(e) = self.ctx.store.record_results(&results, fence).await {
                // The agent keeps its results and merges them into its next write.
                let e = self.store_error(state, e);
                return e.during("results could not be stored").reply();
            }
            for r in &results {
                state.pending.remove(&r.campaign_id);
            }
            if let Some(bus) = self.ctx.events.get() {
                // For operators watching the campaigns; stored already.
                for r in &results {
                    let answer = gatehouse_bus::events::campaign_answer(r);
                    if let Err(e) = gatehouse_bus::events::publish_to(
                        bus.as_ref(),
                        &CAMPAIGN_ANSWERS,
                        &r.campaign_id,
                        &answer,
                    )
                    .await
                    {
                        tracing::debug!(campaign = %r.campaign_id, error = %e, "answer not announced");
                    }
                }
            }
        }
        host_reply::Result::Ok(OkReply::default())
    }

    async fn handle_request(
        &self,
        state: &mut HostState,
        op: host_request::Op,
        epoch: u64,
    ) -> host_reply::Result {
        use host_request::Op;
        match op {
            Op::Enroll(e) => self.enroll(state, e).await,
            Op::SetLabels(l) => {
                let Some(h) = state.host.as_mut() else {
                    return Fail::not_found().reply();
                };
                let mut labels = l.labels;
                labels.sort();
                labels.dedup();
                h.labels = labels;
                match self.persist(state).await {
                    Ok(()) => host_reply::Result::Ok(OkReply::default()),
                    Err(e) => e.during("labels could not be stored").reply(),
                }
            }
            Op::RotateKey(r) => {
                let Some(h) = state.host.as_mut() else {
                    return Fail::not_found().reply();
                };
                h.key_epoch += 1;
                h.key_revoked = r.revoke;
                let epoch = h.key_epoch;
                match self.persist(state).await {
                    Ok(()) => {
                        tracing::info!(host = %state.id, epoch, revoked = r.revoke, "node key changed");
                        let node_key = if r.revoke {
                            String::new()
                        } else {
                            self.ctx.keys.mint(&state.id, epoch)
                        };
                        host_reply::Result::Key(KeyOk { node_key, epoch })
                    }
                    Err(e) => e.during("key change could not be stored").reply(),
                }
            }
            Op::DeleteHost(_) => {
                if state.host.is_none() {
                    return Fail::not_found().reply();
                }
                let fence = match self.fence(state) {
                    Ok(f) => f,
                    Err(e) => return e.reply(),
                };
                match self.ctx.store.delete_host(&state.id, fence).await {
                    Ok(_) => {
                        tracing::info!(host = %state.id, "host deleted");
                        state.host = None;
                        state.pending.clear();
                        state.dirty = false;
                        state.record_dirty = false;
                        host_reply::Result::Ok(OkReply::default())
                    }
                    Err(e) => {
                        let e = self.store_error(state, e);
                        e.during("host could not be deleted").reply()
                    }
                }
            }
            agent_op => {
                if let Err(reply) = self.authenticate(state, epoch).await {
                    return reply;
                }
                match agent_op {
                    Op::Touch(_) => {
                        let now = self.ctx.settings.clock.now_ms();
                        host_reply::Result::Ok(OkReply {
                            quiet_ms: self.quiet_ms(state, now).await,
                        })
                    }
                    Op::Config(_) => self.config(state).await,
                    Op::Read(_) => self.read(state).await,
                    Op::Write(w) => self.write(state, w).await,
                    Op::Enroll(_) | Op::SetLabels(_) | Op::RotateKey(_) | Op::DeleteHost(_) => {
                        Fail::new(FailureKind::Unsupported, "unreachable operation").reply()
                    }
                }
            }
        }
    }
}

impl HostActor {
    /// Starts the actor of host `id`: its state is read from the store
    /// here (the host record and its open live-query deliveries), then its
    /// task takes messages. A store error is returned and no actor starts.
    pub async fn spawn(ctx: Arc<HostCtx>, id: HostId) -> Result<HostRef, StoreError> {
        let host = ctx.store.get_host(&id).await?;
        let mut pending = Open::default();
        if host.is_some() {
            for (c, d) in ctx.store.open_deliveries(&id).await? {
                pending.insert(Arc::new(c), d);
            }
        }
        let state = HostState {
            persisted_last_seen: host.as_ref().map_or(0, |h| h.last_seen),
            id,
            host,
            pending,
            last_activity: Instant::now(),
            dirty: false,
            record_dirty: false,
            deposed: false,
            label_sent: BTreeMap::new(),
        };
        let (mail, inbox) = mpsc::unbounded_channel();
        let me = HostRef {
            mail,
            id: INCARNATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        tokio::spawn(HostActor { ctx }.run(me.id, state, inbox));
        Ok(me)
    }

    /// The actor's life: one message at a time until it stops (idle,
    /// deposed, asked to), then its last write. Messages still queued are
    /// dropped unanswered; their callers retry on a fresh actor.
    async fn run(
        self,
        id: u64,
        state: HostState,
        mut inbox: mpsc::UnboundedReceiver<Box<HostMsg>>,
    ) {
        let mut live = Live {
            ctx: &self.ctx,
            id,
            state,
        };
        let mut done = None;
        while let Some(msg) = inbox.recv().await {
            // Boxed: the task holds a message's work only while it runs,
            // so an idle actor is its state and a small loop.
            if let Next::Stop(d) = Box::pin(self.on_message(*msg, &mut live.state)).await {
                done = d;
                break;
            }
        }
        // Leave the registry first so new requests start a fresh actor,
        // and take no more mail.
        self.ctx.registry.remove(&live.state.id, Some(id));
        inbox.close();
        let state = &mut live.state;
        if state.dirty
            && !state.deposed
            && let Err(e) = self.flush(state).await
        {
            tracing::warn!(host = %state.id, error = %e, "final host write failed");
        }
        // Queued stop requests hear of the stop as their `done` drops.
        drop(inbox);
        if let Some(done) = done {
            let _ = done.send(());
        }
    }

    /// One message's work, and whether the actor goes on.
    async fn on_message(&self, msg: HostMsg, state: &mut HostState) -> Next {
        match msg {
            HostMsg::Request {
                op,
                key_epoch,
                reply,
            } => {
                state.last_activity = Instant::now();
                let result = self.handle_request(state, op, key_epoch).await;
                let _ = reply.send(result);
                if state.deposed {
                    tracing::debug!(host = %state.id, "host actor deposed; stopping");
                    return Next::Stop(None);
                }
            }
            HostMsg::CampaignQueued(c) => {
                if state.host.is_some() {
                    // As `create_campaign` wrote it (kept as it is when
                    // open already). Not read back: a delivery answered
                    // meanwhile is final in the store, and the read that
                    // would send it again finds it so (`put_delivery`
                    // never rewrites a final delivery).
                    let d = Delivery::queued(&c.id, &state.id, c.created_at);
                    state.pending.insert(c, d);
                }
            }
            HostMsg::CampaignEnded {
                campaign_id,
                ended_at,
            } => {
                if let Some((c, _)) = state.pending.get_mut(&campaign_id) {
                    let c = Arc::make_mut(c);
                    c.expires_at = c.expires_at.min(ended_at);
                }
            }
            HostMsg::Tick => {
                let flush = i64::try_from(self.ctx.settings.last_seen_flush.as_millis())
                    .unwrap_or(i64::MAX);
                if state.dirty
                    && state
                        .host
                        .as_ref()
                        .is_some_and(|h| h.last_seen - state.persisted_last_seen >= flush)
                    && let Err(e) = self.flush(state).await
                    && let Some(like_it) = self.ctx.log_throttle.admit("host_write")
                {
                    tracing::warn!(host = %state.id, error = %e, left_out_since_last = like_it, "host write failed");
                }
                if state.last_activity.elapsed() >= self.ctx.settings.passivate_after {
                    tracing::debug!(host = %state.id, "passivating idle host actor");
                    return Next::Stop(None);
                }
            }
            HostMsg::Stop { why, done } => {
                tracing::debug!(host = %state.id, why, "host actor stopping");
                return Next::Stop(Some(done));
            }
        }
        Next::Continue
    }
}
