//! Request metrics: per endpoint, outcome counters and latency histograms
//! (log-spaced buckets, lock-free), both cumulative and per interval, plus
//! a once-a-second timeline for charts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    Enroll,
    Config,
    LogResult,
    LogStatus,
    DistributedRead,
    DistributedWrite,
    CarveBegin,
    CarveBlock,
}

pub const ENDPOINTS: [Endpoint; 8] = [
    Endpoint::Enroll,
    Endpoint::Config,
    Endpoint::LogResult,
    Endpoint::LogStatus,
    Endpoint::DistributedRead,
    Endpoint::DistributedWrite,
    Endpoint::CarveBegin,
    Endpoint::CarveBlock,
];

impl Endpoint {
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Enroll => "enroll",
            Endpoint::Config => "config",
            Endpoint::LogResult => "log_result",
            Endpoint::LogStatus => "log_status",
            Endpoint::DistributedRead => "distributed_read",
            Endpoint::DistributedWrite => "distributed_write",
            Endpoint::CarveBegin => "carve_begin",
            Endpoint::CarveBlock => "carve_block",
        }
    }

    fn idx(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Result_ {
    Ok,
    /// An error body (or non-JSON body): the agent retries later.
    ErrorBody,
    NodeInvalid,
    Transport,
}

/// Bucket `i` holds latencies in [2^(i/8) µs, 2^((i+1)/8) µs).
const BUCKETS: usize = 8 * 36;

pub struct Histogram {
    b: Vec<AtomicU64>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            b: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

fn bucket(d: Duration) -> usize {
    let us = d.as_micros().max(1) as f64;
    ((us.log2() * 8.0) as usize).min(BUCKETS - 1)
}

fn bucket_upper_ms(i: usize) -> f64 {
    2f64.powf((i + 1) as f64 / 8.0) / 1000.0
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        self.b[bucket(d)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn take(&self) -> Vec<u64> {
        self.b
            .iter()
            .map(|c| c.swap(0, Ordering::Relaxed))
            .collect()
    }

    pub fn snapshot(&self) -> Vec<u64> {
        self.b.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }
}

/// What was recorded between two [`Metrics::latencies`] snapshots.
pub fn window(earlier: &[u64], later: &[u64]) -> Vec<u64> {
    later
        .iter()
        .zip(earlier)
        .map(|(l, e)| l.saturating_sub(*e))
        .collect()
}

/// Percentile (0..=100) in milliseconds from bucket counts (upper bound).
pub fn percentile(counts: &[u64], p: f64) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let want = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= want {
            return bucket_upper_ms(i);
        }
    }
    bucket_upper_ms(BUCKETS - 1)
}

#[derive(Default)]
struct EndpointStats {
    ok: AtomicU64,
    error_body: AtomicU64,
    node_invalid: AtomicU64,
    transport: AtomicU64,
    bytes_sent: AtomicU64,
    hist: Histogram,
    interval_hist: Histogram,
    interval_requests: AtomicU64,
    interval_errors: AtomicU64,
}

/// Everything the harness measures.
#[derive(Default)]
pub struct Metrics {
    eps: [EndpointStats; 8],
    pub enrolled: AtomicU64,
    pub agents_started: AtomicU64,
    pub lines_generated: AtomicU64,
    pub lines_acked: AtomicU64,
    pub lines_dropped: AtomicU64,
    pub reenrollments: AtomicU64,
    pub distributed_answered: AtomicU64,
    pub carves_completed: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("enrolled", &self.enrolled.load(Ordering::Relaxed))
            .finish()
    }
}

/// Cumulative numbers for one endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointSummary {
    pub endpoint: &'static str,
    pub requests: u64,
    pub ok: u64,
    pub error_body: u64,
    pub node_invalid: u64,
    pub transport_errors: u64,
    pub bytes_sent: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_bucket_ms: f64,
}

/// One second of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    pub t: f64,
    pub requests_per_s: f64,
    pub errors_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub by_endpoint: Vec<(&'static str, u64)>,
    pub enrolled: u64,
    pub harness_cpu_pct: f64,
    pub server_cpu_pct: Option<f64>,
    pub server_rss_mb: Option<f64>,
}

