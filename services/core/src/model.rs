//! The domain model shared by every role and every store.
//!
//! Records are serde types; stores persist them as they see fit. Times are
//! unix milliseconds unless a field says otherwise.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::HostId;
use crate::logline::LogLine;

/// An enrolled host. Owned by its `HostActor`: only the actor writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Host {
    pub id: HostId,
    /// The identity the id was derived from (e.g. `hw:<uuid>`).
    pub identity: String,
    pub host_identifier: String,
    pub hostname: String,
    /// `darwin`, `linux`, `windows`, `freebsd` or `unknown`.
    pub platform: String,
    pub platform_type: String,
    pub os_name: String,
    pub os_version: String,
    pub osquery_version: String,
    /// `host_details` as last sent at enrollment.
    pub details: HostDetails,
    /// Labels set by operators (the built-in ones are derived, see
    /// [`Host::label_set`]).
    pub labels: Vec<String>,
    pub enrolled_at: i64,
    pub last_enrolled_at: i64,
    pub enroll_count: u64,
    /// Current node-key epoch; keys minted for other epochs are invalid.
    pub key_epoch: u64,
    /// When set, the host has no valid key until it enrolls again.
    pub key_revoked: bool,
    pub last_seen: i64,
    pub last_ip: String,
    pub config_hash: String,
    pub config_generation: u64,
    /// Dynamic labels the host's answers to label queries put it in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dynamic_labels: Vec<String>,
    /// When each label query was last answered (ms), by label.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub label_checks: std::collections::BTreeMap<String, i64>,
}

/// The names a host with this hostname and host identifier is addressed
/// by ([`Host::names`]): trimmed, in lower case, each once, sorted.
pub fn host_names(hostname: &str, host_identifier: &str) -> Vec<String> {
    let mut names: Vec<String> = [hostname, host_identifier]
        .into_iter()
        .map(|n| n.trim().to_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A host's `host_details` (osquery's tables at enrollment), kept as
/// compact JSON text with members in name order, parsed only when read:
/// every host actor holds its host's record, and as a tree of `Value`s
/// the details were its largest part (6.4 KB of heap per host,
/// docs/benchmarks/performance.md "Where the memory is").
#[derive(Debug, Clone)]
pub struct HostDetails(Box<serde_json::value::RawValue>);

impl HostDetails {
    pub fn from_map(details: &Map<String, Value>) -> Self {
        Self(serde_json::value::to_raw_value(details).unwrap_or_else(|_| Self::empty_raw()))
    }

    /// The details as a JSON object.
    pub fn to_map(&self) -> Map<String, Value> {
        serde_json::from_str(self.0.get()).unwrap_or_default()
    }

    /// The compact JSON text of the object.
    pub fn as_json(&self) -> &str {
        self.0.get()
    }

    fn empty_raw() -> Box<serde_json::value::RawValue> {
        serde_json::value::RawValue::from_string("{}".to_owned())
            .unwrap_or_else(|_| unreachable!("{{}} is JSON"))
    }
}

impl Default for HostDetails {
    fn default() -> Self {
        Self(Self::empty_raw())
    }
}

/// Equal when they hold the same members (the text is canonical).
impl PartialEq for HostDetails {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Serialize for HostDetails {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for HostDetails {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::from_map(&Map::<String, Value>::deserialize(d)?))
    }
}

impl schemars::JsonSchema for HostDetails {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "HostDetails".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "description": "host_details as the agent last sent them at enrollment."
        })
    }
}

impl Host {
    /// The names an operator may address the host by besides its id: its
    /// hostname and its host identifier, in lower case, each once.
    pub fn names(&self) -> Vec<String> {
        host_names(&self.hostname, &self.host_identifier)
    }

    /// Every label the host belongs to: `all`, `platform:<family>`, then the
    /// operator's and the dynamic labels, sorted and deduplicated.
    pub fn label_set(&self) -> Vec<String> {
        let mut labels = vec!["all".to_owned(), format!("platform:{}", self.platform)];
        let mut extra: Vec<String> = self.labels.clone();
        extra.extend(self.dynamic_labels.iter().cloned());
        extra.sort();
        extra.dedup();
        labels.extend(
            extra
                .into_iter()
                .filter(|l| l != "all" && !l.starts_with("platform:")),
        );
        labels
    }

    pub fn is_online(&self, now: i64, window_ms: i64) -> bool {
        now - self.last_seen <= window_ms
    }
}

