//! gatehouse-rules: the rule engine. It owns evaluating rules and firing
//! alerts; operators define the rules through the API
//! (`gatehouse_core::rules` has their types and the pure matching logic).
//!
//! Where events come from:
//! - result rows: every durable log batch ([`LogObserver`]: the all-in-one's
//!   direct sink, the cluster's ingest consumer, before it acknowledges);
//! - host enrolled: hostd publishes on `topics::HOST_ENROLLED`; the engines
//!   share it as a queue group, so one of them sees each enrollment;
//! - host silent and config drift: a sweep over the host records every
//!   `sweep_interval`.
//!
//! Rule changes: the API asks on `topics::RULES_CHANGED` and waits for an
//! engine to answer that it re-read the rules (every engine hears the
//! question; each re-reads, the first answer ends the wait), so a rule
//! applies to every line acknowledged after the API answered (in the
//! all-in-one, whose engine is the only one). Engines also re-read every
//! `refresh`.
//!
//! Firing stores an [`Alert`] whose id and time are derived from the event
//! (a re-delivered batch, a second sweep or a second engine fire the same
//! id, which is found and skipped), then runs its actions: `log` at once,
//! `webhook` on delivery tasks with retries and back-off; a webhook that
//! fails every attempt becomes a [`DeadLetter`] that operators can redrive.
//! The alert records each action's outcome. Alerts whose webhooks were
//! pending when the process stopped are resumed at the next start.
//!
//! Flood control: at most `max_alerts_per_rule_per_minute` alerts per rule
//! per minute per engine; the rest are counted (`suppressed`) and logged,
//! not stored.

pub mod deliver;
mod metrics;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use gatehouse_bus::events::host_from_record;
use gatehouse_core::model::{Host, LogRecords, ResultLog};
use gatehouse_core::ports::{Bus, LogObserver, Store, StoreError};
use gatehouse_core::rules::{
    Action, ActionState, Alert, CompiledRule, Trigger, alert_id, pending_outcomes, row_detail,
    rows_of, validate_rule,
};
use gatehouse_core::time::now_ms;
use gatehouse_proto::topics::{HOST_ENROLLED, RULES_CHANGED};
use gatehouse_runtime::Shutdown;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

pub use deliver::{Delivered, WebhookClient, signature};

/// One query run of one host under one rule: (rule index, host, query,
/// agent time).
type RunKey<'a> = (usize, &'a str, &'a str, i64);

/// Rows an alert lists (its `matched` count says how many there were).
const MAX_ROWS_PER_ALERT: usize = 100;

#[derive(Debug, Clone)]
pub struct RulesConfig {
    /// How often rules are re-read from the store (changes are also
    /// announced on the bus, so this is the fallback).
    pub refresh: Duration,
    /// How often hosts are swept for silence and config drift.
    pub sweep_interval: Duration,
    /// A host seen within this window counts as online (config drift is
    /// only judged on hosts that keep checking in).
    pub online_window: Duration,
    pub webhook_timeout: Duration,
    /// Attempts per webhook before it becomes a dead letter.
    pub webhook_attempts: u32,
    /// Wait before the second attempt; doubles after each, up to a minute.
    pub webhook_backoff: Duration,
    /// Alerts whose webhooks are delivered at the same time.
    pub max_concurrent_deliveries: usize,
    pub max_alerts_per_rule_per_minute: u32,
    /// Extra CA certificates (PEM) trusted for webhook receivers, beside
    /// the system's.
    pub webhook_ca: Option<std::path::PathBuf>,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            refresh: Duration::from_secs(30),
            sweep_interval: Duration::from_secs(60),
            online_window: Duration::from_secs(180),
            webhook_timeout: Duration::from_secs(10),
            webhook_attempts: 5,
            webhook_backoff: Duration::from_secs(2),
            max_concurrent_deliveries: 32,
            max_alerts_per_rule_per_minute: 600,
            webhook_ca: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("webhook client: {0}")]
    Client(String),
}

/// The compiled rules, indexed by the query their result rows come from.
#[derive(Debug, Default)]
struct RuleSet {
    rules: Vec<CompiledRule>,
    by_query: HashMap<String, Vec<usize>>,
}

