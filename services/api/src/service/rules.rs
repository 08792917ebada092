//! The rules and alerts operations of [`Admin`]: rule definitions
//! (validated and compiled before they are stored, announced to every
//! rule engine), and the redrive of dead-lettered webhooks, which the API
//! sends itself so the operator sees at once whether it went through.

use gatehouse_bus::events::publish;
use gatehouse_core::model::Role;
use gatehouse_core::rules::{Action, ActionState, Alert, Rule, validate_rule};
use gatehouse_core::time::now_ms;
use gatehouse_proto::topics::RULES_CHANGED;

use super::{Admin, not_found_if_false};
use crate::ApiError;

/// Rules that post to webhooks need the admin role: they send fleet data
/// out of Gatehouse.
pub(super) fn role_to_write(r: &Rule) -> Role {
    if r.actions
        .iter()
        .any(|a| matches!(a, Action::Webhook { .. }))
    {
        Role::Admin
    } else {
        Role::Operator
    }
}

impl Admin {
    async fn announce_rules(&self) {
        if let Err(e) = publish(self.bus.as_ref(), &RULES_CHANGED, &Default::default()).await {
            // The engines also re-read rules periodically.
            tracing::warn!(error = %e, "rule change broadcast failed");
        }
    }

    pub(super) async fn op_put_rule(&self, mut r: Rule) -> Result<Rule, ApiError> {
        r.updated_at = now_ms();
        validate_rule(&r)?;
        self.store.put_rule(&r).await?;
        self.announce_rules().await;
        Ok(r)
    }

    pub(super) async fn op_list_rules(&self, admin: bool) -> Result<Vec<Rule>, ApiError> {
        let mut rules = self.store.list_rules().await?;
        rules.sort_by(|a, b| a.name.cmp(&b.name));
        if !admin {
            rules = rules.into_iter().map(Rule::redacted).collect();
        }
        Ok(rules)
    }

    pub(super) async fn op_delete_rule(&self, name: &str) -> Result<(), ApiError> {
        let found = self.store.delete_rule(name).await?;
        not_found_if_false(found, format!("rule {name}"))?;
        self.announce_rules().await;
        Ok(())
    }

    pub(super) async fn op_redrive(&self, id: &str) -> Result<Alert, ApiError> {
        let mut dead = self
            .store
            .get_dead_letter(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("dead letter {id}")))?;
        let mut alert = self
            .store
            .get_alert(dead.alert.at, &dead.alert.id)
            .await?
            .unwrap_or_else(|| dead.alert.clone());
        let i = dead.action_index;
        let result = self.webhooks.send(&dead.url, &alert).await;
        if let Some(o) = alert.actions.get_mut(i) {
            o.attempts += 1;
            match &result {
                Ok(()) => {
                    o.state = ActionState::Delivered;
                    o.finished_at = Some(now_ms());
                    o.last_error = None;
                }
                Err(e) => o.last_error = Some(e.clone()),
            }
        }
        match result {
            Ok(()) => {
                self.store.put_alert(&alert).await?;
                self.store.delete_dead_letter(id).await?;
                Ok(alert)
            }
            Err(e) => {
                self.store.put_alert(&alert).await?;
                dead.attempts += 1;
                dead.last_error = e.clone();
                self.store.put_dead_letter(&dead).await?;
                Err(ApiError::Upstream(format!(
                    "the webhook receiver still fails ({e}); the dead letter stays"
                )))
            }
        }
    }
}
