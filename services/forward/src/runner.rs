//! One destination's delivery loop ([`Forwarder`]): reads the forward log
//! from the destination's own cursor, takes the lines its filter takes,
//! reshapes them, batches them (by lines, bytes and a short linger),
//! throttles them, delivers each batch until the receiver has it, and
//! only then moves and saves the cursor: at least once. A destination
//! that fails is retried with back-off (1 s doubling to 60 s) and falls
//! behind without holding anyone else up; one that falls behind retention
//! skips what retention dropped and counts those lines as missed (metric,
//! log line, status). A batch the receiver refuses for good is counted
//! as failed, kept with the receiver's answer as the destination's last
//! dead letter, and skipped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_core::model::{DestinationDeadLetter, DestinationState};
use gatehouse_core::ports::{ForwardCursor, ForwardEntry, ForwardLog};
use gatehouse_core::time::Clock;
use gatehouse_runtime::Shutdown;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};

use crate::destination::{DeliveryError, Destination};
use crate::line::{Filter, HostDirectory, Line, Shape, lines_of};

/// Where a destination starts the first time (no saved cursor).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// With the next batch stored.
    #[default]
    Now,
    /// With the oldest batch retained.
    Oldest,
}

/// What to do with lines past the throttle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverLimit {
    /// Wait (the destination falls behind, nothing is lost).
    #[default]
    Delay,
    /// Drop them, counted (`outcome="dropped"`).
    Drop,
}

fn default_max_lines() -> usize {
    500
}

fn default_max_bytes() -> usize {
    1024 * 1024
}

fn default_linger_ms() -> u64 {
    1000
}

/// How a destination batches and paces its lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pacing {
    /// Lines per delivery at most.
    #[serde(default = "default_max_lines")]
    pub max_lines: usize,
    /// Bytes (of JSON lines) per delivery at most; a single larger line
    /// goes alone.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// How long a short batch waits for more lines.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// Lines per second at most (0: no limit).
    #[serde(default)]
    pub lines_per_sec: u64,
    /// Bytes per second at most (0: no limit).
    #[serde(default)]
    pub bytes_per_sec: u64,
    #[serde(default)]
    pub over_limit: OverLimit,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            max_lines: default_max_lines(),
            max_bytes: default_max_bytes(),
            linger_ms: default_linger_ms(),
            lines_per_sec: 0,
            bytes_per_sec: 0,
            over_limit: OverLimit::Delay,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LineLabels {
    destination: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestLabel {
    destination: String,
}

/// The forwarders' metrics, by destination.
#[derive(Clone)]
struct Metrics {
    lines: Family<LineLabels, Counter>,
    lag_lines: Family<DestLabel, Gauge>,
    lag_seconds: Family<DestLabel, Gauge>,
}

impl Metrics {
    fn new(m: &gatehouse_runtime::metrics::Metrics) -> Self {
        Self {
            lines: m.get_or_register(
                "forward_lines",
                "Log lines by destination and outcome (delivered, failed, dropped, missed, filtered)",
                Family::default,
            ),
            lag_lines: m.get_or_register(
                "forward_lag_lines",
                "Lines stored and not yet handled by the destination",
                Family::default,
            ),
            lag_seconds: m.get_or_register(
                "forward_lag_seconds",
                "Age of the oldest entry the destination has not delivered",
                Family::default,
            ),
        }
    }
}

/// One destination's loop and state.
pub struct Forwarder {
    pub name: String,
    pub kind: String,
    log: Arc<dyn ForwardLog>,
    dest: Arc<dyn Destination>,
    filter: Filter,
    shape: Shape,
    pacing: Pacing,
    start: Start,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    control: Arc<Control>,
    /// Labels and platforms of hosts, for filters that route by them.
    hosts: Option<Arc<dyn HostDirectory>>,
    /// Where lines missed behind retention are raised as an alert.
    alerts: Option<Arc<dyn MissedLines>>,
    since_ms: Option<i64>,
}

/// Raises an alert when a destination missed lines (they fell out of the
/// forward log's retention before it read them).
#[async_trait::async_trait]
pub trait MissedLines: Send + Sync + 'static {
    /// `destination` skipped from entry `range.0` to `range.1` (exclusive),
    /// `lines` lines; `at_ms` is fixed for the range (the first kept
    /// entry's time), so raising it again stores one alert.
    async fn missed(&self, destination: &str, lines: u64, range: (u64, u64), at_ms: i64);
}

