//! gRPC over [`AdminService`] (`gatehouse.v1.Admin`, see
//! `proto/gatehouse/v1/admin.proto`): the same operations, validation and
//! errors as REST, served on the API listener beside it (HTTP/2, selected
//! by ALPN over TLS). Bearer-token auth from the `authorization` metadata;
//! errors map once from [`ApiError`] to gRPC status codes.
//!
//! Agent JSON (host details, result rows, options) crosses as
//! `google.protobuf.Struct`; the conversions below are lossless for every
//! JSON value osquery produces (numbers become doubles, as in any Struct).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use gatehouse_core::HostId;
use gatehouse_core::model::{
    ApiToken, CampaignResult, CarveSession, Decorators, EnrollSecret, LabelConfig, LabelQuery,
    Query, ResultFilter, ResultLog, Role, Schedule, StatusLog, User,
};
use gatehouse_core::nodekey::secret_matches;
use gatehouse_proto::v1 as pb;
use gatehouse_proto::v1::admin_server::{Admin as AdminRpc, AdminServer};
use prost_types::value::Kind;
use serde_json::{Map, Value};
use tonic::{Request, Response, Status};

use crate::ApiError;
use crate::service::{
    AdminService, Caller, CampaignDetail, CampaignEvent, CampaignRequest, CampaignView, Coverage,
    EnrollSecretRequest, HostFilter, HostView, KeyChange, TokenRequest, UserRequest, UserUpdate,
};

/// Largest chunk of a carve block sent in one message.
const CHUNK: usize = 1024 * 1024;

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let m = e.to_string();
        match e {
            ApiError::BadRequest(_) => Status::invalid_argument(m),
            ApiError::Unprocessable(_) => Status::failed_precondition(m),
            ApiError::NotFound(_) => Status::not_found(m),
            ApiError::Unauthorized => Status::unauthenticated(m),
            ApiError::Forbidden(_) => Status::permission_denied(m),
            ApiError::Conflict(_) => Status::already_exists(m),
            ApiError::TooMany(_) => Status::resource_exhausted(m),
            ApiError::Upstream(_) => Status::unavailable(m),
            ApiError::Unavailable(_) => {
                tracing::warn!(error = %m, "grpc request failed");
                Status::unavailable(m)
            }
        }
    }
}

/// The `gatehouse.v1.Admin` service; each call authenticates its bearer
/// token through [`AdminService::authenticate`] (the same callers, roles
/// and audit log as REST).
pub fn routes(svc: Arc<dyn AdminService>) -> tonic::service::Routes {
    tonic::service::Routes::new(AdminServer::new(AdminGrpc { svc }))
}

/// Accepts any of `tokens` (constant-time comparison): the control
/// services' check.
pub fn token_check(tokens: Vec<String>) -> gatehouse_runtime::grpc::TokenCheck {
    Arc::new(move |t| tokens.iter().any(|k| secret_matches(t, k)))
}

/// [`AdminService`] as a tonic service.
pub struct AdminGrpc {
    svc: Arc<dyn AdminService>,
}

impl AdminGrpc {
    /// The caller of `r`, from its `authorization: Bearer` metadata.
    async fn caller<T>(&self, r: &Request<T>) -> Result<Caller, Status> {
        let token = r
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        Ok(self.svc.authenticate(token).await?)
    }
}

// ---- JSON <-> protobuf Struct ----

pub fn to_pb_value(v: Value) -> prost_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(to_pb_value).collect(),
        }),
        Value::Object(o) => Kind::StructValue(to_pb_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

pub fn to_pb_struct(m: Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: m.into_iter().map(|(k, v)| (k, to_pb_value(v))).collect(),
    }
}

pub fn from_pb_value(v: prost_types::Value) -> Value {
    match v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::NumberValue(n)) => {
            // Whole numbers come back as integers (osquery's counters).
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                Value::from(n as i64)
            } else {
                serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
            }
        }
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(from_pb_value).collect()),
        Some(Kind::StructValue(s)) => Value::Object(from_pb_struct(s)),
    }
}

