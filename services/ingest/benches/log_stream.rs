//! Throughput of the cluster's durable log path on this machine: edges
//! appending agent log batches to the JetStream stream (each append waits
//! for the publish ack, as the edge does before acknowledging the agent),
//! then ingest draining the stream into the embedded store.
//!
//! A real nats-server 2.15.1 (file storage, one replica) runs on the same
//! 2 cores as the benchmark.
//!
//! Run: `cargo bench -p gatehouse-ingest --bench log_stream`
//! (needs `nats-server`; `scripts/test.sh` installs it). Writes JSON to
//! `target/bench-log-stream.json`.
//!
//! A benchmark whose set-up fails has nothing to measure: it unwraps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_bus::logstream::LogStream;
use gatehouse_bus::nats_test_server::NatsTestServer;
use gatehouse_core::HostId;
use gatehouse_core::ports::{LogSink, Store};
use gatehouse_ingest::jetstream::{self, ConsumerConfig, LogStreamConfig, StreamSink};
use gatehouse_runtime::Shutdown;
use gatehouse_runtime::metrics::Metrics;
use gatehouse_store::EmbeddedStore;
use gatehouse_store::conformance::processes_post;
use serde_json::json;

const WRITERS: usize = 16;
const BATCHES_PER_WRITER: usize = 500;
const LINES: usize = 10;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p / 100.0).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = NatsTestServer::start().unwrap();
        let client = async_nats::connect(server.url()).await.unwrap();
        let cfg = LogStreamConfig {
            max_bytes: 4 * 1024 * 1024 * 1024,
            ..LogStreamConfig::default()
        };
        let sink = Arc::new(
            StreamSink::jetstream(client.clone(), &cfg, &Metrics::new())
                .await
                .unwrap(),
        );
        let now = gatehouse_core::time::now_ms();

        // 1. Edges append (publish + ack), 16 at a time.
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let sink = sink.clone();
            tasks.push(tokio::spawn(async move {
                let host = HostId::from_identity(&format!("hw:stream-bench-{w}"));
                let mut lat = Vec::with_capacity(BATCHES_PER_WRITER);
                for r in 0..BATCHES_PER_WRITER {
                    let b = processes_post(&host, r as u64, LINES, now);
                    let t = Instant::now();
                    sink.append(b).await.unwrap();
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.unwrap_or_default());
        }
        let publish_s = start.elapsed().as_secs_f64();
        lat.sort();
        let batches = (WRITERS * BATCHES_PER_WRITER) as f64;
        eprintln!(
            "append: {:.0} batches/s ({:.0} lines/s), ack p50 {:.2} ms p99 {:.2} ms",
            batches / publish_s,
            batches * LINES as f64 / publish_s,
            pct(&lat, 50.0),
            pct(&lat, 99.0)
        );

        // 2. Ingest drains the backlog into the embedded store (fsynced).
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let log = jetstream::open_jetstream(client.clone(), &cfg, &ConsumerConfig::default())
            .await
            .unwrap();
        let shutdown = Shutdown::new();
        let start = Instant::now();
        let consumer = tokio::spawn(jetstream::run_consumer(
            client.clone(),
            store,
            cfg.clone(),
            ConsumerConfig::default(),
            None,
            Metrics::new(),
            shutdown.clone(),
        ));
        loop {
            let left = log.backlog().await.unwrap_or(u64::MAX);
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let drain_s = start.elapsed().as_secs_f64();
        shutdown.trigger();
        let _ = consumer.await;
        eprintln!(
            "drain into the embedded store: {:.0} batches/s ({:.0} lines/s)",
            batches / drain_s,
            batches * LINES as f64 / drain_s
        );
        let out = json!({
            "benchmark": "log-stream",
            "writers": WRITERS, "batches": batches, "lines_per_batch": LINES,
            "append_batches_per_s": (batches / publish_s).round(),
            "append_lines_per_s": (batches * LINES as f64 / publish_s).round(),
            "append_ack_p50_ms": pct(&lat, 50.0), "append_ack_p99_ms": pct(&lat, 99.0),
            "drain_batches_per_s": (batches / drain_s).round(),
            "drain_lines_per_s": (batches * LINES as f64 / drain_s).round(),
        });
        let _ = std::fs::write(
            "../../target/bench-log-stream.json",
            serde_json::to_vec_pretty(&out).unwrap_or_default(),
        );
        println!("{out}");
    });
}