/// A saved query (SQL with a name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Query {
    pub name: String,
    pub sql: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub updated_at: i64,
}

/// A query scheduled on every host carrying one of `labels`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Schedule {
    /// Name the agent logs under (inside `pack` when one is set).
    pub name: String,
    /// Name of the saved query.
    pub query: String,
    pub interval: u32,
    #[serde(default)]
    pub snapshot: bool,
    #[serde(default = "default_true")]
    pub removed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u8>,
    /// Pack the query is delivered in; `None` puts it in `schedule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack: Option<String>,
    pub labels: Vec<String>,
    #[serde(default)]
    pub updated_at: i64,
}

fn default_true() -> bool {
    true
}

/// A dynamic label: hosts answer `sql` every `interval` seconds (as a
/// live query) and belong to `label` while it returns at least one row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelQuery {
    pub label: String,
    pub sql: String,
    /// Seconds between evaluations on each host (at least 60).
    #[serde(default = "default_label_interval")]
    pub interval: u32,
    /// Only hosts of these platform families are asked (none: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub updated_at: i64,
}

fn default_label_interval() -> u32 {
    3600
}

/// The live-query id under which hosts are asked a label query.
pub const LABEL_QUERY_PREFIX: &str = "gatehouse-label:";

/// Options, decorators and file paths for every host with `label`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LabelConfig {
    pub label: String,
    #[serde(default)]
    pub options: Map<String, Value>,
    #[serde(default)]
    pub decorators: Decorators,
    /// FIM category -> paths.
    #[serde(default)]
    pub file_paths: std::collections::BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub updated_at: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Decorators {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub always: Vec<String>,
    /// Seconds (as a string, like osquery's config) -> queries.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub interval: std::collections::BTreeMap<String, Vec<String>>,
}

impl Decorators {
    pub fn is_empty(&self) -> bool {
        self.load.is_empty() && self.always.is_empty() && self.interval.is_empty()
    }
}

/// Who a campaign targets, as the operator gave it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Targets {
    #[serde(default)]
    pub hosts: Vec<HostId>,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub all: bool,
}

/// A live (distributed) query against a resolved set of hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Campaign {
    /// Also the query id the agents see.
    pub id: String,
    pub sql: String,
    pub targets: Targets,
    pub target_count: u64,
    pub created_at: i64,
    /// When it ends: its deadline, or the time it was cancelled.
    pub expires_at: i64,
    pub created_by: String,
    /// When an operator cancelled it (ms); `expires_at` is then no later,
    /// so its unanswered deliveries expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<String>,
}

impl Campaign {
    pub fn is_expired(&self, now: i64) -> bool {
        now >= self.expires_at
    }

    /// Ends it now on `by`'s word: unanswered hosts are no longer asked.
    pub fn cancel(&mut self, by: &str, now: i64) {
        self.cancelled_at = Some(now);
        self.cancelled_by = Some(by.to_owned());
        self.expires_at = self.expires_at.min(now);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    Queued,
    Delivered,
    Answered,
    Failed,
    Expired,
}

impl DeliveryState {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Answered | Self::Failed | Self::Expired)
    }
}

/// A campaign's delivery to one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Delivery {
    pub campaign_id: String,
    pub host_id: HostId,
    pub state: DeliveryState,
    pub queued_at: i64,
    #[serde(default)]
    pub delivered_at: Option<i64>,
    #[serde(default)]
    pub delivery_count: u32,
    #[serde(default)]
    pub finished_at: Option<i64>,
}

impl Delivery {
    /// A delivery waiting for its host.
    pub fn queued(campaign_id: &str, host_id: &HostId, at: i64) -> Self {
        Self {
            campaign_id: campaign_id.to_owned(),
            host_id: host_id.clone(),
            state: DeliveryState::Queued,
            queued_at: at,
            delivered_at: None,
            delivery_count: 0,
            finished_at: None,
        }
    }

    /// The delivery once `r` answered it: answered, or failed when the
    /// agent reported an error.
    pub fn finished_by(mut self, r: &CampaignResult) -> Self {
        self.state = if r.status == 0 {
            DeliveryState::Answered
        } else {
            DeliveryState::Failed
        };
        self.finished_at = Some(r.received_at);
        self
    }

