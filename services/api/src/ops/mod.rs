//! The operator operations, one module per resource, each operation one
//! [`Operation`](crate::registry::Operation) with its logic; and the small
//! request and answer types several resources share.

use axum::response::{IntoResponse, Response};
use gatehouse_proto::v1 as pb;
use http::StatusCode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ApiError;
use crate::registry::{Answer, Entry, GrpcReply, Input, Reply};

pub mod audit;
pub mod campaigns;
pub mod carves;
pub mod definitions;
pub mod destinations;
pub mod fleet;
pub mod host_order;
pub mod hosts;
pub mod identity;
pub mod rules;

/// Every operation, by resource.
pub fn entries() -> Vec<Entry> {
    [
        hosts::entries(),
        definitions::entries(),
        campaigns::entries(),
        carves::entries(),
        identity::entries(),
        audit::entries(),
        rules::entries(),
        destinations::entries(),
        fleet::entries(),
    ]
    .concat()
}

/// A request without parameters (unknown ones are refused).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoInput {}

impl Input for NoInput {
    type Pb = pb::Empty;
    fn from_pb(_: pb::Empty) -> Result<Self, ApiError> {
        Ok(Self {})
    }
}

/// The answer of a deletion: `204 No Content`, or `Empty`.
#[derive(Debug, Clone, Copy)]
pub struct Deleted;

impl Reply for Deleted {
    type Pb = pb::Empty;
    fn answer() -> Answer {
        Answer::NoContent
    }
    fn into_rest(self, _: StatusCode) -> Response {
        StatusCode::NO_CONTENT.into_response()
    }
    fn into_grpc(self) -> GrpcReply<pb::Empty> {
        GrpcReply::One(pb::Empty {})
    }
}

/// A list given as one comma-separated string (a query string's
/// `labels=web,db`) or as a list; empty items are dropped.
pub(crate) fn comma_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let items = match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s.split(',').map(str::to_owned).collect(),
        OneOrMany::Many(v) => v,
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect())
}

/// A page size: absent or 0 means the operation's default; at most `max`.
pub(crate) fn page_size(limit: Option<usize>, default: usize, max: usize) -> usize {
    limit.filter(|l| *l > 0).unwrap_or(default).min(max)
}

/// `limit` from a protobuf request, where 0 means "the default".
pub(crate) fn pb_limit(limit: u32) -> Option<usize> {
    (limit > 0).then_some(limit as usize)
}

/// A newest-first page cursor: the `at` and `id` of the last item of the
/// previous page, both or neither.
pub(crate) fn before(
    at: Option<i64>,
    id: Option<String>,
) -> Result<Option<(i64, String)>, ApiError> {
    match (at, id) {
        (Some(at), Some(id)) => Ok(Some((at, id))),
        (None, None) => Ok(None),
        _ => Err(ApiError::BadRequest(
            "give before_at and before_id together (the last item of the previous page)".into(),
        )),
    }
}
