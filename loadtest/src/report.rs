//! Reports: a machine-readable `result.json`, a human `report.md`, and
//! `chart.html` (inline SVG: throughput, latency, errors, enrolled hosts
//! and CPU over time; no scripts, opens anywhere).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};

use crate::metrics::{EndpointSummary, Tick};

pub struct Report {
    pub command: String,
    pub machine: String,
    pub params: Value,
    pub result: Value,
    pub cost: Value,
    pub endpoints: Vec<EndpointSummary>,
    pub timeline: Vec<Tick>,
}

impl std::fmt::Debug for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Report")
            .field("command", &self.command)
            .finish()
    }
}

/// The share of a core from which the harness's one thread is taken to be
/// the bottleneck of that second (its own queueing then shows in the
/// latencies it measures).
const SATURATED_PCT: f64 = 90.0;

/// How many seconds of the timeline found the harness's thread at or
/// above [`SATURATED_PCT`], how many seconds were measured, and the peak.
fn harness_saturation(timeline: &[Tick]) -> (usize, usize, f64) {
    let over = timeline
        .iter()
        .filter(|t| t.harness_cpu_pct >= SATURATED_PCT)
        .count();
    let peak = timeline
        .iter()
        .map(|t| t.harness_cpu_pct)
        .fold(0.0, f64::max);
    (over, timeline.len(), peak)
}

fn f(v: &Value, digits: usize) -> String {
    v.as_f64().map_or_else(
        || {
            if v.is_null() {
                "n/a".into()
            } else {
                v.to_string()
            }
        },
        |x| format!("{x:.digits$}"),
    )
}

impl Report {
    pub fn json(&self) -> Value {
        let (over, seconds, peak) = harness_saturation(&self.timeline);
        json!({
            "command": self.command,
            "machine": self.machine,
            "params": self.params,
            "result": self.result,
            "cost": self.cost,
            "endpoints": self.endpoints,
            "timeline": self.timeline,
            "harness_saturation": {"seconds_at_or_above_pct": SATURATED_PCT, "seconds": over, "of": seconds, "peak_pct": peak},
        })
    }

