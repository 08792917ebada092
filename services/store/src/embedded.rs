//! The embedded store: fjall keyspaces in one database directory.
//!
//! Key layout (all integers big-endian so byte order is numeric order):
//!
//! | keyspace     | key                                           | value            |
//! |--------------|-----------------------------------------------|------------------|
//! | `hosts`      | host id                                       | `Host` JSON      |
//! | `defs`       | `q/<name>`, `s/<name>`, `l/<label>`, `u/<user>`, `t/<token id>` | JSON |
//! | `meta`       | name                                          | bytes            |
//! | `blobs`      | config hash                                   | config bytes     |
//! | `results`    | day u32 · host · name · 0 · unix u64 · line id | `ResultLog` JSON |
//! | `status`     | day u32 · host · unix u64 · line id           | `StatusLog` JSON |
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
//! | `alerts`     | (u64::MAX - at) · alert id                    | `Alert` JSON     |
//! | `dead`       | dead letter id                                | `DeadLetter` JSON |
//!
//! Rules live in `defs` under `r/<name>`, label queries under `lq/<label>`.
//!
//! Log keys start with a day bucket (`logs::bucket_day`: the agent's day
//! when its clock is plausible, else the receive day) so retention drops
//! whole days and a re-sent line lands on the same key.
//!
//! Fencing: a fenced write of host-owned state (record, last seen,
//! deliveries) checks the host's last token in `fences` and commits its own
//! in the same batch, under the host's stripe lock, so a deposed writer's
//! write is rejected even when it races the new owner's.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use gatehouse_core::HostId;
use gatehouse_core::logs::bucket_day;
use gatehouse_core::model::{
    ApiToken, AuditEvent, Campaign, CampaignResult, CarveSession, Delivery, EnrollSecret, Host,
    LabelConfig, LabelQuery, LogRecords, Page, Query, ResultFilter, ResultLog, Schedule, StatusLog,
    User,
};
use gatehouse_core::ports::{BlockOutcome, Fence, Store, StoreError, StoreResult};
use gatehouse_core::rules::{Alert, DeadLetter, Rule};
use serde::Serialize;
use serde::de::DeserializeOwned;

struct Inner {
    db: Database,
    hosts: Keyspace,
    defs: Keyspace,
    meta: Keyspace,
    blobs: Keyspace,
    results: Keyspace,
    status: Keyspace,
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
}

const HOST_LOCK_STRIPES: usize = 64;

/// fjall-backed store; cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
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

fn result_key(r: &ResultLog) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + 32 + r.name.len() + 1 + 8 + r.line_id.len());
    k.extend_from_slice(&bucket_day(r.unix_time, r.received_at).to_be_bytes());
    k.extend_from_slice(r.host_id.as_str().as_bytes());
    k.extend_from_slice(r.name.as_bytes());
    k.push(0);
    k.extend_from_slice(&(r.unix_time.max(0) as u64).to_be_bytes());
    k.extend_from_slice(r.line_id.as_bytes());
    k
}

fn status_key(s: &StatusLog) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + 32 + 8 + s.line_id.len());
    k.extend_from_slice(&bucket_day(s.unix_time, s.received_at).to_be_bytes());
    k.extend_from_slice(s.host_id.as_str().as_bytes());
    k.extend_from_slice(&(s.unix_time.max(0) as u64).to_be_bytes());
    k.extend_from_slice(s.line_id.as_bytes());
    k
}