/// What operators see and steer of one forwarder: its state, pause, and a
/// pending replay.
#[derive(Debug)]
pub struct Control {
    status: Mutex<DestinationState>,
    paused: tokio::sync::watch::Sender<bool>,
    replay: Mutex<Option<ForwardCursor>>,
}

impl Control {
    pub fn state(&self) -> DestinationState {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.send_replace(paused);
        if let Ok(mut s) = self.status.lock() {
            s.paused = paused;
        }
    }

    /// Asks the forwarder to go on from `c` (applied between batches).
    pub fn replay(&self, c: ForwardCursor) {
        if let Ok(mut r) = self.replay.lock() {
            *r = Some(c);
        }
        if let Ok(mut s) = self.status.lock() {
            s.cursor = c.seq;
        }
    }

    fn take_replay(&self) -> Option<ForwardCursor> {
        self.replay.lock().ok().and_then(|mut r| r.take())
    }

    fn replay_pending(&self) -> bool {
        self.replay.lock().is_ok_and(|r| r.is_some())
    }
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("name", &self.name)
            .finish()
    }
}

/// What a forwarder delivers and how.
pub struct Route {
    pub filter: Filter,
    pub shape: Shape,
    pub pacing: Pacing,
    pub start: Start,
    /// Where the filter learns hosts' labels and platforms (needed when it
    /// routes by them).
    pub hosts: Option<Arc<dyn HostDirectory>>,
    /// Where missed lines are raised as an alert.
    pub alerts: Option<Arc<dyn MissedLines>>,
    /// When it was defined (ms): `start = "now"` means the first entry
    /// appended since then, however late the forwarder first runs; `None`:
    /// the newest when it first runs.
    pub since_ms: Option<i64>,
}

/// Back-off after a failed delivery.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Entries read at once.
const READ_AHEAD: usize = 64;

/// A token bucket over one second.
struct Bucket {
    per_sec: u64,
    tokens: f64,
    at: tokio::time::Instant,
}

impl Bucket {
    fn new(per_sec: u64) -> Self {
        Self {
            per_sec,
            tokens: per_sec as f64,
            at: tokio::time::Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = tokio::time::Instant::now();
        let add = now.duration_since(self.at).as_secs_f64() * self.per_sec as f64;
        self.tokens = (self.tokens + add).min(self.per_sec as f64);
        self.at = now;
    }

    /// How long until `n` tokens are there (zero: now); takes them when
    /// there.
    fn take(&mut self, n: u64) -> Duration {
        if self.per_sec == 0 {
            return Duration::ZERO;
        }
        self.refill();
        // A batch larger than a second's worth waits for a full bucket.
        let want = (n as f64).min(self.per_sec as f64);
        if self.tokens >= want {
            self.tokens -= want;
            return Duration::ZERO;
        }
        Duration::from_secs_f64((want - self.tokens) / self.per_sec as f64)
    }
}

impl Forwarder {
    pub fn new(
        name: &str,
        kind: &str,
        log: Arc<dyn ForwardLog>,
        dest: Arc<dyn Destination>,
        route: Route,
        clock: Arc<dyn Clock>,
        metrics: &gatehouse_runtime::metrics::Metrics,
    ) -> Self {
        Self {
            name: name.to_owned(),
            kind: kind.to_owned(),
            log,
            dest,
            filter: route.filter,
            shape: route.shape,
            pacing: route.pacing,
            start: route.start,
            hosts: route.hosts,
            alerts: route.alerts,
            since_ms: route.since_ms,
            clock,
            metrics: Metrics::new(metrics),
            control: Arc::new(Control {
                status: Mutex::new(DestinationState {
                    name: name.to_owned(),
                    kind: kind.to_owned(),
                    ..DestinationState::default()
                }),
                paused: tokio::sync::watch::Sender::new(false),
                replay: Mutex::new(None),
            }),
        }
    }