    /// Requests per second per endpoint over the whole run.
    fn rates(&self) -> Vec<(&'static str, f64)> {
        let wall = self.cost["wall_seconds"].as_f64().unwrap_or(1.0).max(1.0);
        self.endpoints
            .iter()
            .map(|e| (e.endpoint, e.requests as f64 / wall))
            .collect()
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Load report: {} mode, {} hosts\n",
            self.result["mode"].as_str().unwrap_or("?"),
            self.cost["hosts"]
        );
        let _ = writeln!(s, "- Command: `{}`", self.command);
        let _ = writeln!(s, "- Machine: {}", self.machine);
        let _ = writeln!(s, "- Parameters: `{}`", self.params);
        let _ = writeln!(
            s,
            "- Wall time: {} s; enrolled {} of {} hosts; re-enrollments {}\n",
            f(&self.cost["wall_seconds"], 0),
            self.cost["enrolled"],
            self.cost["hosts"],
            self.cost["reenrollments"]
        );
        let _ = writeln!(s, "## Requests\n");
        let _ = writeln!(
            s,
            "| endpoint | requests | req/s | ok | error body | node_invalid | transport | p50 ms | p90 ms | p99 ms | p99.9 ms |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
        let rates = self.rates();
        for (e, (_, rate)) in self.endpoints.iter().zip(rates) {
            if e.requests == 0 {
                continue;
            }
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                e.endpoint,
                e.requests,
                rate,
                e.ok,
                e.error_body,
                e.node_invalid,
                e.transport_errors,
                e.p50_ms,
                e.p90_ms,
                e.p99_ms,
                e.p999_ms
            );
        }
        let _ = writeln!(s, "\n## Logs\n");
        let _ = writeln!(
            s,
            "Lines generated {}, acknowledged {}, still buffered at the end {}, dropped by the agent's buffer cap {}.\n",
            self.cost["lines_generated"],
            self.cost["lines_acked"],
            self.cost["lines_still_buffered"],
            self.cost["lines_dropped_by_buffer_cap"]
        );
        let _ = writeln!(s, "## Cost\n");
        let h = &self.cost["harness"];
        let _ = writeln!(
            s,
            "- Harness: {} CPU-s ({}% of one core on average), {} CPU-ms per simulated host per minute, peak RSS {} MB ({} bytes per host).",
            f(&h["cpu_seconds"], 1),
            f(&h["avg_cpu_pct"], 0),
            f(&h["cpu_ms_per_host_minute"], 2),
            f(&h["peak_rss_mb"], 0),
            f(&h["rss_bytes_per_host"], 0)
        );
        let (over, seconds, peak) = harness_saturation(&self.timeline);
        let _ = if over == 0 {
            writeln!(
                s,
                "- The harness's thread stayed below {SATURATED_PCT:.0}% of a core in every one of {seconds} seconds (peak {peak:.0}%)."
            )
        } else {
            writeln!(
                s,
                "- **The harness's thread was at {SATURATED_PCT:.0}% of a core or more in {over} of {seconds} seconds** (peak {peak:.0}%): latencies in those seconds include the harness's own queueing."
            )
        };
        let sv = &self.cost["server"];
        if sv.is_null() {
            let _ = writeln!(
                s,
                "- Server: not measured (pass --server-pid or run it on this machine as `gatehouse`)."
            );
        } else {
            let _ = writeln!(
                s,
                "- Server (pid {}): {} CPU-s ({}% of one core on average), {} CPU-ms per host per minute, RSS {} MB → {} MB (peak {} MB), {} bytes of RSS growth per host.",
                sv["pid"].as_str().unwrap_or("?"),
                f(&sv["cpu_seconds"], 1),
                f(&sv["avg_cpu_pct"], 0),
                f(&sv["cpu_ms_per_host_minute"], 2),
                f(&sv["rss_start_mb"], 0),
                f(&sv["rss_end_mb"], 0),
                f(&sv["peak_rss_mb"], 0),
                f(&sv["rss_growth_bytes_per_host"], 0)
            );
        }
        let _ = writeln!(
            s,
            "- Connections opened: {}",
            self.cost["connections_opened"]
        );
        for (key, what) in [
            (
                "timeouts_by_stage",
                "Requests past the agent's 16 s, by where they were",
            ),
            (
                "failures_by_stage",
                "Requests failed otherwise after the agent's one re-send (reset, closed), by where",
            ),
        ] {
            let t = &self.cost[key];
            if t.as_object()
                .is_some_and(|t| t.values().any(|n| n.as_u64() > Some(0)))
            {
                let _ = writeln!(
                    s,
                    "- {what}: connecting (TCP and TLS) {}, sending {}, waiting for the answer {}",
                    t["connecting"], t["sending"], t["awaiting_answer"]
                );
            }
        }
        let w = &self.cost["connection_wait"];
        if w.is_null() {
            let _ = writeln!(s, "- Connections: one per agent thread, as osqueryd.\n");
        } else {
            let _ = writeln!(
                s,
                "- Shared connections ({}): requests waited for one p50 {} ms, p99 {} ms, longest {} ms (the harness's own limit, not in the latencies above).\n",
                w["connections"],
                f(&w["p50_ms"], 1),
                f(&w["p99_ms"], 1),
                f(&w["max_ms"], 1)
            );
        }
        let _ = writeln!(
            s,
            "## Mode results\n\n```json\n{}\n```",
            serde_json::to_string_pretty(&self.result).unwrap_or_default()
        );
        s
    }

    pub fn html(&self) -> String {
        let series = |name: &str, pick: &dyn Fn(&Tick) -> f64| -> (String, Vec<(f64, f64)>) {
            (
                name.to_owned(),
                self.timeline.iter().map(|t| (t.t, pick(t))).collect(),
            )
        };
        let charts = [
            (
                "Requests per second",
                vec![
                    series("total", &|t| t.requests_per_s),
                    series("errors", &|t| t.errors_per_s),
                ],
            ),
            (
                "Latency (ms, per second)",
                vec![series("p50", &|t| t.p50_ms), series("p99", &|t| t.p99_ms)],
            ),
            (
                "Enrolled hosts",
                vec![series("enrolled", &|t| t.enrolled as f64)],
            ),
            (
                "CPU (% of one core)",
                vec![
                    series("harness", &|t| t.harness_cpu_pct),
                    series("server", &|t| t.server_cpu_pct.unwrap_or(0.0)),
                ],
            ),
        ];
        let mut h = String::from(
            "<!doctype html><meta charset=utf-8><title>Gatehouse load report</title><style>body{font-family:sans-serif;margin:2em}svg{border:1px solid #ccc;margin:0.5em 0}</style>",
        );
        let _ = write!(
            h,
            "<h1>Load report: {} mode, {} hosts</h1><p><code>{}</code></p><p>{}</p>",
            self.result["mode"].as_str().unwrap_or("?"),
            self.cost["hosts"],
            html_escape(&self.command),
            html_escape(&self.machine)
        );
        for (title, lines) in charts {
            h.push_str(&svg_chart(title, &lines));
        }
        h
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("result.json"),
            serde_json::to_vec_pretty(&self.json())?,
        )?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        std::fs::write(dir.join("chart.html"), self.html())?;
        Ok(())
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn svg_chart(title: &str, lines: &[(String, Vec<(f64, f64)>)]) -> String {
    const W: f64 = 900.0;
    const H: f64 = 220.0;
    const PAD: f64 = 45.0;
    const COLORS: [&str; 3] = ["#1f77b4", "#d62728", "#2ca02c"];
    let xmax = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
        .fold(1.0, f64::max);
    let ymax = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(1.0, f64::max)
        * 1.1;
    let mut s = format!(
        "<h3>{}</h3><svg width='{W}' height='{H}' xmlns='http://www.w3.org/2000/svg'>",
        html_escape(title)
    );
    let _ = write!(
        s,
        "<line x1='{PAD}' y1='{}' x2='{W}' y2='{}' stroke='#888'/><line x1='{PAD}' y1='0' x2='{PAD}' y2='{}' stroke='#888'/>",
        H - PAD,
        H - PAD,
        H - PAD
    );
    let _ = write!(
        s,
        "<text x='2' y='12' font-size='11'>{ymax:.1}</text><text x='2' y='{}' font-size='11'>0</text><text x='{}' y='{}' font-size='11'>{xmax:.0} s</text>",
        H - PAD,
        W - 50.0,
        H - PAD + 15.0
    );
    for (i, (name, pts)) in lines.iter().enumerate() {
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| {
                format!(
                    "{:.1},{:.1}",
                    PAD + x / xmax * (W - PAD),
                    (H - PAD) - y / ymax * (H - PAD)
                )
            })
            .collect();
        let c = COLORS[i % COLORS.len()];
        let _ = write!(
            s,
            "<polyline fill='none' stroke='{c}' stroke-width='1.5' points='{}'/>",
            path.join(" ")
        );
        let _ = write!(
            s,
            "<text x='{}' y='{}' font-size='12' fill='{c}'>{}</text>",
            PAD + 10.0 + i as f64 * 110.0,
            H - 8.0,
            html_escape(name)
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(cpu: &[f64]) -> Report {
        Report {
            command: "gatehouse-load".into(),
            machine: "test".into(),
            params: json!({}),
            result: json!({}),
            cost: json!({}),
            endpoints: Vec::new(),
            timeline: cpu
                .iter()
                .enumerate()
                .map(|(i, c)| Tick {
                    t: i as f64,
                    requests_per_s: 0.0,
                    errors_per_s: 0.0,
                    p50_ms: 0.0,
                    p99_ms: 0.0,
                    by_endpoint: Vec::new(),
                    enrolled: 0,
                    harness_cpu_pct: *c,
                    server_cpu_pct: None,
                    server_rss_mb: None,
                })
                .collect(),
        }
    }

    /// A run whose one harness thread neared a full core says so, with how
    /// long; a calm one says it stayed below.
    #[test]
    fn the_report_says_when_the_harness_was_its_own_bottleneck() {
        let busy = report(&[40.0, 95.0, 90.0, 99.5, 60.0]);
        assert_eq!(harness_saturation(&busy.timeline), (3, 5, 99.5));
        assert!(
            busy.markdown()
                .contains("at 90% of a core or more in 3 of 5 seconds** (peak 100%)"),
            "{}",
            busy.markdown()
        );
        assert_eq!(busy.json()["harness_saturation"]["seconds"], 3);
        let calm = report(&[12.0, 89.9, 30.0]);
        assert!(
            calm.markdown()
                .contains("stayed below 90% of a core in every one of 3 seconds (peak 90%)"),
            "{}",
            calm.markdown()
        );
    }
}
