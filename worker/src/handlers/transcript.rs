//! Omi transcript batches: their sessions (get or create), speakers (get or create) and
//! segments, and one `transcript.segment` event per stored segment. However many batches the
//! consumer hands over, and however many segments each holds, each table is written with one
//! statement.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::Envelope;
use shared::payload::omi::{Segment, TranscriptBatch};
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::{HandlerError, payload};
use crate::outbound::outbox::{EventType, NewEvent, emit_all};

/// A session's key: (uid, the sender's session id).
type SessionKey<'a> = (&'a str, &'a str);

/// The data of a `transcript.segment` event (INTERFACE.md section 5), serialized straight into
/// the outbox statement's parameters.
#[derive(Serialize)]
struct SegmentEvent<'a> {
    uid: &'a str,
    session_id: Uuid,
    external_session_id: &'a str,
    segment: &'a Segment,
}

/// One claimed event and the batch it carries.
struct Received<'a> {
    envelope: &'a Envelope,
    batch: TranscriptBatch,
}

impl Received<'_> {
    fn session_key(&self) -> SessionKey<'_> {
        (&self.envelope.uid, &self.batch.session_id)
    }
}

/// Stores the batches of these claimed events, in this order.
pub async fn store_all(
    tx: &mut Transaction<'_, Postgres>,
    envelopes: &[&Envelope],
) -> Result<(), HandlerError> {
    if envelopes.is_empty() {
        return Ok(());
    }
    let received = envelopes
        .iter()
        .map(|&envelope| {
            Ok(Received {
                envelope,
                batch: payload(envelope)?,
            })
        })
        .collect::<Result<Vec<_>, HandlerError>>()?;
    let sessions = open_sessions(tx, &received).await?;
    let session_ids: Vec<Uuid> = received
        .iter()
        .map(|r| sessions[&r.session_key()])
        .collect();
    let speakers = upsert_speakers(tx, &received, &session_ids).await?;
    let stored = insert_segments(tx, &received, &session_ids, &speakers).await?;
    let mut events = Vec::with_capacity(stored.len());
    for (r, session_id) in received.iter().zip(&session_ids) {
        for (position, segment) in r.batch.segments.iter().enumerate() {
            if stored.contains(&(r.envelope.event_id, position as i32)) {
                events.push(NewEvent {
                    uid: Some(r.envelope.uid.as_str()),
                    data: SegmentEvent {
                        uid: &r.envelope.uid,
                        session_id: *session_id,
                        external_session_id: &r.batch.session_id,
                        segment,
                    },
                    cause: Some(r.envelope.event_id),
                });
            }
        }
    }
    emit_all(tx, EventType::TranscriptSegment, events).await?;
    Ok(())
}

/// The open session of each (uid, sender session id), created on its first segment; keyed by
/// that pair. Each pair is one row of the statement, in key order so that concurrent
/// transactions lock sessions in one order.
async fn open_sessions<'a>(
    tx: &mut Transaction<'_, Postgres>,
    received: &'a [Received<'a>],
) -> Result<HashMap<SessionKey<'a>, Uuid>, sqlx::Error> {
    let mut spans: BTreeMap<SessionKey, (DateTime<Utc>, DateTime<Utc>)> = BTreeMap::new();
    for r in received {
        let at = r.envelope.received_at;
        let span = spans.entry(r.session_key()).or_insert((at, at));
        *span = (span.0.min(at), span.1.max(at));
    }
    let ids: Vec<Uuid> = spans.keys().map(|_| Uuid::now_v7()).collect();
    let uids: Vec<&str> = spans.keys().map(|key| key.0).collect();
    let external_ids: Vec<&str> = spans.keys().map(|key| key.1).collect();
    let firsts: Vec<DateTime<Utc>> = spans.values().map(|span| span.0).collect();
    let lasts: Vec<DateTime<Utc>> = spans.values().map(|span| span.1).collect();
    let rows: Vec<(Uuid, String, String)> = sqlx::query_as(
        "INSERT INTO transcript_sessions (id, uid, external_id, started_at, last_segment_at)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[])
         ON CONFLICT (uid, external_id) WHERE completed_at IS NULL
         DO UPDATE SET last_segment_at = GREATEST(transcript_sessions.last_segment_at, EXCLUDED.last_segment_at)
         RETURNING id, uid, external_id",
    )
    .bind(&ids)
    .bind(&uids)
    .bind(&external_ids)
    .bind(&firsts)
    .bind(&lasts)
    .fetch_all(&mut **tx)
    .await?;
    let by_key: HashMap<SessionKey, Uuid> = rows
        .iter()
        .map(|(id, uid, external_id)| ((uid.as_str(), external_id.as_str()), *id))
        .collect();
    // Look the rows up by `received`'s own keys, which outlive them.
    Ok(spans.into_keys().map(|key| (key, by_key[&key])).collect())
}

