//! Embedded-store throughput: durable result-log appends (the hot write
//! path: each call is one agent log POST, fsynced before it returns) and
//! host record writes, with 1 and 16 concurrent writers.
//!
//! Run: `cargo bench -p gatehouse-store --bench append`
//! Prints a Markdown table and writes JSON to
//! `target/bench-store-append.json`.
//!
//! A benchmark whose set-up fails has nothing to measure: it unwraps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use gatehouse_core::HostId;
use gatehouse_core::ports::stores::*;
use gatehouse_core::ports::{Fence, Store};
use gatehouse_store::EmbeddedStore;
use gatehouse_store::conformance::{processes_post, sample_host};
use serde_json::json;

fn batch(host: &HostId, round: u64, lines: usize) -> gatehouse_core::model::LogRecords {
    processes_post(host, round, lines, gatehouse_core::time::now_ms())
}

async fn appends(
    store: Arc<dyn Store>,
    writers: usize,
    batches_per_writer: usize,
    lines: usize,
) -> (f64, f64) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let host = HostId::from_identity(&format!("hw:bench-{w}"));
            for r in 0..batches_per_writer {
                let b = batch(&host, r as u64, lines);
                store.append_logs(&b).await.unwrap();
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    let posts = (writers * batches_per_writer) as f64;
    (posts / secs, posts * lines as f64 / secs)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut rows = Vec::new();
        for (writers, lines) in [(1usize, 10usize), (1, 100), (16, 10), (16, 100)] {
            let dir = tempfile::tempdir().unwrap();
            let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
            let per_writer = (4000 / writers / (lines / 10)).max(20);
            let (posts, lines_s) = appends(store, writers, per_writer, lines).await;
            eprintln!("appends writers={writers} lines/post={lines}: {posts:.0} posts/s, {lines_s:.0} lines/s");
            rows.push(json!({"case": "append_logs", "writers": writers, "lines_per_post": lines, "posts_per_s": posts.round(), "lines_per_s": lines_s.round()}));
        }
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mut h = sample_host(1);
        let n = 3000;
        let start = Instant::now();
        for i in 0..n {
            h.id = HostId::from_identity(&format!("hw:h{i}"));
            store.put_host(&h, Fence::NONE).await.unwrap();
        }
        let hosts_s = n as f64 / start.elapsed().as_secs_f64();
        eprintln!("put_host sequential: {hosts_s:.0} writes/s");
        rows.push(json!({"case": "put_host", "writers": 1, "writes_per_s": hosts_s.round()}));
        println!("| case | writers | lines/post | posts/s | lines/s |\n|---|---|---|---|---|");
        for r in &rows {
            println!(
                "| {} | {} | {} | {} | {} |",
                r["case"].as_str().unwrap_or(""),
                r["writers"],
                r.get("lines_per_post").cloned().unwrap_or(json!("-")),
                r.get("posts_per_s").or(r.get("writes_per_s")).cloned().unwrap_or(json!("-")),
                r.get("lines_per_s").cloned().unwrap_or(json!("-")),
            );
        }
        let out = json!({"benchmark": "store-append", "results": rows});
        let _ = std::fs::write("../../target/bench-store-append.json", serde_json::to_vec_pretty(&out).unwrap_or_default());
    });
}