impl RuleSet {
    fn new(rules: Vec<CompiledRule>) -> Self {
        let mut by_query: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in rules.iter().enumerate() {
            if let Some(q) = r.results_query() {
                by_query.entry(q.to_owned()).or_default().push(i);
            }
        }
        Self { rules, by_query }
    }

    fn host_rules(&self, kind: &str) -> impl Iterator<Item = &CompiledRule> {
        self.rules
            .iter()
            .filter(move |r| r.rule.enabled && r.rule.when.kind() == kind)
    }

    fn get(&self, name: &str) -> Option<&CompiledRule> {
        self.rules.iter().find(|r| r.rule.name == name)
    }
}

struct Inner {
    store: Arc<dyn Store>,
    cfg: RulesConfig,
    rules: RwLock<Arc<RuleSet>>,
    jobs: mpsc::Sender<Alert>,
    /// Alerts per rule in the current minute.
    budget: Mutex<HashMap<String, (i64, u32)>>,
    /// When each rule last alerted for each host (its throttle window).
    throttle: Mutex<HashMap<(String, gatehouse_core::HostId), i64>>,
    /// Ids this engine fired or found stored (skips store reads on the
    /// next sweep); cleared when it grows past a million.
    known: Mutex<HashSet<String>>,
    /// The newest config generation seen and when this engine first saw it.
    generation: Mutex<Option<(u64, i64)>>,
    webhooks: WebhookClient,
    metrics: metrics::Metrics,
    /// Where new alerts go for the log destinations, once set.
    forward: std::sync::OnceLock<gatehouse_core::ports::Forwarding>,
}

/// The rule engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("rules", &self.rule_set().rules.len())
            .finish()
    }
}

/// Alerts with webhooks to deliver, for [`run`].
#[derive(Debug)]
pub struct Deliveries(mpsc::Receiver<Alert>);

/// What one sweep found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub hosts: usize,
    pub fired: usize,
}

impl Engine {
    /// An engine over `store`, counting in `metrics`.
    pub fn new(
        store: Arc<dyn Store>,
        cfg: RulesConfig,
        metrics: &gatehouse_runtime::metrics::Metrics,
    ) -> Result<(Self, Deliveries), RulesError> {
        let webhooks = WebhookClient::new(cfg.webhook_timeout, cfg.webhook_ca.as_deref(), metrics)?;
        let (tx, rx) = mpsc::channel(4096);
        Ok((
            Self {
                inner: Arc::new(Inner {
                    store,
                    cfg,
                    rules: RwLock::new(Arc::default()),
                    jobs: tx,
                    budget: Mutex::default(),
                    throttle: Mutex::default(),
                    known: Mutex::default(),
                    generation: Mutex::default(),
                    webhooks,
                    metrics: metrics::Metrics::new(metrics),
                    forward: std::sync::OnceLock::new(),
                }),
            },
            Deliveries(rx),
        ))
    }

    /// Hands each new alert, once stored, to the log destinations
    /// (those that take `alerts`); the first log given stays.
    pub fn forward_to(&self, forward: gatehouse_core::ports::Forwarding) {
        let _ = self.inner.forward.set(forward);
    }

