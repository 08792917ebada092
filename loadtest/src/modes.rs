//! Run modes: `steady`, `sweep`, `live-query`, `storm`, and the monitor
//! that samples metrics every second (timeline, progress line, server and
//! harness cost).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::admin::AdminClient;
use crate::agent::{Agent, Fleet};
use crate::metrics::{ENDPOINTS, Endpoint, Tick, percentile, window};
use crate::osinfo::{Machine, OsMix};
use crate::procstat::{self, Sample};
use crate::transport::Stage;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Steady,
    Sweep,
    LiveQuery,
    Storm,
}

#[derive(Debug, Clone)]
pub struct SweepCfg {
    pub start: usize,
    pub step: usize,
    pub step_duration: Duration,
    pub max_hosts: usize,
    pub max_error_rate: f64,
    pub max_p99_ms: f64,
}

#[derive(Debug, Clone)]
pub struct RunCfg {
    pub mode: Mode,
    pub hosts: usize,
    pub duration: Duration,
    pub ramp: Duration,
    pub os_mix: OsMix,
    pub run_id: u64,
    pub server_pid: Option<String>,
    pub progress: bool,
    pub sweep: SweepCfg,
    pub live_sql: String,
    pub live_warmup: Duration,
    pub live_timeout: Duration,
    /// Live-query mode: this many campaigns at once, each to one host,
    /// instead of one to every host.
    pub live_single: usize,
    /// Live-query mode with `live_single`: the length of the check-in
    /// windows compared (before the campaigns, and from their creation).
    pub live_window: Duration,
    pub outage: Duration,
    pub storm_timeout: Duration,
}

/// A running fleet of agents plus its monitor.
pub struct Runner {
    fleet: Fleet,
    cfg: RunCfg,
    agents: Vec<Arc<Agent>>,
    stop_tx: tokio::sync::watch::Sender<bool>,
    stop_rx: tokio::sync::watch::Receiver<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub timeline: Arc<std::sync::Mutex<Vec<Tick>>>,
    monitor: Option<tokio::task::JoinHandle<()>>,
    started: Instant,
    harness_start: Option<Sample>,
    server_start: Option<Sample>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("agents", &self.agents.len())
            .finish()
    }
}

impl Runner {
    pub fn new(fleet: Fleet, cfg: RunCfg) -> Self {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        Self {
            harness_start: procstat::sample("self"),
            server_start: cfg.server_pid.as_deref().and_then(procstat::sample),
            fleet,
            cfg,
            agents: Vec::new(),
            stop_tx,
            stop_rx,
            tasks: Vec::new(),
            timeline: Arc::default(),
            monitor: None,
            started: Instant::now(),
        }
    }

    pub fn agents(&self) -> &[Arc<Agent>] {
        &self.agents
    }

    /// Starts agents `from..to`, spread evenly over `ramp`.
    pub async fn spawn(&mut self, count: usize, ramp: Duration) {
        let from = self.agents.len();
        let gap = if count > 1 {
            ramp / count as u32
        } else {
            Duration::ZERO
        };
        for n in from..from + count {
            let a = Agent::new(
                Machine::new(n as u64, &self.cfg.os_mix, self.cfg.run_id),
                self.fleet.clone(),
            );
            self.agents.push(a.clone());
            self.fleet
                .metrics
                .agents_started
                .fetch_add(1, Ordering::Relaxed);
            self.tasks.push(tokio::spawn(a.run(self.stop_rx.clone())));
            if !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
        }
    }

