//! Dead letters: listing the poison messages, and redriving one.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::http::ErrorBody;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use shared::broker::PublishError;

use super::input::{Params, PathId};
use super::list::PageParams;
use super::{Admin, ApiError, Page};
use crate::WorkerContext;
use crate::dead_letters::{self, RedriveError};

pub fn routes() -> OpenApiRouter<Arc<WorkerContext>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(redrive))
}

/// A message the worker could not process, kept for an operator.
#[derive(Serialize, sqlx::FromRow, utoipa::ToSchema)]
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

/// List dead letters, newest first.
#[utoipa::path(get, path = "/v1/dead-letters", tag = "dead letters", params(PageParams),
    responses(
        (status = 200, description = "A page of dead letters", body = Page<DeadLetter>),
        (status = 400, description = "A bad `limit` or `cursor`, or an unknown parameter",
            body = ErrorBody)))]
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

/// `POST /v1/dead-letters/{id}/redrive` answer.
#[derive(Serialize, utoipa::ToSchema)]
struct Redriven {
    id: Uuid,
    /// `redriven`.
    status: &'static str,
}

/// Put a dead letter back on the events queue, to be processed anew.
#[utoipa::path(post, path = "/v1/dead-letters/{id}/redrive", tag = "dead letters",
    params(("id" = Uuid, Path, description = "The dead letter's id")),
    responses(
        (status = 200, description = "Published again", body = Redriven),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such dead letter", body = ErrorBody),
        (status = 503, description = "The broker is unreachable or did not confirm",
            body = ErrorBody)))]
async fn redrive(
    _: Admin,
    State(context): State<Arc<WorkerContext>>,
    PathId(id): PathId,
) -> Result<Json<Redriven>, ApiError> {
    match dead_letters::redrive(&context, id).await {
        Ok(()) => Ok(Json(Redriven {
            id,
            status: "redriven",
        })),
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
