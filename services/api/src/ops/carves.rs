//! File carves: listing, one carve's state (completing a carve whose last
//! block arrived but whose completion did not run), a finished carve's
//! archive streamed block by block, and single blocks (for resuming).

use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use gatehouse_core::carves::finalize;
use gatehouse_core::model::Role::{Observer, Operator};
use gatehouse_core::model::{CarveSession, CarveState};
use gatehouse_core::ports::Store;
use gatehouse_proto::v1 as pb;
use http::{HeaderValue, StatusCode, header};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tonic::Status;

use super::campaigns::ListLimit;
use super::page_size;
use crate::ApiError;
use crate::admin::{Admin, Caller};
use crate::grpc::label;
use crate::registry::{
    Answer, Audit, Entry, GrpcReply, Input, IntoPb, Operation, Reply, Spec, Verb, entry,
};

/// Largest chunk of a carve block sent in one gRPC message.
const CHUNK: usize = 1024 * 1024;

pub(super) fn entries() -> Vec<Entry> {
    vec![
        entry::<ListCarves>(),
        entry::<GetCarve>(),
        entry::<DownloadCarve>(),
        entry::<GetCarveBlock>(),
    ]
}

/// A carve with what an operator recognises it by: the host's name and
/// the path its live query asked for.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CarveView {
    #[serde(flatten)]
    pub session: CarveSession,
    pub hostname: String,
    /// From the requesting campaign's SQL (`path = '...'` or
    /// `path LIKE '...'`); absent when it names none or is gone.
    pub path: Option<String>,
}

impl Admin {
    async fn carve_view(&self, session: CarveSession) -> Result<CarveView, ApiError> {
        let hostname = self
            .store
            .get_host(&session.host_id)
            .await?
            .map(|h| h.hostname)
            .unwrap_or_default();
        let path = match session.request_id.as_str() {
            "" => None,
            id => self
                .store
                .get_campaign(id)
                .await?
                .and_then(|c| gatehouse_core::carves::requested_path(&c.sql)),
        };
        Ok(CarveView {
            session,
            hostname,
            path,
        })
    }
}

impl IntoPb for CarveView {
    type Pb = pb::Carve;
    fn into_pb(self) -> pb::Carve {
        let mut c = self.session.into_pb();
        c.hostname = self.hostname;
        c.path = self.path;
        c
    }
}

impl IntoPb for CarveSession {
    type Pb = pb::Carve;
    fn into_pb(self) -> pb::Carve {
        pb::Carve {
            hostname: String::new(),
            path: None,
            session_id: self.session_id,
            host_id: self.host_id.to_string(),
            carve_id: self.carve_id,
            request_id: self.request_id,
            block_count: self.block_count,
            block_size: self.block_size,
            carve_size: self.carve_size,
            blocks_received: self.blocks_received,
            state: label(self.state),
            created_at: self.created_at,
            completed_at: self.completed_at,
            sha256: self.sha256,
            format: self.format,
        }
    }
}

impl IntoPb for Vec<CarveView> {
    type Pb = pb::Carves;
    fn into_pb(self) -> pb::Carves {
        pb::Carves {
            carves: self.into_iter().map(IntoPb::into_pb).collect(),
        }
    }
}

/// A carve by session id.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CarveRef {
    pub id: String,
}

impl Input for CarveRef {
    type Pb = pb::CarveRef;
    fn from_pb(r: pb::CarveRef) -> Result<Self, ApiError> {
        Ok(CarveRef { id: r.id })
    }
    fn target(&self) -> String {
        self.id.clone()
    }
}

pub struct ListCarves;

impl Operation for ListCarves {
    const SPEC: Spec = Spec {
        id: "listCarves",
        verb: Verb::Get,
        path: "/api/v1/carves",
        grpc: "ListCarves",
        summary: "File carves, newest first",
        role: Observer,
        action: "carve.list",
        audit: Audit::Refusals,
        created: false,
    };
    type Req = ListLimit;
    type Resp = Vec<CarveView>;

    async fn run(a: &Admin, _: &Caller, r: ListLimit) -> Result<Vec<CarveView>, ApiError> {
        let mut out = Vec::new();
        let cursor = r.cursor()?;
        let page = a
            .store
            .list_carves(
                cursor.as_ref().map(|(at, id)| (*at, id.as_str())),
                page_size(r.limit, 100, 1000),
            )
            .await?;
        for s in page {
            out.push(a.carve_view(s).await?);
        }
        Ok(out)
    }
}

impl Admin {
    async fn carve(&self, id: &str) -> Result<CarveSession, ApiError> {
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
}

pub struct GetCarve;

impl Operation for GetCarve {
    const SPEC: Spec = Spec {
        id: "getCarve",
        verb: Verb::Get,
        path: "/api/v1/carves/{id}",
        grpc: "GetCarve",
        summary: "One carve's state",
        role: Observer,
        action: "carve.get",
        audit: Audit::Refusals,
        created: false,
    };
    type Req = CarveRef;
    type Resp = CarveView;

    async fn run(a: &Admin, _: &Caller, r: CarveRef) -> Result<CarveView, ApiError> {
        let s = a.carve(&r.id).await?;
        a.carve_view(s).await
    }
}

async fn block(store: &dyn Store, id: &str, block: u64) -> Result<Bytes, ApiError> {
    store
        .get_carve_block(id, block)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("carve {id} block {block}")))
}

