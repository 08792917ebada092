//! The durable log path over the in-process log stream: the same sink and
//! consumer as the cluster's, with redelivery driven by a moved clock
//! instead of a real ack wait.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_bus::logstream::{InProcLog, LogStream, StreamConfig};
use gatehouse_core::HostId;
use gatehouse_core::model::ResultFilter;
use gatehouse_core::ports::{LogSink, SinkError, Store};
use gatehouse_core::time::{Clock, ShiftedClock};
use gatehouse_ingest::jetstream::{ConsumerConfig, LogStreamConfig, StreamSink, consume};
use gatehouse_runtime::Shutdown;
use gatehouse_runtime::metrics::Metrics;
use gatehouse_store::EmbeddedStore;
use gatehouse_store::conformance::processes_post;

async fn lines_of(store: &Arc<dyn Store>, host: &HostId) -> usize {
    ok(store
        .query_results(&ResultFilter {
            host_id: Some(host.clone()),
            name: None,
            since: 0,
            until: i64::MAX,
            limit: 10_000,
            ..Default::default()
        })
        .await)
    .len()
}

struct Rig {
    log: Arc<InProcLog>,
    clock: Arc<ShiftedClock>,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    // Display, not Debug: the error says what failed in words.
    match r {
        Ok(v) => v,
        Err(e) => panic!("call failed: {e}"),
    }
}

/// An ingest draining the rig's log into its store.
struct Ingest {
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<Result<(), gatehouse_core::ports::SinkError>>,
}

impl Ingest {
    fn start(r: &Rig, metrics: &Metrics) -> Self {
        let shutdown = Shutdown::new();
        let task = tokio::spawn(consume(
            r.log.clone(),
            r.store.clone(),
            ConsumerConfig::default(),
            None,
            None,
            metrics.clone(),
            shutdown.clone(),
        ));
        Self { shutdown, task }
    }

    /// Stops it (batches in hand are finished first).
    async fn stop(self) {
        self.shutdown.trigger();
        ok(ok(self.task.await));
    }
}

fn rig(stream: StreamConfig) -> Rig {
    let clock = Arc::new(ShiftedClock::new());
    let dir = ok(tempfile::tempdir());
    Rig {
        log: Arc::new(InProcLog::new(stream, clock.clone())),
        clock,
        store: Arc::new(ok(EmbeddedStore::open(dir.path()))),
        _dir: dir,
    }
}

fn sink_cfg() -> LogStreamConfig {
    LogStreamConfig {
        backlog_refresh: Duration::from_millis(20),
        ..LogStreamConfig::default()
    }
}

#[tokio::test]
async fn batches_flow_once_and_a_crashed_consumers_batch_comes_back_after_the_ack_wait() {
    let r = rig(StreamConfig {
        ack_wait: Duration::from_secs(30),
        ..StreamConfig::default()
    });
    let metrics = Metrics::new();
    let sink = StreamSink::new(r.log.clone(), &sink_cfg(), &metrics);
    let host = HostId::from_identity("hw:inproc-1");
    let now = r.clock.now_ms();
    let batch = processes_post(&host, 1, 10, now);
    sink.append(batch.clone()).await.unwrap();
    // The agent re-sends it (its acknowledgement was lost): dropped.
    sink.append(batch).await.unwrap();
    assert_eq!(r.log.backlog().await.unwrap(), 1);

    // An ingest takes the batch and dies before acknowledging it.
    let held = r.log.fetch(10, Duration::ZERO).await.unwrap();
    assert_eq!(held.len(), 1);
    drop(held);
    assert!(r.log.fetch(10, Duration::ZERO).await.unwrap().is_empty());

    // Past the ack wait another ingest gets it and writes it once.
    r.clock.advance(Duration::from_secs(31));
    let ingest = Ingest::start(&r, &metrics);
    gatehouse_testkit::until("the batch stored", Duration::from_secs(10), async || {
        r.log.backlog().await.unwrap() == 0
    })
    .await;
    assert_eq!(lines_of(&r.store, &host).await, 10);
    // This instance's counts, exactly: one batch stored, its re-send
    // dropped, one batch of ten lines written.
    let text = metrics.render();
    for line in [
        "gatehouse_log_stream_appends_total{endpoint=\"log_stream\",outcome=\"ok\"} 1",
        "gatehouse_log_stream_appends_total{endpoint=\"log_stream\",outcome=\"duplicate\"} 1",
        "gatehouse_ingest_batches_written_total 1",
        "gatehouse_ingest_lines_written_total 10",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    ingest.stop().await;
}

#[tokio::test]
async fn a_full_log_pushes_back_and_an_undecodable_batch_is_terminated() {
    let r = rig(StreamConfig {
        max_bytes: 4 * 1024,
        ..StreamConfig::default()
    });
    // A batch no ingest can decode sits first in the log.
    let poison = r
        .log
        .append(
            gatehouse_bus::logstream::LogKind::Results,
            "poison",
            bytes::Bytes::from_static(b"not a batch"),
        )
        .await;
    assert!(poison.is_ok());
    let metrics = Metrics::new();
    let sink = StreamSink::new(r.log.clone(), &sink_cfg(), &metrics);
    let host = HostId::from_identity("hw:inproc-full");
    let now = r.clock.now_ms();
    let mut accepted = 0;
    let mut refused = false;
    for n in 0..50 {
        match sink.append(processes_post(&host, n, 5, now)).await {
            Ok(()) => accepted += 1,
            Err(SinkError::Backpressure) => {
                refused = true;
                break;
            }
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert!(refused, "the full log refused a batch");
    assert!(accepted > 0);

    let ingest = Ingest::start(&r, &metrics);
    gatehouse_testkit::until("the log drained", Duration::from_secs(10), async || {
        r.log.backlog().await.unwrap() == 0
    })
    .await;
    assert_eq!(lines_of(&r.store, &host).await, accepted * 5);
    ingest.stop().await;
}

/// A batch an edge of the previous release appended as JSON (still in the
/// stream during a rolling upgrade) is stored like a protobuf one.
#[tokio::test]
async fn a_json_batch_from_an_older_edge_is_still_ingested() {
    let r = rig(StreamConfig::default());
    let host = HostId::from_identity("hw:legacy-edge");
    let batch = processes_post(&host, 1, 4, r.clock.now_ms());
    let legacy = bytes::Bytes::from(ok(serde_json::to_vec(&batch)));
    ok(r.log
        .append(
            gatehouse_bus::logstream::LogKind::Results,
            &batch.batch_id(),
            legacy,
        )
        .await);
    let metrics = Metrics::new();
    let ingest = Ingest::start(&r, &metrics);
    gatehouse_testkit::until("the batch stored", Duration::from_secs(10), async || {
        r.log.backlog().await.unwrap() == 0
    })
    .await;
    assert_eq!(lines_of(&r.store, &host).await, 4);
    assert!(
        metrics
            .render()
            .lines()
            .any(|l| l == "gatehouse_ingest_batches_terminated_total 0"),
        "{}",
        metrics.render()
    );
    ingest.stop().await;
}