/// Newest first: byte order of `u64::MAX - at` is descending time.
fn audit_key(at: i64, id: &str) -> Vec<u8> {
    let mut k = (u64::MAX - at.max(0) as u64).to_be_bytes().to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

fn first_day(ks: &Keyspace) -> Option<(u32, u32)> {
    let day = |k: &[u8]| -> Option<u32> { Some(u32::from_be_bytes(k.get(..4)?.try_into().ok()?)) };
    let lo = ks.first_key_value()?.key().ok()?;
    let hi = ks.last_key_value()?.key().ok()?;
    Some((day(&lo)?, day(&hi)?))
}

impl EmbeddedStore {
    /// Opens (or creates) the database under `dir`.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        let db = Database::builder(dir).open().map_err(|e| match e {
            fjall::Error::Locked => StoreError::Unavailable(format!(
                "{} is in use by another Gatehouse process (its store is locked); stop that process or give this one another data_dir",
                dir.display()
            )),
            e => StoreError::Unavailable(format!("opening the store in {}: {e}", dir.display())),
        })?;
        let ks = |name: &str| {
            db.keyspace(name, KeyspaceCreateOptions::default)
                .map_err(unavailable)
        };
        let inner = Inner {
            hosts: ks("hosts")?,
            defs: ks("defs")?,
            meta: ks("meta")?,
            blobs: ks("blobs")?,
            results: ks("results")?,
            status: ks("status")?,
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
            db,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Runs blocking fjall work off the async threads.
    async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> StoreResult<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }
}

