//! The forward log of one process ([`EmbeddedForwardLog`]): a fjall
//! database of its own (`DATA_DIR/forward`), so it works whatever the
//! store is. Entries are keyed by their sequence number (big-endian, so
//! key order is append order); each value is a small header (lines
//! before it, its lines, when it was appended) and the batch. Readers'
//! cursors sit in a second keyspace. Retention drops the oldest entries
//! past `max_bytes` or `max_age`, whether read or not.
//!
//! It is written only when some destination is configured: the log costs
//! one more synced write per log batch, nothing otherwise.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use gatehouse_core::ports::{ForwardBounds, ForwardCursor, ForwardEntry, ForwardError, ForwardLog};
use gatehouse_core::time::Clock;

/// How much the forward log keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Bytes of batches kept; the oldest go first past it.
    pub max_bytes: u64,
    /// Entries older than this are dropped.
    pub max_age: Duration,
    /// A batch appended again (same id) within this is not appended twice.
    pub duplicate_window: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 30,
            max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
        }
    }
}

const HEADER: usize = 8 + 4 + 8;

/// The forward log in a fjall database.
#[derive(Clone)]
pub struct EmbeddedForwardLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedForwardLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmbeddedForwardLog")
    }
}

struct Inner {
    dir: std::path::PathBuf,
    /// `None` after a failed write (fjall refuses every write after one):
    /// reopened at the next call once it can write again.
    db: std::sync::RwLock<Option<Arc<Db>>>,
    /// When a reopen was last tried (at most one a second).
    reopen_at: Mutex<Option<Instant>>,
    retention: Retention,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    appended: tokio::sync::watch::Sender<u64>,
}

/// The open database and its keyspaces.
struct Db {
    db: Database,
    entries: Keyspace,
    cursors: Keyspace,
    settings: Keyspace,
}

/// Opens (or creates) the database under `dir`.
fn open_db(dir: &Path) -> Result<Db, ForwardError> {
    // As the embedded store (`gatehouse_store::embedded::tune_fjall`): one
    // background worker (two spin on compaction requests in fjall 3.1),
    // no journal compression.
    let db = Database::builder(dir)
        .worker_threads(1)
        .journal_compression(fjall::CompressionType::None)
        .open()
        .map_err(|e| {
            ForwardError::Unavailable(format!("opening the forward log in {}: {e}", dir.display()))
        })?;
    // A smaller memtable than fjall's 64 MiB default: entries are written
    // once and read soon, so holding more of them in memory buys nothing.
    let entries = db
        .keyspace("entries", || {
            KeyspaceCreateOptions::default().max_memtable_size(16 * 1024 * 1024)
        })
        .map_err(unavailable)?;
    let cursors = db
        .keyspace("cursors", KeyspaceCreateOptions::default)
        .map_err(unavailable)?;
    let settings = db
        .keyspace("settings", KeyspaceCreateOptions::default)
        .map_err(unavailable)?;
    Ok(Db {
        db,
        entries,
        cursors,
        settings,
    })
}

impl Db {
    fn commit(&self, f: impl FnOnce(&mut fjall::OwnedWriteBatch)) -> Result<(), ForwardError> {
        let mut b = self.db.batch().durability(Some(PersistMode::SyncData));
        f(&mut b);
        b.commit().map_err(unavailable)
    }
}

/// What the log holds, kept in memory (rebuilt at open).
struct State {
    first: u64,
    first_line: u64,
    next: u64,
    next_line: u64,
    bytes: u64,
    /// The newest entry's time: entry times never go back (seek bisects
    /// them), even when the clock does.
    last_at: i64,
    /// Recent batch ids and the sequence number they got.
    recent: HashMap<String, (u64, Instant)>,
}

fn unavailable(e: impl std::fmt::Display) -> ForwardError {
    ForwardError::Unavailable(e.to_string())
}

fn header(v: &[u8]) -> Option<(u64, u32, i64)> {
    Some((
        u64::from_be_bytes(v.get(0..8)?.try_into().ok()?),
        u32::from_be_bytes(v.get(8..12)?.try_into().ok()?),
        i64::from_be_bytes(v.get(12..20)?.try_into().ok()?),
    ))
}

fn seq_of(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.get(0..8)?.try_into().ok()?))
}