    /// State as seen at `now` given the campaign's expiry.
    pub fn effective_state(&self, expires_at: i64, now: i64) -> DeliveryState {
        if !self.state.is_final() && now >= expires_at {
            DeliveryState::Expired
        } else {
            self.state
        }
    }
}

/// One host's answer to a campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CampaignResult {
    pub campaign_id: String,
    pub host_id: HostId,
    pub rows: Vec<Value>,
    pub status: i64,
    pub message: String,
    pub stats: Map<String, Value>,
    pub received_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CarveState {
    Receiving,
    Complete,
    Failed,
}

/// A file carve upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CarveSession {
    /// Random, unguessable: authenticates block uploads.
    pub session_id: String,
    pub host_id: HostId,
    pub carve_id: String,
    pub request_id: String,
    pub block_count: u64,
    pub block_size: u64,
    pub carve_size: u64,
    pub blocks_received: u64,
    pub state: CarveState,
    pub created_at: i64,
    #[serde(default)]
    pub completed_at: Option<i64>,
    /// SHA-256 of the assembled archive, once complete.
    #[serde(default)]
    pub sha256: Option<String>,
    /// `tar` or `zstd` (sniffed from the first block).
    #[serde(default)]
    pub format: Option<String>,
}

impl CarveSession {
    /// Expected length of block `id`.
    pub fn block_len(&self, id: u64) -> u64 {
        if id + 1 < self.block_count {
            self.block_size
        } else {
            self.carve_size - self.block_size * (self.block_count.saturating_sub(1))
        }
    }
}

/// Shape of a result line (§6.4–6.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResultKind {
    /// One row per line, `columns` + `action` added/removed/snapshot.
    Event,
    /// `snapshot` array of rows.
    Snapshot,
    /// `diffResults` with `added`/`removed`.
    Batched,
    /// Anything else an agent sent; stored as given.
    Other,
}

/// A stored result log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResultLog {
    pub host_id: HostId,
    pub name: String,
    /// Agent time of the run (seconds).
    pub unix_time: i64,
    pub kind: ResultKind,
    pub action: String,
    pub rows: u32,
    /// Content hash + occurrence: the idempotency key.
    pub line_id: String,
    pub received_at: i64,
    /// The line as the agent sent it (members in name order).
    pub line: LogLine,
}

/// A stored status log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StatusLog {
    pub host_id: HostId,
    pub unix_time: i64,
    pub severity: i64,
    pub message: String,
    pub line_id: String,
    pub received_at: i64,
    /// The line as the agent sent it (members in name order).
    pub line: LogLine,
}

/// What ingest persists from one agent log POST.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "log_type", content = "lines", rename_all = "lowercase")]
pub enum LogRecords {
    Results(Vec<ResultLog>),
    Status(Vec<StatusLog>),
}

impl LogRecords {
    /// A deterministic id of the batch: the same lines from the same host
    /// always give the same id, so a re-sent batch is recognised (the log
    /// stream's duplicate window drops it).
    pub fn batch_id(&self) -> String {
        let mut h = String::new();
        let mut add = |host: &str, line: &str| {
            h.push_str(host);
            h.push('/');
            h.push_str(line);
            h.push('\n');
        };
        let kind = match self {
            Self::Results(rs) => {
                rs.iter().for_each(|r| add(r.host_id.as_str(), &r.line_id));
                "r"
            }
            Self::Status(ss) => {
                ss.iter().for_each(|s| add(s.host_id.as_str(), &s.line_id));
                "s"
            }
        };
        format!("{kind}-{}", &crate::ids::sha256_hex(h.as_bytes())[..40])
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Self::Results(rs) => rs.is_empty(),
            Self::Status(ss) => ss.is_empty(),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Self::Results(rs) => rs.len(),
            Self::Status(ss) => ss.len(),
        }
    }
}

/// A filter over stored result logs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResultFilter {
    pub host_id: Option<HostId>,
    pub name: Option<String>,
    /// Inclusive lower bound, unix seconds.
    pub since: i64,
    /// Exclusive upper bound, unix seconds.
    pub until: i64,
    pub limit: usize,
    pub order: LogOrder,
    /// Only lines after this one in `order` (the last line of the
    /// previous page).
    pub after: Option<ResultCursor>,
}

/// Which lines come first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogOrder {
    #[default]
    OldestFirst,
    NewestFirst,
}

