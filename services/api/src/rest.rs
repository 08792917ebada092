//! REST over [`AdminService`]: JSON in and out, bearer-token auth, errors as
//! `{"error": "..."}` with a 4xx/5xx status. Request bodies are parsed by
//! hand so a malformed body gets a message naming what is wrong.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path, Query as Q, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::routing::get;
use bytes::Bytes;
use gatehouse_core::model::{
    ApiToken, AuditEvent, CampaignResult, CarveSession, CarveState, EnrollSecret, LabelConfig,
    LabelQuery, Query, ResultFilter, ResultLog, Role, Schedule, StatusLog, User,
};
use gatehouse_runtime::Shutdown;
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::ApiError;
use crate::openapi::{Op, schema};
use crate::service::{
    AdminService, Caller, CampaignDetail, CampaignEvent, CampaignRequest, CampaignView,
    EnrollSecretRequest, HostFilter, HostView, KeyChange, NewEnrollSecret, NewToken, TokenRequest,
    UserRequest, UserUpdate,
};
use gatehouse_core::rules::{Action, Alert, DeadLetter, Rule, Trigger};

type Svc = State<Arc<dyn AdminService>>;
type ApiResult = Result<Response, ApiError>;

fn ok<T: serde::Serialize>(v: T) -> ApiResult {
    Ok(axum::Json(v).into_response())
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))
}