impl EmbeddedForwardLog {
    /// Opens (or creates) the log under `dir`.
    pub fn open(
        dir: &Path,
        retention: Retention,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ForwardError> {
        let db = open_db(dir)?;
        let (entries, cursors) = (&db.entries, &db.cursors);
        // Rebuild the figures from what is there (one pass at start).
        let mut state = State {
            first: 1,
            first_line: 0,
            next: 1,
            next_line: 0,
            bytes: 0,
            last_at: 0,
            recent: HashMap::new(),
        };
        let mut seen_first = false;
        for g in entries.iter() {
            let (k, v) = g.into_inner().map_err(unavailable)?;
            let (Some(seq), Some((first_line, lines, at))) = (seq_of(&k), header(&v)) else {
                continue;
            };
            state.last_at = state.last_at.max(at);
            if !seen_first {
                state.first = seq;
                state.first_line = first_line;
                seen_first = true;
            }
            state.next = seq + 1;
            state.next_line = first_line + u64::from(lines);
            state.bytes += v.len() as u64;
        }
        if !seen_first {
            // Empty: continue after the last cursor anyone saved, so a
            // log emptied by retention does not restart at 1 under them.
            for g in cursors.iter() {
                let (_, v) = g.into_inner().map_err(unavailable)?;
                if let Some((seq, line)) = decode_cursor(&v)
                    && seq > state.next
                {
                    state.next = seq;
                    state.next_line = line;
                }
            }
            state.first = state.next;
            state.first_line = state.next_line;
        }
        let next = state.next;
        Ok(Self {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                db: std::sync::RwLock::new(Some(Arc::new(db))),
                reopen_at: Mutex::new(None),
                retention,
                clock,
                state: Mutex::new(state),
                appended: tokio::sync::watch::Sender::new(next),
            }),
        })
    }

    fn state(&self) -> Result<std::sync::MutexGuard<'_, State>, ForwardError> {
        self.inner
            .state
            .lock()
            .map_err(|_| unavailable("forward log state poisoned"))
    }

    /// The open database; after a failed write, a reopened one once it
    /// can write again (the journal replayed: nothing acknowledged lost).
    fn db(&self) -> Result<Arc<Db>, ForwardError> {
        if let Some(d) = self.inner.db.read().ok().and_then(|d| d.clone()) {
            return Ok(d);
        }
        let dir = self.inner.dir.display().to_string();
        let refused = || {
            ForwardError::Unavailable(format!(
                "the forward log in {dir} failed a write and is being reopened; retry"
            ))
        };
        let mut at = self.inner.reopen_at.lock().map_err(|_| refused())?;
        if at.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return Err(refused());
        }
        *at = Some(Instant::now());
        // Not on a disk still (nearly) full: a reopened journal takes a
        // probe write, then fails the next append again.
        if gatehouse_core::disk::free_bytes(&self.inner.dir)
            .is_ok_and(|f| f < gatehouse_core::disk::REOPEN_HEADROOM)
        {
            return Err(refused());
        }
        let d = open_db(&self.inner.dir)?;
        d.commit(|b| b.insert(&d.cursors, b"\0writable".to_vec(), b"1".to_vec()))?;
        let d = Arc::new(d);
        if let Ok(mut cur) = self.inner.db.write() {
            *cur = Some(d.clone());
        }
        tracing::info!(dir = %dir, "the forward log is writable again: reopened");
        Ok(d)
    }

    /// A write on `d` failed: it is taken out of service (and reopened at
    /// a later call).
    fn broke(&self, d: &Arc<Db>, e: &ForwardError) {
        if let Ok(mut cur) = self.inner.db.write()
            && cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, d))
        {
            *cur = None;
            tracing::error!(dir = %self.inner.dir.display(), error = %e, "the forward log cannot write; reopening it once it can");
        }
    }

    /// Commits on the open database; a failure takes it out of service.
    fn commit(&self, f: impl FnOnce(&Db, &mut fjall::OwnedWriteBatch)) -> Result<(), ForwardError> {
        let d = self.db()?;
        let r = d.commit(|b| f(&d, b));
        if let Err(e) = &r {
            self.broke(&d, e);
        }
        r
    }

    /// Drops entries past the retention limits; runs under the state lock.
    fn trim(&self, state: &mut State) -> Result<(), ForwardError> {
        let now = self.inner.clock.now_ms();
        let max_age = i64::try_from(self.inner.retention.max_age.as_millis()).unwrap_or(i64::MAX);
        let mut drop = Vec::new();
        let mut bytes = state.bytes;
        let (mut first, mut first_line) = (state.first, state.first_line);
        let d = self.db()?;
        for g in d.entries.iter() {
            let (k, v) = g.into_inner().map_err(unavailable)?;
            let Some((seq, (line, lines, at))) = seq_of(&k).zip(header(&v)) else {
                continue;
            };
            let old = now.saturating_sub(at) > max_age;
            if !old && bytes <= self.inner.retention.max_bytes {
                break;
            }
            bytes = bytes.saturating_sub(v.len() as u64);
            drop.push(k);
            first = seq + 1;
            first_line = line + u64::from(lines);
        }
        if drop.is_empty() {
            return Ok(());
        }
        self.commit(|d, b| {
            for k in &drop {
                b.remove(&d.entries, k.clone());
            }
        })?;
        tracing::debug!(
            entries = drop.len(),
            first,
            "forward log trimmed by retention"
        );
        state.bytes = bytes;
        state.first = first;
        state.first_line = first_line;
        Ok(())
    }

    /// Runs blocking fjall work off the async threads.
    async fn blocking<T, F>(&self, f: F) -> Result<T, ForwardError>
    where
        T: Send + 'static,
        F: FnOnce(&Self) -> Result<T, ForwardError> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| unavailable(format!("forward log task failed: {e}")))?
    }
}

