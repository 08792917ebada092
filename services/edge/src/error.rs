//! The edge's one error type, mapped once to an HTTP status and an osquery
//! error body. The status is for humans and proxies; the agent reads only
//! the body, which always carries `error` (and `node_invalid` for keys).

use axum::response::{IntoResponse, Response};
use gatehouse_core::wire::{WireError, error_body, node_invalid_body};
use http::{HeaderValue, StatusCode, header};

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    UnsupportedEncoding(String),
    #[error("{0}")]
    NodeInvalid(String),
    #[error("{0}")]
    EnrollDenied(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("server is busy, keep the data and retry later")]
    Backpressure,
    #[error("unknown endpoint {0}")]
    NotFound(String),
    #[error("method not allowed: osquery endpoints take POST")]
    MethodNotAllowed,
}

impl From<WireError> for EdgeError {
    fn from(e: WireError) -> Self {
        EdgeError::BadRequest(e.to_string())
    }
}

impl EdgeError {
    pub fn status(&self) -> StatusCode {
        match self {
            EdgeError::BadRequest(_) => StatusCode::BAD_REQUEST,
            EdgeError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            EdgeError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            EdgeError::NodeInvalid(_) | EdgeError::EnrollDenied(_) => StatusCode::UNAUTHORIZED,
            EdgeError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            EdgeError::Backpressure => StatusCode::TOO_MANY_REQUESTS,
            EdgeError::NotFound(_) => StatusCode::NOT_FOUND,
            EdgeError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

pub(crate) fn json(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    let mut r = (status, body.into()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

impl IntoResponse for EdgeError {
    fn into_response(self) -> Response {
        let msg = self.to_string();
        let body = match &self {
            EdgeError::NodeInvalid(_) => node_invalid_body(&msg),
            _ => error_body(&msg),
        };
        let mut r = json(self.status(), body);
        if matches!(self, EdgeError::Backpressure | EdgeError::Unavailable(_)) {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
        }
        r
    }
}
