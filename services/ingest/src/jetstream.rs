//! The durable log path over the log stream port
//! ([`gatehouse_bus::logstream`]: JetStream in the cluster, in memory for
//! one process and for tests).
//!
//! - [`StreamSink`] (in edges): appends each agent log batch with a
//!   deterministic id ([`LogRecords::batch_id`]) and returns only once the
//!   stream stored it, so the edge acknowledges the agent only then. A
//!   re-sent batch inside the duplicate window is dropped by the stream.
//!   Past `max_backlog` unconsumed batches, or when the stream is full, it
//!   answers `Backpressure`: the agent keeps its buffer and retries.
//! - [`consume`] (in ingest): takes batches through the stream's shared
//!   consumer, writes each to the store (idempotent by line id) and
//!   acknowledges only after the write. A batch whose write fails is
//!   delivered again; one that cannot be decoded is terminated and logged,
//!   never retried forever. While the store cannot write (an outage, a
//!   full disk), ingest stops trying: it hands its batches back and pauses
//!   with back-off (up to 30 s), then catches up once a write succeeds.
//! - [`open_jetstream`] and [`run_consumer`] are both over JetStream, for
//!   the cluster roles.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use gatehouse_bus::logstream::{
    Appended, Entry, JetStreamLog, LogKind, LogStream, StreamConfig, StreamError,
};
use gatehouse_core::model::LogRecords;
use gatehouse_core::ports::{LogSink, SinkError, Store, StoreError};
use gatehouse_runtime::Shutdown;

pub use gatehouse_bus::logstream::{DURABLE, STREAM, SUBJECT_RESULTS, SUBJECT_STATUS};

/// The stream's shape and the edge's backlog limit.
#[derive(Debug, Clone)]
pub struct LogStreamConfig {
    /// JetStream replicas (3 in production: a batch acknowledged to an
    /// agent survives the loss of a NATS node).
    pub replicas: usize,
    /// Bytes the stream may hold before new batches are refused; -1 leaves
    /// it to the server's JetStream storage limit.
    pub max_bytes: i64,
    /// Unconsumed batches past which edges answer `Backpressure`.
    pub max_backlog: u64,
    /// Re-sent batches within this window are dropped.
    pub duplicate_window: Duration,
    /// How often an edge re-reads the backlog.
    pub backlog_refresh: Duration,
}

impl Default for LogStreamConfig {
    fn default() -> Self {
        Self {
            replicas: 1,
            max_bytes: -1,
            max_backlog: 1_000_000,
            duplicate_window: Duration::from_secs(120),
            backlog_refresh: Duration::from_millis(500),
        }
    }
}

/// The log stream's and ingest's metrics.
#[derive(Clone)]
struct Metrics {
    appends: prometheus_client::metrics::family::Family<
        gatehouse_runtime::metrics::RequestLabels,
        prometheus_client::metrics::counter::Counter,
    >,
    backlog: prometheus_client::metrics::gauge::Gauge,
    written: prometheus_client::metrics::counter::Counter,
    lines: prometheus_client::metrics::counter::Counter,
    retried: prometheus_client::metrics::counter::Counter,
    poisoned: prometheus_client::metrics::counter::Counter,
    lag: prometheus_client::metrics::gauge::Gauge,
    backing_off: prometheus_client::metrics::gauge::Gauge,
}

impl Metrics {
    fn new(m: &gatehouse_runtime::metrics::Metrics) -> Self {
        Self {
            appends: m.get_or_register(
                "log_stream_appends",
                "Log batches edges appended to the stream, by outcome",
                prometheus_client::metrics::family::Family::default,
            ),
            backlog: m.gauge(
                "log_stream_backlog",
                "Unconsumed log batches, as an edge last read it",
            ),
            written: m.counter(
                "ingest_batches_written",
                "Log batches ingest wrote to the store",
            ),
            lines: m.counter(
                "ingest_lines_written",
                "Log lines ingest wrote to the store",
            ),
            retried: m.counter(
                "ingest_batches_retried",
                "Log batches whose store write failed (redelivered)",
            ),
            poisoned: m.counter(
                "ingest_batches_terminated",
                "Undecodable log batches dropped",
            ),
            lag: m.gauge(
                "ingest_lag_batches",
                "Batches waiting for ingest (pending plus unacknowledged)",
            ),
            backing_off: m.gauge(
                "ingest_backing_off",
                "1 while ingest pauses because the store cannot take log batches",
            ),
        }
    }

