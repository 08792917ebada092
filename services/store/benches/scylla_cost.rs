//! CPU cost of the ScyllaDB adapter on the client side: what a Gatehouse
//! process spends per stored result line and per host check-in before
//! anything reaches the network (document encoding, partition grouping,
//! binding values to prepared statements). Statements are prepared against
//! the in-process CQL test server, so their metadata is the real one.
//!
//! For context it also times whole `append_logs` calls through the driver
//! to that test server; those figures include the test server's own work
//! in the same process and are not ScyllaDB's.
//!
//! Run: `cargo bench -p gatehouse-store --bench scylla_cost`
//! Prints a Markdown table and writes JSON to
//! `target/bench-scylla-cost.json`.
//!
//! A benchmark whose set-up fails has nothing to measure: it unwraps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use gatehouse_core::HostId;
use gatehouse_core::model::{LogRecords, ResultLog};
use gatehouse_core::ports::stores::*;
use gatehouse_store::conformance::{processes_post, sample_host};
use gatehouse_store::cql_test_server::CqlTestServer;
use gatehouse_store::scylla::statements::Q;
use gatehouse_store::scylla::{ScyllaConfig, ScyllaStore, encode_results, result_rows};
use serde_json::json;

const LINES_PER_POST: usize = 10;

fn post(host: &HostId, round: u64) -> Vec<ResultLog> {
    match processes_post(host, round, LINES_PER_POST, gatehouse_core::time::now_ms()) {
        LogRecords::Results(rs) => rs,
        LogRecords::Status(_) => Vec::new(),
    }
}

/// A host record with `host_details` of a typical size (osquery sends
/// os_version, osquery_info, system_info and platform_info).
fn typical_host(n: u32) -> gatehouse_core::model::Host {
    let mut h = sample_host(n);
    let details = json!({
        "os_version": {"name": "Ubuntu", "version": "22.04.4 LTS (Jammy Jellyfish)", "major": "22", "minor": "04", "patch": "4", "build": "", "platform": "ubuntu", "platform_like": "debian", "codename": "jammy", "arch": "x86_64"},
        "osquery_info": {"pid": "1234", "uuid": "8A1E3E0E-9C3B-4F4C-9F5C-0C2B7E6C1D2A", "instance_id": "c7f2d3a4-1b2c-4d5e-8f90-a1b2c3d4e5f6", "version": "5.23.1", "config_hash": "", "config_valid": "0", "extensions": "active", "build_platform": "ubuntu", "build_distro": "focal", "start_time": "1717496431", "watcher": "1234", "platform_mask": "9"},
        "system_info": {"hostname": "web-01.example.com", "uuid": "4C4C4544-0042-5A10-8056-B4C04F4B3232", "cpu_type": "x86_64", "cpu_subtype": "85", "cpu_brand": "Intel(R) Xeon(R) Gold 6248R CPU @ 3.00GHz", "cpu_physical_cores": "24", "cpu_logical_cores": "48", "cpu_microcode": "0x5003604", "physical_memory": "201326592000", "hardware_vendor": "Dell Inc.", "hardware_model": "PowerEdge R640", "hardware_version": "", "hardware_serial": "7ZB2K33", "board_vendor": "Dell Inc.", "board_model": "0H28RR", "board_version": "A02", "board_serial": ".7ZB2K33.CNFCP0012300E2.", "computer_name": "web-01", "local_hostname": "web-01"},
        "platform_info": {"vendor": "Dell Inc.", "version": "2.19.1", "date": "06/20/2023", "revision": "2.19", "extra": "", "firmware_type": "uefi", "address": "0xf0000", "size": "64 KB", "volume_size": "0"}
    });
    h.details = gatehouse_core::model::HostDetails::from_map(
        &details.as_object().cloned().unwrap_or_default(),
    );
    h.labels = vec!["servers".into(), "prod".into()];
    h
}

