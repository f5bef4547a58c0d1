//! One handler per event kind, and the transaction they all run in.
//!
//! [`handle_all`] stores the events the consumer took off the queue together in one
//! transaction: it claims their dedup keys in `inbound_events` with one statement (the unique
//! constraint decides, so two workers racing on one event cannot both store it), runs each
//! claimed event's handler (transcript batches all at once, with one statement per table) and
//! commits once. The consumer acknowledges the messages only after this returns.
//!
//! A second statement, run only when the claim skipped some events, records each duplicate (an
//! event whose dedup key is stored under another event id, perhaps by another worker that
//! committed while the claim waited) in `inbound_duplicates`, naming the event it duplicates,
//! so `GET /v1/events/{id}` can answer for it; a batch without duplicates writes nothing there.
//!
//! It also remembers erasures: an event whose uid was erased after ingest received
//! it (an `erasures` row with a later `requested_at`, found with one index lookup for the
//! batch's uids) was still in the queue when the erasure started, and is dropped, not stored.

mod audio;
mod omi;
mod reflector;
mod sleep;
mod transcript;

use std::collections::HashSet;

use shared::{Envelope, EventKind};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::outbound::outbox::{EventType, emit_caused};

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Stored,
    /// Its dedup key (or event id) was already stored: a redelivery or a sender's retry.
    Duplicate,
    /// Its uid was erased after ingest received it: dropped without storing anything.
    Erased,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Stored, Outcome::Duplicate, Outcome::Erased];

    /// The `outcome` label of `worker_events_total` and of the `LOG_EVENTS` line.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Stored => "stored",
            Outcome::Duplicate => "duplicate",
            Outcome::Erased => "erased",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("payload of {kind:?} cannot be read: {problem}")]
    BadPayload { kind: EventKind, problem: String },
    #[error("the handler panicked: {0}")]
    Panicked(String),
}

impl HandlerError {
    /// True for failures that pass by themselves (Postgres down or restarting): the event is
    /// retried in place instead of counting as a failure of its own processing.
    pub fn is_transient(&self) -> bool {
        match self {
            HandlerError::Database(error) => crate::db::is_transient(error),
            _ => false,
        }
    }
}

/// Stores each event exactly once, all in one transaction; the outcomes are in `envelopes`'
/// order. Any error undoes the whole transaction, so the caller can retry the events or take
/// them one at a time.
pub async fn handle_all(
    pool: &PgPool,
    envelopes: &[Envelope],
) -> Result<Vec<Outcome>, HandlerError> {
    let mut tx = crate::checkout::begin(pool).await?;
    let (claimed, erased) = claim(&mut tx, envelopes).await?;
    let mut transcripts = Vec::new();
    for envelope in envelopes.iter().filter(|e| claimed.contains(&e.event_id)) {
        match envelope.kind {
            EventKind::OmiTranscript => transcripts.push(envelope),
            EventKind::OmiAudio => audio::store(&mut tx, envelope).await?,
            EventKind::OmiConversation => omi::conversation(&mut tx, envelope).await?,
            EventKind::OmiMemoryEvent => omi::memory_event(&mut tx, envelope).await?,
            EventKind::OmiDaySummary => omi::day_summary(&mut tx, envelope).await?,
            EventKind::AsleepInference => sleep::inference(&mut tx, envelope).await?,
            EventKind::AsleepSessionComplete => sleep::session_complete(&mut tx, envelope).await?,
            EventKind::ReflectorTranscript => reflector::transcript(&mut tx, envelope).await?,
        }
    }
    transcript::store_all(&mut tx, &transcripts).await?;
    tx.commit().await?;
    Ok(envelopes
        .iter()
        .map(|envelope| {
            if claimed.contains(&envelope.event_id) {
                Outcome::Stored
            } else if erased.contains(&envelope.event_id) {
                Outcome::Erased
            } else {
                Outcome::Duplicate
            }
        })
        .collect())
}