    fn count_append(&self, outcome: &str) {
        self.appends
            .get_or_create(&gatehouse_runtime::metrics::RequestLabels {
                endpoint: "log_stream".into(),
                outcome: outcome.into(),
            })
            .inc();
    }
}

fn unavailable(e: impl std::fmt::Display) -> SinkError {
    SinkError::Unavailable(format!("log stream: {e}"))
}

impl LogStreamConfig {
    /// The stream's shape, for consumers whose batches are redelivered
    /// after `ack_wait`.
    pub fn stream(&self, ack_wait: Duration, max_in_hand: usize) -> StreamConfig {
        StreamConfig {
            replicas: self.replicas,
            max_bytes: self.max_bytes,
            duplicate_window: self.duplicate_window,
            ack_wait,
            max_in_hand,
        }
    }
}

/// The log stream in JetStream, with the consumer shape `cfg` gives.
pub async fn open_jetstream(
    client: async_nats::Client,
    stream_cfg: &LogStreamConfig,
    cfg: &ConsumerConfig,
) -> Result<JetStreamLog, SinkError> {
    JetStreamLog::open(client, &stream_cfg.stream(cfg.ack_wait, cfg.fetch * 4))
        .await
        .map_err(unavailable)
}

/// Appends batches to the log stream (the edge's `LogSink` in a cluster).
pub struct StreamSink {
    stream: Arc<dyn LogStream>,
    backlog: Arc<AtomicU64>,
    max_backlog: u64,
    refresher: tokio::task::JoinHandle<()>,
    metrics: Metrics,
    /// Why the last append was refused, until one is stored again.
    refusing: std::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for StreamSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSink")
            .field("backlog", &self.backlog.load(Ordering::Relaxed))
            .finish()
    }
}

impl Drop for StreamSink {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

impl StreamSink {
    /// Appends to `stream`, re-reading its backlog every
    /// `cfg.backlog_refresh`.
    pub fn new(
        stream: Arc<dyn LogStream>,
        cfg: &LogStreamConfig,
        metrics: &gatehouse_runtime::metrics::Metrics,
    ) -> Self {
        let metrics = Metrics::new(metrics);
        let backlog = Arc::new(AtomicU64::new(0));
        let refresher = {
            let (stream, backlog, every) = (stream.clone(), backlog.clone(), cfg.backlog_refresh);
            let gauge = metrics.backlog.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    match stream.backlog().await {
                        Ok(n) => {
                            backlog.store(n, Ordering::Relaxed);
                            gauge.set(i64::try_from(n).unwrap_or(i64::MAX));
                        }
                        Err(e) => tracing::warn!(error = %e, "log stream backlog unknown"),
                    }
                }
            })
        };
        Self {
            stream,
            backlog,
            max_backlog: cfg.max_backlog,
            refresher,
            metrics,
            refusing: std::sync::Mutex::new(None),
        }
    }

    /// Over JetStream (the stream and consumer are created if needed).
    pub async fn jetstream(
        client: async_nats::Client,
        cfg: &LogStreamConfig,
        metrics: &gatehouse_runtime::metrics::Metrics,
    ) -> Result<Self, SinkError> {
        let log = open_jetstream(client, cfg, &ConsumerConfig::default()).await?;
        Ok(Self::new(Arc::new(log), cfg, metrics))
    }

    /// The backlog as last read.
    pub fn backlog(&self) -> u64 {
        self.backlog.load(Ordering::Relaxed)
    }

    /// Why log batches are refused, from the last append until one is
    /// stored again (readiness shows it).
    pub fn refusing(&self) -> Option<String> {
        self.refusing.lock().ok().and_then(|r| r.clone())
    }

    fn refused(&self, why: Option<String>) {
        if let Ok(mut r) = self.refusing.lock() {
            *r = why;
        }
    }
}

