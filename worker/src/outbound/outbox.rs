//! The transactional outbox: handlers record the events they cause in the same transaction as
//! the state those events describe, and with them one `deliveries` row for each enabled
//! endpoint subscribed to the event's type. The event, its deliveries and the state commit
//! together: once the handler's transaction commits there is nothing left to fan out, and an
//! outbox row is written once, never updated.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

/// The join condition of the endpoints that get a delivery of an event whose type is the SQL
/// expression `$event_type`: enabled, and subscribed to that type or to `*`. Both fan-outs (here,
/// and the catch-up in [`super::dispatch`]) use it, so they cannot disagree.
macro_rules! subscribed_endpoints {
    ($event_type:literal) => {
        concat!(
            "endpoints.enabled AND ('*' = ANY (endpoints.event_types) OR ",
            $event_type,
            " = ANY (endpoints.event_types))"
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

/// Records one outbound event inside the caller's transaction; returns its id (the stable
/// `webhook-id` root of its deliveries).
pub async fn emit(
    tx: &mut Transaction<'_, Postgres>,
    event_type: EventType,
    uid: Option<&str>,
    data: serde_json::Value,
) -> Result<Uuid, sqlx::Error> {
    let ids = emit_all(tx, event_type, vec![(uid, data)]).await?;
    Ok(ids[0])
}

/// Records events of one type, each with its uid and data, and their deliveries, with one
/// statement and in order (their ids, which the delivery order follows, grow); returns their
/// ids.
pub async fn emit_all(
    tx: &mut Transaction<'_, Postgres>,
    event_type: EventType,
    events: Vec<(Option<&str>, serde_json::Value)>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = events.iter().map(|_| Uuid::now_v7()).collect();
    let (uids, data): (Vec<Option<&str>>, Vec<serde_json::Value>) = events.into_iter().unzip();
    sqlx::query(concat!(
        "WITH emitted AS (
             INSERT INTO outbox (id, event_type, uid, data, dispatched_at)
             SELECT id, $2, uid, data, now() FROM UNNEST($1::uuid[], $3::text[], $4::jsonb[]) AS e (id, uid, data)
             RETURNING id
         )
         INSERT INTO deliveries (id, event_id, endpoint_id)
         SELECT uuid_v7(), emitted.id, endpoints.id
         FROM emitted JOIN endpoints ON ",
        subscribed_endpoints!("$2")
    ))
    .bind(&ids)
    .bind(event_type.as_str())
    .bind(&uids)
    .bind(data)
    .execute(&mut **tx)
    .await?;
    Ok(ids)
}
