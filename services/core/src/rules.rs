//! Rules and alerts: what operators define (a trigger, a condition over
//! result rows, actions), what firing one records (an [`Alert`] with the
//! outcome of each action), and the pure logic: validation, compiling a
//! condition once (regexes included) and evaluating it against rows.
//!
//! Rows are osquery's: every column value is a string. Comparisons are
//! numeric when both sides parse as numbers, else by string order. A
//! condition over a column the row does not have is false, except `empty`
//! (true) and the negated operators (`not_*`, `ne`), which hold when the
//! positive one does not.

use std::collections::BTreeMap;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::HostId;
use crate::config::{ConfigError, valid_name};
use crate::model::{ResultKind, ResultLog};

/// Longest regex pattern (bytes) and deepest nesting a condition may use.
pub const MAX_PATTERN_LEN: usize = 1024;
pub const MAX_DEPTH: usize = 8;
pub const MAX_ACTIONS: usize = 8;

/// A rule: when `when` happens (and its condition holds), run `actions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub when: Trigger,
    pub actions: Vec<Action>,
    /// At most one alert per host and this rule in this many seconds
    /// (the rest are counted as throttled); 0 alerts on every event.
    #[serde(default)]
    pub throttle_secs: u64,
    #[serde(default)]
    pub updated_at: i64,
}

fn yes() -> bool {
    true
}

/// What a rule reacts to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// Rows of result logs of the scheduled query logged as `query` (the
    /// name in the agent's log line, e.g. `processes` or
    /// `pack/<pack>/<query>`).
    Results {
        query: String,
        /// Which rows: `added`, `removed`, `snapshot` (default: added and
        /// snapshot rows).
        #[serde(default = "default_row_actions")]
        row_actions: Vec<String>,
        /// Rows that fire; none fires on every row.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        condition: Option<Condition>,
    },
    /// A host enrolled (`first_only`: only its first enrollment).
    HostEnrolled {
        #[serde(default)]
        first_only: bool,
        /// Only hosts with one of these labels (none: every host).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        labels: Vec<String>,
    },
    /// A host has not checked in for longer than `after_secs`; fires once
    /// per silence.
    HostSilent {
        after_secs: u64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        labels: Vec<String>,
    },
    /// A host that keeps checking in still runs an older config
    /// generation `after_secs` after a newer one was published (its agent
    /// is not applying config); fires once per host and generation.
    ConfigDrift {
        after_secs: u64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        labels: Vec<String>,
    },
}

fn default_row_actions() -> Vec<String> {
    vec!["added".into(), "snapshot".into()]
}

impl Trigger {
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Results { .. } => "results",
            Trigger::HostEnrolled { .. } => "host_enrolled",
            Trigger::HostSilent { .. } => "host_silent",
            Trigger::ConfigDrift { .. } => "config_drift",
        }
    }

    /// The label filter of a host event (empty for result rules).
    pub fn labels(&self) -> &[String] {
        match self {
            Trigger::Results { .. } => &[],
            Trigger::HostEnrolled { labels, .. }
            | Trigger::HostSilent { labels, .. }
            | Trigger::ConfigDrift { labels, .. } => labels,
        }
    }
}

