//! Omi's transcript shapes: the real-time object, the bare array of Omi's docs, and the Thalamus
//! batch (`POST /omi`), all read into one [`TranscriptBatch`].

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use shared::EventKind;
use shared::payload::omi::{Segment, TranscriptBatch};

use super::{OmiCaller, OmiKey, UidParam};
use crate::error::IngestError;
use crate::openapi::examples;
use crate::routes::AppState;
use crate::sources::{DedupKey, Queued};
use shared::payload::fields;

use crate::sources::{
    Headers, Inbound, accept, check_id, check_uid, invalid_field, parse_json, read_body,
};

/// `POST /v1/omi/transcript?uid=U`: real-time transcript segments.
#[utoipa::path(post, path = "/v1/omi/transcript", tag = "omi", security(("omi_key" = []), ("omi_api_key" = []), ("omi_bearer" = [])),
    params(UidParam, DedupKey),
    request_body(content = TranscriptBody, description = "`{session_id, segments}`, or a bare array of segments (as Omi's docs show), or the Thalamus batch", example = examples::omi_transcript),
    responses((status = 202, description = "Queued", body = Queued)))]
pub async fn transcript(
    State(state): State<AppState>,
    caller: OmiCaller,
    Headers(headers): Headers,
    body: Body,
) -> Result<Response, IngestError> {
    let raw = read_body(body, state.json_body_limit).await?;
    let inbound = transcript_inbound(caller.uid, &raw)?;
    accept(&state, &headers, &raw, inbound).await
}

/// `POST /omi[?uid=U]`: the Thalamus batch; without `uid` the batch's `session_id` is the user.
#[utoipa::path(post, path = "/omi", tag = "omi", security(("omi_key" = []), ("omi_api_key" = []), ("omi_bearer" = [])),
    params(("uid" = Option<String>, Query, description = "The user; the batch's `session_id` when absent"), DedupKey),
    request_body(content = TranscriptBody, description = "The Thalamus batch", example = examples::thalamus_batch),
    responses((status = 202, description = "Queued", body = Queued)))]
pub async fn thalamus(
    State(state): State<AppState>,
    caller: OmiKey,
    Headers(headers): Headers,
    body: Body,
) -> Result<Response, IngestError> {
    let raw = read_body(body, state.json_body_limit).await?;
    let inbound = thalamus_inbound(caller.query.get("uid"), &raw)?;
    accept(&state, &headers, &raw, inbound).await
}

/// The event a `/v1/omi/transcript` body of user `uid` is published as.
pub fn transcript_inbound(uid: String, raw: &Bytes) -> Result<Inbound, IngestError> {
    let parsed = parse_transcript(raw, &uid)?;
    Ok(parsed.into_inbound(uid, raw))
}

/// The event a `/omi` body is published as: the user is `query_uid`, else the batch's
/// `session_id`.
pub fn thalamus_inbound(query_uid: Option<&str>, raw: &Bytes) -> Result<Inbound, IngestError> {
    if let Some(uid) = query_uid {
        check_uid("uid", "query parameter `uid`", uid)?;
    }
    let parsed = parse_transcript(raw, query_uid.unwrap_or(""))?;
    let uid = query_uid.unwrap_or(&parsed.batch.session_id).to_owned();
    Ok(parsed.into_inbound(uid, raw))
}

/// A transcript body read into one [`TranscriptBatch`].
pub struct ParsedTranscript {
    pub batch: TranscriptBatch,
    /// The body is the object form with its own non-empty `session_id`, so the worker reads the
    /// body as sent into exactly `batch` (it ignores unknown top-level fields, as we do here).
    pub body_reads_as_batch: bool,
}

impl ParsedTranscript {
    /// The event to publish. The body travels as sent when it already reads as the batch:
    /// serializing the batch again was a sixth of ingest's CPU per transcript. Other shapes
    /// travel as the batch's canonical JSON.
    fn into_inbound(self, uid: String, raw: &Bytes) -> Inbound {
        if self.body_reads_as_batch {
            Inbound::json_as_sent(EventKind::OmiTranscript, uid, None, raw.clone())
        } else {
            Inbound::json(EventKind::OmiTranscript, uid, None, &self.batch)
        }
    }
}

/// A `/v1/omi/transcript` or `/omi` body, as the OpenAPI document shows it: the object form,
/// or a bare array of segments ([`parse_transcript`] tells them by their first byte).
#[derive(utoipa::ToSchema)]
#[serde(untagged)]
#[schema(as = OmiTranscript)]
#[allow(dead_code)]
enum TranscriptBody {
    Object(TranscriptObject),
    Segments(Vec<Segment>),
}

/// The object form Omi's code sends (and the Thalamus batch, which adds `log_timestamp`).
#[derive(Deserialize, utoipa::ToSchema)]
struct TranscriptObject {
    /// The sender's session id; the uid when absent or empty.
    session_id: Option<String>,
    /// When the sender logged the batch (Thalamus): RFC 3339, or epoch seconds or milliseconds.
    #[serde(default, deserialize_with = "fields::deserialize_timestamp")]
    log_timestamp: Option<chrono::DateTime<chrono::Utc>>,
    segments: Vec<Segment>,
}

