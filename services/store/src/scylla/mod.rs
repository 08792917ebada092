//! The ScyllaDB store: the `Store` port over the `scylla` driver.
//!
//! - Schema: versioned migrations applied at connect ([`schema`]); the
//!   table design is `docs/architecture/data-model.md`.
//! - Statements: every statement is prepared once ([`statements::Q`]) with
//!   the consistency of its operation class; all but conditional writes
//!   are idempotent (deterministic keys), so the driver may retry them.
//! - Routing: the driver's default policy, token- and shard-aware, pinned
//!   to `local_datacenter` when one is set.
//! - Backpressure: at most `max_in_flight` requests per process; callers
//!   queue up to `queue_timeout_ms`, then get `StoreError::Busy`.
//! - Retention: tables carry a default TTL per data class, so nothing has
//!   to scan for old data ([`Store::expires_by_ttl`]).

pub mod config;
pub mod plan;
pub mod schema;
pub mod statements;

// The `Store` ports, one file per area.
mod audit;
mod campaigns;
mod carves;
mod definitions;
mod hosts;
mod identity;
mod logs;
mod meta;
mod rules;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use gatehouse_core::HostId;
use gatehouse_core::ids::shard_of;
use gatehouse_core::logs::bucket_time;
use gatehouse_core::model::{
    ApiToken, AuditEvent, Campaign, CampaignResult, CarveSession, Credential, Delivery,
    EnrollSecret, Host, LabelConfig, LabelQuery, LogOrder, LogRecords, Page, Query, ResultFilter,
    ResultLog, Schedule, StatusLog, User,
};
use gatehouse_core::ports::{BlockOutcome, Fence, StoreError, StoreResult};
use gatehouse_core::rules::{Alert, DeadLetter, Rule};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::response::{PagingState, PagingStateResponse};
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, SemaphorePermit};

pub use config::ScyllaConfig;
use config::{parse_consistency, parse_serial};
use plan::{Group, Part, can_stop, plan};
use statements::{CONFIG_GENERATION, Class, Q};

/// Hosts per bucket a campaign aims for; see `campaign_buckets`.
const HOSTS_PER_CAMPAIGN_BUCKET: u64 = 2_000;
const MAX_CAMPAIGN_BUCKETS: u32 = 1_024;
/// Buckets of `hosts_by_label` per label.
pub const LABEL_BUCKETS: u32 = 64;
/// Carve blocks are stored in chunks of at most this many bytes, so no
/// cell grows past ScyllaDB's large-cell threshold.
pub const CARVE_CHUNK_BYTES: usize = 512 * 1024;
/// Rows per unlogged single-partition batch.
const BATCH_ROWS: usize = 100;
const PAGE_ROWS: i32 = 1_000;
const DAY_SECS: i64 = 86_400;
/// Month buckets of the newest-first listings (30-day units).
const MONTH_SECS: i64 = 30 * DAY_SECS;

/// Buckets for a campaign of `targets` hosts: a power of two that keeps
/// each delivery and result partition near 2,000 hosts.
pub fn campaign_buckets(targets: u64) -> u32 {
    let want = targets.div_ceil(HOSTS_PER_CAMPAIGN_BUCKET).max(1);
    let pow = want.next_power_of_two();
    u32::try_from(pow)
        .unwrap_or(MAX_CAMPAIGN_BUCKETS)
        .min(MAX_CAMPAIGN_BUCKETS)
}

fn bucket_of(host: &HostId, buckets: u32) -> i32 {
    i32::try_from(shard_of(host, buckets)).unwrap_or(0)
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("scylla: {e}"))
}

fn enc<T: Serialize>(v: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| StoreError::Unavailable(format!("encode: {e}")))
}

fn dec<T: DeserializeOwned>(what: &str, v: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        key: what.to_owned(),
        reason: e.to_string(),
    })
}

fn day_of(secs: i64) -> i32 {
    i32::try_from(secs.max(0) / DAY_SECS).unwrap_or(i32::MAX)
}

/// Month bucket and clustering key of a newest-first listing: ascending
/// order of `i64::MAX - created_at` is newest first, so reads need no
/// `ORDER BY ... DESC`.
fn recent_keys(created_at_ms: i64) -> (i32, i64) {
    let month = i32::try_from(created_at_ms.max(0) / 1000 / MONTH_SECS).unwrap_or(i32::MAX);
    (month, i64::MAX - created_at_ms)
}

fn cursor_encode(bytes: &[u8]) -> String {
    gatehouse_core::ids::hex(bytes)
}

