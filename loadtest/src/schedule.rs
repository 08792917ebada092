//! The agent's schedule and log buffer.
//!
//! Queries come from the config the agent actually received (`schedule`
//! and inline `packs`, §5.2–5.4), each with an interval splayed once by
//! ±`schedule_splay_percent`, firing when `unix_time % splayed == 0`.
//! Differential state is kept compactly per query (a sliding window of row
//! ids), and buffered lines are small specs rendered to JSON only when
//! sent, so tens of thousands of agents with large backlogs fit in memory.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::tables::{push_str, push_u64, shape, table_of, write_row};

/// Options from the config that change agent behaviour (§5.2, §10).
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub logger_tls_period_ms: u64,
    pub logger_tls_max_lines: usize,
    pub logger_tls_compress: bool,
    pub logger_event_type: bool,
    pub buffered_log_max: usize,
    pub distributed_interval_ms: u64,
    pub schedule_splay_percent: u64,
    pub decorations: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            logger_tls_period_ms: 4_000,
            logger_tls_max_lines: 1024,
            logger_tls_compress: false,
            logger_event_type: true,
            buffered_log_max: 1_000_000,
            distributed_interval_ms: 60_000,
            schedule_splay_percent: 10,
            decorations: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ScheduledQuery {
    pub name: Arc<str>,
    pub table: Arc<str>,
    pub splayed_interval: u64,
    pub snapshot: bool,
    pub removed: bool,
    /// Differential state: rows `lo .. lo + rows` are present.
    pub lo: u64,
    pub rows: u64,
    pub counter: u64,
    pub churn_per_mille: u32,
    pub known_table: bool,
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => Some(s == "true"),
        Value::Number(n) => Some(n.as_u64() != Some(0)),
        _ => None,
    }
}

/// Parses a received config. `base` holds the flags' command-line values.
pub fn parse_config(
    cfg: &Map<String, Value>,
    base: &Options,
    seed: u64,
) -> (Vec<ScheduledQuery>, Options) {
    let mut o = base.clone();
    if let Some(Value::Object(opts)) = cfg.get("options") {
        let ms = |v: &Value| as_u64(v).map(|s| s * 1000);
        if let Some(v) = opts.get("logger_tls_period").and_then(ms) {
            o.logger_tls_period_ms = v.max(1000);
        }
        if let Some(v) = opts.get("logger_tls_max_lines").and_then(as_u64) {
            o.logger_tls_max_lines = v as usize;
        }
        if let Some(v) = opts.get("logger_tls_compress").and_then(as_bool) {
            o.logger_tls_compress = v;
        }
        if let Some(v) = opts.get("logger_event_type").and_then(as_bool) {
            o.logger_event_type = v;
        }
        if let Some(v) = opts.get("buffered_log_max").and_then(as_u64) {
            o.buffered_log_max = v as usize;
        }
        if let Some(v) = opts.get("distributed_interval").and_then(ms) {
            o.distributed_interval_ms = v.max(1000);
        }
        if let Some(v) = opts.get("schedule_splay_percent").and_then(as_u64) {
            o.schedule_splay_percent = v.min(100);
        }
    }
    o.decorations = cfg
        .get("decorators")
        .is_some_and(|d| d.as_object().is_some_and(|m| !m.is_empty()));
    let mut queries = Vec::new();
    let mut add = |name: String, q: &Value| {
        let Some(sql) = q.get("query").and_then(Value::as_str) else {
            return;
        };
        let interval = q.get("interval").and_then(as_u64).unwrap_or(3600);
        if !(1..=604_800).contains(&interval) {
            return;
        }
        let h = crate::osinfo::splitmix(seed ^ name.len() as u64 ^ interval);
        let splay = interval * o.schedule_splay_percent / 100;
        let splayed = if splay == 0 {
            interval
        } else {
            (interval - splay + h % (2 * splay + 1)).max(1)
        };
        let table = table_of(sql).unwrap_or_default();
        let sh = shape(&table);
        queries.push(ScheduledQuery {
            name: name.into(),
            table: table.into(),
            splayed_interval: splayed,
            snapshot: q.get("snapshot").and_then(as_bool).unwrap_or(false),
            removed: q.get("removed").and_then(as_bool).unwrap_or(true),
            lo: 0,
            rows: sh.map_or(0, |s| u64::from(s.rows)),
            counter: 0,
            churn_per_mille: sh.map_or(0, |s| s.churn_per_mille),
            known_table: sh.is_some(),
        });
    };
    if let Some(Value::Object(s)) = cfg.get("schedule") {
        for (name, q) in s {
            add(name.clone(), q);
        }
    }
    if let Some(Value::Object(packs)) = cfg.get("packs") {
        for (pack, p) in packs {
            if let Some(Value::Object(qs)) = p.get("queries") {
                for (name, q) in qs {
                    add(format!("pack_{pack}_{name}"), q);
                }
            }
        }
    }
    (queries, o)
}

