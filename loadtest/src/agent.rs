//! One simulated `osqueryd`.
//!
//! Like the real worker process it runs separate threads (here tasks) for
//! config refresh, the log forwarder (with the scheduler that fills its
//! buffer) and the distributed loop, each with its own keep-alive
//! connection, sharing one node key behind one enrollment mutex (§4.1).
//! Retry and back-off schedules follow the spec: enroll n² up to 12
//! attempts (§4.4), config i² up to 3 (§5.5), logger k²·period capped at
//! 3600 s per log type (§6.3), distributed 1 s then 4 s (§7.2).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::judge::{Outcome, enroll_key, judge};
use crate::metrics::{Endpoint, Metrics, Result_};
use crate::osinfo::Machine;
use crate::schedule::{LogBuffer, Options, Render, ScheduledQuery, StatusSpec, fire, parse_config};
use crate::transport::{Channel, Headers, HttpReply, Pool, Target, TransportError};

/// The osquery endpoint flags.
#[derive(Debug, Clone)]
pub struct Paths {
    pub enroll: String,
    pub config: String,
    pub logger: String,
    pub read: String,
    pub write: String,
    pub carve_begin: String,
    pub carve_block: String,
}

impl Paths {
    /// Gatehouse's defaults (`/api/v1/osquery/...`).
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            enroll: format!("{prefix}/enroll"),
            config: format!("{prefix}/config"),
            logger: format!("{prefix}/log"),
            read: format!("{prefix}/distributed/read"),
            write: format!("{prefix}/distributed/write"),
            carve_begin: format!("{prefix}/carve/begin"),
            carve_block: format!("{prefix}/carve/block"),
        }
    }
}

/// Flags every simulated agent shares.
#[derive(Clone)]
pub struct Fleet {
    pub target: Arc<Target>,
    pub paths: Paths,
    pub enroll_secret: String,
    /// Command-line values of runtime flags (config `options` override).
    pub options: Options,
    /// `--config_refresh` in ms; 0 fetches once.
    pub config_refresh_ms: u64,
    pub config_accelerated_refresh_ms: u64,
    pub enroll_max_attempts: u32,
    pub logger_backoff_max_ms: u64,
    pub distributed: bool,
    pub carver: bool,
    pub carver_block_size: usize,
    pub carve_size: usize,
    pub send_status_logs: bool,
    /// Shared connections instead of one per agent thread.
    pub pool: Option<Arc<Pool>>,
    pub metrics: Arc<Metrics>,
    pub answers: Arc<Answers>,
    /// Released when a storm's outage ends.
    pub release: Option<tokio::sync::watch::Receiver<bool>>,
    /// Seconds of schedule output buffered before the first flush (storm).
    pub backlog_secs: u64,
    /// Time unit for back-off sleeps (1 s; shorter in tests).
    pub second: Duration,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("target", &self.target)
            .finish()
    }
}

/// Agent-side timings of live-query answers, by query id.
#[derive(Debug, Default)]
pub struct Answers {
    pub by_query: Mutex<BTreeMap<String, Vec<Answer>>>,
}

#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub read_sent: Instant,
    pub read_done: Instant,
    pub write_sent: Instant,
    pub write_done: Instant,
}

pub(crate) struct State {
    pub(crate) schedule: Vec<ScheduledQuery>,
    pub(crate) options: Options,
    pub(crate) buffer: LogBuffer,
    pub(crate) accelerate_until: Option<Instant>,
    pub(crate) configured: bool,
}

pub struct Agent {
    pub machine: Machine,
    pub(crate) fleet: Fleet,
    key: tokio::sync::Mutex<Option<String>>,
    ever_enrolled: std::sync::atomic::AtomicBool,
    state: Mutex<State>,
    /// Wakes the log forwarder when its buffer or schedule changed under
    /// it (it sleeps through checks of an empty buffer).
    pub(crate) wake_logger: tokio::sync::Notify,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("host", &self.machine.hostname)
            .finish()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A connection slot for one agent thread.
pub enum Conn {
    Own(Channel),
    Shared(Arc<Pool>),
}

impl Conn {
    pub(crate) fn new(fleet: &Fleet) -> Self {
        match &fleet.pool {
            Some(p) => Conn::Shared(p.clone()),
            None => Conn::Own(Channel::default()),
        }
    }

