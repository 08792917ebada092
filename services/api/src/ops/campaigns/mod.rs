//! Live queries (campaigns): creation (targets resolved to hosts, limits
//! on size and on campaigns running at once, one delivery per host that
//! waits for offline hosts until the campaign expires), listing with
//! coverage, details with non-responders, stored answers, and the live
//! watch (see [`watch`]).

use std::collections::BTreeSet;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use gatehouse_bus::events::publish;
use gatehouse_bus::hostrpc::campaign_messages;
use gatehouse_core::HostId;
use gatehouse_core::config::validate_label;
use gatehouse_core::model::Role::{Observer, Operator};
use gatehouse_core::model::{Campaign, CampaignResult, Delivery, DeliveryState, Targets};
use gatehouse_proto::topics::{CAMPAIGN_CANCELLED, CAMPAIGN_CREATED};
use gatehouse_proto::v1 as pb;
use http::StatusCode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{page_size, pb_limit};
use crate::ApiError;
use crate::admin::{Admin, Caller};
use crate::grpc::{label, object, to_pb_struct};
use crate::registry::{
    Answer, Audit, Audited, Entry, GrpcReply, Input, IntoPb, Operation, Reply, Spec, Verb, entry,
};

mod watch;

pub use watch::CampaignEvent;

pub(super) fn entries() -> Vec<Entry> {
    vec![
        entry::<ListCampaigns>(),
        entry::<CreateCampaign>(),
        entry::<GetCampaign>(),
        entry::<CancelCampaign>(),
        entry::<CampaignResults>(),
        entry::<WatchCampaign>(),
        entry::<CountTargets>(),
        entry::<ListHostCampaigns>(),
    ]
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct Coverage {
    pub targeted: u64,
    pub queued: u64,
    pub delivered: u64,
    pub answered: u64,
    pub failed: u64,
    pub expired: u64,
}

impl IntoPb for Coverage {
    type Pb = pb::Coverage;
    fn into_pb(self) -> pb::Coverage {
        pb::Coverage {
            targeted: self.targeted,
            queued: self.queued,
            delivered: self.delivered,
            answered: self.answered,
            failed: self.failed,
            expired: self.expired,
        }
    }
}

/// Where each delivery of `c` stands at `now`.
pub(crate) fn coverage(deliveries: &[Delivery], c: &Campaign, now: i64) -> Coverage {
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

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CampaignView {
    #[serde(flatten)]
    pub campaign: Campaign,
    pub expired: bool,
    pub coverage: Coverage,
}

impl IntoPb for CampaignView {
    type Pb = pb::CampaignView;
    fn into_pb(self) -> pb::CampaignView {
        let c = self.campaign;
        pb::CampaignView {
            id: c.id,
            sql: c.sql,
            targets: Some(pb::Targets {
                hosts: c.targets.hosts.iter().map(ToString::to_string).collect(),
                labels: c.targets.labels,
                all: c.targets.all,
            }),
            target_count: c.target_count,
            created_at: c.created_at,
            expires_at: c.expires_at,
            created_by: c.created_by,
            expired: self.expired,
            coverage: Some(self.coverage.into_pb()),
            cancelled_at: c.cancelled_at.unwrap_or(0),
            cancelled_by: c.cancelled_by.unwrap_or_default(),
        }
    }
}

impl IntoPb for Vec<CampaignView> {
    type Pb = pb::Campaigns;
    fn into_pb(self) -> pb::Campaigns {
        pb::Campaigns {
            campaigns: self.into_iter().map(IntoPb::into_pb).collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HostDelivery {
    #[serde(flatten)]
    pub delivery: Delivery,
    pub hostname: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CampaignDetail {
    #[serde(flatten)]
    pub view: CampaignView,
    pub hosts: Vec<HostDelivery>,
    /// Hosts that have not answered (still waiting, or expired).
    pub non_responders: Vec<HostId>,
}

impl IntoPb for CampaignDetail {
    type Pb = pb::CampaignDetail;
    fn into_pb(self) -> pb::CampaignDetail {
        pb::CampaignDetail {
            campaign: Some(self.view.into_pb()),
            hosts: self
                .hosts
                .into_iter()
                .map(|h| pb::HostDelivery {
                    host_id: h.delivery.host_id.to_string(),
                    hostname: h.hostname,
                    state: label(h.delivery.state),
                    queued_at: h.delivery.queued_at,
                    delivered_at: h.delivery.delivered_at,
                    delivery_count: h.delivery.delivery_count,
                    finished_at: h.delivery.finished_at,
                })
                .collect(),
            non_responders: self
                .non_responders
                .iter()
                .map(ToString::to_string)
                .collect(),
        }
    }
}

fn campaign_result(r: CampaignResult) -> pb::CampaignResult {
    pb::CampaignResult {
        campaign_id: r.campaign_id,
        host_id: r.host_id.to_string(),
        rows: r.rows.into_iter().map(object).collect(),
        status: r.status,
        message: r.message,
        stats: Some(to_pb_struct(r.stats)),
        received_at: r.received_at,
    }
}

impl IntoPb for Vec<CampaignResult> {
    type Pb = pb::CampaignResults;
    fn into_pb(self) -> pb::CampaignResults {
        pb::CampaignResults {
            results: self.into_iter().map(campaign_result).collect(),
        }
    }
}

/// A campaign by id.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignRef {
    pub id: String,
}

impl Input for CampaignRef {
    type Pb = pb::CampaignRef;
    fn from_pb(r: pb::CampaignRef) -> Result<Self, ApiError> {
        Ok(CampaignRef { id: r.id })
    }
    fn target(&self) -> String {
        self.id.clone()
    }
}

/// A page of a newest-first list (campaigns, carves): how many items, and
/// after which.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListLimit {
    /// Most items (default 100, at most 1000).
    pub limit: Option<usize>,
    /// `created_at` of the last item of the previous page.
    pub before_at: Option<i64>,
    /// Its id (a campaign's `id`, a carve's `session_id`).
    pub before_id: Option<String>,
}

impl ListLimit {
    pub(crate) fn cursor(&self) -> Result<Option<(i64, String)>, ApiError> {
        super::before(self.before_at, self.before_id.clone())
    }
}

impl Input for ListLimit {
    type Pb = pb::ListRequest;
    fn from_pb(r: pb::ListRequest) -> Result<Self, ApiError> {
        Ok(ListLimit {
            limit: pb_limit(r.limit),
            before_at: r.before_at,
            before_id: r.before_id,
        })
    }
}

impl Admin {
    pub(crate) async fn campaign(&self, id: &str) -> Result<Campaign, ApiError> {
        self.store
            .get_campaign(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("campaign {id}")))
    }
}

/// A live query to run.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignRequest {
    pub sql: String,
    /// Hosts by id, hostname or host identifier.
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
    /// Bare names: each a label, or a host by hostname or host identifier
    /// (a name that could be either is refused, saying what it matches).
    #[serde(default)]
    pub names: Vec<String>,
}

impl Input for CampaignRequest {
    type Pb = pb::CreateCampaignRequest;
    fn from_pb(r: pb::CreateCampaignRequest) -> Result<Self, ApiError> {
        Ok(CampaignRequest {
            sql: r.sql,
            hosts: r.hosts,
            labels: r.labels,
            all: r.all,
            platforms: r.platforms,
            expires_in: r.expires_in,
            names: r.names,
        })
    }
    fn detail(&self) -> serde_json::Value {
        serde_json::json!({
            "sql": self.sql, "hosts": self.hosts, "labels": self.labels, "all": self.all,
            "platforms": self.platforms, "names": self.names, "expires_in": self.expires_in,
        })
    }
}

pub struct CreateCampaign;

impl Operation for CreateCampaign {
    const SPEC: Spec = Spec {
        id: "createCampaign",
        verb: Verb::Post,
        path: "/api/v1/campaigns",
        grpc: "CreateCampaign",
        summary: "Run a live query on hosts, labels or all",
        role: Operator,
        action: "campaign.create",
        audit: Audit::Calls,
        created: true,
    };
    type Req = CampaignRequest;
    type Resp = CampaignView;

    async fn run(a: &Admin, c: &Caller, req: CampaignRequest) -> Result<CampaignView, ApiError> {
        let by = c.name.as_str();
        let sql = req.sql.trim().to_owned();
        if sql.is_empty() {
            return Err(ApiError::BadRequest("sql must not be empty".into()));
        }
        if sql.len() > 100_000 {
            return Err(ApiError::BadRequest(
                "sql is longer than 100000 bytes".into(),
            ));
        }
        let spec = TargetSpec {
            hosts: req.hosts,
            labels: req.labels,
            all: req.all,
            platforms: req.platforms,
            names: req.names,
        };
        a.check_campaign_limits(by).await?;
        let ttl = req
            .expires_in
            .map_or(a.cfg.default_campaign_ttl, Duration::from_secs);
        if ttl < Duration::from_secs(1) || ttl > a.cfg.max_campaign_ttl {
            return Err(ApiError::Invalid {
                field: "expires_in",
                message: format!(
                    "expires_in must be between 1 and {} seconds",
                    a.cfg.max_campaign_ttl.as_secs()
                ),
            });
        }
        let resolved = a.resolve_targets(spec).await?;
        let targets = resolved.hosts;
        if targets.len() > a.cfg.max_campaign_targets {
            return Err(ApiError::BadRequest(format!(
                "campaign targets {} hosts, more than the limit of {}",
                targets.len(),
                a.cfg.max_campaign_targets
            )));
        }
        let now = a.now();
        let campaign = Campaign {
            id: uuid::Uuid::new_v4().simple().to_string(),
            sql,
            targets: Targets {
                hosts: resolved.wanted,
                labels: resolved.labels,
                all: resolved.all,
            },
            target_count: targets.len() as u64,
            created_at: now,
            expires_at: now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2),
            created_by: by.to_owned(),
            cancelled_at: None,
            cancelled_by: None,
        };
        let hosts: Vec<HostId> = targets.into_iter().collect();
        a.store.create_campaign(&campaign, &hosts).await?;
        for msg in campaign_messages(&campaign.id, &hosts, a.hosts.shards()) {
            if let Err(e) = publish(a.bus.as_ref(), &CAMPAIGN_CREATED, &msg).await {
                tracing::warn!(campaign = %campaign.id, error = %e, "campaign broadcast failed; hosts pick it up when their actors restart");
            }
        }
        tracing::info!(campaign = %campaign.id, targets = campaign.target_count, by, "campaign created");
        Ok(CampaignView {
            coverage: Coverage {
                targeted: campaign.target_count,
                queued: campaign.target_count,
                ..Default::default()
            },
            expired: false,
            campaign,
        })
    }

    /// The campaign the call made: its id becomes the row's target.
    fn audited(v: &CampaignView) -> Option<Audited> {
        Some(Audited {
            target: Some(v.campaign.id.clone()),
            detail: serde_json::Map::from_iter([
                ("campaign_id".to_owned(), v.campaign.id.clone().into()),
                ("target_count".to_owned(), v.campaign.target_count.into()),
            ]),
        })
    }
}

/// Whom a live query asks: hosts (by id, hostname or host identifier),
/// labels, platform families, bare names, or all. In a query string each
/// list is comma-separated (`labels=web,db`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    #[serde(default, deserialize_with = "super::comma_list")]
    #[schemars(with = "String")]
    pub hosts: Vec<String>,
    #[serde(default, deserialize_with = "super::comma_list")]
    #[schemars(with = "String")]
    pub labels: Vec<String>,
    #[serde(default)]
    pub all: bool,
    #[serde(default, deserialize_with = "super::comma_list")]
    #[schemars(with = "String")]
    pub platforms: Vec<String>,
    #[serde(default, deserialize_with = "super::comma_list")]
    #[schemars(with = "String")]
    pub names: Vec<String>,
}