    /// Its state and controls, updated as it runs.
    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    fn update(&self, f: impl FnOnce(&mut DestinationState)) {
        if let Ok(mut s) = self.control.status.lock() {
            f(&mut s);
        }
    }

    fn count(&self, outcome: &str, n: u64) {
        self.count_metric(outcome, n);
        self.update(|s| tally(s, outcome, n));
    }

    fn count_metric(&self, outcome: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.metrics
            .lines
            .get_or_create(&LineLabels {
                destination: self.name.clone(),
                outcome: outcome.into(),
            })
            .inc_by(n);
    }

    /// Lag figures from the log's bounds and the cursor.
    async fn report_lag(&self, cursor: ForwardCursor) {
        self.report_lag_delivered(cursor, 0).await;
    }

    /// Lag figures from the log's bounds and the cursor, shown in the same
    /// status update as the `delivered` lines that moved the cursor there:
    /// no one reads a delivered count the lag does not reflect yet.
    async fn report_lag_delivered(&self, cursor: ForwardCursor, delivered: u64) {
        self.count_metric("delivered", delivered);
        let Ok(b) = self.log.bounds().await else {
            self.update(|s| tally(s, "delivered", delivered));
            return;
        };
        let lines = b.next_line.saturating_sub(cursor.line);
        let seconds = if cursor.seq < b.next {
            let at = match self.log.read(cursor.seq, 1).await {
                Ok(e) => e.first().map(|e| e.at_ms),
                Err(_) => None,
            };
            at.map_or(0, |at| {
                u64::try_from(self.clock.now_ms().saturating_sub(at) / 1000).unwrap_or(0)
            })
        } else {
            0
        };
        let label = DestLabel {
            destination: self.name.clone(),
        };
        self.metrics
            .lag_lines
            .get_or_create(&label)
            .set(i64::try_from(lines).unwrap_or(i64::MAX));
        self.metrics
            .lag_seconds
            .get_or_create(&label)
            .set(i64::try_from(seconds).unwrap_or(i64::MAX));
        self.update(|s| {
            tally(s, "delivered", delivered);
            s.cursor = cursor.seq;
            s.lag_lines = lines;
            s.lag_seconds = seconds;
        });
    }

    /// The cursor to read from: the saved one, moved past what retention
    /// dropped (counted as missed), or where `start` says.
    async fn cursor(&self) -> Result<ForwardCursor, String> {
        let b = self.log.bounds().await.map_err(|e| e.to_string())?;
        let saved = self
            .log
            .cursor(&self.name)
            .await
            .map_err(|e| e.to_string())?;
        let c = match saved {
            Some(c) => c,
            None => {
                let c = match self.start {
                    Start::Now => match self.since_ms {
                        Some(t) => self.log.seek(t).await.map_err(|e| e.to_string())?,
                        None => b.newest(),
                    },
                    Start::Oldest => b.oldest(),
                };
                self.log
                    .set_cursor(&self.name, c)
                    .await
                    .map_err(|e| e.to_string())?;
                c
            }
        };
        if c.seq >= b.first {
            return Ok(c);
        }
        let missed = b.first_line.saturating_sub(c.line);
        tracing::error!(
            destination = %self.name,
            missed,
            "destination fell behind the forward log's retention: lines missed"
        );
        self.count("missed", missed);
        if let Some(alerts) = &self.alerts {
            // Raised before the cursor moves: a crash in between raises
            // the same alert (same id) again, never none.
            // Its time is the first kept entry's: fixed for the range,
            // so the alert (keyed by time and id) is stored once.
            let at = b.first_at_ms.unwrap_or_else(|| self.clock.now_ms());
            alerts
                .missed(&self.name, missed, (c.seq, b.first), at)
                .await;
        }
        let c = b.oldest();
        self.log
            .set_cursor(&self.name, c)
            .await
            .map_err(|e| e.to_string())?;
        Ok(c)
    }

