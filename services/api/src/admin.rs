//! The operator service's state and the checks every operation goes
//! through: [`Admin`] holds the store, the bus, the host-RPC client and the
//! API's limits; it resolves bearer tokens to a [`Caller`], checks roles,
//! writes the audit log, and offers the helpers operations share (host
//! calls, validated definition changes). The operations themselves are in
//! [`crate::ops`], one module per resource, declared in
//! [`crate::registry`].

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_bus::HostClient;
use gatehouse_bus::events::publish;
use gatehouse_bus::hostrpc::failure_kind;
use gatehouse_core::HostId;
use gatehouse_core::config::{Definitions, assemble, load_definitions};
use gatehouse_core::model::{AuditEvent, Role};
use gatehouse_core::ports::{Bus, Store};
use gatehouse_core::rules::WebhookSender;
use gatehouse_core::time::Clock;
use gatehouse_proto::topics::CONFIG_CHANGED;
use gatehouse_proto::v1::{ConfigChanged, FailureKind, host_reply, host_request};

use crate::ApiError;

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// A host seen within this window counts as online.
    pub online_window: Duration,
    /// Most hosts one campaign may target.
    pub max_campaign_targets: usize,
    /// Campaigns running at once, in all and per user.
    pub max_active_campaigns: usize,
    pub max_active_campaigns_per_user: usize,
    pub default_campaign_ttl: Duration,
    pub max_campaign_ttl: Duration,
    /// The operator listener's HTTP settings.
    pub serve: gatehouse_runtime::ServeOptions,
    /// People's sessions, sign-in throttling and invitations.
    pub sessions: crate::session::SessionConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            online_window: Duration::from_secs(180),
            max_campaign_targets: 100_000,
            max_active_campaigns: 50,
            max_active_campaigns_per_user: 10,
            default_campaign_ttl: Duration::from_secs(3600),
            max_campaign_ttl: Duration::from_secs(7 * 86_400),
            serve: gatehouse_runtime::ServeOptions {
                name: "api",
                ..gatehouse_runtime::ServeOptions::default()
            },
            sessions: crate::session::SessionConfig::default(),
        }
    }
}

/// A call's audit row written as `pending`, held (for the log
/// destinations) until its final record is written and appended.
#[derive(Debug)]
pub(crate) struct PendingAudit {
    row: AuditEvent,
    _held: crate::audit_forward::Held,
}

/// Who is calling: the user a bearer token belongs to, and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// The implementation over a store and a bus.
pub struct Admin {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) hosts: HostClient,
    pub(crate) cfg: ApiConfig,
    /// The bootstrap admin tokens (`secrets/admin_token`): the `admin`
    /// caller, also when the store cannot be read.
    bootstrap_tokens: Vec<String>,
    /// For redriving dead letters: the rule engine's webhook client.
    pub(crate) webhooks: Arc<dyn WebhookSender>,
    /// Where "now" comes from (expiry of tokens, campaigns, secrets).
    pub(crate) clock: Arc<dyn Clock>,
    /// The instance's metrics (request counts and latency).
    pub(crate) metrics: gatehouse_runtime::metrics::Metrics,
    /// The instance's readiness (`/readyz`, gRPC health).
    pub(crate) readiness: gatehouse_runtime::health::Readiness,
    /// The log destinations this process runs, if any.
    pub(crate) destinations: Option<Arc<dyn gatehouse_core::ports::Destinations>>,
    pub(crate) forward: Option<gatehouse_core::ports::Forwarding>,
    /// Audit records between their store write and their append.
    pub(crate) audit_outbox: crate::audit_forward::AuditOutbox,
    /// Campaigns seen with every target answered (they stay so): not
    /// counted against the running-campaign limits.
    pub(crate) complete: std::sync::Mutex<HashSet<String>>,
    /// Failed sign-ins, by user and by client address.
    pub(crate) throttle: crate::session::Throttle,
    /// The hosts list's sort orders (see [`crate::ops::host_order`]).
    pub(crate) host_order: tokio::sync::Mutex<Option<Arc<crate::ops::host_order::HostOrder>>>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish()
    }
}

