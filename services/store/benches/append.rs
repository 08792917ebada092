//! Embedded-store throughput: durable result-log appends (the hot write
//! path: each call is one agent log POST, fsynced before it returns) and
//! host record writes, with 1 and 16 concurrent writers; and a sustained
//! case long enough for flushes and compactions to run (2,000,000 lines
//! from 4,096 hosts, 16 writers, 100 lines per POST), which reports the
//! process's CPU per 1,000 lines stored.
//!
//! Run: `cargo bench -p gatehouse-store --bench append` (append
//! `-- sustained` for the sustained case alone, and `--lines N` for
//! another line count than 2,000,000)
//! Prints a Markdown table and writes JSON to
//! `target/bench-store-append.json`.
//!
//! A benchmark whose set-up fails has nothing to measure: it unwraps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use gatehouse_testkit::usage::{cpu_seconds, written_bytes};
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

/// Bytes of the files under `dir`.
fn du(dir: &std::path::Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        n += if m.is_dir() { du(&e.path()) } else { m.len() };
    }
    n
}

const LINES: usize = 2_000_000;
const PER_POST: usize = 100;
const WRITERS: usize = 16;

/// CPU-ms per 1,000 lines of building the POSTs alone (the JSON, its
/// parse into records), which the sustained case then subtracts.
fn building_cost() -> f64 {
    let n = LINES / PER_POST / 20;
    let cpu = cpu_seconds().unwrap();
    for p in 0..n {
        let host = HostId::from_identity(&format!("hw:bench-{}", p % 4096));
        std::hint::black_box(batch(&host, p as u64, PER_POST));
    }
    (cpu_seconds().unwrap() - cpu) * 1000.0 / ((n * PER_POST) as f64 / 1000.0)
}

/// 2,000,000 lines from 4,096 hosts, 16 writers, 100 lines per POST:
/// lines/s, the store's CPU-ms per 1,000 lines (the process's, less what
/// building the POSTs costs), bytes on disk per line, and bytes written to
/// storage per line (journal, flushes and compactions: with the bytes on
/// disk, the write amplification).
async fn sustained(lines: usize) -> (f64, f64, f64, f64) {
    let building = building_cost();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let posts = lines / PER_POST;
    let cpu = cpu_seconds().unwrap();
    let written = written_bytes().unwrap();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for p in (w..posts).step_by(WRITERS) {
                let host = HostId::from_identity(&format!("hw:bench-{}", p % 4096));
                let b = batch(&host, p as u64, PER_POST);
                store.append_logs(&b).await.unwrap();
                if p % 2000 == w {
                    eprint!("\rsustained: {p} of {posts} posts");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds().unwrap() - cpu;
    let written = written_bytes().unwrap() - written;
    drop(store);
    eprintln!();
    (
        lines as f64 / secs,
        cpu * 1000.0 / (lines as f64 / 1000.0) - building,
        du(dir.path()) as f64 / lines as f64,
        written as f64 / lines as f64,
    )
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let args: Vec<String> = std::env::args().collect();
    let only_sustained = args.iter().any(|a| a == "sustained");
    let lines: usize = args
        .iter()
        .position(|a| a == "--lines")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse().expect("--lines takes a number"))
        .unwrap_or(LINES);
    rt.block_on(async {
        let mut rows = Vec::new();
        let short = if only_sustained { &[][..] } else { &[(1usize, 10usize), (1, 100), (16, 10), (16, 100)][..] };
        for &(writers, lines) in short {
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
        let (lines_s, cpu_ms, bytes, written) = sustained(lines).await;
        eprintln!("sustained: {lines_s:.0} lines/s, {cpu_ms:.1} store CPU-ms per 1,000 lines, {bytes:.0} bytes on disk and {written:.0} written per line");
        rows.push(json!({"case": format!("append_logs sustained ({lines} lines, 4,096 hosts)"), "writers": 16, "lines_per_post": 100, "lines_per_s": lines_s.round(), "store_cpu_ms_per_1000_lines": (cpu_ms * 10.0).round() / 10.0, "disk_bytes_per_line": bytes.round(), "written_bytes_per_line": written.round()}));
        println!("| case | writers | lines/post | posts/s | lines/s | store CPU-ms per 1,000 lines | disk bytes per line | bytes written per line |\n|---|---|---|---|---|---|---|---|");
        for r in &rows {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r["case"].as_str().unwrap_or(""),
                r["writers"],
                r.get("lines_per_post").cloned().unwrap_or(json!("-")),
                r.get("posts_per_s").or(r.get("writes_per_s")).cloned().unwrap_or(json!("-")),
                r.get("lines_per_s").cloned().unwrap_or(json!("-")),
                r.get("store_cpu_ms_per_1000_lines").cloned().unwrap_or(json!("-")),
                r.get("disk_bytes_per_line").cloned().unwrap_or(json!("-")),
                r.get("written_bytes_per_line").cloned().unwrap_or(json!("-")),
            );
        }
        let out = json!({"benchmark": "store-append", "results": rows});
        let _ = std::fs::write("../../target/bench-store-append.json", serde_json::to_vec_pretty(&out).unwrap_or_default());
    });
}
