//! The operator service: one trait, one implementation over store + bus.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use gatehouse_bus::HostClient;
use gatehouse_bus::events::publish;
use gatehouse_bus::hostrpc::{campaign_messages, failure_kind};
use gatehouse_core::HostId;
use gatehouse_core::carves::finalize;
use gatehouse_core::config::{
    Definitions, assemble, load_definitions, validate_label, validate_label_config, validate_query,
    validate_schedule,
};
use gatehouse_core::model::{
    ApiToken, AuditEvent, Campaign, CampaignResult, CarveSession, CarveState, Delivery,
    DeliveryState, EnrollSecret, Host, LabelConfig, LabelQuery, Page, Query, ResultFilter,
    ResultLog, Role, Schedule, StatusLog, Targets, User,
};
use gatehouse_core::ports::{Bus, Store};
use gatehouse_core::rules::{Alert, DeadLetter, Rule, WebhookSender};
use gatehouse_core::time::now_ms;
use gatehouse_proto::topics::{CAMPAIGN_CREATED, CONFIG_CHANGED};
use gatehouse_proto::v1::{
    ConfigChanged, FailureKind, RotateKeyOp, SetLabelsOp, host_reply, host_request,
};
use serde::{Deserialize, Serialize};

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
        }
    }
}

/// A host as operators see it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct HostView {
    #[serde(flatten)]
    pub host: Host,
    pub online: bool,
    /// Every label, built-in ones included.
    pub label_set: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
pub struct HostFilter {
    pub label: Option<String>,
    pub platform: Option<String>,
    pub online: Option<bool>,
    /// Only hosts last seen at or after this time (ms).
    pub seen_after: Option<i64>,
    /// Only hosts last seen before this time (ms): the stale ones.
    pub seen_before: Option<i64>,
    /// Case-insensitive text in the hostname, host identifier, host id or
    /// last IP.
    pub search: Option<String>,
    pub after: Option<String>,
    pub limit: Option<usize>,
}

