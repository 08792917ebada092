//! The embedded store: fjall keyspaces in two databases, the store's in
//! its directory and the result and status logs' in `logs/` under it
//! (ADR 0034: log batches' syncs, flushes and compactions never hold a
//! host's write).
//!
//! Key layout (all integers big-endian so byte order is numeric order):
//!
//! | keyspace     | key                                           | value            |
//! |--------------|-----------------------------------------------|------------------|
//! | `hosts`      | host id                                       | `Host` JSON      |
//! | `seen`       | host id                                       | last seen ms i64 |
//! | `defs`       | `q/<name>`, `s/<name>`, `l/<label>`, `u/<user>`, `t/<token id>` | JSON |
//! | `meta`       | name                                          | bytes            |
//! | `blobs`      | config hash                                   | config bytes     |
//! | `results` (logs) | slot u32 · host · name · 0 · unix u64 · line id | the line's stored form (`logs.rs`) |
//! | `status` (logs)  | slot u32 · host · unix u64 · line id      | the line's stored form |
//! | `slots` (logs)   | day u32 · kind · host · minute u32 · skewed | empty (index)  |
//! | `campaigns`  | campaign id                                   | JSON             |
//! | `deliveries` | campaign · 0 · host                           | `Delivery` JSON  |
//! | `open`       | host · 0 · campaign                           | empty (index)    |
//! | `cresults`   | campaign · 0 · host                           | JSON             |
//! | `carves`     | session id                                    | JSON             |
//! | `blocks`     | session id · 0 · block u64                    | block bytes      |
//! | `secrets`    | secret id                                     | `EnrollSecret` JSON |
//! | `secret_hash`| SHA-256 hex (enroll secrets), `tok:<SHA-256>` (API tokens) | id |
//! | `audit`      | (u64::MAX - at) · event id                    | `AuditEvent` JSON |
//! | `fences`     | host id                                       | fencing token u64 |
//! | `names`      | host name (lower case) · 0 · host id          | empty (index)    |
//! | `alerts`     | (u64::MAX - at) · alert id                    | `Alert` JSON     |
//! | `dead`       | dead letter id                                | `DeadLetter` JSON |
//!
//! Rules live in `defs` under `r/<name>`, label queries under `lq/<label>`.
//!
//! Log keys start with a minute slot (`logs.rs`: the agent's minute when
//! its clock is plausible, else the receive minute, with the top bit set)
//! so a flushed table overlaps only the current minute's lines, retention
//! drops whole days and a re-sent line lands on the same key; `slots`
//! lists each host's slots for searches (ADR 0041). Stores before ADR 0041
//! began log keys with the day (top bit clear); those still read.
//!
//! Fencing: a fenced write of host-owned state (record, last seen,
//! deliveries) checks the host's last token in `fences` and commits its own
//! in the same batch, under the host's stripe lock, so a deposed writer's
//! write is rejected even when it races the new owner's.

// The `Store` ports, one file per area.
mod audit;
mod campaigns;
mod carves;
mod compaction;
mod definitions;
mod hosts;
mod identity;
mod logs;
mod meta;
mod rules;
mod syncer;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use gatehouse_core::HostId;
use gatehouse_core::disk::REOPEN_HEADROOM;
use gatehouse_core::model::{
    ApiToken, AuditEvent, Campaign, CampaignResult, CarveSession, Credential, Delivery,
    EnrollSecret, Host, LabelConfig, LabelQuery, LogRecords, Page, Query, ResultFilter, ResultLog,
    Schedule, StatusLog, User,
};
use gatehouse_core::ports::{BlockOutcome, Fence, StoreError, StoreResult};
use gatehouse_core::rules::{Alert, DeadLetter, Rule};
use serde::Serialize;
use serde::de::DeserializeOwned;

struct Inner {
    db: Database,
    hosts: Keyspace,
    /// Hostnames and host identifiers to host ids (`hosts_named`).
    names: Keyspace,
    /// Last check-in per host, apart from the record (`touch_host`).
    seen: Keyspace,
    defs: Keyspace,
    meta: Keyspace,
    blobs: Keyspace,
    /// The result and status logs, in a database of their own.
    logs: Logs,
    campaigns: Keyspace,
    deliveries: Keyspace,
    open: Keyspace,
    cresults: Keyspace,
    carves: Keyspace,
    blocks: Keyspace,
    secrets: Keyspace,
    secret_hash: Keyspace,
    audit: Keyspace,
    fences: Keyspace,
    alerts: Keyspace,
    dead: Keyspace,
    /// Serializes read-modify-write sequences (counters, carve accounting).
    rmw: Mutex<()>,
    /// Serialize the read-check-write of one host's state (fencing).
    host_locks: Vec<Mutex<()>>,
    /// Every keyspace of the store's database, as opened: writers bound
    /// their memtables (ADR 0036).
    keyspaces: Vec<Keyspace>,
    /// Journal syncs, on a thread of their own (ADR 0049). Last: it syncs
    /// for the writers still waiting before the database closes.
    sync: syncer::Syncer,
}

/// The result and status logs: a fjall database of their own under the
/// store's directory (`logs/`), with its own journal, group commit and
/// background worker (ADR 0034). Log batches are large and many; in the
/// store's database their journal syncs, flushes and compactions held
/// every host write (check-ins, records, deliveries) behind them, and a
/// stalled log keyspace timed out host actors. Apart, a log write waits
/// only for log work.
struct Logs {
    /// First: it writes the batches sent to it and lets go of the
    /// database before anything else closes.
    writer: writer::LogWriter,
    /// Next, so it stops (and lets go of the keyspaces) before the
    /// database closes.
    _compactor: compaction::Compactor,
    /// The reads in progress, registered by every read of the log
    /// keyspaces ([`Logs::reading`]) for the compactor's watermark.
    readers: Arc<compaction::Readers>,
    db: Database,
    results: Keyspace,
    status: Keyspace,
    /// Which minute slots hold a host's lines (ADR 0041).
    slots: Keyspace,
    /// Written only to probe that the database can write.
    probe: Keyspace,
    sync: GroupSync,
}

impl Logs {
    /// Registers a read of the log keyspaces until the value drops: call
    /// it before the read's first snapshot, so no compaction step drops a
    /// version the read may still see.
    fn reading(&self) -> compaction::Reading<'_> {
        self.readers.enter(&self.db)
    }
}

