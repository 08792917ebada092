//! `gatehouse-cluster-sandbox`: a whole cluster in one process for load
//! tests on one machine, the same sandbox the cluster tests run
//! ([`gatehouse_tests::sandbox`]): a real nats-server (JetStream, started
//! here on a random port), N edges, M hostd, one ingest and the api, every
//! role with its own NATS connection, sharing one embedded store (the stand-in for
//! ScyllaDB: no CQL server on this machine is fast enough to measure the
//! cluster rather than itself).
//!
//! It prints one line `ready edges=URL,URL api=URL pids=SELF,NATS data=DIR`
//! and runs until SIGTERM/SIGINT, then drains every role (edges and api,
//! then hostd, then ingest). `loadtest/cluster-bench.sh` drives it.

use std::sync::Arc;

use clap::Parser;
use gatehouse_core::ports::Store;
use gatehouse_store::EmbeddedStore;
use gatehouse_tests::sandbox::{Sandbox, SandboxConfig, StoreFactory};

#[derive(Parser, Debug)]
struct Args {
    /// Edges, on consecutive ports from --port.
    #[arg(long, default_value_t = 2)]
    edges: u16,
    #[arg(long, default_value_t = 3)]
    hostd: u16,
    /// First edge port.
    #[arg(long, default_value_t = 8443)]
    port: u16,
    #[arg(long, default_value_t = 8444)]
    api_port: u16,
    /// Secrets, certificates and the store (created if missing).
    #[arg(long)]
    data: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    gatehouse_runtime::tls::install_crypto_provider();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // The stand-in for ScyllaDB: one embedded store every role shares.
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&a.data.join("store"))?);
    let stores: StoreFactory = Arc::new(move || {
        let store = store.clone();
        Box::pin(async move { Ok(store) })
    });
    let cfg = SandboxConfig {
        edges: a.edges,
        hostd: a.hostd,
        shards: gatehouse::config::ServeConfig::default().shards,
        lease_ttl_ms: 4_000,
        lease_renew_ms: 1_000,
        max_log_stream_bytes: 2 * 1024 * 1024 * 1024,
        ingest_ack_wait_ms: gatehouse::config::ServeConfig::default()
            .cluster
            .ingest_ack_wait_ms,
        data_dir: Some(a.data.clone()),
        edge_port: Some(a.port),
        api_port: Some(a.api_port),
        destinations: Vec::new(),
    };
    let s = Sandbox::start(cfg, stores).await?;
    // Every shard owned before agents arrive.
    gatehouse_testkit::eventually(
        "every shard owned",
        std::time::Duration::from_secs(30),
        async || {
            Ok::<_, std::convert::Infallible>((s.served() == s.cfg.shards as usize).then_some(()))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let urls: Vec<&str> = s.edges.iter().map(|e| e.0.as_str()).collect();
    let api = s.api.as_ref().map_or("", |a| a.0.as_str());
    println!(
        "ready edges={} api={api} pids={},{} data={}",
        urls.join(","),
        std::process::id(),
        s.nats.pid(),
        a.data.display()
    );
    let stop = gatehouse_runtime::Shutdown::new();
    stop.trigger_on_signals();
    stop.wait().await;
    eprintln!("draining the sandbox");
    s.stop().await
}
