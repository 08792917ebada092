//! The cluster's durable log path over NATS JetStream.
//!
//! - [`JetStreamSink`] (in edges): appends each agent log batch to the
//!   `GATEHOUSE_LOGS` stream with a deterministic message id
//!   ([`LogRecords::batch_id`]), and returns only after the stream's publish
//!   ack, so the edge acknowledges the agent only once the batch is stored
//!   (replicated, with `replicas` > 1). A re-sent batch inside the
//!   duplicate window is dropped by JetStream. Past `max_backlog` unconsumed
//!   batches, or when the stream is full, it answers `Backpressure`: the
//!   agent keeps its buffer and retries.
//! - [`run_consumer`] (in ingest): pulls batches through the durable
//!   consumer `ingest` (every ingest process shares it), writes each to the
//!   store (idempotent by line id) and acknowledges only after the write.
//!   A batch whose write fails is redelivered; one that cannot be decoded
//!   is terminated and logged, never retried forever.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{AckKind, Context};
use async_trait::async_trait;
use futures_util::StreamExt;
use gatehouse_core::model::LogRecords;
use gatehouse_core::ports::{LogSink, SinkError, Store};
use gatehouse_runtime::Shutdown;

pub const STREAM: &str = "GATEHOUSE_LOGS";
pub const SUBJECT_RESULTS: &str = "gatehouse.logs.result";
pub const SUBJECT_STATUS: &str = "gatehouse.logs.status";
pub const DURABLE: &str = "ingest";

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
}

fn metrics() -> &'static Metrics {
    use gatehouse_runtime::metrics::{counter, gauge, register};
    static M: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        let appends = prometheus_client::metrics::family::Family::default();
        register(
            "log_stream_appends",
            "Log batches edges appended to the stream, by outcome",
            &appends,
        );
        Metrics {
            appends,
            backlog: gauge(
                "log_stream_backlog",
                "Unconsumed log batches, as an edge last read it",
            ),
            written: counter(
                "ingest_batches_written",
                "Log batches ingest wrote to the store",
            ),
            lines: counter(
                "ingest_lines_written",
                "Log lines ingest wrote to the store",
            ),
            retried: counter(
                "ingest_batches_retried",
                "Log batches whose store write failed (redelivered)",
            ),
            poisoned: counter(
                "ingest_batches_terminated",
                "Undecodable log batches dropped",
            ),
            lag: gauge(
                "ingest_lag_batches",
                "Batches waiting for ingest (pending plus unacknowledged)",
            ),
        }
    })
}

fn count_append(outcome: &str) {
    metrics()
        .appends
        .get_or_create(&gatehouse_runtime::metrics::RequestLabels {
            endpoint: "log_stream".into(),
            outcome: outcome.into(),
        })
        .inc();
}

fn unavailable(e: impl std::fmt::Display) -> SinkError {
    SinkError::Unavailable(format!("log stream: {e}"))
}

/// Creates the stream if it does not exist (every edge and ingest does
/// this at start; the first one wins, the others find it).
pub async fn ensure_stream(
    js: &Context,
    cfg: &LogStreamConfig,
) -> Result<stream::Stream, SinkError> {
    js.get_or_create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec![SUBJECT_RESULTS.into(), SUBJECT_STATUS.into()],
        // A batch leaves the stream once ingest acknowledged it.
        retention: RetentionPolicy::WorkQueue,
        // Full means refuse (the agent keeps the batch), never drop old ones.
        discard: DiscardPolicy::New,
        storage: StorageType::File,
        num_replicas: cfg.replicas,
        max_bytes: cfg.max_bytes,
        duplicate_window: cfg.duplicate_window,
        ..Default::default()
    })
    .await
    .map_err(unavailable)
}

/// Unconsumed batches: everything still in the (work-queue) stream.
pub async fn backlog(js: &Context) -> Result<u64, SinkError> {
    let mut s = js.get_stream(STREAM).await.map_err(unavailable)?;
    Ok(s.info().await.map_err(unavailable)?.state.messages)
}

