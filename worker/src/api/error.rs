//! Every failure of the management API, and the one place it becomes an HTTP answer: the JSON
//! shape of ingest's errors (`shared::http::error_response`), `{"error","message"}` plus
//! `"field"` when one parameter or body field is at fault. Internal errors are logged with
//! their cause and answered as an opaque 500.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use shared::http::{error_response, field_error_response};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("the management API is disabled: set {0}")]
    NotConfigured(&'static str),
    /// A request that is wrong as a whole (no one field to name).
    #[error("{0}")]
    BadRequest(String),
    /// One query or path parameter, or one field of the body, is wrong; the message names it.
    #[error("{message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A rejection of axum's own (a body too large, say), with its status kept.
    #[error("{1}")]
    Rejected(StatusCode, String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A 400 about `field`; the message is prefixed with the field's name.
    pub fn invalid(field: impl Into<String>, problem: impl std::fmt::Display) -> Self {
        let field = field.into();
        let message = format!("{field}: {problem}");
        ApiError::Invalid { field, message }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        ApiError::Internal(error.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let (status, code) = match self {
            ApiError::Invalid { field, message } => {
                return field_error_response(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    message,
                    field,
                );
            }
            ApiError::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotConfigured(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_configured"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Rejected(status, _) => (status, rejected_code(status)),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        error_response(status, code, message)
    }
}

/// The code of a rejection axum made, by its status.
fn rejected_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        status if status.is_server_error() => "internal",
        _ => "bad_request",
    }
}
