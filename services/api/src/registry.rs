//! The one registry of operator operations.
//!
//! Each operation is one type implementing [`Operation`]: its [`Spec`]
//! (REST method and path, gRPC method, summary, least role, audit action),
//! its request type (an [`Input`]: how it decodes, from JSON, a query
//! string or protobuf, with its defaults and validation), its answer (a
//! [`Reply`]: JSON, no content, an event stream or bytes, and its protobuf
//! form) and its logic. Everything else is derived from that one
//! declaration: the REST routes ([`crate::rest`]), the gRPC dispatch
//! ([`crate::grpc`]), the OpenAPI document ([`crate::openapi`]), and the
//! role check and audit record every call goes through
//! ([`Admin::invoke`]), so a documented role cannot drift from the
//! enforced one.
//!
//! Adding an operation: one `impl Operation` in the resource's module under
//! [`crate::ops`] (declaration plus logic), listed in that module's
//! `entries()`; a new gRPC method also needs its `rpc` line in
//! `admin.proto`, whose messages the request and answer convert from and to.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::response::Response;
use futures_util::Stream;
use gatehouse_core::model::Role;
use http::StatusCode;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::Status;

use crate::ApiError;
use crate::admin::{Admin, Caller};

/// An HTTP method an operation is served on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Verb {
    pub fn method(self) -> http::Method {
        match self {
            Verb::Get => http::Method::GET,
            Verb::Post => http::Method::POST,
            Verb::Put => http::Method::PUT,
            Verb::Patch => http::Method::PATCH,
            Verb::Delete => http::Method::DELETE,
        }
    }

    /// GET and DELETE take their input from the path and the query string;
    /// the others from the path and a JSON body.
    pub fn has_body(self) -> bool {
        !matches!(self, Verb::Get | Verb::Delete)
    }
}

/// What the audit log records of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audit {
    /// Only refusals (reads: nothing changes).
    Refusals,
    /// Every call before it acts (nothing happens unrecorded: when the
    /// record cannot be written the call is refused), and its failure.
    Calls,
}

/// The declaration of one operation.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// The REST operationId, e.g. `listHosts`.
    pub id: &'static str,
    pub verb: Verb,
    /// axum's path syntax, which is OpenAPI's (`/api/v1/hosts/{id}`); each
    /// `{param}` is a field of the request type.
    pub path: &'static str,
    /// The method of `gatehouse.v1.Admin`, e.g. `ListHosts`.
    pub grpc: &'static str,
    pub summary: &'static str,
    /// The least role that may call it.
    pub role: Role,
    /// The audit log's name for it, e.g. `host.set_labels`.
    pub action: &'static str,
    pub audit: Audit,
    /// REST answers `201 Created` instead of `200 OK`.
    pub created: bool,
}

/// An operation's request: decoded strictly (unknown fields refused) from
/// REST (path parameters plus the query string or the JSON body) or from
/// its protobuf message; it owns its defaults and validation.
pub trait Input: DeserializeOwned + JsonSchema + Send + Sized + 'static {
    type Pb: prost::Message + Default + Send + 'static;
    fn from_pb(pb: Self::Pb) -> Result<Self, ApiError>;
    /// What the call acts on, for the audit log (a host id, a name).
    fn target(&self) -> String {
        String::new()
    }
    /// What the audit log keeps of the request (never a secret).
    fn detail(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    /// The role this request needs, when it depends on the request (a rule
    /// with webhooks needs an admin).
    fn role(&self, declared: Role) -> Role {
        declared
    }
    /// The audit action, when it depends on the request.
    fn action(&self, declared: &'static str) -> &'static str {
        declared
    }
}

/// A stream of protobuf messages answering a server-streaming call.
pub type PbStream<P> = Pin<Box<dyn Stream<Item = Result<P, Status>> + Send>>;

/// An answer over gRPC: one message, or a stream of them.
pub enum GrpcReply<P> {
    One(P),
    Stream(PbStream<P>),
}

/// What a successful call answers over REST, for the OpenAPI document.
#[derive(Clone, Copy)]
pub enum Answer {
    Json(fn(&mut SchemaGenerator) -> Schema),
    NoContent,
    Binary,
    /// `text/event-stream`: one event per message of this schema, named by
    /// its `type`.
    Events(fn(&mut SchemaGenerator) -> Schema),
}

/// An operation's answer, over REST and gRPC. Every JSON type with a
/// protobuf form ([`IntoPb`]) is one.
pub trait Reply: Send + Sized + 'static {
    type Pb: prost::Message + Default + Send + 'static;
    /// Answered as a gRPC server stream.
    const STREAMS: bool = false;
    fn answer() -> Answer;
    fn into_rest(self, status: StatusCode) -> Response;
    fn into_grpc(self) -> GrpcReply<Self::Pb>;
}

/// The protobuf form of an answer.
pub trait IntoPb {
    type Pb: prost::Message + Default + Send + 'static;
    fn into_pb(self) -> Self::Pb;
}

fn schema_of<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