fn cursor_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A `result_logs` row: host, day, name, agent time, line id, document.
pub type HostRow<'a> = (&'a str, i32, &'a str, i64, &'a str, &'a [u8]);
/// A `status_logs` row: host, day, agent time, line id, document.
type StatusRow<'a> = (&'a str, i32, i64, &'a str, Vec<u8>);

/// What one `append_logs` call writes to the result tables: rows grouped
/// by partition (each group is one single-partition batch) and the index
/// rows that make them findable.
#[derive(Debug, Default)]
pub struct ResultRows<'a> {
    pub by_host: HashMap<(&'a str, i32, &'a str), Vec<HostRow<'a>>>,
    /// (host, day, name, skewed)
    pub host_index: HashSet<(&'a str, i32, &'a str, bool)>,
}

/// The stored document of each line (JSON of `ResultLog`).
pub fn encode_results(rs: &[ResultLog]) -> StoreResult<Vec<Vec<u8>>> {
    rs.iter().map(enc).collect()
}

/// Groups lines (and their encoded documents, in the same order) by the
/// partitions they go to.
pub fn result_rows<'a>(rs: &'a [ResultLog], docs: &'a [Vec<u8>]) -> ResultRows<'a> {
    let mut out = ResultRows::default();
    for (r, doc) in rs.iter().zip(docs) {
        let (t, skewed) = bucket_time(r.unix_time, r.received_at);
        let day = day_of(t);
        let (host, name, line) = (r.host_id.as_str(), r.name.as_str(), r.line_id.as_str());
        out.by_host.entry((host, day, name)).or_default().push((
            host,
            day,
            name,
            r.unix_time,
            line,
            doc,
        ));
        out.host_index.insert((host, day, name, skewed));
    }
    out
}

struct Inner {
    session: Session,
    prepared: Vec<PreparedStatement>,
    permits: Semaphore,
    queue_timeout: Duration,
    fan_out: usize,
    /// Campaign id -> bucket count (immutable once created).
    campaign_buckets: Mutex<HashMap<String, u32>>,
    /// Index rows this process has written already (write-once per
    /// process: keeps hot index partitions cold).
    written_index: Mutex<HashSet<(String, i32, i32, bool)>>,
    /// Label set and names last read or written per host, so `put_host`
    /// writes label membership and name rows only when they change.
    host_labels: Mutex<HashMap<HostId, Indexed>>,
    /// Orders this process's fenced writes that share a token.
    fence_seq: std::sync::atomic::AtomicU64,
    /// Where statement latencies and outcomes go (metrics), once set.
    observer: std::sync::OnceLock<Arc<dyn gatehouse_core::ports::RequestObserver>>,
}

/// Latency and outcome of every statement (fed to
/// `gatehouse_store_requests_total` and `gatehouse_store_request_seconds`,
/// by statement, by the process wiring), waiting for an in-flight permit
/// included: what an operator pages on when ScyllaDB slows down.
impl Inner {
    async fn timed<T>(
        &self,
        q: Q,
        f: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let start = std::time::Instant::now();
        let r = f.await;
        if let Some(o) = self.observer.get() {
            let outcome = match &r {
                Ok(_) => "ok",
                Err(StoreError::Busy) => "busy",
                Err(StoreError::Unavailable(_) | StoreError::Corrupt { .. }) => "unavailable",
                Err(_) => "rejected",
            };
            o.observe(q.name(), outcome, start.elapsed().as_secs_f64());
        }
        r
    }
}

impl ScyllaStore {
    /// Reports every statement's latency and outcome to `observer` (the
    /// process's metrics); the first one given stays.
    pub fn observe_requests(&self, observer: Arc<dyn gatehouse_core::ports::RequestObserver>) {
        let _ = self.inner.observer.set(observer);
    }
}

/// Fenced writes (host-owned state written by the shard owner) carry an
/// explicit write timestamp: above any wall-clock timestamp (microseconds
/// since 1970 stay below 2^61 for 70,000 years), ordered by fencing token,
/// then by issue order within the process. ScyllaDB keeps the cell with
/// the highest timestamp, so a deposed owner's write (smaller token) never
/// supersedes its successor's, in whatever order they arrive.
pub const FENCED_BASE: i64 = 1 << 61;
/// Writes per token and process before the issue-order part wraps; a
/// token changes at every lease renewal (every 5 s by default).
const FENCE_SEQ_BITS: u32 = 20;

