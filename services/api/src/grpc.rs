//! gRPC over the operation registry (`gatehouse.v1.Admin`, see
//! `proto/gatehouse/v1/admin.proto`): each call is routed by its method
//! name to its [`Operation`], decoded from its protobuf message through the
//! request type's [`Input::from_pb`], and answered through the same
//! invocation as REST (the same callers, roles, validation, audit log and
//! errors), served on the API listener beside REST (HTTP/2, selected by
//! ALPN over TLS). Bearer-token auth from the `authorization` metadata;
//! errors map once from [`ApiError`] to gRPC status codes.
//!
//! Agent JSON (host details, result rows, options) crosses as
//! `google.protobuf.Struct`; the conversions below are lossless for every
//! JSON value osquery produces (numbers become doubles, as in any Struct).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use gatehouse_core::nodekey::secret_matches;
use prost_types::value::Kind;
use serde_json::{Map, Value};
use tonic::server::{Grpc, NamedService, ServerStreamingService, UnaryService};
use tonic::{Request, Response, Status};

use crate::ApiError;
use crate::admin::{Admin, Caller};
use crate::registry::{GrpcReply, Input, Operation, PbStream, Reply};

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let m = e.to_string();
        match e {
            ApiError::BadRequest(_) => Status::invalid_argument(m),
            ApiError::Invalid { field, .. } => {
                let mut s = Status::invalid_argument(m);
                s.metadata_mut().insert(
                    "gatehouse-field",
                    tonic::metadata::MetadataValue::from_static(field),
                );
                s
            }
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

/// Accepts any of `tokens` (constant-time comparison): the control
/// services' check.
pub fn token_check(tokens: Vec<String>) -> gatehouse_runtime::grpc::TokenCheck {
    Arc::new(move |t| tokens.iter().any(|k| secret_matches(t, k)))
}

/// The `gatehouse.v1.Admin` service.
pub fn routes(admin: Arc<Admin>) -> tonic::service::Routes {
    let table = crate::registry::operations()
        .into_iter()
        .map(|e| (format!("/{}/{}", crate::GRPC_SERVICE, e.spec.grpc), e.grpc))
        .collect();
    tonic::service::Routes::new(AdminGrpc {
        admin,
        table: Arc::new(table),
    })
}

/// Dispatches each call to its operation by path.
#[derive(Clone)]
pub struct AdminGrpc {
    admin: Arc<Admin>,
    table: Arc<HashMap<String, crate::registry::GrpcFn>>,
}

impl NamedService for AdminGrpc {
    const NAME: &'static str = crate::GRPC_SERVICE;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for AdminGrpc {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        match self.table.get(req.uri().path()) {
            Some(f) => {
                let fut = f(self.admin.clone(), req);
                Box::pin(async move { Ok(fut.await) })
            }
            None => {
                let path = req.uri().path().to_owned();
                Box::pin(async move {
                    Ok(Status::unimplemented(format!("no method {path}")).into_http())
                })
            }
        }
    }
}

/// The caller of `r`, from its `authorization: Bearer` metadata.
async fn caller<T>(admin: &Admin, r: &Request<T>) -> Result<Caller, Status> {
    let token = r
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    Ok(admin.authenticate(token).await?)
}

type PbIn<O> = <<O as Operation>::Req as Input>::Pb;
type PbOut<O> = <<O as Operation>::Resp as Reply>::Pb;

async fn invoke<O: Operation>(
    admin: &Admin,
    r: Request<PbIn<O>>,
) -> Result<GrpcReply<PbOut<O>>, Status> {
    let c = caller(admin, &r).await?;
    let req = <O::Req as Input>::from_pb(r.into_inner())?;
    Ok(admin.invoke::<O>(&c, req).await?.into_grpc())
}

/// One call of `O`.
struct Call<O>(Arc<Admin>, PhantomData<fn() -> O>);

impl<O: Operation> UnaryService<PbIn<O>> for Call<O> {
    type Response = PbOut<O>;
    type Future = BoxFuture<Result<Response<PbOut<O>>, Status>>;

    fn call(&mut self, r: Request<PbIn<O>>) -> Self::Future {
        let admin = self.0.clone();
        Box::pin(async move {
            match invoke::<O>(&admin, r).await? {
                GrpcReply::One(p) => Ok(Response::new(p)),
                GrpcReply::Stream(_) => Err(Status::internal("a stream answered a unary call")),
            }
        })
    }
}

impl<O: Operation> ServerStreamingService<PbIn<O>> for Call<O> {
    type Response = PbOut<O>;
    type ResponseStream = PbStream<PbOut<O>>;
    type Future = BoxFuture<Result<Response<PbStream<PbOut<O>>>, Status>>;

    fn call(&mut self, r: Request<PbIn<O>>) -> Self::Future {
        let admin = self.0.clone();
        Box::pin(async move {
            let s: PbStream<PbOut<O>> = match invoke::<O>(&admin, r).await? {
                GrpcReply::Stream(s) => s,
                GrpcReply::One(p) => Box::pin(futures_util::stream::iter([Ok(p)])),
            };
            Ok(Response::new(s))
        })
    }
}

/// Serves one gRPC call of `O` (see [`crate::registry::Entry`]).
pub(crate) fn call<O: Operation>(
    admin: Arc<Admin>,
    req: http::Request<tonic::body::Body>,
) -> BoxFuture<http::Response<tonic::body::Body>> {
    Box::pin(async move {
        let codec = tonic_prost::ProstCodec::<PbOut<O>, PbIn<O>>::default();
        let mut grpc = Grpc::new(codec);
        let svc = Call::<O>(admin, PhantomData);
        if <O::Resp as Reply>::STREAMS {
            grpc.server_streaming(svc, req).await
        } else {
            grpc.unary(svc, req).await
        }
    })
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

pub(crate) fn object(v: Value) -> prost_types::Struct {
    match v {
        Value::Object(m) => to_pb_struct(m),
        other => to_pb_struct(Map::from_iter([("value".to_owned(), other)])),
    }
}

pub(crate) fn label(v: impl serde::Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
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
