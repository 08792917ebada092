//! `gatehouse`: parse the command line, set up logging and the crypto
//! provider, validate configuration (exit 64 when it is wrong), then run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gatehouse::config::ServeConfig;

// Request handling allocates many small JSON values; glibc malloc spent a
// quarter of the CPU under load (docs/benchmarks/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "Gatehouse: an osquery fleet manager"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every role in one process (embedded store, in-process bus).
    Serve {
        /// TOML config file (see docs/gatehouse.example.toml); GATEHOUSE_*
        /// environment variables override it.
        #[arg(short, long, env = "GATEHOUSE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Cluster role: the agent-facing edge (listens on `listen`).
    Edge {
        #[arg(short, long, env = "GATEHOUSE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Cluster role: host actors for the shards this instance leases.
    Hostd {
        #[arg(short, long, env = "GATEHOUSE_CONFIG")]
        config: Option<PathBuf>,
        /// Unique name of this instance (default: the host name).
        #[arg(long, env = "GATEHOUSE_INSTANCE")]
        instance: Option<String>,
    },
    /// Cluster role: drains the log stream into the store.
    Ingest {
        #[arg(short, long, env = "GATEHOUSE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Cluster role: the operator API (listens on `api_listen`).
    Api {
        #[arg(short, long, env = "GATEHOUSE_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Clone, Copy)]
enum RoleKind {
    Edge,
    Hostd,
    Ingest,
    Api,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    gatehouse_runtime::tls::install_crypto_provider();
    // Every agent holds 2-4 keep-alive connections: use the whole hard limit.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::info!(open_files = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Edge { config } => role(RoleKind::Edge, config, None),
        Command::Hostd { config, instance } => role(RoleKind::Hostd, config, instance),
        Command::Ingest { config } => role(RoleKind::Ingest, config, None),
        Command::Api { config } => role(RoleKind::Api, config, None),
    }
}

/// Runs one cluster role until SIGTERM/SIGINT, then drains it.
fn role(kind: RoleKind, config: Option<PathBuf>, instance: Option<String>) -> ExitCode {
    let cfg = match ServeConfig::load(config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gatehouse: {e}");
            return ExitCode::from(64);
        }
    };
    if cfg.store.kind != gatehouse::config::StoreKind::Scylla {
        eprintln!(
            "gatehouse: cluster roles share their store: set store.kind = \"scylla\" (or GATEHOUSE_STORE=scylla)"
        );
        return ExitCode::from(64);
    }
    // The data directory holds the shared secrets and certificates.
    let boot = match gatehouse::bootstrap::prepare(&cfg) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("gatehouse: preparing {}: {e}", cfg.data_dir.display());
            return ExitCode::from(73);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gatehouse")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gatehouse: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let store = gatehouse::serve::open_store(&cfg, &boot).await?;
        let role = match kind {
            RoleKind::Edge => {
                let l = tokio::net::TcpListener::bind(cfg.listen)
                    .await
                    .map_err(|e| anyhow::anyhow!("binding {}: {e}", cfg.listen))?;
                tracing::info!(listen = %cfg.listen, "edge serving agents");
                gatehouse::cluster::start_edge(&cfg, &boot, store, l).await?
            }
            RoleKind::Api => {
                let l = tokio::net::TcpListener::bind(cfg.api_listen)
                    .await
                    .map_err(|e| anyhow::anyhow!("binding {}: {e}", cfg.api_listen))?;
                tracing::info!(listen = %cfg.api_listen, "api serving operators");
                gatehouse::cluster::start_api(&cfg, &boot, store, l).await?
            }
            RoleKind::Ingest => gatehouse::cluster::start_ingest(&cfg, store).await?,
            RoleKind::Hostd => {
                let name = instance
                    .or_else(|| std::env::var("HOSTNAME").ok())
                    .unwrap_or_else(|| "hostd".into());
                // A restarted pod keeps its name; the nonce makes it a new member.
                let me = format!("{name}-{:08x}", fastrand::u32(..));
                tracing::info!(instance = %me, "hostd joining");
                gatehouse::cluster::start_hostd(&cfg, &boot, store, &me)
                    .await?
                    .role
            }
        };
        // Probes and metrics; not ready once draining.
        let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let ops = match cfg.ops_listen {
            Some(a) => {
                let l = tokio::net::TcpListener::bind(a)
                    .await
                    .map_err(|e| anyhow::anyhow!("binding {a} (ops_listen): {e}"))?;
                let done = gatehouse_runtime::Shutdown::new();
                Some((
                    gatehouse::serve::spawn_ops(l, ready.clone(), done.clone()),
                    done,
                ))
            }
            None => None,
        };
        role.shutdown.trigger_on_signals();
        let r = role.wait().await;
        ready.store(false, std::sync::atomic::Ordering::Relaxed);
        if let Some((task, done)) = ops {
            done.trigger();
            let _ = task.await;
        }
        r
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Option<PathBuf>) -> ExitCode {
    let cfg = match ServeConfig::load(config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gatehouse: {e}");
            return ExitCode::from(64);
        }
    };
    let boot = match gatehouse::bootstrap::prepare(&cfg) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("gatehouse: preparing {}: {e}", cfg.data_dir.display());
            return ExitCode::from(73);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gatehouse")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gatehouse: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let agents = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| anyhow::anyhow!("binding {}: {e}", cfg.listen))?;
        let api = tokio::net::TcpListener::bind(cfg.api_listen)
            .await
            .map_err(|e| anyhow::anyhow!("binding {}: {e}", cfg.api_listen))?;
        let banner = gatehouse::serve::banner(&cfg, &boot, agents.local_addr()?, api.local_addr()?);
        let ops = match cfg.ops_listen {
            Some(a) => Some(
                tokio::net::TcpListener::bind(a)
                    .await
                    .map_err(|e| anyhow::anyhow!("binding {a} (ops_listen): {e}"))?,
            ),
            None => None,
        };
        let store = gatehouse::serve::open_store(&cfg, &boot).await?;
        let running = gatehouse::serve::start(&cfg, &boot, store, agents, api, ops)?;
        println!("{banner}");
        running.shutdown.trigger_on_signals();
        running.wait().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse: {e:#}");
            ExitCode::FAILURE
        }
    }
}
