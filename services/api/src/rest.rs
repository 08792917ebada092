//! REST over [`AdminService`]: JSON in and out, bearer-token auth, errors as
//! `{"error": "..."}` with a 4xx/5xx status. Request bodies are parsed by
//! hand so a malformed body gets a message naming what is wrong.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path, Query as Q, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use gatehouse_core::model::{CarveState, LabelConfig, Query, ResultFilter, Schedule};
use gatehouse_runtime::Shutdown;
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::ApiError;
use crate::service::{
    AdminService, Caller, CampaignRequest, EnrollSecretRequest, HostFilter, TokenRequest,
    UserRequest, UserUpdate,
};

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

/// The API routes; `/livez` and `/readyz` need no token.
pub fn router(svc: Arc<dyn AdminService>, shutdown: Shutdown) -> Router {
    let api = Router::new()
        .route("/api/v1/hosts", get(list_hosts))
        .route("/api/v1/hosts/{id}", get(get_host))
        .route("/api/v1/hosts/{id}/labels", axum::routing::put(set_labels))
        .route(
            "/api/v1/hosts/{id}/rotate_key",
            axum::routing::post(rotate_key),
        )
        .route("/api/v1/hosts/{id}/config", get(host_config))
        .route("/api/v1/hosts/{id}/status_logs", get(status_logs))
        .route("/api/v1/queries", get(list_queries))
        .route(
            "/api/v1/queries/{name}",
            axum::routing::put(put_query).delete(delete_query),
        )
        .route("/api/v1/schedules", get(list_schedules))
        .route(
            "/api/v1/schedules/{name}",
            axum::routing::put(put_schedule).delete(delete_schedule),
        )
        .route("/api/v1/label_configs", get(list_label_configs))
        .route(
            "/api/v1/label_configs/{label}",
            axum::routing::put(put_label_config).delete(delete_label_config),
        )
        .route("/api/v1/results", get(search_results))
        .route(
            "/api/v1/campaigns",
            get(list_campaigns).post(create_campaign),
        )
        .route("/api/v1/campaigns/{id}", get(get_campaign))
        .route("/api/v1/campaigns/{id}/results", get(campaign_results))
        .route("/api/v1/carves", get(list_carves))
        .route("/api/v1/carves/{id}", get(get_carve))
        .route("/api/v1/carves/{id}/download", get(download_carve))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/users", get(list_users).post(create_user))
        .route("/api/v1/users/{name}", axum::routing::patch(update_user))
        .route(
            "/api/v1/users/{name}/tokens",
            axum::routing::post(create_token),
        )
        .route("/api/v1/tokens", get(list_tokens))
        .route(
            "/api/v1/tokens/{id}/revoke",
            axum::routing::post(revoke_token),
        )
        .route("/api/v1/audit", get(list_audit))
        .route(
            "/api/v1/enroll_secrets",
            get(list_enroll_secrets).post(create_enroll_secret),
        )
        .route(
            "/api/v1/enroll_secrets/{id}/revoke",
            axum::routing::post(revoke_enroll_secret),
        )
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelsBody {
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateBody {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryBody {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleBody {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelConfigBody {
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

async fn list_audit(
    State(s): Svc,
    Extension(c): Extension<Caller>,
    Q(p): Q<AuditPage>,
) -> ApiResult {
    let before = match (p.before_at, p.before_id) {
        (Some(at), Some(id)) => Some((at, id)),
        (None, None) => None,
        _ => {
            return Err(ApiError::BadRequest(
                "give before_at and before_id together (the last event of the previous page)"
                    .into(),
            ));
        }
    };
    ok(s.list_audit(&c, before, p.limit.unwrap_or(100)).await?)
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
