//! Omi audio chunks: stored as accepted; [`crate::audio::stream`] folds them into levels.

use shared::Envelope;
use sqlx::{Postgres, Transaction};

use super::HandlerError;

pub async fn store(
    tx: &mut Transaction<'_, Postgres>,
    envelope: &Envelope,
) -> Result<(), HandlerError> {
    let sample_rate = envelope
        .sample_rate
        .ok_or_else(|| HandlerError::BadPayload {
            kind: envelope.kind,
            problem: "audio without a sample rate".into(),
        })?;
    sqlx::query(
        "INSERT INTO audio_chunks (event_id, uid, received_at, sample_rate, pcm) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(envelope.event_id)
    .bind(&envelope.uid)
    .bind(envelope.received_at)
    .bind(sample_rate as i32)
    .bind(envelope.payload.as_ref())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