impl Input for TargetSpec {
    type Pb = pb::CampaignTargets;
    fn from_pb(r: pb::CampaignTargets) -> Result<Self, ApiError> {
        Ok(TargetSpec {
            hosts: r.hosts,
            labels: r.labels,
            all: r.all,
            platforms: r.platforms,
            names: r.names,
        })
    }
}

/// Targets resolved to enrolled hosts.
struct Resolved {
    hosts: BTreeSet<HostId>,
    /// The hosts named one by one.
    wanted: Vec<HostId>,
    /// Labels named, with platforms as their `platform:` labels.
    labels: Vec<String>,
    all: bool,
}

impl Admin {
    /// The enrolled hosts `t` names; refused when it names none, or names
    /// something that is not there.
    async fn resolve_targets(&self, t: TargetSpec) -> Result<Resolved, ApiError> {
        if t.hosts.is_empty()
            && t.labels.is_empty()
            && t.platforms.is_empty()
            && t.names.is_empty()
            && !t.all
        {
            return Err(ApiError::BadRequest(
                "give targets: hosts, labels, platforms, names, or all: true".into(),
            ));
        }
        let TargetSpec {
            mut hosts,
            mut labels,
            all,
            platforms,
            names,
        } = t;
        for n in names {
            match self.label_or_host(&n).await? {
                Named::Label => labels.push(n),
                Named::Host(id) => hosts.push(id.to_string()),
            }
        }
        for p in platforms {
            if !["darwin", "linux", "windows", "freebsd"].contains(&p.as_str()) {
                return Err(ApiError::Invalid {
                    field: "platforms",
                    message: format!(
                        "platform {p:?} is not one of darwin, linux, windows, freebsd"
                    ),
                });
            }
            labels.push(format!("platform:{p}"));
        }
        let mut targets: BTreeSet<HostId> = BTreeSet::new();
        let mut wanted = Vec::new();
        for h in &hosts {
            let id = self.resolve_host(h).await.map_err(|e| match e {
                ApiError::NotFound(what) => ApiError::Invalid {
                    field: "hosts",
                    message: format!("{what} is not enrolled"),
                },
                other => other,
            })?;
            if self.store.get_host(&id).await?.is_none() {
                return Err(ApiError::Invalid {
                    field: "hosts",
                    message: format!("host {id} is not enrolled"),
                });
            }
            wanted.push(id.clone());
            targets.insert(id);
        }
        for l in &labels {
            validate_label(l).map_err(|e| ApiError::from(e.in_field("labels")))?;
        }
        let named: Vec<&str> = if all {
            vec!["all"]
        } else {
            labels.iter().map(String::as_str).collect()
        };
        for l in named {
            targets.extend(self.store.hosts_with_label(l).await?);
        }
        if targets.is_empty() {
            return Err(ApiError::BadRequest(
                "no enrolled host matches the targets".into(),
            ));
        }
        Ok(Resolved {
            hosts: targets,
            wanted,
            labels,
            all,
        })
    }
}

