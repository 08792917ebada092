//! The durable log stream port: edges append agent log batches (each with
//! a deterministic id, so a re-send is dropped), and ingest takes them
//! through one shared durable consumer, acknowledging each once it is
//! stored. A batch not acknowledged in time is delivered again; one that
//! can never be processed is terminated. Two adapters pass the same
//! conformance suite (`conformance::logstream`):
//!
//! - [`JetStreamLog`]: the `GATEHOUSE_LOGS` work-queue stream (file
//!   storage, discard-new when full, duplicate window by message id) and
//!   its durable pull consumer `ingest`, for the cluster.
//! - [`InProcLog`]: the same rules in memory, with time read from a
//!   [`Clock`], for one process and for deterministic tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{AckKind, Context};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use gatehouse_core::time::Clock;

pub const STREAM: &str = "GATEHOUSE_LOGS";
pub const SUBJECT_RESULTS: &str = gatehouse_proto::topics::LOG_RESULTS.subject();
pub const SUBJECT_STATUS: &str = gatehouse_proto::topics::LOG_STATUS.subject();
pub const DURABLE: &str = "ingest";

/// Which log a batch belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    Results,
    Status,
}

impl LogKind {
    pub fn subject(self) -> &'static str {
        match self {
            LogKind::Results => SUBJECT_RESULTS,
            LogKind::Status => SUBJECT_STATUS,
        }
    }
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    Stored,
    /// The same id was appended within the duplicate window: dropped.
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The stream holds all it may (or cannot store): nothing was stored.
    #[error("log stream full")]
    Full,
    #[error("log stream: {0}")]
    Unavailable(String),
}

fn unavailable(e: impl std::fmt::Display) -> StreamError {
    StreamError::Unavailable(e.to_string())
}

/// The stream's shape.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Replicas (3 in production: a batch acknowledged to an agent
    /// survives the loss of a node).
    pub replicas: usize,
    /// Bytes the stream may hold before appends are refused; -1: no limit
    /// but the server's.
    pub max_bytes: i64,
    /// Re-sent batches within this window are dropped.
    pub duplicate_window: Duration,
    /// A delivered batch not settled within this is delivered again.
    pub ack_wait: Duration,
    /// Delivered batches not yet settled, at most.
    pub max_in_hand: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            replicas: 1,
            max_bytes: -1,
            duplicate_window: Duration::from_secs(120),
            ack_wait: Duration::from_secs(60),
            max_in_hand: 1024,
        }
    }
}

/// How a delivered batch is settled.
#[async_trait]
pub trait Settle: Send {
    /// Processed: it leaves the stream.
    async fn ack(self: Box<Self>) -> Result<(), StreamError>;
    /// Not processed now: deliver it again after `delay`.
    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), StreamError>;
    /// Never processable: drop it, never deliver it again.
    async fn term(self: Box<Self>) -> Result<(), StreamError>;
}

/// One delivered batch.
pub struct Entry {
    pub kind: LogKind,
    pub payload: Bytes,
    settle: Box<dyn Settle>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("kind", &self.kind)
            .field("bytes", &self.payload.len())
            .finish()
    }
}

impl Entry {
    pub async fn ack(self) -> Result<(), StreamError> {
        self.settle.ack().await
    }
    pub async fn nak(self, delay: Duration) -> Result<(), StreamError> {
        self.settle.nak(delay).await
    }
    pub async fn term(self) -> Result<(), StreamError> {
        self.settle.term().await
    }
}

/// The durable log stream and its one shared consumer.
#[async_trait]
pub trait LogStream: Send + Sync + 'static {
    /// Stores `payload`; returns only once it is durable.
    async fn append(
        &self,
        kind: LogKind,
        id: &str,
        payload: Bytes,
    ) -> Result<Appended, StreamError>;
    /// Batches in the stream (not yet acknowledged).
    async fn backlog(&self) -> Result<u64, StreamError>;
    /// Up to `max` batches for the consumer, oldest first; waits at most
    /// `wait` for the first (an empty answer means none came).
    ///
    /// Not cancel-safe: batches delivered to a fetch that is dropped are
    /// delivered again only after the ack wait. Let it finish (bound it
    /// with `wait`) rather than racing it against other events.
    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Entry>, StreamError>;
}