/// A condition over one row: a group of conditions, or one comparison.
/// Written untagged; read by the key it has (`all`, `any`, else a
/// comparison), so a mistake is named ("unknown field `colum`") instead of
/// "data did not match any variant".
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Condition {
    /// Every condition holds.
    All {
        all: Vec<Condition>,
    },
    /// At least one condition holds.
    Any {
        any: Vec<Condition>,
    },
    Match(Match),
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        const FORMS: &str = "{all: [...]}, {any: [...]} or {column, op, value}";
        let v = Value::deserialize(d)?;
        let Value::Object(m) = v else {
            return Err(D::Error::custom(format!(
                "a condition is an object, {FORMS}; not {v}"
            )));
        };
        for group in ["all", "any"] {
            let Some(items) = m.get(group) else {
                continue;
            };
            if let Some(other) = m.keys().find(|k| *k != group) {
                return Err(D::Error::custom(format!(
                    "a condition with `{group}` has no other field (found `{other}`): {FORMS}"
                )));
            }
            let items: Vec<Condition> = serde_json::from_value(items.clone())
                .map_err(|e| D::Error::custom(format!("{group}: {e}")))?;
            return Ok(if group == "all" {
                Condition::All { all: items }
            } else {
                Condition::Any { any: items }
            });
        }
        serde_json::from_value::<Match>(Value::Object(m))
            .map(Condition::Match)
            .map_err(|e| D::Error::custom(format!("a comparison ({FORMS}): {e}")))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Match {
    pub column: String,
    pub op: Op,
    /// The operand (not used by `empty` and `not_empty`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Eq,
    Ne,
    BeginsWith,
    NotBeginsWith,
    Contains,
    NotContains,
    EndsWith,
    NotEndsWith,
    Empty,
    NotEmpty,
    Lt,
    Le,
    Gt,
    Ge,
    Regex,
    NotRegex,
}

impl Op {
    fn needs_value(self) -> bool {
        !matches!(self, Op::Empty | Op::NotEmpty)
    }
}

/// What a rule does when it fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// POST the alert as JSON to `url` (retried with back-off; after the
    /// last attempt it goes to the dead-letter list).
    Webhook {
        url: String,
        /// Extra request headers (the receiver's token, a routing key).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
        /// Signs every POST: `x-gatehouse-signature: sha256=<hex>`, the
        /// HMAC-SHA256 of the exact body under this secret.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<String>,
    },
    /// Write the alert to the server log (target `gatehouse::alert`).
    Log,
}

/// Where and how a webhook action posts, borrowed from its rule.
#[derive(Debug, Clone, Copy)]
pub struct Hook<'a> {
    pub url: &'a str,
    pub headers: &'a BTreeMap<String, String>,
    pub secret: Option<&'a str>,
}

impl<'a> Hook<'a> {
    /// A bare URL: no extra headers, unsigned.
    pub fn url(url: &'a str) -> Self {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        Self {
            url,
            headers: &NONE,
            secret: None,
        }
    }
}

/// Headers a webhook action may not set: the ones the client writes.
const RESERVED_HEADERS: &[&str] = &["content-type", "content-length", "host", "user-agent"];

impl Action {
    /// The webhook this action posts to, if it is one.
    pub fn hook(&self) -> Option<Hook<'_>> {
        match self {
            Action::Webhook {
                url,
                headers,
                secret,
            } => Some(Hook {
                url,
                headers,
                secret: secret.as_deref(),
            }),
            Action::Log => None,
        }
    }

    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Webhook { .. } => ActionKind::Webhook,
            Action::Log => ActionKind::Log,
        }
    }

    /// Where it goes, with a webhook URL's path and query hidden (they
    /// often carry the receiver's secret).
    pub fn target_redacted(&self) -> String {
        match self {
            Action::Webhook { url, .. } => redact_url(url),
            Action::Log => "server log".into(),
        }
    }
}

/// `https://host:port/…` of a URL.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host = authority.rsplit('@').next().unwrap_or(authority);
            if rest.len() > authority.len() {
                format!("{scheme}://{host}/…")
            } else {
                format!("{scheme}://{host}")
            }
        }
        None => "…".into(),
    }
}

impl Rule {
    /// The rule as a reader without the admin role sees it: webhook URLs
    /// redacted.
    pub fn redacted(mut self) -> Self {
        for a in &mut self.actions {
            if let Action::Webhook {
                url,
                headers,
                secret,
            } = a
            {
                *url = redact_url(url);
                for v in headers.values_mut() {
                    *v = "<redacted>".into();
                }
                if secret.is_some() {
                    *secret = Some("<redacted>".into());
                }
            }
        }
        self
    }
}

/// The kind of an alert action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Webhook,
    Log,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Webhook => "webhook",
            ActionKind::Log => "log",
        }
    }
}

/// Where one action of an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionState {
    /// Not carried out yet (or being retried).
    Pending,
    Delivered,
    /// Gave up after every attempt: see the dead letters.
    Dead,
}

impl ActionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::Pending => "pending",
            ActionState::Delivered => "delivered",
            ActionState::Dead => "dead",
        }
    }
}

