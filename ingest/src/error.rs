//! Everything an inbound request can fail with, and the one place it becomes an HTTP answer.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use shared::http::{error_response, field_error_response, with_retry_after};

use crate::publisher::{PublishError, PublishOutcome};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Missing or wrong credentials.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The source has no credentials configured; names the variable to set.
    #[error("no credentials are configured for this source: set {0}")]
    NotConfigured(&'static str),
    /// The body as a whole is not valid JSON, PCM or the shape the route expects.
    #[error("{0}")]
    InvalidBody(String),
    /// One field of the body is wrong: named in the message and in the answer's `field`
    /// (`segments[0].text`).
    #[error("{field}: {problem}")]
    InvalidField { field: String, problem: String },
    /// The request cannot be read (not about one parameter).
    #[error("{0}")]
    InvalidRequest(String),
    /// A query parameter or header is missing or wrong: named in the answer's `field` (`uid`,
    /// `sample_rate`, `x-user-id`, `Idempotency-Key`).
    #[error("{message}")]
    InvalidParameter {
        field: &'static str,
        message: String,
    },
    #[error("the body is larger than this route accepts ({limit} bytes)")]
    TooLarge { limit: usize },
    #[error("expected Content-Type {expected}")]
    UnsupportedMediaType { expected: &'static str },
    /// The body did not arrive within `REQUEST_BODY_TIMEOUT_MS`.
    #[error("the body did not arrive in time")]
    BodyTimeout,
    /// `MAX_CONCURRENT_REQUESTS` requests are in progress already.
    #[error("too many requests in progress; retry in {BUSY_RETRY_AFTER_S} s")]
    Busy,
    /// The body would take the bytes in flight past `MAX_BODY_BYTES_IN_FLIGHT`.
    #[error("too many request bodies in flight; retry in {BUSY_RETRY_AFTER_S} s")]
    BodiesInFlight,
    #[error("too many requests for this credential; retry in {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
    #[error("the event could not be queued: {0}")]
    Unavailable(#[from] PublishError),
}

/// Seconds a sender should wait before retrying after a broker problem.
const BROKER_RETRY_AFTER_S: u64 = 5;
/// Seconds a sender should wait before retrying when the process is at its request limit.
const BUSY_RETRY_AFTER_S: u64 = 1;

/// Why a request was answered 503: the `reason` label of `ingest_unavailable_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnavailableReason {
    /// `MAX_CONCURRENT_REQUESTS` in progress.
    Busy,
    /// `MAX_BODY_BYTES_IN_FLIGHT` reached.
    BodyBudget,
    /// The source's credentials variable is unset.
    NotConfigured,
    /// The broker did not confirm: named by the publish's outcome.
    Broker(PublishOutcome),
}

impl UnavailableReason {
    pub const ALL: [UnavailableReason; 8] = [
        UnavailableReason::Busy,
        UnavailableReason::BodyBudget,
        UnavailableReason::NotConfigured,
        UnavailableReason::Broker(PublishOutcome::NotConnected),
        UnavailableReason::Broker(PublishOutcome::Timeout),
        UnavailableReason::Broker(PublishOutcome::Nack),
        UnavailableReason::Broker(PublishOutcome::Returned),
        UnavailableReason::Broker(PublishOutcome::Error),
    ];

    pub fn name(self) -> &'static str {
        match self {
            UnavailableReason::Busy => "busy",
            UnavailableReason::BodyBudget => "body_budget",
            UnavailableReason::NotConfigured => "not_configured",
            UnavailableReason::Broker(outcome) => outcome.name(),
        }
    }
}

impl IngestError {
    /// A 400 about `field` of the body, or (for `.`) about the body as a whole.
    pub fn field(field: &str, problem: impl Into<String>) -> Self {
        match field {
            "." => IngestError::InvalidBody(problem.into()),
            _ => IngestError::InvalidField {
                field: field.to_owned(),
                problem: problem.into(),
            },
        }
    }

    /// A 400 about the query parameter or header `field`; `message` says what is wrong.
    pub fn parameter(field: &'static str, message: impl Into<String>) -> Self {
        IngestError::InvalidParameter {
            field,
            message: message.into(),
        }
    }

    /// True for a 400 about the body, whole or one field of it.
    pub fn is_invalid_body(&self) -> bool {
        matches!(
            self,
            IngestError::InvalidBody(_) | IngestError::InvalidField { .. }
        )
    }

    /// Why a 503 is answered, or `None` when the answer is not a 503.
    pub fn unavailable_reason(&self) -> Option<UnavailableReason> {
        match self {
            IngestError::NotConfigured(_) => Some(UnavailableReason::NotConfigured),
            IngestError::Busy => Some(UnavailableReason::Busy),
            IngestError::BodiesInFlight => Some(UnavailableReason::BodyBudget),
            IngestError::Unavailable(cause) => Some(UnavailableReason::Broker(cause.outcome())),
            _ => None,
        }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        if let Some(reason) = self.unavailable_reason() {
            metrics::counter!("ingest_unavailable_total", "reason" => reason.name()).increment(1);
        }
        let message = self.to_string();
        let response = self.answer(message.clone());
        if response.status().is_client_error() {
            // In the request's span, so with its request id; never with its query string.
            tracing::debug!(status = response.status().as_u16(), reason = %message, "refused");
        }
        response
    }
}

impl IngestError {
    /// The HTTP answer: status, stable code and `message`.
    fn answer(self, message: String) -> Response {
        match self {
            IngestError::Unauthorized(_) => {
                error_response(StatusCode::UNAUTHORIZED, "unauthorized", message)
            }
            IngestError::NotConfigured(_) => {
                error_response(StatusCode::SERVICE_UNAVAILABLE, "not_configured", message)
            }
            IngestError::InvalidBody(_) => {
                error_response(StatusCode::BAD_REQUEST, "invalid_body", message)
            }
            IngestError::InvalidField { field, .. } => {
                field_error_response(StatusCode::BAD_REQUEST, "invalid_body", message, field)
            }
            IngestError::InvalidRequest(_) => {
                error_response(StatusCode::BAD_REQUEST, "invalid_request", message)
            }
            IngestError::InvalidParameter { field, .. } => {
                field_error_response(StatusCode::BAD_REQUEST, "invalid_request", message, field)
            }
            IngestError::TooLarge { .. } => {
                error_response(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
            }
            IngestError::UnsupportedMediaType { .. } => error_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                message,
            ),
            IngestError::BodyTimeout => {
                error_response(StatusCode::REQUEST_TIMEOUT, "request_timeout", message)
            }
            IngestError::Busy | IngestError::BodiesInFlight => with_retry_after(
                error_response(StatusCode::SERVICE_UNAVAILABLE, "busy", message),
                BUSY_RETRY_AFTER_S,
            ),
            IngestError::RateLimited { retry_after_s } => with_retry_after(
                error_response(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message),
                retry_after_s,
            ),
            IngestError::Unavailable(ref cause) => {
                tracing::warn!(error = %cause, "answering 503: event not confirmed");
                with_retry_after(
                    error_response(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message),
                    BROKER_RETRY_AFTER_S,
                )
            }
        }
    }
}