impl HostFilter {
    fn keeps(&self, v: &HostView) -> bool {
        let h = &v.host;
        self.label.as_ref().is_none_or(|l| v.label_set.contains(l))
            && self.platform.as_ref().is_none_or(|p| &h.platform == p)
            && self.online.is_none_or(|o| v.online == o)
            && self.seen_after.is_none_or(|t| h.last_seen >= t)
            && self.seen_before.is_none_or(|t| h.last_seen < t)
            && self.search.as_ref().is_none_or(|q| {
                let q = q.to_lowercase();
                [
                    h.hostname.as_str(),
                    h.host_identifier.as_str(),
                    h.id.as_str(),
                    h.last_ip.as_str(),
                ]
                .iter()
                .any(|f| f.to_lowercase().contains(&q))
            })
    }
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct KeyChange {
    pub host_id: HostId,
    pub epoch: u64,
    pub revoked: bool,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignRequest {
    pub sql: String,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub all: bool,
    /// Platform families (darwin, linux, windows, freebsd).
    #[serde(default)]
    pub platforms: Vec<String>,
    /// Seconds the campaign waits for offline hosts.
    pub expires_in: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct Coverage {
    pub targeted: u64,
    pub queued: u64,
    pub delivered: u64,
    pub answered: u64,
    pub failed: u64,
    pub expired: u64,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct HostDelivery {
    #[serde(flatten)]
    pub delivery: Delivery,
    pub hostname: String,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct CampaignView {
    #[serde(flatten)]
    pub campaign: Campaign,
    pub expired: bool,
    pub coverage: Coverage,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct CampaignDetail {
    #[serde(flatten)]
    pub view: CampaignView,
    pub hosts: Vec<HostDelivery>,
    /// Hosts that have not answered (still waiting, or expired).
    pub non_responders: Vec<HostId>,
}

/// Who is calling: the user a bearer token belongs to, and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// A user as the API shows it.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserRequest {
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    pub role: Option<Role>,
    pub disabled: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    #[serde(default)]
    pub description: String,
    /// Seconds the token is valid; absent: until revoked.
    pub expires_in: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollSecretRequest {
    pub id: String,
    /// Labels every host enrolling with it gets.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Seconds it is accepted; absent: until revoked.
    pub expires_in: Option<u64>,
    /// The value agents will present; absent: a random one is made.
    pub secret: Option<String>,
}

/// A new enroll secret: its value is shown this once.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct NewEnrollSecret {
    #[serde(flatten)]
    pub enroll_secret: EnrollSecret,
    pub secret: String,
}

/// A new token: the secret is shown this once.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct NewToken {
    #[serde(flatten)]
    pub token: ApiToken,
    pub secret: String,
}

/// Everything operators can do, each call made by a [`Caller`]: served as
/// REST and gRPC. The implementation checks the caller's role and records
/// every write and every query run in the audit log.
#[async_trait]
pub trait AdminService: Send + Sync + 'static {
    /// The caller a bearer token stands for (bootstrap admin tokens, then
    /// users' API tokens); `Unauthorized` otherwise.
    async fn authenticate(&self, bearer: &str) -> Result<Caller, ApiError>;

    async fn list_hosts(&self, c: &Caller, filter: HostFilter) -> Result<Page<HostView>, ApiError>;
    async fn get_host(&self, c: &Caller, id: &str) -> Result<HostView, ApiError>;
    async fn set_host_labels(
        &self,
        c: &Caller,
        id: &str,
        labels: Vec<String>,
    ) -> Result<HostView, ApiError>;
    async fn rotate_key(&self, c: &Caller, id: &str, revoke: bool) -> Result<KeyChange, ApiError>;
    /// Forgets a host (admin): record and labels go, logs stay until
    /// retention; its agent must enroll again to come back.
    async fn delete_host(&self, c: &Caller, id: &str) -> Result<(), ApiError>;
    async fn host_config(&self, c: &Caller, id: &str) -> Result<serde_json::Value, ApiError>;
    async fn host_status_logs(
        &self,
        c: &Caller,
        id: &str,
        since: i64,
        until: i64,
        limit: usize,
    ) -> Result<Vec<StatusLog>, ApiError>;

    async fn put_query(&self, c: &Caller, q: Query) -> Result<Query, ApiError>;
    async fn list_queries(&self, c: &Caller) -> Result<Vec<Query>, ApiError>;
    async fn delete_query(&self, c: &Caller, name: &str) -> Result<(), ApiError>;
    async fn put_schedule(&self, c: &Caller, s: Schedule) -> Result<Schedule, ApiError>;
    async fn list_schedules(&self, c: &Caller) -> Result<Vec<Schedule>, ApiError>;
    async fn delete_schedule(&self, c: &Caller, name: &str) -> Result<(), ApiError>;
    async fn put_label_config(&self, c: &Caller, l: LabelConfig) -> Result<LabelConfig, ApiError>;
    async fn list_label_configs(&self, c: &Caller) -> Result<Vec<LabelConfig>, ApiError>;
    async fn delete_label_config(&self, c: &Caller, label: &str) -> Result<(), ApiError>;
    /// Dynamic labels: hosts answering `sql` with rows carry the label.
    async fn put_label_query(&self, c: &Caller, q: LabelQuery) -> Result<LabelQuery, ApiError>;
    async fn list_label_queries(&self, c: &Caller) -> Result<Vec<LabelQuery>, ApiError>;
    async fn delete_label_query(&self, c: &Caller, label: &str) -> Result<(), ApiError>;

    async fn search_results(&self, c: &Caller, f: ResultFilter)
    -> Result<Vec<ResultLog>, ApiError>;

    async fn create_campaign(
        &self,
        c: &Caller,
        req: CampaignRequest,
    ) -> Result<CampaignView, ApiError>;
    async fn list_campaigns(&self, c: &Caller, limit: usize)
    -> Result<Vec<CampaignView>, ApiError>;
    async fn get_campaign(&self, c: &Caller, id: &str) -> Result<CampaignDetail, ApiError>;
    /// The campaign's answers as they arrive, its progress, and a last
    /// `done` event (see [`CampaignEvent`]).
    async fn watch_campaign(
        &self,
        c: &Caller,
        id: &str,
    ) -> Result<tokio::sync::mpsc::Receiver<CampaignEvent>, ApiError>;
    async fn campaign_results(&self, c: &Caller, id: &str)
    -> Result<Vec<CampaignResult>, ApiError>;

    async fn list_carves(&self, c: &Caller, limit: usize) -> Result<Vec<CarveSession>, ApiError>;
    async fn get_carve(&self, c: &Caller, id: &str) -> Result<CarveSession, ApiError>;
    /// One block of a carve's archive (operator: it is a host's file).
    async fn carve_block(&self, c: &Caller, id: &str, block: u64) -> Result<Bytes, ApiError>;

    // Users, tokens and the audit log: admin only.
    async fn create_user(&self, c: &Caller, u: UserRequest) -> Result<User, ApiError>;
    async fn update_user(&self, c: &Caller, name: &str, u: UserUpdate) -> Result<User, ApiError>;
    async fn list_users(&self, c: &Caller) -> Result<Vec<User>, ApiError>;
    async fn create_token(
        &self,
        c: &Caller,
        user: &str,
        t: TokenRequest,
    ) -> Result<NewToken, ApiError>;
    async fn list_tokens(&self, c: &Caller) -> Result<Vec<ApiToken>, ApiError>;
    async fn revoke_token(&self, c: &Caller, id: &str) -> Result<ApiToken, ApiError>;
    /// Enroll secrets (admin): several at once, each with default labels,
    /// an optional expiry, revocable. Only hashes are stored.
    async fn create_enroll_secret(
        &self,
        c: &Caller,
        r: EnrollSecretRequest,
    ) -> Result<NewEnrollSecret, ApiError>;
    async fn list_enroll_secrets(&self, c: &Caller) -> Result<Vec<EnrollSecret>, ApiError>;
    async fn revoke_enroll_secret(&self, c: &Caller, id: &str) -> Result<EnrollSecret, ApiError>;
    /// Newest first; `before` is the `(at, id)` of the last event of the
    /// previous page.
    async fn list_audit(
        &self,
        c: &Caller,
        before: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, ApiError>;

    // Rules and alerts.
    /// Creates or replaces a rule (operator; admin when it has webhooks,
    /// which send fleet data out).
    async fn put_rule(&self, c: &Caller, r: Rule) -> Result<Rule, ApiError>;
    /// Every rule; webhook URLs are redacted for non-admins.
    async fn list_rules(&self, c: &Caller) -> Result<Vec<Rule>, ApiError>;
    async fn delete_rule(&self, c: &Caller, name: &str) -> Result<(), ApiError>;
    /// Alert history, newest first; `before` is the `(at, id)` of the last
    /// alert of the previous page.
    async fn list_alerts(
        &self,
        c: &Caller,
        before: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<Alert>, ApiError>;
    async fn list_dead_letters(&self, c: &Caller) -> Result<Vec<DeadLetter>, ApiError>;
    /// Sends a dead letter's webhook again (once); delivered, it leaves
    /// the list and its alert records the delivery.
    async fn redrive_dead_letter(&self, c: &Caller, id: &str) -> Result<Alert, ApiError>;
    async fn delete_dead_letter(&self, c: &Caller, id: &str) -> Result<(), ApiError>;
}

mod labels;
mod rules;
mod watch;

pub use watch::CampaignEvent;

/// The implementation over a store and a bus.
pub struct Admin {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    hosts: HostClient,
    cfg: ApiConfig,
    /// The bootstrap admin tokens (`secrets/admin_token`): the `admin`
    /// caller, also when the store cannot be read.
    bootstrap_tokens: Vec<String>,
    /// For redriving dead letters: the rule engine's webhook client.
    webhooks: Arc<dyn WebhookSender>,
    /// Campaigns seen with every target answered (they stay so): not
    /// counted against the running-campaign limits.
    complete: std::sync::Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish()
    }
}

fn host_id(id: &str) -> Result<HostId, ApiError> {
    HostId::parse(id)
        .ok_or_else(|| ApiError::BadRequest(format!("{id:?} is not a host id (32 hex characters)")))
}

impl Admin {
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        hosts: HostClient,
        webhooks: Arc<dyn WebhookSender>,
        cfg: ApiConfig,
    ) -> Self {
        Self {
            store,
            bus,
            hosts,
            cfg,
            bootstrap_tokens: Vec::new(),
            webhooks,
            complete: std::sync::Mutex::default(),
        }
    }

    /// Accepts these tokens as the built-in `admin` caller.
    pub fn with_bootstrap_tokens(mut self, tokens: Vec<String>) -> Self {
        self.bootstrap_tokens = tokens;
        self
    }

    /// Refuses `c` unless its role is at least `need`; a refusal of an
    /// action is recorded.
    async fn require(
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

    async fn audit(
        &self,
        c: &Caller,
        action: &str,
        target: &str,
        outcome: &str,
        detail: serde_json::Value,
    ) -> Result<(), ApiError> {
        let e = AuditEvent {
            id: uuid::Uuid::new_v4().to_string(),
            at: now_ms(),
            actor: c.name.clone(),
            action: action.to_owned(),
            target: target.to_owned(),
            outcome: outcome.to_owned(),
            detail,
        };
        self.store.append_audit(&e).await.map_err(|err| {
            tracing::error!(error = %err, action, "audit log write failed");
            ApiError::Unavailable(format!(
                "the audit log cannot be written ({err}); nothing was done"
            ))
        })
    }

    /// Runs a write or a query run for `c`: checks the role, records the
    /// request in the audit log before acting (nothing happens unrecorded:
    /// when the record cannot be written the action is refused), and
    /// records a failure too.
    async fn recorded<T>(
        &self,
        c: &Caller,
        need: Role,
        action: &str,
        target: &str,
        detail: serde_json::Value,
        op: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        self.require(c, need, action, target).await?;
        self.audit(c, action, target, "accepted", detail).await?;
        let r = op.await;
        if let Err(e) = &r {
            let _ = self
                .audit(
                    c,
                    action,
                    target,
                    "failed",
                    serde_json::json!({"error": e.to_string()}),
                )
                .await;
        }
        r
    }

    fn view(&self, host: Host, now: i64) -> HostView {
        let window = i64::try_from(self.cfg.online_window.as_millis()).unwrap_or(i64::MAX);
        HostView {
            online: host.is_online(now, window),
            label_set: host.label_set(),
            host,
        }
    }

    async fn host_call(
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
    async fn change_definitions<F, Fut>(
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
    async fn delete_definition<F, Fut>(
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

    fn coverage(deliveries: &[Delivery], c: &Campaign, now: i64) -> Coverage {
        let mut cov = Coverage {
            targeted: c.target_count,
            ..Default::default()
        };
        for d in deliveries {
            match d.effective_state(c.expires_at, now) {
                DeliveryState::Queued => cov.queued += 1,
                DeliveryState::Delivered => cov.delivered += 1,
                DeliveryState::Answered => cov.answered += 1,
                DeliveryState::Failed => cov.failed += 1,
                DeliveryState::Expired => cov.expired += 1,
            }
        }
        cov
    }

    async fn campaign(&self, id: &str) -> Result<Campaign, ApiError> {
        self.store
            .get_campaign(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("campaign {id}")))
    }
}

fn not_found_if_false(found: bool, what: String) -> Result<(), ApiError> {
    if found {
        Ok(())
    } else {
        Err(ApiError::NotFound(what))
    }
}

/// `<store cursor>~<hosts to skip>`; the store cursor is empty for the
/// first page.
fn host_cursor(store_cursor: Option<&str>, skip: usize) -> String {
    format!("{}~{skip}", store_cursor.unwrap_or(""))
}

fn parse_host_cursor(s: &str) -> Result<(Option<String>, usize), ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "invalid cursor {s:?}: pass `next` from a previous page"
        ))
    };
    let (c, skip) = s.rsplit_once('~').ok_or_else(bad)?;
    let skip = skip.parse::<usize>().map_err(|_| bad())?;
    Ok(((!c.is_empty()).then(|| c.to_owned()), skip))
}

impl Admin {
    /// Hosts carrying `label`, in host-id order, from the label index; the
    /// cursor is the last host id returned (`id:<host id>`).
    async fn list_hosts_with_label(
        &self,
        label: &str,
        f: &HostFilter,
        limit: usize,
    ) -> Result<Page<HostView>, ApiError> {
        let after =
            match f.after.as_deref() {
                Some(a) => Some(a.strip_prefix("id:").and_then(HostId::parse).ok_or_else(
                    || {
                        ApiError::BadRequest(format!(
                            "invalid cursor {a:?}: pass `next` from a previous page"
                        ))
                    },
                )?),
                None => None,
            };
        let mut ids = self.store.hosts_with_label(label).await?;
        ids.sort();
        ids.dedup();
        let now = now_ms();
        let mut items = Vec::new();
        let mut last: Option<HostId> = None;
        for id in ids
            .into_iter()
            .filter(|id| after.as_ref().is_none_or(|a| id > a))
        {
            if items.len() == limit {
                return Ok(Page {
                    items,
                    next: last.map(|l| format!("id:{l}")),
                });
            }
            last = Some(id.clone());
            let Some(h) = self.store.get_host(&id).await? else {
                continue;
            };
            let v = self.view(h, now);
            if v.label_set.iter().any(|l| l == label) && f.keeps(&v) {
                items.push(v);
            }
        }
        Ok(Page { items, next: None })
    }
}

/// The operations themselves; [`AdminService`] adds authorization and the
/// audit log around them.
impl Admin {
    async fn op_list_hosts(&self, f: HostFilter) -> Result<Page<HostView>, ApiError> {
        let limit = f.limit.unwrap_or(100).clamp(1, 1000);
        // A label or platform names an index: list its members instead of
        // paging through every host.
        let indexed = match (&f.label, &f.platform) {
            (Some(l), _) => Some(l.clone()),
            (None, Some(p)) => Some(format!("platform:{p}")),
            (None, None) => None,
        };
        if let Some(label) = indexed {
            return self.list_hosts_with_label(&label, &f, limit).await;
        }
        // The API cursor is the store's page cursor plus how many hosts of
        // that page were already returned, so a filtered page can stop
        // anywhere inside a store page.
        let (mut cursor, mut skip) = match f.after.as_deref() {
            Some(a) => parse_host_cursor(a)?,
            None => (None, 0),
        };
        let now = now_ms();
        let mut items = Vec::new();
        // Filters apply while paging, so a page is full unless hosts ran out.
        loop {
            let page = self.store.list_hosts(cursor.as_deref(), limit).await?;
            let count = page.items.len();
            for (i, h) in page.items.into_iter().enumerate().skip(skip) {
                let v = self.view(h, now);
                if f.keeps(&v) {
                    items.push(v);
                    if items.len() == limit {
                        let next = if i + 1 < count {
                            Some(host_cursor(cursor.as_deref(), i + 1))
                        } else {
                            page.next.as_deref().map(|n| host_cursor(Some(n), 0))
                        };
                        return Ok(Page { items, next });
                    }
                }
            }
            skip = 0;
            match page.next {
                Some(n) => cursor = Some(n),
                None => return Ok(Page { items, next: None }),
            }
        }
    }

    async fn op_get_host(&self, id: &str) -> Result<HostView, ApiError> {
        let id = host_id(id)?;
        let h = self
            .store
            .get_host(&id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("host {id}")))?;
        Ok(self.view(h, now_ms()))
    }

    async fn op_set_host_labels(
        &self,
        id: &str,
        labels: Vec<String>,
    ) -> Result<HostView, ApiError> {
        let hid = host_id(id)?;
        for l in &labels {
            validate_label(l)?;
            if l == "all" || l.starts_with("platform:") {
                return Err(ApiError::BadRequest(format!(
                    "label {l:?} is built in and cannot be set"
                )));
            }
        }
        // The new label combination must still yield a publishable config.
        let mut host = self
            .store
            .get_host(&hid)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("host {hid}")))?;
        host.labels = labels.clone();
        assemble(
            &host.label_set(),
            &load_definitions(self.store.as_ref()).await?,
        )?;
        self.host_call(&hid, host_request::Op::SetLabels(SetLabelsOp { labels }))
            .await?;
        self.op_get_host(id).await
    }

    async fn op_rotate_key(&self, id: &str, revoke: bool) -> Result<KeyChange, ApiError> {
        let hid = host_id(id)?;
        match self
            .host_call(&hid, host_request::Op::RotateKey(RotateKeyOp { revoke }))
            .await?
        {
            host_reply::Result::Key(k) => Ok(KeyChange {
                host_id: hid,
                epoch: k.epoch,
                revoked: revoke,
            }),
            _ => Err(ApiError::Unavailable(
                "unexpected reply to key rotation".into(),
            )),
        }
    }

    async fn op_host_config(&self, id: &str) -> Result<serde_json::Value, ApiError> {
        let h = self.op_get_host(id).await?;
        let defs = load_definitions(self.store.as_ref()).await?;
        let a = assemble(&h.label_set, &defs)?;
        serde_json::from_slice(&a.bytes).map_err(|e| ApiError::Unavailable(e.to_string()))
    }

    async fn op_host_status_logs(
        &self,
        id: &str,
        since: i64,
        until: i64,
        limit: usize,
    ) -> Result<Vec<StatusLog>, ApiError> {
        let hid = host_id(id)?;
        Ok(self
            .store
            .query_status(&hid, since, until, limit.clamp(1, 10_000))
            .await?)
    }

    async fn op_put_query(&self, mut q: Query) -> Result<Query, ApiError> {
        validate_query(&q)?;
        q.updated_at = now_ms();
        let stored = q.clone();
        self.change_definitions(
            |d| {
                d.queries.insert(q.name.clone(), q.clone());
                Ok(())
            },
            || async { Ok(self.store.put_query(&stored).await?) },
        )
        .await?;
        Ok(q)
    }

    async fn op_list_queries(&self) -> Result<Vec<Query>, ApiError> {
        Ok(self.store.list_queries().await?)
    }

    async fn op_delete_query(&self, name: &str) -> Result<(), ApiError> {
        let users: Vec<String> = self
            .store
            .list_schedules()
            .await?
            .into_iter()
            .filter(|s| s.query == name)
            .map(|s| s.name)
            .collect();
        if !users.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "query {name:?} is used by schedules {users:?}; delete those first"
            )));
        }
        not_found_if_false(
            self.store.delete_query(name).await?,
            format!("query {name}"),
        )
    }

    async fn op_put_schedule(&self, mut s: Schedule) -> Result<Schedule, ApiError> {
        s.updated_at = now_ms();
        let stored = s.clone();
        self.change_definitions(
            |d| {
                validate_schedule(&s, d)?;
                d.schedules.insert(s.name.clone(), s.clone());
                Ok(())
            },
            || async { Ok(self.store.put_schedule(&stored).await?) },
        )
        .await?;
        Ok(s)
    }

    async fn op_list_schedules(&self) -> Result<Vec<Schedule>, ApiError> {
        Ok(self.store.list_schedules().await?)
    }

    async fn op_delete_schedule(&self, name: &str) -> Result<(), ApiError> {
        self.delete_definition(
            format!("schedule {name}"),
            |d| d.schedules.remove(name).is_some(),
            || self.store.delete_schedule(name),
        )
        .await
    }

    async fn op_put_label_config(&self, mut c: LabelConfig) -> Result<LabelConfig, ApiError> {
        validate_label_config(&c)?;
        c.updated_at = now_ms();
        let stored = c.clone();
        self.change_definitions(
            |d| {
                d.label_configs.insert(c.label.clone(), c.clone());
                Ok(())
            },
            || async { Ok(self.store.put_label_config(&stored).await?) },
        )
        .await?;
        Ok(c)
    }

    async fn op_list_label_configs(&self) -> Result<Vec<LabelConfig>, ApiError> {
        Ok(self.store.list_label_configs().await?)
    }

    async fn op_delete_label_config(&self, label: &str) -> Result<(), ApiError> {
        self.delete_definition(
            format!("label config {label}"),
            |d| d.label_configs.remove(label).is_some(),
            || self.store.delete_label_config(label),
        )
        .await
    }

    async fn op_search_results(&self, mut f: ResultFilter) -> Result<Vec<ResultLog>, ApiError> {
        if f.until <= 0 {
            f.until = i64::MAX;
        }
        if f.since > f.until {
            return Err(ApiError::BadRequest("since must not be after until".into()));
        }
        if f.host_id.is_none() && f.name.is_none() {
            return Err(ApiError::BadRequest(
                "give a host_id, a query name, or both".into(),
            ));
        }
        f.limit = if f.limit == 0 {
            1000
        } else {
            f.limit.min(10_000)
        };
        Ok(self.store.query_results(&f).await?)
    }

    async fn op_create_campaign(
        &self,
        req: CampaignRequest,
        by: &str,
    ) -> Result<CampaignView, ApiError> {
        let sql = req.sql.trim().to_owned();
        if sql.is_empty() {
            return Err(ApiError::BadRequest("sql must not be empty".into()));
        }
        if sql.len() > 100_000 {
            return Err(ApiError::BadRequest(
                "sql is longer than 100000 bytes".into(),
            ));
        }
        if req.hosts.is_empty() && req.labels.is_empty() && req.platforms.is_empty() && !req.all {
            return Err(ApiError::BadRequest(
                "give targets: hosts, labels, platforms, or all: true".into(),
            ));
        }
        let mut req = req;
        for p in std::mem::take(&mut req.platforms) {
            if !["darwin", "linux", "windows", "freebsd"].contains(&p.as_str()) {
                return Err(ApiError::BadRequest(format!(
                    "platform {p:?} is not one of darwin, linux, windows, freebsd"
                )));
            }
            req.labels.push(format!("platform:{p}"));
        }
        self.check_campaign_limits(by).await?;
        let ttl = req
            .expires_in
            .map_or(self.cfg.default_campaign_ttl, Duration::from_secs);
        if ttl < Duration::from_secs(1) || ttl > self.cfg.max_campaign_ttl {
            return Err(ApiError::BadRequest(format!(
                "expires_in must be between 1 and {} seconds",
                self.cfg.max_campaign_ttl.as_secs()
            )));
        }
        let mut targets: BTreeSet<HostId> = BTreeSet::new();
        let mut wanted = Vec::new();
        for h in &req.hosts {
            let id = host_id(h)?;
            if self.store.get_host(&id).await?.is_none() {
                return Err(ApiError::BadRequest(format!("host {id} is not enrolled")));
            }
            wanted.push(id.clone());
            targets.insert(id);
        }
        for l in &req.labels {
            validate_label(l)?;
        }
        let labels: Vec<&str> = if req.all {
            vec!["all"]
        } else {
            req.labels.iter().map(String::as_str).collect()
        };
        for l in labels {
            targets.extend(self.store.hosts_with_label(l).await?);
        }
        if targets.is_empty() {
            return Err(ApiError::BadRequest(
                "no enrolled host matches the targets".into(),
            ));
        }
        if targets.len() > self.cfg.max_campaign_targets {
            return Err(ApiError::BadRequest(format!(
                "campaign targets {} hosts, more than the limit of {}",
                targets.len(),
                self.cfg.max_campaign_targets
            )));
        }
        let now = now_ms();
        let c = Campaign {
            id: uuid::Uuid::new_v4().simple().to_string(),
            sql,
            targets: Targets {
                hosts: wanted,
                labels: req.labels,
                all: req.all,
            },
            target_count: targets.len() as u64,
            created_at: now,
            expires_at: now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2),
            created_by: by.to_owned(),
        };
        let hosts: Vec<HostId> = targets.into_iter().collect();
        self.store.create_campaign(&c, &hosts).await?;
        for msg in campaign_messages(&c.id, &hosts, self.hosts.shards()) {
            if let Err(e) = publish(self.bus.as_ref(), &CAMPAIGN_CREATED, &msg).await {
                tracing::warn!(campaign = %c.id, error = %e, "campaign broadcast failed; hosts pick it up when their actors restart");
            }
        }
        tracing::info!(campaign = %c.id, targets = c.target_count, by, "campaign created");
        Ok(CampaignView {
            coverage: Coverage {
                targeted: c.target_count,
                queued: c.target_count,
                ..Default::default()
            },
            expired: false,
            campaign: c,
        })
    }

    /// Refuses a new campaign while too many run, in all or for `by`.
    async fn check_campaign_limits(&self, by: &str) -> Result<(), ApiError> {
        let now = now_ms();
        let window = self.cfg.max_active_campaigns.saturating_mul(4).max(100);
        let unexpired: Vec<Campaign> = self
            .store
            .list_campaigns(window)
            .await?
            .into_iter()
            .filter(|c| {
                !c.is_expired(now) && !self.complete.lock().is_ok_and(|s| s.contains(&c.id))
            })
            .collect();
        let count = |cs: &[Campaign]| {
            let mine = cs.iter().filter(|c| c.created_by == by).count();
            (cs.len(), mine)
        };
        let (mut running, mut mine) = count(&unexpired);
        if running >= self.cfg.max_active_campaigns
            || mine >= self.cfg.max_active_campaigns_per_user
        {
            // At a limit: campaigns every target answered do not count.
            // Their deliveries are read only now, and once per campaign.
            let mut still = Vec::new();
            for c in unexpired {
                let cov = Self::coverage(&self.store.list_deliveries(&c.id).await?, &c, now);
                if cov.answered + cov.failed >= c.target_count {
                    if let Ok(mut s) = self.complete.lock() {
                        s.insert(c.id.clone());
                    }
                } else {
                    still.push(c);
                }
            }
            (running, mine) = count(&still);
        }
        if running >= self.cfg.max_active_campaigns {
            return Err(ApiError::TooMany(format!(
                "{running} campaigns are running (the limit is {}); wait for one to finish or expire",
                self.cfg.max_active_campaigns
            )));
        }
        if mine >= self.cfg.max_active_campaigns_per_user {
            return Err(ApiError::TooMany(format!(
                "{by} has {mine} campaigns running (the limit per user is {}); wait for one to finish or expire",
                self.cfg.max_active_campaigns_per_user
            )));
        }
        Ok(())
    }

    async fn op_list_campaigns(&self, limit: usize) -> Result<Vec<CampaignView>, ApiError> {
        let now = now_ms();
        let mut out = Vec::new();
        for c in self.store.list_campaigns(limit.clamp(1, 1000)).await? {
            let ds = self.store.list_deliveries(&c.id).await?;
            out.push(CampaignView {
                coverage: Self::coverage(&ds, &c, now),
                expired: c.is_expired(now),
                campaign: c,
            });
        }
        Ok(out)
    }

    async fn op_get_campaign(&self, id: &str) -> Result<CampaignDetail, ApiError> {
        let c = self.campaign(id).await?;
        let now = now_ms();
        let ds = self.store.list_deliveries(id).await?;
        let coverage = Self::coverage(&ds, &c, now);
        let mut hosts = Vec::with_capacity(ds.len());
        let mut non_responders = Vec::new();
        for mut d in ds {
            d.state = d.effective_state(c.expires_at, now);
            if !matches!(d.state, DeliveryState::Answered | DeliveryState::Failed) {
                non_responders.push(d.host_id.clone());
            }
            let hostname = self
                .store
                .get_host(&d.host_id)
                .await?
                .map(|h| h.hostname)
                .unwrap_or_default();
            hosts.push(HostDelivery {
                delivery: d,
                hostname,
            });
        }
        Ok(CampaignDetail {
            view: CampaignView {
                expired: c.is_expired(now),
                coverage,
                campaign: c,
            },
            hosts,
            non_responders,
        })
    }

    async fn op_campaign_results(&self, id: &str) -> Result<Vec<CampaignResult>, ApiError> {
        self.campaign(id).await?;
        Ok(self.store.list_results(id).await?)
    }

    async fn op_list_carves(&self, limit: usize) -> Result<Vec<CarveSession>, ApiError> {
        Ok(self.store.list_carves(limit.clamp(1, 1000)).await?)
    }

    async fn op_get_carve(&self, id: &str) -> Result<CarveSession, ApiError> {
        let s = self
            .store
            .get_carve(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("carve {id}")))?;
        if s.state == CarveState::Receiving && s.blocks_received == s.block_count {
            // Every block arrived but completion did not run (e.g. a crash).
            return Ok(finalize(self.store.as_ref(), s).await?);
        }
        Ok(s)
    }

    async fn op_carve_block(&self, id: &str, block: u64) -> Result<Bytes, ApiError> {
        self.store
            .get_carve_block(id, block)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("carve {id} block {block}")))
    }
}

