//! The api's one error type, mapped once to HTTP (status + `{"error": ...}`,
//! plus `"field"` when one field is at fault) and to gRPC codes.

use axum::response::{IntoResponse, Response};
use gatehouse_core::config::ConfigError;
use gatehouse_core::ports::StoreError;
use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// A bad request about one field of the input: REST adds `"field"` to
    /// the error body, gRPC the `gatehouse-field` metadata, so a form can
    /// show the message next to that field.
    #[error("{message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("missing or invalid API token")]
    Unauthorized,
    /// Authenticated, but the caller's role does not allow it.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    /// A limit was reached (e.g. concurrent campaigns); retry later.
    #[error("{0}")]
    TooMany(String),
    /// A system the API called for the operator (a webhook receiver)
    /// failed.
    #[error("{0}")]
    Upstream(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::NotFound(what),
            StoreError::Invalid(what) => ApiError::BadRequest(what),
            StoreError::Conflict(what) => ApiError::Conflict(what),
            other => ApiError::Unavailable(format!("storage: {other}")),
        }
    }
}

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Invalid(m) => ApiError::BadRequest(m),
            ConfigError::Field { field, message } => ApiError::Invalid { field, message },
            too_large @ ConfigError::TooLarge { .. } => {
                ApiError::Unprocessable(too_large.to_string())
            }
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if matches!(self, ApiError::Unavailable(_)) {
            tracing::warn!(error = %self, "api request failed");
        }
        let body = match &self {
            ApiError::Invalid { field, message } => {
                serde_json::json!({ "error": message, "field": field })
            }
            other => serde_json::json!({ "error": other.to_string() }),
        };
        (self.status(), axum::Json(body)).into_response()
    }
}