/// Group commit of the log database, for what its writer thread does not
/// write (retention's deletes, probes). A write appends its batch to the
/// journal without a sync and takes a ticket; one writer at a time then
/// syncs the journal for every batch appended before its sync began,
/// while later writers wait for that sync or lead the next. Every write
/// still returns only once its batch is on disk, but concurrent writers
/// share one `fdatasync` instead of queueing one each behind the
/// journal's lock.
#[derive(Default)]
struct GroupSync {
    state: Mutex<SyncState>,
    done: std::sync::Condvar,
    counts: Arc<SyncCounts>,
}

/// Journal syncs done, and batches they made durable (the ratio is the
/// batches per sync).
#[derive(Default)]
struct SyncCounts {
    syncs: std::sync::atomic::AtomicU64,
    batches: std::sync::atomic::AtomicU64,
}

impl SyncCounts {
    /// One sync that made `batches` durable.
    fn add(&self, batches: u64) {
        use std::sync::atomic::Ordering;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.batches.fetch_add(batches, Ordering::Relaxed);
    }

    /// Syncs done, and the batches they made durable.
    fn get(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        (
            self.syncs.load(Ordering::Relaxed),
            self.batches.load(Ordering::Relaxed),
        )
    }
}

impl GroupSync {
    /// Journal syncs done, and the batches they made durable.
    pub(crate) fn counts(&self) -> (u64, u64) {
        self.counts.get()
    }

    fn lock(&self) -> StoreResult<std::sync::MutexGuard<'_, SyncState>> {
        self.state
            .lock()
            .map_err(|_| unavailable("journal sync state poisoned"))
    }

    /// Returns once every batch committed to `db` before the call is on
    /// disk: waits for a sync under way that covers it, or leads the next.
    fn durable(&self, db: &Database) -> StoreResult<()> {
        let mut s = self.lock()?;
        s.appended += 1;
        let ticket = s.appended;
        loop {
            if s.synced >= ticket {
                return Ok(());
            }
            if !s.syncing {
                break;
            }
            s = self
                .done
                .wait(s)
                .map_err(|_| unavailable("journal sync state poisoned"))?;
        }
        // Lead: sync everything appended so far.
        s.syncing = true;
        let through = s.appended;
        let covered = through - s.synced;
        drop(s);
        let r = db.persist(PersistMode::SyncData);
        let mut s = self.lock()?;
        s.syncing = false;
        if r.is_ok() {
            s.synced = through;
            self.counts.add(covered);
        }
        drop(s);
        // Waiters either find their ticket synced or lead the next sync
        // (which fails the same way when this one failed).
        self.done.notify_all();
        r.map_err(unavailable)
    }
}

#[derive(Default)]
struct SyncState {
    /// Batches appended to the journal (the last ticket handed out).
    appended: u64,
    /// Every ticket up to this one is durable.
    synced: u64,
    /// A writer is syncing the journal now.
    syncing: bool,
}

const HOST_LOCK_STRIPES: usize = 64;

/// Memtable size of the result and status log keyspaces (bytes).
const LOG_MEMTABLE_BYTES: u64 = 16 * 1024 * 1024;
/// ... and of every other keyspace.
const MEMTABLE_BYTES: u64 = 8 * 1024 * 1024;
/// The memtable size of keyspace `name`.
fn memtable_bytes(name: &str) -> u64 {
    match name {
        "results" | "status" => LOG_MEMTABLE_BYTES,
        _ => MEMTABLE_BYTES,
    }
}

/// fjall-backed store; cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
}