/// 244 random bits (two v4 UUIDs, from the OS CSPRNG) as 64 hex digits.
fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// When something created `now` and valid for `expires_in` seconds ends.
fn expiry(now: i64, expires_in: Option<u64>) -> Result<Option<i64>, ApiError> {
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

fn name_ok(what: &str, n: &str) -> Result<(), ApiError> {
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

#[async_trait]
impl AdminService for Admin {
    async fn authenticate(&self, bearer: &str) -> Result<Caller, ApiError> {
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
        if !token.is_usable(now_ms()) {
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

    async fn list_hosts(&self, _: &Caller, f: HostFilter) -> Result<Page<HostView>, ApiError> {
        self.op_list_hosts(f).await
    }

    async fn get_host(&self, _: &Caller, id: &str) -> Result<HostView, ApiError> {
        self.op_get_host(id).await
    }

    async fn set_host_labels(
        &self,
        c: &Caller,
        id: &str,
        labels: Vec<String>,
    ) -> Result<HostView, ApiError> {
        let detail = serde_json::json!({ "labels": labels });
        self.recorded(c, Role::Operator, "host.set_labels", id, detail, async {
            self.op_set_host_labels(id, labels).await
        })
        .await
    }

    async fn rotate_key(&self, c: &Caller, id: &str, revoke: bool) -> Result<KeyChange, ApiError> {
        let action = if revoke {
            "host.revoke_key"
        } else {
            "host.rotate_key"
        };
        self.recorded(c, Role::Admin, action, id, serde_json::json!({}), async {
            self.op_rotate_key(id, revoke).await
        })
        .await
    }

    async fn delete_host(&self, c: &Caller, id: &str) -> Result<(), ApiError> {
        self.recorded(
            c,
            Role::Admin,
            "host.delete",
            id,
            serde_json::json!({}),
            async {
                let hid = host_id(id)?;
                self.host_call(&hid, host_request::Op::DeleteHost(Default::default()))
                    .await
                    .map(|_| ())
            },
        )
        .await
    }

    async fn host_config(&self, _: &Caller, id: &str) -> Result<serde_json::Value, ApiError> {
        self.op_host_config(id).await
    }

    async fn host_status_logs(
        &self,
        _: &Caller,
        id: &str,
        since: i64,
        until: i64,
        limit: usize,
    ) -> Result<Vec<StatusLog>, ApiError> {
        self.op_host_status_logs(id, since, until, limit).await
    }

    async fn put_query(&self, c: &Caller, q: Query) -> Result<Query, ApiError> {
        let (name, detail) = (q.name.clone(), serde_json::json!({ "sql": q.sql }));
        self.recorded(
            c,
            Role::Operator,
            "query.put",
            &name,
            detail,
            self.op_put_query(q),
        )
        .await
    }

    async fn list_queries(&self, _: &Caller) -> Result<Vec<Query>, ApiError> {
        self.op_list_queries().await
    }

    async fn delete_query(&self, c: &Caller, name: &str) -> Result<(), ApiError> {
        self.recorded(
            c,
            Role::Operator,
            "query.delete",
            name,
            serde_json::json!({}),
            self.op_delete_query(name),
        )
        .await
    }

    async fn put_schedule(&self, c: &Caller, s: Schedule) -> Result<Schedule, ApiError> {
        let name = s.name.clone();
        let detail = serde_json::to_value(&s).unwrap_or_default();
        self.recorded(
            c,
            Role::Operator,
            "schedule.put",
            &name,
            detail,
            self.op_put_schedule(s),
        )
        .await
    }

    async fn list_schedules(&self, _: &Caller) -> Result<Vec<Schedule>, ApiError> {
        self.op_list_schedules().await
    }

    async fn delete_schedule(&self, c: &Caller, name: &str) -> Result<(), ApiError> {
        self.recorded(
            c,
            Role::Operator,
            "schedule.delete",
            name,
            serde_json::json!({}),
            self.op_delete_schedule(name),
        )
        .await
    }

    async fn put_label_config(&self, c: &Caller, l: LabelConfig) -> Result<LabelConfig, ApiError> {
        let label = l.label.clone();
        let detail = serde_json::to_value(&l).unwrap_or_default();
        self.recorded(
            c,
            Role::Operator,
            "label_config.put",
            &label,
            detail,
            self.op_put_label_config(l),
        )
        .await
    }

    async fn put_label_query(&self, c: &Caller, q: LabelQuery) -> Result<LabelQuery, ApiError> {
        let label = q.label.clone();
        let detail = serde_json::to_value(&q).unwrap_or_default();
        self.recorded(
            c,
            Role::Operator,
            "label_query.put",
            &label,
            detail,
            self.op_put_label_query(q),
        )
        .await
    }

    async fn list_label_queries(&self, _: &Caller) -> Result<Vec<LabelQuery>, ApiError> {
        self.op_list_label_queries().await
    }

    async fn delete_label_query(&self, c: &Caller, label: &str) -> Result<(), ApiError> {
        self.recorded(
            c,
            Role::Operator,
            "label_query.delete",
            label,
            serde_json::json!({}),
            self.op_delete_label_query(label),
        )
        .await
    }

    async fn list_label_configs(&self, _: &Caller) -> Result<Vec<LabelConfig>, ApiError> {
        self.op_list_label_configs().await
    }

    async fn delete_label_config(&self, c: &Caller, label: &str) -> Result<(), ApiError> {
        self.recorded(
            c,
            Role::Operator,
            "label_config.delete",
            label,
            serde_json::json!({}),
            self.op_delete_label_config(label),
        )
        .await
    }

    async fn search_results(
        &self,
        _: &Caller,
        f: ResultFilter,
    ) -> Result<Vec<ResultLog>, ApiError> {
        self.op_search_results(f).await
    }

    async fn create_campaign(
        &self,
        c: &Caller,
        req: CampaignRequest,
    ) -> Result<CampaignView, ApiError> {
        let detail = serde_json::json!({
            "sql": req.sql, "hosts": req.hosts, "labels": req.labels, "all": req.all,
            "expires_in": req.expires_in,
        });
        self.recorded(c, Role::Operator, "campaign.create", "", detail, async {
            self.op_create_campaign(req, &c.name).await
        })
        .await
    }

    async fn list_campaigns(
        &self,
        _: &Caller,
        limit: usize,
    ) -> Result<Vec<CampaignView>, ApiError> {
        self.op_list_campaigns(limit).await
    }

    async fn get_campaign(&self, _: &Caller, id: &str) -> Result<CampaignDetail, ApiError> {
        self.op_get_campaign(id).await
    }

    async fn campaign_results(
        &self,
        _: &Caller,
        id: &str,
    ) -> Result<Vec<CampaignResult>, ApiError> {
        self.op_campaign_results(id).await
    }

    async fn watch_campaign(
        &self,
        _: &Caller,
        id: &str,
    ) -> Result<tokio::sync::mpsc::Receiver<CampaignEvent>, ApiError> {
        self.op_watch_campaign(id).await
    }

    async fn list_carves(&self, _: &Caller, limit: usize) -> Result<Vec<CarveSession>, ApiError> {
        self.op_list_carves(limit).await
    }

    async fn get_carve(&self, _: &Caller, id: &str) -> Result<CarveSession, ApiError> {
        self.op_get_carve(id).await
    }

    async fn carve_block(&self, c: &Caller, id: &str, block: u64) -> Result<Bytes, ApiError> {
        let detail = serde_json::json!({ "block": block });
        self.recorded(
            c,
            Role::Operator,
            "carve.download",
            id,
            detail,
            self.op_carve_block(id, block),
        )
        .await
    }

    async fn create_user(&self, c: &Caller, u: UserRequest) -> Result<User, ApiError> {
        let detail = serde_json::json!({ "role": u.role.as_str() });
        self.recorded(
            c,
            Role::Admin,
            "user.create",
            &u.name.clone(),
            detail,
            async {
                name_ok("user name", &u.name)?;
                if u.name == "admin" {
                    return Err(ApiError::BadRequest(
                        "\"admin\" is the bootstrap token's name; choose another".into(),
                    ));
                }
                if self.store.get_user(&u.name).await?.is_some() {
                    return Err(ApiError::Conflict(format!("user {} exists", u.name)));
                }
                let now = now_ms();
                let user = User {
                    name: u.name,
                    role: u.role,
                    created_at: now,
                    created_by: c.name.clone(),
                    disabled: false,
                    updated_at: now,
                };
                self.store.put_user(&user).await?;
                Ok(user)
            },
        )
        .await
    }

    async fn update_user(&self, c: &Caller, name: &str, u: UserUpdate) -> Result<User, ApiError> {
        let detail = serde_json::json!({
            "role": u.role.map(Role::as_str), "disabled": u.disabled,
        });
        self.recorded(c, Role::Admin, "user.update", name, detail, async {
            let mut user = self
                .store
                .get_user(name)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("user {name}")))?;
            if let Some(r) = u.role {
                user.role = r;
            }
            if let Some(d) = u.disabled {
                user.disabled = d;
            }
            user.updated_at = now_ms();
            self.store.put_user(&user).await?;
            Ok(user)
        })
        .await
    }

    async fn list_users(&self, c: &Caller) -> Result<Vec<User>, ApiError> {
        self.require(c, Role::Admin, "user.list", "").await?;
        let mut u = self.store.list_users().await?;
        u.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(u)
    }

    async fn create_token(
        &self,
        c: &Caller,
        user: &str,
        t: TokenRequest,
    ) -> Result<NewToken, ApiError> {
        let detail = serde_json::json!({
            "description": t.description, "expires_in": t.expires_in,
        });
        self.recorded(c, Role::Admin, "token.create", user, detail, async {
            let u = self
                .store
                .get_user(user)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("user {user}")))?;
            if t.description.len() > 200 {
                return Err(ApiError::BadRequest(
                    "description is longer than 200 characters".into(),
                ));
            }
            let secret = format!("ght_{}", random_secret());
            let now = now_ms();
            let expires_at = expiry(now, t.expires_in)?;
            let token = ApiToken {
                id: uuid::Uuid::new_v4().to_string(),
                user: u.name,
                secret_sha256: gatehouse_core::ids::sha256_hex(secret.as_bytes()),
                description: t.description,
                created_at: now,
                created_by: c.name.clone(),
                expires_at,
                revoked: false,
            };
            self.store.put_token(&token).await?;
            Ok(NewToken { token, secret })
        })
        .await
    }

    async fn list_tokens(&self, c: &Caller) -> Result<Vec<ApiToken>, ApiError> {
        self.require(c, Role::Admin, "token.list", "").await?;
        let mut t = self.store.list_tokens().await?;
        t.sort_by(|a, b| (a.user.as_str(), a.created_at).cmp(&(b.user.as_str(), b.created_at)));
        Ok(t)
    }

    async fn revoke_token(&self, c: &Caller, id: &str) -> Result<ApiToken, ApiError> {
        self.recorded(
            c,
            Role::Admin,
            "token.revoke",
            id,
            serde_json::json!({}),
            async {
                let mut t = self
                    .store
                    .list_tokens()
                    .await?
                    .into_iter()
                    .find(|t| t.id == id)
                    .ok_or_else(|| ApiError::NotFound(format!("token {id}")))?;
                t.revoked = true;
                self.store.put_token(&t).await?;
                Ok(t)
            },
        )
        .await
    }

    async fn create_enroll_secret(
        &self,
        c: &Caller,
        r: EnrollSecretRequest,
    ) -> Result<NewEnrollSecret, ApiError> {
        let detail = serde_json::json!({
            "labels": r.labels, "expires_in": r.expires_in, "chosen_value": r.secret.is_some(),
        });
        self.recorded(
            c,
            Role::Admin,
            "enroll_secret.create",
            &r.id.clone(),
            detail,
            async {
                name_ok("enroll secret id", &r.id)?;
                for l in &r.labels {
                    validate_label(l)?;
                }
                let value = match r.secret {
                    Some(v) if v.len() < 16 || v.len() > 256 || v.trim() != v => {
                        return Err(ApiError::BadRequest(
                            "secret: 16 to 256 characters, no surrounding spaces".into(),
                        ));
                    }
                    Some(v) => v,
                    None => random_secret(),
                };
                let sha = gatehouse_core::ids::sha256_hex(value.as_bytes());
                let existing = self.store.list_enroll_secrets().await?;
                if existing.iter().any(|s| s.id == r.id) {
                    return Err(ApiError::Conflict(format!("enroll secret {} exists", r.id)));
                }
                if existing.iter().any(|s| s.secret_sha256 == sha) {
                    return Err(ApiError::Conflict(
                        "another enroll secret has this value".into(),
                    ));
                }
                let now = now_ms();
                let expires_at = expiry(now, r.expires_in)?;
                let mut labels = r.labels;
                labels.sort();
                labels.dedup();
                let secret = EnrollSecret {
                    id: r.id,
                    secret_sha256: sha,
                    labels,
                    created_at: now,
                    expires_at,
                    revoked: false,
                    created_by: c.name.clone(),
                };
                self.store.put_enroll_secret(&secret).await?;
                Ok(NewEnrollSecret {
                    enroll_secret: secret,
                    secret: value,
                })
            },
        )
        .await
    }

    async fn list_enroll_secrets(&self, c: &Caller) -> Result<Vec<EnrollSecret>, ApiError> {
        self.require(c, Role::Admin, "enroll_secret.list", "")
            .await?;
        let mut s = self.store.list_enroll_secrets().await?;
        s.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(s)
    }

    async fn revoke_enroll_secret(&self, c: &Caller, id: &str) -> Result<EnrollSecret, ApiError> {
        self.recorded(
            c,
            Role::Admin,
            "enroll_secret.revoke",
            id,
            serde_json::json!({}),
            async {
                let mut s = self
                    .store
                    .list_enroll_secrets()
                    .await?
                    .into_iter()
                    .find(|s| s.id == id)
                    .ok_or_else(|| ApiError::NotFound(format!("enroll secret {id}")))?;
                s.revoked = true;
                self.store.put_enroll_secret(&s).await?;
                Ok(s)
            },
        )
        .await
    }

    async fn list_audit(
        &self,
        c: &Caller,
        before: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, ApiError> {
        self.require(c, Role::Admin, "audit.list", "").await?;
        let before = before.as_ref().map(|(at, id)| (*at, id.as_str()));
        Ok(self.store.list_audit(before, limit.clamp(1, 1000)).await?)
    }

    async fn put_rule(&self, c: &Caller, r: Rule) -> Result<Rule, ApiError> {
        let need = rules::role_to_write(&r);
        let detail = serde_json::to_value(r.clone().redacted()).unwrap_or_default();
        let name = r.name.clone();
        self.recorded(c, need, "rule.put", &name, detail, self.op_put_rule(r))
            .await
    }

    async fn list_rules(&self, c: &Caller) -> Result<Vec<Rule>, ApiError> {
        self.op_list_rules(c.role >= Role::Admin).await
    }

    async fn delete_rule(&self, c: &Caller, name: &str) -> Result<(), ApiError> {
        self.recorded(
            c,
            Role::Operator,
            "rule.delete",
            name,
            serde_json::json!({}),
            self.op_delete_rule(name),
        )
        .await
    }

    async fn list_alerts(
        &self,
        _: &Caller,
        before: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<Alert>, ApiError> {
        let before = before.as_ref().map(|(at, id)| (*at, id.as_str()));
        Ok(self.store.list_alerts(before, limit.clamp(1, 1000)).await?)
    }

    async fn list_dead_letters(&self, c: &Caller) -> Result<Vec<DeadLetter>, ApiError> {
        self.require(c, Role::Admin, "dead_letter.list", "").await?;
        let mut d = self.store.list_dead_letters().await?;
        d.sort_by(|a, b| b.dead_at.cmp(&a.dead_at).then_with(|| a.id.cmp(&b.id)));
        Ok(d)
    }

    async fn redrive_dead_letter(&self, c: &Caller, id: &str) -> Result<Alert, ApiError> {
        self.recorded(
            c,
            Role::Admin,
            "dead_letter.redrive",
            id,
            serde_json::json!({}),
            self.op_redrive(id),
        )
        .await
    }

    async fn delete_dead_letter(&self, c: &Caller, id: &str) -> Result<(), ApiError> {
        self.recorded(
            c,
            Role::Admin,
            "dead_letter.delete",
            id,
            serde_json::json!({}),
            async {
                let found = self.store.delete_dead_letter(id).await?;
                not_found_if_false(found, format!("dead letter {id}"))
            },
        )
        .await
    }
}
