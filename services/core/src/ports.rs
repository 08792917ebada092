//! The ports every role talks through. Adapters live in `gatehouse-store`
//! (embedded fjall, ScyllaDB) and `gatehouse-bus` (in-process, NATS); each
//! port has one conformance suite that every adapter passes.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::HostId;
use crate::model::{
    ApiToken, AuditEvent, Campaign, CampaignResult, CarveSession, Credential, Delivery,
    EnrollSecret, Host, LabelConfig, LabelQuery, LogRecords, Page, Query, ResultFilter, ResultLog,
    Schedule, StatusLog, User,
};
use crate::rules::{Alert, DeadLetter, Rule};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("corrupt record {key}: {reason}")]
    Corrupt { key: String, reason: String },
    /// The request cannot be served as asked (a caller error).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Too many requests in flight; retry later.
    #[error("storage is over capacity, retry later")]
    Busy,
    /// Free space is below the watermark: log batches are refused (the
    /// agent keeps them) so metadata writes still find room.
    #[error(
        "disk nearly full at {path}: {free} bytes free, log batches need {min} (limits.min_free_disk_bytes)"
    )]
    DiskLow { path: String, free: u64, min: u64 },
    /// A write carried an older fencing token than one already stored for
    /// the host: its writer was deposed (another hostd owns the shard).
    #[error("host {host} is owned by a newer writer (fencing token {held} > {presented})")]
    Fenced {
        host: String,
        presented: u64,
        held: u64,
    },
}

/// The fencing token that travels with every write of host-owned state (a
/// host record, its last-seen time, its live-query deliveries): the shard
/// lease revision held by the hostd that owns the host. Lease revisions only
/// grow, so a shard's next owner always writes with a larger token than its
/// deposed predecessor.
///
/// A store never lets a write with a smaller token supersede one with a
/// larger token for the same host: the embedded store rejects it
/// ([`StoreError::Fenced`]); ScyllaDB orders the writes by a timestamp
/// derived from the token, so the stale write is superseded whatever order
/// the writes arrive in. [`Fence::NONE`] is the unsharded writer (the
/// all-in-one), the only writer there is, and is not checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fence(pub u64);

impl Fence {
    pub const NONE: Fence = Fence(0);