/// Buffered result lines, rendered when sent. One spec holds one line,
/// except [`ResultSpec::Events`]: the event-format lines of one run that
/// added (or removed) a range of rows, one line per row, so an hour's
/// backlog costs a few specs per query run rather than one per line.
#[derive(Debug, Clone)]
pub enum ResultSpec {
    Events {
        name: Arc<str>,
        table: Arc<str>,
        /// Rows `ids.0 .. ids.1`, one line each; the lines before `ids.0`
        /// have been sent or purged.
        ids: (u64, u64),
        added: bool,
        unix: u64,
        counter: u64,
    },
    Snapshot {
        name: Arc<str>,
        table: Arc<str>,
        lo: u64,
        rows: u64,
        unix: u64,
    },
    Batched {
        name: Arc<str>,
        table: Arc<str>,
        removed: (u64, u64),
        added: (u64, u64),
        unix: u64,
        counter: u64,
    },
}

#[derive(Debug, Clone)]
pub struct StatusSpec {
    pub unix: u64,
    pub severity: u8,
    pub message: Arc<str>,
}

/// The RocksDB-backed buffer of the real agent, in memory: result and
/// status lines in the order they were logged, counted in lines.
#[derive(Debug, Default)]
pub struct LogBuffer {
    results: VecDeque<ResultSpec>,
    result_lines: usize,
    statuses: VecDeque<StatusSpec>,
    /// Lines that ever left the front of each queue (sent or purged).
    results_gone: u64,
    statuses_gone: u64,
}

/// Where the buffer's newest lines end, per queue: once as many lines
/// have left each queue, every line buffered when the mark was taken has
/// left ([`LogBuffer::mark`], [`LogBuffer::past`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    results: u64,
    statuses: u64,
}