    fn rule_set(&self) -> Arc<RuleSet> {
        self.inner
            .rules
            .read()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Re-reads the rules; a stored rule that no longer validates is
    /// skipped and logged. Returns how many are loaded.
    pub async fn reload(&self) -> Result<usize, RulesError> {
        let stored = self.inner.store.list_rules().await?;
        let mut compiled = Vec::with_capacity(stored.len());
        for r in stored {
            match validate_rule(&r) {
                Ok(c) => compiled.push(c),
                Err(e) => tracing::warn!(rule = %r.name, error = %e, "stored rule skipped"),
            }
        }
        let n = compiled.len();
        let enabled = compiled.iter().filter(|c| c.rule.enabled).count();
        self.inner
            .metrics
            .loaded
            .set(i64::try_from(n).unwrap_or(i64::MAX));
        self.inner
            .metrics
            .enabled
            .set(i64::try_from(enabled).unwrap_or(i64::MAX));
        if let Ok(mut w) = self.inner.rules.write() {
            *w = Arc::new(RuleSet::new(compiled));
        }
        Ok(n)
    }

    /// The host's name for an alert on one of its lines: the line's
    /// `hostname` decoration, else the enrolled host's name, else the
    /// agent's `hostIdentifier` (osquery's defaults carry no decorations).
    async fn hostname_of(&self, line: &ResultLog) -> String {
        let field = |p: &str| {
            line.line
                .value()
                .pointer(p)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        if let Some(h) = field("/decorations/hostname") {
            return h;
        }
        match self.inner.store.get_host(&line.host_id).await {
            Ok(Some(h)) if !h.hostname.is_empty() => return h.hostname,
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "host unreadable for an alert's hostname"),
        }
        field("/hostIdentifier").unwrap_or_default()
    }

    /// Evaluates result rules against a durable batch of result lines.
    /// The rows one query run of one host matched (the lines of one batch
    /// that share host, query and agent time) make one alert: a snapshot
    /// of 40 matching rows is one alert, not 40.
    pub async fn on_results(&self, lines: &[ResultLog]) {
        let set = self.rule_set();
        if set.by_query.is_empty() {
            return;
        }
        // Counted once per batch: the metric's label lookup is not free.
        let mut evaluated = 0u64;
        // (rule, host, query, agent time) -> the first matching line and
        // the matched rows, in batch order.
        let mut groups: BTreeMap<RunKey<'_>, (&ResultLog, Vec<Value>)> = BTreeMap::new();
        for line in lines {
            let Some(idx) = set.by_query.get(&line.name) else {
                continue;
            };
            let rows = rows_of(line);
            for &i in idx {
                let rule = &set.rules[i];
                evaluated += rows.len() as u64;
                for row in rows.iter().filter(|r| rule.fires_on(&line.name, r)) {
                    let g = groups
                        .entry((i, line.host_id.as_str(), line.name.as_str(), line.unix_time))
                        .or_insert((line, Vec::new()));
                    g.1.push(json!({"row_action": row.action, "columns": row_detail(row.columns)}));
                }
            }
        }
        for ((i, _, _, _), (line, rows)) in groups {
            let rule = &set.rules[i];
            let hostname = self.hostname_of(line).await;
            let host = if hostname.is_empty() {
                line.host_id.as_str().to_owned()
            } else {
                hostname.clone()
            };
            let first = rows.first().cloned().unwrap_or_default();
            let summary = match rows.len() {
                1 => format!(
                    "{}: {} row of {} on {host}",
                    rule.rule.name,
                    first["row_action"].as_str().unwrap_or_default(),
                    line.name
                ),
                n => format!("{}: {n} rows of {} on {host}", rule.rule.name, line.name),
            };
            let matched = rows.len();
            let mut shown = rows;
            shown.truncate(MAX_ROWS_PER_ALERT);
            let alert = Alert {
                id: alert_id(&[&rule.rule.name, &line.line_id]),
                // Agent time when plausible, so a re-sent line (a new
                // receive time) maps to the same alert.
                at: gatehouse_core::logs::bucket_time(line.unix_time, line.received_at).0 * 1000,
                rule: rule.rule.name.clone(),
                event: "results".into(),
                host_id: line.host_id.clone(),
                summary,
                hostname,
                detail: json!({
                    "query": line.name,
                    "row_action": first["row_action"],
                    "columns": first["columns"],
                    "matched": matched,
                    "rows": shown,
                    "unix_time": line.unix_time,
                    "line_id": line.line_id,
                }),
                actions: pending_outcomes(&rule.rule.actions),
            };
            self.fire(rule, alert).await;
        }
        self.inner
            .metrics
            .evaluations
            .get_or_create(&kind("results"))
            .inc_by(evaluated);
    }

    /// Fires the host-enrolled rules that cover `host`.
    pub async fn on_enrolled(&self, host: &Host, first: bool) {
        let set = self.rule_set();
        let labels = host.label_set();
        for rule in set.host_rules("host_enrolled") {
            self.inner
                .metrics
                .evaluations
                .get_or_create(&kind("host_enrolled"))
                .inc();
            let Trigger::HostEnrolled { first_only, .. } = &rule.rule.when else {
                continue;
            };
            if (*first_only && !first) || !rule.covers_labels(&labels) {
                continue;
            }
            let at = host.last_enrolled_at;
            let alert = host_alert(
                rule,
                host,
                alert_id(&[&rule.rule.name, host.id.as_str(), &at.to_string()]),
                at,
                format!(
                    "{}: {} {} ({})",
                    rule.rule.name,
                    host_name(host),
                    if first { "enrolled" } else { "re-enrolled" },
                    host.platform
                ),
                json!({"first": first, "enroll_count": host.enroll_count, "labels": labels}),
            );
            self.fire(rule, alert).await;
        }
    }

    /// Looks for silent and drifting hosts once.
    pub async fn sweep(&self, now: i64) -> Result<SweepReport, RulesError> {
        let set = self.rule_set();
        let silent: Vec<&CompiledRule> = set.host_rules("host_silent").collect();
        let drift: Vec<&CompiledRule> = set.host_rules("config_drift").collect();
        let mut report = SweepReport::default();
        if silent.is_empty() && drift.is_empty() {
            return Ok(report);
        }
        let generation = if drift.is_empty() {
            None
        } else {
            let current = self.inner.store.config_generation().await?;
            let mut g = self
                .inner
                .generation
                .lock()
                .map_err(|_| RulesError::Client("lock poisoned".into()))?;
            match *g {
                Some((seen, _)) if seen == current => {}
                _ => *g = Some((current, now)),
            }
            *g
        };
        let online = ms(self.inner.cfg.online_window);
        let mut cursor: Option<String> = None;
        loop {
            let page = self.inner.store.list_hosts(cursor.as_deref(), 1000).await?;
            self.inner
                .metrics
                .evaluations
                .get_or_create(&kind("host_silent"))
                .inc_by((page.items.len() * silent.len()) as u64);
            self.inner
                .metrics
                .evaluations
                .get_or_create(&kind("config_drift"))
                .inc_by((page.items.len() * drift.len()) as u64);
            for host in &page.items {
                report.hosts += 1;
                let labels = host.label_set();
                for rule in &silent {
                    let Trigger::HostSilent { after_secs, .. } = rule.rule.when else {
                        continue;
                    };
                    let after = secs_ms(after_secs);
                    if now - host.last_seen <= after || !rule.covers_labels(&labels) {
                        continue;
                    }
                    let alert = host_alert(
                        rule,
                        host,
                        alert_id(&[
                            &rule.rule.name,
                            host.id.as_str(),
                            &host.last_seen.to_string(),
                        ]),
                        host.last_seen + after,
                        format!(
                            "{}: {} silent for {} min",
                            rule.rule.name,
                            host_name(host),
                            (now - host.last_seen) / 60_000
                        ),
                        json!({"last_seen": host.last_seen, "silent_ms": now - host.last_seen}),
                    );
                    if self.fire(rule, alert).await {
                        report.fired += 1;
                    }
                }
                let Some((current, seen_at)) = generation else {
                    continue;
                };
                for rule in &drift {
                    let Trigger::ConfigDrift { after_secs, .. } = rule.rule.when else {
                        continue;
                    };
                    let after = secs_ms(after_secs);
                    let drifting = host.config_generation < current
                        && now - seen_at >= after
                        && now - host.last_seen <= online
                        && rule.covers_labels(&labels);
                    if !drifting {
                        continue;
                    }
                    let alert = host_alert(
                        rule,
                        host,
                        alert_id(&[&rule.rule.name, host.id.as_str(), &current.to_string()]),
                        seen_at + after,
                        format!(
                            "{}: {} still runs config generation {} of {}",
                            rule.rule.name,
                            host_name(host),
                            host.config_generation,
                            current
                        ),
                        json!({
                            "running_generation": host.config_generation,
                            "running_hash": host.config_hash,
                            "current_generation": current,
                            "last_seen": host.last_seen,
                        }),
                    );
                    if self.fire(rule, alert).await {
                        report.fired += 1;
                    }
                }
            }
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        Ok(report)
    }

    /// Stores `alert` unless it exists, runs its log actions and queues
    /// its webhooks. True when it fired now.
    async fn fire(&self, rule: &CompiledRule, mut alert: Alert) -> bool {
        let name = rule.rule.name.as_str();
        let key = format!("{}/{}", alert.at, alert.id);
        if self.inner.known.lock().is_ok_and(|k| k.contains(&key)) {
            return false;
        }
        match self.inner.store.get_alert(alert.at, &alert.id).await {
            Ok(Some(_)) => {
                self.remember(key);
                self.inner
                    .metrics
                    .alerts
                    .get_or_create(&outcome(name, "duplicate"))
                    .inc();
                return false;
            }
            Ok(None) => {}
            Err(e) => {
                // Firing twice beats not firing: go on.
                tracing::warn!(rule = name, error = %e, "alert lookup failed");
            }
        }
        if rule.rule.throttle_secs > 0 && self.throttled(rule, &alert) {
            self.inner
                .metrics
                .alerts
                .get_or_create(&outcome(name, "throttled"))
                .inc();
            return false;
        }
        if !self.within_budget(name, alert.at.max(now_ms())) {
            self.inner
                .metrics
                .alerts
                .get_or_create(&outcome(name, "suppressed"))
                .inc();
            return false;
        }
        let now = now_ms();
        for (i, a) in rule.rule.actions.iter().enumerate() {
            if matches!(a, Action::Log) {
                tracing::warn!(
                    target: "gatehouse::alert",
                    rule = name,
                    alert = %alert.id,
                    event = %alert.event,
                    host = %alert.host_id,
                    hostname = %alert.hostname,
                    detail = %alert.detail,
                    "{}",
                    alert.summary
                );
                let o = &mut alert.actions[i];
                o.state = ActionState::Delivered;
                o.attempts = 1;
                o.finished_at = Some(now);
                self.inner
                    .metrics
                    .deliveries
                    .get_or_create(&delivery("log", "delivered"))
                    .inc();
            }
        }
        // Forwarded before it is stored: a process that dies in between
        // finds no stored alert when the unacknowledged batch comes again,
        // so it fires (and forwards) it again; stored first, the repeat
        // would be skipped and never forwarded (ADR 0039).
        if let Some(f) = self.inner.forward.get() {
            let payload =
                gatehouse_bus::events::encode_forward_events("alert", std::slice::from_ref(&alert));
            if let Err(e) = f.append(&format!("alert:{}", alert.id), 1, payload).await {
                tracing::error!(rule = name, alert = %alert.id, error = %e, "alert not forwarded");
            }
        }
        if let Err(e) = self.inner.store.put_alert(&alert).await {
            tracing::error!(rule = name, alert = %alert.id, error = %e, "alert could not be stored");
            self.inner
                .metrics
                .alerts
                .get_or_create(&outcome(name, "store_failed"))
                .inc();
            return false;
        }
        self.remember(key);
        self.inner
            .metrics
            .alerts
            .get_or_create(&outcome(name, "fired"))
            .inc();
        if alert
            .actions
            .iter()
            .any(|o| o.state == ActionState::Pending)
        {
            self.inner.metrics.pending.inc();
            if self.inner.jobs.send(alert).await.is_err() {
                self.inner.metrics.pending.dec();
                tracing::warn!(
                    rule = name,
                    "delivery queue closed; the alert is resumed at the next start"
                );
            }
        }
        true
    }

    fn remember(&self, key: String) {
        if let Ok(mut k) = self.inner.known.lock() {
            if k.len() >= 1_000_000 {
                k.clear();
            }
            k.insert(key);
        }
    }

    /// Whether `rule` alerted for the alert's host less than its throttle
    /// window before the alert's time; if not, this alert opens a window.
    fn throttled(&self, rule: &CompiledRule, alert: &Alert) -> bool {
        let window = i64::try_from(rule.rule.throttle_secs)
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000);
        let Ok(mut last) = self.inner.throttle.lock() else {
            return false;
        };
        if last.len() > 1_000_000 {
            last.clear();
        }
        let key = (rule.rule.name.clone(), alert.host_id.clone());
        match last.get(&key) {
            Some(&at) if alert.at >= at && alert.at - at < window => true,
            _ => {
                last.insert(key, alert.at);
                false
            }
        }
    }

    fn within_budget(&self, rule: &str, at: i64) -> bool {
        let minute = at / 60_000;
        let Ok(mut b) = self.inner.budget.lock() else {
            return true;
        };
        let e = b.entry(rule.to_owned()).or_insert((minute, 0));
        if e.0 != minute {
            *e = (minute, 0);
        }
        e.1 += 1;
        if e.1 == self.inner.cfg.max_alerts_per_rule_per_minute + 1 {
            tracing::warn!(
                rule,
                limit = self.inner.cfg.max_alerts_per_rule_per_minute,
                "rule fires more often than its per-minute limit; further alerts this minute are counted, not stored"
            );
        }
        e.1 <= self.inner.cfg.max_alerts_per_rule_per_minute
    }

    /// Delivers the pending webhooks of `alert` (with retries), then
    /// records the outcomes, dead letters included.
    async fn deliver(&self, mut alert: Alert, shutdown: &Shutdown) {
        let set = self.rule_set();
        let rule = set.get(&alert.rule);
        for i in 0..alert.actions.len() {
            if alert.actions[i].state != ActionState::Pending {
                continue;
            }
            let Some(hook) = rule
                .and_then(|r| r.rule.actions.get(i))
                .and_then(Action::hook)
            else {
                let o = &mut alert.actions[i];
                o.state = ActionState::Dead;
                o.last_error = Some("the rule or its action was removed before delivery".into());
                o.finished_at = Some(now_ms());
                continue;
            };
            let outcome = self
                .inner
                .webhooks
                .deliver_with_retries(hook, &alert, &self.inner.cfg, shutdown)
                .await;
            let o = &mut alert.actions[i];
            o.attempts += outcome.attempts;
            o.last_error = outcome.error.clone();
            match outcome.result {
                Delivered::Yes => {
                    o.state = ActionState::Delivered;
                    o.finished_at = Some(now_ms());
                }
                Delivered::Stopped => {
                    // Shutting down: left pending, resumed at the next start.
                }
                Delivered::GaveUp => {
                    o.state = ActionState::Dead;
                    o.finished_at = Some(now_ms());
                    let (attempts, last_error) =
                        (o.attempts, o.last_error.clone().unwrap_or_default());
                    let dead = gatehouse_core::rules::DeadLetter {
                        id: gatehouse_core::rules::DeadLetter::id_for(&alert.id, i),
                        alert: alert.clone(),
                        action_index: i,
                        url: hook.url.to_owned(),
                        attempts,
                        last_error,
                        dead_at: now_ms(),
                    };
                    if let Err(e) = self.inner.store.put_dead_letter(&dead).await {
                        tracing::error!(alert = %alert.id, error = %e, "dead letter could not be stored");
                    }
                }
            }
        }
        if let Err(e) = self.inner.store.put_alert(&alert).await {
            tracing::warn!(alert = %alert.id, error = %e, "alert outcome could not be stored");
        }
    }

    /// Queues the webhooks of recent alerts left pending by a stop.
    async fn resume_pending(&self) -> Result<usize, RulesError> {
        let since = now_ms() - 86_400_000;
        let mut before: Option<(i64, String)> = None;
        let mut resumed = 0;
        'pages: loop {
            let page = self
                .inner
                .store
                .list_alerts(before.as_ref().map(|(a, i)| (*a, i.as_str())), 500)
                .await?;
            let Some(last) = page.last() else { break };
            before = Some((last.at, last.id.clone()));
            let full = page.len() == 500;
            for a in page {
                if a.at < since {
                    break 'pages;
                }
                if a.actions.iter().any(|o| o.state == ActionState::Pending) {
                    resumed += 1;
                    self.inner.metrics.pending.inc();
                    if self.inner.jobs.send(a).await.is_err() {
                        self.inner.metrics.pending.dec();
                        break 'pages;
                    }
                }
            }
            if !full {
                break;
            }
        }
        Ok(resumed)
    }
}

