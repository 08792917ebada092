//! How many agent requests the edge takes on at once (ADRs 0029, 0035,
//! 0047, 0053).
//!
//! - **In-flight slots** (`max_in_flight`): a request being read and
//!   handled holds one. When none is free, the request waits for one, in
//!   turn, up to `slot_wait` (well below the agent's 16 s timeout, and no
//!   longer than the second the agent sleeps before it retries a refused
//!   request), in a waiting slot of its own (as many as in-flight slots);
//!   with neither, or no slot within the wait, a busy error body (the agent
//!   keeps its data and backs off).
//! - **Log waiting slots** (as many again): a log POST waits in one, its
//!   body unread, for room in the log-body budget, then takes an in-flight
//!   slot if one is free, else gets a busy error body at once: in a burst
//!   (a live query to every host) the slots and the CPU go to reads and
//!   answers, and the agent keeps its log batch for its next tick.
//! - **The log-body budget** (`max_log_bytes_in_flight`, one permit per
//!   byte): a log POST holds its share from before its body is read until
//!   its batch is stored, or gets a busy error body when no room frees
//!   within `log_admission_wait`.
//!
//! A log POST holds an in-flight slot only while its body is read and
//! checked: waiting for the store it holds its bytes alone, so a store
//! slowed by a wave of batches never turns enrollments, configs and
//! distributed reads away. Every admitted request counts once in
//! `gatehouse_edge_requests_in_flight` until it is answered (or its client
//! goes away and the handler is dropped).

use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::EdgeError;

pub(crate) struct Admission {
    in_flight: Semaphore,
    /// Requests waiting for an in-flight slot.
    slot_waiting: Semaphore,
    slot_wait: Duration,
    log_waiting: Semaphore,
    log_bytes: Semaphore,
    /// Largest share one log POST can take (the whole budget).
    log_budget: u32,
    log_wait: Duration,
    gauge: Gauge,
}

/// Counts one admitted request in the gauge while it lives.
struct Counted(Gauge);

impl Counted {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What an admitted request (other than a log POST) holds until answered.
pub(crate) struct Admitted<'a> {
    _slot: SemaphorePermit<'a>,
    _counted: Counted,
}

/// What an admitted log POST holds until answered.
pub(crate) struct LogAdmitted<'a> {
    /// Its in-flight slot, while its body is read and checked.
    slot: Option<SemaphorePermit<'a>>,
    _room: SemaphorePermit<'a>,
    _counted: Counted,
}

impl LogAdmitted<'_> {
    /// The batch is read and checked and now waits for the store: its
    /// in-flight slot goes back, its room in the budget stays.
    pub(crate) fn storing(&mut self) {
        self.slot = None;
    }
}

impl Admission {
    pub(crate) fn new(
        max_in_flight: usize,
        max_log_bytes: usize,
        slot_wait: Duration,
        log_wait: Duration,
        gauge: Gauge,
    ) -> Self {
        let log_budget =
            u32::try_from(max_log_bytes.clamp(1, u32::MAX as usize)).unwrap_or(u32::MAX);
        Self {
            in_flight: Semaphore::new(max_in_flight.max(1)),
            slot_waiting: Semaphore::new(max_in_flight.max(1)),
            slot_wait,
            log_waiting: Semaphore::new(max_in_flight.max(1)),
            log_bytes: Semaphore::new(log_budget as usize),
            log_budget,
            log_wait,
            gauge,
        }
    }

