//! Rules, alerts and dead letters: rule definitions (validated and
//! compiled before they are stored, announced to every rule engine), the
//! alert history, and the redrive of dead-lettered webhooks, which the API
//! sends itself so the operator sees at once whether it went through.
//!
//! Over gRPC a rule's trigger and actions travel as Structs holding the
//! same JSON the REST API takes, so both validate them with the same serde
//! types.

use gatehouse_core::model::Role;
use gatehouse_core::model::Role::{Admin as AdminRole, Observer, Operator};
use gatehouse_core::ports::BusError;
use gatehouse_core::rules::{
    Action, ActionOutcome, ActionState, Alert, DeadLetter, Hook, Rule, Trigger, validate_rule,
};
use gatehouse_proto::topics::RULES_CHANGED;
use gatehouse_proto::v1 as pb;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::audit::NewestFirst;
use super::definitions::NameRef;
use super::{Deleted, NoInput, page_size};
use crate::ApiError;
use crate::admin::{Admin, Caller, not_found_if_false};
use crate::grpc::{from_pb_struct, to_pb_struct, to_pb_value};
use crate::registry::{Audit, Entry, Input, IntoPb, Operation, Spec, Verb, entry};

pub(super) fn entries() -> Vec<Entry> {
    vec![
        entry::<ListRules>(),
        entry::<PutRule>(),
        entry::<DeleteRule>(),
        entry::<SetRuleEnabled>(),
        entry::<ListAlerts>(),
        entry::<ListDeadLetters>(),
        entry::<RedriveDeadLetter>(),
        entry::<DeleteDeadLetter>(),
    ]
}

fn to_struct(v: impl Serialize) -> prost_types::Struct {
    match serde_json::to_value(v) {
        Ok(Value::Object(m)) => to_pb_struct(m),
        _ => prost_types::Struct::default(),
    }
}

fn from_struct<T: serde::de::DeserializeOwned>(
    what: &str,
    s: Option<prost_types::Struct>,
) -> Result<T, ApiError> {
    let v = Value::Object(from_pb_struct(s.unwrap_or_default()));
    serde_json::from_value(v).map_err(|e| ApiError::BadRequest(format!("{what}: {e}")))
}

impl IntoPb for Rule {
    type Pb = pb::Rule;
    fn into_pb(self) -> pb::Rule {
        pb::Rule {
            name: self.name,
            description: self.description,
            enabled: self.enabled,
            when: Some(to_struct(&self.when)),
            actions: self.actions.iter().map(to_struct).collect(),
            updated_at: self.updated_at,
            throttle_secs: self.throttle_secs,
        }
    }
}

impl IntoPb for Vec<Rule> {
    type Pb = pb::Rules;
    fn into_pb(self) -> pb::Rules {
        pb::Rules {
            rules: self.into_iter().map(IntoPb::into_pb).collect(),
        }
    }
}

fn outcome_to_pb(o: ActionOutcome) -> pb::ActionOutcome {
    pb::ActionOutcome {
        action: o.action.as_str().to_owned(),
        target: o.target,
        state: o.state.as_str().to_owned(),
        attempts: o.attempts,
        last_error: o.last_error,
        finished_at: o.finished_at,
    }
}

impl IntoPb for Alert {
    type Pb = pb::Alert;
    fn into_pb(self) -> pb::Alert {
        pb::Alert {
            id: self.id,
            at: self.at,
            rule: self.rule,
            event: self.event,
            host_id: self.host_id.to_string(),
            hostname: self.hostname,
            summary: self.summary,
            detail: Some(to_pb_value(self.detail)),
            actions: self.actions.into_iter().map(outcome_to_pb).collect(),
        }
    }
}

impl IntoPb for Vec<Alert> {
    type Pb = pb::Alerts;
    fn into_pb(self) -> pb::Alerts {
        pb::Alerts {
            alerts: self.into_iter().map(IntoPb::into_pb).collect(),
        }
    }
}

impl IntoPb for Vec<DeadLetter> {
    type Pb = pb::DeadLetters;
    fn into_pb(self) -> pb::DeadLetters {
        pb::DeadLetters {
            dead_letters: self
                .into_iter()
                .map(|d| pb::DeadLetter {
                    id: d.id,
                    alert: Some(d.alert.into_pb()),
                    action_index: u32::try_from(d.action_index).unwrap_or(u32::MAX),
                    url: d.url,
                    attempts: d.attempts,
                    last_error: d.last_error,
                    dead_at: d.dead_at,
                })
                .collect(),
        }
    }
}