/// The write timestamp of the `seq`-th fenced write with `fence`; `None`
/// for unfenced writes (the server's clock decides).
pub fn fenced_timestamp(fence: Fence, seq: u64) -> StoreResult<Option<i64>> {
    if fence.is_none() {
        return Ok(None);
    }
    let max = (i64::MAX - FENCED_BASE) >> FENCE_SEQ_BITS;
    let f = i64::try_from(fence.0)
        .ok()
        .filter(|f| *f < max)
        .ok_or_else(|| StoreError::Invalid(format!("fencing token {} out of range", fence.0)))?;
    let s = i64::try_from(seq & ((1 << FENCE_SEQ_BITS) - 1)).unwrap_or(0);
    Ok(Some(FENCED_BASE + (f << FENCE_SEQ_BITS) + s))
}

/// ScyllaDB-backed store; cheap to clone.
#[derive(Clone)]
pub struct ScyllaStore {
    inner: Arc<Inner>,
}

/// What a host is indexed by: its label set and its names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Indexed {
    labels: Vec<String>,
    names: Vec<String>,
}

impl Indexed {
    fn of(h: &Host) -> Self {
        Self {
            labels: h.label_set(),
            names: h.names(),
        }
    }
}

impl std::fmt::Debug for ScyllaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScyllaStore")
    }
}

impl ScyllaStore {
    /// The prepared form of `q` (for diagnostics and the cost benchmark).
    pub fn prepared(&self, q: Q) -> &PreparedStatement {
        self.inner.st(q)
    }

    /// Connects, applies missing migrations and prepares every statement.
    pub async fn connect(cfg: &ScyllaConfig) -> StoreResult<Self> {
        cfg.validate().map_err(StoreError::Invalid)?;
        let mut policy = DefaultPolicy::builder().token_aware(true);
        if let Some(dc) = &cfg.local_datacenter {
            policy = policy
                .prefer_datacenter(dc.clone())
                .permit_dc_failover(false);
        }
        let profile = ExecutionProfile::builder()
            .load_balancing_policy(policy.build())
            .request_timeout(Some(Duration::from_millis(cfg.request_timeout_ms)))
            .build();
        let mut builder = SessionBuilder::new()
            .known_nodes(&cfg.contact_points)
            .default_execution_profile_handle(profile.into_handle())
            .auto_await_schema_agreement(cfg.await_schema_agreement);
        if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
            builder = builder.user(u, p);
        }
        if let Some(tls) = &cfg.tls {
            builder = builder.tls_context(Some(tls_context(tls)?));
        }
        let session = builder
            .build()
            .await
            .map_err(|e| unavailable(format!("connect to {:?}: {e}", cfg.contact_points)))?;
        migrate(&session, cfg).await?;
        let prepared = prepare_all(&session, cfg).await?;
        let store = Self {
            inner: Arc::new(Inner {
                session,
                prepared,
                permits: Semaphore::new(cfg.max_in_flight),
                queue_timeout: Duration::from_millis(cfg.queue_timeout_ms),
                fan_out: cfg.fan_out,
                campaign_buckets: Mutex::new(HashMap::new()),
                written_index: Mutex::new(HashSet::new()),
                host_labels: Mutex::new(HashMap::new()),
                fence_seq: std::sync::atomic::AtomicU64::new(0),
                observer: std::sync::OnceLock::new(),
            }),
        };
        // Hosts stored before the name index existed are indexed once, in
        // the background (idempotent writes: processes that race repeat
        // some of the same rows).
        let indexer = store.clone();
        tokio::spawn(async move {
            if let Err(e) = indexer.index_host_names_once().await {
                tracing::warn!(error = %e, "indexing host names failed; the next start retries");
            }
        });
        Ok(store)
    }

    /// Writes `hosts_by_name` rows for every stored host, unless a process
    /// did already (`meta.index.hosts_by_name`).
    async fn index_host_names_once(&self) -> StoreResult<()> {
        use gatehouse_core::ports::{HostStore, MetaStore};
        const DONE: &str = "index.hosts_by_name";
        if self.get_meta(DONE).await?.is_some() {
            return Ok(());
        }
        let (mut cursor, mut hosts) = (None::<String>, 0u64);
        loop {
            let page = self.list_hosts(cursor.as_deref(), 1000).await?;
            for h in &page.items {
                for n in h.names() {
                    self.inner
                        .exec(Q::PutHostName, (n.as_str(), h.id.as_str()))
                        .await?;
                }
            }
            hosts += page.items.len() as u64;
            if hosts % 50_000 < 1000 && hosts >= 50_000 {
                tracing::info!(hosts, "indexing host names");
            }
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        self.put_meta(DONE, b"1").await?;
        tracing::info!(hosts, "host names indexed");
        Ok(())
    }
}

