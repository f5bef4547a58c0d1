//! Omi's transcript shapes: the real-time object, the bare array of Omi's docs, and the Thalamus
//! batch (`POST /omi`), all read into one [`TranscriptBatch`].

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use shared::EventKind;
use shared::payload::omi::{Segment, TranscriptBatch};

use super::{OmiCaller, OmiKey};
use crate::error::IngestError;
use crate::routes::AppState;
use crate::sources::{Inbound, accept, parse_json, read_body};

/// `POST /v1/omi/transcript?uid=U`
pub async fn transcript(
    State(state): State<AppState>,
    caller: OmiCaller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, IngestError> {
    let raw = read_body(body, state.json_body_limit).await?;
    let batch = parse_transcript(&raw, &caller.uid)?;
    let inbound = Inbound::json(EventKind::OmiTranscript, caller.uid, None, &batch);
    accept(&state, &headers, &raw, inbound).await
}

/// `POST /omi[?uid=U]`: the Thalamus batch; without `uid` the batch's `session_id` is the user.
pub async fn thalamus(
    State(state): State<AppState>,
    caller: OmiKey,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, IngestError> {
    let raw = read_body(body, state.json_body_limit).await?;
    let query_uid = caller.query.get("uid");
    let batch = parse_transcript(&raw, query_uid.unwrap_or(""))?;
    let uid = query_uid.unwrap_or(&batch.session_id).to_owned();
    if uid.is_empty() {
        return Err(IngestError::InvalidBody(
            "session_id: required when the query has no `uid`".into(),
        ));
    }
    let inbound = Inbound::json(EventKind::OmiTranscript, uid, None, &batch);
    accept(&state, &headers, &raw, inbound).await
}

/// The object form Omi's code sends (and the Thalamus batch, which adds `log_timestamp`).
#[derive(Deserialize)]
struct TranscriptObject {
    session_id: Option<String>,
    log_timestamp: Option<chrono::DateTime<chrono::Utc>>,
    segments: Vec<Segment>,
}

/// Reads any of Omi's transcript shapes: `{session_id, segments}`, the Thalamus batch, or a bare
/// array of segments (as Omi's docs show). A missing session id is the uid, as Omi sets it.
pub fn parse_transcript(body: &[u8], uid: &str) -> Result<TranscriptBatch, IngestError> {
    let first = body.iter().find(|byte| !byte.is_ascii_whitespace());
    let batch = if first == Some(&b'[') {
        TranscriptBatch {
            session_id: uid.to_owned(),
            log_timestamp: None,
            segments: parse_json(body).map_err(|error| prefix_error(error, "segments"))?,
        }
    } else {
        let object: TranscriptObject = parse_json(body)?;
        TranscriptBatch {
            session_id: object
                .session_id
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| uid.to_owned()),
            log_timestamp: object.log_timestamp,
            segments: object.segments,
        }
    };
    validate_segments(&batch.segments)?;
    Ok(batch)
}

fn prefix_error(error: IngestError, field: &str) -> IngestError {
    match error {
        IngestError::InvalidBody(message) if message.starts_with('[') => {
            IngestError::InvalidBody(format!("{field}{message}"))
        }
        other => other,
    }
}

/// Times must be finite, non-negative and in order.
pub(super) fn validate_segments(segments: &[Segment]) -> Result<(), IngestError> {
    for (index, segment) in segments.iter().enumerate() {
        let field = |name: &str| format!("segments[{index}].{name}");
        for (name, value) in [("start", segment.start), ("end", segment.end)] {
            if !value.is_finite() || value < 0.0 {
                return Err(IngestError::InvalidBody(format!(
                    "{}: must be a non-negative number of seconds, got {value}",
                    field(name)
                )));
            }
        }
        if segment.end < segment.start {
            return Err(IngestError::InvalidBody(format!(
                "{}: {} is before {} ({})",
                field("end"),
                segment.end,
                field("start"),
                segment.start
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::testkit::fixture;

    fn message_of(body: &[u8]) -> String {
        match parse_transcript(body, "u1") {
            Err(IngestError::InvalidBody(message)) => message,
            other => panic!("expected a 400, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn every_transcript_shape_parses_into_one_batch() {
        let object = parse_transcript(&fixture("omi/realtime_transcript.json"), "u1").unwrap();
        assert_eq!(object.session_id, "u7ZkQ2fW9xLmN3pR");
        assert_eq!(object.segments.len(), 2);
        assert_eq!(object.segments[1].speaker.as_deref(), Some("SPEAKER_01"));
        assert_eq!(object.segments[0].extra["stt_provider"], "deepgram");

        let bare =
            parse_transcript(&fixture("omi/realtime_transcript_bare_array.json"), "u1").unwrap();
        assert_eq!(bare.session_id, "u1");
        assert_eq!(bare.segments[0].text, "Sounds good to me.");

        let thalamus = parse_transcript(&fixture("omi/thalamus_batch.json"), "u1").unwrap();
        assert_eq!(thalamus.session_id, "thalamus_session_123");
        assert!(thalamus.log_timestamp.is_some());
    }

    #[test]
    fn bad_transcripts_are_refused_naming_the_field() {
        let cases = [
            ("bad/segment_missing_text.json", "segments[0]"),
            ("bad/segment_missing_text.json", "text"),
            ("bad/segments_not_list.json", "segments"),
            ("bad/segment_end_before_start.json", "segments[0].end"),
            ("bad/start_is_string.json", "segments[0]"),
            ("bad/truncated.json", "malformed JSON"),
            ("bad/deeply_nested.json", "segments"),
            ("bad/not_utf8.json", "session_id"),
        ];
        for (file, expected) in cases {
            let message = message_of(&fixture(file));
            assert!(
                message.contains(expected),
                "{file}: {message:?} lacks {expected:?}"
            );
        }
    }
}