impl Metrics {
    pub fn record(&self, ep: Endpoint, r: Result_, latency: Duration, bytes: usize) {
        let s = &self.eps[ep.idx()];
        match r {
            Result_::Ok => &s.ok,
            Result_::ErrorBody => &s.error_body,
            Result_::NodeInvalid => &s.node_invalid,
            Result_::Transport => &s.transport,
        }
        .fetch_add(1, Ordering::Relaxed);
        if r != Result_::Ok {
            s.interval_errors.fetch_add(1, Ordering::Relaxed);
        }
        s.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
        s.hist.record(latency);
        s.interval_hist.record(latency);
        s.interval_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn summary(&self) -> Vec<EndpointSummary> {
        ENDPOINTS
            .iter()
            .map(|ep| {
                let s = &self.eps[ep.idx()];
                let h = s.hist.snapshot();
                let ok = s.ok.load(Ordering::Relaxed);
                let eb = s.error_body.load(Ordering::Relaxed);
                let ni = s.node_invalid.load(Ordering::Relaxed);
                let tr = s.transport.load(Ordering::Relaxed);
                EndpointSummary {
                    endpoint: ep.name(),
                    requests: ok + eb + ni + tr,
                    ok,
                    error_body: eb,
                    node_invalid: ni,
                    transport_errors: tr,
                    bytes_sent: s.bytes_sent.load(Ordering::Relaxed),
                    p50_ms: percentile(&h, 50.0),
                    p90_ms: percentile(&h, 90.0),
                    p99_ms: percentile(&h, 99.0),
                    p999_ms: percentile(&h, 99.9),
                    max_bucket_ms: percentile(&h, 100.0),
                }
            })
            .collect()
    }

    /// Takes the interval counters: (requests per endpoint, errors, merged histogram).
    pub fn take_interval(&self) -> (Vec<(&'static str, u64)>, u64, Vec<u64>) {
        let mut merged = vec![0u64; BUCKETS];
        let mut per = Vec::new();
        let mut errors = 0;
        for ep in ENDPOINTS {
            let s = &self.eps[ep.idx()];
            per.push((ep.name(), s.interval_requests.swap(0, Ordering::Relaxed)));
            errors += s.interval_errors.swap(0, Ordering::Relaxed);
            for (m, c) in merged.iter_mut().zip(s.interval_hist.take()) {
                *m += c;
            }
        }
        (per, errors, merged)
    }

    /// The cumulative latency counts of `eps`, summed. Two snapshots
    /// subtracted ([`window`]) give one stretch of the run's histogram
    /// without disturbing the per-second timeline.
    pub fn latencies(&self, eps: &[Endpoint]) -> Vec<u64> {
        let mut sum = vec![0u64; BUCKETS];
        for ep in eps {
            for (m, c) in sum.iter_mut().zip(self.eps[ep.idx()].hist.snapshot()) {
                *m += c;
            }
        }
        sum
    }

    /// All requests so far and how many failed (any non-OK outcome).
    pub fn totals(&self) -> (u64, u64) {
        self.summary()
            .iter()
            .fold((0, 0), |(r, e), s| (r + s.requests, e + s.requests - s.ok))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_upper_bounds_within_a_bucket() {
        let h = Histogram::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let c = h.snapshot();
        let p50 = percentile(&c, 50.0);
        let p99 = percentile(&c, 99.0);
        assert!((50.0..=50.0 * 1.1).contains(&p50), "{p50}");
        assert!((99.0..=99.0 * 1.1).contains(&p99), "{p99}");
        assert_eq!(percentile(&[0; BUCKETS], 50.0), 0.0);
    }

    /// A window holds only what was recorded between its two snapshots,
    /// of the endpoints asked for.
    #[test]
    fn a_window_holds_only_its_stretch_of_the_chosen_endpoints() {
        let m = Metrics::default();
        let read = Endpoint::DistributedRead;
        m.record(read, Result_::Ok, Duration::from_millis(500), 0);
        let before = m.latencies(&[read]);
        for _ in 0..99 {
            m.record(read, Result_::Ok, Duration::from_millis(2), 0);
        }
        m.record(Endpoint::LogResult, Result_::Ok, Duration::from_secs(3), 0);
        let w = window(&before, &m.latencies(&[read]));
        assert_eq!(w.iter().sum::<u64>(), 99);
        assert!(percentile(&w, 100.0) < 3.0, "{}", percentile(&w, 100.0));
        let all = window(&before, &m.latencies(&ENDPOINTS));
        assert_eq!(all.iter().sum::<u64>(), 100);
        assert!(percentile(&all, 100.0) >= 3000.0);
    }
}
