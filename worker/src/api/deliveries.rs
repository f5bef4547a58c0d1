//! `/v1/deliveries`: what was delivered where, and how. List (by endpoint and status, newest
//! first), read one with every attempt, and retry a finished one.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::input::{PageQuery, input, page};
use super::{Admin, ApiError, Page};
use crate::WorkerContext;
use crate::outbound::manual::{self, Retry};

type Ctx = State<Arc<WorkerContext>>;
type Id = Result<Path<Uuid>, PathRejection>;

pub fn routes() -> Router<Arc<WorkerContext>> {
    Router::new()
        .route("/v1/deliveries", get(list))
        .route("/v1/deliveries/{id}", get(read))
        .route("/v1/deliveries/{id}/retry", post(retry))
}

/// One delivery of one event to one endpoint; `id` is its `webhook-id`.
#[derive(Debug, Serialize, sqlx::FromRow)]
struct Delivery {
    id: Uuid,
    event_id: Uuid,
    event_type: String,
    endpoint_id: Uuid,
    status: String,
    attempt_count: i32,
    first_attempt_at: Option<DateTime<Utc>>,
    next_attempt_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// One attempt, as recorded.
#[derive(Debug, Serialize, sqlx::FromRow)]
struct Attempt {
    attempted_at: DateTime<Utc>,
    status_code: Option<i32>,
    latency_ms: i32,
    response_excerpt: Option<String>,
    error: Option<String>,
}

/// A delivery with its attempts, oldest first.
#[derive(Debug, Serialize)]
struct DeliveryDetail {
    #[serde(flatten)]
    delivery: Delivery,
    attempts: Vec<Attempt>,
}

const SELECT: &str =
    "SELECT d.id, d.event_id, o.event_type, d.endpoint_id, d.status, d.attempts AS attempt_count,
        d.first_attempt_at,
        CASE WHEN d.status = 'pending' THEN d.next_attempt_at END AS next_attempt_at,
        d.last_error, d.created_at, d.updated_at
    FROM deliveries d JOIN outbox o ON o.id = d.event_id";

#[derive(Debug, Deserialize)]
struct Filter {
    endpoint_id: Option<Uuid>,
    status: Option<String>,
    limit: Option<i64>,
    cursor: Option<Uuid>,
}

async fn list(
    _: Admin,
    State(context): Ctx,
    query: Result<Query<Filter>, QueryRejection>,
) -> Result<Json<Page<Delivery>>, ApiError> {
    let Query(filter) = input(query)?;
    if let Some(status) = &filter.status
        && !["pending", "succeeded", "failed"].contains(&status.as_str())
    {
        return Err(ApiError::BadRequest(
            "status: must be pending, succeeded or failed".into(),
        ));
    }
    let limit = PageQuery {
        limit: filter.limit,
        cursor: filter.cursor,
    }
    .limit();
    let rows: Vec<Delivery> = sqlx::query_as(&format!(
        "{SELECT} WHERE ($1::uuid IS NULL OR d.endpoint_id = $1)
             AND ($2::text IS NULL OR d.status = $2) AND ($3::uuid IS NULL OR d.id < $3)
         ORDER BY d.id DESC LIMIT $4"
    ))
    .bind(filter.endpoint_id)
    .bind(&filter.status)
    .bind(filter.cursor)
    .bind(limit + 1)
    .fetch_all(&context.pool)
    .await?;
    Ok(Json(page(rows, limit, |delivery| delivery.id)))
}

async fn read(_: Admin, State(context): Ctx, id: Id) -> Result<Json<DeliveryDetail>, ApiError> {
    let Path(id) = input(id)?;
    let delivery: Delivery = sqlx::query_as(&format!("{SELECT} WHERE d.id = $1"))
        .bind(id)
        .fetch_optional(&context.pool)
        .await?
        .ok_or(ApiError::NotFound("delivery"))?;
    let attempts: Vec<Attempt> = sqlx::query_as(
        "SELECT attempted_at, status_code, latency_ms, response_excerpt, error
         FROM delivery_attempts WHERE delivery_id = $1 ORDER BY attempted_at, id",
    )
    .bind(id)
    .fetch_all(&context.pool)
    .await?;
    Ok(Json(DeliveryDetail { delivery, attempts }))
}

async fn retry(
    _: Admin,
    State(context): Ctx,
    id: Id,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Path(id) = input(id)?;
    match manual::retry(&context.pool, id).await? {
        Retry::Requeued => Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "id": id, "status": "pending" })),
        )),
        Retry::AlreadyPending => Err(ApiError::Conflict(
            "the delivery is pending: it is retried on its schedule".into(),
        )),
        Retry::NotFound => Err(ApiError::NotFound("delivery")),
    }
}
