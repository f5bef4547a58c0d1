//! Dead letters: listing the poison messages, and redriving one.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use shared::broker::PublishError;

use super::input::{Params, PathId};
use super::{Admin, ApiError, Page};
use crate::WorkerContext;
use crate::dead_letters::{self, RedriveError};

pub fn routes() -> Router<Arc<WorkerContext>> {
    Router::new()
        .route("/v1/dead-letters", get(list))
        .route("/v1/dead-letters/{id}/redrive", post(redrive))
}

#[derive(Serialize, sqlx::FromRow)]
struct DeadLetter {
    id: Uuid,
    event_id: Option<Uuid>,
    kind: Option<String>,
    uid: Option<String>,
    reason: Option<String>,
    payload_bytes: i32,
    dead_at: DateTime<Utc>,
    redriven_at: Option<DateTime<Utc>>,
}

/// `GET /v1/dead-letters`: newest first (ids are time-ordered UUIDs).
async fn list(
    _: Admin,
    State(context): State<Arc<WorkerContext>>,
    mut params: Params,
) -> Result<Json<Page<DeadLetter>>, ApiError> {
    let page = params.page::<Uuid>("dead-letters")?;
    params.finish()?;
    let rows: Vec<DeadLetter> = sqlx::query_as(
        "SELECT id, event_id, kind, uid, reason, length(payload) AS payload_bytes, dead_at, redriven_at
         FROM dead_letters WHERE id < COALESCE($1, 'ffffffff-ffff-ffff-ffff-ffffffffffff')
         ORDER BY id DESC LIMIT $2",
    )
    .bind(page.after)
    .bind(page.fetch())
    .fetch_all(&context.pool)
    .await?;
    Ok(Json(page.page(rows, |letter| letter.id)))
}

/// `POST /v1/dead-letters/{id}/redrive`: back on the events queue, processed anew.
async fn redrive(
    _: Admin,
    State(context): State<Arc<WorkerContext>>,
    PathId(id): PathId,
) -> Result<Json<serde_json::Value>, ApiError> {
    match dead_letters::redrive(&context, id).await {
        Ok(()) => Ok(Json(json!({"id": id, "status": "redriven"}))),
        Err(RedriveError::NotFound) => Err(ApiError::NotFound("dead letter")),
        Err(RedriveError::NotConnected) => {
            Err(ApiError::Unavailable("not connected to the broker".into()))
        }
        Err(RedriveError::Publish(PublishError::Unroutable)) => Err(ApiError::Unavailable(
            "the events exchange routed the message to no queue; it stays a dead letter".into(),
        )),
        Err(RedriveError::Publish(_)) => Err(ApiError::Unavailable(
            "the broker did not confirm the message; it stays a dead letter".into(),
        )),
        Err(other) => Err(ApiError::Internal(other.into())),
    }
}