// ---- JetStream ----

/// The log stream in JetStream.
#[derive(Clone)]
pub struct JetStreamLog {
    js: Context,
    cfg: StreamConfig,
    consumer: Arc<tokio::sync::OnceCell<PullConsumer>>,
}

impl std::fmt::Debug for JetStreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JetStreamLog")
    }
}

impl JetStreamLog {
    /// Creates the stream if it does not exist (every edge and ingest
    /// does this at start; the first one wins).
    pub async fn open(client: async_nats::Client, cfg: &StreamConfig) -> Result<Self, StreamError> {
        let js = async_nats::jetstream::new(client);
        js.get_or_create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec![SUBJECT_RESULTS.into(), SUBJECT_STATUS.into()],
            // A batch leaves the stream once ingest acknowledged it.
            retention: RetentionPolicy::WorkQueue,
            // Full means refuse (the agent keeps the batch), never drop.
            discard: DiscardPolicy::New,
            storage: StorageType::File,
            num_replicas: cfg.replicas,
            max_bytes: cfg.max_bytes,
            duplicate_window: cfg.duplicate_window,
            ..Default::default()
        })
        .await
        .map_err(unavailable)?;
        Ok(Self {
            js,
            cfg: cfg.clone(),
            consumer: Arc::default(),
        })
    }

    /// The shared durable consumer, created on first use with this
    /// handle's ack wait and in-hand limit (edges, which only append,
    /// never create it).
    async fn consumer(&self) -> Result<PullConsumer, StreamError> {
        self.consumer
            .get_or_try_init(|| async {
                let stream = self.js.get_stream(STREAM).await.map_err(unavailable)?;
                stream
                    .get_or_create_consumer(
                        DURABLE,
                        pull::Config {
                            durable_name: Some(DURABLE.into()),
                            ack_policy: AckPolicy::Explicit,
                            ack_wait: self.cfg.ack_wait,
                            max_ack_pending: i64::try_from(self.cfg.max_in_hand).unwrap_or(1024),
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(unavailable)
            })
            .await
            .cloned()
    }

    /// The stream's and the consumer's figures, read from the server.
    pub async fn status(&self) -> Result<JetStreamStatus, StreamError> {
        let mut stream = self.js.get_stream(STREAM).await.map_err(unavailable)?;
        let state = stream.info().await.map_err(unavailable)?.state.clone();
        let mut c = self.consumer().await?;
        let info = c.info().await.map_err(unavailable)?;
        let first_ms =
            i64::try_from(state.first_timestamp.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        Ok(JetStreamStatus {
            messages: state.messages,
            bytes: state.bytes,
            oldest_ms: (state.messages > 0).then_some(first_ms),
            undelivered: info.num_pending,
            in_hand: info.num_ack_pending as u64,
        })
    }

    /// Batches waiting for the consumer: not yet delivered plus delivered
    /// and not acknowledged.
    pub async fn lag(&self) -> Result<u64, StreamError> {
        let s = self.status().await?;
        Ok(s.undelivered + s.in_hand)
    }
}

/// What JetStream holds for ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JetStreamStatus {
    /// Batches in the stream.
    pub messages: u64,
    pub bytes: u64,
    /// When the oldest batch was stored (ms since the epoch), if any.
    pub oldest_ms: Option<i64>,
    /// Batches not yet delivered to the consumer.
    pub undelivered: u64,
    /// Delivered and not yet settled.
    pub in_hand: u64,
}

/// The stream refused to store a message (full, or its store failed): by
/// the server's error code (async-nats files it as `Other` with the API
/// error as its source), never by its words.
fn cannot_store(e: &async_nats::jetstream::context::PublishError) -> bool {
    use async_nats::jetstream::ErrorCode;
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>())
        .is_some_and(|api| {
            [
                ErrorCode::STREAM_STORE_FAILED,
                ErrorCode::STORAGE_RESOURCES_EXCEEDED,
            ]
            .contains(&api.error_code())
        })
}