/// Resolves the bearer token to a [`Caller`] for the handlers.
async fn authenticate(State(svc): Svc, mut req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    match svc.authenticate(presented).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e @ ApiError::Unavailable(_)) => e.into_response(),
        Err(_) => {
            tracing::info!(path = %req.uri().path(), "api request without a valid token");
            let mut r = ApiError::Unauthorized.into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

/// Response shape of a page of hosts (documentation).
#[derive(serde::Serialize, schemars::JsonSchema)]
pub(crate) struct HostPage {
    pub items: Vec<HostView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<String>,
}

/// The caller (documentation).
#[derive(serde::Serialize, schemars::JsonSchema)]
pub(crate) struct WhoAmI {
    pub name: String,
    pub role: Role,
}

/// Every REST operation with its handler: the router and the OpenAPI
/// document are both built from this list.
pub(crate) fn operations() -> Vec<(Op, MethodRouter<Arc<dyn AdminService>>)> {
    use Role::{Admin, Observer, Operator};
    use axum::routing::{delete, patch, post, put};
    const WINDOW: &[(&str, &str)] = &[
        ("since", "milliseconds since 1970, inclusive"),
        ("until", "milliseconds since 1970, exclusive"),
        ("limit", "most items"),
    ];
    let m = Method::GET;
    vec![
        (
            Op::new(
                m.clone(),
                "/api/v1/hosts",
                "listHosts",
                "Hosts, filtered and paged",
                Observer,
            )
            .query(&[
                ("label", "only hosts with this label"),
                (
                    "platform",
                    "only this platform (darwin, linux, windows, freebsd)",
                ),
                ("online", "true or false"),
                (
                    "seen_after",
                    "only hosts last seen at or after (ms since 1970)",
                ),
                ("seen_before", "only hosts last seen before (ms since 1970)"),
                (
                    "search",
                    "text in the hostname, host identifier, id or last IP (any case)",
                ),
                ("after", "the `next` of the previous page"),
                ("limit", "hosts per page"),
            ])
            .json(schema::<HostPage>),
            get(list_hosts),
        ),
        (
            Op::new(
                m.clone(),
                "/api/v1/hosts/{id}",
                "getHost",
                "One host with its details",
                Observer,
            )
            .json(schema::<HostView>),
            get(get_host),
        ),
        (
            Op::new(
                Method::DELETE,
                "/api/v1/hosts/{id}",
                "deleteHost",
                "Forget a host (its agent must enroll again; logs stay until retention)",
                Admin,
            )
            .audited(),
            delete(delete_host),
        ),
        (
            Op::new(
                Method::PUT,
                "/api/v1/hosts/{id}/labels",
                "setHostLabels",
                "Set a host's operator labels",
                Operator,
            )
            .body(schema::<LabelsBody>)
            .json(schema::<HostView>)
            .audited(),
            put(set_labels),
        ),
        (
            Op::new(
                Method::POST,
                "/api/v1/hosts/{id}/rotate_key",
                "rotateKey",
                "Invalidate a host's node key (rotate, or revoke)",
                Admin,
            )
            .body(schema::<RotateBody>)
            .json(schema::<KeyChange>)
            .audited(),
            post(rotate_key),
        ),
        (
            Op::new(
                m.clone(),
                "/api/v1/hosts/{id}/config",
                "hostConfig",
                "The config a host is served",
                Observer,
            )
            .json(schema::<serde_json::Value>),
            get(host_config),
        ),
        (
            Op::new(
                m.clone(),
                "/api/v1/hosts/{id}/status_logs",
                "hostStatusLogs",
                "A host's status logs",
                Observer,
            )
            .query(WINDOW)
            .json(schema::<Vec<StatusLog>>),
            get(status_logs),
        ),
        (
            Op::new(
                m.clone(),
                "/api/v1/queries",
                "listQueries",
                "Saved queries",
                Observer,
            )
            .json(schema::<Vec<Query>>),
            get(list_queries),
        ),
        (
            Op::new(
                Method::PUT,
                "/api/v1/queries/{name}",
                "putQuery",
                "Create or replace a saved query",
                Operator,
            )
            .body(schema::<QueryBody>)
            .json(schema::<Query>)
            .audited(),
            put(put_query),
        ),
        (
            Op::new(
                Method::DELETE,
                "/api/v1/queries/{name}",
                "deleteQuery",
                "Delete a saved query",
                Operator,
            )
            .audited(),
            delete(delete_query),
        ),
        (
            Op::new(
                m.clone(),
                "/api/v1/schedules",
                "listSchedules",
                "Scheduled queries",
                Observer,
            )
            .json(schema::<Vec<Schedule>>),
            get(list_schedules),
        ),
        (
            Op::new(
                Method::PUT,
                "/api/v1/schedules/{name}",
                "putSchedule",
                "Create or replace a scheduled query",
                Operator,
            )
            .body(schema::<ScheduleBody>)
            .json(schema::<Schedule>)
            .audited(),
            put(put_schedule),
        ),
        (
            Op::new(
                Method::DELETE,
                "/api/v1/schedules/{name}",
                "deleteSchedule",
                "Delete a scheduled query",
                Operator,
            )
            .audited(),
            delete(delete_schedule),
        ),
        (
            Op::new(
                m.clone(),
                "/api/v1/label_configs",
                "listLabelConfigs",
                "Options, decorators and file paths by label",
                Observer,
            )
            .json(schema::<Vec<LabelConfig>>),
            get(list_label_configs),
        ),
        (
            Op::new(
                Method::PUT,
                "/api/v1/label_configs/{label}",
                "putLabelConfig",
                "Create or replace a label's config",
                Operator,
            )
            .body(schema::<LabelConfigBody>)
            .json(schema::<LabelConfig>)
            .audited(),
            put(put_label_config),
        ),
        (
            Op::new(
                Method::DELETE,
                "/api/v1/label_configs/{label}",
                "deleteLabelConfig",
                "Delete a label's config",
                Operator,
            )
            .audited(),
            delete(delete_label_config),
        ),
        (
            Op::new(
                m.clone(),
                "/api/v1/label_queries",
                "listLabelQueries",
                "Dynamic labels: the queries hosts answer to join them",
                Observer,
            )
            .json(schema::<Vec<LabelQuery>>),
            get(list_label_queries),
        ),
        (
            Op::new(
                Method::PUT,
                "/api/v1/label_queries/{label}",
                "putLabelQuery",
                "Create or replace a dynamic label (hosts whose answer has rows carry it)",
                Operator,
            )
            .body(schema::<LabelQueryBody>)
            .json(schema::<LabelQuery>)
            .audited(),
            put(put_label_query),
        ),
        (
            Op::new(
                Method::DELETE,
                "/api/v1/label_queries/{label}",
                "deleteLabelQuery",
                "Delete a dynamic label (hosts leave it at their next poll)",
                Operator,
            )
            .audited(),
            delete(delete_label_query),
        ),
        (
            Op::new(
                m.clone(),
                "/api/v1/results",
                "searchResults",
                "Stored result logs by host, query and time window",
                Observer,
            )
            .query(&[
                ("host", "host id"),
                ("name", "scheduled query name"),
                ("since", "milliseconds since 1970, inclusive"),
                ("until", "milliseconds since 1970, exclusive"),
                ("limit", "most lines"),
            ])
            .json(schema::<Vec<ResultLog>>),
            get(search_results),
        ),
        (
            Op::new(
                m.clone(),
                "/api/v1/campaigns",
                "listCampaigns",
                "Live queries, newest first",
                Observer,
            )
            .query(&[("limit", "most campaigns")])
            .json(schema::<Vec<CampaignView>>),
            get(list_campaigns),
        ),
        (
            Op::new(
                Method::POST,
                "/api/v1/campaigns",
                "createCampaign",
                "Run a live query on hosts, labels or all",
                Operator,
            )
            .body(schema::<CampaignRequest>)
            .created(schema::<CampaignView>)
            .audited(),
            post(create_campaign),
        ),
        (
            Op::new(
                m.clone(),
                "/api/v1/campaigns/{id}",
                "getCampaign",
                "Coverage, per-host delivery state, non-responders",
                Observer,
            )
            .json(schema::<CampaignDetail>),
            get(get_campaign),
        ),
        (
            Op::new(
                m.clone(),
                "/api/v1/campaigns/{id}/results",
                "campaignResults",
                "Answers per host",
                Observer,
            )
            .json(schema::<Vec<CampaignResult>>),
            get(campaign_results),
        ),
        (
            Op::new(
                m.clone(),
                "/api/v1/campaigns/{id}/events",
                "watchCampaign",
                "Answers as they arrive, progress, and a last `done` event with the hosts that never answered",
                Observer,
            )
            .events(schema::<CampaignEvent>),
            get(watch_campaign),
        ),
        (
            Op::new(
                m.clone(),
                "/api/v1/carves",
                "listCarves",
                "File carves, newest first",
                Observer,
            )
            .query(&[("limit", "most carves")])
            .json(schema::<Vec<CarveSession>>),
            get(list_carves),
        ),
        (
            Op::new(
                m.clone(),
                "/api/v1/carves/{id}",
                "getCarve",
                "One carve's state",
                Observer,
            )
            .json(schema::<CarveSession>),
            get(get_carve),
        ),
        (
            Op::new(
                m.clone(),
                "/api/v1/carves/{id}/download",
                "downloadCarve",
                "A finished carve's archive (tar or tar.zst)",
                Operator,
            )
            .binary()
            .audited(),
            get(download_carve),
        ),
        (
            Op::new(
                m.clone(),
                "/api/v1/whoami",
                "whoami",
                "The caller's name and role",
                Observer,
            )
            .json(schema::<WhoAmI>),
            get(whoami),
        ),
        (
            Op::new(m.clone(), "/api/v1/users", "listUsers", "Users", Admin)
                .json(schema::<Vec<User>>),
            get(list_users),
        ),
        (
            Op::new(
                Method::POST,
                "/api/v1/users",
                "createUser",
                "Create a user with a role",
                Admin,
            )
            .body(schema::<UserRequest>)
            .created(schema::<User>)
            .audited(),
            post(create_user),
        ),
        (
            Op::new(
                Method::PATCH,
                "/api/v1/users/{name}",
                "updateUser",
                "Change a user's role, or disable it",
                Admin,
            )
            .body(schema::<UserUpdate>)
            .json(schema::<User>)
            .audited(),
            patch(update_user),
        ),
        (
            Op::new(
                Method::POST,
                "/api/v1/users/{name}/tokens",
                "createToken",
                "A new API token for a user (its secret is in this answer only)",
                Admin,
            )
            .body(schema::<TokenRequest>)
            .created(schema::<NewToken>)
            .audited(),
            post(create_token),
        ),
        (
            Op::new(
                m.clone(),
                "/api/v1/tokens",
                "listTokens",
                "API tokens (hashes only)",
                Admin,
            )
            .json(schema::<Vec<ApiToken>>),
            get(list_tokens),
        ),
        (
            Op::new(
                Method::POST,
                "/api/v1/tokens/{id}/revoke",
                "revokeToken",
                "Revoke a token at once",
                Admin,
            )
            .json(schema::<ApiToken>)
            .audited(),
            post(revoke_token),
        ),
        (
            Op::new(
                m.clone(),
                "/api/v1/audit",
                "listAudit",
                "The audit log, newest first",
                Admin,
            )
            .query(&[
                ("limit", "most events (up to 1000)"),
                ("before_at", "`at` of the last event of the previous page"),
                ("before_id", "`id` of the last event of the previous page"),
            ])
            .json(schema::<Vec<AuditEvent>>),
            get(list_audit),
        ),
        (
            Op::new(
                m.clone(),
                "/api/v1/enroll_secrets",
                "listEnrollSecrets",
                "Enroll secrets (hashes only)",
                Admin,
            )
            .json(schema::<Vec<EnrollSecret>>),
            get(list_enroll_secrets),
        ),
        (
            Op::new(
                Method::POST,
                "/api/v1/enroll_secrets",
                "createEnrollSecret",
                "A new enroll secret (its value is in this answer only)",
                Admin,
            )
            .body(schema::<EnrollSecretRequest>)
            .created(schema::<NewEnrollSecret>)
            .audited(),
            post(create_enroll_secret),
        ),
        (
            Op::new(
                Method::POST,
                "/api/v1/enroll_secrets/{id}/revoke",
                "revokeEnrollSecret",
                "Refuse new enrollments with a secret",
                Admin,
            )
            .json(schema::<EnrollSecret>)
            .audited(),
            post(revoke_enroll_secret),
        ),
        (
            Op::new(
                m.clone(),
                "/api/v1/rules",
                "listRules",
                "Rules (webhook URLs redacted unless the caller is an admin)",
                Observer,
            )
            .json(schema::<Vec<Rule>>),
            get(list_rules),
        ),
        (
            Op::new(
                Method::PUT,
                "/api/v1/rules/{name}",
                "putRule",
                "Create or replace a rule (rules with webhook actions need the admin role)",
                Operator,
            )
            .body(schema::<RuleBody>)
            .json(schema::<Rule>)
            .audited(),
            put(put_rule),
        ),
        (
            Op::new(
                Method::DELETE,
                "/api/v1/rules/{name}",
                "deleteRule",
                "Delete a rule (its alerts stay in the history)",
                Operator,
            )
            .audited(),
            delete(delete_rule),
        ),
        (
            Op::new(
                m.clone(),
                "/api/v1/alerts",
                "listAlerts",
                "Alert history, newest first, with each action's outcome",
                Observer,
            )
            .query(&[
                ("limit", "most alerts (up to 1000)"),
                ("before_at", "`at` of the last alert of the previous page"),
                ("before_id", "`id` of the last alert of the previous page"),
            ])
            .json(schema::<Vec<Alert>>),
            get(list_alerts),
        ),
        (
            Op::new(
                m.clone(),
                "/api/v1/dead_letters",
                "listDeadLetters",
                "Webhook deliveries that failed every attempt",
                Admin,
            )
            .json(schema::<Vec<DeadLetter>>),
            get(list_dead_letters),
        ),
        (
            Op::new(
                Method::POST,
                "/api/v1/dead_letters/{id}/redrive",
                "redriveDeadLetter",
                "Send a dead letter's webhook again; 502 when the receiver still fails",
                Admin,
            )
            .json(schema::<Alert>)
            .audited(),
            post(redrive_dead_letter),
        ),
        (
            Op::new(
                Method::DELETE,
                "/api/v1/dead_letters/{id}",
                "deleteDeadLetter",
                "Drop a dead letter without sending it",
                Admin,
            )
            .audited(),
            delete(delete_dead_letter),
        ),
    ]
}

/// The operations without their handlers (for the document and tests).
pub(crate) fn operations_doc() -> Vec<Op> {
    operations().into_iter().map(|(o, _)| o).collect()
}

/// The OpenAPI document of the REST API (also served at
/// `/api/v1/openapi.json`).
pub fn openapi() -> serde_json::Value {
    crate::openapi::document(&operations_doc())
}

/// The API routes; `/livez`, `/readyz` and `/api/v1/openapi.json` need no
/// token.
pub fn router(svc: Arc<dyn AdminService>, shutdown: Shutdown) -> Router {
    let doc = Arc::new(openapi());
    let ops = operations();
    let mut by_path: Vec<(&'static str, MethodRouter<Arc<dyn AdminService>>)> = Vec::new();
    for (op, handler) in ops {
        match by_path.iter_mut().find(|(p, _)| *p == op.path) {
            Some((_, existing)) => {
                let merged = std::mem::take(existing).merge(handler);
                *existing = merged;
            }
            None => by_path.push((op.path, handler)),
        }
    }
    let mut api = Router::new();
    for (path, handler) in by_path {
        api = api.route(path, handler);
    }
    let api = api
        .route_layer(middleware::from_fn_with_state(svc.clone(), authenticate))
        .with_state(svc);
    let ready = move || {
        let s = shutdown.clone();
        async move {
            if s.is_triggered() {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(json!({"status": "draining"})),
                )
                    .into_response()
            } else {
                axum::Json(json!({"status": "ready"})).into_response()
            }
        }
    };
    static METRICS: std::sync::OnceLock<gatehouse_runtime::metrics::RequestMetrics> =
        std::sync::OnceLock::new();
    let metrics = METRICS
        .get_or_init(|| gatehouse_runtime::metrics::RequestMetrics::new("api", "Operator API"))
        .clone();
    let api = api.route_layer(axum::middleware::from_fn_with_state(
        metrics,
        gatehouse_runtime::metrics::track,
    ));
    Router::new()
        .route(
            "/livez",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/readyz", get(ready))
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { axum::Json((*doc).clone()) }
            }),
        )
        .merge(api)
        .fallback(|req: Request| async move {
            ApiError::NotFound(format!("route {} {}", req.method(), req.uri().path()))
                .into_response()
        })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                axum::Json(json!({"error": "method not allowed on this route"})),
            )
        })
}