    /// One exchange, and how long it took once a connection was held
    /// (the latency an agent owning its connection sees; a shared one's
    /// wait is the pool's, [`Pool::waits`]). `body` is called once a
    /// connection is held, so agents waiting for a shared one hold no
    /// rendered body (a storm's bodies are up to `logger_tls_max_lines`
    /// lines each). The exchange's future (the request's write, the
    /// response's read, the pool's wait: a few KB) is boxed for the time
    /// of the request, so an agent's idle tasks, which are most of them
    /// at any time, do not each carry its size.
    async fn post(
        &mut self,
        t: &Target,
        path: &str,
        body: impl FnOnce() -> Bytes + Send,
        h: &Headers,
    ) -> (Result<HttpReply, TransportError>, Duration) {
        /// `f`'s output and how long it took.
        async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
            let start = Instant::now();
            let out = f.await;
            (out, start.elapsed())
        }
        match self {
            Conn::Own(c) => timed(Box::pin(c.post(t, path, body(), h))).await,
            Conn::Shared(p) => {
                Box::pin(async move {
                    match p.checkout().await {
                        Ok(mut c) => timed(c.post(t, path, body(), h)).await,
                        Err(e) => (Err(e), Duration::ZERO),
                    }
                })
                .await
            }
        }
    }
}

fn gzip(b: &[u8]) -> Bytes {
    use std::io::Write;
    let mut e =
        flate2::write::GzEncoder::new(Vec::with_capacity(b.len() / 4), flate2::Compression::new(9));
    // Like the agent: a failed compression sends an empty body.
    if e.write_all(b).is_err() {
        return Bytes::new();
    }
    e.finish().map(Bytes::from).unwrap_or_default()
}

impl Agent {
    pub fn new(machine: Machine, fleet: Fleet) -> Arc<Self> {
        let options = fleet.options.clone();
        Arc::new(Self {
            machine,
            fleet,
            key: tokio::sync::Mutex::new(None),
            ever_enrolled: std::sync::atomic::AtomicBool::new(false),
            wake_logger: tokio::sync::Notify::new(),
            state: Mutex::new(State {
                schedule: Vec::new(),
                options,
                buffer: LogBuffer::default(),
                accelerate_until: None,
                configured: false,
            }),
        })
    }

    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn buffered(&self) -> usize {
        self.state().buffer.len()
    }

    /// The end of what the agent holds now ([`LogBuffer::mark`]).
    pub fn backlog_mark(&self) -> crate::schedule::Mark {
        self.state().buffer.mark()
    }

    /// Whether everything it held at `m` has left its buffer.
    pub fn sent_past(&self, m: crate::schedule::Mark) -> bool {
        self.state().buffer.past(m)
    }

    /// One request, judged as the agent judges it, recorded in metrics.
    pub(crate) async fn request(
        &self,
        conn: &mut Conn,
        ep: Endpoint,
        path: &str,
        body: &Value,
        key: Option<&str>,
        gzip_body: bool,
    ) -> Outcome {
        let raw = || serde_json::to_vec(body).unwrap_or_default();
        self.request_raw(conn, ep, path, raw, key, gzip_body).await
    }

    /// [`Self::request`] with a body written as JSON text by `raw` when
    /// the request is sent.
    pub(crate) async fn request_raw(
        &self,
        conn: &mut Conn,
        ep: Endpoint,
        path: &str,
        raw: impl FnOnce() -> Vec<u8> + Send,
        key: Option<&str>,
        gzip_body: bool,
    ) -> Outcome {
        let mut len = 0;
        let payload = || {
            let raw = raw();
            let p = if gzip_body {
                gzip(&raw)
            } else {
                Bytes::from(raw)
            };
            len = p.len();
            p
        };
        let h = Headers {
            node_key: key.map(str::to_owned),
            gzip: gzip_body,
            user_agent: "osquery/5.23.1",
        };
        let (r, took) = conn.post(&self.fleet.target, path, payload, &h).await;
        let outcome = judge(r);
        let res = match &outcome {
            Outcome::Ok(_) => Result_::Ok,
            Outcome::NodeInvalid => Result_::NodeInvalid,
            Outcome::Failed(_) => Result_::ErrorBody,
            Outcome::Transport(_) => Result_::Transport,
        };
        self.fleet.metrics.record(ep, res, took, len);
        if outcome == Outcome::NodeInvalid {
            // The key is wiped; the next request on any thread enrolls.
            *self.key.lock().await = None;
        }
        outcome
    }