/// How long a rule change waits for an engine to have re-read the rules.
const RULES_APPLIED_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Admin {
    /// Tells every rule engine the rules changed and waits until one has
    /// re-read them (in the all-in-one, its only engine), so lines
    /// acknowledged after the answer meet the change. No engine answering
    /// (none running, or slow) delays nothing further: engines re-read the
    /// rules on their refresh interval too.
    async fn announce_rules(&self) {
        let ask = RULES_CHANGED.encode(&Default::default());
        match self
            .bus
            .request(RULES_CHANGED.subject(), ask, RULES_APPLIED_WAIT)
            .await
        {
            Ok(_) => {}
            Err(BusError::NoResponders(_)) => {
                tracing::debug!("no rule engine answered the rule change");
            }
            Err(e) => {
                tracing::warn!(error = %e, "rule change not confirmed by an engine; they re-read rules periodically");
            }
        }
    }
}

pub struct ListRules;

impl Operation for ListRules {
    const SPEC: Spec = Spec {
        id: "listRules",
        verb: Verb::Get,
        path: "/api/v1/rules",
        grpc: "ListRules",
        summary: "Rules (webhook URLs redacted unless the caller is an admin)",
        role: Observer,
        action: "rule.list",
        audit: Audit::Refusals,
        created: false,
    };
    type Req = NoInput;
    type Resp = Vec<Rule>;

    async fn run(a: &Admin, c: &Caller, _: NoInput) -> Result<Vec<Rule>, ApiError> {
        let mut rules = a.store.list_rules().await?;
        rules.sort_by(|a, b| a.name.cmp(&b.name));
        if c.role < Role::Admin {
            rules = rules.into_iter().map(Rule::redacted).collect();
        }
        Ok(rules)
    }
}

fn yes() -> bool {
    true
}

/// A rule as PUT to `/api/v1/rules/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub when: Trigger,
    pub actions: Vec<Action>,
    /// At most one alert per host and this rule in this many seconds.
    #[serde(default)]
    pub throttle_secs: u64,
}

impl RuleDef {
    fn rule(self) -> Rule {
        Rule {
            name: self.name,
            description: self.description,
            enabled: self.enabled,
            when: self.when,
            actions: self.actions,
            throttle_secs: self.throttle_secs,
            updated_at: 0,
        }
    }
}

impl Input for RuleDef {
    type Pb = pb::Rule;
    fn from_pb(r: pb::Rule) -> Result<Self, ApiError> {
        let when: Trigger = from_struct("when", r.when)?;
        let actions = r
            .actions
            .into_iter()
            .enumerate()
            .map(|(i, a)| from_struct::<Action>(&format!("actions[{i}]"), Some(a)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RuleDef {
            name: r.name,
            description: r.description,
            enabled: r.enabled,
            when,
            actions,
            throttle_secs: r.throttle_secs,
        })
    }
    fn target(&self) -> String {
        self.name.clone()
    }
    /// Webhook URLs stay out of the audit log.
    fn detail(&self) -> Value {
        serde_json::to_value(self.clone().rule().redacted()).unwrap_or_default()
    }
    /// Rules that post to webhooks need the admin role: they send fleet
    /// data out of Gatehouse.
    fn role(&self, declared: Role) -> Role {
        if self
            .actions
            .iter()
            .any(|a| matches!(a, Action::Webhook { .. }))
        {
            Role::Admin
        } else {
            declared
        }
    }
}

pub struct PutRule;

impl Operation for PutRule {
    const SPEC: Spec = Spec {
        id: "putRule",
        verb: Verb::Put,
        path: "/api/v1/rules/{name}",
        grpc: "PutRule",
        summary: "Create or replace a rule (rules with webhook actions need the admin role)",
        role: Operator,
        action: "rule.put",
        audit: Audit::Calls,
        created: false,
    };
    type Req = RuleDef;
    type Resp = Rule;