fn encode_cursor(c: ForwardCursor) -> Vec<u8> {
    let mut v = c.seq.to_be_bytes().to_vec();
    v.extend_from_slice(&c.line.to_be_bytes());
    v
}

fn decode_cursor(v: &[u8]) -> Option<(u64, u64)> {
    Some((
        u64::from_be_bytes(v.get(0..8)?.try_into().ok()?),
        u64::from_be_bytes(v.get(8..16)?.try_into().ok()?),
    ))
}

#[async_trait]
impl ForwardLog for EmbeddedForwardLog {
    async fn append(&self, id: &str, lines: u32, payload: Bytes) -> Result<u64, ForwardError> {
        let id = id.to_owned();
        let seq = self
            .blocking(move |this| {
                let mut state = this.state()?;
                let window = this.inner.retention.duplicate_window;
                if let Some((seq, at)) = state.recent.get(&id)
                    && at.elapsed() < window
                {
                    return Ok(*seq);
                }
                let (seq, line) = (state.next, state.next_line);
                let at = this.inner.clock.now_ms().max(state.last_at);
                let mut v = Vec::with_capacity(HEADER + payload.len());
                v.extend_from_slice(&line.to_be_bytes());
                v.extend_from_slice(&lines.to_be_bytes());
                v.extend_from_slice(&at.to_be_bytes());
                v.extend_from_slice(&payload);
                let len = v.len() as u64;
                this.commit(|d, b| b.insert(&d.entries, seq.to_be_bytes(), v))?;
                state.next = seq + 1;
                state.next_line = line + u64::from(lines);
                state.bytes += len;
                state.last_at = at;
                if state.recent.len() >= 4096 {
                    state.recent.retain(|_, (_, at)| at.elapsed() < window);
                }
                state.recent.insert(id, (seq, Instant::now()));
                this.trim(&mut state)?;
                Ok(seq)
            })
            .await?;
        self.inner.appended.send_replace(seq + 1);
        Ok(seq)
    }

