//! ingest: makes agent log batches durable and keeps the log store within
//! its retention.
//!
//! In the all-in-one server the edge hands each batch straight to
//! [`DirectSink`], which writes it to the store idempotently (line ids are
//! content hashes, so a re-sent batch overwrites itself), appends it to the
//! forward log when log destinations are configured, and returns only
//! once both are durable. A bounded number of batches may be in flight;
//! past that the sink answers `Backpressure` and the edge tells the agent
//! to keep its buffer and retry, so overload never loses a line.
//!
//! In a cluster the edge appends to a JetStream stream instead and ingest
//! consumes it ([`jetstream`]).

pub mod jetstream;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gatehouse_bus::logstream::LogStream;
use gatehouse_core::model::LogRecords;
use gatehouse_core::ports::{LogObserver, LogSink, SinkError, Store};
use gatehouse_core::time::{now_ms, unix_day};
use gatehouse_runtime::Shutdown;
use tokio::sync::Semaphore;

#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Batches written concurrently before new ones wait.
    pub max_in_flight: usize,
    /// How long a batch waits for a slot before the agent is told to retry.
    pub admission_wait: Duration,
    /// Days of result and status logs kept (by agent time); 0 keeps all.
    pub retention_days: u32,
    pub retention_interval: Duration,
    /// How ingest reads the log stream, when there is one.
    pub consumer: jetstream::ConsumerConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 64,
            admission_wait: Duration::from_secs(5),
            retention_days: 30,
            retention_interval: Duration::from_secs(3600),
            consumer: jetstream::ConsumerConfig::default(),
        }
    }
}

pub use gatehouse_core::ports::Forwarding;

/// Writes batches straight to the store.
pub struct DirectSink {
    store: Arc<dyn Store>,
    observer: Option<Arc<dyn LogObserver>>,
    forward: Option<Forwarding>,
    slots: Semaphore,
    admission_wait: Duration,
}

impl std::fmt::Debug for DirectSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectSink")
            .field("free_slots", &self.slots.available_permits())
            .finish()
    }
}

impl DirectSink {
    pub fn new(store: Arc<dyn Store>, cfg: &IngestConfig) -> Self {
        Self {
            store,
            observer: None,
            forward: None,
            slots: Semaphore::new(cfg.max_in_flight.max(1)),
            admission_wait: cfg.admission_wait,
        }
    }

    /// Shows every durable batch to `observer` (the rule engine) before
    /// the agent is acknowledged.
    pub fn with_observer(mut self, observer: Arc<dyn LogObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Appends every stored batch to `forward` (for the log destinations)
    /// before the agent is acknowledged.
    pub fn with_forward(mut self, forward: Forwarding) -> Self {
        self.forward = Some(forward);
        self
    }
}

#[async_trait]
impl LogSink for DirectSink {
    async fn append(&self, records: LogRecords) -> Result<(), SinkError> {
        let _slot = match tokio::time::timeout(self.admission_wait, self.slots.acquire()).await {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) => return Err(SinkError::Unavailable("sink closed".into())),
            Err(_) => return Err(SinkError::Backpressure),
        };
        self.store
            .append_logs(&records)
            .await
            .map_err(|e| SinkError::Unavailable(e.to_string()))?;
        // Only while a destination is defined (checked before the batch
        // is encoded): otherwise every line would be written twice.
        if let Some(f) = self.forward.as_ref().filter(|f| f.is_active()) {
            // Stored already: a re-sent batch after a failure here is
            // stored once and appended once (same id).
            let lines = u32::try_from(records.len()).unwrap_or(u32::MAX);
            f.append(
                &records.batch_id(),
                lines,
                gatehouse_bus::events::encode_forward_logs(&records),
            )
            .await
            .map_err(|e| SinkError::Unavailable(e.to_string()))?;
        }
        if let Some(o) = &self.observer {
            o.observe(&records).await;
        }
        Ok(())
    }
}

/// What ingest runs over.
pub struct IngestDeps {
    pub store: Arc<dyn Store>,
    /// The durable log stream to drain into the store (a cluster); `None`
    /// when the edge stores batches itself ([`DirectSink`], the all-in-one).
    pub log: Option<Arc<dyn LogStream>>,
    /// Sees every batch ingest stores (the rule engine).
    pub observer: Option<Arc<dyn LogObserver>>,
    /// Where stored batches drained from the stream are appended for the
    /// log destinations (the cluster's forward log).
    pub forward: Option<Forwarding>,
    pub metrics: gatehouse_runtime::metrics::Metrics,
}

/// Runs ingest until `shutdown`: keeps the log store within its retention
/// and, given a stream, drains it into the store (batches in hand at
/// shutdown are finished first).
pub async fn run(cfg: IngestConfig, deps: IngestDeps, shutdown: Shutdown) -> Result<(), SinkError> {
    let IngestDeps {
        store,
        log,
        observer,
        forward,
        metrics,
    } = deps;
    let consumer = cfg.consumer.clone();
    let retention = run_retention(store.clone(), cfg, shutdown.clone());
    match log {
        Some(log) => {
            tracing::info!(
                stream = jetstream::STREAM,
                consumer = jetstream::DURABLE,
                "ingest consuming"
            );
            let drain =
                jetstream::consume(log, store, consumer, observer, forward, metrics, shutdown);
            let (r, ()) = tokio::join!(drain, retention);
            r
        }
        None => {
            retention.await;
            Ok(())
        }
    }
}

/// Deletes log days older than the retention, every `retention_interval`.
pub async fn run_retention(store: Arc<dyn Store>, cfg: IngestConfig, shutdown: Shutdown) {
    if cfg.retention_days == 0 {
        return;
    }
    if store.expires_by_ttl() {
        tracing::info!(
            retention_days = cfg.retention_days,
            "the store expires log lines by TTL; no purge job"
        );
        return;
    }
    let mut tick = tokio::time::interval(cfg.retention_interval);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        let today = unix_day(now_ms() / 1000);
        let cutoff = today.saturating_sub(cfg.retention_days);
        match store.purge_logs_before_day(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                removed = n,
                cutoff_day = cutoff,
                "retention purged log lines"
            ),
            Err(e) => tracing::warn!(error = %e, "retention purge failed"),
        }
    }
}