/// How many hosts targets name.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TargetCount {
    pub count: u64,
    /// The most hosts one campaign may target.
    pub limit: u64,
}

impl IntoPb for TargetCount {
    type Pb = pb::TargetCount;
    fn into_pb(self) -> pb::TargetCount {
        pb::TargetCount {
            count: self.count,
            limit: self.limit,
        }
    }
}

pub struct CountTargets;

impl Operation for CountTargets {
    const SPEC: Spec = Spec {
        id: "countTargets",
        verb: Verb::Get,
        path: "/api/v1/campaigns/targets",
        grpc: "CountTargets",
        summary: "How many enrolled hosts a live query's targets name (nothing is run)",
        role: Observer,
        action: "campaign.count_targets",
        audit: Audit::Refusals,
        created: false,
    };
    type Req = TargetSpec;
    type Resp = TargetCount;

    async fn run(a: &Admin, _: &Caller, t: TargetSpec) -> Result<TargetCount, ApiError> {
        let resolved = a.resolve_targets(t).await?;
        Ok(TargetCount {
            count: resolved.hosts.len() as u64,
            limit: a.cfg.max_campaign_targets as u64,
        })
    }
}

/// A host's live queries: a page of them, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostCampaignsRequest {
    /// Host id, hostname or host identifier.
    pub id: String,
    /// Most campaigns the host was asked in (default 20, at most 100).
    pub limit: Option<usize>,
    /// The previous page's `next_before_at`.
    pub before_at: Option<i64>,
    /// The previous page's `next_before_id`.
    pub before_id: Option<String>,
}