impl Admin {
    /// A host by id, hostname or host identifier (names in any case). A
    /// name several hosts share is refused, listing them; an unknown one
    /// is not found.
    pub(crate) async fn resolve_host(&self, s: &str) -> Result<HostId, ApiError> {
        if let Some(id) = HostId::parse(s) {
            return Ok(id);
        }
        let ids = self.store.hosts_named(s).await?;
        match ids.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(ApiError::NotFound(format!(
                "host {s:?} (no host has this id, hostname or host identifier)"
            ))),
            many => {
                let mut shown = Vec::new();
                for id in many.iter().take(10) {
                    let name = self
                        .store
                        .get_host(id)
                        .await?
                        .map(|h| h.hostname)
                        .unwrap_or_default();
                    shown.push(format!("{id} ({name})"));
                }
                let more = many.len().saturating_sub(shown.len());
                Err(ApiError::BadRequest(format!(
                    "{s:?} names {} hosts: {}{}; give a host id",
                    many.len(),
                    shown.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                )))
            }
        }
    }
}

/// What the operator API runs over.
pub struct ApiDeps {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub hosts: HostClient,
    /// Redrives dead-lettered alert deliveries (the rule engine's client).
    pub webhooks: Arc<dyn WebhookSender>,
    /// Tokens accepted as the built-in `admin` caller, also when the store
    /// cannot be read (`secrets/admin_token`).
    pub bootstrap_tokens: Vec<String>,
    /// Where "now" comes from (expiry of tokens, campaigns, secrets; tests
    /// move it).
    pub clock: Arc<dyn Clock>,
    pub metrics: gatehouse_runtime::metrics::Metrics,
    /// The instance's readiness (`/readyz`, gRPC health).
    pub readiness: gatehouse_runtime::health::Readiness,
    /// The log destinations this process runs, if any.
    pub destinations: Option<Arc<dyn gatehouse_core::ports::Destinations>>,
    /// The forward log the destinations read: each call's final audit
    /// record is appended to it (destinations that take `audit`).
    pub forward: Option<gatehouse_core::ports::Forwarding>,
}

impl Admin {
    pub fn new(cfg: ApiConfig, deps: ApiDeps) -> Self {
        let ApiDeps {
            store,
            bus,
            hosts,
            webhooks,
            bootstrap_tokens,
            clock,
            metrics,
            readiness,
            destinations,
            forward,
        } = deps;
        Self {
            store,
            bus,
            hosts,
            cfg,
            bootstrap_tokens,
            webhooks,
            clock,
            metrics,
            readiness,
            destinations,
            forward,
            audit_outbox: crate::audit_forward::AuditOutbox::default(),
            complete: std::sync::Mutex::default(),
            throttle: crate::session::Throttle::default(),
            host_order: tokio::sync::Mutex::new(None),
        }
    }

    /// Unix milliseconds, from the clock.
    pub(crate) fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Refuses `c` unless its role is at least `need`; a refusal of an
    /// action is recorded.
    pub(crate) async fn require(
        &self,
        c: &Caller,
        need: Role,
        action: &str,
        target: &str,
    ) -> Result<(), ApiError> {
        if c.role >= need {
            return Ok(());
        }
        self.audit(
            c,
            action,
            target,
            "denied",
            serde_json::json!({"needs": need.as_str(), "role": c.role.as_str()}),
        )
        .await?;
        Err(ApiError::Forbidden(format!(
            "{action} needs the {} role; {} has the {} role",
            need.as_str(),
            c.name,
            c.role.as_str()
        )))
    }

    /// A new audit row for `c`'s call, at the clock's now.
    fn audit_row(
        &self,
        c: &Caller,
        action: &str,
        target: &str,
        outcome: &str,
        detail: serde_json::Value,
    ) -> AuditEvent {
        AuditEvent {
            id: uuid::Uuid::new_v4().to_string(),
            at: self.now(),
            actor: c.name.clone(),
            action: action.to_owned(),
            target: target.to_owned(),
            outcome: outcome.to_owned(),
            detail,
        }
    }