pub fn from_pb_struct(s: prost_types::Struct) -> Map<String, Value> {
    s.fields
        .into_iter()
        .map(|(k, v)| (k, from_pb_value(v)))
        .collect()
}

fn object(v: Value) -> prost_types::Struct {
    match v {
        Value::Object(m) => to_pb_struct(m),
        other => to_pb_struct(Map::from_iter([("value".to_owned(), other)])),
    }
}

fn label(v: impl serde::Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

/// A newest-first page cursor: both parts or neither.
fn cursor(at: Option<i64>, id: Option<String>) -> Result<Option<(i64, String)>, Status> {
    match (at, id) {
        (Some(at), Some(id)) => Ok(Some((at, id))),
        (None, None) => Ok(None),
        _ => Err(Status::invalid_argument(
            "give before_at and before_id together (the last item of the previous page)",
        )),
    }
}

fn limit(n: u32, default: usize) -> usize {
    if n == 0 { default } else { n as usize }
}

// ---- domain -> protobuf ----

fn host_view(v: HostView) -> pb::HostView {
    let h = v.host;
    pb::HostView {
        id: h.id.to_string(),
        identity: h.identity,
        host_identifier: h.host_identifier,
        hostname: h.hostname,
        platform: h.platform,
        platform_type: h.platform_type,
        os_name: h.os_name,
        os_version: h.os_version,
        osquery_version: h.osquery_version,
        details: Some(to_pb_struct(h.details)),
        labels: h.labels,
        label_set: v.label_set,
        enrolled_at: h.enrolled_at,
        last_enrolled_at: h.last_enrolled_at,
        enroll_count: h.enroll_count,
        key_epoch: h.key_epoch,
        key_revoked: h.key_revoked,
        last_seen: h.last_seen,
        last_ip: h.last_ip,
        config_hash: h.config_hash,
        config_generation: h.config_generation,
        online: v.online,
    }
}

fn key_change(k: KeyChange) -> pb::KeyChange {
    pb::KeyChange {
        host_id: k.host_id.to_string(),
        epoch: k.epoch,
        revoked: k.revoked,
    }
}

fn status_log(l: StatusLog) -> pb::StatusLog {
    pb::StatusLog {
        host_id: l.host_id.to_string(),
        unix_time: l.unix_time,
        severity: l.severity,
        message: l.message,
        line_id: l.line_id,
        received_at: l.received_at,
        line: Some(object(l.line)),
    }
}

fn query(q: Query) -> pb::Query {
    pb::Query {
        name: q.name,
        sql: q.sql,
        description: q.description,
        updated_at: q.updated_at,
    }
}

fn schedule(s: Schedule) -> pb::Schedule {
    pb::Schedule {
        name: s.name,
        query: s.query,
        interval: s.interval,
        snapshot: s.snapshot,
        removed: s.removed,
        platform: s.platform,
        version: s.version,
        shard: s.shard.map(u32::from),
        pack: s.pack,
        labels: s.labels,
        updated_at: s.updated_at,
    }
}

fn string_lists(m: BTreeMap<String, Vec<String>>) -> BTreeMap<String, pb::StringList> {
    m.into_iter()
        .map(|(k, values)| (k, pb::StringList { values }))
        .collect()
}

fn from_string_lists(m: BTreeMap<String, pb::StringList>) -> BTreeMap<String, Vec<String>> {
    m.into_iter().map(|(k, l)| (k, l.values)).collect()
}

fn label_config(c: LabelConfig) -> pb::LabelConfig {
    pb::LabelConfig {
        label: c.label,
        options: Some(to_pb_struct(c.options)),
        decorators: Some(pb::Decorators {
            load: c.decorators.load,
            always: c.decorators.always,
            interval: string_lists(c.decorators.interval),
        }),
        file_paths: string_lists(c.file_paths),
        updated_at: c.updated_at,
    }
}

fn result_log(r: ResultLog) -> pb::ResultLog {
    pb::ResultLog {
        host_id: r.host_id.to_string(),
        name: r.name,
        unix_time: r.unix_time,
        kind: label(r.kind),
        action: r.action,
        rows: r.rows,
        line_id: r.line_id,
        received_at: r.received_at,
        line: Some(object(r.line)),
    }
}

fn campaign_view(v: CampaignView) -> pb::CampaignView {
    let c = v.campaign;
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
        expired: v.expired,
        coverage: Some(coverage(v.coverage)),
    }
}