async fn list_hosts(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Q(f): Q<HostFilter>,
) -> ApiResult {
    ok(s.list_hosts(&c, f).await?.into_json())
}

trait PageJson {
    fn into_json(self) -> serde_json::Value;
}

impl<T: serde::Serialize> PageJson for gatehouse_core::model::Page<T> {
    fn into_json(self) -> serde_json::Value {
        json!({ "items": self.items, "next": self.next })
    }
}

async fn get_host(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    ok(s.get_host(&c, &id).await?)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LabelsBody {
    labels: Vec<String>,
}

async fn set_labels(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let b: LabelsBody = parse(&body)?;
    ok(s.set_host_labels(&c, &id, b.labels).await?)
}

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateBody {
    #[serde(default)]
    revoke: bool,
}

async fn rotate_key(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let b: RotateBody = if body.is_empty() {
        RotateBody::default()
    } else {
        parse(&body)?
    };
    ok(s.rotate_key(&c, &id, b.revoke).await?)
}

async fn host_config(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    ok(s.host_config(&c, &id).await?)
}

#[derive(Deserialize)]
struct Window {
    since: Option<i64>,
    until: Option<i64>,
    limit: Option<usize>,
    host: Option<String>,
    name: Option<String>,
}

async fn status_logs(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    Q(w): Q<Window>,
) -> ApiResult {
    ok(s.host_status_logs(
        &c,
        &id,
        w.since.unwrap_or(0),
        w.until.unwrap_or(i64::MAX),
        w.limit.unwrap_or(1000),
    )
    .await?)
}

async fn list_queries(State(s): Svc, Extension(c): Extension<Caller>) -> ApiResult {
    ok(s.list_queries(&c).await?)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueryBody {
    sql: String,
    #[serde(default)]
    description: String,
}

async fn put_query(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let b: QueryBody = parse(&body)?;
    ok(s.put_query(
        &c,
        Query {
            name,
            sql: b.sql,
            description: b.description,
            updated_at: 0,
        },
    )
    .await?)
}

async fn delete_query(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult {
    s.delete_query(&c, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_schedules(State(s): Svc, Extension(c): Extension<Caller>) -> ApiResult {
    ok(s.list_schedules(&c).await?)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScheduleBody {
    query: String,
    interval: u32,
    #[serde(default)]
    snapshot: bool,
    #[serde(default = "yes")]
    removed: bool,
    platform: Option<String>,
    version: Option<String>,
    shard: Option<u8>,
    pack: Option<String>,
    labels: Vec<String>,
}

fn yes() -> bool {
    true
}

async fn put_schedule(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let b: ScheduleBody = parse(&body)?;
    ok(s.put_schedule(
        &c,
        Schedule {
            name,
            query: b.query,
            interval: b.interval,
            snapshot: b.snapshot,
            removed: b.removed,
            platform: b.platform,
            version: b.version,
            shard: b.shard,
            pack: b.pack,
            labels: b.labels,
            updated_at: 0,
        },
    )
    .await?)
}

async fn delete_schedule(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult {
    s.delete_schedule(&c, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_label_configs(State(s): Svc, Extension(c): Extension<Caller>) -> ApiResult {
    ok(s.list_label_configs(&c).await?)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LabelConfigBody {
    #[serde(default)]
    options: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    decorators: gatehouse_core::model::Decorators,
    #[serde(default)]
    file_paths: std::collections::BTreeMap<String, Vec<String>>,
}

async fn put_label_config(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Path(label): Path<String>,
    body: Bytes,
) -> ApiResult {
    let b: LabelConfigBody = parse(&body)?;
    ok(s.put_label_config(
        &c,
        LabelConfig {
            label,
            options: b.options,
            decorators: b.decorators,
            file_paths: b.file_paths,
            updated_at: 0,
        },
    )
    .await?)
}

async fn delete_label_config(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Path(label): Path<String>,
) -> ApiResult {
    s.delete_label_config(&c, &label).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn search_results(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Q(w): Q<Window>,
) -> ApiResult {
    let host_id = match w.host.as_deref() {
        Some(h) => Some(
            gatehouse_core::HostId::parse(h)
                .ok_or_else(|| ApiError::BadRequest(format!("{h:?} is not a host id")))?,
        ),
        None => None,
    };
    ok(s.search_results(
        &c,
        ResultFilter {
            host_id,
            name: w.name,
            since: w.since.unwrap_or(0),
            until: w.until.unwrap_or(0),
            limit: w.limit.unwrap_or(0),
        },
    )
    .await?)
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn list_campaigns(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Q(l): Q<Limit>,
) -> ApiResult {
    ok(s.list_campaigns(&c, l.limit.unwrap_or(100)).await?)
}

async fn create_campaign(State(s): Svc, Extension(c): Extension<Caller>, body: Bytes) -> ApiResult {
    let req: CampaignRequest = parse(&body)?;
    let v = s.create_campaign(&c, req).await?;
    Ok((StatusCode::CREATED, axum::Json(v)).into_response())
}

async fn get_campaign(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    ok(s.get_campaign(&c, &id).await?)
}

async fn campaign_results(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    ok(s.campaign_results(&c, &id).await?)
}

async fn list_carves(State(s): Svc, Extension(c): Extension<Caller>, Q(l): Q<Limit>) -> ApiResult {
    ok(s.list_carves(&c, l.limit.unwrap_or(100)).await?)
}

async fn get_carve(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    ok(s.get_carve(&c, &id).await?)
}

/// Streams the assembled archive block by block.
async fn download_carve(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    let carve = s.get_carve(&c, &id).await?;
    if carve.state != CarveState::Complete {
        return Err(ApiError::BadRequest(format!(
            "carve {id} is not complete ({} of {} blocks received)",
            carve.blocks_received, carve.block_count
        )));
    }
    let count = carve.block_count;
    // The first block before any byte goes out: it checks the caller's role
    // and records the download, so a refusal is a clean 403.
    let first = if count > 0 {
        Some(s.carve_block(&c, &id, 0).await?)
    } else {
        None
    };
    let rest = futures_util::stream::unfold(1u64, move |i| {
        let (s, c, id) = (s.clone(), c.clone(), id.clone());
        async move {
            if i >= count {
                return None;
            }
            let r = s
                .carve_block(&c, &id, i)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()));
            Some((r, i + 1))
        }
    });
    let stream = futures_util::StreamExt::chain(
        futures_util::stream::iter(first.map(Ok::<Bytes, std::io::Error>)),
        rest,
    );
    let ext = if carve.format.as_deref() == Some("zstd") {
        "tar.zst"
    } else {
        "tar"
    };
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&carve.carve_size.to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}.{ext}\"",
        carve.carve_id.replace('"', "")
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Some(sha) = &carve.sha256
        && let Ok(v) = HeaderValue::from_str(sha)
    {
        h.insert("x-gatehouse-sha256", v);
    }
    Ok(r)
}

async fn whoami(Extension(c): Extension<Caller>) -> ApiResult {
    ok(json!({"name": c.name, "role": c.role}))
}

async fn list_users(State(s): Svc, Extension(c): Extension<Caller>) -> ApiResult {
    ok(s.list_users(&c).await?)
}

async fn create_user(State(s): Svc, Extension(c): Extension<Caller>, body: Bytes) -> ApiResult {
    let u: UserRequest = parse(&body)?;
    Ok((StatusCode::CREATED, axum::Json(s.create_user(&c, u).await?)).into_response())
}

async fn update_user(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let u: UserUpdate = parse(&body)?;
    ok(s.update_user(&c, &name, u).await?)
}

async fn create_token(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let t: TokenRequest = if body.is_empty() {
        TokenRequest::default()
    } else {
        parse(&body)?
    };
    Ok((
        StatusCode::CREATED,
        axum::Json(s.create_token(&c, &name, t).await?),
    )
        .into_response())
}

async fn list_tokens(State(s): Svc, Extension(c): Extension<Caller>) -> ApiResult {
    ok(s.list_tokens(&c).await?)
}

async fn revoke_token(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    ok(s.revoke_token(&c, &id).await?)
}

#[derive(Deserialize)]
struct AuditPage {
    before_at: Option<i64>,
    before_id: Option<String>,
    limit: Option<usize>,
}

impl AuditPage {
    /// The `(at, id)` cursor, given both or neither.
    fn before(&self) -> Result<Option<(i64, String)>, ApiError> {
        match (self.before_at, &self.before_id) {
            (Some(at), Some(id)) => Ok(Some((at, id.clone()))),
            (None, None) => Ok(None),
            _ => Err(ApiError::BadRequest(
                "give before_at and before_id together (the last item of the previous page)".into(),
            )),
        }
    }
}

async fn list_audit(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Q(p): Q<AuditPage>,
) -> ApiResult {
    ok(s.list_audit(&c, p.before()?, p.limit.unwrap_or(100))
        .await?)
}

async fn list_enroll_secrets(State(s): Svc, Extension(c): Extension<Caller>) -> ApiResult {
    ok(s.list_enroll_secrets(&c).await?)
}

async fn create_enroll_secret(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    body: Bytes,
) -> ApiResult {
    let r: EnrollSecretRequest = parse(&body)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(s.create_enroll_secret(&c, r).await?),
    )
        .into_response())
}

async fn revoke_enroll_secret(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    ok(s.revoke_enroll_secret(&c, &id).await?)
}

/// A rule as PUT to `/api/v1/rules/{name}` (the name is in the path).
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleBody {
    #[serde(default)]
    description: String,
    #[serde(default = "yes")]
    enabled: bool,
    when: Trigger,
    actions: Vec<Action>,
}

async fn list_rules(State(s): Svc, Extension(c): Extension<Caller>) -> ApiResult {
    ok(s.list_rules(&c).await?)
}

async fn put_rule(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let b: RuleBody = parse(&body)?;
    ok(s.put_rule(
        &c,
        Rule {
            name,
            description: b.description,
            enabled: b.enabled,
            when: b.when,
            actions: b.actions,
            updated_at: 0,
        },
    )
    .await?)
}

async fn delete_rule(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult {
    s.delete_rule(&c, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_alerts(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Q(p): Q<AuditPage>,
) -> ApiResult {
    ok(s.list_alerts(&c, p.before()?, p.limit.unwrap_or(100))
        .await?)
}

async fn list_dead_letters(State(s): Svc, Extension(c): Extension<Caller>) -> ApiResult {
    ok(s.list_dead_letters(&c).await?)
}

async fn redrive_dead_letter(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    ok(s.redrive_dead_letter(&c, &id).await?)
}

async fn delete_dead_letter(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    s.delete_dead_letter(&c, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_host(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    s.delete_host(&c, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn watch_campaign(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let rx = s.watch_campaign(&c, &id).await?;
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        let ev = rx.recv().await?;
        let e = Event::default()
            .event(ev.kind())
            .json_data(&ev)
            .unwrap_or_else(|_| Event::default().event("error"));
        Some((Ok::<_, std::convert::Infallible>(e), rx))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// A label query as PUT to `/api/v1/label_queries/{label}`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LabelQueryBody {
    sql: String,
    /// Seconds between evaluations on each host (default 3600, at least 60).
    interval: Option<u32>,
    #[serde(default)]
    platforms: Vec<String>,
    #[serde(default)]
    description: String,
}

async fn list_label_queries(State(s): Svc, Extension(c): Extension<Caller>) -> ApiResult {
    ok(s.list_label_queries(&c).await?)
}

async fn put_label_query(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Path(label): Path<String>,
    body: Bytes,
) -> ApiResult {
    let b: LabelQueryBody = parse(&body)?;
    ok(s.put_label_query(
        &c,
        LabelQuery {
            label,
            sql: b.sql,
            interval: b.interval.unwrap_or(3600),
            platforms: b.platforms,
            description: b.description,
            updated_at: 0,
        },
    )
    .await?)
}

async fn delete_label_query(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Path(label): Path<String>,
) -> ApiResult {
    s.delete_label_query(&c, &label).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