struct JsSettle(async_nats::jetstream::Message);

#[async_trait]
impl Settle for JsSettle {
    async fn ack(self: Box<Self>) -> Result<(), StreamError> {
        self.0.ack().await.map_err(unavailable)
    }
    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), StreamError> {
        self.0
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(unavailable)
    }
    async fn term(self: Box<Self>) -> Result<(), StreamError> {
        self.0.ack_with(AckKind::Term).await.map_err(unavailable)
    }
}

#[async_trait]
impl LogStream for JetStreamLog {
    async fn append(
        &self,
        kind: LogKind,
        id: &str,
        payload: Bytes,
    ) -> Result<Appended, StreamError> {
        let ack = self
            .js
            .send_publish(
                kind.subject(),
                PublishMessage::build().payload(payload).message_id(id),
            )
            .await
            .map_err(unavailable)?;
        match ack.await {
            Ok(a) if a.duplicate => Ok(Appended::Duplicate),
            Ok(_) => Ok(Appended::Stored),
            Err(e) if cannot_store(&e) => Err(StreamError::Full),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn backlog(&self) -> Result<u64, StreamError> {
        let mut s = self.js.get_stream(STREAM).await.map_err(unavailable)?;
        Ok(s.info().await.map_err(unavailable)?.state.messages)
    }

    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Entry>, StreamError> {
        // `batch` waits up to `wait` for messages (`fetch` would not).
        let mut messages = self
            .consumer()
            .await?
            .batch()
            .max_messages(max)
            .expires(wait)
            .messages()
            .await
            .map_err(unavailable)?;
        let mut out = Vec::new();
        while let Some(m) = messages.next().await {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "log stream message error");
                    continue;
                }
            };
            let kind = if m.subject.as_str() == SUBJECT_STATUS {
                LogKind::Status
            } else {
                LogKind::Results
            };
            out.push(Entry {
                kind,
                payload: m.payload.clone(),
                settle: Box::new(JsSettle(m)),
            });
        }
        Ok(out)
    }
}

// ---- in process ----

#[derive(Debug)]
struct Stored {
    kind: LogKind,
    payload: Bytes,
    /// Deliverable from this time (ms); later while delivered and
    /// unsettled (then it is the redelivery time).
    ready_at: i64,
    /// Bumped at each delivery: a settle from an earlier one is stale.
    delivery: u64,
}

#[derive(Debug, Default)]
struct LogState {
    entries: BTreeMap<u64, Stored>,
    /// Batch id -> when it was appended (the duplicate window).
    ids: HashMap<String, i64>,
    bytes: usize,
    next_seq: u64,
}

/// The log stream in memory, with time from a clock.
#[derive(Debug, Clone)]
pub struct InProcLog {
    state: Arc<Mutex<LogState>>,
    arrived: Arc<tokio::sync::Notify>,
    cfg: StreamConfig,
    clock: Arc<dyn Clock>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl InProcLog {
    pub fn new(cfg: StreamConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Arc::default(),
            arrived: Arc::default(),
            cfg,
            clock,
        }
    }

    fn state(&self) -> Result<std::sync::MutexGuard<'_, LogState>, StreamError> {
        self.state
            .lock()
            .map_err(|_| StreamError::Unavailable("log state poisoned".into()))
    }

    /// Takes up to `max` deliverable entries, marking them delivered.
    fn take(&self, max: usize) -> Result<Vec<Entry>, StreamError> {
        let now = self.clock.now_ms();
        let ack_wait = ms(self.cfg.ack_wait);
        let mut s = self.state()?;
        let mut out = Vec::new();
        for (seq, e) in s.entries.iter_mut() {
            if out.len() == max.min(self.cfg.max_in_hand) {
                break;
            }
            if e.ready_at > now {
                continue;
            }
            e.ready_at = now.saturating_add(ack_wait);
            e.delivery += 1;
            out.push(Entry {
                kind: e.kind,
                payload: e.payload.clone(),
                settle: Box::new(InProcSettle {
                    log: self.clone(),
                    seq: *seq,
                    delivery: e.delivery,
                }),
            });
        }
        Ok(out)
    }
}

