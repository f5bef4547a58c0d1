//! The worker's HTTP surface: health, readiness and metrics, and the management API behind
//! `ADMIN_TOKEN`. The whole route table is here; each resource has a module of its own.

mod auth;
mod dead_letters;
mod deliveries;
mod endpoints;
mod error;
mod input;
mod sessions;
mod sleep;
mod users;

pub use auth::Admin;
pub use error::ApiError;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
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
        .merge(sessions::routes())
        .merge(sleep::routes())
        .merge(dead_letters::routes())
        .merge(endpoints::routes())
        .merge(deliveries::routes())
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(context)
}

/// A page of a list: `{"items": [...], "next": <cursor or null>}`.
#[derive(Debug, Serialize)]
pub struct Page<T: Serialize> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// `GET /readyz`: 200 only when both the broker and the database are reachable.
async fn readyz(State(context): State<Arc<WorkerContext>>) -> Response {
    if !context.broker_connected.load(Ordering::SeqCst) {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "not connected to the broker",
        );
    }
    match sqlx::query("SELECT 1").execute(&context.pool).await {
        Ok(_) => "ready".into_response(),
        Err(error) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("database unreachable: {error}"),
        ),
    }
}