/// Sends an alert to a webhook receiver: the rule engine's client (its
/// timeout and extra CAs), which the API also redrives dead letters with.
#[async_trait::async_trait]
pub trait WebhookSender: Send + Sync + 'static {
    /// One POST of `alert` to `hook`; the error says why it failed (for
    /// the alert's outcome and the dead letter).
    async fn send(&self, hook: Hook<'_>, alert: &Alert) -> Result<(), String>;
}

/// What happened to one action of an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ActionOutcome {
    pub action: ActionKind,
    /// The webhook URL (redacted) or `server log`.
    pub target: String,
    pub state: ActionState,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
}

/// One firing of a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Alert {
    /// Deterministic: the same event fires the same id (a re-delivered
    /// log batch or a second sweep does not fire twice). Webhook receivers
    /// can deduplicate on it.
    pub id: String,
    /// When the event happened (ms): the line's receive time, the moment
    /// a host became silent, the enrollment time.
    pub at: i64,
    pub rule: String,
    /// `results`, `host_enrolled`, `host_silent`, `config_drift`.
    pub event: String,
    pub host_id: HostId,
    #[serde(default)]
    pub hostname: String,
    /// One line for people.
    pub summary: String,
    /// The matched row and where it came from, or the host facts.
    #[serde(default)]
    pub detail: Value,
    pub actions: Vec<ActionOutcome>,
}

/// A webhook delivery that failed every attempt. Redriving it sends it
/// again; it leaves the list once delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeadLetter {
    /// `<alert id>.<action index>`.
    pub id: String,
    pub alert: Alert,
    /// Index into the rule's (and the alert's) actions.
    pub action_index: usize,
    /// The full webhook URL (admin-only reading).
    pub url: String,
    pub attempts: u32,
    pub last_error: String,
    pub dead_at: i64,
}

impl DeadLetter {
    pub fn id_for(alert_id: &str, action_index: usize) -> String {
        format!("{alert_id}.{action_index}")
    }
}

/// Checks a rule and compiles its condition; the error says what to fix.
pub fn validate_rule(r: &Rule) -> Result<CompiledRule, ConfigError> {
    let bad = |field: &'static str, m: String| {
        Err(ConfigError::field(field, format!("rule {:?}: {m}", r.name)))
    };
    if !valid_name(&r.name) {
        return Err(ConfigError::field(
            "name",
            format!(
                "rule name {:?} must be 1-128 characters of letters, digits, '_', '-', '.', ':' or '/'",
                r.name
            ),
        ));
    }
    if r.actions.is_empty() {
        return bad(
            "actions",
            "needs at least one action (webhook or log)".into(),
        );
    }
    if r.actions.len() > MAX_ACTIONS {
        return bad("actions", format!("has more than {MAX_ACTIONS} actions"));
    }
    for a in &r.actions {
        if let Action::Webhook {
            url,
            headers,
            secret,
        } = a
        {
            if headers.len() > 20 {
                return bad("actions", "a webhook sets at most 20 headers".into());
            }
            for (k, v) in headers {
                let name_ok = !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b));
                if !name_ok {
                    return bad(
                        "actions",
                        format!("webhook header name {k:?} is not an HTTP header name"),
                    );
                }
                let lower = k.to_ascii_lowercase();
                if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("x-gatehouse-") {
                    return bad(
                        "actions",
                        format!(
                            "webhook header {k:?} is set by Gatehouse (content-type, content-length, host, user-agent, x-gatehouse-*)"
                        ),
                    );
                }
                if v.bytes().any(|b| b < 0x20 || b == 0x7f) {
                    return bad(
                        "actions",
                        format!("webhook header {k:?}: its value holds control characters"),
                    );
                }
            }
            if secret.as_deref().is_some_and(|s| s.len() < 16) {
                return bad(
                    "actions",
                    "a webhook secret has at least 16 characters".into(),
                );
            }
            let ok = (url.starts_with("https://") || url.starts_with("http://"))
                && url.split_once("://").is_some_and(|(_, h)| {
                    !h.is_empty() && !h.starts_with('/') && !h.contains(char::is_whitespace)
                });
            if !ok {
                return bad(
                    "actions",
                    format!(
                        "webhook url {:?} must be an http:// or https:// URL with a host",
                        redact_url(url)
                    ),
                );
            }
        }
    }
    for l in r.when.labels() {
        if !valid_name(l) {
            return bad("when", format!("label {l:?} is not a valid name"));
        }
    }
    let condition = match &r.when {
        Trigger::Results {
            query,
            row_actions,
            condition,
        } => {
            if query.trim().is_empty() {
                return bad(
                    "when",
                    "`query` must name the scheduled query the rows come from".into(),
                );
            }
            if row_actions.is_empty() {
                return bad(
                    "when",
                    "`row_actions` must name at least one of added, removed, snapshot".into(),
                );
            }
            if let Some(a) = row_actions
                .iter()
                .find(|a| !["added", "removed", "snapshot"].contains(&a.as_str()))
            {
                return bad(
                    "when",
                    format!("row action {a:?} is not one of added, removed, snapshot"),
                );
            }
            match condition {
                Some(c) => Some(compile(c, 1).map_err(|m| {
                    ConfigError::field("when", format!("rule {:?}: condition: {m}", r.name))
                })?),
                None => None,
            }
        }
        Trigger::HostSilent { after_secs, .. } | Trigger::ConfigDrift { after_secs, .. } => {
            if *after_secs < 60 {
                return bad("when", "`after_secs` must be at least 60".into());
            }
            None
        }
        Trigger::HostEnrolled { .. } => None,
    };
    Ok(CompiledRule {
        rule: r.clone(),
        condition,
    })
}