#[async_trait]
impl LogSink for StreamSink {
    async fn append(&self, records: LogRecords) -> Result<(), SinkError> {
        if records.is_empty() {
            return Ok(());
        }
        let backlog = self.backlog();
        if backlog >= self.max_backlog {
            self.metrics.count_append("backlog_full");
            self.refused(Some(format!(
                "log stream backlog of {backlog} batches reached cluster.max_log_backlog ({}): log batches refused until ingest catches up",
                self.max_backlog
            )));
            return Err(SinkError::Backpressure);
        }
        let kind = match records {
            LogRecords::Results(_) => LogKind::Results,
            LogRecords::Status(_) => LogKind::Status,
        };
        let id = records.batch_id();
        let payload = gatehouse_bus::events::encode_log_batch(&records);
        match self.stream.append(kind, &id, payload).await {
            Ok(Appended::Stored) => {
                self.metrics.count_append("ok");
                self.refused(None);
                Ok(())
            }
            Ok(Appended::Duplicate) => {
                tracing::debug!(batch = %id, "re-sent log batch dropped by the stream");
                self.metrics.count_append("duplicate");
                Ok(())
            }
            // The stream refuses new batches when full: the agent keeps its
            // buffer and retries.
            Err(StreamError::Full) => {
                self.metrics.count_append("stream_full");
                self.refused(Some(
                    "log stream full (cluster.max_log_stream_bytes or JetStream storage): log batches refused until ingest drains it".into(),
                ));
                Err(SinkError::Backpressure)
            }
            Err(e) => {
                self.metrics.count_append("unavailable");
                Err(unavailable(e))
            }
        }
    }
}

/// The longest pause between attempts while the store cannot write.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How ingest pulls from the stream.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Batches fetched per pull.
    pub fetch: usize,
    /// Batches written to the store at once.
    pub concurrency: usize,
    /// A batch not acknowledged within this is redelivered (an ingest
    /// process died holding it).
    pub ack_wait: Duration,
    /// Delay before a batch whose write failed is redelivered.
    pub retry_delay: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            fetch: 256,
            concurrency: 32,
            ack_wait: Duration::from_secs(60),
            retry_delay: Duration::from_secs(2),
        }
    }
}

/// Pulls batches from JetStream and writes them to `store` until
/// `shutdown` (see [`consume`]).
pub async fn run_consumer(
    client: async_nats::Client,
    store: Arc<dyn Store>,
    stream_cfg: LogStreamConfig,
    cfg: ConsumerConfig,
    observer: Option<Arc<dyn gatehouse_core::ports::LogObserver>>,
    metrics: gatehouse_runtime::metrics::Metrics,
    shutdown: Shutdown,
) -> Result<(), SinkError> {
    let log = open_jetstream(client, &stream_cfg, &cfg).await?;
    tracing::info!(stream = STREAM, consumer = DURABLE, "ingest consuming");
    consume(Arc::new(log), store, cfg, observer, None, metrics, shutdown).await
}