impl Input for HostCampaignsRequest {
    type Pb = pb::HostCampaignsRequest;
    fn from_pb(r: pb::HostCampaignsRequest) -> Result<Self, ApiError> {
        Ok(HostCampaignsRequest {
            id: r.id,
            limit: pb_limit(r.limit),
            before_at: r.before_at,
            before_id: r.before_id,
        })
    }
    fn target(&self) -> String {
        self.id.clone()
    }
}

/// One live query a host was asked.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HostCampaign {
    pub campaign: Campaign,
    /// The campaign has ended (expired or cancelled).
    pub expired: bool,
    pub delivery: Delivery,
    /// The host's answer, once it answered or failed.
    pub result: Option<CampaignResult>,
}

/// A page of a host's live queries.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HostCampaigns {
    pub items: Vec<HostCampaign>,
    /// Pass as `before_at` / `before_id` for older ones; absent when no
    /// older campaign is left.
    pub next_before_at: Option<i64>,
    pub next_before_id: Option<String>,
    /// Campaigns looked at for this page.
    pub scanned: u32,
}

impl IntoPb for HostCampaigns {
    type Pb = pb::HostCampaigns;
    fn into_pb(self) -> pb::HostCampaigns {
        pb::HostCampaigns {
            items: self
                .items
                .into_iter()
                .map(|i| {
                    let d = i.delivery;
                    pb::HostCampaign {
                        campaign: Some(
                            CampaignView {
                                expired: i.expired,
                                coverage: Coverage::default(),
                                campaign: i.campaign,
                            }
                            .into_pb(),
                        ),
                        delivery: Some(pb::HostDelivery {
                            host_id: d.host_id.to_string(),
                            hostname: String::new(),
                            state: label(d.state),
                            queued_at: d.queued_at,
                            delivered_at: d.delivered_at,
                            delivery_count: d.delivery_count,
                            finished_at: d.finished_at,
                        }),
                        result: i.result.map(campaign_result),
                    }
                })
                .collect(),
            next_before_at: self.next_before_at,
            next_before_id: self.next_before_id,
            scanned: self.scanned,
        }
    }
}

