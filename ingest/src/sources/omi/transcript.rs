//! Omi, the wearable: real-time transcripts (and later conversations, day summaries and audio).
//!
//! Omi signs nothing and sends no auth header by default, so its key travels in the URL
//! (`?key=K`), or as `X-API-Key` or `Authorization: Bearer`. The user is the `uid` query
//! parameter Omi appends.

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use serde::Deserialize;
use shared::EventKind;
use shared::payload::omi::{Segment, TranscriptBatch};

use super::{Inbound, LenientQuery, accept, parse_json, read_body};
use crate::error::IngestError;
use crate::routes::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/omi/transcript", post(transcript))
}

/// An authenticated Omi caller and the user the request is about.
pub struct OmiCaller {
    pub uid: String,
}

impl FromRequestParts<AppState> for OmiCaller {
    type Rejection = IngestError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, IngestError> {
        let query = LenientQuery::parse(parts.uri.query().unwrap_or(""));
        let presented = query
            .get("key")
            .or_else(|| header(&parts.headers, "x-api-key"))
            .or_else(|| bearer(&parts.headers));
        state.omi_keys.check(presented)?;
        let uid = query.get("uid").ok_or_else(|| {
            IngestError::InvalidRequest("query parameter `uid` is required".into())
        })?;
        Ok(OmiCaller {
            uid: uid.to_owned(),
        })
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = header(headers, "authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// `POST /v1/omi/transcript?uid=U`
async fn transcript(
    State(state): State<AppState>,
    caller: OmiCaller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, IngestError> {
    let raw = read_body(body, state.json_body_limit).await?;
    let batch = parse_transcript(&raw, &caller.uid)?;
    let payload = serde_json::to_vec(&batch).expect("a transcript batch always serializes");
    let inbound = Inbound {
        kind: EventKind::OmiTranscript,
        uid: caller.uid,
        provider_id: None,
        payload: Bytes::from(payload),
        sample_rate: None,
    };
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
fn validate_segments(segments: &[Segment]) -> Result<(), IngestError> {
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
