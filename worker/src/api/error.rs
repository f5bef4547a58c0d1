//! Every failure of the management API, and the one place it becomes an HTTP answer. Internal
//! errors are logged with their cause and answered as an opaque 500.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use shared::http::error_response;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("the management API is disabled: set {0}")]
    NotConfigured(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        ApiError::Internal(error.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        match self {
            ApiError::Unauthorized => {
                error_response(StatusCode::UNAUTHORIZED, "unauthorized", message)
            }
            ApiError::NotConfigured(_) => {
                error_response(StatusCode::SERVICE_UNAVAILABLE, "not_configured", message)
            }
            ApiError::BadRequest(_) => {
                error_response(StatusCode::BAD_REQUEST, "bad_request", message)
            }
            ApiError::NotFound(_) => error_response(StatusCode::NOT_FOUND, "not_found", message),
            ApiError::Conflict(_) => error_response(StatusCode::CONFLICT, "conflict", message),
            ApiError::Unavailable(_) => {
                error_response(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            ApiError::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "internal error");
                error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        }
    }
}