/// Campaigns looked at per page of a host's live queries: campaigns are
/// read newest first and the host's delivery looked up in each, so a page
/// costs at most this many point reads however large the fleet.
const HOST_CAMPAIGN_SCAN: usize = 500;

pub struct ListHostCampaigns;

impl Operation for ListHostCampaigns {
    const SPEC: Spec = Spec {
        id: "hostCampaigns",
        verb: Verb::Get,
        path: "/api/v1/hosts/{id}/campaigns",
        grpc: "HostCampaigns",
        summary: "What live queries asked one host, newest first, and its answers",
        role: Observer,
        action: "host.campaigns",
        audit: Audit::Refusals,
        created: false,
    };
    type Req = HostCampaignsRequest;
    type Resp = HostCampaigns;

    async fn run(
        a: &Admin,
        _: &Caller,
        r: HostCampaignsRequest,
    ) -> Result<HostCampaigns, ApiError> {
        let host = a.resolve_host(&r.id).await?;
        let limit = page_size(r.limit, 20, 100);
        let mut cursor = super::before(r.before_at, r.before_id)?;
        let now = a.now();
        let mut items = Vec::new();
        let mut scanned = 0usize;
        let mut exhausted = false;
        while items.len() < limit && scanned < HOST_CAMPAIGN_SCAN {
            let want = (HOST_CAMPAIGN_SCAN - scanned).min(100);
            let batch = a
                .store
                .list_campaigns(cursor.as_ref().map(|(at, id)| (*at, id.as_str())), want)
                .await?;
            if batch.len() < want {
                exhausted = true;
            }
            for c in batch {
                scanned += 1;
                cursor = Some((c.created_at, c.id.clone()));
                if let Some(mut d) = a.store.get_delivery(&c.id, &host).await? {
                    d.state = d.effective_state(c.expires_at, now);
                    let result = if d.state.is_final() {
                        a.store.get_result(&c.id, &host).await?
                    } else {
                        None
                    };
                    items.push(HostCampaign {
                        expired: c.is_expired(now),
                        campaign: c,
                        delivery: d,
                        result,
                    });
                    if items.len() == limit {
                        break;
                    }
                }
            }
            if exhausted {
                break;
            }
        }
        let more = !exhausted || items.len() == limit;
        let (next_before_at, next_before_id) = match cursor.filter(|_| more) {
            Some((at, id)) => (Some(at), Some(id)),
            None => (None, None),
        };
        Ok(HostCampaigns {
            items,
            next_before_at,
            next_before_id,
            scanned: u32::try_from(scanned).unwrap_or(u32::MAX),
        })
    }
}

