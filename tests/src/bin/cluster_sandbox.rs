//! `gatehouse-cluster-sandbox`: a whole cluster in one process for load
//! tests on one machine: a real nats-server (JetStream, started here on a
//! random port), N edges, M hostd, one ingest and the api, every role with
//! its own NATS connection, sharing one embedded store (the stand-in for
//! ScyllaDB: no CQL server on this machine is fast enough to measure the
//! cluster rather than itself).
//!
//! It prints one line `ready edges=URL,URL api=URL pids=SELF,NATS data=DIR`
//! and runs until SIGTERM/SIGINT, then drains every role (edges and api,
//! then hostd, then ingest). `loadtest/cluster-bench.sh` drives it.

use std::sync::Arc;

use clap::Parser;
use gatehouse::cluster;
use gatehouse::config::{ServeConfig, StoreKind};
use gatehouse_bus::nats_test_server::NatsTestServer;
use gatehouse_core::ports::Store;
use gatehouse_store::EmbeddedStore;

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
    let nats = NatsTestServer::start()?;
    let mut cfg = ServeConfig {
        data_dir: a.data.clone(),
        ..ServeConfig::default()
    };
    cfg.store.kind = StoreKind::Scylla;
    cfg.cluster.nats.servers = vec![nats.url()];
    cfg.cluster.lease_ttl_ms = 4_000;
    cfg.cluster.lease_renew_ms = 1_000;
    cfg.cluster.max_log_stream_bytes = 2 * 1024 * 1024 * 1024;
    cfg.validate()?;
    let boot = gatehouse::bootstrap::prepare(&cfg)?;
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&a.data.join("store"))?);

    let mut hostd = Vec::new();
    for n in 0..a.hostd {
        hostd.push(cluster::start_hostd(&cfg, &boot, store.clone(), &format!("hostd-{n}")).await?);
    }
    let ingest = cluster::start_ingest(&cfg, &boot, store.clone()).await?;
    let mut edges = Vec::new();
    let mut urls = Vec::new();
    for n in 0..a.edges {
        let port = a.port + n * 10;
        let l = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        edges.push(cluster::start_edge(&cfg, &boot, store.clone(), l).await?);
        urls.push(format!("https://localhost:{port}"));
    }
    let l = tokio::net::TcpListener::bind(("127.0.0.1", a.api_port)).await?;
    let api = cluster::start_api(&cfg, &boot, store.clone(), l).await?;
    // Every shard owned before agents arrive.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while hostd.iter().map(|h| h.leases.held().len()).sum::<usize>() < cfg.shards as usize {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "shards not all owned after 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    println!(
        "ready edges={} api=https://localhost:{} pids={},{} data={}",
        urls.join(","),
        a.api_port,
        std::process::id(),
        nats.pid(),
        a.data.display()
    );
    let stop = gatehouse_runtime::Shutdown::new();
    stop.trigger_on_signals();
    stop.wait().await;
    eprintln!("draining the sandbox");
    for e in edges {
        e.stop().await?;
    }
    api.stop().await?;
    for h in hostd {
        h.role.stop().await?;
    }
    ingest.stop().await?;
    Ok(())
}