    async fn run(a: &Admin, _: &Caller, d: RuleDef) -> Result<Rule, ApiError> {
        let mut r = d.rule();
        r.updated_at = a.now();
        validate_rule(&r)?;
        a.store.put_rule(&r).await?;
        a.announce_rules().await;
        Ok(r)
    }
}

pub struct DeleteRule;

impl Operation for DeleteRule {
    const SPEC: Spec = Spec {
        id: "deleteRule",
        verb: Verb::Delete,
        path: "/api/v1/rules/{name}",
        grpc: "DeleteRule",
        summary: "Delete a rule (its alerts stay in the history)",
        role: Operator,
        action: "rule.delete",
        audit: Audit::Calls,
        created: false,
    };
    type Req = NameRef;
    type Resp = Deleted;

    async fn run(a: &Admin, _: &Caller, r: NameRef) -> Result<Deleted, ApiError> {
        let found = a.store.delete_rule(&r.name).await?;
        not_found_if_false(found, format!("rule {}", r.name))?;
        a.announce_rules().await;
        Ok(Deleted)
    }
}

/// A rule turned on or off.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSwitch {
    pub name: String,
    pub enabled: bool,
}

impl Input for RuleSwitch {
    type Pb = pb::RuleSwitch;
    fn from_pb(r: pb::RuleSwitch) -> Result<Self, ApiError> {
        Ok(RuleSwitch {
            name: r.name,
            enabled: r.enabled,
        })
    }
    fn target(&self) -> String {
        self.name.clone()
    }
    fn detail(&self) -> Value {
        serde_json::json!({"enabled": self.enabled})
    }
}

pub struct SetRuleEnabled;

impl Operation for SetRuleEnabled {
    const SPEC: Spec = Spec {
        id: "setRuleEnabled",
        verb: Verb::Put,
        path: "/api/v1/rules/{name}/enabled",
        grpc: "SetRuleEnabled",
        summary: "Turn a rule on or off (`{\"enabled\": false}`) without resending it",
        role: Operator,
        action: "rule.enable",
        audit: Audit::Calls,
        created: false,
    };
    type Req = RuleSwitch;
    type Resp = Rule;

    async fn run(a: &Admin, _: &Caller, r: RuleSwitch) -> Result<Rule, ApiError> {
        let mut rule = a
            .store
            .list_rules()
            .await?
            .into_iter()
            .find(|x| x.name == r.name)
            .ok_or_else(|| ApiError::NotFound(format!("rule {}", r.name)))?;
        if rule.enabled != r.enabled {
            rule.enabled = r.enabled;
            rule.updated_at = a.now();
            a.store.put_rule(&rule).await?;
            a.announce_rules().await;
        }
        Ok(rule)
    }
}

/// Alerts: a newest-first page.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertPage {
    /// `at` of the last alert of the previous page.
    pub before_at: Option<i64>,
    /// `id` of the last alert of the previous page.
    pub before_id: Option<String>,
    /// Most alerts (default 100, at most 1000).
    pub limit: Option<usize>,
}

impl Input for AlertPage {
    type Pb = pb::ListAlertsRequest;
    fn from_pb(r: pb::ListAlertsRequest) -> Result<Self, ApiError> {
        Ok(AlertPage {
            before_at: r.before_at,
            before_id: r.before_id,
            limit: super::pb_limit(r.limit),
        })
    }
}

pub struct ListAlerts;

impl Operation for ListAlerts {
    const SPEC: Spec = Spec {
        id: "listAlerts",
        verb: Verb::Get,
        path: "/api/v1/alerts",
        grpc: "ListAlerts",
        summary: "Alert history, newest first, with each action's outcome",
        role: Observer,
        action: "alert.list",
        audit: Audit::Refusals,
        created: false,
    };
    type Req = AlertPage;
    type Resp = Vec<Alert>;

    async fn run(a: &Admin, _: &Caller, p: AlertPage) -> Result<Vec<Alert>, ApiError> {
        let page = NewestFirst {
            before_at: p.before_at,
            before_id: p.before_id,
            limit: p.limit,
        };
        let cursor = page.cursor()?;
        let before = cursor.as_ref().map(|(at, id)| (*at, id.as_str()));
        Ok(a.store
            .list_alerts(before, page_size(page.limit, 100, 1000))
            .await?)
    }
}

pub struct ListDeadLetters;

