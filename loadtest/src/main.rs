//! `gatehouse-load`: drive an osquery TLS server with simulated agents and
//! write a report. See `loadtest/README.md`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use gatehouse_loadtest::admin::{AdminClient, Endpoints, install_typical_schedule};
use gatehouse_loadtest::agent::{Answers, Fleet, Paths};
use gatehouse_loadtest::metrics::Metrics;
use gatehouse_loadtest::modes::{self, Mode, RunCfg, SweepCfg};
use gatehouse_loadtest::osinfo::OsMix;
use gatehouse_loadtest::procstat;

// Request handling allocates many small JSON values; glibc malloc spent a
// quarter of the CPU under load (docs/benchmarks/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use gatehouse_loadtest::report::Report;
use gatehouse_loadtest::schedule::Options;
use gatehouse_loadtest::transport::{Pool, Target, client_tls};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    Steady,
    Sweep,
    LiveQuery,
    Storm,
}

#[derive(Parser, Debug)]
#[command(
    name = "gatehouse-load",
    version,
    about = "Simulated osquery agents against an osquery TLS server, with reports"
)]
struct Args {
    /// Run mode.
    #[arg(long, value_enum, default_value = "steady")]
    mode: ModeArg,
    /// Agent endpoint, `https://host:port` (the host is the TLS name).
    /// Default: the one `--gatehouse-data`'s server listens on (its
    /// `endpoints.json`), else `https://localhost:8443`.
    #[arg(long)]
    url: Option<String>,
    /// More agent endpoints behind the same TLS name (`host:port`, several
    /// cluster edges): connections are spread round-robin over `--url` and
    /// these, as a load balancer in front of the edges would.
    #[arg(long = "also-url", value_delimiter = ',')]
    also_url: Vec<String>,
    /// A Gatehouse data directory: takes the CA, enroll secret, admin
    /// token and both URLs from it (instead of --ca, --enroll-secret,
    /// --admin-token, --url, --admin-url; each given flag wins).
    #[arg(long)]
    gatehouse_data: Option<PathBuf>,
    /// CA bundle the agents trust (`--tls_server_certs`).
    #[arg(long)]
    ca: Option<PathBuf>,
    #[arg(long, env = "GATEHOUSE_ENROLL_SECRET")]
    enroll_secret: Option<String>,
    /// Endpoint path prefix; every path can also be set on its own.
    #[arg(long, default_value = "/api/v1/osquery")]
    path_prefix: String,
    #[arg(long)]
    enroll_path: Option<String>,
    #[arg(long)]
    config_path: Option<String>,
    #[arg(long)]
    logger_path: Option<String>,
    #[arg(long)]
    read_path: Option<String>,
    #[arg(long)]
    write_path: Option<String>,
    /// Simulated hosts.
    #[arg(long, default_value_t = 1000)]
    hosts: usize,
    /// Run time in seconds (steady mode).
    #[arg(long, default_value_t = 120)]
    duration: u64,
    /// Seconds over which agents start.
    #[arg(long, default_value_t = 30)]
    ramp: u64,
    /// `--distributed_interval` (s); 0 disables distributed queries.
    #[arg(long, default_value_t = 10)]
    distributed_interval: u64,
    /// `--logger_tls_period` (s).
    #[arg(long, default_value_t = 4)]
    logger_tls_period: u64,
    /// `--config_refresh` (s); 0 fetches once per start.
    #[arg(long, default_value_t = 60)]
    config_refresh: u64,
    /// `--logger_tls_compress`.
    #[arg(long)]
    gzip: bool,
    /// `--disable_carver=false`; carve size in bytes.
    #[arg(long)]
    carver: bool,
    #[arg(long, default_value_t = 262_144)]
    carve_size: usize,
    #[arg(long, default_value_t = 8192)]
    carver_block_size: usize,
    /// Share this many connections among all agents (0: every agent keeps
    /// its own per-thread connections, as osqueryd does).
    #[arg(long, default_value_t = 0)]
    connections: usize,
    /// Spread connections over 127.0.0.2 .. 127.0.0.(1+N) (loopback only).
    #[arg(long, default_value_t = 16)]
    source_ips: u8,
    /// OS weights, e.g. `macos=35,ubuntu=25,windows=15`.
    #[arg(long)]
    os_mix: Option<OsMix>,
    /// Server process to measure (pid); default: the process named
    /// `gatehouse`, when exactly one runs.
    #[arg(long)]
    server_pid: Option<String>,
    /// Operator API for live-query mode and --setup-schedule. Default: the
    /// one `--gatehouse-data`'s server listens on, else
    /// `https://127.0.0.1:8444`.
    #[arg(long)]
    admin_url: Option<String>,
    #[arg(long, env = "GATEHOUSE_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// Install a dozen typical scheduled queries before the run; queries
    /// and schedules the server already has by those names are kept.
    #[arg(long)]
    setup_schedule: bool,
    /// With --setup-schedule: replace existing definitions of the same
    /// names too.
    #[arg(long, requires = "setup_schedule")]
    force: bool,
    /// Where to write result.json, report.md and chart.html.
    #[arg(long, default_value = "loadtest-report")]
    out: PathBuf,
    #[arg(long, default_value_t = 500)]
    sweep_start: usize,
    #[arg(long, default_value_t = 500)]
    sweep_step: usize,
    #[arg(long, default_value_t = 60)]
    sweep_step_secs: u64,
    #[arg(long, default_value_t = 100_000)]
    sweep_max: usize,
    /// Sweep knee: error rate (fraction) above this.
    #[arg(long, default_value_t = 0.01)]
    max_error_rate: f64,
    /// Sweep knee: p99 above this (ms).
    #[arg(long, default_value_t = 1000.0)]
    max_p99_ms: f64,
    #[arg(long, default_value = "SELECT * FROM osquery_info")]
    live_sql: String,
    #[arg(long, default_value_t = 15)]
    live_warmup: u64,
    #[arg(long, default_value_t = 300)]
    live_timeout: u64,
    /// Live-query mode: create this many campaigns at once, each to one
    /// random simulated host, instead of one campaign to every host; the
    /// report compares check-in latency before and during them (raise the
    /// server's `[limits] max_active_campaigns` and `_per_user` to match).
    #[arg(long, default_value_t = 0)]
    live_single: usize,
    /// With --live-single: seconds of each compared window.
    #[arg(long, default_value_t = 30)]
    live_window: u64,
    /// Storm: seconds of agent outage to buffer before reconnecting.
    #[arg(long, default_value_t = 3600)]
    outage: u64,
    #[arg(long, default_value_t = 900)]
    storm_timeout: u64,
    /// Distinguishes this run's hosts from earlier runs' (default: random).
    #[arg(long)]
    run_id: Option<u64>,
    #[arg(long)]
    quiet: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // As the server: no transparent huge pages (ADR 0046).
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args, limit))
}