/// Takes batches from `log` and writes them to `store` until `shutdown`;
/// batches in hand at shutdown are finished (written and acknowledged)
/// first. With `forward` active, what one fetch stored is appended to the
/// forward log in a few entries (by log type, up to [`FORWARD_ENTRY_BYTES`]
/// each) before those batches are acknowledged: a failed append hands
/// them back (stored again, idempotently, and appended then).
pub async fn consume(
    log: Arc<dyn LogStream>,
    store: Arc<dyn Store>,
    cfg: ConsumerConfig,
    observer: Option<Arc<dyn gatehouse_core::ports::LogObserver>>,
    forward: Option<crate::Forwarding>,
    metrics: gatehouse_runtime::metrics::Metrics,
    shutdown: Shutdown,
) -> Result<(), SinkError> {
    let metrics = Metrics::new(&metrics);
    // A fetch is never raced against anything (batches delivered to a
    // dropped fetch would wait out the ack wait): it returns within a
    // second, and shutdown and the lag figure are looked at between
    // fetches.
    let mut lag_at: Option<tokio::time::Instant> = None;
    // While the store cannot write (an outage), batches go back to the
    // stream untried and fetching pauses, doubling up to MAX_BACKOFF; the
    // first write that succeeds resumes full speed.
    let mut backoff = cfg.retry_delay;
    let mut down_since: Option<tokio::time::Instant> = None;
    while !shutdown.is_triggered() {
        if lag_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
            if let Ok(n) = log.backlog().await {
                metrics.lag.set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            lag_at = Some(tokio::time::Instant::now());
        }
        let entries = match log.fetch(cfg.fetch, Duration::from_secs(1)).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "log stream fetch failed; retrying");
                tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
        };
        let store_down = std::sync::atomic::AtomicBool::new(false);
        let wrote = std::sync::atomic::AtomicBool::new(false);
        let forward = forward.as_ref().filter(|f| f.is_active());
        let to_forward = std::sync::Mutex::new(Vec::new());
        futures_util::stream::iter(entries)
            .for_each_concurrent(cfg.concurrency, |entry| {
                let store = store.clone();
                let observer = observer.clone();
                let metrics = metrics.clone();
                let retry = cfg.retry_delay;
                let (store_down, wrote, to_forward) = (&store_down, &wrote, &to_forward);
                async move {
                    let records = match gatehouse_bus::events::decode_log_batch(entry.payload.clone()) {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::error!(error = %e, kind = ?entry.kind, "undecodable log batch terminated");
                            metrics.poisoned.inc();
                            if let Err(e) = entry.term().await {
                                tracing::warn!(error = %e, "terminating a log batch failed");
                            }
                            return;
                        }
                    };
                    let result = if store_down.load(Ordering::Relaxed) {
                        Err(None)
                    } else {
                        store.append_logs(&records).await.map_err(Some)
                    };
                    match result {
                        Ok(()) => {
                            wrote.store(true, Ordering::Relaxed);
                            if let Some(o) = &observer {
                                o.observe(&records).await;
                            }
                            metrics.written.inc();
                            metrics.lines.inc_by(records.len() as u64);
                            if forward.is_some() {
                                if let Ok(mut f) = to_forward.lock() {
                                    f.push((records, entry));
                                }
                                return;
                            }
                            if let Err(e) = entry.ack().await {
                                // Delivered again after the ack wait; the
                                // write is idempotent.
                                tracing::warn!(error = %e, "log batch ack failed");
                            }
                        }
                        Err(e) => {
                            if let Some(e) = e {
                                tracing::debug!(error = %e, lines = records.len(), "log batch write failed; will be redelivered");
                                if matches!(e, StoreError::Unavailable(_) | StoreError::Busy | StoreError::DiskLow { .. }) {
                                    store_down.store(true, Ordering::Relaxed);
                                }
                            }
                            metrics.retried.inc();
                            if let Err(e) = entry.nak(retry).await {
                                tracing::warn!(error = %e, "log batch nak failed; redelivered after the ack wait");
                            }
                        }
                    }
                }
            })
            .await;
        if let Some(f) = forward {
            let stored = to_forward.into_inner().unwrap_or_default();
            forward_stored(f, stored, cfg.retry_delay).await;
        }
        if store_down.into_inner() && !wrote.into_inner() {
            if down_since.is_none() {
                tracing::warn!(
                    "the store cannot take log batches; ingest backs off (they wait in the log stream)"
                );
                down_since = Some(tokio::time::Instant::now());
            }
            metrics.backing_off.set(1);
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        } else {
            if let Some(since) = down_since.take() {
                tracing::info!(
                    after_secs = since.elapsed().as_secs(),
                    "the store takes log batches again; ingest catching up"
                );
            }
            metrics.backing_off.set(0);
            backoff = cfg.retry_delay;
        }
    }
    tracing::info!("ingest consumer stopped");
    Ok(())
}

/// Bytes of batches gathered into one forward-log entry, at most (under
/// NATS's default 1 MiB message limit).
pub const FORWARD_ENTRY_BYTES: usize = 512 * 1024;