impl Inner {
    fn commit(&self, items: Vec<(&Keyspace, Vec<u8>, Vec<u8>)>) -> StoreResult<()> {
        let mut b = self.db.batch().durability(Some(PersistMode::SyncData));
        for (ks, k, v) in items {
            b.insert(ks, k, v);
        }
        b.commit().map_err(unavailable)
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

    fn delete(&self, ks: &Keyspace, key: &[u8]) -> StoreResult<bool> {
        if !ks.contains_key(key).map_err(unavailable)? {
            return Ok(false);
        }
        let mut b = self.db.batch().durability(Some(PersistMode::SyncData));
        b.remove(ks, key.to_vec());
        b.commit().map_err(unavailable)?;
        Ok(true)
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
    /// fence row to commit with the write. Call under the host's lock.
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

#[async_trait]
impl Store for EmbeddedStore {
    async fn get_host(&self, id: &HostId) -> StoreResult<Option<Host>> {
        let id = id.clone();
        self.run(move |i| i.get_json(&i.hosts, id.as_str().as_bytes()))
            .await
    }

    async fn put_host(&self, host: &Host, fence: Fence) -> StoreResult<()> {
        let v = enc(host)?;
        let id = host.id.clone();
        self.run(move |i| {
            let _g = i.host_lock(&id)?;
            let mut items = vec![(&i.hosts, id.as_str().as_bytes().to_vec(), v)];
            if let Some((k, f)) = i.fenced(&id, fence)? {
                items.push((&i.fences, k, f));
            }
            i.commit(items)
        })
        .await
    }

    async fn delete_host(&self, id: &HostId, fence: Fence) -> StoreResult<bool> {
        let id = id.clone();
        self.run(move |i| {
            let _g = i.host_lock(&id)?;
            let k = id.as_str().as_bytes().to_vec();
            if i.hosts.get(&k).map_err(unavailable)?.is_none() {
                return Ok(false);
            }
            let f = i.fenced(&id, fence)?;
            let mut b = i.db.batch().durability(Some(PersistMode::SyncData));
            b.remove(&i.hosts, k);
            if let Some((k, f)) = f {
                b.insert(&i.fences, k, f);
            }
            b.commit().map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    async fn touch_host(&self, id: &HostId, last_seen: i64, fence: Fence) -> StoreResult<()> {
        let id = id.clone();
        self.run(move |i| {
            let _g = i.host_lock(&id)?;
            let k = id.as_str().as_bytes().to_vec();
            let Some(mut h) = i.get_json::<Host>(&i.hosts, &k)? else {
                return Ok(());
            };
            let f = i.fenced(&id, fence)?;
            if h.last_seen >= last_seen {
                return Ok(());
            }
            h.last_seen = last_seen;
            let mut items = vec![(&i.hosts, k, enc(&h)?)];
            if let Some((k, f)) = f {
                items.push((&i.fences, k, f));
            }
            i.commit(items)
        })
        .await
    }

    async fn list_hosts(&self, cursor: Option<&str>, limit: usize) -> StoreResult<Page<Host>> {
        // The cursor is the last host id of the previous page.
        let after = match cursor {
            Some(c) => Some(
                HostId::parse(c)
                    .ok_or_else(|| StoreError::Invalid(format!("invalid host cursor {c:?}")))?
                    .as_str()
                    .as_bytes()
                    .to_vec(),
            ),
            None => None,
        };
        self.run(move |i| {
            let iter = match &after {
                Some(a) => i.hosts.range::<&[u8], _>((
                    std::ops::Bound::Excluded(a.as_slice()),
                    std::ops::Bound::Unbounded,
                )),
                None => i.hosts.iter(),
            };
            let mut items = Vec::new();
            let mut more = false;
            for g in iter {
                let (k, v) = g.into_inner().map_err(unavailable)?;
                if items.len() == limit {
                    more = true;
                    break;
                }
                items.push(dec::<Host>(&k, &v)?);
            }
            let next = if more {
                items.last().map(|h| h.id.to_string())
            } else {
                None
            };
            Ok(Page { items, next })
        })
        .await
    }

    async fn hosts_with_label(&self, label: &str) -> StoreResult<Vec<HostId>> {
        // The all-in-one's fleet fits a scan; the cluster store keeps an
        // index.
        let label = label.to_owned();
        self.run(move |i| {
            let mut out = Vec::new();
            for g in i.hosts.iter() {
                let (k, v) = g.into_inner().map_err(unavailable)?;
                let h: Host = dec(&k, &v)?;
                if h.label_set().contains(&label) {
                    out.push(h.id);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn label_sets(&self) -> StoreResult<Vec<Vec<String>>> {
        self.run(|i| {
            let mut sets = std::collections::BTreeSet::new();
            for g in i.hosts.iter() {
                let (k, v) = g.into_inner().map_err(unavailable)?;
                sets.insert(dec::<Host>(&k, &v)?.label_set());
            }
            Ok(sets.into_iter().collect())
        })
        .await
    }

    async fn put_query(&self, q: &Query) -> StoreResult<()> {
        let (k, v) = (format!("q/{}", q.name).into_bytes(), enc(q)?);
        self.run(move |i| i.commit(vec![(&i.defs, k, v)])).await
    }

    async fn delete_query(&self, name: &str) -> StoreResult<bool> {
        let k = format!("q/{name}").into_bytes();
        self.run(move |i| i.delete(&i.defs, &k)).await
    }

    async fn list_queries(&self) -> StoreResult<Vec<Query>> {
        self.run(|i| i.scan_json(&i.defs, b"q/")).await
    }

    async fn put_label_query(&self, q: &LabelQuery) -> StoreResult<()> {
        let (k, v) = (format!("lq/{}", q.label).into_bytes(), enc(q)?);
        self.run(move |i| i.commit(vec![(&i.defs, k, v)])).await
    }

    async fn delete_label_query(&self, label: &str) -> StoreResult<bool> {
        let k = format!("lq/{label}").into_bytes();
        self.run(move |i| i.delete(&i.defs, &k)).await
    }

    async fn list_label_queries(&self) -> StoreResult<Vec<LabelQuery>> {
        self.run(|i| i.scan_json(&i.defs, b"lq/")).await
    }

    async fn put_schedule(&self, s: &Schedule) -> StoreResult<()> {
        let (k, v) = (format!("s/{}", s.name).into_bytes(), enc(s)?);
        self.run(move |i| i.commit(vec![(&i.defs, k, v)])).await
    }

    async fn delete_schedule(&self, name: &str) -> StoreResult<bool> {
        let k = format!("s/{name}").into_bytes();
        self.run(move |i| i.delete(&i.defs, &k)).await
    }

    async fn list_schedules(&self) -> StoreResult<Vec<Schedule>> {
        self.run(|i| i.scan_json(&i.defs, b"s/")).await
    }

    async fn put_label_config(&self, c: &LabelConfig) -> StoreResult<()> {
        let (k, v) = (format!("l/{}", c.label).into_bytes(), enc(c)?);
        self.run(move |i| i.commit(vec![(&i.defs, k, v)])).await
    }

    async fn delete_label_config(&self, label: &str) -> StoreResult<bool> {
        let k = format!("l/{label}").into_bytes();
        self.run(move |i| i.delete(&i.defs, &k)).await
    }

    async fn list_label_configs(&self) -> StoreResult<Vec<LabelConfig>> {
        self.run(|i| i.scan_json(&i.defs, b"l/")).await
    }

    async fn bump_config_generation(&self) -> StoreResult<u64> {
        self.run(|i| {
            let _g = i.rmw.lock().map_err(|_| unavailable("lock poisoned"))?;
            let next = i.counter("config_generation")? + 1;
            i.commit(vec![(
                &i.meta,
                b"config_generation".to_vec(),
                next.to_be_bytes().to_vec(),
            )])?;
            Ok(next)
        })
        .await
    }

    async fn config_generation(&self) -> StoreResult<u64> {
        self.run(|i| i.counter("config_generation")).await
    }

    async fn put_config_blob(&self, hash: &str, bytes: &[u8]) -> StoreResult<()> {
        let (k, v) = (hash.as_bytes().to_vec(), bytes.to_vec());
        self.run(move |i| {
            if i.blobs.contains_key(&k).map_err(unavailable)? {
                return Ok(());
            }
            i.commit(vec![(&i.blobs, k, v)])
        })
        .await
    }

    async fn get_config_blob(&self, hash: &str) -> StoreResult<Option<Bytes>> {
        let k = hash.as_bytes().to_vec();
        self.run(move |i| {
            Ok(i.blobs
                .get(&k)
                .map_err(unavailable)?
                .map(|v| Bytes::copy_from_slice(&v)))
        })
        .await
    }

    async fn append_logs(&self, records: &LogRecords) -> StoreResult<()> {
        let items: Vec<(bool, Vec<u8>, Vec<u8>)> = match records {
            LogRecords::Results(rs) => rs
                .iter()
                .map(|r| Ok((true, result_key(r), enc(r)?)))
                .collect::<StoreResult<_>>()?,
            LogRecords::Status(ss) => ss
                .iter()
                .map(|s| Ok((false, status_key(s), enc(s)?)))
                .collect::<StoreResult<_>>()?,
        };
        if items.is_empty() {
            return Ok(());
        }
        self.run(move |i| {
            i.commit(
                items
                    .into_iter()
                    .map(|(res, k, v)| (if res { &i.results } else { &i.status }, k, v))
                    .collect(),
            )
        })
        .await
    }

    async fn query_results(&self, f: &ResultFilter) -> StoreResult<Vec<ResultLog>> {
        if f.host_id.is_none() && f.name.is_none() {
            return Err(StoreError::Invalid(
                "a result search needs a host, a query name, or both".into(),
            ));
        }
        let f = f.clone();
        let (since, until) = f.window();
        self.run(move |i| {
            let Some((lo, hi)) = first_day(&i.results) else {
                return Ok(Vec::new());
            };
            // Lines from skewed clocks sit in their receive day, so every
            // stored day is visited (retention bounds how many there are).
            let mut out: Vec<ResultLog> = Vec::new();
            for day in lo..=hi {
                let mut prefix = day.to_be_bytes().to_vec();
                if let Some(h) = &f.host_id {
                    prefix.extend_from_slice(h.as_str().as_bytes());
                    if let Some(n) = &f.name {
                        prefix.extend_from_slice(n.as_bytes());
                        prefix.push(0);
                    }
                }
                for g in i.results.prefix(&prefix) {
                    let (k, v) = g.into_inner().map_err(unavailable)?;
                    let r: ResultLog = dec(&k, &v)?;
                    if r.unix_time < since || r.unix_time >= until || !f.after_cursor(&r) {
                        continue;
                    }
                    if f.name.as_ref().is_some_and(|n| *n != r.name) {
                        continue;
                    }
                    out.push(r);
                }
            }
            f.sort(&mut out);
            out.truncate(f.limit);
            Ok(out)
        })
        .await
    }

    async fn query_status(
        &self,
        host: &HostId,
        since: i64,
        until: i64,
        limit: usize,
    ) -> StoreResult<Vec<StatusLog>> {
        let host = host.clone();
        self.run(move |i| {
            let Some((lo, hi)) = first_day(&i.status) else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for day in lo..=hi {
                let mut start = day.to_be_bytes().to_vec();
                start.extend_from_slice(host.as_str().as_bytes());
                let mut from = start.clone();
                from.extend_from_slice(&(since.max(0) as u64).to_be_bytes());
                let mut to = start;
                to.extend_from_slice(&(until.max(0) as u64).to_be_bytes());
                for g in i.status.range(from..to) {
                    let (k, v) = g.into_inner().map_err(unavailable)?;
                    out.push(dec::<StatusLog>(&k, &v)?);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn purge_logs_before_day(&self, day: u32) -> StoreResult<u64> {
        self.run(move |i| {
            let mut n = 0u64;
            for ks in [&i.results, &i.status] {
                let end = day.to_be_bytes();
                let keys: Vec<_> = ks
                    .range(..end.as_slice())
                    .map(|g| g.key().map_err(unavailable))
                    .collect::<StoreResult<_>>()?;
                for chunk in keys.chunks(10_000) {
                    let mut b = i.db.batch().durability(Some(PersistMode::SyncData));
                    for k in chunk {
                        b.remove(ks, k.clone());
                    }
                    b.commit().map_err(unavailable)?;
                    n += chunk.len() as u64;
                }
            }
            Ok(n)
        })
        .await
    }

    async fn create_campaign(&self, c: &Campaign, targets: &[HostId]) -> StoreResult<()> {
        let mut items = vec![(0u8, c.id.as_bytes().to_vec(), enc(c)?)];
        for h in targets {
            let d = Delivery::queued(&c.id, h, c.created_at);
            items.push((1, join(&[c.id.as_bytes(), h.as_str().as_bytes()]), enc(&d)?));
            items.push((
                2,
                join(&[h.as_str().as_bytes(), c.id.as_bytes()]),
                Vec::new(),
            ));
        }
        self.run(move |i| {
            let ks = |t: u8| match t {
                0 => &i.campaigns,
                1 => &i.deliveries,
                _ => &i.open,
            };
            // Large campaigns commit in chunks; the campaign record goes
            // last so a reader never sees a campaign without deliveries.
            let mut items = items;
            let head = items.remove(0);
            for chunk in items.chunks(20_000) {
                i.commit(
                    chunk
                        .iter()
                        .map(|(t, k, v)| (ks(*t), k.clone(), v.clone()))
                        .collect(),
                )?;
            }
            i.commit(vec![(ks(head.0), head.1, head.2)])
        })
        .await
    }

    async fn get_campaign(&self, id: &str) -> StoreResult<Option<Campaign>> {
        let k = id.as_bytes().to_vec();
        self.run(move |i| i.get_json(&i.campaigns, &k)).await
    }

    async fn list_campaigns(&self, limit: usize) -> StoreResult<Vec<Campaign>> {
        self.run(move |i| {
            let mut all: Vec<Campaign> = i.scan_json(&i.campaigns, b"")?;
            all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
            all.truncate(limit);
            Ok(all)
        })
        .await
    }

    async fn open_deliveries(&self, host: &HostId) -> StoreResult<Vec<(Campaign, Delivery)>> {
        let host = host.clone();
        self.run(move |i| {
            let mut prefix = host.as_str().as_bytes().to_vec();
            prefix.push(0);
            let mut out = Vec::new();
            for g in i.open.prefix(&prefix) {
                let k = g.key().map_err(unavailable)?;
                let cid = &k[prefix.len()..];
                let Some(c) = i.get_json::<Campaign>(&i.campaigns, cid)? else {
                    continue;
                };
                let Some(d) =
                    i.get_json::<Delivery>(&i.deliveries, &join(&[cid, host.as_str().as_bytes()]))?
                else {
                    continue;
                };
                if !d.state.is_final() {
                    out.push((c, d));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn put_delivery(&self, d: &Delivery, fence: Fence) -> StoreResult<()> {
        let k = join(&[d.campaign_id.as_bytes(), d.host_id.as_str().as_bytes()]);
        let idx = join(&[d.host_id.as_str().as_bytes(), d.campaign_id.as_bytes()]);
        let v = enc(d)?;
        let is_final = d.state.is_final();
        let host = d.host_id.clone();
        self.run(move |i| {
            let _g = i.host_lock(&host)?;
            let mut b = i.db.batch().durability(Some(PersistMode::SyncData));
            if let Some((fk, f)) = i.fenced(&host, fence)? {
                b.insert(&i.fences, fk, f);
            }
            b.insert(&i.deliveries, k, v);
            if is_final {
                b.remove(&i.open, idx);
            }
            b.commit().map_err(unavailable)
        })
        .await
    }

    async fn get_delivery(&self, campaign: &str, host: &HostId) -> StoreResult<Option<Delivery>> {
        let k = join(&[campaign.as_bytes(), host.as_str().as_bytes()]);
        self.run(move |i| i.get_json(&i.deliveries, &k)).await
    }

    async fn record_results(&self, results: &[CampaignResult], fence: Fence) -> StoreResult<()> {
        let results = results.to_vec();
        self.run(move |i| {
            // One actor's answers: one host, so one lock (the fence of
            // every host in the batch is checked all the same).
            let _g = match results.first() {
                Some(r) => Some(i.host_lock(&r.host_id)?),
                None => None,
            };
            let mut b = i.db.batch().durability(Some(PersistMode::SyncData));
            let mut hosts: Vec<&HostId> = results.iter().map(|r| &r.host_id).collect();
            hosts.dedup();
            if hosts.len() > 1 && !fence.is_none() {
                return Err(StoreError::Invalid(
                    "fenced results must belong to one host".into(),
                ));
            }
            for h in hosts {
                if let Some((fk, f)) = i.fenced(h, fence)? {
                    b.insert(&i.fences, fk, f);
                }
            }
            for r in &results {
                let k = join(&[r.campaign_id.as_bytes(), r.host_id.as_str().as_bytes()]);
                let d = i
                    .get_json::<Delivery>(&i.deliveries, &k)?
                    .unwrap_or_else(|| Delivery::queued(&r.campaign_id, &r.host_id, r.received_at))
                    .finished_by(r);
                b.insert(&i.deliveries, k.clone(), enc(&d)?);
                b.insert(&i.cresults, k, enc(r)?);
                b.remove(
                    &i.open,
                    join(&[r.host_id.as_str().as_bytes(), r.campaign_id.as_bytes()]),
                );
            }
            b.commit().map_err(unavailable)
        })
        .await
    }

    async fn list_deliveries(&self, campaign: &str) -> StoreResult<Vec<Delivery>> {
        let p = join(&[campaign.as_bytes(), b""]);
        self.run(move |i| i.scan_json(&i.deliveries, &p)).await
    }

    async fn list_results(&self, campaign: &str) -> StoreResult<Vec<CampaignResult>> {
        let p = join(&[campaign.as_bytes(), b""]);
        self.run(move |i| i.scan_json(&i.cresults, &p)).await
    }

    async fn create_carve(&self, s: &CarveSession) -> StoreResult<()> {
        let (k, v) = (s.session_id.as_bytes().to_vec(), enc(s)?);
        self.run(move |i| {
            if i.carves.contains_key(&k).map_err(unavailable)? {
                return Err(StoreError::Conflict("carve session exists".into()));
            }
            i.commit(vec![(&i.carves, k, v)])
        })
        .await
    }

    async fn get_carve(&self, session_id: &str) -> StoreResult<Option<CarveSession>> {
        let k = session_id.as_bytes().to_vec();
        self.run(move |i| i.get_json(&i.carves, &k)).await
    }

    async fn update_carve(&self, s: &CarveSession) -> StoreResult<()> {
        let (k, v) = (s.session_id.as_bytes().to_vec(), enc(s)?);
        self.run(move |i| {
            let _g = i.rmw.lock().map_err(|_| unavailable("lock poisoned"))?;
            i.commit(vec![(&i.carves, k, v)])
        })
        .await
    }

    async fn list_carves(&self, limit: usize) -> StoreResult<Vec<CarveSession>> {
        self.run(move |i| {
            let mut all: Vec<CarveSession> = i.scan_json(&i.carves, b"")?;
            all.sort_by(|a, b| {
                b.created_at
                    .cmp(&a.created_at)
                    .then(a.session_id.cmp(&b.session_id))
            });
            all.truncate(limit);
            Ok(all)
        })
        .await
    }

    async fn put_carve_block(
        &self,
        session_id: &str,
        block_id: u64,
        data: &[u8],
    ) -> StoreResult<BlockOutcome> {
        let sid = session_id.to_owned();
        let data = data.to_vec();
        self.run(move |i| {
            let _g = i.rmw.lock().map_err(|_| unavailable("lock poisoned"))?;
            let mut s: CarveSession = i
                .get_json(&i.carves, sid.as_bytes())?
                .ok_or_else(|| StoreError::NotFound(format!("carve session {sid}")))?;
            let k = join(&[sid.as_bytes(), &block_id.to_be_bytes()]);
            let new_block = !i.blocks.contains_key(&k).map_err(unavailable)?;
            let mut b = i.db.batch().durability(Some(PersistMode::SyncData));
            b.insert(&i.blocks, k, data);
            if new_block {
                s.blocks_received += 1;
                b.insert(&i.carves, sid.as_bytes().to_vec(), enc(&s)?);
            }
            b.commit().map_err(unavailable)?;
            Ok(BlockOutcome {
                blocks_received: s.blocks_received,
                new_block,
            })
        })
        .await
    }

    async fn get_carve_block(&self, session_id: &str, block_id: u64) -> StoreResult<Option<Bytes>> {
        let k = join(&[session_id.as_bytes(), &block_id.to_be_bytes()]);
        self.run(move |i| {
            Ok(i.blocks
                .get(&k)
                .map_err(unavailable)?
                .map(|v| Bytes::copy_from_slice(&v)))
        })
        .await
    }

    async fn put_enroll_secret(&self, s: &EnrollSecret) -> StoreResult<()> {
        let s = s.clone();
        self.run(move |i| {
            let _g = i.rmw.lock().map_err(|_| unavailable("lock poisoned"))?;
            if let Some(old) = i.get_json::<EnrollSecret>(&i.secrets, s.id.as_bytes())?
                && old.secret_sha256 != s.secret_sha256
            {
                return Err(StoreError::Conflict(format!(
                    "enroll secret {} exists with another value",
                    s.id
                )));
            }
            i.commit(vec![
                (&i.secrets, s.id.as_bytes().to_vec(), enc(&s)?),
                (
                    &i.secret_hash,
                    s.secret_sha256.as_bytes().to_vec(),
                    s.id.as_bytes().to_vec(),
                ),
            ])
        })
        .await
    }

    async fn enroll_secret_by_hash(&self, sha256: &str) -> StoreResult<Option<EnrollSecret>> {
        let k = sha256.as_bytes().to_vec();
        self.run(move |i| {
            let Some(id) = i.secret_hash.get(&k).map_err(unavailable)? else {
                return Ok(None);
            };
            i.get_json(&i.secrets, &id)
        })
        .await
    }

    async fn list_enroll_secrets(&self) -> StoreResult<Vec<EnrollSecret>> {
        self.run(|i| i.scan_json(&i.secrets, b"")).await
    }

    async fn put_user(&self, u: &User) -> StoreResult<()> {
        let (k, v) = (format!("u/{}", u.name).into_bytes(), enc(u)?);
        self.run(move |i| i.commit(vec![(&i.defs, k, v)])).await
    }

    async fn get_user(&self, name: &str) -> StoreResult<Option<User>> {
        let k = format!("u/{name}").into_bytes();
        self.run(move |i| i.get_json(&i.defs, &k)).await
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.run(|i| i.scan_json(&i.defs, b"u/")).await
    }

    async fn put_token(&self, t: &ApiToken) -> StoreResult<()> {
        let t = t.clone();
        self.run(move |i| {
            let _g = i.rmw.lock().map_err(|_| unavailable("lock poisoned"))?;
            let k = format!("t/{}", t.id).into_bytes();
            if let Some(old) = i.get_json::<ApiToken>(&i.defs, &k)?
                && old.secret_sha256 != t.secret_sha256
            {
                return Err(StoreError::Conflict(format!(
                    "token {} exists with another secret",
                    t.id
                )));
            }
            i.commit(vec![
                (&i.defs, k, enc(&t)?),
                (
                    &i.secret_hash,
                    format!("tok:{}", t.secret_sha256).into_bytes(),
                    t.id.as_bytes().to_vec(),
                ),
            ])
        })
        .await
    }

    async fn token_by_hash(&self, sha256: &str) -> StoreResult<Option<ApiToken>> {
        let k = format!("tok:{sha256}").into_bytes();
        self.run(move |i| {
            let Some(id) = i.secret_hash.get(&k).map_err(unavailable)? else {
                return Ok(None);
            };
            let mut key = b"t/".to_vec();
            key.extend_from_slice(&id);
            i.get_json(&i.defs, &key)
        })
        .await
    }

    async fn list_tokens(&self) -> StoreResult<Vec<ApiToken>> {
        self.run(|i| i.scan_json(&i.defs, b"t/")).await
    }

    async fn append_audit(&self, e: &AuditEvent) -> StoreResult<()> {
        let (k, v) = (audit_key(e.at, &e.id), enc(e)?);
        self.run(move |i| i.commit(vec![(&i.audit, k, v)])).await
    }

    async fn list_audit(
        &self,
        before: Option<(i64, &str)>,
        limit: usize,
    ) -> StoreResult<Vec<AuditEvent>> {
        let from = before.map(|(at, id)| audit_key(at, id));
        self.run(move |i| i.newest_first(&i.audit, from, limit))
            .await
    }

    async fn put_rule(&self, r: &Rule) -> StoreResult<()> {
        let (k, v) = (format!("r/{}", r.name).into_bytes(), enc(r)?);
        self.run(move |i| i.commit(vec![(&i.defs, k, v)])).await
    }

    async fn delete_rule(&self, name: &str) -> StoreResult<bool> {
        let k = format!("r/{name}").into_bytes();
        self.run(move |i| i.delete(&i.defs, &k)).await
    }

    async fn list_rules(&self) -> StoreResult<Vec<Rule>> {
        self.run(|i| i.scan_json(&i.defs, b"r/")).await
    }

    async fn put_alert(&self, a: &Alert) -> StoreResult<()> {
        let (k, v) = (audit_key(a.at, &a.id), enc(a)?);
        self.run(move |i| i.commit(vec![(&i.alerts, k, v)])).await
    }

    async fn get_alert(&self, at: i64, id: &str) -> StoreResult<Option<Alert>> {
        let k = audit_key(at, id);
        self.run(move |i| i.get_json(&i.alerts, &k)).await
    }

    async fn list_alerts(
        &self,
        before: Option<(i64, &str)>,
        limit: usize,
    ) -> StoreResult<Vec<Alert>> {
        let from = before.map(|(at, id)| audit_key(at, id));
        self.run(move |i| i.newest_first(&i.alerts, from, limit))
            .await
    }

    async fn put_dead_letter(&self, d: &DeadLetter) -> StoreResult<()> {
        let (k, v) = (d.id.clone().into_bytes(), enc(d)?);
        self.run(move |i| i.commit(vec![(&i.dead, k, v)])).await
    }

    async fn get_dead_letter(&self, id: &str) -> StoreResult<Option<DeadLetter>> {
        let k = id.as_bytes().to_vec();
        self.run(move |i| i.get_json(&i.dead, &k)).await
    }

    async fn list_dead_letters(&self) -> StoreResult<Vec<DeadLetter>> {
        self.run(|i| i.scan_json(&i.dead, b"")).await
    }

    async fn delete_dead_letter(&self, id: &str) -> StoreResult<bool> {
        let k = id.as_bytes().to_vec();
        self.run(move |i| i.delete(&i.dead, &k)).await
    }

    async fn get_meta(&self, key: &str) -> StoreResult<Option<Bytes>> {
        let k = key.as_bytes().to_vec();
        self.run(move |i| {
            Ok(i.meta
                .get(&k)
                .map_err(unavailable)?
                .map(|v| Bytes::copy_from_slice(&v)))
        })
        .await
    }

    async fn put_meta(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        let (k, v) = (key.as_bytes().to_vec(), value.to_vec());
        self.run(move |i| i.commit(vec![(&i.meta, k, v)])).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_store_passes_conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let report = crate::conformance::run_all(&store, crate::conformance::Semantics::FULL).await;
        assert!(report.not_run.is_empty(), "{report}");
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
