//! `gatehouse`: parse the command line, set up logging and the crypto
//! provider, validate configuration (exit 64 when it is wrong), then run.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gatehouse::bootstrap::Bootstrap;
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
    /// The operator API from the command line (tables, or --json).
    Ctl(Box<gatehouse::ctl::CtlArgs>),
    /// Prints the operator REST API's OpenAPI 3.1 document (also served at
    /// /api/v1/openapi.json).
    Openapi,
    /// Validates a configuration (file plus GATEHOUSE_* variables) without
    /// starting anything, for the process named by --role (a cluster role
    /// also needs a shared store). Prints the effective configuration as
    /// TOML.
    Check {
        #[arg(short, long, env = "GATEHOUSE_CONFIG")]
        config: Option<PathBuf>,
        /// The process the configuration is for: serve (the all-in-one),
        /// edge, hostd, ingest or api.
        #[arg(long, default_value = "serve")]
        role: String,
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
    // No transparent huge pages for this process: the allocator asked for
    // them, and the kernel then kept whole 2 MiB pages of sparsely used
    // arenas resident, which grew a 20,000-host server by 350 MB over ten
    // minutes (ADR 0046). A kernel without the flag just keeps its default.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    gatehouse_runtime::tls::install_crypto_provider();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Edge { config } => role(RoleKind::Edge, config, None),
        Command::Hostd { config, instance } => role(RoleKind::Hostd, config, instance),
        Command::Ingest { config } => role(RoleKind::Ingest, config, None),
        Command::Api { config } => role(RoleKind::Api, config, None),
        // Client commands: only warnings reach stderr, never server lines.
        Command::Check { config, role } => {
            client_logging();
            check(config, &role)
        }
        Command::Ctl(args) => {
            client_logging();
            ctl(*args)
        }
        Command::Openapi => match serde_json::to_string_pretty(&gatehouse_api::rest::openapi()) {
            Ok(doc) => {
                gatehouse::output::line(&doc);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gatehouse: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Colours only when stderr is a terminal.
fn ansi() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

/// A client command's logging: warnings and errors, no colour off a
/// terminal.
fn client_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_ansi(ansi())
        .with_writer(std::io::stderr)
        .init();
}

/// A server's logging, as configured (`log_format`; `RUST_LOG` sets the
/// level), then the process setup every server does.
fn server_setup(cfg: &ServeConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log_format {
        gatehouse::config::LogFormat::Json => fmt.json().with_current_span(false).init(),
        gatehouse::config::LogFormat::Text => fmt.with_ansi(ansi()).init(),
    }
    // Every agent holds 2-4 keep-alive connections: use the whole hard limit.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::info!(open_files = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

fn ctl(args: gatehouse::ctl::CtlArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gatehouse ctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(gatehouse::ctl::run(args)) {
        Ok(out) => {
            gatehouse::output::line(&out);
            if let Some(hint) = gatehouse::ctl::more_hint() {
                eprintln!("{hint}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if let gatehouse::ctl::CtlError::Incomplete { output, .. } = &e
                && !output.is_empty()
            {
                gatehouse::output::line(output);
            }
            eprintln!("gatehouse ctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn cluster_check(c: &ServeConfig) -> Result<(), String> {
    if c.store.kind == gatehouse::config::StoreKind::Scylla {
        Ok(())
    } else {
        Err("cluster roles share their store: set store.kind = \"scylla\" (or GATEHOUSE_STORE=scylla)".into())
    }
}

/// What a process checks before it starts, beyond `ServeConfig::validate`.
fn role_check(role: &str, c: &ServeConfig) -> Result<(), String> {
    if role != "serve" {
        cluster_check(c)?;
    }
    if matches!(role, "serve" | "edge" | "api") {
        c.check_tls_files().map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn check(config: Option<PathBuf>, role: &str) -> ExitCode {
    if !matches!(role, "serve" | "edge" | "hostd" | "ingest" | "api") {
        eprintln!("gatehouse: --role {role:?}: expected serve, edge, hostd, ingest or api");
        return ExitCode::from(64);
    }
    let cfg = match ServeConfig::load(config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gatehouse: {e}");
            return ExitCode::from(64);
        }
    };
    if let Err(e) = role_check(role, &cfg) {
        eprintln!("gatehouse: {e}");
        return ExitCode::from(64);
    }
    let mut shown = cfg.clone();
    for secret in [
        &mut shown.store.scylla.password,
        &mut shown.cluster.nats.password,
    ] {
        if secret.is_some() {
            *secret = Some("<redacted>".into());
        }
    }
    match toml::to_string(&shown) {
        Ok(t) => {
            gatehouse::output::line(&t);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gatehouse: cannot print the configuration: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Loads and validates the configuration, prepares the data directory and
/// builds the runtime; on failure, the exit code to return.
fn setup(
    config: Option<PathBuf>,
    check: impl FnOnce(&ServeConfig) -> Result<(), String>,
) -> Result<(ServeConfig, Bootstrap, tokio::runtime::Runtime), ExitCode> {
    let cfg = ServeConfig::load(config.as_deref()).map_err(|e| {
        eprintln!("gatehouse: {e}");
        ExitCode::from(64)
    })?;
    check(&cfg).map_err(|e| {
        eprintln!("gatehouse: {e}");
        ExitCode::from(64)
    })?;
    server_setup(&cfg);
    // The data directory holds the secrets and certificates (shared by
    // every role of a cluster).
    let boot = gatehouse::bootstrap::prepare(&cfg).map_err(|e| {
        eprintln!("gatehouse: preparing {}: {e}", cfg.data_dir.display());
        ExitCode::from(73)
    })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gatehouse")
        // Store calls run on blocking threads. Tokio's default allows 512,
        // and a burst of writes waiting on the journal sync spawned nearly
        // 300, each with its own allocator heap holding memory: a few
        // dozen keep the journal busy and the heap small
        // (docs/benchmarks/performance.md). Writes now wait for the sync
        // as tasks (ADR 0049); 512 threads made a live query to 50,000
        // hosts slower still (35 s against 21 s), in wake-ups.
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
        .map_err(|e| {
            eprintln!("gatehouse: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })?;
    Ok((cfg, boot, rt))
}

/// Blocking threads of a server process (store calls, file work).
const MAX_BLOCKING_THREADS: usize = 48;

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    gatehouse_runtime::bind(addr).map_err(|e| anyhow::anyhow!("binding {addr} ({what}): {e}"))
}

fn bind_ops(cfg: &ServeConfig) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    match cfg.ops_listen {
        Some(a) => Ok(Some(bind(a, "ops_listen")?)),
        None => Ok(None),
    }
}

/// Runs one cluster role until SIGTERM/SIGINT, then drains it.
fn role(kind: RoleKind, config: Option<PathBuf>, instance: Option<String>) -> ExitCode {
    let name = match kind {
        RoleKind::Edge => "edge",
        RoleKind::Hostd => "hostd",
        RoleKind::Ingest => "ingest",
        RoleKind::Api => "api",
    };
    let (cfg, boot, rt) = match setup(config, |c| role_check(name, c)) {
        Ok(s) => s,
        Err(code) => return code,
    };
    exit(rt.block_on(async {
        let metrics = gatehouse_runtime::metrics::Metrics::new();
        let store = gatehouse::serve::open_store(&cfg, &boot, &metrics).await?;
        let m = metrics.clone();
        let mut role = match kind {
            RoleKind::Edge => {
                let l = bind(cfg.listen, "listen")?;
                tracing::info!(listen = %cfg.listen, "edge serving agents");
                gatehouse::cluster::start_edge(&cfg, &boot, store, m, l).await?
            }
            RoleKind::Api => {
                let l = bind(cfg.api_listen, "api_listen")?;
                tracing::info!(listen = %cfg.api_listen, "api serving operators");
                gatehouse::cluster::start_api(&cfg, &boot, store, m, l).await?
            }
            RoleKind::Ingest => gatehouse::cluster::start_ingest(&cfg, &boot, store, m).await?,
            RoleKind::Hostd => {
                let name = instance
                    .or_else(|| std::env::var("HOSTNAME").ok())
                    .unwrap_or_else(|| "hostd".into());
                // A restarted pod keeps its name; the nonce makes it a new member.
                let me = format!("{name}-{:08x}", fastrand::u32(..));
                tracing::info!(instance = %me, "hostd joining");
                gatehouse::cluster::start_hostd(&cfg, &boot, store, m, &me)
                    .await?
                    .role
            }
        };
        // Probes and metrics; not ready from the moment the role drains.
        let ready = role
            .readiness
            .clone()
            .unwrap_or_else(|| gatehouse_runtime::health::Readiness::new(&metrics));
        let done = gatehouse_runtime::Shutdown::new();
        let ops = bind_ops(&cfg)?.map(|l| {
            gatehouse::serve::spawn_ops(
                l,
                ready.clone(),
                done.clone(),
                role.control.take(),
                metrics.clone(),
            )
        });
        role.shutdown.trigger_on_signals();
        {
            let (stopping, ready) = (role.shutdown.clone(), ready.clone());
            tokio::spawn(async move {
                stopping.wait().await;
                ready.drain();
            });
        }
        let r = role.wait().await;
        ready.drain();
        done.trigger();
        if let Some(task) = ops {
            let _ = task.await;
        }
        r
    }))
}

fn serve(config: Option<PathBuf>) -> ExitCode {
    let (cfg, boot, rt) = match setup(config, |c| role_check("serve", c)) {
        Ok(s) => s,
        Err(code) => return code,
    };
    exit(rt.block_on(async {
        // The store first: a second server on the same data directory is
        // told that, not that a port is taken.
        let metrics = gatehouse_runtime::metrics::Metrics::new();
        let store = gatehouse::serve::open_store(&cfg, &boot, &metrics).await?;
        let agents = bind(cfg.listen, "listen")?;
        let api = bind(cfg.api_listen, "api_listen")?;
        let banner = gatehouse::serve::banner(&cfg, &boot, agents.local_addr()?, api.local_addr()?);
        let ops = bind_ops(&cfg)?;
        let deps = gatehouse::serve::ServeDeps {
            store,
            clock: gatehouse_core::time::system_clock(),
            metrics,
        };
        let listeners = gatehouse::serve::ServeListeners { agents, api, ops };
        let running = gatehouse::serve::start(&cfg, &boot, deps, listeners)?;
        // The banner goes to stdout; a closed stdout must not stop a server.
        let _ = writeln!(std::io::stdout(), "{banner}");
        running.shutdown.trigger_on_signals();
        running.wait().await
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every `--flag` a command's help text mentions is one it accepts
    /// (`check --help` once advertised a `--cluster` that did not exist).
    #[test]
    fn help_texts_mention_only_flags_that_exist() {
        fn walk(cmd: &clap::Command, path: &str, bad: &mut Vec<String>) {
            let mut text = String::new();
            for t in [cmd.get_about(), cmd.get_long_about()]
                .into_iter()
                .flatten()
            {
                text.push_str(&t.to_string());
            }
            for a in cmd.get_arguments() {
                for t in [a.get_help(), a.get_long_help()].into_iter().flatten() {
                    text.push_str(&t.to_string());
                }
            }
            let known: Vec<String> = cmd
                .get_arguments()
                .filter_map(|a| a.get_long().map(String::from))
                .chain(["help".to_owned(), "version".to_owned()])
                .collect();
            for word in text.split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',')
            {
                if let Some(flag) = word.strip_prefix("--") {
                    let flag: String = flag
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                        .collect();
                    // osquery's own flags (`--tls_hostname`) are not ours.
                    if !flag.is_empty() && !flag.contains('_') && !known.contains(&flag) {
                        bad.push(format!("{path}: --{flag}"));
                    }
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), bad);
            }
        }
        let mut bad = Vec::new();
        walk(&Cli::command(), "gatehouse", &mut bad);
        assert!(
            bad.is_empty(),
            "help mentions flags that do not exist: {bad:?}"
        );
    }
}