/// Appends stored batches to the forward log, a few entries per fetch,
/// and acknowledges each entry's batches once it is appended (hands them
/// back otherwise).
async fn forward_stored(f: &crate::Forwarding, stored: Vec<(LogRecords, Entry)>, retry: Duration) {
    let (mut results, mut status) = (Vec::new(), Vec::new());
    for (r, e) in stored {
        match r {
            LogRecords::Results(_) => results.push((r, e)),
            LogRecords::Status(_) => status.push((r, e)),
        }
    }
    for group in [results, status] {
        let mut chunk: Vec<(LogRecords, Entry)> = Vec::new();
        let mut bytes = 0;
        let mut it = group.into_iter().peekable();
        while let Some((r, e)) = it.next() {
            bytes += e.payload.len();
            chunk.push((r, e));
            let full = it
                .peek()
                .is_none_or(|(_, next)| bytes + next.payload.len() > FORWARD_ENTRY_BYTES);
            if full {
                forward_chunk(f, std::mem::take(&mut chunk), retry).await;
                bytes = 0;
            }
        }
    }
}

async fn forward_chunk(f: &crate::Forwarding, chunk: Vec<(LogRecords, Entry)>, retry: Duration) {
    let (records, entries): (Vec<LogRecords>, Vec<Entry>) = chunk.into_iter().unzip();
    let ids: Vec<String> = records.iter().map(LogRecords::batch_id).collect();
    let merged = match records.first() {
        Some(LogRecords::Status(_)) => LogRecords::Status(
            records
                .into_iter()
                .flat_map(|r| match r {
                    LogRecords::Status(s) => s,
                    LogRecords::Results(_) => Vec::new(),
                })
                .collect(),
        ),
        _ => LogRecords::Results(
            records
                .into_iter()
                .flat_map(|r| match r {
                    LogRecords::Results(s) => s,
                    LogRecords::Status(_) => Vec::new(),
                })
                .collect(),
        ),
    };
    // The same batches gathered again (handed back together) are one entry.
    let id = gatehouse_core::ids::sha256_hex(ids.join(",").as_bytes());
    let lines = u32::try_from(merged.len()).unwrap_or(u32::MAX);
    let appended = f
        .log
        .append(
            &id,
            lines,
            gatehouse_bus::events::encode_forward_logs(&merged),
        )
        .await;
    match appended {
        Ok(_) => {
            for e in entries {
                if let Err(e) = e.ack().await {
                    tracing::warn!(error = %e, "log batch ack failed");
                }
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, batches = entries.len(), "appending to the forward log failed; the batches are handed back");
            for e in entries {
                if let Err(e) = e.nak(retry).await {
                    tracing::warn!(error = %e, "log batch nak failed; redelivered after the ack wait");
                }
            }
        }
    }
}

/// `gatehouse.v1.IngestControl` (served on ingest's ops port): the stream
/// backlog and the consumer's lag, read from JetStream at each call.
pub struct Control {
    pub log: JetStreamLog,
    pub clock: Arc<dyn gatehouse_core::time::Clock>,
    /// The ingest instance's metrics (batches written).
    pub metrics: gatehouse_runtime::metrics::Metrics,
}

/// The full name of the ingest control service.
pub const CONTROL_SERVICE: &str = "gatehouse.v1.IngestControl";

impl Control {
    /// The service, for callers `check` accepts (admin bearer tokens).
    pub fn routes(self, check: gatehouse_runtime::grpc::TokenCheck) -> tonic::service::Routes {
        tonic::service::Routes::new(
            gatehouse_proto::v1::ingest_control_server::IngestControlServer::with_interceptor(
                self,
                gatehouse_runtime::grpc::bearer(check),
            ),
        )
    }
}

#[tonic::async_trait]
impl gatehouse_proto::v1::ingest_control_server::IngestControl for Control {
    async fn status(
        &self,
        _: tonic::Request<gatehouse_proto::v1::StatusRequest>,
    ) -> Result<tonic::Response<gatehouse_proto::v1::IngestStatus>, tonic::Status> {
        let s = self
            .log
            .status()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("JetStream: {e}")))?;
        let now = self.clock.now_ms();
        Ok(tonic::Response::new(gatehouse_proto::v1::IngestStatus {
            backlog_messages: s.messages,
            backlog_bytes: s.bytes,
            pending_acks: s.in_hand,
            lag: s.undelivered,
            oldest_unacked_ms: s
                .oldest_ms
                .map_or(0, |at| u64::try_from(now.saturating_sub(at)).unwrap_or(0)),
            batches_written: Metrics::new(&self.metrics).written.get(),
        }))
    }
}
