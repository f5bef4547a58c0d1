//! Dead letters: listing the poison messages, and redriving one.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use shared::broker::PublishError;

use super::{Admin, ApiError, Page};
use crate::WorkerContext;
use crate::dead_letters::{self, RedriveError};

pub fn routes() -> Router<Arc<WorkerContext>> {
    Router::new()
        .route("/v1/dead-letters", get(list))
        .route("/v1/dead-letters/{id}/redrive", post(redrive))
}

const PAGE_LIMIT: i64 = 100;

#[derive(Deserialize)]
struct ListQuery {
    /// The cursor of the previous page: the id it ended with.
    after: Option<Uuid>,
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

/// `GET /v1/dead-letters`: oldest first.
async fn list(
    _: Admin,
    State(context): State<Arc<WorkerContext>>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Page<DeadLetter>>, ApiError> {
    let items: Vec<DeadLetter> = sqlx::query_as(
        "SELECT id, event_id, kind, uid, reason, length(payload) AS payload_bytes, dead_at, redriven_at
         FROM dead_letters WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2",
    )
    .bind(query.after)
    .bind(PAGE_LIMIT)
    .fetch_all(&context.pool)
    .await?;
    let next = (items.len() as i64 == PAGE_LIMIT)
        .then(|| items.last().map(|item| item.id.to_string()))
        .flatten();
    Ok(Json(Page { items, next }))
}

/// `POST /v1/dead-letters/{id}/redrive`: back on the events queue, processed anew.
async fn redrive(
    _: Admin,
    State(context): State<Arc<WorkerContext>>,
    Path(id): Path<Uuid>,
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
