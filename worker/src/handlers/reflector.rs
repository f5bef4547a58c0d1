//! Reflector `transcript.completed`: stored once per transcript id and passed on as
//! `transcript.completed`.

use shared::Envelope;
use shared::payload::reflector::ReflectorEvent;
use sqlx::{Postgres, Transaction};

use super::{HandlerError, emit_if_stored, payload};
use crate::outbound::outbox::EventType;

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
    emit_if_stored(
        tx,
        inserted,
        EventType::TranscriptCompleted,
        envelope,
        transcript,
    )
    .await?;
    Ok(())
}