async fn run(a: Args, nofile: u64) -> anyhow::Result<()> {
    let data = a.gatehouse_data.clone();
    let read = |p: PathBuf| {
        std::fs::read_to_string(&p)
            .map(|s| s.trim().to_owned())
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
    };
    let ca_path =
        a.ca.clone()
            .or_else(|| data.as_ref().map(|d| d.join("tls/ca.pem")))
            .ok_or_else(|| anyhow::anyhow!("give --ca or --gatehouse-data"))?;
    let secret = match (&a.enroll_secret, &data) {
        (Some(s), _) => s.clone(),
        (None, Some(d)) => read(d.join("secrets/enroll_secret"))?,
        (None, None) => anyhow::bail!("give --enroll-secret or --gatehouse-data"),
    };
    let token = a.admin_token.clone().or_else(|| {
        data.as_ref()
            .and_then(|d| read(d.join("secrets/admin_token")).ok())
    });
    let tls = client_tls(
        &std::fs::read(&ca_path).map_err(|e| anyhow::anyhow!("{}: {e}", ca_path.display()))?,
    )?;
    let written = data.as_deref().and_then(Endpoints::read);
    let url = a
        .url
        .clone()
        .or_else(|| written.as_ref().map(|e| e.agents.clone()))
        .unwrap_or_else(|| "https://localhost:8443".to_owned());
    let admin_url = a
        .admin_url
        .clone()
        .or_else(|| written.as_ref().map(|e| e.api.clone()))
        .unwrap_or_else(|| "https://127.0.0.1:8444".to_owned());
    let host = url
        .strip_prefix("https://")
        .ok_or_else(|| {
            anyhow::anyhow!("--url must start with https:// (osquery refuses anything else)")
        })?
        .trim_end_matches('/');
    let addr = tokio::net::lookup_host(if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:443")
    })
    .await?
    .next()
    .ok_or_else(|| anyhow::anyhow!("{host} does not resolve"))?;
    let sources: Vec<IpAddr> = if addr.ip().is_loopback() && addr.is_ipv4() {
        (0..a.source_ips)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i)))
            .collect()
    } else {
        Vec::new()
    };
    let needed = if a.connections > 0 {
        a.connections
    } else {
        a.hosts * 3
    };
    if needed as u64 + 256 > nofile {
        anyhow::bail!(
            "{} hosts with their own connections need about {needed} open files, but this process may open {nofile}; use --connections N to share connections",
            a.hosts
        );
    }
    let mut more = Vec::new();
    for u in &a.also_url {
        let hp = u
            .strip_prefix("https://")
            .unwrap_or(u)
            .trim_end_matches('/');
        more.push(
            tokio::net::lookup_host(hp)
                .await?
                .next()
                .ok_or_else(|| anyhow::anyhow!("{hp} does not resolve"))?,
        );
    }
    let target = Arc::new(Target::new(addr, host, tls.clone(), sources)?.with_more(more));
    target.preflight().await?;
    let admin = match &token {
        Some(t) => {
            let admin_host = admin_url
                .strip_prefix("https://")
                .unwrap_or(&admin_url)
                .trim_end_matches('/');
            let admin_addr = tokio::net::lookup_host(admin_host)
                .await?
                .next()
                .ok_or_else(|| anyhow::anyhow!("{admin_host} does not resolve"))?;
            let name = admin_host.rsplit_once(':').map_or(admin_host, |(h, _)| h);
            Some(Arc::new(AdminClient::new(admin_addr, name, t, tls.clone())))
        }
        None => None,
    };
    if a.setup_schedule {
        let admin = admin
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("--setup-schedule needs an admin token"))?;
        let done = install_typical_schedule(admin, a.force).await?;
        eprintln!(
            "typical schedule: {} installed{}",
            done.written.len(),
            if done.kept.is_empty() {
                String::new()
            } else {
                format!(
                    "; kept {} the server already has, as they are ({}; --force replaces them)",
                    done.kept.len(),
                    done.kept.join(", ")
                )
            }
        );
    }
    let mut paths = Paths::with_prefix(&a.path_prefix);
    for (slot, over) in [
        (&mut paths.enroll, &a.enroll_path),
        (&mut paths.config, &a.config_path),
        (&mut paths.logger, &a.logger_path),
        (&mut paths.read, &a.read_path),
        (&mut paths.write, &a.write_path),
    ] {
        if let Some(p) = over {
            *slot = p.clone();
        }
    }
    let options = Options {
        logger_tls_period_ms: a.logger_tls_period.max(1) * 1000,
        logger_tls_compress: a.gzip,
        distributed_interval_ms: a.distributed_interval.max(1) * 1000,
        ..Options::default()
    };
    let metrics = Arc::new(Metrics::default());
    let pool = (a.connections > 0).then(|| Arc::new(Pool::new(a.connections)));
    let fleet = Fleet {
        target,
        paths,
        enroll_secret: secret,
        options,
        config_refresh_ms: a.config_refresh * 1000,
        config_accelerated_refresh_ms: 300_000,
        enroll_max_attempts: 12,
        logger_backoff_max_ms: 3_600_000,
        distributed: a.distributed_interval > 0,
        carver: a.carver,
        carver_block_size: a.carver_block_size,
        carve_size: a.carve_size,
        send_status_logs: true,
        pool: pool.clone(),
        metrics: metrics.clone(),
        answers: Arc::new(Answers::default()),
        release: None,
        backlog_secs: 0,
        second: Duration::from_secs(1),
    };
    let server_pid = match &a.server_pid {
        Some(pid) => Some(pid.clone()),
        None => procstat::find_pid("gatehouse").unwrap_or_else(|all| {
            eprintln!(
                "several gatehouse processes are running ({all:?}): the server's cost is not measured; pass --server-pid"
            );
            None
        }),
    };
    let cfg = RunCfg {
        mode: match a.mode {
            ModeArg::Steady => Mode::Steady,
            ModeArg::Sweep => Mode::Sweep,
            ModeArg::LiveQuery => Mode::LiveQuery,
            ModeArg::Storm => Mode::Storm,
        },
        hosts: a.hosts,
        duration: Duration::from_secs(a.duration),
        ramp: Duration::from_secs(a.ramp),
        os_mix: a.os_mix.clone().unwrap_or_default(),
        run_id: a.run_id.unwrap_or_else(|| fastrand::u64(..)),
        server_pid: server_pid.clone(),
        progress: !a.quiet,
        sweep: SweepCfg {
            start: a.sweep_start,
            step: a.sweep_step,
            step_duration: Duration::from_secs(a.sweep_step_secs),
            max_hosts: a.sweep_max,
            max_error_rate: a.max_error_rate,
            max_p99_ms: a.max_p99_ms,
        },
        live_sql: a.live_sql.clone(),
        live_warmup: Duration::from_secs(a.live_warmup),
        live_timeout: Duration::from_secs(a.live_timeout),
        live_single: a.live_single,
        live_window: Duration::from_secs(a.live_window),
        outage: Duration::from_secs(a.outage),
        storm_timeout: Duration::from_secs(a.storm_timeout),
    };
    eprintln!(
        "{} simulated hosts, mode {:?}, server pid {}",
        a.hosts,
        cfg.mode,
        server_pid.as_deref().unwrap_or("not found")
    );
    let (result, mut cost, timeline) = modes::run(fleet, cfg, admin).await?;
    if let Some(p) = &pool {
        let w = p.waits.snapshot();
        cost["connection_wait"] = serde_json::json!({
            "connections": a.connections,
            "p50_ms": gatehouse_loadtest::metrics::percentile(&w, 50.0),
            "p99_ms": gatehouse_loadtest::metrics::percentile(&w, 99.0),
            "max_ms": gatehouse_loadtest::metrics::percentile(&w, 100.0),
        });
    }
    let rep = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: procstat::machine(),
        params: serde_json::json!({
            "hosts": a.hosts, "duration_s": a.duration, "ramp_s": a.ramp, "distributed_interval_s": a.distributed_interval,
            "logger_tls_period_s": a.logger_tls_period, "config_refresh_s": a.config_refresh, "gzip": a.gzip,
            "connections": if a.connections == 0 { "per agent".to_owned() } else { a.connections.to_string() },
        }),
        result,
        cost,
        endpoints: metrics.summary(),
        timeline,
    };
    rep.write(&a.out)?;
    println!("{}", rep.markdown());
    eprintln!("reports written to {}", a.out.display());
    Ok(())
}