/// What a bare target name is.
enum Named {
    Label,
    Host(HostId),
}

impl Admin {
    /// A bare target: a label some host has, or one host by id, hostname
    /// or host identifier. Both, neither, or several hosts: refused, with
    /// what the name matches.
    async fn label_or_host(&self, name: &str) -> Result<Named, ApiError> {
        let label_hosts = match validate_label(name) {
            Ok(()) => self.store.hosts_with_label(name).await?.len(),
            Err(_) => 0,
        };
        let host = match self.resolve_host(name).await {
            Ok(id) if self.store.get_host(&id).await?.is_some() => Some(id),
            Ok(_) | Err(ApiError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        match (label_hosts, host) {
            (0, Some(id)) => Ok(Named::Host(id)),
            (n, None) if n > 0 => Ok(Named::Label),
            (n, Some(id)) => Err(ApiError::BadRequest(format!(
                "{name:?} is both a label ({n} hosts) and host {id}: give labels: [{name:?}] or hosts: [\"{id}\"]"
            ))),
            (_, None) => Err(ApiError::BadRequest(format!(
                "{name:?} is neither a label any host has nor a host id, hostname or host identifier"
            ))),
        }
    }

    /// Refuses a new campaign while too many run, in all or for `by`.
    async fn check_campaign_limits(&self, by: &str) -> Result<(), ApiError> {
        let now = self.now();
        let window = self.cfg.max_active_campaigns.saturating_mul(4).max(100);
        let unexpired: Vec<Campaign> = self
            .store
            .list_campaigns(None, window)
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
                let cov = coverage(&self.store.list_deliveries(&c.id).await?, &c, now);
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
}

pub struct ListCampaigns;

impl Operation for ListCampaigns {
    const SPEC: Spec = Spec {
        id: "listCampaigns",
        verb: Verb::Get,
        path: "/api/v1/campaigns",
        grpc: "ListCampaigns",
        summary: "Live queries, newest first",
        role: Observer,
        action: "campaign.list",
        audit: Audit::Refusals,
        created: false,
    };
    type Req = ListLimit;
    type Resp = Vec<CampaignView>;

    async fn run(a: &Admin, _: &Caller, r: ListLimit) -> Result<Vec<CampaignView>, ApiError> {
        let now = a.now();
        let mut out = Vec::new();
        let cursor = r.cursor()?;
        for c in a
            .store
            .list_campaigns(
                cursor.as_ref().map(|(at, id)| (*at, id.as_str())),
                page_size(r.limit, 100, 1000),
            )
            .await?
        {
            let ds = a.store.list_deliveries(&c.id).await?;
            out.push(CampaignView {
                coverage: coverage(&ds, &c, now),
                expired: c.is_expired(now),
                campaign: c,
            });
        }
        Ok(out)
    }
}

pub struct CancelCampaign;

impl Operation for CancelCampaign {
    const SPEC: Spec = Spec {
        id: "cancelCampaign",
        verb: Verb::Delete,
        path: "/api/v1/campaigns/{id}",
        grpc: "CancelCampaign",
        summary: "Cancel a running campaign: hosts that have not answered are no longer asked (its creator or an admin)",
        role: Operator,
        action: "campaign.cancel",
        audit: Audit::Calls,
        created: false,
    };
    type Req = CampaignRef;
    type Resp = CampaignView;

    async fn run(a: &Admin, c: &Caller, r: CampaignRef) -> Result<CampaignView, ApiError> {
        let mut campaign = a.campaign(&r.id).await?;
        let now = a.now();
        if campaign.cancelled_at.is_none() {
            if c.role < gatehouse_core::model::Role::Admin && campaign.created_by != c.name {
                return Err(ApiError::Forbidden(format!(
                    "campaign {} was started by {}: only its creator or an admin may cancel it",
                    campaign.id, campaign.created_by
                )));
            }
            if campaign.is_expired(now) {
                return Err(ApiError::Conflict(format!(
                    "campaign {} has already ended (it expired)",
                    campaign.id
                )));
            }
            campaign.cancel(&c.name, now);
            if !a.store.update_campaign(&campaign).await? {
                return Err(ApiError::NotFound(format!("campaign {}", campaign.id)));
            }
            let msg = pb::CampaignCancelled {
                campaign_id: campaign.id.clone(),
                ended_at: now,
            };
            if let Err(e) = publish(a.bus.as_ref(), &CAMPAIGN_CANCELLED, &msg).await {
                // The hosts' actors read the campaign again when they
                // restart; until then a host may still be asked once.
                tracing::warn!(campaign = %campaign.id, error = %e, "cancellation broadcast failed");
            }
            tracing::info!(campaign = %campaign.id, by = %c.name, "campaign cancelled");
        }
        let cov = coverage(
            &a.store.list_deliveries(&campaign.id).await?,
            &campaign,
            now,
        );
        Ok(CampaignView {
            expired: true,
            coverage: cov,
            campaign,
        })
    }
}

pub struct GetCampaign;

impl Operation for GetCampaign {
    const SPEC: Spec = Spec {
        id: "getCampaign",
        verb: Verb::Get,
        path: "/api/v1/campaigns/{id}",
        grpc: "GetCampaign",
        summary: "Coverage, per-host delivery state, non-responders",
        role: Observer,
        action: "campaign.get",
        audit: Audit::Refusals,
        created: false,
    };
    type Req = CampaignRef;
    type Resp = CampaignDetail;

    async fn run(a: &Admin, _: &Caller, r: CampaignRef) -> Result<CampaignDetail, ApiError> {
        let c = a.campaign(&r.id).await?;
        let now = a.now();
        let ds = a.store.list_deliveries(&r.id).await?;
        let cov = coverage(&ds, &c, now);
        let mut hosts = Vec::with_capacity(ds.len());
        let mut non_responders = Vec::new();
        for mut d in ds {
            d.state = d.effective_state(c.expires_at, now);
            if !matches!(d.state, DeliveryState::Answered | DeliveryState::Failed) {
                non_responders.push(d.host_id.clone());
            }
            let hostname = a
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
                coverage: cov,
                campaign: c,
            },
            hosts,
            non_responders,
        })
    }
}

pub struct CampaignResults;

impl Operation for CampaignResults {
    const SPEC: Spec = Spec {
        id: "campaignResults",
        verb: Verb::Get,
        path: "/api/v1/campaigns/{id}/results",
        grpc: "CampaignResults",
        summary: "Answers per host",
        role: Observer,
        action: "campaign.results",
        audit: Audit::Refusals,
        created: false,
    };
    type Req = CampaignRef;
    type Resp = Vec<CampaignResult>;

