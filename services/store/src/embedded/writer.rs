//! The log database's writer (ADR 0042): every log batch is committed by
//! one thread, which takes the batches waiting for it as one write, and
//! made durable by a second, which syncs the journal for every group
//! committed so far.
//!
//! Before, each batch took a blocking thread of its own: it woke that
//! thread, appended to the journal under its lock, went to sleep on the
//! group commit's condition variable, and was woken again to wake the
//! request's task, three or four thread wake-ups a batch. Here a batch is
//! a message on a channel: the writer takes every batch waiting (up to
//! [`GROUP_BYTES`]), checks the free space once, commits them in one
//! fjall batch and hands the group to the syncer; while the syncer waits
//! for the disk, the writer commits the next group, and the next sync
//! covers every group committed meanwhile. Under load the groups grow by
//! themselves; an idle store writes a lone batch at once.

use std::sync::mpsc;

use fjall::{Database, Keyspace, PersistMode};
use gatehouse_core::ports::StoreResult;
use tokio::sync::oneshot;

use super::{DiskWatch, Inner, unavailable};

/// A group stops taking batches at this many bytes of keys and values
/// (one journal write; a caller's batch is never split).
const GROUP_BYTES: usize = 8 * 1024 * 1024;

/// One caller's log batch: the lines' keys and values by keyspace, and the
/// slot index entries they list.
pub(super) struct LogBatch {
    /// (a result line?, key, value)
    pub(super) lines: Vec<(bool, Vec<u8>, Vec<u8>)>,
    pub(super) slots: Vec<Vec<u8>>,
}

impl LogBatch {
    fn bytes(&self) -> usize {
        let lines: usize = self.lines.iter().map(|(_, k, v)| k.len() + v.len()).sum();
        lines + self.slots.iter().map(Vec::len).sum::<usize>()
    }
}

struct Job {
    batch: LogBatch,
    done: oneshot::Sender<StoreResult<()>>,
}

/// What the writer and the syncer write to.
pub(super) struct Target {
    pub(super) db: Database,
    pub(super) results: Keyspace,
    pub(super) status: Keyspace,
    pub(super) slots: Keyspace,
    pub(super) probe: Keyspace,
    pub(super) disk: DiskWatch,
    /// Journal syncs and the batches they made durable.
    pub(super) counts: std::sync::Arc<super::SyncCounts>,
}