impl LogBuffer {
    /// Buffered lines of both types.
    pub fn len(&self) -> usize {
        self.result_lines + self.statuses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn results_len(&self) -> usize {
        self.result_lines
    }

    pub fn statuses_len(&self) -> usize {
        self.statuses.len()
    }

    pub fn push_result(&mut self, r: ResultSpec) {
        let n = r.lines();
        if n > 0 {
            self.result_lines += n;
            self.results.push_back(r);
        }
    }

    pub fn push_status(&mut self, s: StatusSpec) {
        self.statuses.push_back(s);
    }

    /// The end of what is buffered now.
    pub fn mark(&self) -> Mark {
        Mark {
            results: self.results_gone + self.result_lines as u64,
            statuses: self.statuses_gone + self.statuses.len() as u64,
        }
    }

    /// Whether every line buffered at `m` has left the buffer (the queues
    /// are FIFO; lines logged since do not count).
    pub fn past(&self, m: Mark) -> bool {
        self.results_gone >= m.results && self.statuses_gone >= m.statuses
    }

    /// The oldest `n` result lines, each as its spec and its row within
    /// the spec (0 for specs of one line).
    pub fn results(&self, n: usize) -> impl Iterator<Item = (&ResultSpec, u64)> {
        self.results
            .iter()
            .flat_map(|r| (0..r.lines() as u64).map(move |k| (r, k)))
            .take(n)
    }

    pub fn statuses(&self, n: usize) -> impl Iterator<Item = &StatusSpec> {
        self.statuses.iter().take(n)
    }

    /// Forgets the oldest `n` result lines (sent, or purged).
    pub fn drain_results(&mut self, n: usize) {
        let mut left = n.min(self.result_lines);
        self.result_lines -= left;
        self.results_gone += left as u64;
        while left > 0 {
            let Some(front) = self.results.front_mut() else {
                break;
            };
            let here = front.lines();
            if here <= left {
                left -= here;
                self.results.pop_front();
            } else {
                if let ResultSpec::Events { ids, .. } = front {
                    ids.0 += left as u64;
                }
                left = 0;
            }
        }
    }

    /// Forgets the oldest `n` status lines.
    pub fn drain_statuses(&mut self, n: usize) {
        let k = n.min(self.statuses.len());
        self.statuses.drain(..k);
        self.statuses_gone += k as u64;
    }

    /// Drops the oldest lines beyond `max` (0 = unlimited); returns how many.
    pub fn purge(&mut self, max: usize) -> usize {
        let mut dropped = 0;
        while max > 0 && self.len() > max {
            let over = self.len() - max;
            // The oldest of either type goes first: a status line alone,
            // or as many result lines of the oldest spec as are over.
            let r = self.results.front().map(|r| (r.unix(), r.lines()));
            let s = self.statuses.front().map(|s| s.unix);
            match (r, s) {
                (Some((a, _)), Some(b)) if b < a => {
                    self.drain_statuses(1);
                    dropped += 1;
                }
                (Some((_, lines)), _) => {
                    let k = lines.min(over);
                    self.drain_results(k);
                    dropped += k;
                }
                (None, Some(_)) => {
                    self.drain_statuses(1);
                    dropped += 1;
                }
                (None, None) => break,
            }
        }
        dropped
    }

    /// What one flush scans (§6.1): up to `max` keys, results sorting
    /// before status, so status waits while results exceed the cap.
    pub fn scan(&self, max: usize) -> (usize, usize) {
        let r = self.result_lines.min(max);
        let s = self.statuses.len().min(max - r);
        (r, s)
    }
}

impl ResultSpec {
    pub fn unix(&self) -> u64 {
        match self {
            ResultSpec::Events { unix, .. }
            | ResultSpec::Snapshot { unix, .. }
            | ResultSpec::Batched { unix, .. } => *unix,
        }
    }