    pub fn is_none(self) -> bool {
        self.0 == 0
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Outcome of storing one carve block.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockOutcome {
    /// Distinct blocks now held for the session.
    pub blocks_received: u64,
    /// False when this block id had been stored before (a re-send).
    pub new_block: bool,
}

/// Durable storage, one port per area; every write is durable when the
/// call returns. [`Store`] is all of them: an adapter implements each area
/// (one file per area), and callers hold an `Arc<dyn Store>`.
pub trait Store:
    HostStore
    + DefinitionStore
    + LogStore
    + CampaignStore
    + CarveStore
    + IdentityStore
    + AuditStore
    + RuleStore
    + MetaStore
    + 'static
{
}

impl<T> Store for T where
    T: HostStore
        + DefinitionStore
        + LogStore
        + CampaignStore
        + CarveStore
        + IdentityStore
        + AuditStore
        + RuleStore
        + MetaStore
        + 'static
{
}

/// Every store port, for code that calls a concrete store's methods (an
/// `Arc<dyn Store>` needs only [`Store`] in scope):
/// `use gatehouse_core::ports::stores::*;`.
pub mod stores {
    pub use super::{
        AuditStore, CampaignStore, CarveStore, DefinitionStore, HostStore, IdentityStore, LogStore,
        MetaStore, RuleStore, Store,
    };
}

/// Hosts (written only by the host's actor).
#[async_trait]
pub trait HostStore: Send + Sync {
    async fn get_host(&self, id: &HostId) -> StoreResult<Option<Host>>;
    async fn put_host(&self, host: &Host, fence: Fence) -> StoreResult<()>;
    /// Records when a host was last seen without rewriting its record: the
    /// actor's frequent write. Reads return the later of this time and the
    /// record's own `last_seen`. A host that does not exist is left alone.
    /// The host's one actor calls it with increasing times.
    async fn touch_host(&self, id: &HostId, last_seen: i64, fence: Fence) -> StoreResult<()>;
    /// Removes the host's record and its label memberships (its logs and
    /// answers stay until retention). False when there was no such host.
    async fn delete_host(&self, id: &HostId, fence: Fence) -> StoreResult<bool>;
    /// Up to `limit` hosts in the store's own stable order, starting at
    /// `cursor` (an opaque `Page::next` from an earlier call). Every host
    /// is visited once by following `next` until it is `None`.
    async fn list_hosts(&self, cursor: Option<&str>, limit: usize) -> StoreResult<Page<Host>>;
    /// Ids of the hosts whose label set ([`Host::label_set`]) holds
    /// `label` (`all` and `platform:<family>` included).
    async fn hosts_with_label(&self, label: &str) -> StoreResult<Vec<HostId>>;
    /// Up to `limit` of those ids in id order, strictly after `after`: a
    /// page of a label's hosts. (By default the whole label read and
    /// sorted; a store that can stop early does.)
    async fn hosts_with_label_after(
        &self,
        label: &str,
        after: Option<&HostId>,
        limit: usize,
    ) -> StoreResult<Vec<HostId>> {
        let mut ids = self.hosts_with_label(label).await?;
        ids.sort();
        ids.dedup();
        Ok(ids
            .into_iter()
            .filter(|id| after.is_none_or(|a| id > a))
            .take(limit)
            .collect())
    }
    /// Ids of the hosts one of whose [`Host::names`] (hostname, host
    /// identifier; lower case) is `name` lower-cased.
    async fn hosts_named(&self, name: &str) -> StoreResult<Vec<HostId>>;
    /// Every distinct label set hosts have had (a set no host has any
    /// more may linger). Config changes are checked against each.
    async fn label_sets(&self) -> StoreResult<Vec<Vec<String>>>;
}

/// Config definitions: queries, schedules, label configs and label queries,
/// the config generation and content-addressed config blobs.
#[async_trait]
pub trait DefinitionStore: Send + Sync {
    async fn put_query(&self, q: &Query) -> StoreResult<()>;
    async fn delete_query(&self, name: &str) -> StoreResult<bool>;
    async fn list_queries(&self) -> StoreResult<Vec<Query>>;
    async fn put_schedule(&self, s: &Schedule) -> StoreResult<()>;
    async fn delete_schedule(&self, name: &str) -> StoreResult<bool>;
    async fn list_schedules(&self) -> StoreResult<Vec<Schedule>>;
    async fn put_label_config(&self, c: &LabelConfig) -> StoreResult<()>;
    async fn delete_label_config(&self, label: &str) -> StoreResult<bool>;
    async fn list_label_configs(&self) -> StoreResult<Vec<LabelConfig>>;
    async fn put_label_query(&self, q: &LabelQuery) -> StoreResult<()>;
    async fn delete_label_query(&self, label: &str) -> StoreResult<bool>;
    async fn list_label_queries(&self) -> StoreResult<Vec<LabelQuery>>;
    /// Increments and returns the config generation.
    async fn bump_config_generation(&self) -> StoreResult<u64>;
    async fn config_generation(&self) -> StoreResult<u64>;
    /// Content-addressed config blobs (immutable once written).
    async fn put_config_blob(&self, hash: &str, bytes: &[u8]) -> StoreResult<()>;
    async fn get_config_blob(&self, hash: &str) -> StoreResult<Option<Bytes>>;
}

/// Result and status logs, idempotent on `line_id`.
#[async_trait]
pub trait LogStore: Send + Sync {
    async fn append_logs(&self, records: &LogRecords) -> StoreResult<()>;
    /// Lines in agent-time order. The filter names a host, a query name,
    /// or both; neither is `StoreError::Invalid`.
    async fn query_results(&self, filter: &ResultFilter) -> StoreResult<Vec<ResultLog>>;
    async fn query_status(
        &self,
        host: &HostId,
        since: i64,
        until: i64,
        limit: usize,
    ) -> StoreResult<Vec<StatusLog>>;
    /// Deletes log lines whose storage day (`logs::bucket_day`) is before
    /// `day`. Stores that expire lines by TTL return 0 and say so in
    /// [`Store::expires_by_ttl`].
    async fn purge_logs_before_day(&self, day: u32) -> StoreResult<u64>;
    /// True when the store drops old lines itself (TTL), so the retention
    /// job has nothing to do.
    fn expires_by_ttl(&self) -> bool {
        false
    }
}

/// Live-query campaigns, their per-host deliveries and answers.
#[async_trait]
pub trait CampaignStore: Send + Sync {
    /// Stores the campaign and a queued delivery for each target.
    async fn create_campaign(&self, c: &Campaign, targets: &[HostId]) -> StoreResult<()>;
    async fn get_campaign(&self, id: &str) -> StoreResult<Option<Campaign>>;
    /// Rewrites an existing campaign's record (its deliveries are left as
    /// they are); false when there is no such campaign.
    async fn update_campaign(&self, c: &Campaign) -> StoreResult<bool>;
    /// Up to `limit` campaigns, newest first (by creation, then id),
    /// strictly after the `(created_at, id)` of `before` (the last of the
    /// previous page).
    async fn list_campaigns(
        &self,
        before: Option<(i64, &str)>,
        limit: usize,
    ) -> StoreResult<Vec<Campaign>>;
    /// Deliveries for `host` that are not final yet, with their campaigns.
    async fn open_deliveries(&self, host: &HostId) -> StoreResult<Vec<(Campaign, Delivery)>>;
    /// Written by the host's actor; `create_campaign` writes the queued
    /// deliveries, which any fenced write supersedes. A final delivery
    /// (answered, failed, expired) is never rewritten: false, and nothing
    /// written, when the stored one is final already. A store may return
    /// before a delivery that is neither final nor the first write of a
    /// new fence is durable (ADR 0053): lost with the machine, the query
    /// is delivered once more.
    async fn put_delivery(&self, d: &Delivery, fence: Fence) -> StoreResult<bool>;
    async fn get_delivery(&self, campaign: &str, host: &HostId) -> StoreResult<Option<Delivery>>;
    /// Records answers and marks the deliveries answered/failed (written by
    /// the hosts' actor, with its fence).
    async fn record_results(&self, results: &[CampaignResult], fence: Fence) -> StoreResult<()>;
    async fn list_deliveries(&self, campaign: &str) -> StoreResult<Vec<Delivery>>;
    async fn list_results(&self, campaign: &str) -> StoreResult<Vec<CampaignResult>>;
    /// One host's answer to a campaign, if it answered.
    async fn get_result(
        &self,
        campaign: &str,
        host: &HostId,
    ) -> StoreResult<Option<CampaignResult>>;
}

/// File carves: sessions and their blocks.
#[async_trait]
pub trait CarveStore: Send + Sync {
    async fn create_carve(&self, s: &CarveSession) -> StoreResult<()>;
    async fn get_carve(&self, session_id: &str) -> StoreResult<Option<CarveSession>>;
    async fn update_carve(&self, s: &CarveSession) -> StoreResult<()>;
    /// Up to `limit` carves, newest first (by creation, then session id),
    /// strictly after the `(created_at, session_id)` of `before`.
    async fn list_carves(
        &self,
        before: Option<(i64, &str)>,
        limit: usize,
    ) -> StoreResult<Vec<CarveSession>>;
    async fn put_carve_block(
        &self,
        session_id: &str,
        block_id: u64,
        data: &[u8],
    ) -> StoreResult<BlockOutcome>;
    async fn get_carve_block(&self, session_id: &str, block_id: u64) -> StoreResult<Option<Bytes>>;
}

/// Who may enroll and who may operate: enroll secrets, users and their API
/// tokens (tokens found by the SHA-256 of their secret; a token's secret
/// never changes, revocation is an update).
#[async_trait]
pub trait IdentityStore: Send + Sync {
    /// Creates or updates (labels, expiry, revocation) a secret. Changing
    /// the hash of an existing id is `StoreError::Conflict`.
    async fn put_enroll_secret(&self, s: &EnrollSecret) -> StoreResult<()>;
    async fn enroll_secret_by_hash(&self, sha256: &str) -> StoreResult<Option<EnrollSecret>>;
    async fn list_enroll_secrets(&self) -> StoreResult<Vec<EnrollSecret>>;

    // Users and their API tokens (tokens found by the SHA-256 of their
    // secret; a token's secret never changes, revocation is an update).
    async fn put_user(&self, u: &User) -> StoreResult<()>;
    async fn get_user(&self, name: &str) -> StoreResult<Option<User>>;
    async fn list_users(&self) -> StoreResult<Vec<User>>;
    async fn put_token(&self, t: &ApiToken) -> StoreResult<()>;
    async fn token_by_hash(&self, sha256: &str) -> StoreResult<Option<ApiToken>>;
    async fn list_tokens(&self) -> StoreResult<Vec<ApiToken>>;
    /// Sets (replaces) a user's password.
    async fn put_credential(&self, c: &Credential) -> StoreResult<()>;
    async fn credential(&self, user: &str) -> StoreResult<Option<Credential>>;
}

/// The audit log: append-only, read newest first.
#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn append_audit(&self, e: &AuditEvent) -> StoreResult<()>;
    /// Up to `limit` events, newest first, strictly older than the
    /// `(at, id)` of `before` (the last event of the previous page).
    async fn list_audit(
        &self,
        before: Option<(i64, &str)>,
        limit: usize,
    ) -> StoreResult<Vec<AuditEvent>>;
}

/// Rules, alerts and undeliverable webhook calls.
#[async_trait]
pub trait RuleStore: Send + Sync {
    async fn put_rule(&self, r: &Rule) -> StoreResult<()>;
    async fn delete_rule(&self, name: &str) -> StoreResult<bool>;
    async fn list_rules(&self) -> StoreResult<Vec<Rule>>;
    /// Creates or replaces the alert keyed by `(at, id)` (both
    /// deterministic for one event, so a repeat overwrites itself).
    async fn put_alert(&self, a: &Alert) -> StoreResult<()>;
    async fn get_alert(&self, at: i64, id: &str) -> StoreResult<Option<Alert>>;
    /// Up to `limit` alerts, newest first, strictly older than the
    /// `(at, id)` of `before`.
    async fn list_alerts(
        &self,
        before: Option<(i64, &str)>,
        limit: usize,
    ) -> StoreResult<Vec<Alert>>;
    async fn put_dead_letter(&self, d: &DeadLetter) -> StoreResult<()>;
    async fn get_dead_letter(&self, id: &str) -> StoreResult<Option<DeadLetter>>;
    async fn list_dead_letters(&self) -> StoreResult<Vec<DeadLetter>>;
    async fn delete_dead_letter(&self, id: &str) -> StoreResult<bool>;
}

/// Small named values (generation counters, bootstrap facts), and the
/// store's own health.
#[async_trait]
pub trait MetaStore: Send + Sync {
    async fn get_meta(&self, key: &str) -> StoreResult<Option<Bytes>>;
    async fn put_meta(&self, key: &str, value: &[u8]) -> StoreResult<()>;
    /// Whether the store takes writes right now (readiness, metrics); an
    /// error is a store that cannot be reached. Cheap enough to call
    /// every few seconds.
    async fn health(&self) -> StoreResult<StoreHealth>;
}

/// What a store says about its writes ([`MetaStore::health`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreHealth {
    /// Free bytes on the filesystem it writes to (an embedded store).
    pub free_bytes: Option<u64>,
    /// Set while every write fails or is refused (a full disk, a store
    /// being reopened after a failed write), saying why and where.
    pub writes_refused: Option<String>,
    /// Set while log batches are refused (free space below the watermark),
    /// saying why; other writes still succeed.
    pub logs_refused: Option<String>,
    /// Journal syncs done and the write batches they made durable since
    /// the store (or its database, after a reopen) started: several
    /// batches per sync when writers share them (an embedded store).
    pub journal_syncs: Option<u64>,
    pub journal_batches: Option<u64>,
    /// The same for the log lines' journal (an embedded store keeps them
    /// in a database of their own): log batches per sync is how many
    /// share one.
    pub log_journal_syncs: Option<u64>,
    pub log_journal_batches: Option<u64>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BusError {
    #[error("no responders on {0}")]
    NoResponders(String),
    #[error("request on {0} timed out")]
    Timeout(String),
    #[error("bus closed")]
    Closed,
    #[error("bus unavailable: {0}")]
    Unavailable(String),
}

/// A way to answer one request.
#[async_trait]
pub trait Replier: Send {
    async fn reply(self: Box<Self>, payload: Bytes) -> Result<(), BusError>;
}

/// A message delivered to a subscriber.
pub struct BusMessage {
    pub subject: String,
    pub payload: Bytes,
    /// Present when the sender awaits a reply.
    pub reply: Option<Box<dyn Replier>>,
}

impl std::fmt::Debug for BusMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusMessage")
            .field("subject", &self.subject)
            .field("len", &self.payload.len())
            .field("reply", &self.reply.is_some())
            .finish()
    }
}

