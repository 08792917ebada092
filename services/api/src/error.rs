//! The api's one error type, mapped once to HTTP (status + `{"error": ...}`)
//! and, later, to gRPC codes.

use axum::response::{IntoResponse, Response};
use gatehouse_core::config::ConfigError;
use gatehouse_core::ports::StoreError;
use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
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
            too_large @ ConfigError::TooLarge { .. } => {
                ApiError::Unprocessable(too_large.to_string())
            }
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
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
        (
            self.status(),
            axum::Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}