fn tls_context(tls: &config::ScyllaTls) -> StoreResult<scylla::client::session::TlsContext> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::Invalid(format!("store.scylla.tls: {what}: {e}"))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&tls.ca_file)
        .map_err(|e| bad(&tls.ca_file.display().to_string(), &e))?
    {
        let cert = cert.map_err(|e| bad(&tls.ca_file.display().to_string(), &e))?;
        roots
            .add(cert)
            .map_err(|e| bad(&tls.ca_file.display().to_string(), &e))?;
    }
    if roots.is_empty() {
        return Err(bad(
            &tls.ca_file.display().to_string(),
            &"no PEM certificate in the file",
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("protocol versions", &e))?
        .with_root_certificates(roots);
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| bad(&cert.display().to_string(), &e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(&cert.display().to_string(), &e))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| bad(&key.display().to_string(), &e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| bad("client certificate", &e))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config).into())
}

/// Creates the keyspace and applies every migration not yet recorded.
async fn migrate(session: &Session, cfg: &ScyllaConfig) -> StoreResult<()> {
    let ks = &cfg.keyspace;
    let ddl = |cql: String| async move {
        session
            .query_unpaged(cql.clone(), ())
            .await
            .map_err(|e| unavailable(format!("{cql}: {e}")))
    };
    ddl(format!(
        "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {} AND durable_writes = true",
        cfg.replication.cql()
    ))
    .await?;
    ddl(format!(
        "CREATE TABLE IF NOT EXISTS {ks}.schema_migrations (scope text, version int, description text, applied_at bigint, PRIMARY KEY ((scope), version))"
    ))
    .await?;
    ddl(format!(
        "CREATE TABLE IF NOT EXISTS {ks}.schema_lock (name text PRIMARY KEY, owner text)"
    ))
    .await?;
    let applied_versions = || async {
        session
            .query_unpaged(
                format!("SELECT version FROM {ks}.schema_migrations WHERE scope = ?"),
                ("gatehouse",),
            )
            .await
            .map_err(unavailable)?
            .into_rows_result()
            .map_err(unavailable)?
            .rows::<(i32,)>()
            .map_err(unavailable)?
            .map(|r| r.map(|(v,)| v))
            .collect::<Result<HashSet<i32>, _>>()
            .map_err(unavailable)
    };
    let mut applied = applied_versions().await?;
    let missing = schema::MIGRATIONS
        .iter()
        .any(|m| !applied.contains(&m.version));
    // Processes starting together take turns: a conditional lock row that
    // expires if its holder dies. (ScyllaDB with Raft schema would cope
    // with concurrent `IF NOT EXISTS` DDL anyway; older clusters and
    // Cassandra can disagree on table ids when two nodes create a table at
    // once.)
    let owner = format!("{:016x}", fastrand::u64(..));
    if missing {
        let deadline = std::time::Instant::now() + Duration::from_secs(180);
        loop {
            let res = session
                .query_unpaged(
                    format!("INSERT INTO {ks}.schema_lock (name, owner) VALUES (?, ?) IF NOT EXISTS USING TTL 120"),
                    ("migrate", &owner),
                )
                .await
                .map_err(unavailable)?;
            // No [applied] row: a server without conditions (the test server).
            if lwt_applied(res)? != Some(false) {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(unavailable(
                    "another process has held the schema migration lock for 3 minutes",
                ));
            }
            tracing::info!("another process is migrating the schema; waiting");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        applied = applied_versions().await?;
    }
    for m in schema::MIGRATIONS {
        if applied.contains(&m.version) {
            continue;
        }
        tracing::info!(
            version = m.version,
            description = m.description,
            "applying schema migration"
        );
        for stmt in m.statements {
            ddl(schema::render(stmt, ks, &cfg.ttl)).await?;
        }
        if cfg.await_schema_agreement {
            session
                .await_schema_agreement()
                .await
                .map_err(unavailable)?;
        }
        session
            .query_unpaged(
                format!("INSERT INTO {ks}.schema_migrations (scope, version, description, applied_at) VALUES (?, ?, ?, ?)"),
                ("gatehouse", m.version, m.description, gatehouse_core::time::now_ms()),
            )
            .await
            .map_err(unavailable)?;
    }
    if missing {
        session
            .query_unpaged(
                format!("DELETE FROM {ks}.schema_lock WHERE name = ?"),
                ("migrate",),
            )
            .await
            .map_err(unavailable)?;
    }
    // Retention changes apply to rows written from now on.
    let ttl_key = format!("{ks}.ttl");
    let want = serde_json::to_vec(&cfg.ttl).map_err(unavailable)?;
    let have = session
        .query_unpaged(
            format!("SELECT value FROM {ks}.meta WHERE key = ?"),
            (&ttl_key,),
        )
        .await
        .map_err(unavailable)?
        .into_rows_result()
        .map_err(unavailable)?
        .maybe_first_row::<(Vec<u8>,)>()
        .map_err(unavailable)?
        .map(|(v,)| v);
    if have.as_ref() != Some(&want) {
        if have.is_some() {
            for alter in schema::ttl_alterations(ks, &cfg.ttl) {
                ddl(alter).await?;
            }
            tracing::info!(ttl = ?cfg.ttl, "table TTLs changed");
        }
        session
            .query_unpaged(
                format!("INSERT INTO {ks}.meta (key, value) VALUES (?, ?)"),
                (&ttl_key, &want),
            )
            .await
            .map_err(unavailable)?;
    }
    Ok(())
}

async fn prepare_all(session: &Session, cfg: &ScyllaConfig) -> StoreResult<Vec<PreparedStatement>> {
    let c = &cfg.consistency;
    let parse = |s: &str| parse_consistency(s).map_err(StoreError::Invalid);
    let (hosts, logs, reads, admin) = (
        parse(&c.hosts)?,
        parse(&c.logs)?,
        parse(&c.reads)?,
        parse(&c.admin)?,
    );
    let serial = parse_serial(&c.serial).map_err(StoreError::Invalid)?;
    let mut out = Vec::with_capacity(Q::ALL.len());
    for q in Q::ALL {
        let cql = q.cql().replace("{ks}", &cfg.keyspace);
        let mut p = session
            .prepare(cql.clone())
            .await
            .map_err(|e| unavailable(format!("prepare {cql}: {e}")))?;
        match q.class() {
            Class::Hosts => p.set_consistency(hosts),
            Class::Logs => p.set_consistency(logs),
            Class::Reads => p.set_consistency(reads),
            Class::Admin => p.set_consistency(admin),
            Class::Conditional => {
                p.set_consistency(admin);
                p.set_serial_consistency(Some(serial));
            }
        }
        p.set_is_idempotent(q.class() != Class::Conditional);
        p.set_page_size(PAGE_ROWS);
        out.push(p);
    }
    Ok(out)
}

impl Inner {
    fn st(&self, q: Q) -> &PreparedStatement {
        &self.prepared[q as usize]
    }

    async fn permit(&self) -> StoreResult<SemaphorePermit<'_>> {
        match tokio::time::timeout(self.queue_timeout, self.permits.acquire()).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(unavailable("store closed")),
            Err(_) => Err(StoreError::Busy),
        }
    }

    async fn exec(
        &self,
        q: Q,
        values: impl SerializeRow,
    ) -> StoreResult<scylla::response::query_result::QueryResult> {
        self.timed(q, async {
            let _p = self.permit().await?;
            self.session
                .execute_unpaged(self.st(q), values)
                .await
                .map_err(unavailable)
        })
        .await
    }

    /// A write of host-owned state, timestamped by its fence.
    async fn exec_fenced(&self, q: Q, values: impl SerializeRow, fence: Fence) -> StoreResult<()> {
        let seq = self
            .fence_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(ts) = fenced_timestamp(fence, seq)? else {
            return self.exec(q, values).await.map(|_| ());
        };
        let mut st = self.st(q).clone();
        st.set_timestamp(Some(ts));
        self.timed(q, async {
            let _p = self.permit().await?;
            self.session
                .execute_unpaged(&st, values)
                .await
                .map(|_| ())
                .map_err(unavailable)
        })
        .await
    }

    /// The first row, if any.
    async fn one<R>(&self, q: Q, values: impl SerializeRow) -> StoreResult<Option<R>>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        self.exec(q, values)
            .await?
            .into_rows_result()
            .map_err(unavailable)?
            .maybe_first_row::<R>()
            .map_err(unavailable)
    }

    /// Up to `limit` rows, paging as needed.
    async fn rows<R>(&self, q: Q, values: impl SerializeRow, limit: usize) -> StoreResult<Vec<R>>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm> + Send + 'static,
    {
        self.timed(q, async {
            let _p = self.permit().await?;
            let pager = self
                .session
                .execute_iter(self.st(q).clone(), values)
                .await
                .map_err(unavailable)?;
            pager
                .rows_stream::<R>()
                .map_err(unavailable)?
                .take(limit)
                .try_collect()
                .await
                .map_err(unavailable)
        })
        .await
    }

    async fn docs<T: DeserializeOwned>(
        &self,
        q: Q,
        values: impl SerializeRow,
        limit: usize,
    ) -> StoreResult<Vec<T>> {
        self.rows::<(Vec<u8>,)>(q, values, limit)
            .await?
            .iter()
            .map(|(d,)| dec(&format!("{q:?}"), d))
            .collect()
    }

    /// Runs single-partition batches of `q` (each `rows` share a partition).
    async fn batch<V: SerializeRow>(&self, q: Q, rows: Vec<V>) -> StoreResult<()> {
        for chunk in rows.chunks(BATCH_ROWS) {
            let mut b = Batch::new(BatchType::Unlogged);
            for _ in chunk {
                b.append_statement(self.st(q).clone());
            }
            b.set_consistency(self.st(q).get_consistency().unwrap_or_default());
            b.set_is_idempotent(true);
            self.timed(q, async {
                let _p = self.permit().await?;
                self.session.batch(&b, chunk).await.map_err(unavailable)
            })
            .await?;
        }
        Ok(())
    }

    /// Writes each `(q, values)` with at most `fan_out` in flight.
    async fn fan_out_writes<V: SerializeRow + Send>(&self, writes: Vec<(Q, V)>) -> StoreResult<()> {
        stream::iter(writes)
            .map(|(q, v)| async move { self.exec(q, v).await.map(|_| ()) })
            .buffer_unordered(self.fan_out)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
    }

    /// Writes an index row once per process.
    async fn index_once(
        &self,
        key: (String, i32, i32, bool),
        q: Q,
        values: impl SerializeRow,
    ) -> StoreResult<()> {
        {
            let seen = self
                .written_index
                .lock()
                .map_err(|_| unavailable("index cache poisoned"))?;
            if seen.contains(&key) {
                return Ok(());
            }
        }
        self.exec(q, values).await?;
        let mut seen = self
            .written_index
            .lock()
            .map_err(|_| unavailable("index cache poisoned"))?;
        // Bounded: forgetting only costs a repeated (idempotent) write.
        if seen.len() > 1_000_000 {
            seen.clear();
        }
        seen.insert(key);
        Ok(())
    }

    async fn buckets_of(&self, campaign: &str) -> StoreResult<Option<u32>> {
        if let Some(b) = self
            .campaign_buckets
            .lock()
            .map_err(|_| unavailable("campaign cache poisoned"))?
            .get(campaign)
        {
            return Ok(Some(*b));
        }
        let Some((b, _doc)) = self
            .one::<(i32, Vec<u8>)>(Q::GetCampaign, (campaign,))
            .await?
        else {
            return Ok(None);
        };
        let b = u32::try_from(b).unwrap_or(1).max(1);
        self.remember_buckets(campaign, b)?;
        Ok(Some(b))
    }

    fn remember_buckets(&self, campaign: &str, buckets: u32) -> StoreResult<()> {
        let mut m = self
            .campaign_buckets
            .lock()
            .map_err(|_| unavailable("campaign cache poisoned"))?;
        if m.len() > 10_000 {
            m.clear();
        }
        m.insert(campaign.to_owned(), buckets);
        Ok(())
    }

    /// Reads groups in order (partitions of a group concurrently), each
    /// partition up to `limit` rows, stopping once the first `limit` rows
    /// are certain; returns them sorted by `key`.
    async fn gather<K, T, F, Fut>(
        &self,
        groups: Vec<Group<K>>,
        limit: usize,
        read: F,
        time: fn(&T) -> i64,
        order: Gathered<T>,
    ) -> StoreResult<Vec<T>>
    where
        K: Send,
        F: Fn(Part<K>) -> Fut,
        Fut: std::future::Future<Output = StoreResult<Vec<T>>>,
    {
        let mut out: Vec<T> = Vec::new();
        let starts: Vec<i64> = groups.iter().map(|g| g.start).collect();
        for (i, g) in groups.into_iter().enumerate() {
            let found: Vec<Vec<T>> = stream::iter(g.parts)
                .map(&read)
                .buffer_unordered(self.fan_out)
                .try_collect()
                .await?;
            out.extend(found.into_iter().flatten());
            if let Some(next) = starts.get(i + 1) {
                let done = match order {
                    Gathered::Ascending(_) => can_stop(out.iter().map(time), *next, limit),
                    // Groups come newest first: stop once `limit` rows are
                    // at or after the end of the next (older) group.
                    Gathered::Descending(_, unit) => {
                        let end = next.saturating_add(unit);
                        out.iter().filter(|r| time(r) >= end).count() >= limit
                    }
                };
                if done {
                    break;
                }
            }
        }
        match order {
            Gathered::Ascending(o) | Gathered::Descending(o, _) => out.sort_by(o),
        }
        out.truncate(limit);
        Ok(out)
    }
}

