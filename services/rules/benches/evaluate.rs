//! CPU cost of rule evaluation on the log path: what the engine adds to
//! each durable result batch when rules listen to its query and (as
//! usual) no row matches. Rules of realistic shape: an `all` group of an
//! equality and an `any` of a numeric comparison and a regex.
//!
//! Run: `cargo bench -p gatehouse-rules --bench evaluate`
//! Prints a Markdown table and writes JSON to
//! `target/bench-rules-evaluate.json`.
//!
//! A benchmark whose set-up fails has nothing to measure: it unwraps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use gatehouse_core::HostId;
use gatehouse_core::model::LogRecords;
use gatehouse_core::ports::Store;
use gatehouse_core::rules::Rule;
use gatehouse_rules::{Engine, RulesConfig};
use gatehouse_runtime::metrics::Metrics;
use gatehouse_store::EmbeddedStore;
use gatehouse_store::conformance::processes_post;
use serde_json::json;

fn rule(n: usize) -> Rule {
    let r = json!({
        "name": format!("r{n}"),
        "when": {"event": "results", "query": "pack_inventory_processes", "condition": {"all": [
            {"column": "name", "op": "eq", "value": format!("never-{n}")},
            {"any": [
                {"column": "resident_size", "op": "gt", "value": "1000000000"},
                {"column": "path", "op": "regex", "value": "^/(tmp|dev/shm)/"}
            ]}
        ]}},
        "actions": [{"type": "log"}]
    });
    serde_json::from_value(r).unwrap()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let host = HostId::from_identity("hw:bench");
        let batches: Vec<LogRecords> = (0..1000)
            .map(|round| processes_post(&host, round, 100, gatehouse_core::time::now_ms()))
            .collect();
        let lines: usize = batches.iter().map(LogRecords::len).sum();
        let mut table = Vec::new();
        println!("{lines} result lines (processes events, 6 columns), best of 3 runs\n");
        println!("| rules on the query | engine time per line | per rule and row |");
        println!("|---|---|---|");
        for rules in [0usize, 1, 10, 50] {
            for n in 0..rules {
                store.put_rule(&rule(n)).await.unwrap();
            }
            let (engine, _d) =
                Engine::new(store.clone(), RulesConfig::default(), &Metrics::new()).unwrap();
            engine.reload().await.unwrap();
            let mut best = f64::MAX;
            for _ in 0..3 {
                let start = Instant::now();
                for b in &batches {
                    if let LogRecords::Results(rs) = b {
                        engine.on_results(rs).await;
                    }
                }
                best = best.min(start.elapsed().as_nanos() as f64);
            }
            let per_line = best / lines as f64;
            let per_eval = if rules == 0 {
                0.0
            } else {
                per_line / rules as f64
            };
            println!("| {rules} | {per_line:.0} ns | {per_eval:.0} ns |");
            table.push(
                json!({"rules": rules, "ns_per_line": per_line, "ns_per_rule_row": per_eval}),
            );
            for n in 0..rules {
                store.delete_rule(&format!("r{n}")).await.unwrap();
            }
        }
        let out = json!({"lines": lines, "results": table});
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/bench-rules-evaluate.json");
        let _ = std::fs::write(path, serde_json::to_vec_pretty(&out).unwrap_or_default());
    });
}