/// The open database, and what reopens it after a failed write.
struct Shared {
    dir: std::path::PathBuf,
    options: StoreOptions,
    /// `None` while the database is being reopened.
    current: std::sync::RwLock<Option<Arc<Inner>>>,
    /// Why it is being reopened.
    failure: Mutex<Option<String>>,
    recovering: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmbeddedStore")
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn enc<T: Serialize>(v: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(unavailable)
}

fn dec<T: DeserializeOwned>(key: &[u8], v: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

/// Newest first: byte order of `u64::MAX - at` is descending time.
fn audit_key(at: i64, id: &str) -> Vec<u8> {
    let mut k = (u64::MAX - at.max(0) as u64).to_be_bytes().to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

/// The fjall settings of every Gatehouse database (the store's and the
/// forward log's), measured under load (docs/benchmarks/performance.md):
///
/// - one background worker: with two, fjall 3.1's first worker hands
///   every compaction request back to the queue while the other is busy
///   and spins doing so (15 % of the server's CPU on two cores);
/// - no journal compression: every batch is synced at once and dropped
///   after the flush, so compressing it costs CPU and saves little.
pub fn tune_fjall(b: fjall::DatabaseBuilder<Database>) -> fjall::DatabaseBuilder<Database> {
    b.worker_threads(1)
        .journal_compression(fjall::CompressionType::None)
}

/// How the embedded store guards its disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// Log batches are refused ([`StoreError::DiskLow`]) while the store's
    /// filesystem has less free space than this; 0: never.
    pub min_free_disk_bytes: u64,
}

/// Free bytes on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> StoreResult<u64> {
    gatehouse_core::disk::free_bytes(dir)
        .map_err(|e| unavailable(format!("free space of {}: {e}", dir.display())))
}

impl EmbeddedStore {
    /// Opens (or creates) the database under `dir`, with no free-space
    /// watermark.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// Opens (or creates) the database under `dir`.
    pub fn open_with(dir: &Path, options: StoreOptions) -> StoreResult<Self> {
        let inner = open_inner(dir, options)?;
        Ok(Self {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                options,
                current: std::sync::RwLock::new(Some(Arc::new(inner))),
                failure: Mutex::new(None),
                recovering: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// The open database, or why there is none right now.
    fn current(&self) -> StoreResult<Arc<Inner>> {
        let cur = self
            .shared
            .current
            .read()
            .ok()
            .and_then(|c| c.as_ref().cloned());
        cur.ok_or_else(|| {
            let why = self
                .shared
                .failure
                .lock()
                .ok()
                .and_then(|f| f.clone())
                .unwrap_or_default();
            StoreError::Unavailable(format!(
                "the store in {} failed a write and is being reopened ({why}); retry",
                self.shared.dir.display()
            ))
        })
    }

    /// After a failed call: if the database can no longer write (fjall
    /// poisons itself at a failed write; a full disk), takes it out of
    /// service and reopens it in the background once it can write again
    /// (the journal is replayed), so service resumes without a restart.
    fn check_writable(&self, inner: &Arc<Inner>) {
        use std::sync::atomic::Ordering;
        let Err(e) = inner.probe() else {
            return;
        };
        if self.shared.recovering.swap(true, Ordering::SeqCst) {
            return;
        }
        let cause = match free_bytes(&self.shared.dir) {
            Ok(free) => format!("{e}; {free} bytes free"),
            Err(_) => e.to_string(),
        };
        let old = self.shared.current.write().ok().and_then(|mut c| c.take());
        if let Ok(mut f) = self.shared.failure.lock() {
            *f = Some(cause.clone());
        }
        let dir = self.shared.dir.display().to_string();
        tracing::error!(dir = %dir, cause = %cause, "the store cannot write; reopening it once it can");
        let shared = self.shared.clone();
        drop(old);
        std::thread::spawn(move || {
            let mut wait = std::time::Duration::from_millis(200);
            loop {
                // Back-off between attempts on a blocking thread of its own.
                std::thread::sleep(wait);
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
                // Not on a disk still (nearly) full: a reopened journal
                // takes a probe write, then fails the next batch again.
                if free_bytes(&shared.dir).is_ok_and(|f| f < REOPEN_HEADROOM) {
                    continue;
                }
                let Ok(inner) = open_inner(&shared.dir, shared.options) else {
                    continue;
                };
                if inner.probe().is_err() {
                    continue;
                }
                if let Ok(mut c) = shared.current.write() {
                    *c = Some(Arc::new(inner));
                }
                if let Ok(mut f) = shared.failure.lock() {
                    *f = None;
                }
                shared.recovering.store(false, Ordering::SeqCst);
                tracing::info!(dir = %shared.dir.display(), "the store is writable again: reopened");
                return;
            }
        });
    }
}

/// Opens (or creates) the fjall database under `dir` with `cache_bytes`
/// of block cache.
fn open_db(dir: &Path, cache_bytes: u64) -> StoreResult<Database> {
    tune_fjall(Database::builder(dir))
        .cache_size(cache_bytes)
        .open()
        .map_err(|e| match e {
            fjall::Error::Locked => StoreError::Unavailable(format!(
                "{} is in use by another Gatehouse process (its store is locked); stop that process or give this one another data_dir",
                dir.display()
            )),
            e => StoreError::Unavailable(format!("opening the store in {}: {e}", dir.display())),
        })
}

/// Opens keyspace `name` of `db` (creating it), with its memtable size.
///
/// Memtables are what the store holds in memory until a flush: fjall's
/// default (64 MiB each, up to four sealed ones queued per keyspace) let a
/// busy server hold gigabytes of log lines in skip lists. Smaller ones
/// flush sooner and keep the resident size near the working set.
///
/// The log keyspaces compress every table, from the first flush on: with
/// keys in minute slots (ADR 0041) most tables move down the levels
/// without a rewrite, and fjall's default (L0 and L1 uncompressed) would
/// leave them uncompressed for good. The log keyspaces (and their slot
/// index) are compacted by the log database's compactor, not by fjall's
/// worker (ADR 0048). Applies to keyspaces created from now on; fjall
/// keeps an existing keyspace's settings.
fn open_keyspace(db: &Database, name: &str) -> StoreResult<Keyspace> {
    let size = memtable_bytes(name);
    db.keyspace(name, || {
        let options = KeyspaceCreateOptions::default().max_memtable_size(size);
        match name {
            "results" | "status" => options
                .data_block_compression_policy(fjall::config::CompressionPolicy::all(
                    fjall::CompressionType::Lz4,
                ))
                .compaction_strategy(compaction::flush_only()),
            "slots" => options.compaction_strategy(compaction::flush_only()),
            _ => options,
        }
    })
    .map_err(unavailable)
}

/// Block cache of the store's database: host records, definitions and
/// campaigns are read on every check-in.
const STORE_CACHE_BYTES: u64 = 32 * 1024 * 1024;
/// ... and of the log database, read only by searches and the console.
const LOG_CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// The log keyspaces' names, in the log database (and, before ADR 0034,
/// in the store's).
const LOG_KEYSPACES: [&str; 2] = ["results", "status"];

/// Opens (or creates) the log database under `dir/logs`, and moves into
/// it the log lines a store from before ADR 0034 kept in `main`.
/// Log batches are refused while `dir`'s filesystem has less than
/// `min_free` bytes free (0: never).
fn open_logs(dir: &Path, main: &Database, min_free: u64) -> StoreResult<Logs> {
    let db = open_db(&dir.join("logs"), LOG_CACHE_BYTES)?;
    let (results, status, slots, probe) = (
        open_keyspace(&db, "results")?,
        open_keyspace(&db, "status")?,
        open_keyspace(&db, "slots")?,
        open_keyspace(&db, "probe")?,
    );
    let readers = Arc::new(compaction::Readers::default());
    let compactor = compaction::Compactor::start(
        db.clone(),
        vec![results.clone(), status.clone(), slots.clone()],
        readers.clone(),
    )
    .map_err(|e| unavailable(format!("starting the log compactor: {e}")))?;
    let sync = GroupSync::default();
    let writer = writer::LogWriter::start(writer::Target {
        db: db.clone(),
        results: results.clone(),
        status: status.clone(),
        slots: slots.clone(),
        probe: probe.clone(),
        disk: DiskWatch {
            dir: dir.to_path_buf(),
            min: min_free,
            low: std::sync::atomic::AtomicBool::new(false),
        },
        counts: sync.counts.clone(),
    })
    .map_err(|e| unavailable(format!("starting the log writer: {e}")))?;
    let logs = Logs {
        writer,
        _compactor: compactor,
        readers,
        results,
        status,
        slots,
        probe,
        db,
        sync,
    };
    for name in LOG_KEYSPACES {
        if main.keyspace_exists(name) {
            move_logs(main, name, &logs)?;
        }
    }
    Ok(logs)
}

/// Copies keyspace `name` of the store's database into the log database,
/// durably, then drops it from the store's. Interrupted, it runs again at
/// the next open: the copy rewrites the same keys, and the source is
/// dropped only after every line is durable in the log database.
fn move_logs(main: &Database, name: &str, logs: &Logs) -> StoreResult<()> {
    const CHUNK: usize = 10_000;
    let from = open_keyspace(main, name)?;
    let to = if name == "results" {
        &logs.results
    } else {
        &logs.status
    };
    tracing::info!(
        keyspace = name,
        "moving stored log lines into the log database (ADR 0034)"
    );
    let mut moved = 0u64;
    let mut b = logs.db.batch();
    for g in from.iter() {
        let (k, v) = g.into_inner().map_err(unavailable)?;
        b.insert(to, k, v);
        if b.len() >= CHUNK {
            let full = std::mem::replace(&mut b, logs.db.batch());
            full.commit().map_err(unavailable)?;
            moved += CHUNK as u64;
            if moved.is_multiple_of(100 * CHUNK as u64) {
                tracing::info!(keyspace = name, moved, "moving log lines");
            }
        }
    }
    moved += b.len() as u64;
    b.commit().map_err(unavailable)?;
    logs.db
        .persist(PersistMode::SyncData)
        .map_err(unavailable)?;
    main.delete_keyspace(from).map_err(unavailable)?;
    tracing::info!(
        keyspace = name,
        moved,
        "log lines moved into the log database"
    );
    Ok(())
}

/// Opens (or creates) the database under `dir`.
fn open_inner(dir: &Path, options: StoreOptions) -> StoreResult<Inner> {
    let db = open_db(dir, STORE_CACHE_BYTES)?;
    let opened = std::cell::RefCell::new(Vec::new());
    let ks = |name: &str| {
        let k = open_keyspace(&db, name)?;
        opened.borrow_mut().push(k.clone());
        Ok::<_, StoreError>(k)
    };
    let inner = Inner {
        hosts: ks("hosts")?,
        names: ks("names")?,
        seen: ks("seen")?,
        defs: ks("defs")?,
        meta: ks("meta")?,
        blobs: ks("blobs")?,
        logs: open_logs(dir, &db, options.min_free_disk_bytes)?,
        campaigns: ks("campaigns")?,
        deliveries: ks("deliveries")?,
        open: ks("open")?,
        cresults: ks("cresults")?,
        carves: ks("carves")?,
        blocks: ks("blocks")?,
        secrets: ks("secrets")?,
        secret_hash: ks("secret_hash")?,
        audit: ks("audit")?,
        fences: ks("fences")?,
        alerts: ks("alerts")?,
        dead: ks("dead")?,
        rmw: Mutex::new(()),
        host_locks: (0..HOST_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        keyspaces: opened.into_inner(),
        sync: syncer::Syncer::start(db.clone())
            .map_err(|e| unavailable(format!("starting the journal sync: {e}")))?,
        db,
    };
    hosts::index_names(&inner)?;
    Ok(inner)
}

/// What a store call's blocking work writes through: the open database,
/// and the journal ticket of the last batch it committed, whose sync the
/// call awaits once its thread and locks are given back (ADR 0049).
struct Tx<'a> {
    inner: &'a Inner,
    ticket: std::cell::Cell<u64>,
}

impl std::ops::Deref for Tx<'_> {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        self.inner
    }
}

impl Tx<'_> {
    /// Commits `b`; the call returns once it is durable.
    fn write(&self, b: fjall::OwnedWriteBatch) -> StoreResult<()> {
        if self.inner.apply(b)? {
            self.ticket.set(self.inner.sync.ticket()?);
        }
        Ok(())
    }