/// A live subscription; dropping it unsubscribes.
pub struct Subscription {
    pub messages: tokio::sync::mpsc::Receiver<BusMessage>,
    /// Held only for its `Drop`.
    pub guard: Box<dyn Send + Sync>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subscription")
    }
}

impl Subscription {
    pub async fn next(&mut self) -> Option<BusMessage> {
        self.messages.recv().await
    }
}

/// Told the latency and outcome of each request an adapter makes to its
/// backend (a statement, a publish), so adapters need no metrics library:
/// the process wiring hands them one that feeds its registry.
pub trait RequestObserver: Send + Sync + 'static {
    /// `request` names what was asked (a statement), `outcome` how it
    /// ended (`ok`, `busy`, `unavailable`, `rejected`).
    fn observe(&self, request: &str, outcome: &str, seconds: f64);
}

/// Subject-addressed messaging with NATS semantics: `*` matches one token,
/// `>` the rest; subscribers in the same queue group share messages, others
/// each get a copy.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError>;
    async fn request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError>;
    async fn subscribe(
        &self,
        subject: &str,
        queue_group: Option<&str>,
    ) -> Result<Subscription, BusError>;
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("log pipeline is over capacity, retry later")]
    Backpressure,
    #[error("log pipeline unavailable: {0}")]
    Unavailable(String),
}