    /// Writes a row; a failed write refuses the call that needed it.
    async fn write_audit(&self, e: &AuditEvent) -> Result<(), ApiError> {
        self.store.append_audit(e).await.map_err(|err| {
            tracing::error!(error = %err, action = %e.action, "audit log write failed");
            ApiError::Unavailable(format!(
                "the audit log cannot be written ({err}); nothing was done"
            ))
        })
    }

    pub(crate) async fn audit(
        &self,
        c: &Caller,
        action: &str,
        target: &str,
        outcome: &str,
        detail: serde_json::Value,
    ) -> Result<(), ApiError> {
        let row = self.audit_row(c, action, target, outcome, detail);
        let _held = self.audit_outbox.hold(&row);
        self.write_audit(&row).await?;
        self.forward_audit(&row).await;
        Ok(())
    }

    /// Hands a final audit record to the log destinations (once stored).
    /// A failure is logged: the record is in the store regardless.
    async fn forward_audit(&self, row: &AuditEvent) {
        let Some(f) = &self.forward else { return };
        let payload =
            gatehouse_bus::events::encode_forward_events("audit", std::slice::from_ref(row));
        if let Err(e) = f.append(&format!("audit:{}", row.id), 1, payload).await {
            tracing::error!(error = %e, id = %row.id, action = %row.action, "audit record not forwarded");
        }
    }