    fn commit(&self, items: Vec<(&Keyspace, Vec<u8>, Vec<u8>)>) -> StoreResult<()> {
        self.write(self.inner.batch_of(items))
    }

    /// Removes `key` from `ks`; whether it was there.
    fn delete(&self, ks: &Keyspace, key: &[u8]) -> StoreResult<bool> {
        if !ks.contains_key(key).map_err(unavailable)? {
            return Ok(false);
        }
        let mut b = self.inner.db.batch();
        b.remove(ks, key.to_vec());
        self.write(b)?;
        Ok(true)
    }
}

impl EmbeddedStore {
    /// Runs blocking fjall work off the async threads, then waits (as a
    /// task) until what it committed is durable.
    async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> StoreResult<T> + Send + 'static,
    {
        let inner = self.current()?;
        let store = self.clone();
        let (r, ticket, inner) = tokio::task::spawn_blocking(move || {
            let tx = Tx {
                inner: &inner,
                ticket: std::cell::Cell::new(0),
            };
            let r = f(&tx);
            let ticket = tx.ticket.get();
            if let Err(StoreError::Unavailable(_)) = &r {
                store.check_writable(&inner);
            }
            (r, ticket, inner)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?;
        let value = r?;
        if ticket > 0
            && let Err(e) = inner.sync.durable(ticket).await
        {
            let store = self.clone();
            tokio::task::spawn_blocking(move || store.check_writable(&inner));
            return Err(e);
        }
        Ok(value)
    }
}

/// The free space log writes need: the database directory's filesystem
/// and its watermark.
struct DiskWatch {
    dir: std::path::PathBuf,
    /// `limits.min_free_disk_bytes` (0: not watched).
    min: u64,
    /// Below the watermark at the last log write.
    low: std::sync::atomic::AtomicBool,
}

impl DiskWatch {
    /// Refuses a log write while free space is below the watermark; says
    /// so in the log when the disk goes low and when it has room again.
    fn room_for_logs(&self) -> StoreResult<()> {
        use std::sync::atomic::Ordering;
        let min = self.min;
        if min == 0 {
            return Ok(());
        }
        let free = free_bytes(&self.dir)?;
        let low = free < min;
        let was = self.low.swap(low, Ordering::Relaxed);
        let path = self.dir.display().to_string();
        match (was, low) {
            (false, true) => tracing::warn!(
                path = %path, free, min,
                "disk nearly full: log batches are refused (agents keep them) until space is freed"
            ),
            (true, false) => {
                tracing::info!(path = %path, free, "disk has room again: log batches accepted")
            }
            _ => {}
        }
        if low {
            return Err(StoreError::DiskLow { path, free, min });
        }
        Ok(())
    }
}

impl Inner {
    /// A small durable write to each database: fails when either cannot
    /// write.
    fn probe(&self) -> StoreResult<()> {
        let now = gatehouse_core::time::now_ms().to_be_bytes().to_vec();
        self.commit_durably(vec![(&self.meta, b"\0writable".to_vec(), now.clone())])?;
        let mut b = self.logs.db.batch();
        b.insert(&self.logs.probe, b"writable".to_vec(), now);
        self.write_logs(b)
    }

    /// Commits `items` and returns once they are durable, holding this
    /// thread meanwhile: for opening and probing; a store call commits
    /// through its [`Tx`].
    fn commit_durably(&self, items: Vec<(&Keyspace, Vec<u8>, Vec<u8>)>) -> StoreResult<()> {
        self.write_durably(self.batch_of(items))
    }

    /// Commits `items` without waiting for the journal's sync: the batch
    /// is handed to the operating system (fjall's `PersistMode::Buffer`),
    /// so it survives the process's crash, and the next durable write or
    /// flush takes it to disk. Only for what may lose its last seconds
    /// when the machine fails (last-seen times).
    fn commit_unsynced(&self, items: Vec<(&Keyspace, Vec<u8>, Vec<u8>)>) -> StoreResult<()> {
        self.apply(self.batch_of(items)).map(|_| ())
    }

    /// Commits `b` to the store's journal (handed to the operating
    /// system) and keeps its memtables bounded; whether it held anything.
    fn apply(&self, b: fjall::OwnedWriteBatch) -> StoreResult<bool> {
        if b.is_empty() {
            return Ok(false);
        }
        b.commit().map_err(unavailable)?;
        Self::bound_memtables(&self.keyspaces)?;
        Ok(true)
    }

    fn batch_of(&self, items: Vec<(&Keyspace, Vec<u8>, Vec<u8>)>) -> fjall::OwnedWriteBatch {
        let mut b = self.db.batch();
        for (ks, k, v) in items {
            b.insert(ks, k, v);
        }
        b
    }

    /// Rotates an active memtable of `keyspaces` that has grown past its
    /// size (ADRs 0033 and 0036). fjall asks its one worker thread to
    /// rotate a full memtable through a bounded queue (1,000 messages),
    /// once per committed batch for as long as the memtable stays full;
    /// while the worker compacts, the requests pile up, and once the queue
    /// is full the worker, rotating, blocks forever sending itself the
    /// flush that follows: every writer of that database then halts (found
    /// at 20,000 hosts: 45 threads asleep in fjall's write halt, the worker
    /// parked in `flume::send`). Rotated here as soon as it is full, a
    /// memtable draws at most a request or two (the ones the worker then
    /// finds stale and drops), the queue stays short, and fjall's stall on
    /// four sealed memtables bounds memory and slows writers to the flush
    /// rate (the edge turns that into busy answers).
    fn bound_memtables<'a>(keyspaces: impl IntoIterator<Item = &'a Keyspace>) -> StoreResult<()> {
        use lsm_tree::AbstractTree;
        for ks in keyspaces {
            if ks.tree.active_memtable().size() > memtable_bytes(ks.name()) {
                ks.rotate_memtable().map_err(unavailable)?;
            }
        }
        Ok(())
    }

    /// Commits `b` (of the store's database) and returns once it is
    /// durable, holding this thread meanwhile (see [`Inner::commit_durably`]).
    fn write_durably(&self, b: fjall::OwnedWriteBatch) -> StoreResult<()> {
        if self.apply(b)? {
            self.sync.durable_blocking(self.sync.ticket()?)?;
        }
        Ok(())
    }

    /// Commits `b` (of the log database) and returns once it is durable.
    fn write_logs(&self, b: fjall::OwnedWriteBatch) -> StoreResult<()> {
        if b.is_empty() {
            return Ok(());
        }
        b.commit().map_err(unavailable)?;
        Self::bound_memtables([
            &self.logs.results,
            &self.logs.status,
            &self.logs.slots,
            &self.logs.probe,
        ])?;
        self.logs.sync.durable(&self.logs.db)
    }

    /// Up to `limit` values of a keyspace keyed by [`audit_key`], after
    /// the key `from` (exclusive) when given.
    fn newest_first<T: DeserializeOwned>(
        &self,
        ks: &Keyspace,
        from: Option<Vec<u8>>,
        limit: usize,
    ) -> StoreResult<Vec<T>> {
        let iter = match &from {
            Some(f) => ks.range::<&[u8], _>((
                std::ops::Bound::Excluded(f.as_slice()),
                std::ops::Bound::Unbounded,
            )),
            None => ks.iter(),
        };
        let mut out = Vec::new();
        for g in iter.take(limit) {
            let (k, v) = g.into_inner().map_err(unavailable)?;
            out.push(dec(&k, &v)?);
        }
        Ok(out)
    }

    fn get_json<T: DeserializeOwned>(&self, ks: &Keyspace, key: &[u8]) -> StoreResult<Option<T>> {
        match ks.get(key).map_err(unavailable)? {
            Some(v) => dec(key, &v).map(Some),
            None => Ok(None),
        }
    }

    fn scan_json<T: DeserializeOwned>(&self, ks: &Keyspace, prefix: &[u8]) -> StoreResult<Vec<T>> {
        let mut out = Vec::new();
        for g in ks.prefix(prefix) {
            let (k, v) = g.into_inner().map_err(unavailable)?;
            out.push(dec(&k, &v)?);
        }
        Ok(out)
    }

    fn host_lock(&self, host: &HostId) -> StoreResult<std::sync::MutexGuard<'_, ()>> {
        let stripe = host.as_str().bytes().fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        }) % HOST_LOCK_STRIPES;
        self.host_locks[stripe]
            .lock()
            .map_err(|_| unavailable("host lock poisoned"))
    }

    /// Checks `fence` against the host's last fenced write; returns the
    /// fence row to commit with the write (none when the write is not
    /// fenced or this fence is stored already). Call under the host's lock.
    fn fenced(&self, host: &HostId, fence: Fence) -> StoreResult<Option<(Vec<u8>, Vec<u8>)>> {
        if fence.is_none() {
            return Ok(None);
        }
        let k = host.as_str().as_bytes().to_vec();
        let held = match self.fences.get(&k).map_err(unavailable)? {
            Some(v) => {
                u64::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    key: host.to_string(),
                    reason: "fencing token is not 8 bytes".into(),
                })?)
            }
            None => 0,
        };
        if fence.0 < held {
            return Err(StoreError::Fenced {
                host: host.to_string(),
                presented: fence.0,
                held,
            });
        }
        if fence.0 == held {
            // Stored already: nothing to write again.
            return Ok(None);
        }
        Ok(Some((k, fence.0.to_be_bytes().to_vec())))
    }

    fn counter(&self, key: &str) -> StoreResult<u64> {
        Ok(match self.meta.get(key).map_err(unavailable)? {
            Some(v) => {
                u64::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    key: key.to_owned(),
                    reason: "counter is not 8 bytes".into(),
                })?)
            }
            None => 0,
        })
    }
}