/// Where the edge hands log batches. Returns only once the batch is
/// durable; the edge acknowledges the agent after that.
#[async_trait]
pub trait LogSink: Send + Sync + 'static {
    async fn append(&self, records: LogRecords) -> Result<(), SinkError>;
}

/// Sees every log batch once it is durable (the rule engine). Called
/// before the batch is acknowledged, so a batch written but not observed
/// (a crash in between) is re-delivered and observed then: observers must
/// be idempotent.
#[async_trait]
pub trait LogObserver: Send + Sync + 'static {
    async fn observe(&self, records: &LogRecords);
}

/// Why the forward log could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("forward log unavailable: {0}")]
    Unavailable(String),
    /// The forward log holds all it may and could not make room.
    #[error("forward log full")]
    Full,
}

/// One stored log batch in the forward log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardEntry {
    /// Its position: gapless, from 1, in append order.
    pub seq: u64,
    /// Lines appended before it (so a reader that missed entries trimmed
    /// by retention knows how many lines it missed).
    pub first_line: u64,
    /// Lines in the batch.
    pub lines: u32,
    /// When it was appended (ms since the epoch).
    pub at_ms: i64,
    /// The batch (`gatehouse.v1.LogBatch`).
    pub payload: Bytes,
}

/// What the forward log holds: entries `first..next`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardBounds {
    /// The oldest retained entry (`== next` when empty).
    pub first: u64,
    /// Lines appended before `first`.
    pub first_line: u64,
    /// The next entry's sequence number.
    pub next: u64,
    /// Lines appended before `next`.
    pub next_line: u64,
    /// When the oldest retained entry was appended (ms), if any.
    pub first_at_ms: Option<i64>,
}

