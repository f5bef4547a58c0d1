//! Omi transcript batches: the session (get or create), its speakers (get or create) and the
//! segments, each written with one statement however many segments the batch has; one
//! `transcript.segment` event per stored segment, all emitted with one statement too.

use std::collections::BTreeMap;

use shared::Envelope;
use shared::payload::omi::{Segment, TranscriptBatch};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::{HandlerError, payload};
use crate::outbound::outbox::{EventType, emit_all};
use serde_json::json;

pub async fn store(
    tx: &mut Transaction<'_, Postgres>,
    envelope: &Envelope,
) -> Result<(), HandlerError> {
    let batch: TranscriptBatch = payload(envelope)?;
    let session_id = open_session(tx, &envelope.uid, &batch.session_id, envelope).await?;
    let speakers = upsert_speakers(tx, session_id, &batch.segments).await?;
    let mut stored = insert_segments(tx, session_id, envelope, &batch, &speakers).await?;
    stored.sort_unstable();
    let events = stored
        .into_iter()
        .map(|position| {
            json!({
                "uid": envelope.uid,
                "session_id": session_id,
                "external_session_id": batch.session_id,
                "segment": batch.segments[position as usize],
            })
        })
        .collect();
    emit_all(
        tx,
        EventType::TranscriptSegment,
        Some(&envelope.uid),
        events,
    )
    .await?;
    Ok(())
}

/// The open session of (uid, sender session id), created on its first segment.
async fn open_session(
    tx: &mut Transaction<'_, Postgres>,
    uid: &str,
    external_id: &str,
    envelope: &Envelope,
) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO transcript_sessions (id, uid, external_id, started_at, last_segment_at)
         VALUES ($1, $2, $3, $4, $4)
         ON CONFLICT (uid, external_id) WHERE completed_at IS NULL
         DO UPDATE SET last_segment_at = GREATEST(transcript_sessions.last_segment_at, EXCLUDED.last_segment_at)
         RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(uid)
    .bind(external_id)
    .bind(envelope.received_at)
    .fetch_one(&mut **tx)
    .await
}

/// Upserts the batch's distinct speakers (sorted, so concurrent batches lock rows in the same
/// order) and returns their ids by label.
async fn upsert_speakers(
    tx: &mut Transaction<'_, Postgres>,
    session_id: Uuid,
    segments: &[Segment],
) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    let mut distinct: BTreeMap<String, &Segment> = BTreeMap::new();
    for segment in segments {
        distinct.entry(segment.speaker_label()).or_insert(segment);
    }
    let labels: Vec<&str> = distinct.keys().map(String::as_str).collect();
    let indexes: Vec<Option<i64>> = distinct.values().map(|s| s.speaker_id).collect();
    let is_user: Vec<bool> = distinct.values().map(|s| s.is_user).collect();
    let person_ids: Vec<Option<&str>> = distinct.values().map(|s| s.person_id.as_deref()).collect();
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "INSERT INTO transcript_speakers (session_id, label, speaker_index, is_user, person_id)
         SELECT $1, * FROM UNNEST($2::text[], $3::int8[], $4::bool[], $5::text[])
         ON CONFLICT (session_id, label) DO UPDATE SET
             is_user = transcript_speakers.is_user OR EXCLUDED.is_user,
             person_id = COALESCE(EXCLUDED.person_id, transcript_speakers.person_id)
         RETURNING id, label",
    )
    .bind(session_id)
    .bind(&labels)
    .bind(&indexes)
    .bind(&is_user)
    .bind(&person_ids)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(|(id, label)| (label, id)).collect())
}

async fn insert_segments(
    tx: &mut Transaction<'_, Postgres>,
    session_id: Uuid,
    envelope: &Envelope,
    batch: &TranscriptBatch,
    speakers: &BTreeMap<String, i64>,
) -> Result<Vec<i32>, sqlx::Error> {
    let segments = &batch.segments;
    let speaker_ids: Vec<i64> = segments
        .iter()
        .map(|s| speakers[&s.speaker_label()])
        .collect();
    let positions: Vec<i32> = (0..segments.len() as i32).collect();
    let omi_ids: Vec<Option<&str>> = segments.iter().map(|s| s.id.as_deref()).collect();
    let texts: Vec<&str> = segments.iter().map(|s| s.text.as_str()).collect();
    let starts: Vec<f64> = segments.iter().map(|s| s.start).collect();
    let ends: Vec<f64> = segments.iter().map(|s| s.end).collect();
    let extras: Vec<serde_json::Value> = segments
        .iter()
        .map(|s| serde_json::Value::Object(s.extra.clone()))
        .collect();
    sqlx::query_scalar(
        "INSERT INTO transcript_segments
             (session_id, event_id, log_timestamp, speaker_id, position, omi_segment_id, text, start_s, end_s, extra)
         SELECT $1, $2, $3, * FROM UNNEST($4::int8[], $5::int4[], $6::text[], $7::text[], $8::float8[], $9::float8[], $10::jsonb[])
         ON CONFLICT DO NOTHING
         RETURNING position",
    )
    .bind(session_id)
    .bind(envelope.event_id)
    .bind(batch.log_timestamp)
    .bind(&speaker_ids)
    .bind(&positions)
    .bind(&omi_ids)
    .bind(&texts)
    .bind(&starts)
    .bind(&ends)
    .bind(&extras)
    .fetch_all(&mut **tx)
    .await
}
