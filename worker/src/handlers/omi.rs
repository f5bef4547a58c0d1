//! Omi conversations, memory lifecycle events and day summaries.
//!
//! Typed columns are read with the functions ingest checked them with
//! ([`shared::payload::fields`]), so a value that cannot fill its column leaves it empty and
//! stays in `data`; nothing ingest accepted fails here.

use serde_json::{Value, json};
use shared::Envelope;
use shared::payload::fields::FieldReader;
use shared::payload::omi::{Conversation, DaySummary, MemoryEvent};
use sqlx::{Postgres, Transaction};

use super::{HandlerError, payload};
use crate::outbound::outbox::{EventType, emit_caused};
use crate::sessions;

/// Upserts the conversation; the first time, emits `memory.created` and completes the uid's
/// open transcript sessions (Omi made a conversation of them).
pub async fn conversation(
    tx: &mut Transaction<'_, Postgres>,
    envelope: &Envelope,
) -> Result<(), HandlerError> {
    let conversation: Conversation = payload(envelope)?;
    let columns = conversation.columns(&mut FieldReader::default());
    let title = columns.title.map(str::to_owned);
    let data = serde_json::to_value(&conversation).expect("a conversation serializes");
    let inserted: bool = sqlx::query_scalar(
        "INSERT INTO conversations (id, uid, title, started_at, finished_at, data)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (uid, id) DO UPDATE SET data = EXCLUDED.data, title = EXCLUDED.title,
             started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at, updated_at = now()
         RETURNING (xmax = 0)",
    )
    .bind(&conversation.id)
    .bind(&envelope.uid)
    .bind(&title)
    .bind(columns.started_at)
    .bind(columns.finished_at)
    .bind(&data)
    .fetch_one(&mut **tx)
    .await?;
    if inserted {
        emit_caused(tx, EventType::MemoryCreated, envelope, data).await?;
        sessions::complete_open_sessions(tx, envelope, title.as_deref()).await?;
    }
    Ok(())
}

/// A lifecycle event of the Omi webhook-server envelope.
pub async fn memory_event(
    tx: &mut Transaction<'_, Postgres>,
    envelope: &Envelope,
) -> Result<(), HandlerError> {
    let event: MemoryEvent = payload(envelope)?;
    let data = serde_json::to_value(&event).expect("a memory event serializes");
    let status = event.memory.fields.get("status").and_then(Value::as_str);
    sqlx::query(
        "INSERT INTO memory_events (event_id, uid, memory_id, type, status, data, received_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(envelope.event_id)
    .bind(&envelope.uid)
    .bind(&event.memory.id)
    .bind(&event.kind)
    .bind(status)
    .bind(&data)
    .bind(envelope.received_at)
    .execute(&mut **tx)
    .await?;
    let event_type = match event.kind.as_str() {
        "memory_created" => EventType::MemoryCreated,
        _ => EventType::MemoryStatusChanged,
    };
    let body = json!({"uid": envelope.uid, "type": event.kind, "memory": event.memory});
    emit_caused(tx, event_type, envelope, body).await?;
    Ok(())
}

pub async fn day_summary(
    tx: &mut Transaction<'_, Postgres>,
    envelope: &Envelope,
) -> Result<(), HandlerError> {
    let summary: DaySummary = payload(envelope)?;
    sqlx::query(
        "INSERT INTO day_summaries (event_id, uid, summary, summary_json, created_at, received_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(envelope.event_id)
    .bind(&envelope.uid)
    .bind(&summary.summary)
    .bind(Value::Object(summary.summary_json.clone()))
    .bind(summary.created_at)
    .bind(envelope.received_at)
    .execute(&mut **tx)
    .await?;
    let data = json!({
        "uid": envelope.uid,
        "summary": summary.summary_json,
        "created_at": summary.created_at,
    });
    emit_caused(tx, EventType::DaySummaryCreated, envelope, data).await?;
    Ok(())
}
