//! The log database's compactor: a thread of its own that compacts the
//! log keyspaces, so fjall's one worker only rotates and flushes them
//! (ADR 0048, which supersedes ADR 0038's guard).
//!
//! fjall 3.1 runs flushes and compaction steps on the same worker, in
//! turn. Under a wave of log lines a step of several seconds held the
//! next flush, four sealed memtables queued up, and fjall halted every log
//! write until the flush (441 halts in nine minutes at 60,000 hosts,
//! `docs/benchmarks/performance.md`). Log keyspaces created from ADR 0048
//! on carry a compaction strategy of fjall's that never merges
//! ([`flush_only`]); this thread runs fjall's leveled strategy, tuned for
//! logs ([`merging`]), on them, step after step while there is work, so
//! flushes never wait for a merge. Keyspaces created before keep the strategy they were created
//! with (fjall stores it): on them fjall's worker still compacts too, and
//! the two share the work (fjall hides the tables a step holds).
//!
//! A step may drop versions that no reader can see any more: those older
//! than the oldest read in progress ([`Readers`]), which every read of the
//! log keyspaces registers before it takes its snapshot.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fjall::compaction::Leveled;
use fjall::{Database, Keyspace};
use lsm_tree::AbstractTree;

/// How long the compactor sleeps when no keyspace has work.
const IDLE_TICK: Duration = Duration::from_millis(100);
/// How long it sleeps after a failed step (a full disk fails every one).
const FAILED_TICK: Duration = Duration::from_secs(1);
/// A failed step is logged at most this often, with how many were left
/// out since.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);
/// A step longer than this is logged (at debug).
const LONG_STEP: Duration = Duration::from_secs(1);
/// L0 runs the compactor merges at once ([`merging`]).
const MERGE_AT_L0: u8 = 12;

/// The strategy new log keyspaces are created with, for fjall's own
/// worker: leveled, but with an L0 threshold and level sizes it never
/// reaches, so the worker only moves tables down where no rewrite is
/// needed and never merges. The compactor merges.
pub(super) fn flush_only() -> Arc<Leveled> {
    Arc::new(
        Leveled::default()
            .with_l0_threshold(u8::MAX)
            .with_level_ratio_policy(vec![1_000.0]),
    )
}

/// The strategy the compactor runs: fjall's leveled one, tuned for logs.
/// A line's key starts with its minute, so every L0 run overlaps the
/// same one or two minutes of L1; merging twelve runs at a time instead
/// of four rewrites those tables a third as often, and 16 MiB tables in
/// levels four times apart keep each rewrite small. Twelve stays clear
/// of the twenty runs at which fjall starts to hold writers back. The
/// sustained store benchmark wrote 1,173 bytes per line with it against
/// 1,940 with fjall's defaults (ADR 0048).
fn merging() -> Arc<Leveled> {
    Arc::new(
        Leveled::default()
            .with_l0_threshold(MERGE_AT_L0)
            .with_level_ratio_policy(vec![4.0])
            .with_table_target_size(16 << 20),
    )
}

/// The reads of the log keyspaces in progress, by the sequence number
/// they started at: the oldest bounds what a compaction step may drop.
#[derive(Default)]
pub(super) struct Readers {
    open: Mutex<BTreeMap<u64, usize>>,
}

/// One read in progress; dropping it ends the read.
pub(super) struct Reading<'a> {
    readers: &'a Readers,
    at: u64,
}

impl Readers {
    /// Registers a read of `db` about to begin: every snapshot it takes
    /// from now on sees at least what is visible now.
    pub(super) fn enter<'a>(&'a self, db: &Database) -> Reading<'a> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        // Under the lock, so a watermark computed before cannot exceed it.
        let at = db.visible_seqno();
        *open.entry(at).or_default() += 1;
        Reading { readers: self, at }
    }

    /// The sequence number below which a step may drop shadowed versions
    /// and tombstones: the oldest read in progress, or (none) what is
    /// visible now, less one.
    fn watermark(&self, db: &Database) -> u64 {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        match open.keys().next() {
            Some(&oldest) => oldest,
            None => db.visible_seqno().saturating_sub(1),
        }
    }
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        let mut open = self.readers.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.at) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.at);
            }
        }
    }
}