struct InProcSettle {
    log: InProcLog,
    seq: u64,
    delivery: u64,
}

impl InProcSettle {
    /// Applies `f` to the entry if this delivery is still its latest.
    fn with(&self, f: impl FnOnce(&mut LogState, u64)) -> Result<(), StreamError> {
        let mut s = self.log.state()?;
        if s.entries
            .get(&self.seq)
            .is_some_and(|e| e.delivery == self.delivery)
        {
            f(&mut s, self.seq);
        }
        Ok(())
    }

    fn remove(&self) -> Result<(), StreamError> {
        self.with(|s, seq| {
            if let Some(e) = s.entries.remove(&seq) {
                s.bytes = s.bytes.saturating_sub(e.payload.len());
            }
        })
    }
}

#[async_trait]
impl Settle for InProcSettle {
    async fn ack(self: Box<Self>) -> Result<(), StreamError> {
        self.remove()
    }
    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), StreamError> {
        let at = self.log.clock.now_ms().saturating_add(ms(delay));
        self.with(|s, seq| {
            if let Some(e) = s.entries.get_mut(&seq) {
                e.ready_at = at;
            }
        })?;
        self.log.arrived.notify_waiters();
        Ok(())
    }
    async fn term(self: Box<Self>) -> Result<(), StreamError> {
        self.remove()
    }
}

#[async_trait]
impl LogStream for InProcLog {
    async fn append(
        &self,
        kind: LogKind,
        id: &str,
        payload: Bytes,
    ) -> Result<Appended, StreamError> {
        let now = self.clock.now_ms();
        {
            let mut s = self.state()?;
            let window = ms(self.cfg.duplicate_window);
            s.ids.retain(|_, at| now.saturating_sub(*at) < window);
            if s.ids.contains_key(id) {
                return Ok(Appended::Duplicate);
            }
            let limit = usize::try_from(self.cfg.max_bytes).ok();
            if limit.is_some_and(|l| s.bytes.saturating_add(payload.len()) > l) {
                return Err(StreamError::Full);
            }
            s.next_seq += 1;
            let seq = s.next_seq;
            s.bytes += payload.len();
            s.ids.insert(id.to_owned(), now);
            s.entries.insert(
                seq,
                Stored {
                    kind,
                    payload,
                    ready_at: now,
                    delivery: 0,
                },
            );
        }
        self.arrived.notify_waiters();
        Ok(Appended::Stored)
    }

    async fn backlog(&self) -> Result<u64, StreamError> {
        Ok(self.state()?.entries.len() as u64)
    }

    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Entry>, StreamError> {
        let arrived = self.arrived.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        let got = self.take(max)?;
        if !got.is_empty() {
            return Ok(got);
        }
        // Wake for a new batch, or when a delayed one becomes deliverable.
        let next = {
            let now = self.clock.now_ms();
            self.state()?
                .entries
                .values()
                .map(|e| e.ready_at.saturating_sub(now))
                .min()
                .map(|d| Duration::from_millis(u64::try_from(d.max(1)).unwrap_or(u64::MAX)))
        };
        let _ = tokio::time::timeout(next.map_or(wait, |n| n.min(wait)), arrived).await;
        self.take(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::time::ShiftedClock;

    #[tokio::test]
    async fn the_in_process_log_passes_the_conformance_suite() {
        let clock = Arc::new(ShiftedClock::new());
        let cfg = crate::conformance::logstream::config();
        let log = InProcLog::new(cfg.clone(), clock.clone());
        let past_ack_wait = || {
            let clock = clock.clone();
            let by = cfg.ack_wait + Duration::from_millis(1);
            async move { clock.advance(by) }
        };
        crate::conformance::logstream::run_all(&log, past_ack_wait).await;
    }
}
