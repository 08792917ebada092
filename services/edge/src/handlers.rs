//! Agent endpoint handlers: enroll, config, log, distributed read/write,
//! plus health and the JSON fallbacks for unknown paths and methods.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use gatehouse_core::HostId;
use gatehouse_core::ids::identity_from_details;
use gatehouse_core::logs::{records, records_of};
use gatehouse_core::ports::SinkError;
use gatehouse_core::wire::{self, parse_object};
use gatehouse_proto::v1::{
    ConfigOp, EnrollOp, QueryResult, ReadOp, TouchOp, WriteOp, host_reply, host_request,
};
use gatehouse_runtime::RemoteAddr;
use http::StatusCode;
use http::header::AUTHORIZATION;
use serde_json::{Map, Value, json};

use crate::error::json as json_response;
use crate::{Edge, EdgeError, body};

pub(crate) type EdgeState = State<Arc<Edge>>;

fn ok_json(v: &Value) -> Response {
    json_response(
        StatusCode::OK,
        serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec()),
    )
}

pub(crate) fn remote(req: &Request) -> String {
    req.extensions()
        .get::<RemoteAddr>()
        .map(|a| a.0.ip().to_string())
        .unwrap_or_default()
}

pub(crate) fn auth_header(req: &Request) -> Option<String> {
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

impl Edge {
    pub(crate) async fn body(
        &self,
        req: Request,
    ) -> Result<(Option<String>, String, bytes::Bytes), EdgeError> {
        let auth = auth_header(&req);
        let addr = remote(&req);
        let (parts, b) = req.into_parts();
        let bytes = body::read(
            b,
            &parts.headers,
            self.cfg.max_body_bytes,
            self.cfg.max_inflated_bytes,
        )
        .await?;
        Ok((auth, addr, bytes))
    }

    /// The host and epoch behind a node key (MAC check only).
    pub(crate) fn authenticate(
        &self,
        auth: Option<&str>,
        m: &Map<String, Value>,
    ) -> Result<(HostId, u64), EdgeError> {
        let key = wire::node_key(auth, m)
            .map_err(|_| EdgeError::NodeInvalid("node key missing".into()))?;
        self.verify_key(key)
    }

    /// The host and epoch behind `key` (MAC check only).
    pub(crate) fn verify_key(&self, key: &str) -> Result<(HostId, u64), EdgeError> {
        self.deps
            .keys
            .verify(key)
            .map_err(|e| EdgeError::NodeInvalid(e.to_string()))
    }

    /// Calls the host's actor; maps `node_invalid` and failures to errors.
    pub(crate) async fn call(
        &self,
        host: &HostId,
        epoch: u64,
        op: host_request::Op,
    ) -> Result<host_reply::Result, EdgeError> {
        match self.deps.hosts.call(host, epoch, op).await {
            Ok(host_reply::Result::NodeInvalid(n)) => Err(EdgeError::NodeInvalid(n.reason)),
            Ok(host_reply::Result::Failure(f)) => Err(EdgeError::Unavailable(f.message)),
            Ok(other) => Ok(other),
            Err(e) => {
                if let Some(like_it) = self.log_throttle.admit("host_service") {
                    tracing::warn!(host = %host, error = %e, left_out_since_last = like_it, "host service unreachable");
                }
                Err(EdgeError::Unavailable(
                    "host service unavailable, retry later".into(),
                ))
            }
        }
    }
}

/// The agent's answer; a failure is logged (failures of one kind on one
/// endpoint at most once per interval, with how many were left out: an
/// outage fails every request alike).
pub(crate) fn finish(
    edge: &Edge,
    endpoint: &'static str,
    r: Result<Response, EdgeError>,
) -> Response {
    match r {
        Ok(resp) => resp,
        Err(e) => {
            match &e {
                EdgeError::Unavailable(_) | EdgeError::Backpressure => {
                    let kind = if matches!(e, EdgeError::Backpressure) {
                        "busy"
                    } else {
                        "unavailable"
                    };
                    if let Some(like_it) = edge.log_throttle.admit(&format!("{endpoint}/{kind}")) {
                        tracing::warn!(endpoint, error = %e, left_out_since_last = like_it, "agent request failed")
                    }
                }
                _ => tracing::info!(endpoint, error = %e, "agent request rejected"),
            }
            axum::response::IntoResponse::into_response(e)
        }
    }
}

pub(crate) async fn enroll(State(edge): EdgeState, req: Request) -> Response {
    finish(&edge, "enroll", enroll_inner(&edge, req).await)
}

async fn enroll_inner(edge: &Edge, req: Request) -> Result<Response, EdgeError> {
    let (_, addr, bytes) = edge.body(req).await?;
    let e = wire::parse_enroll(&bytes)?;
    // Every enroll secret, the first start's included, is in the store,
    // found by the SHA-256 of its value (so each can be listed and revoked).
    let sha = gatehouse_core::ids::sha256_hex(e.enroll_secret.as_bytes());
    let labels = match edge.deps.store.enroll_secret_by_hash(&sha).await {
        Ok(Some(s)) if s.is_usable(edge.deps.clock.now_ms()) => s.labels,
        Ok(found) => {
            let why = if found.is_some() {
                "enroll secret revoked or expired"
            } else {
                "invalid enroll secret"
            };
            tracing::warn!(host_identifier = %e.host_identifier, remote = %addr, why, "enrollment refused");
            return Err(EdgeError::EnrollDenied(why.into()));
        }
        Err(err) => return Err(EdgeError::Unavailable(format!("enroll secrets: {err}"))),
    };
    let identity = identity_from_details(&e.host_details, &e.host_identifier);
    let host = HostId::from_identity(&identity);
    let op = host_request::Op::Enroll(EnrollOp {
        identity,
        host_identifier: e.host_identifier,
        platform_type: e.platform_type,
        host_details_json: serde_json::to_vec(&e.host_details)
            .unwrap_or_default()
            .into(),
        remote_addr: addr,
        labels,
    });
    match edge.call(&host, 0, op).await? {
        host_reply::Result::Enrolled(k) => Ok(ok_json(&json!({ "node_key": k.node_key }))),
        _ => Err(EdgeError::Unavailable("unexpected reply to enroll".into())),
    }
}

pub(crate) async fn config(State(edge): EdgeState, req: Request) -> Response {
    finish(&edge, "config", config_inner(&edge, req).await)
}

async fn config_inner(edge: &Edge, req: Request) -> Result<Response, EdgeError> {
    let (auth, _, bytes) = edge.body(req).await?;
    let m = parse_object(&bytes)?;
    let (host, epoch) = edge.authenticate(auth.as_deref(), &m)?;
    match edge
        .call(&host, epoch, host_request::Op::Config(ConfigOp {}))
        .await?
    {
        host_reply::Result::Config(c) => Ok(json_response(
            StatusCode::OK,
            edge.config_blob(&c.hash).await?,
        )),
        _ => Err(EdgeError::Unavailable("unexpected reply to config".into())),
    }
}

pub(crate) async fn log(State(edge): EdgeState, req: Request) -> Response {
    finish(&edge, "log", log_inner(&edge, req).await)
}

async fn log_inner(edge: &Edge, req: Request) -> Result<Response, EdgeError> {
    // Room for the body first (its declared length, else the largest
    // allowed), held until the batch is stored: bodies waiting for room
    // stay unread in their sockets.
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(edge.cfg.max_body_bytes);
    let mut admitted = edge.admission.log(declared).await?;
    let (auth, _, bytes) = edge.body(req).await?;
    // Well-formed batches are read in one pass, their lines kept as text;
    // anything else takes the strict reading, which names what is wrong.
    // Either way the whole batch is validated before anything is touched.
    let (host, epoch, log_type, lines, records) = match wire::read_log_post(&bytes) {
        Some(post) => {
            let key = wire::node_key_given(auth.as_deref(), post.node_key.as_deref())
                .map_err(|_| EdgeError::NodeInvalid("node key missing".into()))?;
            let (host, epoch) = edge.verify_key(key)?;
            let lines = post.lines.len();
            let now = edge.deps.clock.now_ms();
            let records = records_of(&host, post.log_type, post.lines, now);
            (host, epoch, post.log_type, lines, records)
        }
        None => {
            let m = parse_object(&bytes)?;
            let (host, epoch) = edge.authenticate(auth.as_deref(), &m)?;
            let batch = wire::parse_log(m)?;
            let (log_type, lines) = (batch.log_type, batch.data.len());
            let records = records(&host, batch, edge.deps.clock.now_ms());
            (host, epoch, log_type, lines, records)
        }
    };
    edge.call(&host, epoch, host_request::Op::Touch(TouchOp {}))
        .await?;
    // Waiting for the store takes no in-flight slot (ADR 0047).
    admitted.storing();
    if lines > 0 {
        edge.deps.sink.append(records).await.map_err(|e| match e {
            SinkError::Backpressure => EdgeError::Backpressure,
            SinkError::Unavailable(m) => {
                EdgeError::Unavailable(format!("logs not stored, retry: {m}"))
            }
        })?;
    }
    tracing::debug!(host = %host, log_type = log_type.as_str(), lines, "log batch stored");
    Ok(ok_json(&json!({})))
}

pub(crate) async fn distributed_read(State(edge): EdgeState, req: Request) -> Response {
    finish(&edge, "distributed_read", read_inner(&edge, req).await)
}

async fn read_inner(edge: &Edge, req: Request) -> Result<Response, EdgeError> {
    let (auth, _, bytes) = edge.body(req).await?;
    let m = parse_object(&bytes)?;
    let (host, epoch) = edge.authenticate(auth.as_deref(), &m)?;
    match edge
        .call(&host, epoch, host_request::Op::Read(ReadOp {}))
        .await?
    {
        host_reply::Result::Read(r) => {
            let mut out = Map::new();
            out.insert("queries".into(), json!(r.queries));
            if !r.discovery.is_empty() {
                out.insert("discovery".into(), json!(r.discovery));
            }
            if r.accelerate > 0 {
                out.insert("accelerate".into(), json!(r.accelerate));
            }
            Ok(ok_json(&Value::Object(out)))
        }
        _ => Err(EdgeError::Unavailable(
            "unexpected reply to distributed read".into(),
        )),
    }
}

pub(crate) async fn distributed_write(State(edge): EdgeState, req: Request) -> Response {
    finish(&edge, "distributed_write", write_inner(&edge, req).await)
}

async fn write_inner(edge: &Edge, req: Request) -> Result<Response, EdgeError> {
    let (auth, _, bytes) = edge.body(req).await?;
    let m = parse_object(&bytes)?;
    let (host, epoch) = edge.authenticate(auth.as_deref(), &m)?;
    let answers = wire::parse_distributed_write(&m)?;
    let results = answers
        .into_iter()
        .map(|a| QueryResult {
            query_id: a.query_id,
            rows_json: serde_json::to_vec(&a.rows).unwrap_or_default().into(),
            status: a.status,
            message: a.message,
            stats_json: serde_json::to_vec(&a.stats).unwrap_or_default().into(),
        })
        .collect();
    edge.call(&host, epoch, host_request::Op::Write(WriteOp { results }))
        .await?;
    Ok(ok_json(&json!({})))
}

pub(crate) async fn livez() -> Response {
    ok_json(&json!({"status": "ok"}))
}

pub(crate) async fn readyz(State(edge): EdgeState) -> Response {
    if edge.shutdown.is_triggered() {
        json_response(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"draining"}"#)
    } else {
        edge.deps.readiness.response()
    }
}

pub(crate) async fn not_found(req: Request) -> Response {
    let path = req.uri().path().to_owned();
    tracing::info!(path = %path, "request to an unknown endpoint");
    axum::response::IntoResponse::into_response(EdgeError::NotFound(path))
}

pub(crate) async fn method_not_allowed() -> Response {
    axum::response::IntoResponse::into_response(EdgeError::MethodNotAllowed)
}
