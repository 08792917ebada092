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

/// The audit log's filters, with its page.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditFilter {
    /// `at` of the last item of the previous page.
    pub before_at: Option<i64>,
    /// `id` of the last item of the previous page.
    pub before_id: Option<String>,
    /// Most items (default 100, at most 1000).
    pub limit: Option<usize>,
    /// Who acted (a user name), exactly.
    pub actor: Option<String>,
    /// An action (`host.set_labels`) or its resource (`host`).
    pub action: Option<String>,
    /// What it acted on (a host id, a name), exactly.
    pub target: Option<String>,
    /// How it ended: `accepted`, `denied`, `failed` (or `pending`: the
    /// call's end was not recorded).
    pub outcome: Option<String>,
    /// Milliseconds since 1970, inclusive.
    pub since: Option<i64>,
    /// Milliseconds since 1970, exclusive.
    pub until: Option<i64>,
}

impl Input for AuditFilter {
    type Pb = pb::ListAuditRequest;
    fn from_pb(r: pb::ListAuditRequest) -> Result<Self, ApiError> {
        Ok(AuditFilter {
            before_at: r.before_at,
            before_id: r.before_id,
            limit: pb_limit(r.limit),
            actor: r.actor,
            action: r.action,
            target: r.target,
            outcome: r.outcome,
            since: r.since,
            until: r.until,
        })
    }
}

impl AuditFilter {
    fn keeps(&self, e: &AuditEvent) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.actor, &e.actor)
            && eq(&self.target, &e.target)
            && eq(&self.outcome, &e.outcome)
            && self.action.as_deref().is_none_or(|w| {
                e.action == w
                    || e.action
                        .strip_prefix(w)
                        .is_some_and(|rest| rest.starts_with('.'))
            })
    }

    fn filtered(&self) -> bool {
        self.actor.is_some()
            || self.action.is_some()
            || self.target.is_some()
            || self.outcome.is_some()
    }
}

/// Events a filtered page reads at most: a filter that matches rarely
/// answers with what this many events held (narrow it with `since` and
/// `until`, or page on from the last event returned).
const AUDIT_SCAN: usize = 20_000;

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
    type Req = AuditFilter;
    type Resp = Vec<AuditEvent>;

    async fn run(a: &Admin, _: &Caller, f: AuditFilter) -> Result<Vec<AuditEvent>, ApiError> {
        let limit = page_size(f.limit, 100, 1000);
        let since = f.since.unwrap_or(i64::MIN);
        if let (Some(s), Some(u)) = (f.since, f.until)
            && s > u
        {
            return Err(ApiError::Invalid {
                field: "since",
                message: "since must not be after until".into(),
            });
        }
        // Newest first: `until` is where reading starts (events at `until`
        // itself are skipped below).
        let mut cursor = match (before(f.before_at, f.before_id.clone())?, f.until) {
            (Some((at, _)), Some(u)) if u <= at => Some((u, String::new())),
            (Some(c), _) => Some(c),
            (None, Some(u)) => Some((u, String::new())),
            (None, None) => None,
        };
        let mut out = Vec::new();
        let mut scanned = 0;
        loop {
            let want = if f.filtered() {
                1000
            } else {
                limit - out.len()
            };
            let page = a
                .store
                .list_audit(cursor.as_ref().map(|(at, id)| (*at, id.as_str())), want)
                .await?;
            let ended = page.len() < want;
            for e in page {
                scanned += 1;
                cursor = Some((e.at, e.id.clone()));
                if e.at < since {
                    return Ok(out);
                }
                if f.until.is_none_or(|u| e.at < u) && f.keeps(&e) {
                    out.push(e);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            if ended || scanned >= AUDIT_SCAN {
                return Ok(out);
            }
        }
    }
}