/// A block's bytes as gRPC chunks.
fn chunks(block: &Bytes) -> impl Iterator<Item = pb::Chunk> + '_ {
    (0..block.len().div_ceil(CHUNK).max(1)).map(move |i| {
        let end = ((i + 1) * CHUNK).min(block.len());
        pb::Chunk {
            data: block.slice(i * CHUNK..end),
        }
    })
}

/// A finished carve's archive, read block by block as it is sent.
pub struct CarveArchive {
    carve: CarveSession,
    store: Arc<dyn Store>,
}

impl CarveArchive {
    fn blocks(self) -> impl futures_util::Stream<Item = Result<Bytes, ApiError>> + Send {
        let (count, id, store) = (self.carve.block_count, self.carve.session_id, self.store);
        futures_util::stream::unfold(0u64, move |i| {
            let (store, id) = (store.clone(), id.clone());
            async move {
                if i >= count {
                    return None;
                }
                Some((block(store.as_ref(), &id, i).await, i + 1))
            }
        })
    }
}

impl Reply for CarveArchive {
    type Pb = pb::Chunk;
    const STREAMS: bool = true;
    fn answer() -> Answer {
        Answer::Binary
    }
    fn into_rest(self, _: StatusCode) -> Response {
        let c = &self.carve;
        let ext = if c.format.as_deref() == Some("zstd") {
            "tar.zst"
        } else {
            "tar"
        };
        let mut headers = http::HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        if let Ok(v) = HeaderValue::from_str(&c.carve_size.to_string()) {
            headers.insert(header::CONTENT_LENGTH, v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!(
            "attachment; filename=\"{}.{ext}\"",
            c.carve_id.replace('"', "")
        )) {
            headers.insert(header::CONTENT_DISPOSITION, v);
        }
        if let Some(sha) = &c.sha256
            && let Ok(v) = HeaderValue::from_str(sha)
        {
            headers.insert("x-gatehouse-sha256", v);
        }
        let body = futures_util::StreamExt::map(self.blocks(), |r| {
            r.map_err(|e| std::io::Error::other(e.to_string()))
        });
        let mut r = Response::new(Body::from_stream(body));
        r.headers_mut().extend(headers);
        r
    }
    fn into_grpc(self) -> GrpcReply<pb::Chunk> {
        let s = futures_util::StreamExt::flat_map(self.blocks(), |r| {
            let items: Vec<Result<pb::Chunk, Status>> = match r {
                Ok(b) => chunks(&b).map(Ok).collect(),
                Err(e) => vec![Err(Status::from(e))],
            };
            futures_util::stream::iter(items)
        });
        GrpcReply::Stream(Box::pin(s))
    }
}

pub struct DownloadCarve;

impl Operation for DownloadCarve {
    const SPEC: Spec = Spec {
        id: "downloadCarve",
        verb: Verb::Get,
        path: "/api/v1/carves/{id}/download",
        grpc: "DownloadCarve",
        summary: "A finished carve's archive (tar or tar.zst)",
        role: Operator,
        action: "carve.download",
        audit: Audit::Calls,
        created: false,
    };
    type Req = CarveRef;
    type Resp = CarveArchive;

    async fn run(a: &Admin, _: &Caller, r: CarveRef) -> Result<CarveArchive, ApiError> {
        let carve = a.carve(&r.id).await?;
        if carve.state != CarveState::Complete {
            return Err(ApiError::BadRequest(format!(
                "carve {} is not complete ({} of {} blocks received)",
                r.id, carve.blocks_received, carve.block_count
            )));
        }
        Ok(CarveArchive {
            carve,
            store: a.store.clone(),
        })
    }
}

/// One block of a carve.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockRef {
    pub id: String,
    /// The block's index, from 0.
    pub block: u64,
}

impl Input for BlockRef {
    type Pb = pb::CarveBlockRequest;
    fn from_pb(r: pb::CarveBlockRequest) -> Result<Self, ApiError> {
        Ok(BlockRef {
            id: r.id,
            block: r.block,
        })
    }
    fn target(&self) -> String {
        self.id.clone()
    }
    fn detail(&self) -> serde_json::Value {
        serde_json::json!({ "block": self.block })
    }
}

/// One block's bytes.
pub struct CarveBlock(Bytes);

impl Reply for CarveBlock {
    type Pb = pb::Chunk;
    const STREAMS: bool = true;
    fn answer() -> Answer {
        Answer::Binary
    }
    fn into_rest(self, _: StatusCode) -> Response {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            )],
            self.0,
        )
            .into_response()
    }
    fn into_grpc(self) -> GrpcReply<pb::Chunk> {
        let items: Vec<Result<pb::Chunk, Status>> = chunks(&self.0).map(Ok).collect();
        GrpcReply::Stream(Box::pin(futures_util::stream::iter(items)))
    }
}

pub struct GetCarveBlock;

impl Operation for GetCarveBlock {
    const SPEC: Spec = Spec {
        id: "carveBlock",
        verb: Verb::Get,
        path: "/api/v1/carves/{id}/blocks/{block}",
        grpc: "CarveBlock",
        summary: "One block of a carve's archive (to resume a download)",
        role: Operator,
        action: "carve.block",
        audit: Audit::Calls,
        created: false,
    };
    type Req = BlockRef;
    type Resp = CarveBlock;

    async fn run(a: &Admin, _: &Caller, r: BlockRef) -> Result<CarveBlock, ApiError> {
        Ok(CarveBlock(block(a.store.as_ref(), &r.id, r.block).await?))
    }
}
