//! `GET /v1/events/{event_id}`: what became of an inbound event, by the `event_id` ingest
//! answered its 202 with. It is `stored` (with the outbound events it caused and their
//! deliveries), a `duplicate` of a stored event, `dead_lettered`, or `received` (its
//! processing failed and it is being retried). Not found: unknown, still in the queue, or
//! past `RETAIN_INBOUND_EVENTS`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use shared::http::ErrorBody;
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::deliveries::{self, Delivery};
use super::input::PathId;
use super::outbound_events::{COLUMNS, OutboundEvent};
use super::users::earliest_id_at;
use super::{Admin, ApiError};
use crate::WorkerContext;

pub fn routes() -> OpenApiRouter<Arc<WorkerContext>> {
    OpenApiRouter::new().routes(routes!(read))
}

/// How far from an event's storing its outbound events are looked for. They are written in the
/// same transaction, ids on the worker's clock and `stored_at` on Postgres's: this bounds the
/// clocks' skew the lookup tolerates.
const EMIT_WINDOW: TimeDelta = TimeDelta::minutes(10);

/// The answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct EventFate {
    event_id: Uuid,
    /// `stored`, `duplicate`, `dead_lettered` or `received`.
    status: &'static str,
    /// The stored event (for a duplicate, the one it duplicates).
    stored: Option<Inbound>,
    /// The stored event this one duplicates.
    duplicate_of: Option<Uuid>,
    /// Why its processing failed, while it is retried or once it was dead-lettered.
    processing: Option<Processing>,
    dead_letters: Vec<DeadLetter>,
    outbound_events: Vec<Caused>,
}

/// An inbound event as stored.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = InboundEvent)]
struct Inbound {
    event_id: Uuid,
    source: String,
    kind: String,
    uid: String,
    received_at: DateTime<Utc>,
    stored_at: DateTime<Utc>,
}

/// Its processing's failures so far.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
struct Processing {
    attempts: i32,
    last_error: String,
    updated_at: DateTime<Utc>,
}

/// A dead letter of the event.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = EventDeadLetter)]
struct DeadLetter {
    id: Uuid,
    reason: Option<String>,
    dead_at: DateTime<Utc>,
    redriven_at: Option<DateTime<Utc>>,
}

/// An outbound event the inbound one caused, with its deliveries.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Caused {
    #[serde(flatten)]
    event: OutboundEvent,
    deliveries: Vec<Delivery>,
}

/// What became of an inbound event, by the `event_id` ingest answered its 202 with.
///
/// `stored` (with the outbound events it caused and their deliveries), `duplicate` (of
/// `duplicate_of`), `dead_lettered`, or `received` (its processing failed and is retried).
#[utoipa::path(get, path = "/v1/events/{event_id}", tag = "events",
    params(("event_id" = Uuid, Path, description = "The `event_id` of ingest's 202")),
    responses(
        (status = 200, description = "Its fate", body = EventFate),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "Unknown, still in the queue, or past \
            `RETAIN_INBOUND_EVENTS`", body = ErrorBody)))]
async fn read(
    _: Admin,
    State(context): State<Arc<WorkerContext>>,
    PathId(id): PathId,
) -> Result<Json<EventFate>, ApiError> {
    let pool = &context.pool;
    let duplicate_of: Option<Uuid> =
        sqlx::query_scalar("SELECT original_id FROM inbound_duplicates WHERE event_id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    let stored = inbound(pool, duplicate_of.unwrap_or(id)).await?;
    let processing: Option<Processing> = sqlx::query_as(
        "SELECT attempts, last_error, updated_at FROM processing_failures WHERE event_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let dead_letters: Vec<DeadLetter> = sqlx::query_as(
        "SELECT id, reason, dead_at, redriven_at FROM dead_letters WHERE event_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    let status = match (&stored, duplicate_of) {
        (Some(_), Some(_)) => "duplicate",
        (Some(_), None) => "stored",
        _ if !dead_letters.is_empty() => "dead_lettered",
        _ if processing.is_some() => "received",
        _ => return Err(ApiError::NotFound("event")),
    };
    let outbound_events = match (&stored, duplicate_of) {
        (Some(event), None) => caused(pool, event).await?,
        _ => Vec::new(),
    };
    Ok(Json(EventFate {
        event_id: id,
        status,
        stored,
        duplicate_of,
        processing,
        dead_letters,
        outbound_events,
    }))
}

async fn inbound(pool: &PgPool, id: Uuid) -> Result<Option<Inbound>, ApiError> {
    Ok(sqlx::query_as(
        "SELECT event_id, source, kind, uid, received_at, stored_at FROM inbound_events
         WHERE event_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// The outbound events `event` caused, oldest first, each with its deliveries: read through
/// `outbox_by_uid` within [`EMIT_WINDOW`] of its storing, so no outbox index is needed.
async fn caused(pool: &PgPool, event: &Inbound) -> Result<Vec<Caused>, ApiError> {
    let events: Vec<OutboundEvent> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM outbox
         WHERE uid = $1 AND id >= $2 AND id < $3 AND inbound_event_id = $4 ORDER BY id"
    ))
    .bind(&event.uid)
    .bind(earliest_id_at(event.stored_at - EMIT_WINDOW))
    .bind(earliest_id_at(event.stored_at + EMIT_WINDOW))
    .bind(event.event_id)
    .fetch_all(pool)
    .await?;
    let ids: Vec<Uuid> = events.iter().map(|event| event.id).collect();
    let deliveries = deliveries::of_events(pool, &ids).await?;
    let mut by_event: std::collections::HashMap<Uuid, Vec<Delivery>> = Default::default();
    for delivery in deliveries {
        by_event
            .entry(delivery.event_id)
            .or_default()
            .push(delivery);
    }
    Ok(events
        .into_iter()
        .map(|event| Caused {
            deliveries: by_event.remove(&event.id).unwrap_or_default(),
            event,
        })
        .collect())
}