/// Appends batches to the log stream (the edge's `LogSink` in a cluster).
pub struct JetStreamSink {
    js: Context,
    backlog: Arc<AtomicU64>,
    max_backlog: u64,
    refresher: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for JetStreamSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamSink")
            .field("backlog", &self.backlog.load(Ordering::Relaxed))
            .finish()
    }
}

impl Drop for JetStreamSink {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

impl JetStreamSink {
    pub async fn new(client: async_nats::Client, cfg: &LogStreamConfig) -> Result<Self, SinkError> {
        let js = async_nats::jetstream::new(client);
        ensure_stream(&js, cfg).await?;
        let backlog = Arc::new(AtomicU64::new(0));
        let refresher = {
            let (js, backlog, every) = (js.clone(), backlog.clone(), cfg.backlog_refresh);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    match self::backlog(&js).await {
                        Ok(n) => {
                            backlog.store(n, Ordering::Relaxed);
                            metrics().backlog.set(i64::try_from(n).unwrap_or(i64::MAX));
                        }
                        Err(e) => tracing::warn!(error = %e, "log stream backlog unknown"),
                    }
                }
            })
        };
        Ok(Self {
            js,
            backlog,
            max_backlog: cfg.max_backlog,
            refresher,
        })
    }

    /// The backlog as last read.
    pub fn backlog(&self) -> u64 {
        self.backlog.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl LogSink for JetStreamSink {
    async fn append(&self, records: LogRecords) -> Result<(), SinkError> {
        if records.is_empty() {
            return Ok(());
        }
        if self.backlog() >= self.max_backlog {
            count_append("backlog_full");
            return Err(SinkError::Backpressure);
        }
        let subject = match records {
            LogRecords::Results(_) => SUBJECT_RESULTS,
            LogRecords::Status(_) => SUBJECT_STATUS,
        };
        let id = records.batch_id();
        let payload = serde_json::to_vec(&records).map_err(unavailable)?;
        let ack = self
            .js
            .send_publish(
                subject,
                PublishMessage::build()
                    .payload(payload.into())
                    .message_id(&id),
            )
            .await
            .map_err(unavailable)?;
        match ack.await {
            Ok(a) => {
                if a.duplicate {
                    tracing::debug!(batch = %id, "re-sent log batch dropped by the stream");
                    count_append("duplicate");
                } else {
                    count_append("ok");
                }
                Ok(())
            }
            // JetStream refuses new messages when the stream is full
            // (discard new: "maximum bytes exceeded", API error 10077, which
            // async-nats files as `Other` with the API error as source): the
            // agent keeps its buffer and retries.
            // `a_full_stream_pushes_back_instead_of_dropping` pins it against
            // the server version the tests run.
            Err(e) if stream_cannot_store(&e) => {
                count_append("stream_full");
                Err(SinkError::Backpressure)
            }
            Err(e) => {
                count_append("unavailable");
                Err(unavailable(e))
            }
        }
    }
}

/// The stream refused to store a message (full, or its store failed): by
/// the server's error code, never by its words.
fn stream_cannot_store(e: &async_nats::jetstream::context::PublishError) -> bool {
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

/// The shared durable consumer (created on first use).
pub async fn consumer(js: &Context, cfg: &ConsumerConfig) -> Result<PullConsumer, SinkError> {
    let stream = js.get_stream(STREAM).await.map_err(unavailable)?;
    stream
        .get_or_create_consumer(
            DURABLE,
            pull::Config {
                durable_name: Some(DURABLE.into()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: cfg.ack_wait,
                max_ack_pending: i64::try_from(cfg.fetch * 4).unwrap_or(1024),
                ..Default::default()
            },
        )
        .await
        .map_err(unavailable)
}

/// Batches waiting for ingest: not yet delivered plus delivered and not
/// acknowledged. The number to scale ingest on.
pub async fn lag(js: &Context, cfg: &ConsumerConfig) -> Result<u64, SinkError> {
    let mut c = consumer(js, cfg).await?;
    let info = c.info().await.map_err(unavailable)?;
    Ok(info.num_pending + info.num_ack_pending as u64)
}

/// Pulls batches and writes them to `store` until `shutdown`; batches in
/// hand at shutdown are finished (written and acknowledged) first.
pub async fn run_consumer(
    client: async_nats::Client,
    store: Arc<dyn Store>,
    stream_cfg: LogStreamConfig,
    cfg: ConsumerConfig,
    observer: Option<Arc<dyn gatehouse_core::ports::LogObserver>>,
    shutdown: Shutdown,
) -> Result<(), SinkError> {
    let js = async_nats::jetstream::new(client);
    ensure_stream(&js, &stream_cfg).await?;
    let consumer = consumer(&js, &cfg).await?;
    tracing::info!(stream = STREAM, consumer = DURABLE, "ingest consuming");
    let mut lag_tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        let batch = tokio::select! {
            _ = shutdown.wait() => break,
            _ = lag_tick.tick() => {
                if let Ok(n) = lag(&js, &cfg).await {
                    metrics().lag.set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                continue;
            }
            b = consumer
                .fetch()
                .max_messages(cfg.fetch)
                .expires(Duration::from_secs(1))
                .messages() => b,
        };
        let messages = match batch {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "log stream fetch failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        messages
            .for_each_concurrent(cfg.concurrency, |m| {
                let store = store.clone();
                let observer = observer.clone();
                let retry = cfg.retry_delay;
                async move {
                    let m = match m {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!(error = %e, "log stream message error");
                            return;
                        }
                    };
                    let records: LogRecords = match serde_json::from_slice(&m.payload) {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::error!(error = %e, subject = %m.subject, "undecodable log batch terminated");
                            metrics().poisoned.inc();
                            let _ = m.ack_with(AckKind::Term).await;
                            return;
                        }
                    };
                    match store.append_logs(&records).await {
                        Ok(()) => {
                            if let Some(o) = &observer {
                                o.observe(&records).await;
                            }
                            metrics().written.inc();
                            metrics().lines.inc_by(records.len() as u64);
                            if let Err(e) = m.ack().await {
                                // Redelivered after ack_wait; the write is idempotent.
                                tracing::warn!(error = %e, "log batch ack failed");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, lines = records.len(), "log batch write failed; will be redelivered");
                            metrics().retried.inc();
                            let _ = m.ack_with(AckKind::Nak(Some(retry))).await;
                        }
                    }
                }
            })
            .await;
    }
    tracing::info!("ingest consumer stopped");
    Ok(())
}

/// `gatehouse.v1.IngestControl` (served on ingest's ops port): the stream
/// backlog and the consumer's lag, read from JetStream at each call.
pub struct Control {
    pub js: Context,
    pub cfg: ConsumerConfig,
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
        let down =
            |e: &dyn std::fmt::Display| tonic::Status::unavailable(format!("JetStream: {e}"));
        let mut stream = self.js.get_stream(STREAM).await.map_err(|e| down(&e))?;
        let state = stream.info().await.map_err(|e| down(&e))?.state.clone();
        let mut c = consumer(&self.js, &self.cfg).await.map_err(|e| down(&e))?;
        let info = c.info().await.map_err(|e| down(&e))?;
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let oldest_ms = if state.messages == 0 {
            0
        } else {
            u64::try_from((now_ns - state.first_timestamp.unix_timestamp_nanos()) / 1_000_000)
                .unwrap_or(0)
        };
        Ok(tonic::Response::new(gatehouse_proto::v1::IngestStatus {
            backlog_messages: state.messages,
            backlog_bytes: state.bytes,
            pending_acks: info.num_ack_pending as u64,
            lag: info.num_pending,
            oldest_unacked_ms: oldest_ms,
            batches_written: metrics().written.get(),
        }))
    }
}