/// What the batches say of one speaker of one session.
struct Speaker<'a> {
    index: Option<i64>,
    is_user: bool,
    person_id: Option<&'a str>,
}

/// Upserts every distinct (session, label) of the batches, in that order so that concurrent
/// transactions lock rows in one order, and returns their ids. A speaker is the user if any
/// segment says so, and takes the latest person id given.
async fn upsert_speakers(
    tx: &mut Transaction<'_, Postgres>,
    received: &[Received<'_>],
    session_ids: &[Uuid],
) -> Result<HashMap<(Uuid, String), i64>, sqlx::Error> {
    let mut distinct: BTreeMap<(Uuid, String), Speaker> = BTreeMap::new();
    for (r, &session_id) in received.iter().zip(session_ids) {
        for segment in &r.batch.segments {
            let speaker = distinct
                .entry((session_id, segment.speaker_label()))
                .or_insert(Speaker {
                    index: segment.speaker_id,
                    is_user: false,
                    person_id: None,
                });
            speaker.is_user |= segment.is_user;
            speaker.person_id = segment.person_id.as_deref().or(speaker.person_id);
        }
    }
    let sessions: Vec<Uuid> = distinct.keys().map(|key| key.0).collect();
    let labels: Vec<&str> = distinct.keys().map(|key| key.1.as_str()).collect();
    let indexes: Vec<Option<i64>> = distinct.values().map(|s| s.index).collect();
    let is_user: Vec<bool> = distinct.values().map(|s| s.is_user).collect();
    let person_ids: Vec<Option<&str>> = distinct.values().map(|s| s.person_id).collect();
    let rows: Vec<(i64, Uuid, String)> = sqlx::query_as(
        "INSERT INTO transcript_speakers (session_id, label, speaker_index, is_user, person_id)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::bool[], $5::text[])
         ON CONFLICT (session_id, label) DO UPDATE SET
             is_user = transcript_speakers.is_user OR EXCLUDED.is_user,
             person_id = COALESCE(EXCLUDED.person_id, transcript_speakers.person_id)
         RETURNING id, session_id, label",
    )
    .bind(&sessions)
    .bind(&labels)
    .bind(&indexes)
    .bind(&is_user)
    .bind(&person_ids)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, session_id, label)| ((session_id, label), id))
        .collect())
}

/// Inserts every segment of the batches; returns the (event id, position) of those stored. A
/// segment whose Omi id its session already has, from this statement or before, is skipped.
async fn insert_segments(
    tx: &mut Transaction<'_, Postgres>,
    received: &[Received<'_>],
    session_ids: &[Uuid],
    speakers: &HashMap<(Uuid, String), i64>,
) -> Result<HashSet<(Uuid, i32)>, sqlx::Error> {
    let count = received.iter().map(|r| r.batch.segments.len()).sum();
    let mut sessions = Vec::with_capacity(count);
    let mut events = Vec::with_capacity(count);
    let mut log_timestamps = Vec::with_capacity(count);
    let mut speaker_ids = Vec::with_capacity(count);
    let mut positions = Vec::with_capacity(count);
    let mut omi_ids = Vec::with_capacity(count);
    let mut texts = Vec::with_capacity(count);
    let mut starts = Vec::with_capacity(count);
    let mut ends = Vec::with_capacity(count);
    let mut extras = Vec::with_capacity(count);
    for (r, &session_id) in received.iter().zip(session_ids) {
        for (position, segment) in r.batch.segments.iter().enumerate() {
            sessions.push(session_id);
            events.push(r.envelope.event_id);
            log_timestamps.push(r.batch.log_timestamp);
            speaker_ids.push(speakers[&(session_id, segment.speaker_label())]);
            positions.push(position as i32);
            omi_ids.push(segment.id.as_deref());
            texts.push(segment.text.as_str());
            starts.push(segment.start);
            ends.push(segment.end);
            extras.push(Json(&segment.extra));
        }
    }
    let stored: Vec<(Uuid, i32)> = sqlx::query_as(
        "INSERT INTO transcript_segments
             (session_id, event_id, log_timestamp, speaker_id, position, omi_segment_id, text, start_s, end_s, extra)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::timestamptz[], $4::int8[], $5::int4[], $6::text[], $7::text[], $8::float8[], $9::float8[], $10::jsonb[])
         ON CONFLICT DO NOTHING
         RETURNING event_id, position",
    )
    .bind(&sessions)
    .bind(&events)
    .bind(&log_timestamps)
    .bind(&speaker_ids)
    .bind(&positions)
    .bind(&omi_ids)
    .bind(&texts)
    .bind(&starts)
    .bind(&ends)
    .bind(&extras)
    .fetch_all(&mut **tx)
    .await?;
    Ok(stored.into_iter().collect())
}