/// The items of a newest-first list (`(time, id)` descending by time,
/// ascending by id) strictly after `before`, at most `limit` of them.
fn newest_first_after<T>(
    sorted: Vec<T>,
    before: Option<(i64, String)>,
    limit: usize,
    key: impl Fn(&T) -> (i64, &String),
) -> Vec<T> {
    sorted
        .into_iter()
        .filter(|x| {
            before.as_ref().is_none_or(|(at, id)| {
                let (t, i) = key(x);
                t < *at || (t == *at && i > id)
            })
        })
        .take(limit)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::ports::stores::*;

    /// Each conformance check against its own fresh store; every check
    /// runs (the embedded store has every semantic the port describes:
    /// `Semantics::FULL`).
    mod conformance {
        async fn fresh() -> (
            tempfile::TempDir,
            std::sync::Arc<dyn gatehouse_core::ports::Store>,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = super::EmbeddedStore::open(dir.path()).unwrap();
            (dir, std::sync::Arc::new(store))
        }

        crate::conformance_tests!(fresh, crate::conformance::Semantics::FULL);
    }

    use gatehouse_testkit::tmpfs::Tmpfs;

    /// Below the watermark log batches are refused with where and how
    /// much is free; host and campaign writes go on.
    #[tokio::test]
    async fn log_batches_are_refused_below_the_free_space_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_with(
            dir.path(),
            StoreOptions {
                min_free_disk_bytes: u64::MAX,
            },
        )
        .unwrap();
        let host = crate::conformance::sample_host(1);
        store.put_host(&host, Fence::NONE).await.unwrap();
        let batch = crate::conformance::processes_post(&host.id, 1, 3, 1_000);
        match store.append_logs(&batch).await {
            Err(StoreError::DiskLow { path, min, .. }) => {
                assert_eq!(min, u64::MAX);
                assert_eq!(path, dir.path().display().to_string());
            }
            other => panic!("a log batch below the watermark: {other:?}"),
        }
        store
            .touch_host(&host.id, 5_000, Fence::NONE)
            .await
            .unwrap();
        assert_eq!(
            store.get_host(&host.id).await.unwrap().unwrap().last_seen,
            5_000
        );
    }

    /// On a real small filesystem (a tmpfs, when this runs as root): log
    /// batches stop at the watermark, metadata writes go on, and batches
    /// are accepted again once space is freed, without reopening.
    #[tokio::test]
    async fn a_filling_filesystem_refuses_logs_at_the_watermark_and_recovers() {
        let Some(mnt) = Tmpfs::mount(24, "the free-space watermark test") else {
            return;
        };
        let min = 8 * 1024 * 1024;
        let store = EmbeddedStore::open_with(
            &mnt.path().join("store"),
            StoreOptions {
                min_free_disk_bytes: min,
            },
        )
        .unwrap();
        let host = crate::conformance::sample_host(2);
        store.put_host(&host, Fence::NONE).await.unwrap();
        let batch = |n| crate::conformance::processes_post(&host.id, n, 5, 1_000);
        store.append_logs(&batch(1)).await.unwrap();
        // Another tenant of the filesystem leaves less than the watermark.
        let free = free_bytes(mnt.path()).unwrap();
        let ballast = mnt.path().join("ballast");
        std::fs::write(&ballast, vec![0u8; (free - min / 2) as usize]).unwrap();
        let refused = store.append_logs(&batch(2)).await;
        assert!(
            matches!(refused, Err(StoreError::DiskLow { free, .. }) if free < min),
            "{refused:?}"
        );
        let h = store.health().await.unwrap();
        assert_eq!(h.writes_refused, None, "metadata writes go on");
        assert!(
            h.logs_refused
                .is_some_and(|why| why.starts_with("disk nearly full at")),
            "log batches refused, and it says so"
        );
        store
            .touch_host(&host.id, 9_000, Fence::NONE)
            .await
            .unwrap();
        let mut renamed = host.clone();
        renamed.hostname = "still-writable".into();
        store.put_host(&renamed, Fence::NONE).await.unwrap();
        // Space comes back: the same store takes batches again.
        std::fs::remove_file(&ballast).unwrap();
        store.append_logs(&batch(2)).await.unwrap();
        assert_eq!(store.health().await.unwrap().logs_refused, None);
        let stored = store
            .query_results(&gatehouse_core::model::ResultFilter {
                host_id: Some(host.id.clone()),
                until: i64::MAX,
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(stored.len(), 10, "both batches, once each");
    }

    /// A disk filled to the last byte (by someone else: no watermark)
    /// makes writes fail; once space is freed the same store handle writes
    /// again by itself (reopened, journal replayed), with everything it
    /// had acknowledged before still there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_disk_is_recovered_from_without_a_restart() {
        let Some(mnt) = Tmpfs::mount(24, "the full-disk recovery test") else {
            return;
        };
        let store = EmbeddedStore::open(&mnt.path().join("store")).unwrap();
        let host = crate::conformance::sample_host(3);
        store.put_host(&host, Fence::NONE).await.unwrap();
        let batch = |n| crate::conformance::processes_post(&host.id, n, 5, 1_000);
        store.append_logs(&batch(1)).await.unwrap();
        // Fill the filesystem to the last byte.
        let ballast = mnt.fill_up().unwrap();
        let mut failed = false;
        for n in 2..40 {
            if store.append_logs(&batch(n)).await.is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "a write failed on the full disk");
        assert!(
            store
                .shared
                .recovering
                .load(std::sync::atomic::Ordering::SeqCst),
            "the failed write took the database out of service"
        );
        let e = store
            .touch_host(&host.id, 9, Fence::NONE)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("being reopened"), "{e}");
        // Its health says so, and where (readiness fails on it).
        let h = store.health().await.unwrap();
        let why = h.writes_refused.unwrap_or_default();
        let at = format!("disk full at {}", mnt.path().join("store").display());
        assert!(why.starts_with(&at), "{why}");
        assert!(h.free_bytes.is_some_and(|f| f < REOPEN_HEADROOM));
        std::fs::remove_file(&ballast).unwrap();
        // Without a restart: the same handle writes again, bounded wait.
        gatehouse_testkit::until(
            "the store writes again",
            std::time::Duration::from_secs(30),
            async || store.append_logs(&batch(100)).await.is_ok(),
        )
        .await;
        store
            .touch_host(&host.id, 10_000, Fence::NONE)
            .await
            .unwrap();
        assert_eq!(store.health().await.unwrap().writes_refused, None);
        assert_eq!(
            store.get_host(&host.id).await.unwrap().unwrap().last_seen,
            10_000
        );
        assert!(
            !store
                .shared
                .recovering
                .load(std::sync::atomic::Ordering::SeqCst)
        );
        let lines = store
            .query_results(&gatehouse_core::model::ResultFilter {
                host_id: Some(host.id.clone()),
                until: i64::MAX,
                limit: 10_000,
                ..Default::default()
            })
            .await
            .unwrap();
        let ids: std::collections::HashSet<&str> =
            lines.iter().map(|l| l.line_id.as_str()).collect();
        for r in match batch(1) {
            LogRecords::Results(rs) => rs,
            LogRecords::Status(_) => Vec::new(),
        } {
            assert!(
                ids.contains(r.line_id.as_str()),
                "acknowledged line {} kept",
                r.line_id
            );
        }
    }

    #[test]
    fn a_store_in_use_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let _first = EmbeddedStore::open(dir.path()).unwrap();
        let e = EmbeddedStore::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("in use by another Gatehouse process"), "{e}");
        assert!(e.contains(&dir.path().display().to_string()), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            store.put_meta("k", b"v").await.unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(
            store.get_meta("k").await.ok().flatten().as_deref(),
            Some(&b"v"[..])
        );
    }
}

