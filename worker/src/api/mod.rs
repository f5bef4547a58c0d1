//! The worker's HTTP surface: health, readiness and metrics, and the management API behind
//! `ADMIN_TOKEN`. The whole route table is here; each resource has a module of its own.

mod auth;
mod dead_letters;
mod deliveries;
mod endpoints;
mod erasure;
mod error;
mod events;
mod input;
mod list;
mod outbound_events;
mod session;
mod sessions;
mod sleep;
mod stream;
mod users;

pub use auth::Admin;
pub use error::ApiError;
pub use list::Page;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use shared::http::{WORKER_OPENAPI, error_response, healthz, metrics, openapi_response};

use crate::WorkerContext;

pub fn router(context: Arc<WorkerContext>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|| async { openapi_response(WORKER_OPENAPI) }),
        )
        .merge(users::routes())
        .merge(erasure::routes())
        .merge(sessions::routes())
        .merge(sleep::routes())
        .merge(dead_letters::routes())
        .merge(endpoints::routes())
        .merge(deliveries::routes())
        .merge(events::routes())
        .merge(outbound_events::routes())
        .merge(session::routes())
        .merge(stream::routes())
        .merge(crate::dashboard::routes())
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(context)
}

/// A known path asked with a method it does not serve: 405, with the `Allow` header axum adds
/// to this answer.
async fn method_not_allowed(method: axum::http::Method) -> Response {
    let message = format!("{method} is not served on this path; Allow lists the methods that are");
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        message,
    )
}

/// How long `/readyz` waits for Postgres to answer.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// `GET /readyz`: 200 `{"status":"ready"}` only when the worker is not stopping, the broker
/// and the database are reachable and every background task runs; else 503 with
/// `{"status":"not_ready","stopping","broker","database","tasks_down":[names]}`, which says
/// what is wrong without any internal error text (the database's error is logged instead;
/// the broker's is logged by the consumer).
async fn readyz(State(context): State<Arc<WorkerContext>>) -> Response {
    let stopping = context.is_stopping();
    let broker = context.broker_connected.load(Ordering::SeqCst);
    let database = database_answers(&context.pool).await;
    let tasks_down = context.tasks.down();
    if !stopping && broker && database && tasks_down.is_empty() {
        return Json(json!({"status": "ready"})).into_response();
    }
    let body = json!({
        "status": "not_ready",
        "stopping": stopping,
        "broker": if broker { "up" } else { "down" },
        "database": if database { "up" } else { "down" },
        "tasks_down": tasks_down,
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// True when Postgres answers `SELECT 1` within [`PROBE_TIMEOUT`]; why not is logged.
async fn database_answers(pool: &sqlx::PgPool) -> bool {
    let probe = sqlx::query("SELECT 1").execute(pool);
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(Ok(_)) => true,
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: the database probe failed");
            false
        }
        Err(_) => {
            tracing::warn!(timeout = ?PROBE_TIMEOUT, "readiness: the database probe timed out");
            false
        }
    }
}
