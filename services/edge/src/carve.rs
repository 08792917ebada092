//! Carve begin and block.
//!
//! Begin authenticates by node key and answers a random, unguessable
//! `session_id` (omitted, with an `error`, to refuse: the only way the
//! agent understands). Blocks carry no node key in the body; they are
//! authenticated by the session id, and by the `Authorization` header when
//! the agent sends one (≥ 5.23.0). Blocks may arrive out of order or twice;
//! each is checked against its expected length and stored idempotently.
//! When the last distinct block lands, the archive is hashed and the
//! session completed in the background.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use gatehouse_core::carves::finalize;
use gatehouse_core::model::{CarveSession, CarveState};
use gatehouse_core::wire::{self, header_node_key, parse_object};
use gatehouse_proto::v1::{TouchOp, host_request};
use http::StatusCode;
use serde_json::json;

use crate::error::json as json_response;
use crate::handlers::{EdgeState, finish};
use crate::{Edge, EdgeError};

fn ok(v: serde_json::Value) -> Response {
    json_response(
        StatusCode::OK,
        serde_json::to_vec(&v).unwrap_or_else(|_| b"{}".to_vec()),
    )
}

pub(crate) async fn begin(State(edge): EdgeState, req: Request) -> Response {
    finish(&edge, "carve_begin", begin_inner(&edge, req).await)
}

async fn begin_inner(edge: &Edge, req: Request) -> Result<Response, EdgeError> {
    let (auth, _, bytes) = edge.body(req).await?;
    let m = parse_object(&bytes)?;
    let (host, epoch) = edge.authenticate(auth.as_deref(), &m)?;
    let b = wire::parse_carve_begin(&m)?;
    if b.carve_size > edge.cfg.max_carve_bytes {
        return Err(EdgeError::TooLarge(format!(
            "carve of {} bytes exceeds the {}-byte limit",
            b.carve_size, edge.cfg.max_carve_bytes
        )));
    }
    // A block travels base64-encoded (4/3) inside a JSON body.
    if b.block_size.saturating_mul(4) / 3 + 1024 > edge.cfg.max_body_bytes as u64 {
        return Err(EdgeError::TooLarge(format!(
            "block_size {} does not fit the {}-byte request limit",
            b.block_size, edge.cfg.max_body_bytes
        )));
    }
    edge.call(&host, epoch, host_request::Op::Touch(TouchOp {}))
        .await?;
    let session = CarveSession {
        session_id: format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        ),
        host_id: host.clone(),
        carve_id: b.carve_id,
        request_id: b.request_id,
        block_count: b.block_count,
        block_size: b.block_size,
        carve_size: b.carve_size,
        blocks_received: 0,
        state: CarveState::Receiving,
        created_at: edge.deps.clock.now_ms(),
        completed_at: None,
        sha256: None,
        format: None,
    };
    edge.deps
        .store
        .create_carve(&session)
        .await
        .map_err(|e| EdgeError::Unavailable(format!("carve not started: {e}")))?;
    tracing::info!(host = %host, carve_id = %session.carve_id, blocks = session.block_count, size = session.carve_size, "carve started");
    let session_id = session.session_id.clone();
    if session.block_count == 0 {
        // An empty archive: nothing will follow, complete it now.
        complete(edge, session).await;
    }
    Ok(ok(json!({ "session_id": session_id })))
}

async fn complete(edge: &Edge, session: CarveSession) {
    let store = edge.deps.store.clone();
    let sid = session.session_id.clone();
    tokio::spawn(async move {
        match finalize(store.as_ref(), session).await {
            Ok(s) => {
                tracing::info!(session = %sid, sha256 = s.sha256.as_deref().unwrap_or(""), "carve complete")
            }
            Err(e) => tracing::warn!(session = %sid, error = %e, "carve finalization failed"),
        }
    });
}

pub(crate) async fn block(State(edge): EdgeState, req: Request) -> Response {
    finish(&edge, "carve_block", block_inner(&edge, req).await)
}

async fn block_inner(edge: &Arc<crate::Edge>, req: Request) -> Result<Response, EdgeError> {
    let (auth, _, bytes) = edge.body(req).await?;
    let b = wire::parse_carve_block(&bytes)?;
    let session = edge
        .deps
        .store
        .get_carve(&b.session_id)
        .await
        .map_err(|e| EdgeError::Unavailable(format!("carve store: {e}")))?
        .ok_or_else(|| EdgeError::BadRequest("unknown carve session".into()))?;
    if let Some(key) = header_node_key(auth.as_deref()) {
        let (host, _) = edge
            .deps
            .keys
            .verify(key)
            .map_err(|e| EdgeError::NodeInvalid(e.to_string()))?;
        if host != session.host_id {
            return Err(EdgeError::BadRequest(
                "carve session belongs to another host".into(),
            ));
        }
    }
    if !b.request_id.is_empty()
        && !session.request_id.is_empty()
        && b.request_id != session.request_id
    {
        return Err(EdgeError::BadRequest(
            "request_id does not match the carve session".into(),
        ));
    }
    if b.block_id >= session.block_count {
        return Err(EdgeError::BadRequest(format!(
            "block_id {} is outside 0..{}",
            b.block_id, session.block_count
        )));
    }
    let expected = session.block_len(b.block_id);
    if b.data.len() as u64 != expected {
        return Err(EdgeError::BadRequest(format!(
            "block {} holds {} bytes, expected {expected}",
            b.block_id,
            b.data.len()
        )));
    }
    if session.state == CarveState::Complete {
        // A re-send after completion: already stored.
        return Ok(ok(json!({})));
    }
    let outcome = edge
        .deps
        .store
        .put_carve_block(&session.session_id, b.block_id, &b.data)
        .await
        .map_err(|e| EdgeError::Unavailable(format!("block not stored: {e}")))?;
    if outcome.new_block && outcome.blocks_received == session.block_count {
        let mut s = session;
        s.blocks_received = outcome.blocks_received;
        complete(edge, s).await;
    }
    Ok(ok(json!({})))
}