#[cfg(test)]
mod reopen_tests {
    use super::*;
    use gatehouse_core::logs::records;
    use gatehouse_core::ports::stores::*;
    use gatehouse_core::wire::{parse_log, parse_object};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_acknowledged_log_line_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostId::from_identity("hw:reopen");
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            for round in 0..200i64 {
                let data: Vec<_> = (0..5)
                    .map(|i| serde_json::json!({"name": "users", "unixTime": 1_717_496_431 + round, "columns": {"uid": format!("{round}-{i}")}, "action": "added"}))
                    .collect();
                let body =
                    serde_json::to_vec(&serde_json::json!({"log_type": "result", "data": data}))
                        .unwrap_or_default();
                let req = parse_log(parse_object(&body).unwrap_or_default()).unwrap();
                store.append_logs(&records(&host, req, 1)).await.unwrap();
            }
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let f = ResultFilter {
            host_id: Some(host),
            name: None,
            since: 0,
            until: i64::MAX,
            limit: 100_000,
            ..Default::default()
        };
        assert_eq!(
            store.query_results(&f).await.unwrap_or_default().len(),
            1000
        );
    }
}

#[cfg(test)]
mod group_sync_tests {
    use super::*;
    use gatehouse_core::ports::stores::*;

    /// Concurrent writers share journal syncs: every durable write is
    /// covered by exactly one sync and none is lost. A host's last
    /// check-in lives in `seen` without rewriting its record and waits for
    /// no sync (best effort), and is still there after the store closes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_are_each_synced_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let host = crate::conformance::sample_host(1);
        store.put_host(&host, Fence::NONE).await.unwrap();
        let (base_syncs, base) = store.current().unwrap().sync.counts();
        let writers: Vec<_> = (0..64u32)
            .map(|n| {
                let store = store.clone();
                let other = crate::conformance::sample_host(100 + n);
                tokio::spawn(async move { store.put_host(&other, Fence::NONE).await })
            })
            .collect();
        for w in writers {
            w.await.unwrap().unwrap();
        }
        let inner = store.current().unwrap();
        let (syncs, batches) = inner.sync.counts();
        let (syncs, batches) = (syncs - base_syncs, batches - base);
        assert_eq!(batches, 64, "one durable batch per write");
        assert!((1..=64).contains(&syncs), "{syncs} syncs");
        let (appended, synced) = inner.sync.position();
        assert_eq!(synced, appended, "every appended batch is synced");

