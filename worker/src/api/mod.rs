//! The worker's HTTP surface: health, readiness and metrics, and the management API behind
//! `ADMIN_TOKEN`. The whole route table is here; each resource has a module of its own, whose
//! handlers carry their OpenAPI operations (`#[utoipa::path]`): [`routes`] registers each route
//! with its operation, so `GET /openapi.json` ([`openapi`]) documents exactly what is served.

mod auth;
mod dead_letters;
mod deliveries;
mod endpoints;
mod erasure;
mod error;
mod events;
mod input;
mod list;
mod openapi;
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
use axum::{Json, Router};
use shared::http::error_response;
use shared::openapi::Served;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::WorkerContext;

pub fn router(context: Arc<WorkerContext>) -> Router {
    let (router, _) = routes().split_for_parts();
    router
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(context)
}

/// The worker's OpenAPI 3.1 document, generated from [`routes`].
pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi::finish(routes().into_openapi())
}

/// Every route, each registered with its operation: the route table and the document in one.
fn routes() -> OpenApiRouter<Arc<WorkerContext>> {
    OpenApiRouter::with_openapi(openapi::Frame::openapi())
        .routes(routes!(shared::http::healthz))
        .routes(routes!(readyz))
        .routes(routes!(shared::http::metrics))
        .routes(routes!(openapi_json))
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
}

static DOCUMENT: Served = Served::new(openapi);

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "The worker's OpenAPI 3.1 document, generated from         the route table", body = serde_json::Value)))]
async fn openapi_json() -> Response {
    DOCUMENT.response()
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

/// The answer of `/readyz`: `{"status": "ready"}`, or what is wrong.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Readiness {
    /// `ready` or `not_ready`.
    status: &'static str,
    /// The rest only when not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    stopping: Option<bool>,
    /// `up` or `down`.
    #[serde(skip_serializing_if = "Option::is_none")]
    broker: Option<&'static str>,
    /// `up` or `down`.
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<&'static str>,
    /// The names of the background tasks that are down.
    #[serde(skip_serializing_if = "Option::is_none")]
    tasks_down: Option<Vec<&'static str>>,
}

impl Readiness {
    const READY: Readiness = Readiness {
        status: "ready",
        stopping: None,
        broker: None,
        database: None,
        tasks_down: None,
    };
}

/// How long `/readyz` waits for Postgres to answer.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Readiness: 200 only when the broker, the database and every background task are up.
///
/// `GET /readyz`: 200 `{"status":"ready"}` only when the worker is not stopping, the broker
/// and the database are reachable and every background task runs; else 503 with
/// `{"status":"not_ready","stopping","broker","database","tasks_down":[names]}`, which says
/// what is wrong without any internal error text (the database's error is logged instead;
/// the broker's is logged by the consumer).
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses(
        (status = 200, description = "Ready: `{\"status\": \"ready\"}`", body = Readiness),
        (status = 503, description = "Stopping, or the broker, the database or a background \
            task is down", body = Readiness)))]
async fn readyz(State(context): State<Arc<WorkerContext>>) -> Response {
    let stopping = context.is_stopping();
    let broker = context.broker_connected.load(Ordering::SeqCst);
    let database = database_answers(&context.pool).await;
    let tasks_down = context.tasks.down();
    if !stopping && broker && database && tasks_down.is_empty() {
        return Json(Readiness::READY).into_response();
    }
    let up = |up: bool| Some(if up { "up" } else { "down" });
    let body = Readiness {
        status: "not_ready",
        stopping: Some(stopping),
        broker: up(broker),
        database: up(database),
        tasks_down: Some(tasks_down),
    };
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