/// A rule ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub rule: Rule,
    condition: Option<Compiled>,
}

#[derive(Debug, Clone)]
enum Compiled {
    All(Vec<Compiled>),
    Any(Vec<Compiled>),
    Match {
        column: String,
        op: Op,
        value: String,
        number: Option<f64>,
        regex: Option<Regex>,
    },
}

fn compile(c: &Condition, depth: usize) -> Result<Compiled, String> {
    if depth > MAX_DEPTH {
        return Err(format!("groups nest deeper than {MAX_DEPTH}"));
    }
    match c {
        Condition::All { all } | Condition::Any { any: all } if all.is_empty() => {
            Err("an `all`/`any` group needs at least one condition".into())
        }
        Condition::All { all } => Ok(Compiled::All(
            all.iter()
                .map(|c| compile(c, depth + 1))
                .collect::<Result<_, _>>()?,
        )),
        Condition::Any { any } => Ok(Compiled::Any(
            any.iter()
                .map(|c| compile(c, depth + 1))
                .collect::<Result<_, _>>()?,
        )),
        Condition::Match(m) => {
            if m.column.is_empty() {
                return Err("a match needs a `column`".into());
            }
            let value = match (&m.value, m.op.needs_value()) {
                (Some(v), true) => v.clone(),
                (None, true) => {
                    return Err(format!("{:?} on {:?} needs a `value`", m.op, m.column));
                }
                (Some(_), false) => {
                    return Err(format!("{:?} on {:?} takes no `value`", m.op, m.column));
                }
                (None, false) => String::new(),
            };
            let regex = match m.op {
                Op::Regex | Op::NotRegex => {
                    if value.len() > MAX_PATTERN_LEN {
                        return Err(format!("pattern longer than {MAX_PATTERN_LEN} bytes"));
                    }
                    Some(
                        regex::RegexBuilder::new(&value)
                            .size_limit(1 << 20)
                            .build()
                            .map_err(|e| format!("pattern {value:?} is not a valid regex: {e}"))?,
                    )
                }
                _ => None,
            };
            if matches!(m.op, Op::Lt | Op::Le | Op::Gt | Op::Ge) && value.is_empty() {
                return Err(format!(
                    "{:?} on {:?} needs a non-empty value",
                    m.op, m.column
                ));
            }
            Ok(Compiled::Match {
                column: m.column.clone(),
                op: m.op,
                number: value.trim().parse::<f64>().ok(),
                value,
                regex,
            })
        }
    }
}

fn cell(row: &Map<String, Value>, column: &str) -> Option<String> {
    match row.get(column)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        v => Some(v.to_string()),
    }
}