        let (before_touches, _) = inner.sync.counts();
        let touches: Vec<_> = (0..64i64)
            .map(|n| {
                let store = store.clone();
                let id = host.id.clone();
                tokio::spawn(async move { store.touch_host(&id, 1_000 + n, Fence::NONE).await })
            })
            .collect();
        for t in touches {
            t.await.unwrap().unwrap();
        }
        assert_eq!(
            inner.sync.counts().0,
            before_touches,
            "a check-in waits for no journal sync"
        );
        let got = store.get_host(&host.id).await.unwrap().unwrap();
        assert_eq!(got.last_seen, 1_063, "the latest check-in wins");
        let record: Host = inner
            .get_json(&inner.hosts, host.id.as_str().as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(
            record.last_seen, host.last_seen,
            "the record is not rewritten"
        );
        drop(inner);
        drop(store);
        let reopened = EmbeddedStore::open(dir.path()).unwrap();
        let got = reopened.get_host(&host.id).await.unwrap().unwrap();
        assert_eq!(
            got.last_seen, 1_063,
            "the check-in outlives the store's close"
        );
        assert!(reopened.delete_host(&host.id, Fence::NONE).await.unwrap());
        assert!(reopened.get_host(&host.id).await.unwrap().is_none());
    }

    /// However far fjall's worker falls behind, a writer never leaves a
    /// log keyspace's active memtable much past its bound: it rotates the
    /// memtable itself (ADR 0033), and every byte written stays readable.
    #[tokio::test]
    async fn log_memtables_stay_bounded_whatever_the_worker_does() {
        use lsm_tree::AbstractTree;
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let inner = store.current().unwrap();
        let batch_bytes = 2 * 1024 * 1024;
        let bound = LOG_MEMTABLE_BYTES;
        let value = vec![b'x'; 64 * 1024];
        let batches = (3 * bound / batch_bytes) as u32;
        for n in 0..batches {
            let mut b = inner.logs.db.batch();
            for k in 0..(batch_bytes / value.len() as u64) as u32 {
                let mut key = n.to_be_bytes().to_vec();
                key.extend_from_slice(&k.to_be_bytes());
                b.insert(&inner.logs.results, key, value.clone());
            }
            inner.write_logs(b).unwrap();
            let active = inner.logs.results.tree.active_memtable().size();
            assert!(
                active <= bound + 2 * batch_bytes,
                "after batch {n} the active memtable holds {active} bytes"
            );
        }
        let stored = inner.logs.results.iter().count();
        assert_eq!(
            stored as u64,
            u64::from(batches) * batch_bytes / value.len() as u64
        );
    }