fn per_op_ns(start: Instant, ops: usize) -> f64 {
    start.elapsed().as_nanos() as f64 / ops as f64
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = CqlTestServer::start().await.unwrap();
        let store = ScyllaStore::connect(&ScyllaConfig {
            contact_points: vec![server.addr().to_string()],
            keyspace: "bench".into(),
            await_schema_agreement: false,
            ..ScyllaConfig::default()
        })
        .await
        .unwrap();
        let mut rows = Vec::new();

        // 1. Per stored result line: encode, group, bind (the line and its
        //    host's index row), no network.
        let posts: Vec<Vec<ResultLog>> = (0..5_000u64)
            .map(|r| post(&HostId::from_identity(&format!("hw:bench-{}", r % 500)), r))
            .collect();
        let lines = posts.len() * LINES_PER_POST;
        let (put_result, put_index) = (store.prepared(Q::PutResult), store.prepared(Q::PutResultIndex));
        for pass in 0..2 {
            let start = Instant::now();
            let mut encoded = 0usize;
            let mut bound = 0usize;
            for rs in &posts {
                let docs = encode_results(rs).unwrap();
                encoded += docs.iter().map(Vec::len).sum::<usize>();
                let grouped = result_rows(rs, &docs);
                for batch in grouped.by_host.values() {
                    for row in batch {
                        put_result.clone().bind(row).unwrap();
                        bound += 1;
                    }
                }
                for (h, d, n, _) in &grouped.host_index {
                    put_index.clone().bind(&(*h, *d, *n)).unwrap();
                }
            }
            let ns = per_op_ns(start, lines);
            if pass == 1 {
                eprintln!("result line: {ns:.0} ns CPU per line ({} bytes stored per line, {} rows bound per line)", encoded / lines, bound / lines);
                rows.push(json!({"case": "result_line_client_cpu", "ns_per_line": ns.round(), "doc_bytes_per_line": encoded / lines, "rows_bound_per_line": bound / lines}));
            }
        }

        // 2. Per host check-in: the actor's periodic `last_seen` write (a
        //    column update), the full record write (enrollment, labels,
        //    config version) and the read when an actor is rebuilt.
        let hosts: Vec<_> = (0..2_000).map(typical_host).collect();
        let touch = store.prepared(Q::TouchHost);
        let start = Instant::now();
        for round in 0..10i64 {
            for h in &hosts {
                touch.clone().bind(&(h.last_seen + round, h.id.as_str())).unwrap();
            }
        }
        let touch_ns = per_op_ns(start, hosts.len() * 10);
        eprintln!("host touch: {touch_ns:.0} ns CPU");
        rows.push(json!({"case": "host_touch_client_cpu", "ns_per_write": touch_ns.round()}));
        let put_host = store.prepared(Q::PutHost);
        let mut doc_len = 0;
        let start = Instant::now();
        for _ in 0..10 {
            for h in &hosts {
                let doc = serde_json::to_vec(h).unwrap_or_default();
                doc_len = doc.len();
                put_host.clone().bind(&(h.id.as_str(), &doc, h.last_seen)).unwrap();
            }
        }
        let put_ns = per_op_ns(start, hosts.len() * 10);
        let docs: Vec<Vec<u8>> = hosts.iter().map(|h| serde_json::to_vec(h).unwrap_or_default()).collect();
        let start = Instant::now();
        for _ in 0..10 {
            for d in &docs {
                let h: gatehouse_core::model::Host = serde_json::from_slice(d).unwrap();
                std::hint::black_box(h);
            }
        }
        let get_ns = per_op_ns(start, docs.len() * 10);
        eprintln!("host write: {put_ns:.0} ns CPU (doc {doc_len} bytes); host read decode: {get_ns:.0} ns");
        rows.push(json!({"case": "host_write_client_cpu", "ns_per_write": put_ns.round(), "doc_bytes": doc_len}));
        rows.push(json!({"case": "host_read_decode_cpu", "ns_per_read": get_ns.round()}));

        // 3. Context: whole append_logs calls through the driver to the
        //    in-process test server (includes that server's work).
        let start = Instant::now();
        for rs in posts.iter().take(1_000) {
            store
                .append_logs(&LogRecords::Results(rs.clone()))
                .await
                .unwrap();
        }
        let e2e = per_op_ns(start, 1_000 * LINES_PER_POST);
        eprintln!("append_logs end to end (test server in process): {e2e:.0} ns wall per line");
        rows.push(json!({"case": "append_logs_to_test_server_wall", "ns_per_line": e2e.round(), "note": "includes the in-process kassandra server; not a ScyllaDB figure"}));

        println!("| case | figure |\n|---|---|");
        for r in &rows {
            println!("| {} | {} |", r["case"].as_str().unwrap_or(""), r);
        }
        let _ = std::fs::write(
            "../../target/bench-scylla-cost.json",
            serde_json::to_vec_pretty(&rows).unwrap_or_default(),
        );
    });
}