/// Reads any of Omi's transcript shapes: `{session_id, segments}`, the Thalamus batch, or a bare
/// array of segments (as Omi's docs show). A missing session id is the uid, as Omi sets it.
pub fn parse_transcript(body: &[u8], uid: &str) -> Result<ParsedTranscript, IngestError> {
    let first = body.iter().find(|byte| !byte.is_ascii_whitespace());
    let parsed = if first == Some(&b'[') {
        let segments = parse_json(body).map_err(|error| prefix_error(error, "segments"))?;
        ParsedTranscript {
            batch: TranscriptBatch {
                session_id: uid.to_owned(),
                log_timestamp: None,
                segments,
            },
            body_reads_as_batch: false,
        }
    } else {
        let object: TranscriptObject = parse_json(body)?;
        let session_id = object.session_id.filter(|id| !id.is_empty());
        ParsedTranscript {
            body_reads_as_batch: session_id.is_some(),
            batch: TranscriptBatch {
                session_id: session_id.unwrap_or_else(|| uid.to_owned()),
                log_timestamp: object.log_timestamp,
                segments: object.segments,
            },
        }
    };
    check_id("session_id", &parsed.batch.session_id)?;
    validate_segments(&parsed.batch.segments)?;
    Ok(parsed)
}

fn prefix_error(error: IngestError, field: &str) -> IngestError {
    match error {
        IngestError::InvalidField {
            field: path,
            problem,
        } if path.starts_with('[') => IngestError::field(&format!("{field}{path}"), problem),
        other => other,
    }
}

/// Times must be finite, non-negative and in order; the id and speaker label (both keys of an
/// index) at most [`fields::MAX_ID_BYTES`].
pub(super) fn validate_segments(segments: &[Segment]) -> Result<(), IngestError> {
    for (index, segment) in segments.iter().enumerate() {
        let field = |name: &str| format!("segments[{index}].{name}");
        for (name, key) in [("id", &segment.id), ("speaker", &segment.speaker)] {
            if key
                .as_ref()
                .is_some_and(|key| key.len() > fields::MAX_ID_BYTES)
            {
                return Err(invalid_field(&field(name), "must be at most 256 bytes"));
            }
        }
        for (name, value) in [("start", segment.start), ("end", segment.end)] {
            if !value.is_finite() || value < 0.0 {
                return Err(IngestError::field(
                    &field(name),
                    format!("must be a non-negative number of seconds, got {value}"),
                ));
            }
        }
        if segment.end < segment.start {
            return Err(IngestError::field(
                &field("end"),
                format!(
                    "{} is before {} ({})",
                    segment.end,
                    field("start"),
                    segment.start
                ),
            ));
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
            Err(error) if error.is_invalid_body() => error.to_string(),
            other => panic!("expected a 400, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn every_transcript_shape_parses_into_one_batch() {
        let object = parse_transcript(&fixture("omi/realtime_transcript.json"), "u1").unwrap();
        assert_eq!(object.batch.session_id, "u7ZkQ2fW9xLmN3pR");
        assert_eq!(object.batch.segments.len(), 2);
        assert_eq!(
            object.batch.segments[1].speaker.as_deref(),
            Some("SPEAKER_01")
        );
        assert_eq!(object.batch.segments[0].extra["stt_provider"], "deepgram");

        let bare =
            parse_transcript(&fixture("omi/realtime_transcript_bare_array.json"), "u1").unwrap();
        assert_eq!(bare.batch.session_id, "u1");
        assert_eq!(bare.batch.segments[0].text, "Sounds good to me.");

        let thalamus = parse_transcript(&fixture("omi/thalamus_batch.json"), "u1").unwrap();
        assert_eq!(thalamus.batch.session_id, "thalamus_session_123");
        assert!(thalamus.batch.log_timestamp.is_some());
    }

    /// A body published as sent must read, on the worker's side, as exactly the batch ingest
    /// validated; any other body is published as the batch.
    #[test]
    fn a_body_travels_as_sent_only_when_it_reads_as_the_batch() {
        let cases = [
            (fixture("omi/realtime_transcript.json"), true),
            (fixture("omi/thalamus_batch.json"), true),
            (fixture("omi/realtime_transcript_bare_array.json"), false),
            (br#"{"segments": []}"#.to_vec(), false),
            (br#"{"session_id": "", "segments": []}"#.to_vec(), false),
            (
                br#"{"session_id": "s", "segments": [], "extra": 1}"#.to_vec(),
                true,
            ),
        ];
        for (body, as_sent) in cases {
            let parsed = parse_transcript(&body, "u1").unwrap();
            assert_eq!(
                parsed.body_reads_as_batch,
                as_sent,
                "{}",
                String::from_utf8_lossy(&body)
            );
            let inbound = parsed.into_inbound("u1".into(), &Bytes::from(body.clone()));
            let published: TranscriptBatch = serde_json::from_slice(&inbound.payload).unwrap();
            let expected = parse_transcript(&body, "u1").unwrap().batch;
            assert_eq!(published, expected);
            assert_eq!(inbound.payload == body, as_sent);
        }
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
