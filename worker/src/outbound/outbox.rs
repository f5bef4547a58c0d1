//! The transactional outbox: handlers record the events they cause in the same transaction as
//! the state those events describe, and with them one `deliveries` row for each enabled
//! endpoint subscribed to the event's type (and, if it names uids, to its uid). The event, its deliveries and the state commit
//! together: once the handler's transaction commits there is nothing left to fan out, and an
//! outbox row is written once, never updated.

use std::cell::Cell;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

/// The condition under which an endpoint (`endpoints`) wants an event whose type and uid are
/// the SQL expressions `$event_type` and `$uid`: subscribed to that type or to `*`, and, when it
/// names uids, to that uid. An event without a uid (`endpoint.disabled`) is about no user, so
/// only endpoints without a uid filter want it: one customer's endpoint sees none of another's
/// data, not even the URL of another's endpoint. Replays ([`super::replay`]) use it as is.
macro_rules! subscribes {
    ($event_type:literal, $uid:literal) => {
        concat!(
            "('*' = ANY (endpoints.event_types) OR ",
            $event_type,
            " = ANY (endpoints.event_types)) AND (cardinality(endpoints.uids) = 0 OR ",
            $uid,
            " = ANY (endpoints.uids))"
        )
    };
}
pub(crate) use subscribes;

/// The join condition of the endpoints that get a delivery of an event as it is emitted:
/// enabled, and [`subscribes`]. Both fan-outs (here, and the catch-up in [`super::dispatch`])
/// use it, so they cannot disagree.
macro_rules! subscribed_endpoints {
    ($event_type:literal, $uid:literal) => {
        concat!(
            "endpoints.enabled AND ",
            $crate::outbound::outbox::subscribes!($event_type, $uid)
        )
    };
}
pub(crate) use subscribed_endpoints;

/// The outbound event types of INTERFACE.md section 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum EventType {
    #[serde(rename = "transcript.segment")]
    TranscriptSegment,
    #[serde(rename = "transcript.completed")]
    TranscriptCompleted,
    #[serde(rename = "memory.created")]
    MemoryCreated,
    #[serde(rename = "memory.status_changed")]
    MemoryStatusChanged,
    #[serde(rename = "day_summary.created")]
    DaySummaryCreated,
    #[serde(rename = "audio.level")]
    AudioLevel,
    #[serde(rename = "listening.status")]
    ListeningStatus,
    #[serde(rename = "sleep.inference")]
    SleepInference,
    #[serde(rename = "sleep.session_completed")]
    SleepSessionCompleted,
    #[serde(rename = "endpoint.disabled")]
    EndpointDisabled,
    #[serde(rename = "test")]
    Test,
}

impl EventType {
    pub const ALL: [EventType; 11] = [
        EventType::TranscriptSegment,
        EventType::TranscriptCompleted,
        EventType::MemoryCreated,
        EventType::MemoryStatusChanged,
        EventType::DaySummaryCreated,
        EventType::AudioLevel,
        EventType::ListeningStatus,
        EventType::SleepInference,
        EventType::SleepSessionCompleted,
        EventType::EndpointDisabled,
        EventType::Test,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::TranscriptSegment => "transcript.segment",
            EventType::TranscriptCompleted => "transcript.completed",
            EventType::MemoryCreated => "memory.created",
            EventType::MemoryStatusChanged => "memory.status_changed",
            EventType::DaySummaryCreated => "day_summary.created",
            EventType::AudioLevel => "audio.level",
            EventType::ListeningStatus => "listening.status",
            EventType::SleepInference => "sleep.inference",
            EventType::SleepSessionCompleted => "sleep.session_completed",
            EventType::EndpointDisabled => "endpoint.disabled",
            EventType::Test => "test",
        }
    }

    pub fn parse(name: &str) -> Option<EventType> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// An event as stored in the outbox.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxEvent {
    pub id: Uuid,
    pub event_type: String,
    pub uid: Option<String>,
    pub data: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// One event to record: the user it is about, its data, and the inbound event it was emitted
