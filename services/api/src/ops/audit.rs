//! The audit log: every write and every query run, and every refusal,
//! newest first (admin only).

use gatehouse_core::model::AuditEvent;
use gatehouse_core::model::Role::Admin as AdminRole;
use gatehouse_proto::v1 as pb;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{before, page_size, pb_limit};
use crate::ApiError;
use crate::admin::{Admin, Caller};
use crate::grpc::to_pb_value;
use crate::registry::{Audit, Entry, Input, IntoPb, Operation, Spec, Verb, entry};

pub(super) fn entries() -> Vec<Entry> {
    vec![entry::<ListAudit>()]
}

/// A newest-first page: the cursor is the last item of the previous page.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewestFirst {
    /// `at` of the last item of the previous page.
    pub before_at: Option<i64>,
    /// `id` of the last item of the previous page.
    pub before_id: Option<String>,
    /// Most items (default 100, at most 1000).
    pub limit: Option<usize>,
}

impl NewestFirst {
    pub(crate) fn cursor(&self) -> Result<Option<(i64, String)>, ApiError> {
        before(self.before_at, self.before_id.clone())
    }
}

impl Input for NewestFirst {
    type Pb = pb::ListAuditRequest;
    fn from_pb(r: pb::ListAuditRequest) -> Result<Self, ApiError> {
        Ok(NewestFirst {
            before_at: r.before_at,
            before_id: r.before_id,
            limit: pb_limit(r.limit),
        })
    }
}

impl IntoPb for Vec<AuditEvent> {
    type Pb = pb::AuditEvents;
    fn into_pb(self) -> pb::AuditEvents {
        pb::AuditEvents {
            events: self
                .into_iter()
                .map(|e| pb::AuditEvent {
                    id: e.id,
                    at: e.at,
                    actor: e.actor,
                    action: e.action,
                    target: e.target,
                    outcome: e.outcome,
                    detail: Some(to_pb_value(e.detail)),
                })
                .collect(),
        }
    }
}

pub struct ListAudit;

impl Operation for ListAudit {
    const SPEC: Spec = Spec {
        id: "listAudit",
        verb: Verb::Get,
        path: "/api/v1/audit",
        grpc: "ListAudit",
        summary: "The audit log, newest first",
        role: AdminRole,
        action: "audit.list",
        audit: Audit::Refusals,
        created: false,
    };
    type Req = NewestFirst;
    type Resp = Vec<AuditEvent>;

    async fn run(a: &Admin, _: &Caller, p: NewestFirst) -> Result<Vec<AuditEvent>, ApiError> {
        let cursor = p.cursor()?;
        let before = cursor.as_ref().map(|(at, id)| (*at, id.as_str()));
        Ok(a.store
            .list_audit(before, page_size(p.limit, 100, 1000))
            .await?)
    }
}