    async fn read(&self, from: u64, max: usize) -> Result<Vec<ForwardEntry>, ForwardError> {
        self.blocking(move |this| {
            let mut out = Vec::new();
            let d = this.db()?;
            for g in d.entries.range(from.to_be_bytes()..) {
                if out.len() >= max {
                    break;
                }
                let (k, v) = g.into_inner().map_err(unavailable)?;
                let (Some(seq), Some((first_line, lines, at_ms))) = (seq_of(&k), header(&v)) else {
                    continue;
                };
                out.push(ForwardEntry {
                    seq,
                    first_line,
                    lines,
                    at_ms,
                    payload: Bytes::copy_from_slice(&v[HEADER..]),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn bounds(&self) -> Result<ForwardBounds, ForwardError> {
        self.blocking(|this| {
            let mut state = this.state()?;
            this.trim(&mut state)?;
            let first_at_ms = if state.first < state.next {
                this.db()?
                    .entries
                    .get(state.first.to_be_bytes())
                    .map_err(unavailable)?
                    .and_then(|v| header(&v))
                    .map(|(_, _, at)| at)
            } else {
                None
            };
            Ok(ForwardBounds {
                first: state.first,
                first_line: state.first_line,
                next: state.next,
                next_line: state.next_line,
                first_at_ms,
            })
        })
        .await
    }

    async fn wait_for(&self, seq: u64, within: Duration) {
        let mut rx = self.inner.appended.subscribe();
        let _ = tokio::time::timeout(within, rx.wait_for(|next| *next > seq)).await;
    }

    async fn seek(&self, at_ms: i64) -> Result<ForwardCursor, ForwardError> {
        self.blocking(move |this| {
            let (mut lo, mut hi, next_line) = {
                let mut state = this.state()?;
                this.trim(&mut state)?;
                (state.first, state.next, state.next_line)
            };
            // Entries are in append order, so in time order: the first
            // with `at >= at_ms` by bisection.
            let d = this.db()?;
            let header_of = |seq: u64| -> Result<Option<(u64, u32, i64)>, ForwardError> {
                Ok(d.entries
                    .get(seq.to_be_bytes())
                    .map_err(unavailable)?
                    .and_then(|v| header(&v)))
            };
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                match header_of(mid)? {
                    Some((_, _, at)) if at < at_ms => lo = mid + 1,
                    // At or after, or trimmed meanwhile: look left.
                    _ => hi = mid,
                }
            }
            let line = match header_of(lo)? {
                Some((line, _, _)) => line,
                None => next_line,
            };
            Ok(ForwardCursor { seq: lo, line })
        })
        .await
    }

    async fn cursor(&self, reader: &str) -> Result<Option<ForwardCursor>, ForwardError> {
        let key = reader.as_bytes().to_vec();
        self.blocking(move |this| {
            Ok(this
                .db()?
                .cursors
                .get(&key)
                .map_err(unavailable)?
                .and_then(|v| decode_cursor(&v))
                .map(|(seq, line)| ForwardCursor { seq, line }))
        })
        .await
    }

    /// Failing while its filesystem is full or it is being reopened
    /// after a failed write.
    async fn health(&self) -> Result<(), ForwardError> {
        let dir = &self.inner.dir;
        if let Ok(free) = gatehouse_core::disk::free_bytes(dir)
            && free < gatehouse_core::disk::REOPEN_HEADROOM
        {
            return Err(ForwardError::Unavailable(format!(
                "disk full at {}: {free} bytes free",
                dir.display()
            )));
        }
        self.blocking(|this| this.db().map(|_| ())).await
    }

    async fn set_cursor(&self, reader: &str, cursor: ForwardCursor) -> Result<(), ForwardError> {
        let key = reader.as_bytes().to_vec();
        self.blocking(move |this| {
            this.commit(|d, b| b.insert(&d.cursors, key, encode_cursor(cursor)))
        })
        .await
    }

    async fn setting(&self, key: &str) -> Result<Option<Bytes>, ForwardError> {
        let key = key.as_bytes().to_vec();
        self.blocking(move |this| {
            Ok(this
                .db()?
                .settings
                .get(&key)
                .map_err(unavailable)?
                .map(|v| Bytes::copy_from_slice(&v)))
        })
        .await
    }

    async fn settings(&self, prefix: &str) -> Result<Vec<(String, Bytes)>, ForwardError> {
        let prefix = prefix.as_bytes().to_vec();
        self.blocking(move |this| {
            let db = this.db()?;
            let mut out = Vec::new();
            for kv in db.settings.prefix(&prefix) {
                let (k, v) = kv.into_inner().map_err(unavailable)?;
                out.push((
                    String::from_utf8_lossy(&k).into_owned(),
                    Bytes::copy_from_slice(&v),
                ));
            }
            Ok(out)
        })
        .await
    }

    async fn put_setting(&self, key: &str, value: Option<Bytes>) -> Result<(), ForwardError> {
        let key = key.as_bytes().to_vec();
        self.blocking(move |this| {
            this.commit(|d, b| match value {
                Some(v) => b.insert(&d.settings, key, v.to_vec()),
                None => b.remove(&d.settings, key),
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::time::ShiftedClock;

    fn open(dir: &Path, retention: Retention, clock: Arc<ShiftedClock>) -> EmbeddedForwardLog {
        EmbeddedForwardLog::open(dir, retention, clock).expect("open")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ShiftedClock::new());
        let log = open(dir.path(), Retention::default(), clock.clone());
        crate::conformance::order_dedup_and_cursors(&log).await;
        crate::conformance::seek_by_time(&log, &clock).await;
        crate::conformance::settings_are_kept(&log).await;
        crate::conformance::waiting_readers_wake(Arc::new(log)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_drops_the_oldest_and_counts_their_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ShiftedClock::new());
        let retention = Retention {
            max_bytes: 10 * (HEADER as u64 + 100),
            max_age: Duration::from_secs(60),
            ..Retention::default()
        };
        let log = open(dir.path(), retention, clock.clone());
        for n in 0..15u32 {
            log.append(&format!("b{n}"), 2, Bytes::from(vec![b'x'; 100]))
                .await
                .expect("append");
        }
        let b = log.bounds().await.expect("bounds");
        assert_eq!((b.first, b.next), (6, 16), "ten newest kept by size");
        assert_eq!(b.first_line, 10, "the lines before the oldest kept");
        assert_eq!(b.next_line, 30);
        clock.advance(Duration::from_secs(61));
        let b = log.bounds().await.expect("bounds");
        assert_eq!(b.first, b.next, "all past the age limit");
        assert_eq!(b.first_line, 30);
        assert!(log.read(1, 100).await.expect("read").is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_and_cursors_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ShiftedClock::new());
        {
            let log = open(dir.path(), Retention::default(), clock.clone());
            for n in 0..3u32 {
                log.append(&format!("b{n}"), 4, Bytes::from_static(b"x"))
                    .await
                    .expect("append");
            }
            log.set_cursor("file", ForwardCursor { seq: 2, line: 4 })
                .await
                .expect("cursor");
        }
        let log = open(dir.path(), Retention::default(), clock);
        let b = log.bounds().await.expect("bounds");
        assert_eq!((b.first, b.next, b.next_line), (1, 4, 12));
        assert_eq!(
            log.cursor("file").await.expect("cursor"),
            Some(ForwardCursor { seq: 2, line: 4 })
        );
        assert_eq!(log.append("b3", 1, Bytes::new()).await.expect("append"), 4);
    }

    /// A disk filled to the last byte makes appends fail; once space is
    /// freed the same handle appends again (reopened, journal replayed),
    /// with every entry appended before still there. Root only (a tmpfs);
    /// NOT RUN otherwise.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_disk_is_recovered_from_without_a_restart() {
        let Some(mnt) =
            gatehouse_testkit::tmpfs::Tmpfs::mount(24, "the forward log's full-disk test")
        else {
            return;
        };
        let log = open(
            &mnt.path().join("forward"),
            Retention::default(),
            Arc::new(ShiftedClock::new()),
        );
        let payload = Bytes::from(vec![b'x'; 4096]);
        let mut kept = Vec::new();
        for n in 0..3u32 {
            kept.push(
                log.append(&format!("b{n}"), 1, payload.clone())
                    .await
                    .unwrap(),
            );
        }
        let ballast = mnt.fill_up().unwrap();
        let mut failed = None;
        for n in 3..2000u32 {
            match log.append(&format!("b{n}"), 1, payload.clone()).await {
                Ok(seq) => kept.push(seq),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        assert!(failed.is_some(), "an append failed on the full disk");
        let health = log.health().await.unwrap_err().to_string();
        assert!(health.contains("disk full at"), "{health}");
        let again = log.append("after", 1, payload.clone()).await;
        assert!(
            again
                .as_ref()
                .is_err_and(|e| e.to_string().contains("reopened")),
            "{again:?}"
        );
        std::fs::remove_file(&ballast).unwrap();
        gatehouse_testkit::until(
            "the forward log appends again",
            Duration::from_secs(30),
            async || log.append("after", 1, payload.clone()).await.is_ok(),
        )
        .await;
        log.health().await.unwrap();
        let read = log.read(1, 100_000).await.unwrap();
        let seqs: Vec<u64> = read.iter().map(|e| e.seq).collect();
        for k in &kept {
            assert!(seqs.contains(k), "acknowledged entry {k} kept");
        }
        assert_eq!(seqs.len(), kept.len() + 1, "and the one after");
    }
}
