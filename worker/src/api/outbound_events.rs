//! `/v1/outbound-events`: the events the worker emitted (the outbox), by type, uid and time,
//! newest first; and one event with the exact body its deliveries send and the deliveries
//! themselves.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::http::ErrorBody;
use sqlx::QueryBuilder;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::deliveries::{self, Delivery};
use super::input::{Params, PathId};
use super::list::{PageParams, filter};
use super::users::earliest_id_at;
use super::{Admin, ApiError, Page};
use crate::WorkerContext;
use crate::outbound::outbox::EventType;
use crate::outbound::send;

pub fn routes() -> OpenApiRouter<Arc<WorkerContext>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(read))
}

/// An outbound event as listed; `id` is the root of its deliveries' `webhook-id`s.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub(super) struct OutboundEvent {
    pub id: Uuid,
    pub event_type: String,
    pub uid: Option<String>,
    /// The inbound event it was emitted for, when one request caused it.
    pub inbound_event_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// The columns of [`OutboundEvent`].
pub(super) const COLUMNS: &str = "id, event_type, uid, inbound_event_id, created_at";

/// List the outbound events emitted, newest first, by type, uid and time.
#[utoipa::path(get, path = "/v1/outbound-events", tag = "outbound events",
    params(
        ("type" = Option<String>, Query, description = "An event type, such as `audio.level`"),
        ("uid" = Option<String>, Query, description = "The user the events are about"),
        ("since" = Option<DateTime<Utc>>, Query, description = "Emitted at or after (RFC 3339)"),
        PageParams),
    responses(
        (status = 200, description = "A page of outbound events", body = Page<OutboundEvent>),
        (status = 400, description = "A bad filter, `limit` or `cursor`, or an unknown parameter",
            body = ErrorBody)))]
async fn list(
    _: Admin,
    State(context): State<Arc<WorkerContext>>,
    mut params: Params,
) -> Result<Json<Page<OutboundEvent>>, ApiError> {
    let types: Vec<&str> = EventType::ALL.iter().map(|kind| kind.as_str()).collect();
    let event_type = params.one_of("type", &types)?;
    let uid = params.text("uid")?;
    let since = params.time("since")?;
    let page = params.page::<Uuid>("outbound-events")?;
    params.finish()?;
    let mut query = QueryBuilder::new(format!("SELECT {COLUMNS} FROM outbox WHERE true"));
    filter(&mut query, " AND event_type = ", event_type);
    filter(&mut query, " AND uid = ", uid);
    filter(&mut query, " AND id >= ", since.map(earliest_id_at));
    filter(&mut query, " AND id < ", page.after);
    query
        .push(" ORDER BY id DESC LIMIT ")
        .push_bind(page.fetch());
    let rows: Vec<OutboundEvent> = query.build_query_as().fetch_all(&context.pool).await?;
    Ok(Json(page.page(rows, |event| event.id)))
}

/// One outbound event with the body every delivery of it sends, byte for byte.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct OutboundEventDetail {
    #[serde(flatten)]
    event: OutboundEvent,
    /// The request body as sent (`{"type","timestamp","data"}`), as a string so that it is
    /// the exact bytes the signatures cover.
    body: String,
    deliveries: Vec<Delivery>,
}

#[derive(sqlx::FromRow)]
struct Stored {
    #[sqlx(flatten)]
    event: OutboundEvent,
    data: serde_json::Value,
}

/// One outbound event, with the exact body its deliveries send and the deliveries.
#[utoipa::path(get, path = "/v1/outbound-events/{id}", tag = "outbound events",
    params(("id" = Uuid, Path, description = "The outbound event's id")),
    responses(
        (status = 200, description = "The event", body = OutboundEventDetail),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such outbound event", body = ErrorBody)))]
async fn read(
    _: Admin,
    State(context): State<Arc<WorkerContext>>,
    PathId(id): PathId,
) -> Result<Json<OutboundEventDetail>, ApiError> {
    let stored: Stored =
        sqlx::query_as(&format!("SELECT {COLUMNS}, data FROM outbox WHERE id = $1"))
            .bind(id)
            .fetch_optional(&context.pool)
            .await?
            .ok_or(ApiError::NotFound("outbound event"))?;
    let event = stored.event;
    let body = send::body(&event.event_type, event.created_at, &stored.data);
    let body = String::from_utf8(body).expect("serde_json writes UTF-8");
    let deliveries = deliveries::of_events(&context.pool, &[event.id]).await?;
    Ok(Json(OutboundEventDetail {
        event,
        body,
        deliveries,
    }))
}