    /// An in-flight slot (waiting for one up to `slot_wait`), or a busy
    /// refusal.
    pub(crate) async fn request(&self) -> Result<Admitted<'_>, EdgeError> {
        let counted = Counted::new(&self.gauge);
        Ok(Admitted {
            _slot: self.slot().await?,
            _counted: counted,
        })
    }

    /// A free in-flight slot, else one freed within `slot_wait` to the
    /// requests waiting for one in turn (when a waiting slot is free).
    async fn slot(&self) -> Result<SemaphorePermit<'_>, EdgeError> {
        if let Ok(slot) = self.in_flight.try_acquire() {
            return Ok(slot);
        }
        let _waiting = self
            .slot_waiting
            .try_acquire()
            .map_err(|_| EdgeError::Backpressure)?;
        tokio::time::timeout(self.slot_wait, self.in_flight.acquire())
            .await
            .map_err(|_| EdgeError::Backpressure)?
            .map_err(|_| EdgeError::Unavailable("shutting down".into()))
    }

    /// Admits a log POST whose body takes `bytes` of the budget (at most
    /// all of it): a log waiting slot now (else busy), room for the body
    /// within the wait (else busy), then a free in-flight slot (else busy,
    /// without waiting for one), held until [`LogAdmitted::storing`].
    pub(crate) async fn log(&self, bytes: usize) -> Result<LogAdmitted<'_>, EdgeError> {
        let share = u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .clamp(1, self.log_budget);
        let waiting = self
            .log_waiting
            .try_acquire()
            .map_err(|_| EdgeError::Backpressure)?;
        let counted = Counted::new(&self.gauge);
        let room = tokio::time::timeout(self.log_wait, self.log_bytes.acquire_many(share))
            .await
            .map_err(|_| EdgeError::Backpressure)?
            .map_err(|_| EdgeError::Unavailable("shutting down".into()))?;
        let slot = self
            .in_flight
            .try_acquire()
            .map_err(|_| EdgeError::Backpressure)?;
        drop(waiting);
        Ok(LogAdmitted {
            slot: Some(slot),
            _room: room,
            _counted: counted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max_in_flight: usize, max_log_bytes: usize) -> (Admission, Gauge) {
        let gauge = Gauge::default();
        let a = Admission::new(
            max_in_flight,
            max_log_bytes,
            Duration::from_secs(1),
            Duration::from_secs(8),
            gauge.clone(),
        );
        (a, gauge)
    }

    #[tokio::test(start_paused = true)]
    async fn a_log_batch_waiting_for_the_store_gives_its_slot_back() {
        let (a, gauge) = admission(1, 1024);
        let mut log = a.log(100).await.expect("admitted");
        // Read and checked: the one slot is the batch's.
        assert!(matches!(a.request().await, Err(EdgeError::Backpressure)));
        log.storing();
        // Waiting for the store: the slot serves a config or a read.
        let read = a.request().await.expect("the slot went back");
        assert_eq!(gauge.get(), 2, "both requests counted");
        // The batch still holds its bytes: a body of the whole budget waits.
        let waited = tokio::time::timeout(Duration::from_secs(1), a.log(1000)).await;
        assert!(waited.is_err(), "room was taken twice");
        drop((log, read));
        assert_eq!(gauge.get(), 0);
        // All back: a log POST and a request fit again.
        let _log = a.log(1024).await.expect("room again");
        assert_eq!(gauge.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn log_posts_wait_for_room_in_waiting_slots_then_are_refused() {
        let (a, gauge) = admission(1, 1024);
        // More than the budget: counted as all of it.
        let mut first = a.log(usize::MAX).await.expect("admitted");
        first.storing();
        // The next waits for room in the one waiting slot...
        let second = a.log(10);
        tokio::pin!(second);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), &mut second)
                .await
                .is_err()
        );
        // ...so a third is refused at once, a request is not.
        assert!(matches!(a.log(10).await, Err(EdgeError::Backpressure)));
        let read = a
            .request()
            .await
            .expect("waiting log POSTs hold no in-flight slot");
        assert_eq!(gauge.get(), 3);
        drop(read);
        // No room within the wait: busy.
        assert!(matches!(second.await, Err(EdgeError::Backpressure)));
        assert_eq!(gauge.get(), 1);
        drop(first);
        assert_eq!(gauge.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_log_body_past_the_slots_is_refused_at_once() {
        let (a, _) = admission(1, 1024);
        let _read = a.request().await.expect("admitted");
        // Room is free but no in-flight slot is: refused, room given back.
        assert!(matches!(a.log(1024).await, Err(EdgeError::Backpressure)));
        drop(_read);
        let _log = a.log(1024).await.expect("the room was given back");
    }

    #[tokio::test(start_paused = true)]
    async fn requests_but_log_posts_wait_in_turn_for_a_slot_freed_within_the_wait() {
        let (a, gauge) = admission(1, 1024);
        let first = a.request().await.expect("a free slot");
        // The next waits in the one waiting slot; a third finds none.
        let second = a.request();
        tokio::pin!(second);
        assert!(
            tokio::time::timeout(Duration::from_millis(400), &mut second)
                .await
                .is_err(),
            "no slot yet"
        );
        assert!(matches!(a.request().await, Err(EdgeError::Backpressure)));
        assert_eq!(gauge.get(), 2, "the waiting request is counted");
        // A log POST does not wait for a slot: refused at once.
        let started = tokio::time::Instant::now();
        assert!(matches!(a.log(10).await, Err(EdgeError::Backpressure)));
        assert_eq!(started.elapsed(), Duration::ZERO);
        // The slot freed within the wait goes to the one waiting.
        drop(first);
        let second = second.await.expect("the freed slot");
        // Not freed within the wait: busy.
        let started = tokio::time::Instant::now();
        assert!(matches!(a.request().await, Err(EdgeError::Backpressure)));
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        drop(second);
        assert_eq!(gauge.get(), 0);
        let _again = a.request().await.expect("free again");
    }
}