    /// How many log lines this spec stands for.
    pub fn lines(&self) -> usize {
        match self {
            ResultSpec::Events { ids, .. } => ids.1.saturating_sub(ids.0) as usize,
            ResultSpec::Snapshot { .. } | ResultSpec::Batched { .. } => 1,
        }
    }
}

/// Runs `q` at `unix` and buffers what the agent would log.
pub fn fire(
    q: &mut ScheduledQuery,
    unix: u64,
    event_format: bool,
    buf: &mut LogBuffer,
    rng: &mut fastrand::Rng,
) -> usize {
    if !q.known_table {
        buf.push_status(StatusSpec {
            unix,
            severity: 2,
            message: format!(
                "Error executing scheduled query {}: no such table: {}",
                q.name, q.table
            )
            .into(),
        });
        return 1;
    }
    if q.snapshot {
        buf.push_result(ResultSpec::Snapshot {
            name: q.name.clone(),
            table: q.table.clone(),
            lo: q.lo,
            rows: q.rows,
            unix,
        });
        q.lo += churn(q, rng);
        return 1;
    }
    let (removed, added, counter) = if q.counter == 0 && q.lo == 0 {
        // The first run in an epoch: every row is "added", counter 0.
        let r = ((0, 0), (0, q.rows), 0);
        q.lo = 0;
        q.counter = 1;
        r
    } else {
        let k = churn(q, rng);
        if k == 0 {
            return 0;
        }
        let r = (
            (q.lo, q.lo + k),
            (q.lo + q.rows, q.lo + q.rows + k),
            q.counter,
        );
        q.lo += k;
        q.counter += 1;
        r
    };
    let removed = if q.removed { removed } else { (0, 0) };
    if !event_format {
        buf.push_result(ResultSpec::Batched {
            name: q.name.clone(),
            table: q.table.clone(),
            removed,
            added,
            unix,
            counter,
        });
        return 1;
    }
    let mut n = 0;
    for (ids, added) in [(removed, false), (added, true)] {
        let r = ResultSpec::Events {
            name: q.name.clone(),
            table: q.table.clone(),
            ids,
            added,
            unix,
            counter,
        };
        n += r.lines();
        buf.push_result(r);
    }
    n
}

fn churn(q: &ScheduledQuery, rng: &mut fastrand::Rng) -> u64 {
    let expect = q.rows * u64::from(q.churn_per_mille);
    let whole = expect / 1000;
    let frac = expect % 1000;
    whole + u64::from(rng.u64(0..1000) < frac)
}

/// `asctime()` of UTC plus " UTC", day padded with a space (§6.4).
pub fn calendar_time(unix: u64) -> String {
    let mut out = String::with_capacity(32);
    push_calendar_time(&mut out, unix);
    out
}

/// Appends [`calendar_time`] to `out` (no quotes).
pub fn push_calendar_time(out: &mut String, unix: u64) {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let wd = ((days + 4) % 7) as usize;
    const WD: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MO: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let two = |out: &mut String, n: u64, pad: char| {
        out.push(if n < 10 {
            pad
        } else {
            char::from(b'0' + (n / 10 % 10) as u8)
        });
        out.push(char::from(b'0' + (n % 10) as u8));
    };
    out.push_str(WD[wd]);
    out.push(' ');
    out.push_str(MO[(m - 1) as usize]);
    out.push(' ');
    two(out, u64::from(d), ' ');
    out.push(' ');
    two(out, secs / 3600, '0');
    out.push(':');
    two(out, secs % 3600 / 60, '0');
    out.push(':');
    two(out, secs % 60, '0');
    out.push(' ');
    out.push_str(itoa::Buffer::new().format(y));
    out.push_str(" UTC");
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Context for rendering lines.
#[derive(Debug, Clone)]
pub struct Render<'a> {
    pub host_identifier: &'a str,
    pub seed: u64,
    /// The decorations object, already JSON (`{"host_uuid":...}`).
    pub decorations: Option<&'a str>,
}

/// Lines are written straight to JSON text, members in the order osquery
/// writes them: building a `serde_json::Value` tree per line and row cost
/// the harness most of its CPU (docs/benchmarks/performance.md).
impl Render<'_> {
    fn base(&self, out: &mut String, name: &str, unix: u64, counter: u64) {
        out.push_str("{\"name\":");
        push_str(out, name);
        out.push_str(",\"hostIdentifier\":");
        push_str(out, self.host_identifier);
        out.push_str(",\"calendarTime\":\"");
        push_calendar_time(out, unix);
        out.push_str("\",\"unixTime\":");
        push_u64(out, unix);
        out.push_str(",\"epoch\":0,\"counter\":");
        push_u64(out, counter);
        out.push_str(",\"numerics\":false");
        if let Some(d) = self.decorations {
            out.push_str(",\"decorations\":");
            out.push_str(d);
        }
    }

    fn rows(&self, out: &mut String, table: &str, (a, b): (u64, u64)) {
        out.push('[');
        for id in a..b {
            if id > a {
                out.push(',');
            }
            write_row(out, table, self.seed, id);
        }
        out.push(']');
    }

    /// Appends line `k` of `r` (0 unless `r` holds several) to `out` as
    /// JSON.
    pub fn result_into(&self, out: &mut String, r: &ResultSpec, k: u64) {
        match r {
            ResultSpec::Events {
                name,
                table,
                ids,
                added,
                unix,
                counter,
            } => {
                self.base(out, name, *unix, *counter);
                out.push_str(",\"columns\":");
                write_row(out, table, self.seed, ids.0 + k);
                out.push_str(if *added {
                    ",\"action\":\"added\"}"
                } else {
                    ",\"action\":\"removed\"}"
                });
            }
            ResultSpec::Snapshot {
                name,
                table,
                lo,
                rows: n,
                unix,
            } => {
                self.base(out, name, *unix, 0);
                out.push_str(",\"snapshot\":");
                self.rows(out, table, (*lo, lo + n));
                out.push_str(",\"action\":\"snapshot\"}");
            }
            ResultSpec::Batched {
                name,
                table,
                removed,
                added,
                unix,
                counter,
            } => {
                self.base(out, name, *unix, *counter);
                out.push_str(",\"diffResults\":{\"removed\":");
                self.rows(out, table, *removed);
                out.push_str(",\"added\":");
                self.rows(out, table, *added);
                out.push_str("}}");
            }
        }
    }