    /// The cached node key, enrolling first when there is none (§4.1).
    pub async fn node_key(&self, conn: &mut Conn) -> Option<String> {
        let mut key = self.key.lock().await;
        if let Some(k) = key.as_ref() {
            return Some(k.clone());
        }
        let body = json!({
            "enroll_secret": self.fleet.enroll_secret,
            "host_identifier": self.machine.hostname,
            "platform_type": self.machine.os.platform_type(),
            "host_details": self.machine.host_details(),
        });
        let max = self.fleet.enroll_max_attempts;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut len = 0;
            let raw = || {
                let b = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
                len = b.len();
                b
            };
            let (r, took) = conn
                .post(
                    &self.fleet.target,
                    &self.fleet.paths.enroll,
                    raw,
                    &Headers::default(),
                )
                .await;
            let k = enroll_key(&r);
            let res = match (&k, &r) {
                (Some(_), _) => Result_::Ok,
                (None, Err(_)) => Result_::Transport,
                (None, Ok(_)) => Result_::ErrorBody,
            };
            self.fleet.metrics.record(Endpoint::Enroll, res, took, len);
            if let Some(k) = k {
                if self
                    .ever_enrolled
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    self.fleet
                        .metrics
                        .reenrollments
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                *key = Some(k.clone());
                return Some(k);
            }
            if max != 0 && attempt >= max {
                return None;
            }
            // Sleeps 1, 4, 9 ... s, capped at --tls_enroll_max_interval (600 s).
            let secs = u64::from(attempt * attempt).min(600);
            tokio::time::sleep(self.fleet.second * secs as u32).await;
        }
    }

    fn apply_config(&self, cfg: &Map<String, Value>) {
        let (schedule, options) = parse_config(cfg, &self.fleet.options, self.machine.seed);
        let mut st = self.state();
        // Differential state survives a refresh for queries that stay.
        let old: BTreeMap<Arc<str>, ScheduledQuery> =
            st.schedule.drain(..).map(|q| (q.name.clone(), q)).collect();
        st.schedule = schedule
            .into_iter()
            .map(|mut q| {
                if let Some(o) = old.get(&q.name) {
                    q.lo = o.lo;
                    q.counter = o.counter;
                }
                q
            })
            .collect();
        st.options = options;
        st.configured = true;
        drop(st);
        self.wake_logger.notify_one();
    }

    /// One config fetch: up to 3 attempts sleeping i² s (§5.5).
    async fn fetch_config(&self, conn: &mut Conn) -> bool {
        for attempt in 1..=3u32 {
            if let Some(key) = self.node_key(conn).await {
                let out = self
                    .request(
                        conn,
                        Endpoint::Config,
                        &self.fleet.paths.config,
                        &json!({"node_key": key}),
                        Some(&key),
                        false,
                    )
                    .await;
                if let Outcome::Ok(cfg) = out {
                    self.apply_config(&cfg);
                    return true;
                }
            }
            if attempt < 3 {
                tokio::time::sleep(self.fleet.second * (attempt * attempt)).await;
            }
        }
        false
    }

    /// Runs the agent until `stop` flips.
    pub async fn run(self: Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        let mut conn = Conn::new(&self.fleet);
        // Startup (§1): config setUp enrolls; the first config load.
        loop {
            if self.node_key(&mut conn).await.is_some() {
                break;
            }
            // Logger setUp fails without a key: the process exits and the
            // service manager restarts it.
            if wait_or_stop(&stop, self.fleet.second * 10).await {
                return;
            }
        }
        self.fleet
            .metrics
            .enrolled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let configured = self.fetch_config(&mut conn).await;
        if self.fleet.send_status_logs {
            let mut st = self.state();
            let now = unix_now();
            for m in [
                "osqueryd started [version=5.23.1]",
                "Distributed query support enabled",
            ] {
                st.buffer.push_status(StatusSpec {
                    unix: now,
                    severity: 0,
                    message: m.into(),
                });
            }
            if !configured {
                st.buffer.push_status(StatusSpec {
                    unix: now,
                    severity: 1,
                    message: "Error reading config: request failed".into(),
                });
            }
            let n = if configured { 2 } else { 3 };
            self.fleet
                .metrics
                .lines_generated
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
        if self.fleet.backlog_secs > 0 {
            self.fill_backlog(self.fleet.backlog_secs);
        }
        if let Some(mut release) = self.fleet.release.clone() {
            let _ = release.wait_for(|v| *v).await;
        }
        let logger = tokio::spawn(self.clone().logger_loop(stop.clone()));
        let dist = self
            .fleet
            .distributed
            .then(|| tokio::spawn(self.clone().distributed_loop(stop.clone())));
        self.config_loop(conn, configured, stop).await;
        let _ = logger.await;
        if let Some(d) = dist {
            let _ = d.await;
        }
    }

    async fn config_loop(
        &self,
        mut conn: Conn,
        mut last_ok: bool,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        if self.fleet.config_refresh_ms == 0 {
            let mut stop = stop;
            let _ = stop.wait_for(|v| *v).await;
            return;
        }
        loop {
            let wait = if last_ok {
                self.fleet.config_refresh_ms
            } else {
                self.fleet.config_accelerated_refresh_ms
            };
            if wait_or_stop(&stop, Duration::from_millis(wait)).await {
                return;
            }
            last_ok = self.fetch_config(&mut conn).await;
        }
    }

    /// Buffers what the schedule would have logged over the last `secs`.
    fn fill_backlog(&self, secs: u64) {
        let now = unix_now();
        let mut rng = fastrand::Rng::with_seed(self.machine.seed);
        self.fire_between(now.saturating_sub(secs + 1), now - 1, &mut rng);
    }

    /// Fires every scheduled query at each of its seconds `t` with
    /// `after < t <= upto`, each line stamped with its own second, and
    /// accounts for the lines.
    fn fire_between(&self, after: u64, upto: u64, rng: &mut fastrand::Rng) {
        let mut st = self.state();
        let st = &mut *st;
        let mut n = 0usize;
        for q in st.schedule.iter_mut() {
            let step = q.splayed_interval;
            let mut t = (after / step + 1) * step;
            while t <= upto {
                n += fire(q, t, st.options.logger_event_type, &mut st.buffer, rng);
                t += step;
            }
        }
        self.account(st, n);
    }

    /// Applies the agent's buffer cap after `generated` new lines and
    /// counts both in the metrics.
    fn account(&self, st: &mut State, generated: usize) {
        let dropped = st.buffer.purge(st.options.buffered_log_max);
        let m = &self.fleet.metrics;
        m.lines_generated
            .fetch_add(generated as u64, std::sync::atomic::Ordering::Relaxed);
        m.lines_dropped
            .fetch_add(dropped as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// The log POST body for the first `results` result lines or the
    /// first `statuses` status lines (one of the two is 0), written as
    /// JSON text.
    fn render_batch(&self, key: &str, log_type: &str, results: usize, statuses: usize) -> Vec<u8> {
        let st = self.state();
        let decorations = st.options.decorations.then(|| {
            json!({"host_uuid": self.machine.hardware_uuid, "hostname": self.machine.hostname})
                .to_string()
        });
        let r = Render {
            host_identifier: &self.machine.hostname,
            seed: self.machine.seed,
            decorations: decorations.as_deref(),
        };
        let mut out = String::with_capacity(1024 * (results + statuses).max(1));
        out.push_str("{\"node_key\":");
        crate::tables::push_str(&mut out, key);
        out.push_str(",\"log_type\":");
        crate::tables::push_str(&mut out, log_type);
        out.push_str(",\"data\":[");
        for (i, (l, k)) in st.buffer.results(results).enumerate() {
            if i > 0 {
                out.push(',');
            }
            r.result_into(&mut out, l, k);
        }
        for (i, l) in st.buffer.statuses(statuses).enumerate() {
            if i > 0 {
                out.push(',');
            }
            r.status_into(&mut out, l);
        }
        out.push_str("]}");
        out.into_bytes()
    }

    /// The scheduler and the log forwarder (§5.4, §6).
    ///
    /// The forwarder checks its buffer every `logger_tls_period`; a check
    /// of an empty buffer sends nothing. So while the buffer is empty the
    /// task sleeps through those checks, to the first one at or after the
    /// next scheduled query's second, and fires every query whose second
    /// has come (each line stamped with its own second) just before the
    /// check that sends it: the server sees the same requests at the same
    /// checks as from an agent that woke every second and every period,
    /// at a fraction of the wake-ups. Anything else that changes what the
    /// buffer will hold (a new config, a status line from another thread)
    /// wakes it ([`Agent::wake_logger`]).
    async fn logger_loop(self: Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        let mut conn = Conn::new(&self.fleet);
        let mut rng = fastrand::Rng::with_seed(self.machine.seed ^ 0x5eed);
        // Per log type: consecutive failures and remaining back-off (ms).
        let mut fails = [0u64; 2];
        let mut backoff = [0u64; 2];
        // Every query second up to `fired` has been fired.
        let mut fired = unix_now();
        // The forwarder's checks fall on `last_check + k·period`.
        let mut last_check: Option<Instant> = None;
        loop {
            let now = unix_now();
            if now > fired {
                self.fire_between(fired, now, &mut rng);
                fired = now;
            }
            let (period_ms, empty, next_fire) = {
                let st = self.state();
                let next = st
                    .schedule
                    .iter()
                    .map(|q| (fired / q.splayed_interval + 1) * q.splayed_interval)
                    .min();
                (st.options.logger_tls_period_ms, st.buffer.is_empty(), next)
            };
            let period = Duration::from_millis(period_ms.max(1));
            let at = Instant::now();
            let due = last_check.is_none_or(|c| at >= c + period);
            if due {
                last_check = Some(at);
                self.flush(&mut conn, period_ms, &mut fails, &mut backoff)
                    .await;
                if !self.state().buffer.is_empty() {
                    // Lines left (a failure, a back-off, more than one
                    // batch): the next check sends or counts down.
                    let next = (at + period).saturating_duration_since(Instant::now());
                    if wait_or_stop_or(&stop, next, &self.wake_logger).await {
                        return;
                    }
                    continue;
                }
            } else if !empty {
                // Woken between checks with lines to send: the next check.
                let next = last_check.map_or(at, |c| c + period);
                if wait_or_stop_or(&stop, next - at, &self.wake_logger).await {
                    return;
                }
                continue;
            }
            // Empty: sleep to the first check at or after the next query's
            // second (whole seconds of the wall clock, as the scheduler's).
            let checks_from = last_check.unwrap_or(at);
            let wait = match next_fire {
                Some(t) => {
                    let since_epoch = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default();
                    let fire_in = Duration::from_secs(t).saturating_sub(since_epoch);
                    first_check_from(checks_from, period, Instant::now() + fire_in)
                        .saturating_duration_since(Instant::now())
                }
                None => Duration::from_secs(3600),
            };
            if wait_or_stop_or(&stop, wait, &self.wake_logger).await {
                return;
            }
        }
    }

    /// One forwarder check (§6.1, §6.3).
    pub async fn flush(
        &self,
        conn: &mut Conn,
        period: u64,
        fails: &mut [u64; 2],
        backoff: &mut [u64; 2],
    ) {
        let max_lines = self.state().options.logger_tls_max_lines;
        let (r, s) = self.state().buffer.scan(max_lines);
        for (i, (log_type, count, ep)) in [
            ("result", r, Endpoint::LogResult),
            ("status", s, Endpoint::LogStatus),
        ]
        .into_iter()
        .enumerate()
        {
            if count == 0 {
                continue;
            }
            if backoff[i] > 0 {
                backoff[i] = backoff[i].saturating_sub(period);
                continue;
            }
            if i == 1 && !self.fleet.send_status_logs {
                self.state().buffer.drain_statuses(count);
                continue;
            }
            let Some(key) = self.node_key(conn).await else {
                fails[i] += 1;
                backoff[i] = (period * fails[i] * fails[i]).min(self.fleet.logger_backoff_max_ms);
                continue;
            };
            // Rendered only when sent (nothing while backing off or
            // waiting for a shared connection).
            let body = || {
                if i == 0 {
                    self.render_batch(&key, log_type, count, 0)
                } else {
                    self.render_batch(&key, log_type, 0, count)
                }
            };
            let gz = self.state().options.logger_tls_compress;
            let n = count;
            match self
                .request_raw(conn, ep, &self.fleet.paths.logger, body, Some(&key), gz)
                .await
            {
                Outcome::Ok(_) => {
                    let mut st = self.state();
                    if i == 0 {
                        st.buffer.drain_results(n);
                    } else {
                        st.buffer.drain_statuses(n);
                    }
                    fails[i] = 0;
                    self.fleet
                        .metrics
                        .lines_acked
                        .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                }
                _ => {
                    // Kept for the next check; pause this type k²·period.
                    fails[i] += 1;
                    let max = self.fleet.logger_backoff_max_ms;
                    backoff[i] = if max == 0 {
                        0
                    } else {
                        (period * fails[i] * fails[i]).min(max)
                    };
                }
            }
        }
    }
}

/// The first of the forwarder's checks after `last` (one every `period`)
/// at or after `fire_at`.
fn first_check_from(last: Instant, period: Duration, fire_at: Instant) -> Instant {
    let k = fire_at
        .saturating_duration_since(last)
        .as_nanos()
        .div_ceil(period.as_nanos().max(1))
        .max(1);
    last + period * u32::try_from(k).unwrap_or(u32::MAX)
}

/// As [`wait_or_stop`], ending early (false) when `wake` is notified.
async fn wait_or_stop_or(
    stop: &tokio::sync::watch::Receiver<bool>,
    d: Duration,
    wake: &tokio::sync::Notify,
) -> bool {
    tokio::select! {
        s = wait_or_stop(stop, d) => s,
        _ = wake.notified() => *stop.borrow(),
    }
}

/// Sleeps `d`; true when `stop` flipped first.
pub async fn wait_or_stop(stop: &tokio::sync::watch::Receiver<bool>, d: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    let mut s = stop.clone();
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = s.wait_for(|v| *v) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet() -> Fleet {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        );
        let target = Target::new(
            "127.0.0.1:9".parse().expect("addr"),
            "localhost",
            tls,
            Vec::new(),
        )
        .expect("target");
        Fleet {
            target: Arc::new(target),
            paths: Paths::with_prefix("/api/v1/osquery"),
            enroll_secret: "s".into(),
            options: Options::default(),
            config_refresh_ms: 60_000,
            config_accelerated_refresh_ms: 300_000,
            enroll_max_attempts: 0,
            logger_backoff_max_ms: 3_600_000,
            distributed: true,
            carver: false,
            carver_block_size: 300_000,
            carve_size: 0,
            send_status_logs: true,
            pool: None,
            metrics: Arc::default(),
            answers: Arc::default(),
            release: None,
            backlog_secs: 0,
            second: Duration::from_secs(1),
        }
    }

    /// An agent with an empty buffer sleeps to the forwarder's check
    /// that would first find the next query's lines: the check at or
    /// after the query's second, never the one already made.
    #[test]
    fn an_empty_forwarder_wakes_for_the_first_check_after_the_next_query() {
        let last = Instant::now();
        let p = Duration::from_secs(4);
        let s = Duration::from_secs;
        for (fire_in, check_in) in [
            (s(0), s(4)),
            (s(1), s(4)),
            (s(4), s(4)),
            (s(5), s(8)),
            (s(59), s(60)),
            (s(60), s(60)),
            (s(3601), s(3604)),
        ] {
            assert_eq!(
                first_check_from(last, p, last + fire_in),
                last + check_in,
                "a query {fire_in:?} after the last check"
            );
        }
        // A query due before the last check (fired at it) still waits for
        // the next check, not the one made.
        assert_eq!(first_check_from(last + s(2), p, last), last + s(6));
    }

    /// An idle agent costs its three tasks' futures: each is sized by
    /// its largest state, so an exchange's state (the write, the read,
    /// the pool's wait) is boxed per request and a connection's TLS
    /// state (about 4 KB inline) is boxed in its channel.
    #[test]
    fn an_idle_agents_tasks_do_not_carry_an_exchange() {
        let a = Agent::new(
            crate::osinfo::Machine::new(1, &crate::osinfo::OsMix::default(), 1),
            fleet(),
        );
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let sizes = [
            ("run", std::mem::size_of_val(&a.clone().run(rx.clone()))),
            (
                "logger",
                std::mem::size_of_val(&a.clone().logger_loop(rx.clone())),
            ),
            (
                "distributed",
                std::mem::size_of_val(&a.clone().distributed_loop(rx)),
            ),
        ];
        for (task, size) in sizes {
            assert!(size <= 1536, "the {task} task's future is {size} bytes");
        }
    }
}