impl ForwardBounds {
    /// The cursor at the oldest retained entry.
    pub fn oldest(&self) -> ForwardCursor {
        ForwardCursor {
            seq: self.first,
            line: self.first_line,
        }
    }

    /// The cursor past the newest entry.
    pub fn newest(&self) -> ForwardCursor {
        ForwardCursor {
            seq: self.next,
            line: self.next_line,
        }
    }
}

/// Where a reader of the forward log stands: the next entry it reads and
/// the lines before it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardCursor {
    pub seq: u64,
    pub line: u64,
}

/// The ordered, retained log of stored log batches that log destinations
/// read, each from a cursor of its own (an equivalent of the cluster's
/// stream for one process). A batch is appended once it is stored and
/// before the agent is acknowledged; retention (by bytes and age) drops
/// the oldest entries whether or not every reader has read them, so a
/// dead destination never holds agents up.
#[async_trait]
pub trait ForwardLog: Send + Sync + 'static {
    /// Appends a batch of `lines` lines; the same `id` within the
    /// duplicate window is not appended again (its sequence number is
    /// returned). Durable when it returns.
    async fn append(&self, id: &str, lines: u32, payload: Bytes) -> Result<u64, ForwardError>;
    /// Up to `max` entries from `from` on (entries trimmed by retention
    /// are skipped), oldest first.
    async fn read(&self, from: u64, max: usize) -> Result<Vec<ForwardEntry>, ForwardError>;
    async fn bounds(&self) -> Result<ForwardBounds, ForwardError>;
    /// Resolves once an entry at or past `seq` may exist (an append
    /// happened), or after `within`.
    async fn wait_for(&self, seq: u64, within: Duration);
    /// The cursor of the first entry appended at or after `at_ms` (the
    /// next one when there is none; the oldest retained when all are
    /// later).
    async fn seek(&self, at_ms: i64) -> Result<ForwardCursor, ForwardError>;
    /// A reader's saved cursor (`None`: it never saved one).
    async fn cursor(&self, reader: &str) -> Result<Option<ForwardCursor>, ForwardError>;
    /// Saves a reader's cursor (durably).
    async fn set_cursor(&self, reader: &str, cursor: ForwardCursor) -> Result<(), ForwardError>;
    /// Whether appends can succeed now (readiness): an error says why not.
    async fn health(&self) -> Result<(), ForwardError>;
    /// A setting kept beside the log (destinations defined through the
    /// API, pause flags, pending replays, states published for other
    /// processes), shared by every process that opens the same log.
    async fn setting(&self, key: &str) -> Result<Option<Bytes>, ForwardError>;
    /// Every setting whose key starts with `prefix`, sorted by key.
    async fn settings(&self, prefix: &str) -> Result<Vec<(String, Bytes)>, ForwardError>;
    /// Sets (`Some`) or removes (`None`) a setting, durably.
    async fn put_setting(&self, key: &str, value: Option<Bytes>) -> Result<(), ForwardError>;
}