/// for (`None` for events no single request causes: audio levels, listening changes, sessions
/// completed by idle time, endpoint changes).
///
/// `data` is anything that serializes to the event's JSON object: a `serde_json::Value` where
/// it is assembled by hand, or a borrowing struct on a hot path (transcript segments), which
/// is written straight into the statement's parameters with no tree built in between.
#[derive(Debug, Clone)]
pub struct NewEvent<'a, Data = serde_json::Value> {
    pub uid: Option<&'a str>,
    pub data: Data,
    pub cause: Option<Uuid>,
}

/// Records one outbound event no single inbound event caused, inside the caller's
/// transaction; returns its id (the stable `webhook-id` root of its deliveries).
pub async fn emit(
    tx: &mut Transaction<'_, Postgres>,
    event_type: EventType,
    uid: Option<&str>,
    data: serde_json::Value,
) -> Result<Uuid, sqlx::Error> {
    emit_one(
        tx,
        event_type,
        NewEvent {
            uid,
            data,
            cause: None,
        },
    )
    .await
}

/// Records one outbound event caused by the inbound event `cause`, about its uid.
pub async fn emit_caused(
    tx: &mut Transaction<'_, Postgres>,
    event_type: EventType,
    cause: &shared::Envelope,
    data: serde_json::Value,
) -> Result<Uuid, sqlx::Error> {
    let event = NewEvent {
        uid: Some(&cause.uid),
        data,
        cause: Some(cause.event_id),
    };
    emit_one(tx, event_type, event).await
}

async fn emit_one(
    tx: &mut Transaction<'_, Postgres>,
    event_type: EventType,
    event: NewEvent<'_>,
) -> Result<Uuid, sqlx::Error> {
    let ids = emit_all(tx, event_type, vec![event]).await?;
    Ok(ids[0])
}

/// Records events of one type and their deliveries, with one statement and in order (their
/// ids, which the delivery order follows, grow); returns their ids.
pub async fn emit_all<Data: Serialize>(
    tx: &mut Transaction<'_, Postgres>,
    event_type: EventType,
    events: Vec<NewEvent<'_, Data>>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = events.iter().map(|_| Uuid::now_v7()).collect();
    let uids: Vec<Option<&str>> = events.iter().map(|event| event.uid).collect();
    let causes: Vec<Option<Uuid>> = events.iter().map(|event| event.cause).collect();
    let data: Vec<Json<Data>> = events.into_iter().map(|event| Json(event.data)).collect();
    let outcome = sqlx::query(concat!(
        "WITH emitted AS (
             INSERT INTO outbox (id, event_type, uid, data, inbound_event_id, dispatched_at)
             SELECT id, $2, uid, data, cause, now()
             FROM UNNEST($1::uuid[], $3::text[], $4::jsonb[], $5::uuid[]) AS e (id, uid, data, cause)
             RETURNING id, uid
         )
         INSERT INTO deliveries (id, event_id, endpoint_id)
         SELECT uuid_v7(), emitted.id, endpoints.id
         FROM emitted JOIN endpoints ON ",
        subscribed_endpoints!("$2", "emitted.uid")
    ))
    .bind(&ids)
    .bind(event_type.as_str())
    .bind(&uids)
    .bind(data)
    .bind(&causes)
    .execute(&mut **tx)
    .await?;
    let queued = outcome.rows_affected();
    let _ = DELIVERIES_QUEUED.try_with(|count| count.set(count.get() + queued));
    Ok(ids)
}

tokio::task_local! {
    /// Deliveries [`emit_all`] queued in the task running [`counting_deliveries`].
    static DELIVERIES_QUEUED: Cell<u64>;
}

/// Runs `work` and counts the deliveries [`emit_all`] queues inside it, so the consumer wakes
/// the delivery loop after its commit only when there is something new to claim: a wake costs
/// the loop a claim and a next-due query, and most batches of an unsubscribed kind queue none.
pub async fn counting_deliveries<T>(work: impl Future<Output = T>) -> (T, u64) {
    DELIVERIES_QUEUED
        .scope(Cell::new(0), async move {
            let output = work.await;
            (output, DELIVERIES_QUEUED.with(Cell::get))
        })
        .await
}