    /// Records a call before it acts (outcome `pending`): nothing happens
    /// unrecorded, so when the row cannot be written the call is refused.
    /// [`Admin::audit_outcome`] rewrites the same row once it ended.
    pub(crate) async fn audit_pending(
        &self,
        c: &Caller,
        action: &str,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<PendingAudit, ApiError> {
        let row = self.audit_row(c, action, target, "pending", detail);
        // Held until its final record is appended, or the call ends
        // without one (see `audit_forward`).
        let held = self.audit_outbox.hold(&row);
        self.write_audit(&row).await?;
        Ok(PendingAudit { row, _held: held })
    }

    /// Rewrites a pending row with how the call ended: `accepted` with what
    /// the answer adds, or `failed` with the error. A failed rewrite leaves
    /// the row `pending` (logged): the call is not undone.
    pub(crate) async fn audit_outcome(
        &self,
        pending: PendingAudit,
        outcome: Result<Option<crate::registry::Audited>, String>,
    ) {
        let PendingAudit { mut row, _held } = pending;
        let mut detail = match std::mem::take(&mut row.detail) {
            serde_json::Value::Object(m) => m,
            serde_json::Value::Null => serde_json::Map::new(),
            other => serde_json::Map::from_iter([("request".to_owned(), other)]),
        };
        match outcome {
            Ok(added) => {
                row.outcome = "accepted".into();
                if let Some(a) = added {
                    if let Some(t) = a.target {
                        row.target = t;
                    }
                    detail.extend(a.detail);
                }
            }
            Err(error) => {
                row.outcome = "failed".into();
                detail.insert("error".into(), serde_json::Value::String(error));
            }
        }
        row.detail = serde_json::Value::Object(detail);
        if let Err(err) = self.store.append_audit(&row).await {
            tracing::error!(error = %err, action = %row.action, id = %row.id, "audit outcome write failed; the row stays pending");
            return;
        }
        self.forward_audit(&row).await;
    }

    pub(crate) async fn host_call(
        &self,
        id: &HostId,
        op: host_request::Op,
    ) -> Result<host_reply::Result, ApiError> {
        match self.hosts.call(id, 0, op).await {
            Ok(host_reply::Result::Failure(f)) if failure_kind(&f) == FailureKind::HostNotFound => {
                Err(ApiError::NotFound(format!("host {id}")))
            }
            Ok(host_reply::Result::Failure(f)) => Err(ApiError::Unavailable(f.message)),
            Ok(r) => Ok(r),
            Err(e) => Err(ApiError::Unavailable(format!("host service: {e}"))),
        }
    }

    /// Validates a definition change against every label set in the fleet,
    /// then lets `save` persist it and announces the new generation.
    pub(crate) async fn change_definitions<F, Fut>(
        &self,
        edit: impl FnOnce(&mut Definitions) -> Result<(), ApiError>,
        save: F,
    ) -> Result<(), ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(), ApiError>>,
    {
        let mut defs = load_definitions(self.store.as_ref()).await?;
        edit(&mut defs)?;
        let mut label_sets: HashSet<Vec<String>> = HashSet::new();
        label_sets.insert(vec!["all".into()]);
        label_sets.extend(self.store.label_sets().await?);
        for labels in &label_sets {
            assemble(labels, &defs)?;
        }
        save().await?;
        let generation = self.store.bump_config_generation().await?;
        let msg = ConfigChanged { generation };
        if let Err(e) = publish(self.bus.as_ref(), &CONFIG_CHANGED, &msg).await {
            // hostd also polls the generation, so this only delays the change.
            tracing::warn!(error = %e, "config change broadcast failed");
        }
        tracing::info!(generation, "config definitions changed");
        Ok(())
    }

    /// Deletes one definition; when it does not exist nothing is saved and
    /// no new generation is announced.
    pub(crate) async fn delete_definition<F, Fut>(
        &self,
        what: String,
        remove: impl FnOnce(&mut Definitions) -> bool,
        delete: F,
    ) -> Result<(), ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<bool, gatehouse_core::ports::StoreError>>,
    {
        self.change_definitions(
            |d| {
                if remove(d) {
                    Ok(())
                } else {
                    Err(ApiError::NotFound(what))
                }
            },
            || async { delete().await.map(|_| ()).map_err(Into::into) },
        )
        .await
    }
}

pub(crate) fn not_found_if_false(found: bool, what: String) -> Result<(), ApiError> {
    if found {
        Ok(())
    } else {
        Err(ApiError::NotFound(what))
    }
}

/// 244 random bits (two v4 UUIDs, from the OS CSPRNG) as 64 hex digits.
pub(crate) fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// When something created `now` and valid for `expires_in` seconds ends.
pub(crate) fn expiry(now: i64, expires_in: Option<u64>) -> Result<Option<i64>, ApiError> {
    match expires_in {
        Some(0) => Err(ApiError::BadRequest(
            "expires_in must be at least 1 second".into(),
        )),
        Some(s) => Ok(Some(
            now.saturating_add(
                i64::try_from(s)
                    .unwrap_or(i64::MAX / 2)
                    .saturating_mul(1000),
            ),
        )),
        None => Ok(None),
    }
}

pub(crate) fn name_ok(what: &str, n: &str) -> Result<(), ApiError> {
    let ok = !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "{what} {n:?}: 1 to 64 letters, digits, '-', '_', '.' or '@'"
        )))
    }
}

impl Admin {
    pub async fn authenticate(&self, bearer: &str) -> Result<Caller, ApiError> {
        use gatehouse_core::nodekey::secret_matches;
        let t = bearer.trim();
        if t.is_empty() {
            return Err(ApiError::Unauthorized);
        }
        if self.bootstrap_tokens.iter().any(|k| secret_matches(t, k)) {
            return Ok(Caller {
                name: "admin".into(),
                role: Role::Admin,
            });
        }
        let sha = gatehouse_core::ids::sha256_hex(t.as_bytes());
        let Some(token) = self.store.token_by_hash(&sha).await? else {
            return Err(ApiError::Unauthorized);
        };
        // Sessions are cookies (with their CSRF check); invitations only
        // set a password.
        if token.kind != gatehouse_core::model::TokenKind::Api || !token.is_usable(self.now()) {
            return Err(ApiError::Unauthorized);
        }
        match self.store.get_user(&token.user).await? {
            Some(u) if !u.disabled => Ok(Caller {
                name: u.name,
                role: u.role,
            }),
            _ => Err(ApiError::Unauthorized),
        }
    }
}