fn label_query(q: LabelQuery) -> pb::LabelQuery {
    pb::LabelQuery {
        label: q.label,
        sql: q.sql,
        interval: q.interval,
        platforms: q.platforms,
        description: q.description,
        updated_at: q.updated_at,
    }
}

fn coverage(c: Coverage) -> pb::Coverage {
    pb::Coverage {
        targeted: c.targeted,
        queued: c.queued,
        delivered: c.delivered,
        answered: c.answered,
        failed: c.failed,
        expired: c.expired,
    }
}

fn campaign_event(e: CampaignEvent) -> pb::CampaignEvent {
    use pb::campaign_event::Event;
    let event = match e {
        CampaignEvent::Result { result } => Event::Result(campaign_result(result)),
        CampaignEvent::Progress { coverage: c } => Event::Progress(coverage(c)),
        CampaignEvent::Done {
            coverage: c,
            expired,
            non_responders,
        } => Event::Done(pb::CampaignDone {
            coverage: Some(coverage(c)),
            expired,
            non_responders: non_responders.into_iter().map(|h| h.to_string()).collect(),
        }),
    };
    pb::CampaignEvent { event: Some(event) }
}

fn campaign_detail(d: CampaignDetail) -> pb::CampaignDetail {
    pb::CampaignDetail {
        campaign: Some(campaign_view(d.view)),
        hosts: d
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
        non_responders: d.non_responders.iter().map(ToString::to_string).collect(),
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

fn carve(c: CarveSession) -> pb::Carve {
    pb::Carve {
        session_id: c.session_id,
        host_id: c.host_id.to_string(),
        carve_id: c.carve_id,
        request_id: c.request_id,
        block_count: c.block_count,
        block_size: c.block_size,
        carve_size: c.carve_size,
        blocks_received: c.blocks_received,
        state: label(c.state),
        created_at: c.created_at,
        completed_at: c.completed_at,
        sha256: c.sha256,
        format: c.format,
    }
}

fn role(s: &str) -> Result<Role, Status> {
    Role::parse(s).ok_or_else(|| {
        Status::invalid_argument(format!("role {s:?}: expected observer, operator or admin"))
    })
}

fn user(u: User) -> pb::User {
    pb::User {
        name: u.name,
        role: u.role.as_str().to_owned(),
        created_at: u.created_at,
        created_by: u.created_by,
        disabled: u.disabled,
        updated_at: u.updated_at,
    }
}

fn enroll_secret(s: EnrollSecret) -> pb::EnrollSecret {
    pb::EnrollSecret {
        id: s.id,
        labels: s.labels,
        created_at: s.created_at,
        created_by: s.created_by,
        expires_at: s.expires_at,
        revoked: s.revoked,
    }
}

fn token(t: ApiToken) -> pb::Token {
    pb::Token {
        id: t.id,
        user: t.user,
        description: t.description,
        created_at: t.created_at,
        created_by: t.created_by,
        expires_at: t.expires_at,
        revoked: t.revoked,
    }
}

fn host_id(s: &str) -> Result<HostId, Status> {
    HostId::parse(s).ok_or_else(|| {
        Status::invalid_argument(format!("{s:?} is not a host id (32 hex characters)"))
    })
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::Chunk, Status>> + Send>>;

#[tonic::async_trait]
impl AdminRpc for AdminGrpc {
    async fn list_hosts(
        &self,
        r: Request<pb::ListHostsRequest>,
    ) -> Result<Response<pb::ListHostsResponse>, Status> {
        let c = self.caller(&r).await?;
        let r = r.into_inner();
        let page = self
            .svc
            .list_hosts(
                &c,
                HostFilter {
                    label: r.label,
                    platform: r.platform,
                    online: r.online,
                    seen_after: r.seen_after,
                    seen_before: r.seen_before,
                    search: r.search,
                    after: r.after,
                    limit: (r.limit > 0).then_some(r.limit as usize),
                },
            )
            .await?;
        Ok(Response::new(pb::ListHostsResponse {
            hosts: page.items.into_iter().map(host_view).collect(),
            next: page.next,
        }))
    }

    async fn delete_host(&self, r: Request<pb::HostRef>) -> Result<Response<pb::Empty>, Status> {
        let c = self.caller(&r).await?;
        self.svc.delete_host(&c, &r.into_inner().id).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn get_host(&self, r: Request<pb::HostRef>) -> Result<Response<pb::HostView>, Status> {
        let c = self.caller(&r).await?;
        let v = self.svc.get_host(&c, &r.into_inner().id).await?;
        Ok(Response::new(host_view(v)))
    }

    async fn set_host_labels(
        &self,
        r: Request<pb::SetHostLabelsRequest>,
    ) -> Result<Response<pb::HostView>, Status> {
        let c = self.caller(&r).await?;
        let r = r.into_inner();
        let v = self.svc.set_host_labels(&c, &r.id, r.labels).await?;
        Ok(Response::new(host_view(v)))
    }

    async fn rotate_key(
        &self,
        r: Request<pb::RotateKeyRequest>,
    ) -> Result<Response<pb::KeyChange>, Status> {
        let c = self.caller(&r).await?;
        let r = r.into_inner();
        let k = self.svc.rotate_key(&c, &r.id, r.revoke).await?;
        Ok(Response::new(key_change(k)))
    }

    async fn host_config(
        &self,
        r: Request<pb::HostRef>,
    ) -> Result<Response<prost_types::Struct>, Status> {
        let c = self.caller(&r).await?;
        let c = self.svc.host_config(&c, &r.into_inner().id).await?;
        Ok(Response::new(object(c)))
    }

    async fn host_status_logs(
        &self,
        r: Request<pb::HostLogsRequest>,
    ) -> Result<Response<pb::StatusLogs>, Status> {
        let c = self.caller(&r).await?;
        let r = r.into_inner();
        let until = if r.until == 0 { i64::MAX } else { r.until };
        let logs = self
            .svc
            .host_status_logs(&c, &r.id, r.since, until, limit(r.limit, 1000))
            .await?;
        Ok(Response::new(pb::StatusLogs {
            logs: logs.into_iter().map(status_log).collect(),
        }))
    }

    async fn put_query(&self, r: Request<pb::Query>) -> Result<Response<pb::Query>, Status> {
        let c = self.caller(&r).await?;
        let q = r.into_inner();
        let saved = self
            .svc
            .put_query(
                &c,
                Query {
                    name: q.name,
                    sql: q.sql,
                    description: q.description,
                    updated_at: 0,
                },
            )
            .await?;
        Ok(Response::new(query(saved)))
    }

    async fn list_queries(&self, r: Request<pb::Empty>) -> Result<Response<pb::Queries>, Status> {
        let c = self.caller(&r).await?;
        let qs = self.svc.list_queries(&c).await?;
        Ok(Response::new(pb::Queries {
            queries: qs.into_iter().map(query).collect(),
        }))
    }

    async fn delete_query(&self, r: Request<pb::NameRef>) -> Result<Response<pb::Empty>, Status> {
        let c = self.caller(&r).await?;
        self.svc.delete_query(&c, &r.into_inner().name).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn put_schedule(
        &self,
        r: Request<pb::Schedule>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let c = self.caller(&r).await?;
        let s = r.into_inner();
        let shard = match s.shard {
            Some(p) => Some(u8::try_from(p).map_err(|_| {
                Status::invalid_argument(format!("shard {p} is not a percentage (1-100)"))
            })?),
            None => None,
        };
        let saved = self
            .svc
            .put_schedule(
                &c,
                Schedule {
                    name: s.name,
                    query: s.query,
                    interval: s.interval,
                    snapshot: s.snapshot,
                    removed: s.removed,
                    platform: s.platform,
                    version: s.version,
                    shard,
                    pack: s.pack,
                    labels: s.labels,
                    updated_at: 0,
                },
            )
            .await?;
        Ok(Response::new(schedule(saved)))
    }

    async fn list_schedules(
        &self,
        r: Request<pb::Empty>,
    ) -> Result<Response<pb::Schedules>, Status> {
        let c = self.caller(&r).await?;
        let s = self.svc.list_schedules(&c).await?;
        Ok(Response::new(pb::Schedules {
            schedules: s.into_iter().map(schedule).collect(),
        }))
    }

    async fn delete_schedule(
        &self,
        r: Request<pb::NameRef>,
    ) -> Result<Response<pb::Empty>, Status> {
        let c = self.caller(&r).await?;
        self.svc.delete_schedule(&c, &r.into_inner().name).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn put_label_config(
        &self,
        r: Request<pb::LabelConfig>,
    ) -> Result<Response<pb::LabelConfig>, Status> {
        let c = self.caller(&r).await?;
        let l = r.into_inner();
        let d = l.decorators.unwrap_or_default();
        let saved = self
            .svc
            .put_label_config(
                &c,
                LabelConfig {
                    label: l.label,
                    options: l.options.map(from_pb_struct).unwrap_or_default(),
                    decorators: Decorators {
                        load: d.load,
                        always: d.always,
                        interval: from_string_lists(d.interval),
                    },
                    file_paths: from_string_lists(l.file_paths),
                    updated_at: 0,
                },
            )
            .await?;
        Ok(Response::new(label_config(saved)))
    }

    async fn list_label_configs(
        &self,
        r: Request<pb::Empty>,
    ) -> Result<Response<pb::LabelConfigs>, Status> {
        let c = self.caller(&r).await?;
        let c = self.svc.list_label_configs(&c).await?;
        Ok(Response::new(pb::LabelConfigs {
            configs: c.into_iter().map(label_config).collect(),
        }))
    }

    async fn delete_label_config(
        &self,
        r: Request<pb::NameRef>,
    ) -> Result<Response<pb::Empty>, Status> {
        let c = self.caller(&r).await?;
        self.svc
            .delete_label_config(&c, &r.into_inner().name)
            .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn put_label_query(
        &self,
        r: Request<pb::LabelQuery>,
    ) -> Result<Response<pb::LabelQuery>, Status> {
        let c = self.caller(&r).await?;
        let q = r.into_inner();
        let saved = self
            .svc
            .put_label_query(
                &c,
                LabelQuery {
                    label: q.label,
                    sql: q.sql,
                    interval: if q.interval == 0 { 3600 } else { q.interval },
                    platforms: q.platforms,
                    description: q.description,
                    updated_at: 0,
                },
            )
            .await?;
        Ok(Response::new(label_query(saved)))
    }

    async fn list_label_queries(
        &self,
        r: Request<pb::Empty>,
    ) -> Result<Response<pb::LabelQueries>, Status> {
        let c = self.caller(&r).await?;
        let qs = self.svc.list_label_queries(&c).await?;
        Ok(Response::new(pb::LabelQueries {
            label_queries: qs.into_iter().map(label_query).collect(),
        }))
    }

    async fn delete_label_query(
        &self,
        r: Request<pb::NameRef>,
    ) -> Result<Response<pb::Empty>, Status> {
        let c = self.caller(&r).await?;
        self.svc
            .delete_label_query(&c, &r.into_inner().name)
            .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn search_results(
        &self,
        r: Request<pb::ResultSearch>,
    ) -> Result<Response<pb::ResultLogs>, Status> {
        let c = self.caller(&r).await?;
        let r = r.into_inner();
        let host_id = r.host_id.as_deref().map(host_id).transpose()?;
        let logs = self
            .svc
            .search_results(
                &c,
                ResultFilter {
                    host_id,
                    name: r.name,
                    since: r.since,
                    until: r.until,
                    limit: r.limit as usize,
                },
            )
            .await?;
        Ok(Response::new(pb::ResultLogs {
            logs: logs.into_iter().map(result_log).collect(),
        }))
    }

    async fn create_campaign(
        &self,
        r: Request<pb::CreateCampaignRequest>,
    ) -> Result<Response<pb::CampaignView>, Status> {
        let c = self.caller(&r).await?;
        let r = r.into_inner();
        let v = self
            .svc
            .create_campaign(
                &c,
                CampaignRequest {
                    sql: r.sql,
                    hosts: r.hosts,
                    labels: r.labels,
                    all: r.all,
                    platforms: r.platforms,
                    expires_in: r.expires_in,
                },
            )
            .await?;
        Ok(Response::new(campaign_view(v)))
    }

    async fn list_campaigns(
        &self,
        r: Request<pb::ListRequest>,
    ) -> Result<Response<pb::Campaigns>, Status> {
        let c = self.caller(&r).await?;
        let c = self
            .svc
            .list_campaigns(&c, limit(r.into_inner().limit, 100))
            .await?;
        Ok(Response::new(pb::Campaigns {
            campaigns: c.into_iter().map(campaign_view).collect(),
        }))
    }

    async fn get_campaign(
        &self,
        r: Request<pb::CampaignRef>,
    ) -> Result<Response<pb::CampaignDetail>, Status> {
        let c = self.caller(&r).await?;
        let d = self.svc.get_campaign(&c, &r.into_inner().id).await?;
        Ok(Response::new(campaign_detail(d)))
    }

    async fn campaign_results(
        &self,
        r: Request<pb::CampaignRef>,
    ) -> Result<Response<pb::CampaignResults>, Status> {
        let c = self.caller(&r).await?;
        let rs = self.svc.campaign_results(&c, &r.into_inner().id).await?;
        Ok(Response::new(pb::CampaignResults {
            results: rs.into_iter().map(campaign_result).collect(),
        }))
    }

    async fn list_carves(
        &self,
        r: Request<pb::ListRequest>,
    ) -> Result<Response<pb::Carves>, Status> {
        let c = self.caller(&r).await?;
        let c = self
            .svc
            .list_carves(&c, limit(r.into_inner().limit, 100))
            .await?;
        Ok(Response::new(pb::Carves {
            carves: c.into_iter().map(carve).collect(),
        }))
    }

    async fn get_carve(&self, r: Request<pb::CarveRef>) -> Result<Response<pb::Carve>, Status> {
        let c = self.caller(&r).await?;
        let c = self.svc.get_carve(&c, &r.into_inner().id).await?;
        Ok(Response::new(carve(c)))
    }

    type WatchCampaignStream =
        Pin<Box<dyn Stream<Item = Result<pb::CampaignEvent, Status>> + Send>>;

    async fn watch_campaign(
        &self,
        r: Request<pb::CampaignRef>,
    ) -> Result<Response<Self::WatchCampaignStream>, Status> {
        let c = self.caller(&r).await?;
        let rx = self.svc.watch_campaign(&c, &r.into_inner().id).await?;
        let events = futures_util::stream::unfold(rx, |mut rx| async move {
            let e = rx.recv().await?;
            Some((Ok(campaign_event(e)), rx))
        });
        Ok(Response::new(Box::pin(events)))
    }

    type CarveBlockStream = ChunkStream;

    async fn carve_block(
        &self,
        r: Request<pb::CarveBlockRequest>,
    ) -> Result<Response<Self::CarveBlockStream>, Status> {
        let c = self.caller(&r).await?;
        let r = r.into_inner();
        let block: Bytes = self.svc.carve_block(&c, &r.id, r.block).await?;
        let chunks: Vec<Result<pb::Chunk, Status>> = (0..block.len().div_ceil(CHUNK).max(1))
            .map(|i| {
                let end = ((i + 1) * CHUNK).min(block.len());
                Ok(pb::Chunk {
                    data: block.slice(i * CHUNK..end),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures_util::stream::iter(chunks))))
    }

    async fn whoami(&self, r: Request<pb::Empty>) -> Result<Response<pb::Principal>, Status> {
        let c = self.caller(&r).await?;
        Ok(Response::new(pb::Principal {
            name: c.name,
            role: c.role.as_str().to_owned(),
        }))
    }

    async fn create_user(
        &self,
        r: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let c = self.caller(&r).await?;
        let r = r.into_inner();
        let u = self
            .svc
            .create_user(
                &c,
                UserRequest {
                    name: r.name,
                    role: role(&r.role)?,
                },
            )
            .await?;
        Ok(Response::new(user(u)))
    }

    async fn update_user(
        &self,
        r: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let c = self.caller(&r).await?;
        let r = r.into_inner();
        let update = UserUpdate {
            role: r.role.as_deref().map(role).transpose()?,
            disabled: r.disabled,
        };
        let u = self.svc.update_user(&c, &r.name, update).await?;
        Ok(Response::new(user(u)))
    }

    async fn list_users(&self, r: Request<pb::Empty>) -> Result<Response<pb::Users>, Status> {
        let c = self.caller(&r).await?;
        let users = self.svc.list_users(&c).await?;
        Ok(Response::new(pb::Users {
            users: users.into_iter().map(user).collect(),
        }))
    }

    async fn create_token(
        &self,
        r: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::NewToken>, Status> {
        let c = self.caller(&r).await?;
        let r = r.into_inner();
        let t = self
            .svc
            .create_token(
                &c,
                &r.user,
                TokenRequest {
                    description: r.description,
                    expires_in: r.expires_in,
                },
            )
            .await?;
        Ok(Response::new(pb::NewToken {
            token: Some(token(t.token)),
            secret: t.secret,
        }))
    }

    async fn list_tokens(&self, r: Request<pb::Empty>) -> Result<Response<pb::Tokens>, Status> {
        let c = self.caller(&r).await?;
        let t = self.svc.list_tokens(&c).await?;
        Ok(Response::new(pb::Tokens {
            tokens: t.into_iter().map(token).collect(),
        }))
    }

    async fn revoke_token(&self, r: Request<pb::TokenRef>) -> Result<Response<pb::Token>, Status> {
        let c = self.caller(&r).await?;
        let t = self.svc.revoke_token(&c, &r.into_inner().id).await?;
        Ok(Response::new(token(t)))
    }

    async fn list_audit(
        &self,
        r: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::AuditEvents>, Status> {
        let c = self.caller(&r).await?;
        let r = r.into_inner();
        let before = cursor(r.before_at, r.before_id)?;
        let events = self.svc.list_audit(&c, before, limit(r.limit, 100)).await?;
        Ok(Response::new(pb::AuditEvents {
            events: events
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
        }))
    }

    async fn put_rule(&self, r: Request<pb::Rule>) -> Result<Response<pb::Rule>, Status> {
        let c = self.caller(&r).await?;
        let rule = crate::grpc_rules::rule_from_pb(r.into_inner())?;
        let saved = self.svc.put_rule(&c, rule).await?;
        Ok(Response::new(crate::grpc_rules::rule_to_pb(saved)))
    }

    async fn list_rules(&self, r: Request<pb::Empty>) -> Result<Response<pb::Rules>, Status> {
        let c = self.caller(&r).await?;
        let rules = self.svc.list_rules(&c).await?;
        Ok(Response::new(pb::Rules {
            rules: rules
                .into_iter()
                .map(crate::grpc_rules::rule_to_pb)
                .collect(),
        }))
    }

    async fn delete_rule(&self, r: Request<pb::NameRef>) -> Result<Response<pb::Empty>, Status> {
        let c = self.caller(&r).await?;
        self.svc.delete_rule(&c, &r.into_inner().name).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn list_alerts(
        &self,
        r: Request<pb::ListAlertsRequest>,
    ) -> Result<Response<pb::Alerts>, Status> {
        let c = self.caller(&r).await?;
        let r = r.into_inner();
        let before = cursor(r.before_at, r.before_id)?;
        let alerts = self
            .svc
            .list_alerts(&c, before, limit(r.limit, 100))
            .await?;
        Ok(Response::new(pb::Alerts {
            alerts: alerts
                .into_iter()
                .map(crate::grpc_rules::alert_to_pb)
                .collect(),
        }))
    }

    async fn list_dead_letters(
        &self,
        r: Request<pb::Empty>,
    ) -> Result<Response<pb::DeadLetters>, Status> {
        let c = self.caller(&r).await?;
        let d = self.svc.list_dead_letters(&c).await?;
        Ok(Response::new(pb::DeadLetters {
            dead_letters: d
                .into_iter()
                .map(crate::grpc_rules::dead_letter_to_pb)
                .collect(),
        }))
    }

    async fn redrive_dead_letter(
        &self,
        r: Request<pb::NameRef>,
    ) -> Result<Response<pb::Alert>, Status> {
        let c = self.caller(&r).await?;
        let a = self
            .svc
            .redrive_dead_letter(&c, &r.into_inner().name)
            .await?;
        Ok(Response::new(crate::grpc_rules::alert_to_pb(a)))
    }

    async fn delete_dead_letter(
        &self,
        r: Request<pb::NameRef>,
    ) -> Result<Response<pb::Empty>, Status> {
        let c = self.caller(&r).await?;
        self.svc
            .delete_dead_letter(&c, &r.into_inner().name)
            .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn create_enroll_secret(
        &self,
        r: Request<pb::CreateEnrollSecretRequest>,
    ) -> Result<Response<pb::NewEnrollSecret>, Status> {
        let c = self.caller(&r).await?;
        let r = r.into_inner();
        let n = self
            .svc
            .create_enroll_secret(
                &c,
                EnrollSecretRequest {
                    id: r.id,
                    labels: r.labels,
                    expires_in: r.expires_in,
                    secret: r.secret,
                },
            )
            .await?;
        Ok(Response::new(pb::NewEnrollSecret {
            enroll_secret: Some(enroll_secret(n.enroll_secret)),
            secret: n.secret,
        }))
    }

    async fn list_enroll_secrets(
        &self,
        r: Request<pb::Empty>,
    ) -> Result<Response<pb::EnrollSecrets>, Status> {
        let c = self.caller(&r).await?;
        let s = self.svc.list_enroll_secrets(&c).await?;
        Ok(Response::new(pb::EnrollSecrets {
            secrets: s.into_iter().map(enroll_secret).collect(),
        }))
    }

    async fn revoke_enroll_secret(
        &self,
        r: Request<pb::NameRef>,
    ) -> Result<Response<pb::EnrollSecret>, Status> {
        let c = self.caller(&r).await?;
        let s = self
            .svc
            .revoke_enroll_secret(&c, &r.into_inner().name)
            .await?;
        Ok(Response::new(enroll_secret(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_survives_a_round_trip_through_struct() {
        let v = json!({
            "name": "osqueryd", "pid": 4242, "ratio": 0.25, "ok": true,
            "none": null, "list": [1, "two", {"three": 3}], "neg": -7
        });
        let Value::Object(m) = v.clone() else {
            panic!("not an object")
        };
        assert_eq!(Value::Object(from_pb_struct(to_pb_struct(m))), v);
    }

    #[test]
    fn errors_map_to_grpc_codes() {
        let code = |e: ApiError| Status::from(e).code();
        assert_eq!(
            code(ApiError::BadRequest("x".into())),
            tonic::Code::InvalidArgument
        );
        assert_eq!(code(ApiError::NotFound("x".into())), tonic::Code::NotFound);
        assert_eq!(code(ApiError::Unauthorized), tonic::Code::Unauthenticated);
        assert_eq!(
            code(ApiError::Unavailable("x".into())),
            tonic::Code::Unavailable
        );
        assert_eq!(
            code(ApiError::Unprocessable("x".into())),
            tonic::Code::FailedPrecondition
        );
    }
}