impl Compiled {
    fn holds(&self, row: &Map<String, Value>) -> bool {
        match self {
            Compiled::All(cs) => cs.iter().all(|c| c.holds(row)),
            Compiled::Any(cs) => cs.iter().any(|c| c.holds(row)),
            Compiled::Match {
                column,
                op,
                value,
                number,
                regex,
            } => {
                let got = cell(row, column);
                let positive = |got: &str| -> bool {
                    match op {
                        Op::Eq | Op::Ne => got == value,
                        Op::BeginsWith | Op::NotBeginsWith => got.starts_with(value.as_str()),
                        Op::Contains | Op::NotContains => got.contains(value.as_str()),
                        Op::EndsWith | Op::NotEndsWith => got.ends_with(value.as_str()),
                        Op::Empty | Op::NotEmpty => got.is_empty(),
                        Op::Regex | Op::NotRegex => regex.as_ref().is_some_and(|r| r.is_match(got)),
                        Op::Lt | Op::Le | Op::Gt | Op::Ge => {
                            let ord = match (got.trim().parse::<f64>().ok(), number) {
                                (Some(a), Some(b)) => a.partial_cmp(b),
                                _ => Some(got.cmp(value.as_str())),
                            };
                            let Some(ord) = ord else { return false };
                            match op {
                                Op::Lt => ord.is_lt(),
                                Op::Le => ord.is_le(),
                                Op::Gt => ord.is_gt(),
                                _ => ord.is_ge(),
                            }
                        }
                    }
                };
                let negated = matches!(
                    op,
                    Op::Ne
                        | Op::NotBeginsWith
                        | Op::NotContains
                        | Op::NotEndsWith
                        | Op::NotEmpty
                        | Op::NotRegex
                );
                match got {
                    // A missing column is empty, matches nothing else.
                    None => match op {
                        Op::Empty => true,
                        Op::NotEmpty => false,
                        _ => negated,
                    },
                    Some(g) => positive(&g) != negated,
                }
            }
        }
    }
}

/// One row of a result line and how it was logged.
#[derive(Debug, Clone, PartialEq)]
pub struct Row<'a> {
    /// `added`, `removed` or `snapshot`.
    pub action: &'static str,
    pub columns: &'a Map<String, Value>,
}

/// Every row a stored result line carries, whatever its shape.
pub fn rows_of(line: &ResultLog) -> Vec<Row<'_>> {
    let mut out = Vec::new();
    let l = line.line.value();
    match line.kind {
        ResultKind::Event => {
            if let Some(columns) = l.get("columns").and_then(Value::as_object) {
                let action = match l.get("action").and_then(Value::as_str) {
                    Some("removed") => "removed",
                    Some("snapshot") => "snapshot",
                    _ => "added",
                };
                out.push(Row { action, columns });
            }
        }
        ResultKind::Snapshot => {
            for r in l
                .get("snapshot")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(columns) = r.as_object() {
                    out.push(Row {
                        action: "snapshot",
                        columns,
                    });
                }
            }
        }
        ResultKind::Batched => {
            let diff = l.get("diffResults");
            for (key, action) in [("added", "added"), ("removed", "removed")] {
                let rows = diff.and_then(|d| d.get(key)).and_then(Value::as_array);
                for r in rows.into_iter().flatten() {
                    if let Some(columns) = r.as_object() {
                        out.push(Row { action, columns });
                    }
                }
            }
        }
        ResultKind::Other => {}
    }
    out
}

impl CompiledRule {
    /// Whether `row` of a line logged as `query` fires this rule.
    pub fn fires_on(&self, query: &str, row: &Row<'_>) -> bool {
        let Trigger::Results {
            query: want,
            row_actions,
            ..
        } = &self.rule.when
        else {
            return false;
        };
        self.rule.enabled
            && want == query
            && row_actions.iter().any(|a| a == row.action)
            && self.condition.as_ref().is_none_or(|c| c.holds(row.columns))
    }

    /// The query name a result rule listens to.
    pub fn results_query(&self) -> Option<&str> {
        match &self.rule.when {
            Trigger::Results { query, .. } if self.rule.enabled => Some(query),
            _ => None,
        }
    }

    /// Whether a host with `labels` is in this rule's scope.
    pub fn covers_labels(&self, labels: &[String]) -> bool {
        let want = self.rule.when.labels();
        want.is_empty() || want.iter().any(|w| labels.contains(w))
    }
}

