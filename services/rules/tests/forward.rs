//! An alert reaches the log destinations even when the process dies while
//! firing it: the engine hands it to the forward log before it stores it,
//! so a process that died in between finds no stored alert when the agent
//! sends the same batch again (it was never acknowledged), and fires and
//! forwards it then. Stored first, the re-sent batch would find the alert
//! and skip it, and no destination would ever see it.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use gatehouse_core::HostId;
use gatehouse_core::ports::{
    ForwardBounds, ForwardCursor, ForwardEntry, ForwardError, ForwardLog, Forwarding, Store,
};
use gatehouse_forward::log::{EmbeddedForwardLog, Retention};
use gatehouse_rules::{Engine, RulesConfig};
use gatehouse_runtime::metrics::Metrics;
use gatehouse_store::EmbeddedStore;

/// The forward log of a process that dies at its first append.
struct DiesAtFirstAppend {
    log: Arc<EmbeddedForwardLog>,
    died: AtomicBool,
}

#[async_trait]
impl ForwardLog for DiesAtFirstAppend {
    async fn append(&self, id: &str, lines: u32, payload: Bytes) -> Result<u64, ForwardError> {
        assert!(
            self.died.swap(true, Ordering::SeqCst),
            "the process dies before {id} is appended"
        );
        self.log.append(id, lines, payload).await
    }
    async fn read(&self, from: u64, max: usize) -> Result<Vec<ForwardEntry>, ForwardError> {
        self.log.read(from, max).await
    }
    async fn bounds(&self) -> Result<ForwardBounds, ForwardError> {
        self.log.bounds().await
    }
    async fn wait_for(&self, seq: u64, within: Duration) {
        self.log.wait_for(seq, within).await;
    }
    async fn seek(&self, at_ms: i64) -> Result<ForwardCursor, ForwardError> {
        self.log.seek(at_ms).await
    }
    async fn cursor(&self, reader: &str) -> Result<Option<ForwardCursor>, ForwardError> {
        self.log.cursor(reader).await
    }
    async fn set_cursor(&self, reader: &str, c: ForwardCursor) -> Result<(), ForwardError> {
        self.log.set_cursor(reader, c).await
    }
    async fn health(&self) -> Result<(), ForwardError> {
        self.log.health().await
    }
    async fn setting(&self, key: &str) -> Result<Option<Bytes>, ForwardError> {
        self.log.setting(key).await
    }
    async fn settings(&self, prefix: &str) -> Result<Vec<(String, Bytes)>, ForwardError> {
        self.log.settings(prefix).await
    }
    async fn put_setting(&self, key: &str, value: Option<Bytes>) -> Result<(), ForwardError> {
        self.log.put_setting(key, value).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_fired_when_the_process_died_is_forwarded_after_the_restart() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("store"))?);
    store.put_rule(&support::nc_rule()).await?;
    let log = Arc::new(EmbeddedForwardLog::open(
        &dir.path().join("forward"),
        Retention::default(),
        gatehouse_core::time::system_clock(),
    )?);
    let forwarding = Forwarding {
        log: Arc::new(DiesAtFirstAppend {
            log: log.clone(),
            died: AtomicBool::new(false),
        }),
        active: Arc::new(AtomicBool::new(true)),
    };
    let host = HostId::from_identity("hw:laptop-7");
    let batch = support::listening(&host, "laptop-7");

    let engine = |f: Forwarding| {
        let store = store.clone();
        async move {
            let (engine, deliveries) = Engine::new(store, RulesConfig::default(), &Metrics::new())?;
            assert_eq!(engine.reload().await?, 1);
            engine.forward_to(f);
            anyhow::Ok((engine, deliveries))
        }
    };

    // The process dies while the engine fires the batch's alert.
    let (first, _d1) = engine(forwarding.clone()).await?;
    let lines = batch.clone();
    let died = tokio::spawn(async move { first.on_results(&lines).await }).await;
    assert!(died.is_err_and(|e| e.is_panic()));

    // Restarted; the agent sends the unacknowledged batch again.
    let (second, _d2) = engine(forwarding).await?;
    second.on_results(&batch).await;

    let stored = store.list_alerts(None, 10).await?;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let mut forwarded = Vec::new();
    for e in log.read(0, 10).await? {
        if let gatehouse_bus::events::Forwarded::Events { kind, events } =
            gatehouse_bus::events::decode_forward(e.payload)?
        {
            assert_eq!(kind, "alert");
            forwarded.extend(events.into_iter().map(|ev| ev["id"].clone()));
        }
    }
    assert_eq!(forwarded, [serde_json::json!(stored[0].id)]);
    Ok(())
}