/// Inserts the events' rows with one statement and returns the ids of those it inserted, and
/// of those it dropped because their uid was erased after they were received: an event whose
/// id or dedup key is already stored (or comes earlier in `envelopes`) is in neither, and is
/// recorded as a duplicate ([`record_duplicates`]). Rows go in dedup-key order, so concurrent
/// transactions take the keys' locks in one order.
async fn claim(
    tx: &mut Transaction<'_, Postgres>,
    envelopes: &[Envelope],
) -> Result<(HashSet<Uuid>, HashSet<Uuid>), sqlx::Error> {
    let mut order: Vec<&Envelope> = envelopes.iter().collect();
    order.sort_by_key(|e| (e.source().as_str(), e.uid.as_str(), e.dedup_key.as_str()));
    let columns = Columns::of(&order);
    let decided: Vec<(Uuid, bool)> = sqlx::query_as(
        "WITH incoming AS (
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
                 WITH ORDINALITY AS i (event_id, source, kind, uid, dedup_key, received_at, n)
         ), erased AS (
             SELECT i.event_id FROM incoming i
             JOIN (SELECT uid, max(requested_at) AS requested_at FROM erasures
                   WHERE uid = ANY ($4) GROUP BY uid) e
                 ON e.uid = i.uid AND e.requested_at > i.received_at
         ), claimed AS (
             INSERT INTO inbound_events (event_id, source, kind, uid, dedup_key, received_at)
             SELECT event_id, source, kind, uid, dedup_key, received_at FROM incoming
             WHERE event_id NOT IN (SELECT event_id FROM erased)
             ORDER BY n
             ON CONFLICT DO NOTHING
             RETURNING event_id
         )
         SELECT event_id, true FROM claimed UNION ALL SELECT event_id, false FROM erased",
    )
    .bind(&columns.ids)
    .bind(&columns.sources)
    .bind(&columns.kinds)
    .bind(&columns.uids)
    .bind(&columns.dedup_keys)
    .bind(&columns.received)
    .fetch_all(&mut **tx)
    .await?;
    let (claimed, erased): (Vec<_>, Vec<_>) = decided.into_iter().partition(|(_, stored)| *stored);
    let ids = |rows: Vec<(Uuid, bool)>| rows.into_iter().map(|(id, _)| id).collect();
    let (claimed, erased): (HashSet<Uuid>, HashSet<Uuid>) = (ids(claimed), ids(erased));
    let duplicates: Vec<&Envelope> = order
        .into_iter()
        .filter(|e| !claimed.contains(&e.event_id) && !erased.contains(&e.event_id))
        .collect();
    if !duplicates.is_empty() {
        record_duplicates(tx, &Columns::of(&duplicates)).await?;
    }
    Ok((claimed, erased))
}

/// Records each of `duplicates` (events the claim did not store) in `inbound_duplicates`,
/// naming the stored event whose dedup key it repeats; a redelivery of a stored event (the
/// same event id) or of a recorded duplicate adds nothing.
///
/// This is a statement of its own, after the claim, because of concurrency: when another
/// worker's transaction had claimed the key but not committed, the claim waited for it to
/// commit and then skipped the row, but every part of that statement reads the snapshot taken
/// when it began, in which the other worker's row does not exist yet. A new statement (read
/// committed) sees it. A batch without duplicates never runs this.
async fn record_duplicates(
    tx: &mut Transaction<'_, Postgres>,
    duplicates: &Columns<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO inbound_duplicates (event_id, original_id, received_at)
         SELECT DISTINCT ON (u.event_id) u.event_id, e.event_id, u.received_at
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
             AS u (event_id, source, uid, dedup_key, received_at)
         JOIN inbound_events e USING (source, uid, dedup_key)
         WHERE e.event_id <> u.event_id
         ORDER BY u.event_id
         ON CONFLICT DO NOTHING",
    )
    .bind(&duplicates.ids)
    .bind(&duplicates.sources)
    .bind(&duplicates.uids)
    .bind(&duplicates.dedup_keys)
    .bind(&duplicates.received)
    .execute(&mut **tx)
    .await
    .map(drop)
}

/// Envelopes as the columns of `inbound_events`, one array each, for `UNNEST`.
struct Columns<'a> {
    ids: Vec<Uuid>,
    sources: Vec<&'a str>,
    kinds: Vec<&'a str>,
    uids: Vec<&'a str>,
    dedup_keys: Vec<&'a str>,
    received: Vec<chrono::DateTime<chrono::Utc>>,
}

impl<'a> Columns<'a> {
    fn of(envelopes: &[&'a Envelope]) -> Self {
        Columns {
            ids: envelopes.iter().map(|e| e.event_id).collect(),
            sources: envelopes.iter().map(|e| e.source().as_str()).collect(),
            kinds: envelopes.iter().map(|e| e.kind.as_str()).collect(),
            uids: envelopes.iter().map(|e| e.uid.as_str()).collect(),
            dedup_keys: envelopes.iter().map(|e| e.dedup_key.as_str()).collect(),
            received: envelopes.iter().map(|e| e.received_at).collect(),
        }
    }
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
    emit_caused(tx, event_type, envelope, data).await.map(drop)
}

/// Parses an envelope's JSON payload into the type its kind promises.
fn payload<T: serde::de::DeserializeOwned>(envelope: &Envelope) -> Result<T, HandlerError> {
    serde_json::from_slice(&envelope.payload).map_err(|error| HandlerError::BadPayload {
        kind: envelope.kind,
        problem: error.to_string(),
    })
}