impl Operation for ListDeadLetters {
    const SPEC: Spec = Spec {
        id: "listDeadLetters",
        verb: Verb::Get,
        path: "/api/v1/dead_letters",
        grpc: "ListDeadLetters",
        summary: "Webhook deliveries that failed every attempt",
        role: AdminRole,
        action: "dead_letter.list",
        audit: Audit::Refusals,
        created: false,
    };
    type Req = NoInput;
    type Resp = Vec<DeadLetter>;

    async fn run(a: &Admin, _: &Caller, _: NoInput) -> Result<Vec<DeadLetter>, ApiError> {
        let mut d = a.store.list_dead_letters().await?;
        d.sort_by(|a, b| b.dead_at.cmp(&a.dead_at).then_with(|| a.id.cmp(&b.id)));
        Ok(d)
    }
}

/// A dead letter by id.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterRef {
    pub id: String,
}

impl Input for DeadLetterRef {
    type Pb = pb::NameRef;
    fn from_pb(r: pb::NameRef) -> Result<Self, ApiError> {
        Ok(DeadLetterRef { id: r.name })
    }
    fn target(&self) -> String {
        self.id.clone()
    }
}

pub struct RedriveDeadLetter;

impl Operation for RedriveDeadLetter {
    const SPEC: Spec = Spec {
        id: "redriveDeadLetter",
        verb: Verb::Post,
        path: "/api/v1/dead_letters/{id}/redrive",
        grpc: "RedriveDeadLetter",
        summary: "Send a dead letter's webhook again; 502 when the receiver still fails",
        role: AdminRole,
        action: "dead_letter.redrive",
        audit: Audit::Calls,
        created: false,
    };
    type Req = DeadLetterRef;
    type Resp = Alert;

    async fn run(a: &Admin, _: &Caller, r: DeadLetterRef) -> Result<Alert, ApiError> {
        let id = r.id.as_str();
        let mut dead = a
            .store
            .get_dead_letter(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("dead letter {id}")))?;
        let mut alert = a
            .store
            .get_alert(dead.alert.at, &dead.alert.id)
            .await?
            .unwrap_or_else(|| dead.alert.clone());
        let i = dead.action_index;
        // The rule's webhook as it is now (a fixed URL, new headers or
        // secret); the dead letter's URL when the rule or action is gone.
        let rules = a.store.list_rules().await?;
        let current = rules
            .iter()
            .find(|r| r.name == dead.alert.rule)
            .and_then(|r| r.actions.get(i))
            .and_then(Action::hook);
        let hook = current.unwrap_or_else(|| Hook::url(&dead.url));
        let result = a.webhooks.send(hook, &alert).await;
        if let Some(o) = alert.actions.get_mut(i) {
            o.attempts += 1;
            match &result {
                Ok(()) => {
                    o.state = ActionState::Delivered;
                    o.finished_at = Some(a.now());
                    o.last_error = None;
                }
                Err(e) => o.last_error = Some(e.clone()),
            }
        }
        match result {
            Ok(()) => {
                a.store.put_alert(&alert).await?;
                a.store.delete_dead_letter(id).await?;
                Ok(alert)
            }
            Err(e) => {
                a.store.put_alert(&alert).await?;
                dead.attempts += 1;
                dead.last_error = e.clone();
                a.store.put_dead_letter(&dead).await?;
                Err(ApiError::Upstream(format!(
                    "the webhook receiver still fails ({e}); the dead letter stays"
                )))
            }
        }
    }
}

pub struct DeleteDeadLetter;

impl Operation for DeleteDeadLetter {
    const SPEC: Spec = Spec {
        id: "deleteDeadLetter",
        verb: Verb::Delete,
        path: "/api/v1/dead_letters/{id}",
        grpc: "DeleteDeadLetter",
        summary: "Drop a dead letter without sending it",
        role: AdminRole,
        action: "dead_letter.delete",
        audit: Audit::Calls,
        created: false,
    };
    type Req = DeadLetterRef;
    type Resp = Deleted;

    async fn run(a: &Admin, _: &Caller, r: DeadLetterRef) -> Result<Deleted, ApiError> {
        let found = a.store.delete_dead_letter(&r.id).await?;
        not_found_if_false(found, format!("dead letter {}", r.id))?;
        Ok(Deleted)
    }
}
