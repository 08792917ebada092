//! Embedded-store throughput: durable result-log appends (the hot write
//! path: each call is one agent log POST, fsynced before it returns) and
//! host record writes, with 1 and 16 concurrent writers.
//!
//! Run: `cargo bench -p gatehouse-store --bench append`
//! Prints a Markdown table and writes JSON to
//! `target/bench-store-append.json`.

use std::sync::Arc;
use std::time::Instant;

use gatehouse_core::HostId;
use gatehouse_core::logs::records;
use gatehouse_core::ports::Store;
use gatehouse_core::wire::{parse_log, parse_object};
use gatehouse_store::EmbeddedStore;
use serde_json::json;

fn batch(host: &HostId, round: u64, lines: usize) -> gatehouse_core::model::LogRecords {
    let now = gatehouse_core::time::now_ms();
    let data: Vec<_> = (0..lines)
        .map(|i| {
            json!({"name": "pack_inventory_processes", "hostIdentifier": "web-01", "calendarTime": "Tue Jun  4 10:20:31 2024 UTC",
                   "unixTime": now / 1000, "epoch": 0, "counter": round, "numerics": false,
                   "decorations": {"host_uuid": host.as_str()},
                   "columns": {"pid": format!("{}", round * 1000 + i as u64), "name": "sshd", "path": "/usr/sbin/sshd",
                               "cmdline": "/usr/sbin/sshd -D", "uid": "0", "resident_size": "8192000"},
                   "action": "added"})
        })
        .collect();
    let body = serde_json::to_vec(&json!({"log_type": "result", "data": data})).unwrap_or_default();
    let req = parse_log(parse_object(&body).unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
    records(host, req, now)
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
                store
                    .append_logs(&b)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
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
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let mut rows = Vec::new();
        for (writers, lines) in [(1usize, 10usize), (1, 100), (16, 10), (16, 100)] {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}")));
            let per_writer = (4000 / writers / (lines / 10)).max(20);
            let (posts, lines_s) = appends(store, writers, per_writer, lines).await;
            eprintln!("appends writers={writers} lines/post={lines}: {posts:.0} posts/s, {lines_s:.0} lines/s");
            rows.push(json!({"case": "append_logs", "writers": writers, "lines_per_post": lines, "posts_per_s": posts.round(), "lines_per_s": lines_s.round()}));
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = EmbeddedStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let mut h = gatehouse_store_bench_host();
        let n = 3000;
        let start = Instant::now();
        for i in 0..n {
            h.id = HostId::from_identity(&format!("hw:h{i}"));
            store.put_host(&h).await.unwrap_or_else(|e| panic!("{e}"));
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

fn gatehouse_store_bench_host() -> gatehouse_core::model::Host {
    gatehouse_core::model::Host {
        id: HostId::from_identity("hw:x"),
        identity: "hw:x".into(),
        host_identifier: "web-01".into(),
        hostname: "web-01.example.com".into(),
        platform: "linux".into(),
        platform_type: "9".into(),
        os_name: "Ubuntu".into(),
        os_version: "22.04".into(),
        osquery_version: "5.23.1".into(),
        details: serde_json::Map::new(),
        labels: vec!["servers".into()],
        enrolled_at: 1,
        last_enrolled_at: 1,
        enroll_count: 1,
        key_epoch: 1,
        key_revoked: false,
        last_seen: 1,
        last_ip: "10.0.0.1".into(),
        config_hash: String::new(),
        config_generation: 0,
    }
}