/// A result line's place in the order (agent time, host, query, line id):
/// a page's cursor.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ResultCursor {
    pub unix_time: i64,
    pub host_id: HostId,
    pub name: String,
    pub line_id: String,
}

impl ResultCursor {
    pub fn of(r: &ResultLog) -> Self {
        Self {
            unix_time: r.unix_time,
            host_id: r.host_id.clone(),
            name: r.name.clone(),
            line_id: r.line_id.clone(),
        }
    }

    /// An opaque token: the fields, each percent-free, joined by `~`
    /// (host ids, query names and line ids never hold `~`; a name that
    /// does is escaped).
    pub fn encode(&self) -> String {
        let esc = |s: &str| s.replace('%', "%25").replace('~', "%7E");
        format!(
            "{}~{}~{}~{}",
            self.unix_time,
            esc(self.host_id.as_str()),
            esc(&self.name),
            esc(&self.line_id)
        )
    }

    pub fn decode(s: &str) -> Option<Self> {
        let unesc = |s: &str| s.replace("%7E", "~").replace("%25", "%");
        let mut parts = s.split('~');
        let unix_time = parts.next()?.parse().ok()?;
        let host_id = HostId::parse(&unesc(parts.next()?))?;
        let name = unesc(parts.next()?);
        let line_id = unesc(parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            unix_time,
            host_id,
            name,
            line_id,
        })
    }
}

impl ResultFilter {
    /// Whether `r` (already in the window) belongs on this page: after
    /// the cursor in the filter's order.
    pub fn after_cursor(&self, r: &ResultLog) -> bool {
        let Some(c) = &self.after else {
            return true;
        };
        let key = (r.unix_time, &r.host_id, &r.name, &r.line_id);
        let at = (c.unix_time, &c.host_id, &c.name, &c.line_id);
        match self.order {
            LogOrder::OldestFirst => key > at,
            LogOrder::NewestFirst => key < at,
        }
    }

    /// Sorts lines in the filter's order.
    pub fn sort(&self, lines: &mut [ResultLog]) {
        lines.sort_by(|a, b| {
            let o = (a.unix_time, &a.host_id, &a.name, &a.line_id).cmp(&(
                b.unix_time,
                &b.host_id,
                &b.name,
                &b.line_id,
            ));
            match self.order {
                LogOrder::OldestFirst => o,
                LogOrder::NewestFirst => o.reverse(),
            }
        });
    }

    /// The window narrowed by the cursor (lines in the cursor's second
    /// stay in it: `after_cursor` separates them).
    pub fn window(&self) -> (i64, i64) {
        match (&self.after, self.order) {
            (None, _) => (self.since, self.until),
            (Some(c), LogOrder::OldestFirst) => (self.since.max(c.unix_time), self.until),
            (Some(c), LogOrder::NewestFirst) => {
                (self.since, self.until.min(c.unix_time.saturating_add(1)))
            }
        }
    }
}

/// What an operator may do. Ordered by power: every role may do what the
/// roles below it may.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads hosts, definitions, results, campaigns and carves.
    Observer,
    /// Also runs live queries and changes labels and definitions.
    Operator,
    /// Also manages users, tokens, enroll secrets and node keys, and reads
    /// the audit log.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "observer" => Some(Role::Observer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Observer => "observer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// A person or service that uses the operator API through its tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub created_at: i64,
    pub created_by: String,
    /// A disabled user's tokens stop working; the user stays for the audit
    /// log's sake.
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub updated_at: i64,
}

/// A bearer token of a user. Only its SHA-256 is stored; the secret is
/// shown once, when the token is created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ApiToken {
    pub id: String,
    pub user: String,
    pub secret_sha256: String,
    #[serde(default)]
    pub description: String,
    pub created_at: i64,
    pub created_by: String,
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub revoked: bool,
    /// What it is for: a script's token, a person's console session, or
    /// a one-time invitation to set a password.
    #[serde(default)]
    pub kind: TokenKind,
    /// A session also ends this long after it was last used (ms since the
    /// epoch; moved forward as it is used).
    #[serde(default)]
    pub idle_expires_at: Option<i64>,
}

/// The kinds of [`ApiToken`].
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// A bearer token for scripts and `ctl`.
    #[default]
    Api,
    /// A person's console session (an `HttpOnly` cookie).
    Session,
    /// An invitation: sets the user's password once, then it is revoked.
    /// Never accepted as a bearer token or a session.
    Invite,
}