fn host_name(h: &Host) -> &str {
    if h.hostname.is_empty() {
        h.id.as_str()
    } else {
        &h.hostname
    }
}

fn host_alert(
    rule: &CompiledRule,
    host: &Host,
    id: String,
    at: i64,
    summary: String,
    detail: serde_json::Value,
) -> Alert {
    Alert {
        id,
        at,
        rule: rule.rule.name.clone(),
        event: rule.rule.when.kind().into(),
        host_id: host.id.clone(),
        hostname: host.hostname.clone(),
        summary,
        detail,
        actions: pending_outcomes(&rule.rule.actions),
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn secs_ms(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

fn kind(event: &str) -> metrics::EventLabel {
    metrics::EventLabel {
        event: event.into(),
    }
}

fn outcome(rule: &str, outcome: &str) -> metrics::AlertLabels {
    metrics::AlertLabels {
        rule: rule.into(),
        outcome: outcome.into(),
    }
}

fn delivery(action: &str, outcome: &str) -> metrics::DeliveryLabels {
    metrics::DeliveryLabels {
        action: action.into(),
        outcome: outcome.into(),
    }
}

#[async_trait]
impl LogObserver for Engine {
    async fn observe(&self, records: &LogRecords) {
        if let LogRecords::Results(lines) = records {
            self.on_results(lines).await;
        }
    }
}

/// Runs the engine until `shutdown`: loads the rules (and reloads them on
/// change), resumes pending webhooks, answers enrollment events from `bus`,
/// sweeps hosts, and delivers webhooks. Deliveries under way at shutdown
/// stop between attempts and stay pending for the next start.
pub async fn run(engine: Engine, deliveries: Deliveries, bus: Arc<dyn Bus>, shutdown: Shutdown) {
    let Deliveries(mut jobs) = deliveries;
    if let Err(e) = engine.reload().await {
        tracing::warn!(error = %e, "rules not readable yet; retrying on the refresh interval");
    }
    match engine.resume_pending().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(alerts = n, "resuming webhook deliveries left pending"),
        Err(e) => tracing::warn!(error = %e, "pending alerts not readable"),
    }
    let mut enrolled = subscribe(&bus, HOST_ENROLLED.subject(), Some("rules")).await;
    let mut changed = subscribe(&bus, RULES_CHANGED.subject(), None).await;
    let mut refresh = tokio::time::interval(engine.inner.cfg.refresh);
    let mut sweep = tokio::time::interval(engine.inner.cfg.sweep_interval);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let slots = Arc::new(Semaphore::new(
        engine.inner.cfg.max_concurrent_deliveries.max(1),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    tracing::info!("rule engine running");
    loop {
        tokio::select! {
            // A rule change is applied before events that follow it.
            biased;
            _ = shutdown.wait() => break,
            m = next(&mut changed) => {
                match engine.reload().await {
                    // The API waits for this answer: once it has one, lines
                    // acknowledged afterwards meet the changed rules.
                    Ok(_) => {
                        if let Some(r) = m.reply
                            && let Err(e) = r.reply(Default::default()).await
                        {
                            tracing::debug!(error = %e, "rule change not answered");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "rule reload failed"),
                }
            }
            _ = refresh.tick() => {
                if let Err(e) = engine.reload().await {
                    tracing::warn!(error = %e, "rule reload failed");
                }
            }
            _ = sweep.tick() => {
                let e = engine.clone();
                // A slow sweep must not hold up enrollment events.
                tasks.spawn(async move {
                    match e.sweep(now_ms()).await {
                        Ok(r) if r.fired > 0 => tracing::info!(hosts = r.hosts, fired = r.fired, "host sweep fired alerts"),
                        Ok(_) => {}
                        Err(err) => tracing::warn!(error = %err, "host sweep failed"),
                    }
                });
            }
            m = next(&mut enrolled) => {
                let event = HOST_ENROLLED.decode(m.payload).map_err(Into::into).and_then(|ev| {
                    let first = ev.first;
                    ev.host
                        .ok_or(gatehouse_bus::events::EventError::Invalid { field: "host", reason: "missing".into() })
                        .and_then(host_from_record)
                        .map(|h| (h, first))
                });
                match event {
                    Ok((host, first)) => engine.on_enrolled(&host, first).await,
                    Err(e) => tracing::warn!(error = %e, "undecodable enrollment event"),
                }
            }
            Some(alert) = jobs.recv() => {
                let Ok(slot) = slots.clone().acquire_owned().await else { break };
                let (e, s) = (engine.clone(), shutdown.clone());
                tasks.spawn(async move {
                    e.deliver(alert, &s).await;
                    e.inner.metrics.pending.dec();
                    drop(slot);
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    while tasks.join_next().await.is_some() {}
    tracing::info!("rule engine stopped");
}

async fn subscribe(
    bus: &Arc<dyn Bus>,
    subject: &str,
    group: Option<&str>,
) -> Option<gatehouse_core::ports::Subscription> {
    match bus.subscribe(subject, group).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(subject, error = %e, "rule engine cannot subscribe; relying on polling");
            None
        }
    }
}

/// The next message of an optional subscription (pending forever when
/// there is none or it ended).
async fn next(
    s: &mut Option<gatehouse_core::ports::Subscription>,
) -> gatehouse_core::ports::BusMessage {
    if let Some(sub) = s.as_mut()
        && let Some(m) = sub.next().await
    {
        return m;
    }
    *s = None;
    std::future::pending().await
}
