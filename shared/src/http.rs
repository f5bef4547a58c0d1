//! The small HTTP pieces both servers share: JSON errors, health, metrics and graceful stop.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The error body of every 4xx and 5xx answer: `{"error": "<code>", "message": "<what>"}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: &'static str,
    pub message: String,
}

/// An error answer: status, a stable machine-readable code and a message for people.
pub fn error_response(
    status: StatusCode,
    code: &'static str,
    message: impl Into<String>,
) -> Response {
    let body = ErrorBody {
        error: code,
        message: message.into(),
    };
    (status, Json(body)).into_response()
}

/// Adds `Retry-After: <seconds>` to an answer.
pub fn with_retry_after(mut response: Response, seconds: u64) -> Response {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// `GET /healthz`: the process is up and serving.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::metrics().render(),
    )
}

/// Resolves on SIGTERM or Ctrl-C: the signal to stop taking work and drain.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("stop signal received, draining");
}

/// `GET /openapi.json`: a process's OpenAPI document, served as written.
pub fn openapi_response(document: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document)
}

/// The OpenAPI document of ingest's routes.
pub const INGEST_OPENAPI: &str = include_str!("../openapi/ingest.json");
/// The OpenAPI document of the worker's routes.
pub const WORKER_OPENAPI: &str = include_str!("../openapi/worker.json");

/// Every (method, path) an OpenAPI document lists, path parameters filled with `fill`; tests
/// use it to hold each process's routes and its document to each other.
pub fn documented_routes(document: &str, fill: &str) -> Vec<(String, String)> {
    let document: serde_json::Value = serde_json::from_str(document).expect("OpenAPI JSON");
    let mut routes = Vec::new();
    for (path, operations) in document["paths"].as_object().expect("paths") {
        let filled: String = path
            .split('/')
            .map(|part| if part.starts_with('{') { fill } else { part })
            .collect::<Vec<_>>()
            .join("/");
        for method in operations.as_object().expect("operations").keys() {
            routes.push((method.to_uppercase(), filled.clone()));
        }
    }
    routes
}