    /// Appends status line `s` to `out` as JSON.
    pub fn status_into(&self, out: &mut String, s: &StatusSpec) {
        use std::fmt::Write;
        out.push_str("{\"hostIdentifier\":");
        push_str(out, self.host_identifier);
        out.push_str(",\"calendarTime\":\"");
        push_calendar_time(out, s.unix);
        out.push('"');
        let (file, line) = if s.severity >= 2 {
            ("scheduler.cpp", 108)
        } else {
            ("init.cpp", 652)
        };
        let _ = write!(
            out,
            ",\"unixTime\":{},\"severity\":{},\"filename\":\"{file}\",\"line\":{line},\"message\":",
            s.unix, s.severity
        );
        push_str(out, &s.message);
        out.push_str(",\"version\":\"5.23.1\"");
        if let Some(d) = self.decorations {
            out.push_str(",\"decorations\":");
            out.push_str(d);
        }
        out.push('}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_render_as_osquery_writes_them() {
        let r = Render {
            host_identifier: "web-\"1\"",
            seed: 7,
            decorations: Some(r#"{"hostname":"web"}"#),
        };
        let mut out = String::new();
        r.result_into(
            &mut out,
            &ResultSpec::Batched {
                name: "procs".into(),
                table: "processes".into(),
                removed: (0, 1),
                added: (1, 3),
                unix: 1_717_496_431,
                counter: 2,
            },
            0,
        );
        let v: Value = serde_json::from_str(&out).expect("valid JSON");
        assert!(out.starts_with(r#"{"name":"procs","hostIdentifier":"web-\"1\"","#));
        assert_eq!(v["diffResults"]["added"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            v["diffResults"]["removed"][0],
            json!(crate::tables::row("processes", 7, 0))
        );
        assert_eq!(v["unixTime"], 1_717_496_431);
        assert_eq!(v["decorations"]["hostname"], "web");
        out.clear();
        r.status_into(
            &mut out,
            &StatusSpec {
                unix: 5,
                severity: 2,
                message: "no such table: \"x\"".into(),
            },
        );
        let v: Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(v["message"], "no such table: \"x\"");
        assert_eq!(v["severity"], 2);
        assert_eq!(v["filename"], "scheduler.cpp");
    }

    #[test]
    fn calendar_time_matches_asctime() {
        assert_eq!(calendar_time(1_717_496_431), "Tue Jun  4 10:20:31 2024 UTC");
        assert_eq!(calendar_time(0), "Thu Jan  1 00:00:00 1970 UTC");
    }

    #[test]
    fn config_parsing_splays_and_reads_packs_and_options() {
        let cfg = json!({"options": {"logger_tls_period": 10, "distributed_interval": 5, "logger_tls_compress": "true"},
            "schedule": {"procs": {"query": "SELECT * FROM processes", "interval": 60}},
            "packs": {"inv": {"queries": {"users": {"query": "SELECT * FROM users", "interval": 3600, "snapshot": true}}}},
            "decorators": {"load": ["SELECT 1"]}});
        let (qs, o) = parse_config(
            cfg.as_object().unwrap_or(&Map::new()),
            &Options::default(),
            42,
        );
        assert_eq!(o.logger_tls_period_ms, 10_000);
        assert_eq!(o.distributed_interval_ms, 5_000);
        assert!(o.logger_tls_compress && o.decorations);
        assert_eq!(qs.len(), 2);
        let procs = qs
            .iter()
            .find(|q| &*q.name == "procs")
            .map(|q| q.splayed_interval)
            .unwrap_or(0);
        assert!((54..=66).contains(&procs), "{procs}");
        assert!(
            qs.iter()
                .any(|q| &*q.name == "pack_inv_users" && q.snapshot)
        );
    }

    #[test]
    fn differential_runs_emit_adds_then_churn() {
        let mut q = parse_config(
            json!({"schedule": {"p": {"query": "SELECT * FROM processes", "interval": 60}}})
                .as_object()
                .unwrap_or(&Map::new()),
            &Options::default(),
            1,
        )
        .0
        .remove(0);
        let mut buf = LogBuffer::default();
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(
            fire(&mut q, 100, true, &mut buf, &mut rng),
            180,
            "first run adds every row"
        );
        let mut later = 0;
        for t in 0..10 {
            later += fire(&mut q, 200 + t, true, &mut buf, &mut rng);
        }
        assert!(later > 50 && later < 250, "{later}");
        let (r, s) = buf.scan(1024);
        assert_eq!((r, s), (buf.results_len().min(1024), 0));
    }

    #[test]
    fn scan_caps_results_and_status_together() {
        let mut buf = LogBuffer::default();
        for i in 0..1500 {
            buf.push_result(ResultSpec::Snapshot {
                name: "q".into(),
                table: "uptime".into(),
                lo: 0,
                rows: 1,
                unix: i,
            });
        }
        buf.push_status(StatusSpec {
            unix: 1,
            severity: 0,
            message: "x".into(),
        });
        assert_eq!(
            buf.scan(1024),
            (1024, 0),
            "status waits while results exceed the cap"
        );
        buf.drain_results(1490);
        assert_eq!(buf.scan(1024), (10, 1));
        assert_eq!(buf.purge(5), 6);
    }

    /// An event-format run is one spec for many lines; sending, purging
    /// and rendering see it line by line, in order, and a run split by a
    /// flush resumes at the next row.
    #[test]
    fn event_runs_are_buffered_compactly_and_drained_line_by_line() {
        let mut buf = LogBuffer::default();
        let run = |ids, added, unix| ResultSpec::Events {
            name: "p".into(),
            table: "processes".into(),
            ids,
            added,
            unix,
            counter: 3,
        };
        buf.push_result(run((10, 14), false, 100));
        buf.push_result(run((20, 20), true, 100));
        buf.push_result(run((30, 33), true, 100));
        assert_eq!(buf.results.len(), 2, "an empty run is not kept");
        assert_eq!(buf.results_len(), 7);
        let seen: Vec<(u64, bool)> = buf
            .results(5)
            .map(|(r, k)| match r {
                ResultSpec::Events { ids, added, .. } => (ids.0 + k, *added),
                _ => (0, false),
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (10, false),
                (11, false),
                (12, false),
                (13, false),
                (30, true)
            ]
        );
        buf.drain_results(5);
        assert_eq!(buf.results_len(), 2);
        let render = Render {
            host_identifier: "h",
            seed: 7,
            decorations: None,
        };
        let mut out = String::new();
        let (r, k) = buf.results(1).next().expect("a line left");
        render.result_into(&mut out, r, k);
        let v: Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(v["columns"], json!(crate::tables::row("processes", 7, 31)));
        assert_eq!(v["action"], "added");
        buf.push_status(StatusSpec {
            unix: 101,
            severity: 0,
            message: "x".into(),
        });
        assert_eq!(buf.purge(2), 1, "the oldest result line goes first");
        assert_eq!(buf.results_len(), 1);
        assert_eq!(buf.statuses_len(), 1);
        assert_eq!(buf.purge(1), 1);
        assert_eq!((buf.results_len(), buf.statuses_len()), (0, 1));
    }

    /// A mark is past once every line buffered when it was taken has left
    /// the front of its queue, sent or purged; lines logged afterwards do
    /// not hold it back.
    #[test]
    fn a_backlog_is_past_once_its_lines_left_whatever_came_after() {
        let mut buf = LogBuffer::default();
        let run = |ids, unix| ResultSpec::Events {
            name: "p".into(),
            table: "processes".into(),
            ids,
            added: true,
            unix,
            counter: 1,
        };
        let status = |unix| StatusSpec {
            unix,
            severity: 0,
            message: "x".into(),
        };
        buf.push_result(run((0, 10), 100));
        buf.push_status(status(100));
        buf.push_status(status(101));
        let mark = buf.mark();
        assert!(!buf.past(mark));
        // Logged after the mark.
        buf.push_result(run((10, 15), 200));
        buf.push_status(status(200));
        buf.drain_results(10);
        assert!(!buf.past(mark), "two status lines of the backlog are left");
        buf.drain_statuses(1);
        assert_eq!(buf.purge(6), 1, "the oldest line, a status line, goes");
        assert!(buf.past(mark), "sent or purged, the backlog is gone");
        assert_eq!(buf.len(), 6, "what came after is still there");
    }
}
