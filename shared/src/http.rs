//! The small HTTP pieces both servers share: JSON errors, health, metrics and graceful stop.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpSocket};

/// The error body of every 4xx and 5xx answer: `{"error": "<code>", "message": "<what>"}`,
/// plus `"field"` when one parameter or body field is at fault.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An error answer: status, a stable machine-readable code and a message for people.
pub fn error_response(
    status: StatusCode,
    code: &'static str,
    message: impl Into<String>,
) -> Response {
    error_body_response(status, code, message.into(), None)
}

/// An error answer about one field (a query or path parameter, or a field of the body), named
/// in `"field"`.
pub fn field_error_response(
    status: StatusCode,
    code: &'static str,
    message: impl Into<String>,
    field: impl Into<String>,
) -> Response {
    error_body_response(status, code, message.into(), Some(field.into()))
}

fn error_body_response(
    status: StatusCode,
    error: &'static str,
    message: String,
    field: Option<String>,
) -> Response {
    let body = ErrorBody {
        error,
        message,
        field,
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

/// A listening socket on `addr`; with `reuse_port`, bound with `SO_REUSEPORT`, so that other
/// processes that do the same share the port and the kernel spreads new connections over them.
pub fn listen(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Connections waiting to be accepted before the kernel refuses more (`listen(2)`'s backlog,
/// as tokio's `TcpListener::bind` sets it).
const LISTEN_BACKLOG: u32 = 1024;

/// `GET /healthz`: the process is up and serving.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::render(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn processes_that_reuse_the_port_share_it_and_others_cannot() {
        let first = listen("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let addr = first.local_addr().unwrap();
        let second = listen(addr, true).expect("a second SO_REUSEPORT listener binds");
        assert_eq!(second.local_addr().unwrap(), addr);
        let error = listen(addr, false).expect_err("a plain bind finds the port taken");
        assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
    }
}