impl ApiToken {
    pub fn is_usable(&self, now: i64) -> bool {
        !self.revoked
            && self.expires_at.is_none_or(|e| now < e)
            && self.idle_expires_at.is_none_or(|e| now < e)
    }
}

/// A person's password (argon2id, as a PHC string). Kept apart from the
/// user, never in an API answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub user: String,
    /// `$argon2id$v=19$m=...,t=...,p=...$salt$hash`.
    pub password_phc: String,
    pub set_at: i64,
    /// Who set it: an admin's name, or the user (through an invitation).
    pub set_by: String,
}

/// A secret agents present at enrollment. Only its SHA-256 is stored; the
/// value of an id never changes (a new value is a new secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EnrollSecret {
    pub id: String,
    /// Lowercase hex SHA-256 of the secret.
    pub secret_sha256: String,
    /// Labels a host enrolling with this secret gets.
    #[serde(default)]
    pub labels: Vec<String>,
    pub created_at: i64,
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub revoked: bool,
    #[serde(default)]
    pub created_by: String,
}

impl EnrollSecret {
    /// Whether an agent may enroll with it at `now`.
    pub fn is_usable(&self, now: i64) -> bool {
        !self.revoked && self.expires_at.is_none_or(|e| now < e)
    }
}

/// One recorded operator action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditEvent {
    /// Unique per event.
    pub id: String,
    /// When it happened (ms).
    pub at: i64,
    /// Who: a user name or token id.
    pub actor: String,
    /// What, e.g. `campaign.create`, `query.put`, `host.rotate_key`.
    pub action: String,
    /// On what, e.g. a host id or a query name.
    pub target: String,
    /// `ok`, `denied` or `failed`.
    pub outcome: String,
    #[serde(default)]
    pub detail: Value,
}

/// One page of a listing and the cursor for the next.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// A log destination's state: where it reads, how far behind it is, what
/// it delivered and what went wrong (`GET /api/v1/destinations`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DestinationState {
    pub name: String,
    /// `file`, `splunk_hec`, `elasticsearch`, `webhook`, `syslog`, `nats`,
    /// `kafka`.
    pub kind: String,
    /// Paused by an operator (until resumed or restarted).
    pub paused: bool,
    /// The next forward-log entry it reads.
    pub cursor: u64,
    /// Lines stored and not yet handled (delivered, filtered, dropped).
    pub lag_lines: u64,
    /// Age of the oldest entry not yet delivered (0: caught up).
    pub lag_seconds: u64,
    /// Lines delivered since the process started.
    pub delivered: u64,
    /// Lines refused for good by the receiver (dead-lettered).
    pub failed: u64,
    /// Lines dropped by the throttle (`over_limit = "drop"`).
    pub dropped: u64,
    /// Lines retention removed before this destination read them.
    pub missed: u64,
    pub last_error: Option<String>,
    /// The last batch the receiver refused for good.
    pub last_dead_letter: Option<DestinationDeadLetter>,
    /// Where it is defined: `config` (the configuration file) or `api`.
    #[serde(default)]
    pub source: String,
    /// Its definition, secrets redacted.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
}

/// A batch a receiver refused for good.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DestinationDeadLetter {
    pub at_ms: i64,
    pub lines: u64,
    /// The receiver's answer.
    pub response: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    /// Host details keep what the agent sent, whatever order its members
    /// came in, and read back as the same object; a record with them
    /// round-trips through JSON unchanged.
    #[test]
    fn host_details_keep_the_object_as_compact_text() {
        let sent = json!({"system_info": {"hostname": "a", "cpu_brand": "x"}, "os_version": {"name": "Debian"}});
        let reordered: Map<String, Value> = serde_json::from_str(
            r#"{"os_version": {"name": "Debian"}, "system_info": {"cpu_brand": "x", "hostname": "a"}}"#,
        )
        .unwrap();
        let d = HostDetails::from_map(sent.as_object().unwrap());
        assert_eq!(d, HostDetails::from_map(&reordered));
        assert_eq!(Value::Object(d.to_map()), sent);
        assert!(!d.as_json().contains(' '));
        let back: HostDetails = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
        assert_eq!(serde_json::to_value(&d).unwrap(), sent);
        assert_eq!(HostDetails::default().as_json(), "{}");
        assert!(serde_json::from_str::<HostDetails>("[1]").is_err());
    }
}