/// How gathered rows are ordered: ascending, or descending with the
/// groups' time span (seconds) for knowing when to stop.
enum Gathered<T> {
    Ascending(fn(&T, &T) -> std::cmp::Ordering),
    Descending(fn(&T, &T) -> std::cmp::Ordering, i64),
}

/// The `[applied]` column of a conditional write's answer. Its other
/// columns vary (the current values when not applied), so the row is read
/// untyped. `None` when the server sent no row: a server that does not
/// execute conditions (the CQL test server) treats them as plain writes.
fn lwt_applied(res: scylla::response::query_result::QueryResult) -> StoreResult<Option<bool>> {
    if !res.is_rows() {
        return Ok(None);
    }
    let rows = res.into_rows_result().map_err(unavailable)?;
    let Some(row) = rows
        .maybe_first_row::<scylla::value::Row>()
        .map_err(unavailable)?
    else {
        return Ok(None);
    };
    match row.columns.first() {
        Some(Some(scylla::value::CqlValue::Boolean(b))) => Ok(Some(*b)),
        other => Err(unavailable(format!(
            "conditional write answered {other:?} where [applied] was expected"
        ))),
    }
}

/// A `hosts` row as read: the record and the separately touched time.
type HostRowRead = (Option<Vec<u8>>, Option<i64>);

