//! Reflector `transcript.completed`: stored once per transcript id and passed on as
//! `transcript.completed`. A `duration` that is not a number leaves `duration_s` empty.

use shared::Envelope;
use shared::payload::fields::FieldReader;
use shared::payload::reflector::ReflectorEvent;
use sqlx::{Postgres, Transaction};

use super::{HandlerError, emit_if_stored, payload};
use crate::outbound::outbox::EventType;

pub async fn transcript(
    tx: &mut Transaction<'_, Postgres>,
    envelope: &Envelope,
) -> Result<(), HandlerError> {
    let event: ReflectorEvent = payload(envelope)?;
    let duration_s = event.transcript.duration_s(&mut FieldReader::default());
    let transcript = serde_json::to_value(&event.transcript).expect("a transcript serializes");
    let inserted = sqlx::query(
        "INSERT INTO reflector_transcripts (id, uid, title, duration_s, data, received_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (uid, id) DO NOTHING",
    )
    .bind(&event.transcript.id)
    .bind(&envelope.uid)
    .bind(event.transcript.title())
    .bind(duration_s)
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