/// The compactor's thread; dropping it stops the thread and waits for it
/// (a step in progress ends first), so the keyspaces it holds are
/// released before their database closes.
pub(super) struct Compactor {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Compactor {
    /// Compacts `keyspaces` of `db` until dropped.
    pub(super) fn start(
        db: Database,
        keyspaces: Vec<Keyspace>,
        readers: Arc<Readers>,
    ) -> std::io::Result<Self> {
        let strategy = merging();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("gatehouse:log-compactor".into())
            .spawn(move || {
                let mut failures = Failures::default();
                while !stopped.load(Ordering::Acquire) {
                    let (mut worked, mut failed) = (false, false);
                    for ks in &keyspaces {
                        match step(&db, ks, &strategy, &readers) {
                            Ok(changed) => worked |= changed,
                            Err(e) => {
                                failed = true;
                                failures.note(ks, &e);
                            }
                        }
                    }
                    if failed {
                        std::thread::park_timeout(FAILED_TICK);
                    } else if !worked {
                        std::thread::park_timeout(IDLE_TICK);
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

/// One compaction step of `ks`, if the strategy finds one; whether the
/// tree changed meanwhile (a step ran, or a flush landed: look again).
fn step(
    db: &Database,
    ks: &Keyspace,
    strategy: &Arc<Leveled>,
    readers: &Readers,
) -> lsm_tree::Result<bool> {
    let before = ks.tree.current_version().id();
    let began = Instant::now();
    ks.tree.compact(strategy.clone(), readers.watermark(db))?;
    let took = began.elapsed();
    if took >= LONG_STEP {
        tracing::debug!(keyspace = %ks.name(), ?took, "long log compaction step");
    }
    Ok(ks.tree.current_version().id() != before)
}

/// Failed steps, logged the first time and then at most once per
/// [`FAILURE_LOG_EVERY`].
#[derive(Default)]
struct Failures {
    logged_at: Option<Instant>,
    left_out: u64,
}

impl Failures {
    fn note(&mut self, ks: &Keyspace, e: &lsm_tree::Error) {
        if self
            .logged_at
            .is_some_and(|at| at.elapsed() < FAILURE_LOG_EVERY)
        {
            self.left_out += 1;
            return;
        }
        tracing::warn!(
            keyspace = %ks.name(),
            error = %e,
            left_out_since_last = self.left_out,
            "log compaction step failed; retrying"
        );
        self.logged_at = Some(Instant::now());
        self.left_out = 0;
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjall::KeyspaceCreateOptions;

    fn keyspace(db: &Database) -> Keyspace {
        db.keyspace("results", || {
            KeyspaceCreateOptions::default().compaction_strategy(flush_only())
        })
        .unwrap()
    }

    /// Writes `rounds` overlapping tables (the same keys each time, so
    /// none moves down as is), each round's value its number.
    fn overlapping_tables(ks: &Keyspace, rounds: u32) {
        for round in 0..rounds {
            for k in 0..100u32 {
                ks.insert(k.to_be_bytes(), round.to_be_bytes()).unwrap();
            }
            ks.rotate_memtable_and_wait().unwrap();
        }
    }

    /// fjall's worker leaves a log keyspace's L0 as it is; the compactor
    /// merges it, and every key keeps its last value.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_compactor_merges_what_fjalls_worker_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path()).open().unwrap();
        let ks = keyspace(&db);
        // One more than the compactor merges at: fjall's worker may move
        // the first table down before the next one lands.
        let rounds = u32::from(MERGE_AT_L0) + 1;
        overlapping_tables(&ks, rounds);
        // fjall's worker may move a table down, never merges one.
        assert_eq!(
            ks.tree.table_count(),
            rounds as usize,
            "fjall's worker merged"
        );
        let readers = Arc::new(Readers::default());
        let compactor = Compactor::start(db.clone(), vec![ks.clone()], readers).unwrap();
        gatehouse_testkit::until("L0 merged", Duration::from_secs(30), async || {
            ks.tree.l0_run_count() == 0
        })
        .await;
        drop(compactor);
        for k in 0..100u32 {
            let v = ks.get(k.to_be_bytes()).unwrap().unwrap();
            assert_eq!(&*v, &(rounds - 1).to_be_bytes());
        }
    }

    /// Shadowed versions are dropped only below the oldest read in
    /// progress: with a read open since before the rewrites, the merged
    /// tables keep every version; once it ends, the next merge drops them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_in_progress_keeps_the_versions_it_may_see() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path()).open().unwrap();
        let ks = keyspace(&db);
        let readers = Arc::new(Readers::default());
        let reading = readers.enter(&db);
        // One more than the compactor merges at: fjall's worker may move
        // the first table down before the next one lands.
        let rounds = u32::from(MERGE_AT_L0) + 1;
        overlapping_tables(&ks, rounds);
        // Versions stored in tables (every one, shadowed or not).
        let stored = || ks.tree.approximate_len();
        let all = 100 * rounds as usize;
        assert_eq!(stored(), all);
        let compactor = Compactor::start(db.clone(), vec![ks.clone()], readers.clone()).unwrap();
        gatehouse_testkit::until("L0 merged", Duration::from_secs(30), async || {
            ks.tree.l0_run_count() == 0
        })
        .await;
        assert_eq!(stored(), all, "a version the read may see was dropped");
        drop(reading);
        // A new round to merge; the watermark now passes the rewrites
        // (all but the newest version of each key; the last key written
        // keeps one more, at the watermark).
        overlapping_tables(&ks, rounds);
        gatehouse_testkit::until(
            "shadowed versions dropped",
            Duration::from_secs(30),
            async || ks.tree.l0_run_count() == 0 && stored() <= 101,
        )
        .await;
        drop(compactor);
        for k in 0..100u32 {
            let v = ks.get(k.to_be_bytes()).unwrap().unwrap();
            assert_eq!(&*v, &(rounds - 1).to_be_bytes());
        }
    }
}
