//! The guard that keeps the log keyspaces' writers from halting for good
//! (ADR 0038).
//!
//! fjall runs one compaction step after each flush, stalls writers at 20
//! L0 tables and halts them at 30. When its steps fall behind (a step
//! chose another level), L0 reaches 30, writers halt, nothing flushes and
//! no step is ever asked for again: every log write waits forever, fjall's
//! workers idle (seen under the sustained store bench with L0 merged at 12
//! tables). The guard, a thread of the log database, runs a compaction
//! step itself, with fjall's default strategy (the one the log keyspaces
//! are created with), whenever a log keyspace holds [`GUARD_L0_TABLES`] or
//! more L0 tables, so L0 drains whatever fjall's worker does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fjall::Keyspace;
use fjall::compaction::Leveled;

/// L0 tables at which the guard compacts (fjall stalls at 20).
pub(super) const GUARD_L0_TABLES: usize = 16;
/// How often the guard looks.
const GUARD_TICK: Duration = Duration::from_millis(250);

/// The guard's thread; dropping it stops the thread and waits for it (a
/// compaction step in progress ends first), so the keyspaces it holds are
/// released before their database closes.
pub(super) struct CompactionGuard {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CompactionGuard {
    /// Guards `keyspaces` (created with fjall's default strategy).
    pub(super) fn start(keyspaces: Vec<Keyspace>) -> std::io::Result<Self> {
        let strategy = Arc::new(Leveled::default());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("gatehouse:compaction-guard".into())
            .spawn(move || {
                while !stopped.load(Ordering::Acquire) {
                    for ks in &keyspaces {
                        step_if_behind(ks, &strategy);
                    }
                    std::thread::park_timeout(GUARD_TICK);
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

/// One compaction step of `ks` when its L0 holds [`GUARD_L0_TABLES`] or
/// more tables. The step keeps every version (a garbage-collection
/// watermark of 0): the guard does not know which snapshots are open, and
/// fjall's own steps drop what is obsolete later.
fn step_if_behind(ks: &Keyspace, strategy: &Arc<Leveled>) {
    use lsm_tree::AbstractTree;
    let tables = ks.tree.l0_run_count();
    if tables < GUARD_L0_TABLES {
        return;
    }
    tracing::info!(
        keyspace = %ks.name(),
        l0_tables = tables,
        "log compaction behind; the guard runs a step"
    );
    if let Err(e) = ks.tree.compact(strategy.clone(), 0) {
        tracing::warn!(keyspace = %ks.name(), error = %e, "guard compaction step failed");
    }
}

impl Drop for CompactionGuard {
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
    use fjall::{Database, KeyspaceCreateOptions};
    use lsm_tree::AbstractTree;

    /// A keyspace whose own steps never merge L0 (as when fjall's steps
    /// fall behind): the guard drains it below its mark.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_guard_drains_an_l0_that_fjall_leaves_behind() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path()).open().unwrap();
        let never = Arc::new(Leveled::default().with_l0_threshold(u8::MAX));
        let ks = db
            .keyspace("results", || {
                KeyspaceCreateOptions::default().compaction_strategy(never)
            })
            .unwrap();
        // Overlapping tables (the same keys each time), so none moves
        // down as is.
        for round in 0..GUARD_L0_TABLES + 3 {
            for k in 0..100u32 {
                ks.insert(k.to_be_bytes(), round.to_be_bytes()).unwrap();
            }
            ks.rotate_memtable_and_wait().unwrap();
        }
        let left = ks.tree.l0_run_count();
        assert!(
            left >= GUARD_L0_TABLES,
            "fjall left L0 as is: {left} tables"
        );
        let guard = CompactionGuard::start(vec![ks.clone()]).unwrap();
        gatehouse_testkit::until("L0 drained", Duration::from_secs(30), async || {
            ks.tree.l0_run_count() < GUARD_L0_TABLES
        })
        .await;
        drop(guard);
        // Nothing lost: every key holds the last round's value.
        for k in 0..100u32 {
            let v = ks.get(k.to_be_bytes()).unwrap().unwrap();
            assert_eq!(&*v, &(GUARD_L0_TABLES + 2).to_be_bytes());
        }
    }
}