/// The host of a row; `None` for a row holding only a touch time (a touch
/// raced a host that was never written).
fn host_from_row((doc, seen): HostRowRead) -> StoreResult<Option<Host>> {
    let Some(doc) = doc else {
        return Ok(None);
    };
    let mut h: Host = dec("hosts", &doc)?;
    h.last_seen = h.last_seen.max(seen.unwrap_or(0));
    Ok(Some(h))
}

fn result_order_desc(a: &ResultLog, b: &ResultLog) -> std::cmp::Ordering {
    result_order(a, b).reverse()
}

fn result_order(a: &ResultLog, b: &ResultLog) -> std::cmp::Ordering {
    (a.unix_time, &a.host_id, &a.name, &a.line_id).cmp(&(
        b.unix_time,
        &b.host_id,
        &b.name,
        &b.line_id,
    ))
}

fn status_order(a: &StatusLog, b: &StatusLog) -> std::cmp::Ordering {
    (a.unix_time, &a.line_id).cmp(&(b.unix_time, &b.line_id))
}

impl ScyllaStore {
    /// Up to `limit` documents of a day-partitioned, newest-first table
    /// (audit log, alerts), walking the days noted under `days_kind` from
    /// the newest, strictly older than `before`.
    async fn newest_first<T: DeserializeOwned>(
        &self,
        days_kind: &str,
        statement: statements::DayStatement,
        before: Option<(i64, &str)>,
        limit: usize,
    ) -> StoreResult<Vec<T>> {
        let start_day = before.map(|(at, _)| day_of(at / 1000));
        let mut out: Vec<T> = Vec::new();
        for day in self.recent_buckets(days_kind).await? {
            if start_day.is_some_and(|d| day > d) {
                continue;
            }
            let cursor = before.filter(|_| Some(day) == start_day);
            let (q, v) = statement(day, cursor);
            out.extend(self.inner.docs::<T>(q, v, limit - out.len()).await?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    async fn put_def<T: Serialize>(&self, kind: &str, name: &str, v: &T) -> StoreResult<()> {
        self.inner
            .exec(Q::PutDefinition, (kind, name, enc(v)?))
            .await
            .map(|_| ())
    }

    async fn delete_def(&self, kind: &str, name: &str) -> StoreResult<bool> {
        // `IF EXISTS` answers whether there was anything to delete. A
        // server that does not execute conditions answers no row; the
        // delete still happened, so report it as done.
        let res = self.inner.exec(Q::DeleteDefinition, (kind, name)).await?;
        Ok(lwt_applied(res)?.unwrap_or(true))
    }

    async fn list_defs<T: DeserializeOwned>(&self, kind: &str) -> StoreResult<Vec<T>> {
        self.inner
            .docs(Q::ListDefinitions, (kind,), usize::MAX)
            .await
    }

    async fn append_results(&self, rs: &[ResultLog]) -> StoreResult<()> {
        let i = &self.inner;
        let docs = encode_results(rs)?;
        let rows = result_rows(rs, &docs);
        // Lines first (one batch per partition, concurrently: a POST
        // touches one partition per query name), then the index rows that
        // make them findable.
        futures_util::future::try_join_all(
            rows.by_host
                .into_values()
                .map(|batch| i.batch(Q::PutResult, batch)),
        )
        .await?;
        for (host, day, name, skewed) in rows.host_index {
            let key = (format!("r/{host}/{name}"), day, 0, skewed);
            if skewed {
                i.index_once(key, Q::PutResultIndexSkewed, (host, day, name, true))
                    .await?;
            } else {
                i.index_once(key, Q::PutResultIndex, (host, day, name))
                    .await?;
            }
        }
        Ok(())
    }

    async fn append_status(&self, ss: &[StatusLog]) -> StoreResult<()> {
        let i = &self.inner;
        let mut by_day: HashMap<i32, Vec<StatusRow<'_>>> = HashMap::new();
        let mut index: HashSet<(&str, i32, bool)> = HashSet::new();
        for s in ss {
            let (t, skewed) = bucket_time(s.unix_time, s.received_at);
            let day = day_of(t);
            by_day.entry(day).or_default().push((
                s.host_id.as_str(),
                day,
                s.unix_time,
                s.line_id.as_str(),
                enc(s)?,
            ));
            index.insert((s.host_id.as_str(), day, skewed));
        }
        futures_util::future::try_join_all(
            by_day.into_values().map(|rows| i.batch(Q::PutStatus, rows)),
        )
        .await?;
        for (host, day, skewed) in index {
            let key = (format!("s/{host}"), day, 0, skewed);
            if skewed {
                i.index_once(key, Q::PutStatusIndexSkewed, (host, day, true))
                    .await?;
            } else {
                i.index_once(key, Q::PutStatusIndex, (host, day)).await?;
            }
        }
        Ok(())
    }

    /// Time buckets (months, days) of `kind` that hold rows, newest first.
    async fn recent_buckets(&self, kind: &str) -> StoreResult<Vec<i32>> {
        // `recent_buckets` clusters by inverted bucket: newest first.
        let rows: Vec<(i32,)> = self
            .inner
            .rows(Q::RecentBuckets, (kind,), usize::MAX)
            .await?;
        Ok(rows.into_iter().map(|(inv,)| i32::MAX - inv).collect())
    }

    /// Ids of a month-bucketed, newest-first listing (rows ordered by
    /// inverted time, then id), strictly after `before` (its creation time
    /// and id), at most `limit`.
    async fn recent_ids(
        &self,
        kind: &str,
        in_month: Q,
        before: Option<(i64, &str)>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let i = &self.inner;
        let cursor = before.map(|(at, id)| {
            let (month, inv) = recent_keys(at);
            (month, inv, id)
        });
        let mut out = Vec::new();
        for month in self.recent_buckets(kind).await? {
            if out.len() >= limit {
                break;
            }
            // Months newer than the cursor's were read by earlier pages.
            if cursor.is_some_and(|(m, _, _)| month > m) {
                continue;
            }
            let (rows, skip) = match cursor {
                // The cursor's month is read whole and skipped past it (no
                // clustering-range read: every CQL server answers this).
                Some((m, inv, id)) if m == month => {
                    let rows: Vec<(i64, String)> = i.rows(in_month, (month,), usize::MAX).await?;
                    (rows, Some((inv, id)))
                }
                _ => (i.rows(in_month, (month,), limit - out.len()).await?, None),
            };
            for (inv, id) in rows {
                if skip.is_some_and(|(ci, cid)| (inv, id.as_str()) <= (ci, cid)) {
                    continue;
                }
                out.push(id);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn note_recent(&self, kind: &str, bucket: i32) -> StoreResult<()> {
        let inv = i32::MAX - bucket;
        self.inner
            .index_once(
                (format!("recent:{kind}"), inv, 0, false),
                Q::PutRecentBucket,
                (kind, inv),
            )
            .await
    }

    fn remember_labels(&self, host: &Host) -> StoreResult<()> {
        let mut m = self
            .inner
            .host_labels
            .lock()
            .map_err(|_| unavailable("label cache poisoned"))?;
        if m.len() > 2_000_000 {
            m.clear();
        }
        m.insert(host.id.clone(), Indexed::of(host));
        Ok(())
    }

    async fn count_blocks(&self, session_id: &str) -> StoreResult<u64> {
        let ids: Vec<(i64,)> = self
            .inner
            .rows(Q::BlockIndex, (session_id,), usize::MAX)
            .await?;
        Ok(ids.len() as u64)
    }

    async fn carve_with_count(&self, mut s: CarveSession) -> StoreResult<CarveSession> {
        s.blocks_received = self.count_blocks(&s.session_id).await?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests;