    /// Delivers until `shutdown`; what was delivered before a crash is
    /// not delivered again except the batch in flight.
    pub async fn run(self, shutdown: Shutdown) {
        self.serve(shutdown).await;
        // Stopped (removed, redefined, or the process ends): its lag is
        // nobody's to show any more.
        let label = DestLabel {
            destination: self.name.clone(),
        };
        self.metrics.lag_lines.remove(&label);
        self.metrics.lag_seconds.remove(&label);
    }

    async fn serve(&self, shutdown: Shutdown) {
        let mut lines_bucket = Bucket::new(self.pacing.lines_per_sec);
        let mut bytes_bucket = Bucket::new(self.pacing.bytes_per_sec);
        let mut backoff = FIRST_BACKOFF;
        tracing::info!(destination = %self.name, kind = %self.kind, "forwarding");
        let mut paused = self.control.paused.subscribe();
        let mut was_paused = false;
        while !shutdown.is_triggered() {
            if *paused.borrow_and_update() {
                if !was_paused {
                    tracing::info!(destination = %self.name, "paused");
                    was_paused = true;
                }
                // The lag goes on growing while paused: keep showing it.
                if let Ok(Some(c)) = self.log.cursor(&self.name).await {
                    self.report_lag(c).await;
                }
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = paused.changed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            if was_paused {
                tracing::info!(destination = %self.name, "resumed");
                was_paused = false;
            }
            if let Some(c) = self.control.take_replay() {
                tracing::info!(destination = %self.name, seq = c.seq, "replaying from an operator's cursor");
                if let Err(e) = self.log.set_cursor(&self.name, c).await {
                    tracing::warn!(destination = %self.name, error = %e, "saving the replay cursor failed");
                    self.control.replay(c);
                    if sleep_or_stop(&shutdown, backoff).await {
                        return;
                    }
                }
                continue;
            }
            let mut cursor = match self.cursor().await {
                Ok(c) => c,
                Err(e) => {
                    self.update(|s| s.last_error = Some(e.clone()));
                    tracing::warn!(destination = %self.name, error = %e, "forward log unavailable");
                    if sleep_or_stop(&shutdown, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            self.report_lag(cursor).await;
            let (batch, next) = match self.gather(cursor, &shutdown).await {
                Ok(Some(b)) => b,
                Ok(None) => continue,
                Err(e) => {
                    self.update(|s| s.last_error = Some(e.clone()));
                    if sleep_or_stop(&shutdown, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            let (mut lines, filtered) = batch;
            self.count("filtered", filtered);
            if !lines.is_empty() {
                let bytes: usize = lines.iter().map(|l| l.to_json().len() + 1).sum();
                let wait = lines_bucket
                    .take(lines.len() as u64)
                    .max(bytes_bucket.take(bytes as u64));
                if !wait.is_zero() {
                    match self.pacing.over_limit {
                        OverLimit::Delay => {
                            if sleep_or_stop(&shutdown, wait).await {
                                return;
                            }
                            lines_bucket.take(lines.len() as u64);
                            bytes_bucket.take(bytes as u64);
                        }
                        OverLimit::Drop => {
                            self.count("dropped", lines.len() as u64);
                            lines.clear();
                        }
                    }
                }
            }
            // Counted with the lag once the cursor moved past them.
            let mut delivered = 0;
            if !lines.is_empty() {
                loop {
                    match self.dest.deliver(&lines).await {
                        Ok(()) => {
                            delivered = lines.len() as u64;
                            self.update(|s| s.last_error = None);
                            backoff = FIRST_BACKOFF;
                            break;
                        }
                        Err(DeliveryError::Retry(e)) => {
                            tracing::warn!(destination = %self.name, error = %e, lines = lines.len(), retry_in = ?backoff, "delivery failed; retrying");
                            self.update(|s| s.last_error = Some(e));
                            // The lag goes on growing while it retries.
                            self.report_lag(cursor).await;
                            if sleep_or_stop(&shutdown, backoff).await {
                                // Not delivered: the cursor stays, the
                                // batch goes again after a restart.
                                return;
                            }
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                        Err(DeliveryError::Reject(e)) => {
                            tracing::error!(destination = %self.name, error = %e, lines = lines.len(), "batch refused by the receiver: dead-lettered and skipped");
                            self.count("failed", lines.len() as u64);
                            let at_ms = self.clock.now_ms();
                            let n = lines.len() as u64;
                            self.update(|s| {
                                s.last_error = Some(e.clone());
                                s.last_dead_letter = Some(DestinationDeadLetter {
                                    at_ms,
                                    lines: n,
                                    response: e,
                                });
                            });
                            break;
                        }
                    }
                }
            }
            cursor = next;
            if self.control.replay_pending() {
                // An operator moved the cursor meanwhile: theirs wins.
                self.count("delivered", delivered);
                continue;
            }
            if let Err(e) = self.log.set_cursor(&self.name, cursor).await {
                // The batch goes again (at least once).
                tracing::warn!(destination = %self.name, error = %e, "saving the cursor failed");
            }
            self.report_lag_delivered(cursor, delivered).await;
        }
    }

    /// The next batch from `cursor`: the lines taken (and how many the
    /// filter left out) and the cursor after them; `None` when nothing
    /// came within a while (so shutdown is looked at).
    #[allow(clippy::type_complexity)]
    async fn gather(
        &self,
        cursor: ForwardCursor,
        shutdown: &Shutdown,
    ) -> Result<Option<((Vec<Line>, u64), ForwardCursor)>, String> {
        let mut entries = self
            .log
            .read(cursor.seq, READ_AHEAD)
            .await
            .map_err(|e| e.to_string())?;
        if entries.is_empty() {
            tokio::select! {
                _ = shutdown.wait() => {}
                _ = self.log.wait_for(cursor.seq, Duration::from_secs(1)) => {}
            }
            return Ok(None);
        }
        let (mut lines, mut filtered, mut bytes) = (Vec::new(), 0u64, 0usize);
        let mut next = cursor;
        let linger = tokio::time::Instant::now() + Duration::from_millis(self.pacing.linger_ms);
        loop {
            let mut full = false;
            for e in entries.drain(..) {
                if !lines.is_empty()
                    && (lines.len() + e.lines as usize > self.pacing.max_lines
                        || bytes >= self.pacing.max_bytes)
                {
                    full = true;
                    break;
                }
                let (taken, left_out) = self.take(&e).await?;
                filtered += left_out;
                bytes += taken.iter().map(|l| l.to_json().len() + 1).sum::<usize>();
                lines.extend(taken);
                next = ForwardCursor {
                    seq: e.seq + 1,
                    line: e.first_line + u64::from(e.lines),
                };
            }
            if full
                || lines.len() >= self.pacing.max_lines
                || bytes >= self.pacing.max_bytes
                || tokio::time::Instant::now() >= linger
            {
                break;
            }
            // A short batch waits a little for more.
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep_until(linger) => {}
                _ = self.log.wait_for(next.seq, Duration::from_millis(self.pacing.linger_ms)) => {}
            }
            entries = self
                .log
                .read(next.seq, READ_AHEAD)
                .await
                .map_err(|e| e.to_string())?;
            if entries.is_empty() {
                break;
            }
        }
        Ok(Some(((lines, filtered), next)))
    }

    /// The lines of `e` this destination takes, reshaped, and how many it
    /// leaves out. An entry that cannot be decoded is left out whole (and
    /// logged): it can never be delivered. A host directory that cannot
    /// answer is an error (the batch is tried again).
    async fn take(&self, e: &ForwardEntry) -> Result<(Vec<Line>, u64), String> {
        let all = match lines_of(e.payload.clone()) {
            Ok(l) => l,
            Err(err) => {
                tracing::error!(destination = %self.name, seq = e.seq, error = %err, "undecodable forward-log entry skipped");
                return Ok((Vec::new(), u64::from(e.lines)));
            }
        };
        let total = all.len() as u64;
        let mut taken = Vec::with_capacity(all.len());
        for l in all {
            if !self.filter.takes(&l) {
                continue;
            }
            if self.filter.needs_host() {
                let facts = match &self.hosts {
                    Some(d) => d.facts(&l.host_id).await?,
                    None => None,
                };
                if !self.filter.takes_host(facts.as_ref()) {
                    continue;
                }
            }
            taken.push(l);
        }
        if !self.shape.is_identity() {
            for l in &mut taken {
                self.shape.apply(&mut l.body);
            }
        }
        let left_out = total - taken.len() as u64;
        Ok((taken, left_out))
    }
}

/// Sleeps `d`; true when shutdown came first.
async fn sleep_or_stop(shutdown: &Shutdown, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.wait() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// Adds `n` lines of `outcome` to a destination's counts.
fn tally(s: &mut DestinationState, outcome: &str, n: u64) {
    match outcome {
        "delivered" => s.delivered += n,
        "failed" => s.failed += n,
        "dropped" => s.dropped += n,
        "missed" => s.missed += n,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use gatehouse_core::HostId;
    use gatehouse_core::model::{LogRecords, ResultKind, ResultLog};
    use gatehouse_core::time::ShiftedClock;

    use super::*;
    use crate::line::LogType;
    use crate::log::{EmbeddedForwardLog, Retention};

    /// Records what it was given; fails as scripted first.
    #[derive(Default)]
    struct Recorder {
        got: Mutex<Vec<Line>>,
        script: Mutex<VecDeque<DeliveryError>>,
        calls: Mutex<usize>,
    }

    #[async_trait::async_trait]
    impl Destination for Recorder {
        async fn deliver(&self, lines: &[Line]) -> Result<(), DeliveryError> {
            *self.calls.lock().unwrap() += 1;
            if let Some(e) = self.script.lock().unwrap().pop_front() {
                return Err(e);
            }
            self.got.lock().unwrap().extend_from_slice(lines);
            Ok(())
        }
    }

    /// A missed-lines alert: destination, lines, entries skipped.
    type Missed = (String, u64, (u64, u64));

    /// Missed-lines alerts raised.
    #[derive(Default)]
    struct Raised(Mutex<Vec<Missed>>);

    #[async_trait::async_trait]
    impl MissedLines for Raised {
        async fn missed(&self, destination: &str, lines: u64, range: (u64, u64), _: i64) {
            self.0
                .lock()
                .unwrap()
                .push((destination.to_owned(), lines, range));
        }
    }

    impl Recorder {
        fn names(&self) -> Vec<String> {
            self.got
                .lock()
                .unwrap()
                .iter()
                .map(|l| l.body["columns"]["n"].as_str().unwrap_or("").to_owned())
                .collect()
        }
    }

    fn records(query: &str, from: usize, n: usize) -> LogRecords {
        let host = HostId::from_identity("hw:test");
        LogRecords::Results(
            (from..from + n)
                .map(|i| ResultLog {
                    host_id: host.clone(),
                    name: query.into(),
                    unix_time: 1_700_000_000,
                    kind: ResultKind::Event,
                    action: "added".into(),
                    rows: 1,
                    line_id: format!("{query}-{i}"),
                    received_at: 0,
                    line: serde_json::json!({"name": query, "hostIdentifier": "web-01", "columns": {"n": format!("{i}")}}).into(),
                })
                .collect(),
        )
    }

    async fn append(log: &EmbeddedForwardLog, query: &str, from: usize, n: usize) {
        let r = records(query, from, n);
        log.append(
            &r.batch_id(),
            n as u32,
            gatehouse_bus::events::encode_forward_logs(&r),
        )
        .await
        .unwrap();
    }

    fn forwarder(
        log: &EmbeddedForwardLog,
        dest: Arc<Recorder>,
        route: Route,
    ) -> (Forwarder, gatehouse_runtime::metrics::Metrics) {
        let m = gatehouse_runtime::metrics::Metrics::new();
        let f = Forwarder::new(
            "test",
            "recorder",
            Arc::new(log.clone()),
            dest,
            route,
            Arc::new(ShiftedClock::new()),
            &m,
        );
        (f, m)
    }

    fn route() -> Route {
        Route {
            filter: Filter::default(),
            shape: Shape::default(),
            pacing: Pacing {
                linger_ms: 0,
                max_lines: 10,
                ..Pacing::default()
            },
            start: Start::Oldest,
            hosts: None,
            alerts: None,
            since_ms: None,
        }
    }

    fn open_log(dir: &std::path::Path, retention: Retention) -> EmbeddedForwardLog {
        EmbeddedForwardLog::open(dir, retention, Arc::new(ShiftedClock::new())).unwrap()
    }

    async fn until(what: &str, f: impl Fn() -> bool) {
        gatehouse_testkit::until(what, Duration::from_secs(20), async || f()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_line_is_delivered_in_order_and_a_restart_resumes_at_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path(), Retention::default());
        for b in 0..5 {
            append(&log, "users", b * 4, 4).await;
        }
        let dest = Arc::new(Recorder::default());
        let (f, m) = forwarder(&log, dest.clone(), route());
        let status = f.control();
        let stop = Shutdown::new();
        let task = tokio::spawn(f.run(stop.clone()));
        until("20 lines delivered", || dest.names().len() == 20).await;
        let want: Vec<String> = (0..20).map(|i| i.to_string()).collect();
        assert_eq!(dest.names(), want, "in order, once");
        assert!(
            *dest.calls.lock().unwrap() >= 2,
            "batches of at most 10 lines"
        );
        until("caught up", || status.state().lag_lines == 0).await;
        stop.trigger();
        task.await.unwrap();
        assert!(m.render().contains(
            "gatehouse_forward_lines_total{destination=\"test\",outcome=\"delivered\"} 20"
        ));

        // More lines while it is down; a new forwarder (a restart) takes
        // only those.
        append(&log, "users", 20, 3).await;
        let again = Arc::new(Recorder::default());
        let (f, _) = forwarder(&log, again.clone(), route());
        let stop = Shutdown::new();
        let task = tokio::spawn(f.run(stop.clone()));
        until("3 new lines", || again.names().len() == 3).await;
        assert_eq!(again.names(), vec!["20", "21", "22"]);
        stop.trigger();
        task.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_destination_is_retried_and_a_refused_batch_is_dead_lettered() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path(), Retention::default());
        append(&log, "users", 0, 2).await;
        let dest = Arc::new(Recorder::default());
        for _ in 0..2 {
            dest.script
                .lock()
                .unwrap()
                .push_back(DeliveryError::Retry("503 busy".into()));
        }
        let (f, m) = forwarder(&log, dest.clone(), route());
        let status = f.control();
        let stop = Shutdown::new();
        let task = tokio::spawn(f.run(stop.clone()));
        // While it retries, its lag shows what waits.
        until("the lag shows while retrying", || {
            let s = status.state();
            s.last_error.as_deref() == Some("503 busy") && s.lag_lines == 2
        })
        .await;
        until("delivered after retries", || dest.names().len() == 2).await;
        assert_eq!(*dest.calls.lock().unwrap(), 3);
        until("the error cleared", || status.state().last_error.is_none()).await;

        // A refusal: counted, kept as the dead letter, skipped.
        dest.script
            .lock()
            .unwrap()
            .push_back(DeliveryError::Reject("400 bad index".into()));
        append(&log, "users", 2, 3).await;
        until("refused", || status.state().failed == 3).await;
        let dl = status.state().last_dead_letter.unwrap();
        assert_eq!((dl.lines, dl.response.as_str()), (3, "400 bad index"));
        append(&log, "users", 5, 1).await;
        until("the next batch goes", || dest.names().len() == 3).await;
        assert_eq!(dest.names(), vec!["0", "1", "5"]);
        stop.trigger();
        task.await.unwrap();
        let text = m.render();
        assert!(text.contains("outcome=\"failed\"} 3"), "{text}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lines_past_retention_are_counted_as_missed_and_filters_apply() {
        let dir = tempfile::tempdir().unwrap();
        let retention = Retention {
            max_bytes: 2_000,
            ..Retention::default()
        };
        let log = open_log(dir.path(), retention);
        // A destination that saved its cursor at the start, then was away
        // while retention dropped the oldest batches.
        log.set_cursor("test", ForwardCursor { seq: 1, line: 0 })
            .await
            .unwrap();
        for b in 0..20 {
            let q = if b % 2 == 0 { "users" } else { "processes" };
            append(&log, q, b * 2, 2).await;
        }
        let bounds = log.bounds().await.unwrap();
        assert!(bounds.first > 1, "retention dropped some: {bounds:?}");
        let dest = Arc::new(Recorder::default());
        let raised = Arc::new(Raised::default());
        let mut r = route();
        r.filter = Filter {
            logs: vec![LogType::Results],
            queries: vec!["users".into()],
            ..Filter::default()
        };
        r.alerts = Some(raised.clone());
        let (f, _) = forwarder(&log, dest.clone(), r);
        let status = f.control();
        let stop = Shutdown::new();
        let task = tokio::spawn(f.run(stop.clone()));
        until("caught up", || {
            let s = status.state();
            s.cursor == bounds.next && s.lag_lines == 0
        })
        .await;
        stop.trigger();
        task.await.unwrap();
        let s = status.state();
        assert_eq!(s.missed, bounds.first_line, "what retention dropped");
        assert_eq!(
            *raised.0.lock().unwrap(),
            vec![("test".to_owned(), bounds.first_line, (1, bounds.first))],
            "and it was raised as an alert, once"
        );
        let kept_users = dest.names().len() as u64;
        assert_eq!(s.delivered, kept_users);
        assert_eq!(
            s.missed + kept_users * 2,
            40,
            "every line missed, delivered or filtered (half are processes)"
        );
        assert!(
            dest.got
                .lock()
                .unwrap()
                .iter()
                .all(|l| l.name.as_deref() == Some("users"))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_throttle_with_the_drop_policy_counts_what_it_drops() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path(), Retention::default());
        for b in 0..4 {
            append(&log, "users", b * 10, 10).await;
        }
        let dest = Arc::new(Recorder::default());
        let mut r = route();
        r.pacing.lines_per_sec = 10;
        r.pacing.over_limit = OverLimit::Drop;
        let (f, _) = forwarder(&log, dest.clone(), r);
        let status = f.control();
        let stop = Shutdown::new();
        let task = tokio::spawn(f.run(stop.clone()));
        until("all handled", || {
            let s = status.state();
            s.delivered + s.dropped == 40
        })
        .await;
        stop.trigger();
        task.await.unwrap();
        let s = status.state();
        assert!(s.dropped > 0 && s.delivered >= 10, "{s:?}");
        assert_eq!(dest.names().len() as u64, s.delivered);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_paused_destination_waits_and_a_replay_delivers_again() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path(), Retention::default());
        append(&log, "users", 0, 2).await;
        let dest = Arc::new(Recorder::default());
        let (f, _) = forwarder(&log, dest.clone(), route());
        let control = f.control();
        let stop = Shutdown::new();
        let task = tokio::spawn(f.run(stop.clone()));
        until("first lines", || dest.names().len() == 2).await;
        control.set_paused(true);
        assert!(control.state().paused);
        // Whatever batch was in hand when it paused goes out; then nothing.
        append(&log, "users", 2, 2).await;
        until("lag shows the waiting lines", || {
            let n = dest.names().len();
            n == 4 || control.state().lag_lines == 2
        })
        .await;
        let held = dest.names().len();
        append(&log, "users", 4, 2).await;
        until("lag grows while paused", || {
            control.state().lag_lines >= 2 + (4 - held as u64).min(2)
        })
        .await;
        assert_eq!(dest.names().len(), held, "nothing delivered while paused");
        control.set_paused(false);
        until("resumed and caught up", || dest.names().len() == 6).await;
        // Replay from the oldest retained entry: everything again.
        control.replay(ForwardCursor { seq: 1, line: 0 });
        until("replayed", || dest.names().len() == 12).await;
        assert_eq!(dest.names()[6..], dest.names()[..6]);
        stop.trigger();
        task.await.unwrap();
    }
}