    pub fn start_monitor(&mut self) {
        let metrics = self.fleet.metrics.clone();
        let timeline = self.timeline.clone();
        let server = self.cfg.server_pid.clone();
        let progress = self.cfg.progress;
        let started = self.started;
        let mut stop = self.stop_rx.clone();
        self.monitor = Some(tokio::spawn(async move {
            let mut last_h = procstat::sample("self");
            let mut last_s = server.as_deref().and_then(procstat::sample);
            let mut last_tick = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            // A late tick must not be followed by an immediate catch-up one
            // (it would record an empty second).
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|v| *v) => return,
                }
                let (per, errors, hist) = metrics.take_interval();
                let now = Instant::now();
                let secs = now.duration_since(last_tick).as_secs_f64().max(0.001);
                last_tick = now;
                let h = procstat::sample("self");
                let s = server.as_deref().and_then(procstat::sample);
                let t = Tick {
                    t: started.elapsed().as_secs_f64(),
                    requests_per_s: per.iter().map(|(_, n)| *n).sum::<u64>() as f64 / secs,
                    errors_per_s: errors as f64 / secs,
                    p50_ms: percentile(&hist, 50.0),
                    p99_ms: percentile(&hist, 99.0),
                    by_endpoint: per,
                    enrolled: metrics.enrolled.load(Ordering::Relaxed),
                    harness_cpu_pct: match (&last_h, &h) {
                        (Some(a), Some(b)) => procstat::cpu_pct(a, b),
                        _ => 0.0,
                    },
                    server_cpu_pct: match (&last_s, &s) {
                        (Some(a), Some(b)) => Some(procstat::cpu_pct(a, b)),
                        _ => None,
                    },
                    server_rss_mb: s.map(|s| s.rss_bytes as f64 / 1_048_576.0),
                };
                if progress && (t.t as u64).is_multiple_of(2) {
                    let eps: Vec<String> = t
                        .by_endpoint
                        .iter()
                        .filter(|(_, n)| *n > 0)
                        .map(|(e, n)| format!("{e} {n}"))
                        .collect();
                    eprintln!(
                        "[{:>5.0}s] enrolled {:>6}/{:<6} req/s {:>6.0} ({}) p50 {:.1}ms p99 {:.1}ms err/s {:.0} | harness {:.0}% server {}",
                        t.t,
                        t.enrolled,
                        metrics.agents_started.load(Ordering::Relaxed),
                        t.requests_per_s,
                        eps.join(", "),
                        t.p50_ms,
                        t.p99_ms,
                        t.errors_per_s,
                        t.harness_cpu_pct,
                        t.server_cpu_pct.map_or("n/a".into(), |c| format!(
                            "{c:.0}% rss {:.0}MB",
                            t.server_rss_mb.unwrap_or(0.0)
                        )),
                    );
                }
                if let Ok(mut tl) = timeline.lock() {
                    tl.push(t);
                }
                last_h = h;
                last_s = s;
            }
        }));
    }

    /// Stops every agent and the monitor; returns the cost summary.
    pub async fn stop(mut self) -> (Value, Vec<Tick>) {
        let _ = self.stop_tx.send(true);
        // One deadline for all: agents blocked in a request get until then,
        // the rest are aborted.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        for mut t in self.tasks.drain(..) {
            if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
                t.abort();
            }
        }
        if let Some(m) = self.monitor.take() {
            let _ = m.await;
        }
        let wall = self.started.elapsed().as_secs_f64();
        let hosts = self.agents.len().max(1) as f64;
        let h_end = procstat::sample("self");
        let harness = match (&self.harness_start, &h_end) {
            (Some(a), Some(b)) => json!({
                "cpu_seconds": b.cpu_secs - a.cpu_secs,
                "avg_cpu_pct": procstat::cpu_pct(a, b),
                "cpu_ms_per_host_minute": (b.cpu_secs - a.cpu_secs) * 1000.0 / hosts / (wall / 60.0),
                "peak_rss_mb": b.peak_rss_bytes as f64 / 1_048_576.0,
                "rss_bytes_per_host": b.rss_bytes as f64 / hosts,
            }),
            _ => Value::Null,
        };
        let s_end = self.cfg.server_pid.as_deref().and_then(procstat::sample);
        let server = match (&self.server_start, &s_end) {
            (Some(a), Some(b)) => json!({
                "pid": self.cfg.server_pid,
                "cpu_seconds": b.cpu_secs - a.cpu_secs,
                "avg_cpu_pct": procstat::cpu_pct(a, b),
                "cpu_ms_per_host_minute": (b.cpu_secs - a.cpu_secs) * 1000.0 / hosts / (wall / 60.0),
                "rss_start_mb": a.rss_bytes as f64 / 1_048_576.0,
                "rss_end_mb": b.rss_bytes as f64 / 1_048_576.0,
                "peak_rss_mb": b.peak_rss_bytes as f64 / 1_048_576.0,
                "rss_growth_bytes_per_host": (b.rss_bytes as f64 - a.rss_bytes as f64) / hosts,
            }),
            _ => Value::Null,
        };
        let m = &self.fleet.metrics;
        let timeline = self.timeline.lock().map(|t| t.clone()).unwrap_or_default();
        let cost = json!({
            "wall_seconds": wall,
            "hosts": self.agents.len(),
            "enrolled": m.enrolled.load(Ordering::Relaxed),
            "reenrollments": m.reenrollments.load(Ordering::Relaxed),
            "lines_generated": m.lines_generated.load(Ordering::Relaxed),
            "lines_acked": m.lines_acked.load(Ordering::Relaxed),
            "lines_dropped_by_buffer_cap": m.lines_dropped.load(Ordering::Relaxed),
            "lines_still_buffered": self.agents.iter().map(|a| a.buffered()).sum::<usize>(),
            "distributed_answers": m.distributed_answered.load(Ordering::Relaxed),
            "carves_completed": m.carves_completed.load(Ordering::Relaxed),
            "connections_opened": self.fleet.target.connects.load(Ordering::Relaxed),
            "timeouts_by_stage": by_stage(&self.fleet.target.timeouts),
            "failures_by_stage": by_stage(&self.fleet.target.failures),
            "harness": harness,
            "server": server,
        });
        (cost, timeline)
    }

    async fn wait_enrolled(&self, want: u64, timeout: Duration) -> bool {
        let start = Instant::now();
        while self.fleet.metrics.enrolled.load(Ordering::Relaxed) < want {
            if start.elapsed() > timeout {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        true
    }
}

/// Runs the configured mode; returns mode-specific results.
pub async fn run(
    fleet: Fleet,
    cfg: RunCfg,
    admin: Option<Arc<AdminClient>>,
) -> anyhow::Result<(Value, Value, Vec<Tick>)> {
    let release = tokio::sync::watch::channel(false);
    let mut fleet = fleet;
    if cfg.mode == Mode::Storm {
        fleet.backlog_secs = cfg.outage.as_secs();
        fleet.release = Some(release.1.clone());
    }
    let mut r = Runner::new(fleet.clone(), cfg.clone());
    r.start_monitor();
    let result = match cfg.mode {
        Mode::Steady => {
            r.spawn(cfg.hosts, cfg.ramp).await;
            // Ctrl-C ends the run early; the report is still written.
            tokio::select! {
                _ = tokio::time::sleep(cfg.duration.saturating_sub(cfg.ramp)) => {}
                _ = tokio::signal::ctrl_c() => eprintln!("interrupted: stopping and writing the report"),
            }
            json!({"mode": "steady"})
        }
        Mode::Sweep => sweep(&mut r, &fleet, &cfg.sweep).await,
        Mode::LiveQuery if cfg.live_single > 0 => {
            single_host_campaigns(&mut r, &fleet, &cfg, admin).await?
        }
        Mode::LiveQuery => live_query(&mut r, &fleet, &cfg, admin.as_deref()).await?,
        Mode::Storm => {
            r.spawn(cfg.hosts, cfg.ramp).await;
            let all = r.wait_enrolled(cfg.hosts as u64, cfg.storm_timeout).await;
            // Let every agent build its backlog, then end the outage at once.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let backlog: usize = r.agents().iter().map(|a| a.buffered()).sum();
            // Drained: every line an agent held when the outage ended has
            // left its buffer (acknowledged, or dropped by its cap), while
            // the agents go on logging (their buffers are never all empty
            // at once).
            let marks: Vec<_> = r.agents().iter().map(|a| a.backlog_mark()).collect();
            let behind = |r: &Runner| {
                r.agents()
                    .iter()
                    .zip(&marks)
                    .filter(|(a, m)| !a.sent_past(**m))
                    .count()
            };
            let t0 = Instant::now();
            let _ = release.0.send(true);
            let mut drained = None;
            let mut left = marks.len();
            while t0.elapsed() < cfg.storm_timeout {
                tokio::time::sleep(Duration::from_millis(500)).await;
                left = behind(&r);
                if left == 0 {
                    drained = Some(t0.elapsed().as_secs_f64());
                    break;
                }
            }
            json!({"mode": "storm", "all_enrolled": all, "outage_seconds": cfg.outage.as_secs(), "backlog_lines": backlog,
                   "drain_seconds": drained, "drained": drained.is_some(), "agents_with_backlog_left": left})
        }
    };
    let (cost, timeline) = r.stop().await;
    Ok((result, cost, timeline))
}

async fn sweep(r: &mut Runner, fleet: &Fleet, s: &SweepCfg) -> Value {
    let mut steps = Vec::new();
    let mut knee = None;
    let mut reason = String::from("reached --sweep-max");
    let mut hosts = 0;
    let mut next = s.start;
    while hosts < s.max_hosts {
        let add = next.min(s.max_hosts - hosts);
        r.spawn(add, s.step_duration / 4).await;
        hosts += add;
        next = s.step;
        // Let the level settle, then judge the rest of the step.
        tokio::time::sleep(s.step_duration / 4).await;
        let (req0, err0) = fleet.metrics.totals();
        let _ = fleet.metrics.take_interval();
        let t0 = Instant::now();
        tokio::time::sleep(s.step_duration / 2).await;
        let (per, _, hist) = fleet.metrics.take_interval();
        let (req1, err1) = fleet.metrics.totals();
        let secs = t0.elapsed().as_secs_f64();
        let requests = req1 - req0;
        let error_rate = if requests == 0 {
            0.0
        } else {
            (err1 - err0) as f64 / requests as f64
        };
        let p99 = percentile(&hist, 99.0);
        let enrolled = fleet.metrics.enrolled.load(Ordering::Relaxed);
        let _ = per;
        steps.push(json!({"hosts": hosts, "enrolled": enrolled, "requests_per_s": requests as f64 / secs, "error_rate": error_rate, "p99_ms": p99}));
        let lagging = (enrolled as f64) < hosts as f64 * 0.98;
        if error_rate > s.max_error_rate || p99 > s.max_p99_ms || lagging {
            reason = if error_rate > s.max_error_rate {
                format!(
                    "error rate {:.2}% above {:.2}% at {hosts} hosts",
                    error_rate * 100.0,
                    s.max_error_rate * 100.0
                )
            } else if p99 > s.max_p99_ms {
                format!(
                    "p99 {p99:.0} ms above {:.0} ms at {hosts} hosts",
                    s.max_p99_ms
                )
            } else {
                format!("only {enrolled} of {hosts} hosts enrolled within the step")
            };
            break;
        }
        knee = Some(hosts);
    }
    json!({"mode": "sweep", "knee_hosts": knee, "stopped_because": reason, "steps": steps})
}

/// Starts every host, waits until all enrolled, then lets the fleet settle
/// for the warm-up.
async fn enroll_and_settle(r: &mut Runner, cfg: &RunCfg) -> anyhow::Result<()> {
    r.spawn(cfg.hosts, cfg.ramp).await;
    anyhow::ensure!(
        r.wait_enrolled(cfg.hosts as u64, cfg.live_timeout).await,
        "not every host enrolled"
    );
    tokio::time::sleep(cfg.live_warmup).await;
    Ok(())
}

/// The `p`th percentile (nearest rank) of sorted `v`; none when empty.
fn quantile(v: &[f64], p: f64) -> Option<f64> {
    (!v.is_empty()).then(|| v[((p / 100.0) * (v.len() - 1) as f64).round() as usize])
}

/// p50 / p90 / p99 / max of `v` (sorted in place), in its own unit.
fn spread(v: &mut [f64]) -> Value {
    v.sort_by(f64::total_cmp);
    let q = |p| quantile(v, p);
    json!({"p50": q(50.0), "p90": q(90.0), "p99": q(99.0), "max": q(100.0), "n": v.len()})
}

/// p50, p99 (ms) and the request count of a latency window.
fn latency_summary(h: &[u64]) -> Value {
    json!({"p50": percentile(h, 50.0), "p99": percentile(h, 99.0), "requests": h.iter().sum::<u64>()})
}

/// The operator API client live-query mode needs.
fn need_admin<A>(admin: Option<A>) -> anyhow::Result<A> {
    admin.ok_or_else(|| anyhow::anyhow!("live-query mode needs --admin-url and --admin-token"))
}

/// `--live-single N`: N campaigns created at once, each to one simulated
/// host (by hostname), while the whole fleet keeps checking in. Reports
/// how long each took to be answered, and the agents' request latency
/// (every endpoint, and the distributed read alone: the check-in) over a
/// window before the campaigns against a window of the same length from
/// their creation.
async fn single_host_campaigns(
    r: &mut Runner,
    fleet: &Fleet,
    cfg: &RunCfg,
    admin: Option<Arc<AdminClient>>,
) -> anyhow::Result<Value> {
    let admin = need_admin(admin)?;
    enroll_and_settle(r, cfg).await?;
    let n = cfg.live_single.min(cfg.hosts);
    let read = [Endpoint::DistributedRead];
    let snap = || {
        (
            fleet.metrics.latencies(&ENDPOINTS),
            fleet.metrics.latencies(&read),
        )
    };
    let before0 = snap();
    tokio::time::sleep(cfg.live_window).await;
    let before1 = snap();
    // Distinct hosts, picked at random.
    let mut picks: Vec<String> = r
        .agents()
        .iter()
        .map(|a| a.machine.hostname.clone())
        .collect();
    fastrand::shuffle(&mut picks);
    picks.truncate(n);
    let t0 = Instant::now();
    let mut creating = tokio::task::JoinSet::new();
    for host in picks {
        let admin = admin.clone();
        let body = json!({"sql": cfg.live_sql, "hosts": [host], "expires_in": cfg.live_timeout.as_secs().max(60)});
        creating.spawn(async move {
            let sent = Instant::now();
            let reply = admin.call("POST", "/api/v1/campaigns", Some(&body)).await;
            (sent, sent.elapsed(), reply)
        });
    }
    let mut created = Vec::new();
    let mut create_ms = Vec::new();
    let mut refused = 0usize;
    let mut refusal = None;
    while let Some(done) = creating.join_next().await {
        let (sent, took, reply) = done?;
        create_ms.push(took.as_secs_f64() * 1000.0);
        match reply {
            Ok((st, v)) if (200..300).contains(&st) => {
                created.push((v["id"].as_str().unwrap_or_default().to_owned(), sent));
            }
            Ok((st, v)) => {
                refused += 1;
                refusal.get_or_insert_with(|| format!("{st}: {v}"));
            }
            Err(e) => {
                refused += 1;
                refusal.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let answered_by = |id: &str| -> Option<Instant> {
        let m = fleet.answers.by_query.lock().ok()?;
        m.get(id)?.first().map(|a| a.write_done)
    };
    while t0.elapsed() < cfg.live_timeout && created.iter().any(|(id, _)| answered_by(id).is_none())
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut answer_s: Vec<f64> = created
        .iter()
        .filter_map(|(id, sent)| Some(answered_by(id)?.duration_since(*sent).as_secs_f64()))
        .collect();
    let all_answered = t0.elapsed();
    // The window from the campaigns' creation, as long as the one before.
    if let Some(rest) = cfg.live_window.checked_sub(t0.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let during1 = snap();
    Ok(json!({
        "mode": "live-query",
        "single_host_campaigns": n,
        "sql": cfg.live_sql,
        "created": created.len(),
        "refused": refused,
        "first_refusal": refusal,
        "create_ms": spread(&mut create_ms),
        "answered": answer_s.len(),
        "seconds_to_answer": spread(&mut answer_s),
        "seconds_until_all_answered": all_answered.as_secs_f64(),
        "window_seconds": cfg.live_window.as_secs_f64(),
        "every_endpoint_ms": {
            "before": latency_summary(&window(&before0.0, &before1.0)),
            "during": latency_summary(&window(&before1.0, &during1.0)),
        },
        "distributed_read_ms": {
            "before": latency_summary(&window(&before0.1, &before1.1)),
            "during": latency_summary(&window(&before1.1, &during1.1)),
        },
    }))
}

async fn live_query(
    r: &mut Runner,
    fleet: &Fleet,
    cfg: &RunCfg,
    admin: Option<&AdminClient>,
) -> anyhow::Result<Value> {
    let admin = need_admin(admin)?;
    enroll_and_settle(r, cfg).await?;
    let t0 = Instant::now();
    let c = admin
        .ok("POST", "/api/v1/campaigns", &json!({"sql": cfg.live_sql, "all": true, "expires_in": cfg.live_timeout.as_secs().max(60)}))
        .await?;
    let created = t0.elapsed();
    let id = c["id"].as_str().unwrap_or_default().to_owned();
    let server_targeted = c["coverage"]["targeted"].as_u64().unwrap_or(0);
    // Percentages are over the hosts this run simulates: the server may
    // also target hosts enrolled by earlier runs, which never answer.
    let targeted = cfg.hosts as u64;
    loop {
        let n = fleet
            .answers
            .by_query
            .lock()
            .map(|m| m.get(&id).map_or(0, Vec::len))
            .unwrap_or(0);
        if n as u64 >= targeted || t0.elapsed() > cfg.live_timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answers = fleet
        .answers
        .by_query
        .lock()
        .map(|m| m.get(&id).cloned().unwrap_or_default())
        .unwrap_or_default();
    let mut done: Vec<f64> = answers
        .iter()
        .map(|a| a.write_done.duration_since(t0).as_secs_f64())
        .collect();
    done.sort_by(f64::total_cmp);
    let mut added: Vec<f64> = answers
        .iter()
        .map(|a| (a.read_done - a.read_sent + (a.write_done - a.write_sent)).as_secs_f64() * 1000.0)
        .collect();
    added.sort_by(f64::total_cmp);
    let mut wait: Vec<f64> = answers
        .iter()
        .map(|a| a.read_sent.saturating_duration_since(t0).as_secs_f64())
        .collect();
    wait.sort_by(f64::total_cmp);
    let at = |v: &[f64], p: f64| -> Option<f64> {
        if targeted == 0 {
            return None;
        }
        let need = ((p / 100.0) * targeted as f64).ceil().max(1.0) as usize;
        v.get(need - 1).copied()
    };
    let q = |v: &[f64], p: f64| quantile(v, p).unwrap_or(0.0);
    let (st, detail) = admin
        .call("GET", &format!("/api/v1/campaigns/{id}"), None)
        .await?;
    Ok(json!({
        "mode": "live-query",
        "campaign": id,
        "sql": cfg.live_sql,
        "targeted": targeted,
        "server_targeted": server_targeted,
        "answered": answers.len(),
        "create_ms": created.as_secs_f64() * 1000.0,
        "seconds_to_50pct": at(&done, 50.0),
        "seconds_to_90pct": at(&done, 90.0),
        "seconds_to_99pct": at(&done, 99.0),
        "seconds_to_100pct": at(&done, 100.0),
        "poll_wait_s": {"p50": q(&wait, 50.0), "p99": q(&wait, 99.0), "max": q(&wait, 100.0)},
        "server_added_ms": {"p50": q(&added, 50.0), "p90": q(&added, 90.0), "p99": q(&added, 99.0), "max": q(&added, 100.0)},
        "server_coverage": if st == 200 { detail["coverage"].clone() } else { Value::Null },
    }))
}

/// Per-stage request counts ([`Stage`]) as the report reads them.
fn by_stage(counts: &[std::sync::atomic::AtomicUsize; 3]) -> Value {
    let n = |stage: Stage| counts[stage as usize].load(Ordering::Relaxed);
    json!({
        "connecting": n(Stage::Connecting),
        "sending": n(Stage::Sending),
        "awaiting_answer": n(Stage::Awaiting),
    })
}