/// Pending outcomes for a rule's actions.
pub fn pending_outcomes(actions: &[Action]) -> Vec<ActionOutcome> {
    actions
        .iter()
        .map(|a| ActionOutcome {
            action: a.kind(),
            target: a.target_redacted(),
            state: ActionState::Pending,
            attempts: 0,
            last_error: None,
            finished_at: None,
        })
        .collect()
}

/// A deterministic alert id from the parts that identify the event.
pub fn alert_id(parts: &[&str]) -> String {
    let mut s = String::new();
    for p in parts {
        s.push_str(p);
        s.push('\u{1f}');
    }
    crate::ids::sha256_hex(s.as_bytes())[..32].to_owned()
}

/// Columns of a row as a plain map (for alert details).
pub fn row_detail(columns: &Map<String, Value>) -> BTreeMap<String, Value> {
    columns
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_wrong_condition_is_named_not_an_untagged_mismatch() {
        let err = |v: serde_json::Value| {
            serde_json::from_value::<Condition>(v)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let e = err(serde_json::json!({"colum": "path", "op": "eq", "value": "/tmp"}));
        assert!(e.contains("unknown field `colum`"), "{e}");
        let e = err(serde_json::json!({"any": [{"column": "path", "op": "equals", "value": "x"}]}));
        assert!(
            e.contains("any") && e.contains("unknown variant `equals`"),
            "{e}"
        );
        let e = err(serde_json::json!({"all": [], "column": "x"}));
        assert!(e.contains("no other field"), "{e}");
        let e = err(serde_json::json!("path = /tmp"));
        assert!(e.contains("a condition is an object"), "{e}");
        assert!(!e.contains("did not match any variant"), "{e}");
        let ok: Condition = serde_json::from_value(serde_json::json!(
            {"all": [{"column": "path", "op": "begins_with", "value": "/tmp/"}, {"any": []}]}
        ))
        .unwrap();
        assert_eq!(
            serde_json::to_value(&ok).ok(),
            Some(
                serde_json::json!({"all": [{"column": "path", "op": "begins_with", "value": "/tmp/"}, {"any": []}]})
            )
        );
    }

    use super::*;
    use serde_json::json;

    fn rule(cond: Value) -> CompiledRule {
        let r: Rule = serde_json::from_value(json!({
            "name": "r",
            "when": {"event": "results", "query": "processes", "condition": cond},
            "actions": [{"type": "log"}],
        }))
        .unwrap();
        validate_rule(&r).unwrap()
    }

    fn fires(cond: Value, row: Value) -> bool {
        let r = rule(cond);
        let columns = row.as_object().expect("not an object").clone();
        r.fires_on(
            "processes",
            &Row {
                action: "added",
                columns: &columns,
            },
        )
    }

    #[test]
    fn every_operator_matches_and_its_negation_does_not() {
        let row = json!({"name": "nc", "path": "/usr/bin/nc", "pid": "812", "cmd": ""});
        let cases = [
            ("eq", "name", "nc", true),
            ("eq", "name", "n", false),
            ("ne", "name", "n", true),
            ("begins_with", "path", "/usr/", true),
            ("not_begins_with", "path", "/usr/", false),
            ("contains", "path", "bin", true),
            ("not_contains", "path", "sbin", true),
            ("ends_with", "path", "/nc", true),
            ("not_ends_with", "path", "/nc", false),
            ("lt", "pid", "1000", true),
            ("le", "pid", "812", true),
            ("gt", "pid", "90", true), // numeric, not string order
            ("ge", "pid", "813", false),
            ("regex", "path", "^/usr/(s?bin)/n[a-z]$", true),
            ("not_regex", "path", "^/tmp/", true),
        ];
        for (op, column, value, want) in cases {
            let got = fires(
                json!({"column": column, "op": op, "value": value}),
                row.clone(),
            );
            assert_eq!(got, want, "{column} {op} {value}");
        }
        assert!(fires(json!({"column": "cmd", "op": "empty"}), row.clone()));
        assert!(fires(
            json!({"column": "absent", "op": "empty"}),
            row.clone()
        ));
        assert!(!fires(
            json!({"column": "name", "op": "empty"}),
            row.clone()
        ));
        assert!(fires(
            json!({"column": "name", "op": "not_empty"}),
            row.clone()
        ));
        // A missing column matches no positive operator.
        assert!(!fires(
            json!({"column": "absent", "op": "eq", "value": ""}),
            row.clone()
        ));
        assert!(fires(
            json!({"column": "absent", "op": "ne", "value": "x"}),
            row
        ));
    }

    #[test]
    fn groups_combine_with_and_and_or() {
        let cond = json!({"all": [
            {"column": "name", "op": "eq", "value": "nc"},
            {"any": [
                {"column": "port", "op": "eq", "value": "4444"},
                {"column": "port", "op": "ge", "value": "30000"}
            ]}
        ]});
        assert!(fires(cond.clone(), json!({"name": "nc", "port": "4444"})));
        assert!(fires(cond.clone(), json!({"name": "nc", "port": "31337"})));
        assert!(!fires(cond.clone(), json!({"name": "nc", "port": "22"})));
        assert!(!fires(cond, json!({"name": "ssh", "port": "4444"})));
    }

    #[test]
    fn invalid_rules_say_what_to_fix() {
        let bad = |v: Value| -> String {
            let r: Rule = serde_json::from_value(v).unwrap();
            validate_rule(&r).expect_err("accepted").to_string()
        };
        let base =
            |when: Value, actions: Value| json!({"name": "r", "when": when, "actions": actions});
        let log = json!([{"type": "log"}]);
        assert!(bad(base(json!({"event": "results", "query": "p", "condition": {"column": "a", "op": "regex", "value": "(["}}), log.clone())).contains("not a valid regex"));
        assert!(
            bad(base(
                json!({"event": "results", "query": "p", "condition": {"column": "a", "op": "eq"}}),
                log.clone()
            ))
            .contains("needs a `value`")
        );
        assert!(
            bad(base(
                json!({"event": "results", "query": "p", "condition": {"all": []}}),
                log.clone()
            ))
            .contains("at least one condition")
        );
        assert!(
            bad(base(
                json!({"event": "host_silent", "after_secs": 5}),
                log.clone()
            ))
            .contains("at least 60")
        );
        assert!(
            bad(base(json!({"event": "host_enrolled"}), json!([]))).contains("at least one action")
        );
        assert!(
            bad(base(
                json!({"event": "host_enrolled"}),
                json!([{"type": "webhook", "url": "ftp://x"}])
            ))
            .contains("http://")
        );
        assert!(
            bad(base(
                json!({"event": "results", "query": "p", "row_actions": ["changed"]}),
                log
            ))
            .contains("not one of")
        );
    }

    #[test]
    fn rows_come_from_every_line_shape() {
        let line = |kind: ResultKind, v: Value| ResultLog {
            host_id: HostId::parse("0123456789abcdef0123456789abcdef").expect("bad id"),
            name: "p".into(),
            unix_time: 1,
            kind,
            action: String::new(),
            rows: 0,
            line_id: "l".into(),
            received_at: 1,
            line: v.into(),
        };
        let ev = line(
            ResultKind::Event,
            json!({"columns": {"a": "1"}, "action": "removed"}),
        );
        assert_eq!(rows_of(&ev)[0].action, "removed");
        let snap = line(
            ResultKind::Snapshot,
            json!({"snapshot": [{"a": "1"}, {"a": "2"}]}),
        );
        assert_eq!(rows_of(&snap).len(), 2);
        let batched = line(
            ResultKind::Batched,
            json!({"diffResults": {"added": [{"a": "1"}], "removed": [{"a": "2"}, {"a": "3"}]}}),
        );
        let actions: Vec<_> = rows_of(&batched).iter().map(|r| r.action).collect();
        assert_eq!(actions, ["added", "removed", "removed"]);
    }

    #[test]
    fn webhook_urls_are_redacted_for_readers() {
        assert_eq!(
            redact_url("https://hooks.example.com/services/T0/B0/secret?x=1"),
            "https://hooks.example.com/…"
        );
        assert_eq!(
            redact_url("http://user:pw@10.0.0.1:8080"),
            "http://10.0.0.1:8080"
        );
    }
}