impl<T: Serialize + JsonSchema + IntoPb + Send + 'static> Reply for T {
    type Pb = T::Pb;
    fn answer() -> Answer {
        Answer::Json(schema_of::<T>)
    }
    fn into_rest(self, status: StatusCode) -> Response {
        use axum::response::IntoResponse;
        (status, axum::Json(self)).into_response()
    }
    fn into_grpc(self) -> GrpcReply<Self::Pb> {
        GrpcReply::One(self.into_pb())
    }
}

/// One operator operation: its declaration and its logic.
pub trait Operation: Send + Sync + 'static {
    const SPEC: Spec;
    type Req: Input;
    type Resp: Reply;
    /// The logic, once the caller's role was checked and the call recorded.
    fn run(
        admin: &Admin,
        caller: &Caller,
        req: Self::Req,
    ) -> impl Future<Output = Result<Self::Resp, ApiError>> + Send;
    /// What the answer adds to the call's audit row (ADR 0019): a target
    /// the request could not name (a new campaign's id) and details.
    fn audited(_resp: &Self::Resp) -> Option<Audited> {
        None
    }
}

/// An answer's addition to its audit row.
#[derive(Debug, Clone, Default)]
pub struct Audited {
    /// Replaces the row's target.
    pub target: Option<String>,
    /// Merged into the row's detail.
    pub detail: serde_json::Map<String, serde_json::Value>,
}

/// Serves one gRPC call of an operation (see [`crate::grpc`]).
pub type GrpcFn = fn(
    Arc<Admin>,
    http::Request<tonic::body::Body>,
) -> Pin<Box<dyn Future<Output = http::Response<tonic::body::Body>> + Send>>;

/// An operation as the adapters see it, with every generic part
/// instantiated.
#[derive(Clone, Copy)]
pub struct Entry {
    pub spec: Spec,
    pub(crate) rest: fn() -> axum::routing::MethodRouter<Arc<Admin>>,
    pub(crate) grpc: GrpcFn,
    /// The request's schema (inline) for the OpenAPI document.
    pub(crate) input: fn(&mut SchemaGenerator) -> Schema,
    pub(crate) answer: fn() -> Answer,
}

/// The [`Entry`] of `O`.
pub fn entry<O: Operation>() -> Entry {
    Entry {
        spec: O::SPEC,
        rest: crate::rest::route::<O>,
        grpc: crate::grpc::call::<O>,
        input: <O::Req as JsonSchema>::json_schema,
        answer: <O::Resp as Reply>::answer,
    }
}

/// Every operation.
pub fn operations() -> Vec<Entry> {
    crate::ops::entries()
}

impl Admin {
    /// Calls `O` for `c`: checks the role (a refusal is recorded), records
    /// the call when the operation is audited, then runs it.
    pub async fn invoke<O: Operation>(&self, c: &Caller, req: O::Req) -> Result<O::Resp, ApiError> {
        let spec = O::SPEC;
        let role = req.role(spec.role);
        let action = req.action(spec.action);
        let target = req.target();
        match spec.audit {
            Audit::Refusals => {
                self.require(c, role, action, &target).await?;
                O::run(self, c, req).await
            }
            Audit::Calls => {
                let detail = req.detail();
                self.require(c, role, action, &target).await?;
                let row = self.audit_pending(c, action, &target, detail).await?;
                let r = O::run(self, c, req).await;
                let outcome = match &r {
                    Ok(v) => Ok(O::audited(v)),
                    Err(e) => Err(e.to_string()),
                };
                self.audit_outcome(row, outcome).await;
                r
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_declared_once_with_a_consistent_spec() {
        let ops = operations();
        let mut ids: Vec<&str> = ops.iter().map(|e| e.spec.id).collect();
        let mut grpc: Vec<&str> = ops.iter().map(|e| e.spec.grpc).collect();
        let mut routes: Vec<(&str, http::Method)> = ops
            .iter()
            .map(|e| (e.spec.path, e.spec.verb.method()))
            .collect();
        let mut actions: Vec<&str> = ops.iter().map(|e| e.spec.action).collect();
        let n = ops.len();
        ids.sort_unstable();
        ids.dedup();
        grpc.sort_unstable();
        grpc.dedup();
        routes.sort_by(|a, b| (a.0, a.1.as_str()).cmp(&(b.0, b.1.as_str())));
        routes.dedup();
        actions.sort_unstable();
        actions.dedup();
        assert_eq!(ids.len(), n, "operation ids are unique");
        assert_eq!(grpc.len(), n, "gRPC methods are unique");
        assert_eq!(routes.len(), n, "REST routes are unique");
        assert_eq!(actions.len(), n, "audit actions are unique");
        for e in &ops {
            let s = e.spec;
            assert!(s.path.starts_with("/api/v1/"), "{}: {}", s.id, s.path);
            assert!(
                s.grpc.chars().next().is_some_and(char::is_uppercase),
                "{}",
                s.id
            );
            // Writes are recorded; reads change nothing and need no record.
            if s.verb != Verb::Get {
                assert_eq!(s.audit, Audit::Calls, "{} changes state", s.id);
            }
        }
    }
}