/// The writer's two threads; dropping it lets them finish the batches
/// already sent and waits for them, so the database they hold closes
/// after.
pub(super) struct LogWriter {
    tx: Option<mpsc::Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl LogWriter {
    pub(super) fn start(target: Target) -> std::io::Result<Self> {
        let target = std::sync::Arc::new(target);
        let (tx, rx) = mpsc::channel::<Job>();
        let (committed, to_sync) = mpsc::channel::<Vec<Job>>();
        let t = target.clone();
        let writer = std::thread::Builder::new()
            .name("gatehouse:log-writer".into())
            .spawn(move || {
                commit_groups(&t, &rx, &committed);
            })?;
        let syncer = std::thread::Builder::new()
            .name("gatehouse:log-sync".into())
            .spawn(move || sync_groups(&target, &to_sync))?;
        Ok(Self {
            tx: Some(tx),
            threads: vec![writer, syncer],
        })
    }

    /// Writes `batch` and returns once it is durable (or why it is not).
    pub(super) async fn write(&self, batch: LogBatch) -> StoreResult<()> {
        let (done, answer) = oneshot::channel();
        self.tx
            .as_ref()
            .ok_or_else(|| unavailable("the store is closing"))?
            .send(Job { batch, done })
            .map_err(|_| unavailable("the log writer has stopped"))?;
        answer
            .await
            .map_err(|_| unavailable("the log writer has stopped"))?
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        // The writer ends once its channel is empty and closed, and with
        // it the syncer's channel.
        self.tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Answers every caller of `jobs` with `r`. A caller that went away (its
/// agent's request timed out) finds its lines stored when it sends them
/// again.
fn answer(jobs: Vec<Job>, r: &StoreResult<()>) {
    for job in jobs {
        let _ = job.done.send(r.clone());
    }
}

/// The writer thread: commits a group of waiting batches at a time and
/// hands it to the syncer, until every sender is gone; returns how many
/// groups it committed.
fn commit_groups(
    target: &Target,
    rx: &mpsc::Receiver<Job>,
    committed: &mpsc::Sender<Vec<Job>>,
) -> usize {
    let mut groups = 0;
    while let Ok(first) = rx.recv() {
        let mut bytes = first.batch.bytes();
        let mut group = vec![first];
        while bytes < GROUP_BYTES {
            match rx.try_recv() {
                Ok(job) => {
                    bytes += job.batch.bytes();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        match commit_group(target, &mut group) {
            Ok(()) => {
                groups += 1;
                if let Err(mpsc::SendError(group)) = committed.send(group) {
                    answer(group, &Err(unavailable("the log writer has stopped")));
                }
            }
            Err(e) => answer(group, &Err(e)),
        }
    }
    groups
}

/// The syncer thread: syncs the journal for every group committed so far
/// and answers their callers, until the writer is gone. A sync covers
/// every group handed over before it began, so groups committed while the
/// disk syncs wait for the next one together.
fn sync_groups(target: &Target, to_sync: &mpsc::Receiver<Vec<Job>>) {
    while let Ok(mut jobs) = to_sync.recv() {
        while let Ok(more) = to_sync.try_recv() {
            jobs.extend(more);
        }
        let r = target
            .db
            .persist(PersistMode::SyncData)
            .map_err(unavailable);
        if r.is_ok() {
            target.counts.add(jobs.len() as u64);
        }
        answer(jobs, &r);
    }
}

/// Commits every batch of `group` as one fjall batch (one journal write,
/// not yet synced).
fn commit_group(target: &Target, group: &mut [Job]) -> StoreResult<()> {
    target.disk.room_for_logs()?;
    let mut b = target.db.batch();
    for job in group.iter_mut() {
        for (res, k, v) in job.batch.lines.drain(..) {
            b.insert(if res { &target.results } else { &target.status }, k, v);
        }
        // In the lines' batch: a slot is listed exactly when it holds a
        // line.
        for e in job.batch.slots.drain(..) {
            b.insert(&target.slots, e, []);
        }
    }
    if !b.is_empty() {
        b.commit().map_err(unavailable)?;
    }
    Inner::bound_memtables([
        &target.results,
        &target.status,
        &target.slots,
        &target.probe,
    ])
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use gatehouse_core::ports::StoreError;

    use super::*;
    use crate::embedded::{EmbeddedStore, SyncCounts};

    /// The writer's target over a fresh store's log database, with counts
    /// of its own and the watermark `min`.
    fn target(store: &EmbeddedStore, dir: &std::path::Path, min: u64) -> Target {
        let inner = store.current().unwrap();
        let logs = &inner.logs;
        Target {
            db: logs.db.clone(),
            results: logs.results.clone(),
            status: logs.status.clone(),
            slots: logs.slots.clone(),
            probe: logs.probe.clone(),
            disk: DiskWatch {
                dir: dir.to_path_buf(),
                min,
                low: Default::default(),
            },
            counts: Arc::new(SyncCounts::default()),
        }
    }

    /// Sends batches of one result line each (key `k<n>`, a value of
    /// `value_bytes`) and returns their answers.
    fn send(
        tx: &mpsc::Sender<Job>,
        n: std::ops::Range<usize>,
        value_bytes: usize,
    ) -> Vec<oneshot::Receiver<StoreResult<()>>> {
        n.map(|n| {
            let (done, answer) = oneshot::channel();
            let batch = LogBatch {
                lines: vec![(true, format!("k{n}").into_bytes(), vec![b'v'; value_bytes])],
                slots: vec![format!("s{n}").into_bytes()],
            };
            tx.send(Job { batch, done }).unwrap();
            answer
        })
        .collect()
    }

    /// Queues batches `n` (as [`send`]) before the writer runs, then runs
    /// the writer and the syncer in turn on this thread; checks that the
    /// writer committed `groups` groups.
    fn send_all(
        t: &Target,
        n: std::ops::Range<usize>,
        value_bytes: usize,
        groups: usize,
    ) -> Vec<oneshot::Receiver<StoreResult<()>>> {
        let (tx, rx) = mpsc::channel();
        let answers = send(&tx, n, value_bytes);
        drop(tx);
        let (committed, to_sync) = mpsc::channel();
        assert_eq!(commit_groups(t, &rx, &committed), groups, "groups");
        drop(committed);
        sync_groups(t, &to_sync);
        answers
    }

    fn counts(t: &Target) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        (
            t.counts.syncs.load(Ordering::Relaxed),
            t.counts.batches.load(Ordering::Relaxed),
        )
    }

    /// Batches waiting together are committed as one group with one sync,
    /// every caller is answered, and every line and index entry is
    /// stored; a group stops taking batches past its size.
    #[test]
    fn batches_waiting_together_share_one_write_and_one_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let t = target(&store, dir.path(), 0);
        let answers = send_all(&t, 0..10, 100, 1);
        for a in answers {
            a.blocking_recv().unwrap().unwrap();
        }
        assert_eq!(counts(&t), (1, 10), "one sync for the ten batches");
        for n in 0..10 {
            assert!(t.results.get(format!("k{n}")).unwrap().is_some());
            assert!(t.slots.get(format!("s{n}")).unwrap().is_some());
        }

        // Three batches of over half a group each: two groups, both
        // committed before the syncer runs, so one sync covers both.
        let answers = send_all(&t, 10..13, GROUP_BYTES / 2 + 1, 2);
        for a in answers {
            a.blocking_recv().unwrap().unwrap();
        }
        assert_eq!(counts(&t), (2, 13));
    }

    /// A group refused (the disk below its watermark) fails every batch
    /// in it, with the reason, and writes none of them.
    #[test]
    fn a_refused_group_fails_every_batch_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let t = target(&store, dir.path(), u64::MAX);
        let answers = send_all(&t, 0..4, 100, 0);
        for a in answers {
            let r = a.blocking_recv().unwrap();
            assert!(matches!(r, Err(StoreError::DiskLow { .. })), "{r:?}");
        }
        assert_eq!(counts(&t), (0, 0));
        for n in 0..4 {
            assert!(t.results.get(format!("k{n}")).unwrap().is_none());
            assert!(t.slots.get(format!("s{n}")).unwrap().is_none());
        }
    }
}