/// The forward log as its writers see it (the store's writers, the audit
/// log, the rule engine): appended to only while some destination is
/// defined, so a fleet without destinations pays nothing for them.
#[derive(Clone)]
pub struct Forwarding {
    pub log: std::sync::Arc<dyn ForwardLog>,
    /// False while no destination is defined.
    pub active: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Forwarding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarding")
            .field("active", &self.is_active())
            .finish()
    }
}

impl Forwarding {
    pub fn is_active(&self) -> bool {
        self.active.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Appends (see [`ForwardLog::append`]) while some destination is
    /// defined; `Ok(None)`: none is, nothing appended.
    pub async fn append(
        &self,
        id: &str,
        lines: u32,
        payload: Bytes,
    ) -> Result<Option<u64>, ForwardError> {
        if !self.is_active() {
            return Ok(None);
        }
        self.log.append(id, lines, payload).await.map(Some)
    }
}

/// Where a destination replays from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayFrom {
    /// The oldest entry retained.
    Oldest,
    /// The first entry stored at or after this time (ms).
    Time(i64),
}

/// Why an operation on a log destination was refused.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    /// The definition is invalid; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// No destination has that name.
    #[error("destination {0}")]
    NotFound(String),
    /// Defined in the configuration file: changed there, not through the
    /// API.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Forward(#[from] ForwardError),
}

/// The log destinations, for operators: their states, pause and resume
/// (kept across restarts), replay, and destinations defined through the
/// API (kept with the forward log, started and stopped without a
/// restart).
#[async_trait]
pub trait Destinations: Send + Sync + 'static {
    async fn list(&self) -> Result<Vec<crate::model::DestinationState>, ForwardError>;
    /// Pauses or resumes one.
    async fn set_paused(
        &self,
        name: &str,
        paused: bool,
    ) -> Result<crate::model::DestinationState, DestinationError>;
    /// Moves one's cursor back (or forward) to `from`; lines from there
    /// are delivered again.
    async fn replay(
        &self,
        name: &str,
        from: ReplayFrom,
    ) -> Result<crate::model::DestinationState, DestinationError>;
    /// Defines (or redefines) a destination through the API: `config` is
    /// a `[[destinations]]` entry as JSON, without its name. The answer
    /// shows it with secrets redacted.
    async fn put(
        &self,
        name: &str,
        config: serde_json::Value,
    ) -> Result<crate::model::DestinationState, DestinationError>;
    /// Removes a destination defined through the API.
    async fn delete(&self, name: &str) -> Result<(), DestinationError>;
}
