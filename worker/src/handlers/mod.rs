//! One handler per event kind, and the transaction they all run in.
//!
//! [`handle`] opens a transaction, claims the event's dedup key in `inbound_events` (the unique
//! constraint decides, so two workers racing on one event cannot both store it), runs the
//! kind's handler and commits. The consumer acknowledges the message only after this returns.

mod audio;
mod omi;
mod reflector;
mod sleep;
mod transcript;

use shared::{Envelope, EventKind};
use sqlx::{PgPool, Postgres, Transaction};

use crate::outbound::outbox::{EventType, emit};

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Stored,
    /// Its dedup key (or event id) was already stored: a redelivery or a sender's retry.
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("payload of {kind:?} cannot be read: {problem}")]
    BadPayload { kind: EventKind, problem: String },
}

impl HandlerError {
    /// True for failures that pass by themselves (Postgres down or restarting): the event is
    /// retried in place instead of counting towards the dead-letter limit.
    pub fn is_transient(&self) -> bool {
        match self {
            HandlerError::Database(error) => {
                matches!(
                    error,
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::Protocol(_)
                        | sqlx::Error::WorkerCrashed
                ) || is_transient_database_code(error)
            }
            _ => false,
        }
    }
}

/// Serialization failures, deadlocks and "the server is shutting down" are worth a retry.
fn is_transient_database_code(error: &sqlx::Error) -> bool {
    let Some(code) = error.as_database_error().and_then(|e| e.code()) else {
        return false;
    };
    matches!(
        &*code,
        "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300"
    )
}

/// Stores one event exactly once.
pub async fn handle(pool: &PgPool, envelope: &Envelope) -> Result<Outcome, HandlerError> {
    let mut tx = pool.begin().await?;
    if !claim(&mut tx, envelope).await? {
        tx.rollback().await?;
        return Ok(Outcome::Duplicate);
    }
    match envelope.kind {
        EventKind::OmiTranscript => transcript::store(&mut tx, envelope).await?,
        EventKind::OmiAudio => audio::store(&mut tx, envelope).await?,
        EventKind::OmiConversation => omi::conversation(&mut tx, envelope).await?,
        EventKind::OmiMemoryEvent => omi::memory_event(&mut tx, envelope).await?,
        EventKind::OmiDaySummary => omi::day_summary(&mut tx, envelope).await?,
        EventKind::AsleepInference => sleep::inference(&mut tx, envelope).await?,
        EventKind::AsleepSessionComplete => sleep::session_complete(&mut tx, envelope).await?,
        EventKind::ReflectorTranscript => reflector::transcript(&mut tx, envelope).await?,
    }
    tx.commit().await?;
    Ok(Outcome::Stored)
}

/// Inserts the event's row; false when its event id or dedup key is already there.
async fn claim(
    tx: &mut Transaction<'_, Postgres>,
    envelope: &Envelope,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO inbound_events (event_id, source, kind, uid, dedup_key, received_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT DO NOTHING",
    )
    .bind(envelope.event_id)
    .bind(envelope.source().as_str())
    .bind(envelope.kind.as_str())
    .bind(&envelope.uid)
    .bind(&envelope.dedup_key)
    .bind(envelope.received_at)
    .execute(&mut **tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Emits `event_type` for the envelope's uid, with the uid added to `data`, only when the
/// statement that stored the event's row inserted it (`ON CONFLICT DO NOTHING` found no twin).
async fn emit_if_stored(
    tx: &mut Transaction<'_, Postgres>,
    stored: sqlx::postgres::PgQueryResult,
    event_type: EventType,
    envelope: &Envelope,
    mut data: serde_json::Value,
) -> Result<(), sqlx::Error> {
    if stored.rows_affected() == 0 {
        return Ok(());
    }
    if let Some(object) = data.as_object_mut() {
        object.insert(
            "uid".into(),
            serde_json::Value::String(envelope.uid.clone()),
        );
    }
    emit(tx, event_type, Some(&envelope.uid), data)
        .await
        .map(drop)
}

/// Parses an envelope's JSON payload into the type its kind promises.
fn payload<T: serde::de::DeserializeOwned>(envelope: &Envelope) -> Result<T, HandlerError> {
    serde_json::from_slice(&envelope.payload).map_err(|error| HandlerError::BadPayload {
        kind: envelope.kind,
        problem: error.to_string(),
    })
}
