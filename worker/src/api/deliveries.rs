//! `/v1/deliveries`: what was delivered where, and how. List (newest first, by endpoint,
//! status, event type, uid and creation time), read one with every attempt, and retry a
//! finished one. A pending delivery of a disabled endpoint is shown as `paused`: nothing sends
//! it until the endpoint is enabled again (the claim skips disabled endpoints).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::http::ErrorBody;
use sqlx::QueryBuilder;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::input::{Params, PathId};
use super::list::{PageParams, filter};
use super::{Admin, ApiError, Page};
use crate::WorkerContext;
use crate::outbound::manual::{self, Retry};
use crate::outbound::outbox::EventType;

type Ctx = State<Arc<WorkerContext>>;

pub fn routes() -> OpenApiRouter<Arc<WorkerContext>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(read))
        .routes(routes!(retry))
}

/// One delivery of one event to one endpoint; `id` is its `webhook-id`.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub(super) struct Delivery {
    id: Uuid,
    /// The outbound event delivered.
    pub event_id: Uuid,
    event_type: String,
    endpoint_id: Uuid,
    /// `pending`, `paused` (pending, its endpoint disabled), `succeeded` or `failed`.
    status: String,
    attempt_count: i32,
    first_attempt_at: Option<DateTime<Utc>>,
    next_attempt_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// One attempt, as recorded.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
struct Attempt {
    attempted_at: DateTime<Utc>,
    status_code: Option<i32>,
    latency_ms: i32,
    response_excerpt: Option<String>,
    error: Option<String>,
}

/// A delivery with its attempts, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct DeliveryDetail {
    #[serde(flatten)]
    delivery: Delivery,
    attempts: Vec<Attempt>,
}

const SELECT: &str = "SELECT d.id, d.event_id, o.event_type, d.endpoint_id,
        CASE WHEN d.status = 'pending' AND NOT e.enabled THEN 'paused' ELSE d.status END
            AS status,
        d.attempts AS attempt_count, d.first_attempt_at,
        CASE WHEN d.status = 'pending' AND e.enabled THEN d.next_attempt_at END
            AS next_attempt_at,
        d.last_error, d.created_at, d.updated_at
    FROM deliveries d JOIN outbox o ON o.id = d.event_id JOIN endpoints e ON e.id = d.endpoint_id";

/// The statuses a delivery is shown with.
const STATUSES: [&str; 4] = ["pending", "paused", "succeeded", "failed"];

/// Adds the condition for deliveries shown with `status` (one of [`STATUSES`]).
fn status_filter(query: &mut QueryBuilder<'_, sqlx::Postgres>, status: Option<String>) {
    let Some(status) = status else {
        return;
    };
    match status.as_str() {
        "pending" => query.push(" AND d.status = 'pending' AND e.enabled"),
        "paused" => query.push(" AND d.status = 'pending' AND NOT e.enabled"),
        _ => query.push(" AND d.status = ").push_bind(status.clone()),
    };
}

/// What `GET /v1/deliveries` is asked for.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Filter {
    endpoint_id: Option<Uuid>,
    /// `pending`, `paused`, `succeeded` or `failed`.
    status: Option<String>,
    /// An outbound event type, such as `transcript.segment`.
    event_type: Option<String>,
    /// The user the delivered event is about.
    uid: Option<String>,
    /// Created at or after (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    until: Option<DateTime<Utc>>,
}

/// The `{id}` of a delivery's routes.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct DeliveryId {
    /// The delivery's id, its `webhook-id`.
    id: Uuid,
}

/// `POST /v1/deliveries/{id}/retry` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Requeued {
    id: Uuid,
    /// `pending`.
    status: &'static str,
}

impl Filter {
    fn take(params: &mut Params) -> Result<Self, ApiError> {
        let types: Vec<&str> = EventType::ALL.iter().map(|kind| kind.as_str()).collect();
        Ok(Filter {
            endpoint_id: params.uuid("endpoint_id")?,
            status: params.one_of("status", &STATUSES)?,
            event_type: params.one_of("event_type", &types)?,
            uid: params.text("uid")?,
            since: params.time("since")?,
            until: params.time("until")?,
        })
    }
}

/// List deliveries, newest first, by endpoint, status, event type, uid and creation time.
#[utoipa::path(get, path = "/v1/deliveries", tag = "deliveries", params(Filter, PageParams),
    responses(
        (status = 200, description = "A page of deliveries", body = Page<Delivery>),
        (status = 400, description = "A bad filter, `limit` or `cursor`, or an unknown parameter",
            body = ErrorBody)))]
async fn list(
    _: Admin,
    State(context): Ctx,
    mut params: Params,
) -> Result<Json<Page<Delivery>>, ApiError> {
    let conditions = Filter::take(&mut params)?;
    let page = params.page::<Uuid>("deliveries")?;
    params.finish()?;
    let mut query = QueryBuilder::new(format!("{SELECT} WHERE true"));
    filter(&mut query, " AND d.endpoint_id = ", conditions.endpoint_id);
    status_filter(&mut query, conditions.status);
    filter(&mut query, " AND o.event_type = ", conditions.event_type);
    filter(&mut query, " AND o.uid = ", conditions.uid);
    filter(&mut query, " AND d.created_at >= ", conditions.since);
    filter(&mut query, " AND d.created_at < ", conditions.until);
    filter(&mut query, " AND d.id < ", page.after);
    query
        .push(" ORDER BY d.id DESC LIMIT ")
        .push_bind(page.fetch());
    let rows: Vec<Delivery> = query.build_query_as().fetch_all(&context.pool).await?;
    Ok(Json(page.page(rows, |delivery| delivery.id)))
}

/// The deliveries of outbox events `events`, by event and then id.
pub(super) async fn of_events(
    pool: &sqlx::PgPool,
    events: &[Uuid],
) -> Result<Vec<Delivery>, ApiError> {
    let statement = format!("{SELECT} WHERE d.event_id = ANY($1) ORDER BY d.event_id, d.id");
    Ok(sqlx::query_as(&statement)
        .bind(events)
        .fetch_all(pool)
        .await?)
}

/// One delivery with every attempt (time, status code, latency, response excerpt, error).
#[utoipa::path(get, path = "/v1/deliveries/{id}", tag = "deliveries", params(DeliveryId),
    responses(
        (status = 200, description = "The delivery and its attempts, oldest first",
            body = DeliveryDetail),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such delivery", body = ErrorBody)))]
async fn read(
    _: Admin,
    State(context): Ctx,
    PathId(id): PathId,
) -> Result<Json<DeliveryDetail>, ApiError> {
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

/// Retry a finished delivery now, in a new retry window.
#[utoipa::path(post, path = "/v1/deliveries/{id}/retry", tag = "deliveries",
    params(DeliveryId),
    responses(
        (status = 202, description = "Pending again", body = Requeued),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such delivery", body = ErrorBody),
        (status = 409, description = "The delivery is pending already", body = ErrorBody)))]
async fn retry(
    _: Admin,
    State(context): Ctx,
    PathId(id): PathId,
) -> Result<(StatusCode, Json<Requeued>), ApiError> {
    match manual::retry(&context.pool, id).await? {
        Retry::Requeued => Ok((
            StatusCode::ACCEPTED,
            Json(Requeued {
                id,
                status: "pending",
            }),
        )),
        Retry::AlreadyPending => Err(ApiError::Conflict(
            "the delivery is pending: it is retried on its schedule".into(),
        )),
        Retry::NotFound => Err(ApiError::NotFound("delivery")),
    }
}
