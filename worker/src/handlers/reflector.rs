//! Reflector `transcript.completed`: stored once per transcript id and passed on as
//! `transcript.completed`.

use serde_json::Value;
use shared::Envelope;
use shared::payload::reflector::ReflectorEvent;
use sqlx::{Postgres, Transaction};

use super::{HandlerError, payload};
use crate::outbound::outbox::{EventType, emit};

pub async fn transcript(
    tx: &mut Transaction<'_, Postgres>,
    envelope: &Envelope,
) -> Result<(), HandlerError> {
    let event: ReflectorEvent = payload(envelope)?;
    let transcript = serde_json::to_value(&event.transcript).expect("a transcript serializes");
    let inserted = sqlx::query(
        "INSERT INTO reflector_transcripts (id, uid, title, duration_s, data, received_at)
         VALUES ($1, $2, $3::jsonb->>'title', ($3::jsonb->>'duration')::float8, $3, $4)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&event.transcript.id)
    .bind(&envelope.uid)
    .bind(&transcript)
    .bind(envelope.received_at)
    .execute(&mut **tx)
    .await?;
    if inserted.rows_affected() == 1 {
        let data = match transcript {
            Value::Object(mut object) => {
                object.insert("uid".into(), Value::String(envelope.uid.clone()));
                Value::Object(object)
            }
            other => other,
        };
        emit(
            tx,
            EventType::TranscriptCompleted,
            Some(&envelope.uid),
            data,
        )
        .await?;
    }
    Ok(())
}
