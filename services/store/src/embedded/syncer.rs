//! Durability of the store's database without holding a thread while the
//! disk syncs (ADR 0049).
//!
//! A write commits its batch to the journal (handed to the operating
//! system) on a blocking thread and takes a ticket; it then waits for a
//! sync that covers the ticket as an async task, its blocking thread and
//! its host's stripe lock already given back. One thread of the store's,
//! "gatehouse:store-sync", syncs the journal whenever writers wait: every
//! ticket handed out before its sync began is durable when the sync
//! returns, so the writers that arrive while the disk works share the next
//! one.
//!
//! Before, a writer slept on the group commit's condition variable on its
//! blocking thread, inside the host's stripe lock. With 48 blocking
//! threads and a live query's deliveries and answers at thousands a
//! second, the threads were all asleep on syncs and every store call,
//! reads included, queued behind them (a campaign to 50,000 hosts:
//! distributed writes answered in 300 ms at the median).

use std::sync::{Arc, Condvar, Mutex, mpsc};

use fjall::{Database, PersistMode};
use gatehouse_core::ports::StoreResult;
use tokio::sync::oneshot;

use super::{SyncCounts, unavailable};

/// Who waits for a ticket to be durable.
enum Waiter {
    /// An async store call, after its blocking work.
    Task(oneshot::Sender<StoreResult<()>>),
    /// A thread outside the runtime's async workers (opening, probing).
    Thread(mpsc::SyncSender<StoreResult<()>>),
}

impl Waiter {
    fn answer(self, r: StoreResult<()>) {
        match self {
            Waiter::Task(tx) => {
                let _ = tx.send(r);
            }
            Waiter::Thread(tx) => {
                let _ = tx.send(r);
            }
        }
    }
}

#[derive(Default)]
struct State {
    /// Tickets handed out (the last one).
    appended: u64,
    /// Every ticket up to this one is durable.
    synced: u64,
    /// Waiting for the next sync.
    waiting: Vec<Waiter>,
    /// The store is closing: the thread syncs for whoever still waits,
    /// then ends.
    closing: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    counts: Arc<SyncCounts>,
}

impl Shared {
    fn lock(&self) -> StoreResult<std::sync::MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| unavailable("journal sync state poisoned"))
    }
}

/// The store database's journal syncs, on a thread of their own; dropping
/// it answers whoever still waits and joins the thread.
pub(super) struct Syncer {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    pub(super) fn start(db: Database) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            counts: Arc::default(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("gatehouse:store-sync".into())
            .spawn(move || sync_while_waited_for(&db, &s))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Journal syncs done, and the batches they made durable.
    pub(super) fn counts(&self) -> (u64, u64) {
        self.shared.counts.get()
    }

    /// A ticket for a batch committed just now (before the call).
    pub(super) fn ticket(&self) -> StoreResult<u64> {
        let mut s = self.shared.lock()?;
        s.appended += 1;
        Ok(s.appended)
    }

    /// Tickets handed out, and the last durable one.
    #[cfg(test)]
    pub(super) fn position(&self) -> (u64, u64) {
        let s = self.shared.lock().expect("sync state");
        (s.appended, s.synced)
    }

    /// Queues `waiter` for the next sync; `false` when `ticket` is
    /// durable already.
    fn enqueue(&self, ticket: u64, waiter: Waiter) -> StoreResult<bool> {
        let mut s = self.shared.lock()?;
        if s.synced >= ticket {
            return Ok(false);
        }
        s.waiting.push(waiter);
        drop(s);
        self.shared.wake.notify_one();
        Ok(true)
    }

    /// Resolves once `ticket` is durable (or with why the sync failed).
    pub(super) async fn durable(&self, ticket: u64) -> StoreResult<()> {
        let (tx, rx) = oneshot::channel();
        if !self.enqueue(ticket, Waiter::Task(tx))? {
            return Ok(());
        }
        rx.await
            .map_err(|_| unavailable("the store's journal sync stopped"))?
    }

    /// Returns once `ticket` is durable, blocking this thread (never call
    /// it on an async worker).
    pub(super) fn durable_blocking(&self, ticket: u64) -> StoreResult<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        if !self.enqueue(ticket, Waiter::Thread(tx))? {
            return Ok(());
        }
        rx.recv()
            .map_err(|_| unavailable("the store's journal sync stopped"))?
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shared.state.lock() {
            s.closing = true;
        }
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The sync thread: while writers wait, syncs the journal for every
/// ticket handed out so far and answers them; ends when the store closes
/// and nobody waits.
fn sync_while_waited_for(db: &Database, shared: &Shared) {
    let Ok(mut s) = shared.state.lock() else {
        return;
    };
    loop {
        while s.waiting.is_empty() && !s.closing {
            s = match shared.wake.wait(s) {
                Ok(s) => s,
                Err(_) => return,
            };
        }
        if s.waiting.is_empty() {
            return;
        }
        let through = s.appended;
        let waiters = std::mem::take(&mut s.waiting);
        drop(s);
        let r = db.persist(PersistMode::SyncData).map_err(unavailable);
        s = match shared.state.lock() {
            Ok(s) => s,
            Err(_) => return,
        };
        if r.is_ok() && through > s.synced {
            shared.counts.add(through - s.synced);
            s.synced = through;
        }
        drop(s);
        // A failed sync fails its waiters; the next writers' sync tries
        // again (and fails the same way on a poisoned journal, which the
        // store then reopens).
        for w in waiters {
            w.answer(r.clone());
        }
        s = match shared.state.lock() {
            Ok(s) => s,
            Err(_) => return,
        };
    }
}
