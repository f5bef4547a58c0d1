//! Transcript sessions: completing them (when Omi makes a conversation of them, or after
//! `SESSION_IDLE_MS` without segments) and rendering them in Reflector's transcript shape, for
//! the `transcript.completed` event and the management API alike.

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::outbound::outbox::{EventType, emit, emit_caused};

/// A session in Reflector's `transcript.completed` shape.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Transcript {
    pub id: Uuid,
    pub uid: String,
    pub title: Option<String>,
    /// Seconds from the first segment's start to the last one's end.
    pub duration: f64,
    pub webvtt: String,
    pub participants: Vec<Participant>,
    pub topics: Vec<serde_json::Value>,
    pub segments: Vec<SegmentRow>,
    pub started_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Participant {
    pub id: String,
    pub name: String,
    pub speaker: Option<i64>,
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SegmentRow {
    pub text: String,
    pub start: f64,
    pub end: f64,
    pub speaker: String,
    pub speaker_index: Option<i64>,
    pub speaker_name: Option<String>,
    pub is_user: bool,
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    uid: String,
    title: Option<String>,
    started_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
}

/// Completes every open session of the conversation's uid (Omi created the conversation
/// `cause` from them); their `transcript.completed` events are caused by it.
pub async fn complete_open_sessions(
    tx: &mut Transaction<'_, Postgres>,
    cause: &shared::Envelope,
    title: Option<&str>,
) -> Result<usize, sqlx::Error> {
    let uid = cause.uid.as_str();
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE transcript_sessions SET completed_at = now(), title = COALESCE($2, title)
         WHERE uid = $1 AND completed_at IS NULL RETURNING id",
    )
    .bind(uid)
    .bind(title)
    .fetch_all(&mut **tx)
    .await?;
    for id in &ids {
        emit_completed(tx, *id, Some(cause)).await?;
    }
    Ok(ids.len())
}

/// Completes the sessions quiet for `idle`; several workers may run this at once.
pub async fn complete_idle(pool: &PgPool, idle: std::time::Duration) -> Result<usize, sqlx::Error> {
    let mut tx = crate::checkout::begin(pool).await?;
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE transcript_sessions SET completed_at = now()
         WHERE id IN (SELECT id FROM transcript_sessions
                      WHERE completed_at IS NULL AND last_segment_at < now() - make_interval(secs => $1)
                      FOR UPDATE SKIP LOCKED LIMIT 100)
         RETURNING id",
    )
    .bind(idle.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    for id in &ids {
        emit_completed(&mut tx, *id, None).await?;
    }
    tx.commit().await?;
    Ok(ids.len())
}

/// Emits `transcript.completed` for session `id`, caused by `cause` when a request completed
/// it.
async fn emit_completed(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    cause: Option<&shared::Envelope>,
) -> Result<(), sqlx::Error> {
    let transcript = load(tx, id).await?.expect("the session was just updated");
    let data = serde_json::to_value(&transcript).expect("a transcript serializes");
    let completed = EventType::TranscriptCompleted;
    match cause {
        Some(cause) => emit_caused(tx, completed, cause, data).await.map(drop),
        None => emit(tx, completed, Some(&transcript.uid), data)
            .await
            .map(drop),
    }
}

/// The session with its segments, or `None` when there is no such session.
pub async fn load(
    connection: &mut PgConnection,
    id: Uuid,
) -> Result<Option<Transcript>, sqlx::Error> {
    let Some(session): Option<SessionRow> = sqlx::query_as(
        "SELECT uid, title, started_at, completed_at FROM transcript_sessions WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *connection)
    .await?
    else {
        return Ok(None);
    };
    let segments: Vec<SegmentRow> = sqlx::query_as(
        "SELECT sg.text, sg.start_s AS start, sg.end_s AS end, sp.label AS speaker,
                sp.speaker_index, COALESCE(sp.name, sg.extra->>'speaker_name') AS speaker_name, sp.is_user
         FROM transcript_segments sg JOIN transcript_speakers sp ON sp.id = sg.speaker_id
         WHERE sg.session_id = $1 ORDER BY sg.start_s, sg.id",
    )
    .bind(id)
    .fetch_all(&mut *connection)
    .await?;
    Ok(Some(Transcript {
        id,
        uid: session.uid,
        title: session.title,
        duration: duration(&segments),
        webvtt: webvtt(&segments),
        participants: participants(&segments),
        topics: Vec::new(),
        segments,
        started_at: session.started_at,
        completed_at: session.completed_at,
    }))
}

fn duration(segments: &[SegmentRow]) -> f64 {
    let start = segments
        .iter()
        .map(|s| s.start)
        .fold(f64::INFINITY, f64::min);
    let end = segments.iter().map(|s| s.end).fold(0.0, f64::max);
    if segments.is_empty() {
        0.0
    } else {
        (end - start).max(0.0)
    }
}

fn display_name(segment: &SegmentRow) -> String {
    segment
        .speaker_name
        .clone()
        .unwrap_or_else(|| match segment.speaker_index {
            Some(index) => format!("Speaker {index}"),
            None => segment.speaker.clone(),
        })
}

fn participants(segments: &[SegmentRow]) -> Vec<Participant> {
    let mut by_label = BTreeMap::new();
    for segment in segments {
        by_label
            .entry(segment.speaker.clone())
            .or_insert_with(|| Participant {
                id: segment.speaker.clone(),
                name: display_name(segment),
                speaker: segment.speaker_index,
            });
    }
    by_label.into_values().collect()
}

/// Diarized WebVTT: one cue per segment with a `<v Speaker>` voice tag.
pub fn webvtt(segments: &[SegmentRow]) -> String {
    let mut out = String::from("WEBVTT\n");
    for segment in segments {
        let _ = write!(
            out,
            "\n{} --> {}\n<v {}>{}\n",
            timestamp(segment.start),
            timestamp(segment.end),
            display_name(segment),
            segment.text
        );
    }
    out
}

fn timestamp(seconds: f64) -> String {
    let millis = (seconds.max(0.0) * 1000.0).round() as u64;
    let (hours, rest) = (millis / 3_600_000, millis % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    format!(
        "{hours:02}:{minutes:02}:{:02}.{:03}",
        rest / 1000,
        rest % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(text: &str, start: f64, end: f64, index: i64) -> SegmentRow {
        SegmentRow {
            text: text.into(),
            start,
            end,
            speaker: format!("SPEAKER_{index:02}"),
            speaker_index: Some(index),
            speaker_name: None,
            is_user: index == 0,
        }
    }

    #[test]
    fn webvtt_has_one_voiced_cue_per_segment() {
        let segments = [
            segment("Hello everyone.", 0.0, 2.5, 0),
            segment("Hi.", 3661.25, 3662.0, 1),
        ];
        assert_eq!(
            webvtt(&segments),
            "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\n<v Speaker 0>Hello everyone.\n\
             \n01:01:01.250 --> 01:01:02.000\n<v Speaker 1>Hi.\n"
        );
        assert_eq!(duration(&segments), 3662.0);
        assert_eq!(participants(&segments).len(), 2);
    }
}
