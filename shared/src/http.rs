//! The small HTTP pieces both servers share: JSON errors, health, metrics and graceful stop.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpSocket};

/// The error body of every 4xx and 5xx answer: `{"error": "<code>", "message": "<what>"}`,
/// plus `"field"` when one parameter or body field is at fault.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"error": "bad_request", "message": "limit: \"0\" is not a number from 1 to 1000", "field": "limit"}))]
pub struct ErrorBody {
    /// A stable, machine-readable code: `bad_request`, `unauthorized`, `not_found`, ...
    pub error: &'static str,
    /// What is wrong, for people; names the field at fault when there is one.
    pub message: String,
    /// The query or path parameter, or the body field (`event_types[0]`), at fault.
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
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "The process is up", body = String,
        content_type = "text/plain", example = "ok")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Every metric, in Prometheus text format 0.0.4",
        body = String, content_type = "text/plain")))]
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