    /// Writers bound every keyspace of the store's database, not only the
    /// busy ones: a keyspace left out could flood fjall's worker queue
    /// with rotation requests (ADR 0036).
    #[tokio::test]
    async fn writers_bound_every_keyspace_of_both_databases() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let inner = store.current().unwrap();
        let mut bounded: Vec<String> = inner
            .keyspaces
            .iter()
            .map(|k| k.name().to_string())
            .collect();
        bounded.sort();
        let mut all: Vec<String> = inner
            .db
            .list_keyspace_names()
            .iter()
            .map(|k| k.to_string())
            .collect();
        all.sort();
        assert_eq!(bounded, all);
        assert_eq!(inner.logs.db.list_keyspace_names().len(), 4);
    }

    /// A store from before ADR 0034 kept its log lines in its own
    /// database: opening it moves them, every one, into the log database
    /// and drops the old keyspaces; searches find them where they were.
    #[tokio::test]
    async fn log_lines_of_an_older_store_are_moved_into_the_log_database() {
        let dir = tempfile::tempdir().unwrap();
        let host = crate::conformance::sample_host(1);
        let day = 1_717_496_431i64;
        let parse = |body: serde_json::Value| {
            let m =
                gatehouse_core::wire::parse_object(&serde_json::to_vec(&body).unwrap()).unwrap();
            gatehouse_core::logs::records(
                &host.id,
                gatehouse_core::wire::parse_log(m).unwrap(),
                day * 1000,
            )
        };
        let data: Vec<_> = (0..25_000)
            .map(|n| serde_json::json!({"name": "procs", "unixTime": day + n, "columns": {"n": n.to_string()}, "action": "added"}))
            .collect();
        let LogRecords::Results(lines) =
            parse(serde_json::json!({"log_type": "result", "data": data}))
        else {
            panic!("a result batch");
        };
        let LogRecords::Status(mut statuses) = parse(
            serde_json::json!({"log_type": "status", "data": [
                {"severity": 0, "unixTime": day, "message": "started", "filename": "x.cpp", "line": 1}
            ]}),
        ) else {
            panic!("a status batch");
        };
        let status = statuses.remove(0);
        {
            // As an older version wrote them: into the store's database.
            let db = open_db(dir.path(), STORE_CACHE_BYTES).unwrap();
            let results = open_keyspace(&db, "results").unwrap();
            let statuses = open_keyspace(&db, "status").unwrap();
            let mut b = db.batch();
            for r in &lines {
                b.insert(&results, logs::day_result_key(r), enc(r).unwrap());
            }
            b.insert(
                &statuses,
                logs::day_status_key(&status),
                enc(&status).unwrap(),
            );
            b.commit().unwrap();
            db.persist(PersistMode::SyncData).unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let inner = store.current().unwrap();
        assert!(!inner.db.keyspace_exists("results"));
        assert!(!inner.db.keyspace_exists("status"));
        assert_eq!(inner.logs.results.iter().count(), lines.len());
        drop(inner);
        let f = ResultFilter {
            host_id: Some(host.id.clone()),
            name: Some("procs".into()),
            until: i64::MAX,
            limit: 100_000,
            ..ResultFilter::default()
        };
        assert_eq!(store.query_results(&f).await.unwrap().len(), lines.len());
        let got = store.query_status(&host.id, 0, i64::MAX, 10).await.unwrap();
        assert_eq!(got, vec![status]);
        drop(store);
        // Reopened, nothing moves twice and nothing is lost.
        let reopened = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(reopened.query_results(&f).await.unwrap().len(), lines.len());
    }

    /// A store written before the name index existed is indexed when it
    /// is opened; lookups by name then read the index, not every record.
    #[tokio::test]
    async fn hosts_written_before_the_name_index_are_found_by_name_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mut hosts = Vec::new();
        for n in 0..3 {
            let mut h = crate::conformance::sample_host(n);
            h.host_identifier = format!("Ident-{n}");
            store.put_host(&h, Fence::NONE).await.unwrap();
            hosts.push(h);
        }
        // As an older version left it: records, no index, no marker.
        let inner = store.current().unwrap();
        let mut b = inner.db.batch();
        for g in inner.names.iter() {
            b.remove(&inner.names, g.key().unwrap().to_vec());
        }
        b.remove(&inner.meta, hosts::NAMES_INDEXED.to_vec());
        inner.write_durably(b).unwrap();
        assert!(store.hosts_named("ident-1").await.unwrap().is_empty());
        drop(inner);
        drop(store);

        let reopened = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(
            reopened.hosts_named("IDENT-1").await.unwrap(),
            vec![hosts[1].id.clone()]
        );
        assert_eq!(
            reopened.hosts_named(&hosts[2].hostname).await.unwrap(),
            vec![hosts[2].id.clone()]
        );
        let inner = reopened.current().unwrap();
        assert_eq!(inner.names.iter().count(), 6, "two names per host");
    }
}
