//! The durable log path against a real nats-server with JetStream: edge
//! sink → stream → ingest consumer → store, with duplicates, backpressure,
//! a crashed consumer and a poison batch.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_bus::logstream::LogStream;
use gatehouse_bus::nats_test_server::NatsTestServer;
use gatehouse_core::HostId;
use gatehouse_core::model::ResultFilter;
use gatehouse_core::ports::{LogSink, SinkError, Store};
use gatehouse_ingest::jetstream::{
    self, ConsumerConfig, LogStreamConfig, STREAM, SUBJECT_RESULTS, StreamSink,
};
use gatehouse_runtime::Shutdown;
use gatehouse_runtime::metrics::Metrics;
use gatehouse_store::EmbeddedStore;
use gatehouse_store::conformance::processes_post;

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    // Display, not Debug: the error says what failed in words.
    match r {
        Ok(v) => v,
        Err(e) => panic!("call failed: {e}"),
    }
}

struct Rig {
    _server: NatsTestServer,
    client: async_nats::Client,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

async fn rig() -> Rig {
    let server = ok(NatsTestServer::start());
    let client = ok(async_nats::connect(server.url()).await);
    let dir = ok(tempfile::tempdir());
    let store: Arc<dyn Store> = Arc::new(ok(EmbeddedStore::open(dir.path())));
    Rig {
        _server: server,
        client,
        store,
        _dir: dir,
    }
}

fn stream_cfg() -> LogStreamConfig {
    LogStreamConfig {
        backlog_refresh: Duration::from_millis(50),
        max_bytes: 256 * 1024 * 1024,
        ..LogStreamConfig::default()
    }
}

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

/// The log stream as ingest sees it.
async fn log_of(r: &Rig) -> gatehouse_bus::logstream::JetStreamLog {
    ok(
        jetstream::open_jetstream(r.client.clone(), &stream_cfg(), &ConsumerConfig::default())
            .await,
    )
}

async fn wait_for(what: &str, f: impl AsyncFnMut() -> bool) {
    gatehouse_testkit::until(what, Duration::from_secs(15), f).await;
}

fn start_consumer(r: &Rig, cfg: ConsumerConfig) -> (Shutdown, tokio::task::JoinHandle<()>) {
    let shutdown = Shutdown::new();
    let task = tokio::spawn(jetstream::run_consumer(
        r.client.clone(),
        r.store.clone(),
        stream_cfg(),
        cfg,
        None,
        Metrics::new(),
        shutdown.clone(),
    ));
    let join = tokio::spawn(async move {
        ok(ok(task.await));
    });
    (shutdown, join)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_flow_from_the_edge_sink_to_the_store_once() {
    let r = rig().await;
    let sink = ok(StreamSink::jetstream(r.client.clone(), &stream_cfg(), &Metrics::new()).await);
    let hosts: Vec<HostId> = (0..3)
        .map(|n| HostId::from_identity(&format!("hw:js-{n}")))
        .collect();
    let now = gatehouse_core::time::now_ms();
    let batches: Vec<_> = hosts
        .iter()
        .map(|h| processes_post(h, 1, 10, now))
        .collect();
    for b in &batches {
        ok(sink.append(b.clone()).await);
    }
    // The agent re-sends the first batch (its acknowledgement was lost).
    ok(sink.append(batches[0].clone()).await);
    let js = async_nats::jetstream::new(r.client.clone());
    let mut stream = ok(js.get_stream(STREAM).await);
    assert_eq!(
        ok(stream.info().await).state.last_sequence,
        3,
        "the re-sent batch was dropped by the duplicate window"
    );

    let (shutdown, join) = start_consumer(&r, ConsumerConfig::default());
    for h in &hosts {
        wait_for("lines in the store", async || {
            lines_of(&r.store, h).await == 10
        })
        .await;
    }
    wait_for("an empty backlog", async || {
        ok(log_of(&r).await.backlog().await) == 0
    })
    .await;
    assert_eq!(ok(log_of(&r).await.lag().await), 0);
    shutdown.trigger();
    ok(join.await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_push_back_past_the_backlog_limit() {
    let r = rig().await;
    let cfg = LogStreamConfig {
        max_backlog: 2,
        ..stream_cfg()
    };
    let sink = ok(StreamSink::jetstream(r.client.clone(), &cfg, &Metrics::new()).await);
    let host = HostId::from_identity("hw:js-bp");
    let now = gatehouse_core::time::now_ms();
    ok(sink.append(processes_post(&host, 1, 5, now)).await);
    ok(sink.append(processes_post(&host, 2, 5, now)).await);
    wait_for("the backlog to be seen", async || sink.backlog() >= 2).await;
    let third = processes_post(&host, 3, 5, now);
    assert!(matches!(
        sink.append(third.clone()).await,
        Err(SinkError::Backpressure)
    ));
    // Ingest catches up; the agent's retry is accepted.
    let (shutdown, join) = start_consumer(&r, ConsumerConfig::default());
    wait_for("the backlog to drain", async || sink.backlog() == 0).await;
    ok(sink.append(third).await);
    wait_for("all 15 lines", async || {
        lines_of(&r.store, &host).await == 15
    })
    .await;
    shutdown.trigger();
    ok(join.await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_held_by_a_crashed_ingest_is_redelivered() {
    let r = rig().await;
    let sink = ok(StreamSink::jetstream(r.client.clone(), &stream_cfg(), &Metrics::new()).await);
    let host = HostId::from_identity("hw:js-crash");
    ok(sink
        .append(processes_post(&host, 1, 7, gatehouse_core::time::now_ms()))
        .await);
    let cfg = ConsumerConfig {
        ack_wait: Duration::from_secs(1),
        ..ConsumerConfig::default()
    };
    // An ingest process takes the batch and dies before acknowledging it.
    let log = ok(jetstream::open_jetstream(r.client.clone(), &stream_cfg(), &cfg).await);
    let held = ok(log.fetch(1, Duration::from_secs(5)).await);
    assert_eq!(held.len(), 1, "the batch was delivered");
    drop(held);
    assert_eq!(lines_of(&r.store, &host).await, 0);
    // Another ingest gets it once the ack wait has passed.
    let (shutdown, join) = start_consumer(&r, cfg);
    wait_for("the redelivered batch", async || {
        lines_of(&r.store, &host).await == 7
    })
    .await;
    shutdown.trigger();
    ok(join.await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_batch_is_terminated_and_the_rest_flows() {
    let r = rig().await;
    let sink = ok(StreamSink::jetstream(r.client.clone(), &stream_cfg(), &Metrics::new()).await);
    let js = async_nats::jetstream::new(r.client.clone());
    ok(ok(js.publish(SUBJECT_RESULTS, "not a batch".into()).await).await);
    let host = HostId::from_identity("hw:js-poison");
    ok(sink
        .append(processes_post(&host, 1, 4, gatehouse_core::time::now_ms()))
        .await);
    let (shutdown, join) = start_consumer(&r, ConsumerConfig::default());
    wait_for("the good batch", async || {
        lines_of(&r.store, &host).await == 4
    })
    .await;
    wait_for("the stream to empty", async || {
        ok(log_of(&r).await.backlog().await) == 0
    })
    .await;
    shutdown.trigger();
    ok(join.await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_pushes_back_instead_of_dropping() {
    let r = rig().await;
    let cfg = LogStreamConfig {
        max_bytes: 16 * 1024,
        ..stream_cfg()
    };
    let sink = ok(StreamSink::jetstream(r.client.clone(), &cfg, &Metrics::new()).await);
    let host = HostId::from_identity("hw:js-full");
    let now = gatehouse_core::time::now_ms();
    let mut accepted = 0;
    let mut refused = None;
    for round in 0..20 {
        match sink.append(processes_post(&host, round, 5, now)).await {
            Ok(()) => accepted += 5,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert!(
        matches!(refused, Some(SinkError::Backpressure)),
        "{refused:?} after {accepted} lines"
    );
    // Nothing accepted was dropped to make room.
    let (shutdown, join) = start_consumer(&r, ConsumerConfig::default());
    wait_for("every accepted line", async || {
        lines_of(&r.store, &host).await == accepted
    })
    .await;
    shutdown.trigger();
    ok(join.await);
}