    async fn run(a: &Admin, _: &Caller, r: CampaignRef) -> Result<Vec<CampaignResult>, ApiError> {
        a.campaign(&r.id).await?;
        Ok(a.store.list_results(&r.id).await?)
    }
}

/// A campaign's live events: Server-Sent Events over REST, a server stream
/// over gRPC.
pub struct CampaignWatch(mpsc::Receiver<CampaignEvent>);

fn event_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<CampaignEvent>()
}

impl IntoPb for CampaignEvent {
    type Pb = pb::CampaignEvent;
    fn into_pb(self) -> pb::CampaignEvent {
        use pb::campaign_event::Event;
        let event = match self {
            CampaignEvent::Result { result } => Event::Result(campaign_result(result)),
            CampaignEvent::Progress { coverage: c } => Event::Progress(c.into_pb()),
            CampaignEvent::Done {
                coverage: c,
                expired,
                non_responders,
            } => Event::Done(pb::CampaignDone {
                coverage: Some(c.into_pb()),
                expired,
                non_responders: non_responders.into_iter().map(|h| h.to_string()).collect(),
            }),
        };
        pb::CampaignEvent { event: Some(event) }
    }
}

impl Reply for CampaignWatch {
    type Pb = pb::CampaignEvent;
    const STREAMS: bool = true;
    fn answer() -> Answer {
        Answer::Events(event_schema)
    }
    fn into_rest(self, _: StatusCode) -> Response {
        use axum::response::sse::{Event, KeepAlive, Sse};
        let events = futures_util::stream::unfold(self.0, |mut rx| async move {
            let ev = rx.recv().await?;
            let e = Event::default()
                .event(ev.kind())
                .json_data(&ev)
                .unwrap_or_else(|_| Event::default().event("error"));
            Some((Ok::<_, std::convert::Infallible>(e), rx))
        });
        Sse::new(events)
            .keep_alive(KeepAlive::default())
            .into_response()
    }
    fn into_grpc(self) -> GrpcReply<pb::CampaignEvent> {
        let events = futures_util::stream::unfold(self.0, |mut rx| async move {
            let e = rx.recv().await?;
            Some((Ok(e.into_pb()), rx))
        });
        GrpcReply::Stream(Box::pin(events))
    }
}

pub struct WatchCampaign;

impl Operation for WatchCampaign {
    const SPEC: Spec = Spec {
        id: "watchCampaign",
        verb: Verb::Get,
        path: "/api/v1/campaigns/{id}/events",
        grpc: "WatchCampaign",
        summary: "Answers as they arrive, progress, and a last `done` event with the hosts that never answered",
        role: Observer,
        action: "campaign.watch",
        audit: Audit::Refusals,
        created: false,
    };
    type Req = CampaignRef;
    type Resp = CampaignWatch;

    async fn run(a: &Admin, _: &Caller, r: CampaignRef) -> Result<CampaignWatch, ApiError> {
        Ok(CampaignWatch(a.watch_campaign(&r.id).await?))
    }
}
