//! `POST /webhook?key=K&uid=U`: the Omi webhook-server envelope, `{"type": ..., ...}`.
//!
//! Memory lifecycle events are published whole; `transcript_segment` becomes a one-segment
//! transcript batch and `audio_bytes` (hex) an audio chunk, exactly as their own routes would
//! publish them; `ping` is answered and not published.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};
use shared::EventKind;
use shared::payload::omi::{Memory, MemoryEvent, Segment, TranscriptBatch};

use super::audio::{audio_inbound, check_pcm, parse_sample_rate};
use super::transcript::validate_segments;
use super::{OmiCaller, UidParam};
use crate::error::IngestError;
use crate::openapi::examples;
use crate::routes::AppState;
use crate::settings::webhook_body_limit;
use crate::sources::{DedupKey, Queued};
use crate::sources::{
    Headers, Inbound, accept, check_id, from_value, invalid_field, parse_json, read_body,
};

/// Audio in the envelope is this rate unless the query says otherwise (Omi's default).
const DEFAULT_SAMPLE_RATE: u32 = 16_000;

/// The envelope, by `type`; an unknown type is refused naming the ones accepted.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WebhookEvent {
    MemoryCreated {
        memory: Memory,
    },
    MemoryProcessingStarted {
        memory: Memory,
    },
    ProcessingMemoryStatusChanged {
        memory: Memory,
    },
    MemoryBackwardSynced {
        memory: Memory,
    },
    TranscriptSegment {
        /// One transcript segment, as `/v1/omi/transcript` takes them.
        #[schema(value_type = Segment)]
        segment: Map<String, Value>,
    },
    AudioBytes {
        /// PCM16 little-endian mono, in hex.
        audio: String,
    },
    Ping,
}

/// What the envelope asks of us.
pub enum Action {
    Publish(Inbound),
    Pong,
}

/// `POST /webhook`: the Omi webhook-server envelope. `ping` is answered 200 and not queued.
///
/// Hex audio takes two characters a byte, so the limit is twice the audio one.
#[utoipa::path(post, path = "/webhook", tag = "omi", security(("omi_key" = []), ("omi_api_key" = []), ("omi_bearer" = [])),
    params(UidParam, ("sample_rate" = Option<u32>, Query,
        description = "Of `audio_bytes`; 16000 when absent"), DedupKey),
    request_body(content = WebhookEvent, description = "`{type, ...}`",
        example = examples::omi_memory_created),
    responses((status = 202, description = "Queued", body = Queued),
        (status = 200, description = "`ping` answered: `{\"status\": \"ok\"}`",
            body = serde_json::Value)))]
pub async fn webhook(
    State(state): State<AppState>,
    caller: OmiCaller,
    Headers(headers): Headers,
    body: Body,
) -> Result<Response, IngestError> {
    let limit = webhook_body_limit(state.json_body_limit, state.audio_body_limit);
    let raw = read_body(body, limit).await?;
    let sample_rate = match caller.query.get("sample_rate") {
        Some(rate) => parse_sample_rate(rate)?,
        None => DEFAULT_SAMPLE_RATE,
    };
    match parse_webhook(&raw, &caller.uid, sample_rate)? {
        Action::Pong => Ok(Json(serde_json::json!({"status": "ok"})).into_response()),
        Action::Publish(inbound) => accept(&state, &headers, &raw, inbound).await,
    }
}

/// Reads the envelope into what to publish for user `uid`.
pub fn parse_webhook(body: &[u8], uid: &str, sample_rate: u32) -> Result<Action, IngestError> {
    let event: WebhookEvent = parse_json(body)?;
    let uid = uid.to_owned();
    let memory =
        |kind: &str, memory: Memory| memory_inbound(&uid, kind, memory).map(Action::Publish);
    Ok(match event {
        WebhookEvent::MemoryCreated { memory: m } => memory("memory_created", m)?,
        WebhookEvent::MemoryProcessingStarted { memory: m } => {
            memory("memory_processing_started", m)?
        }
        WebhookEvent::ProcessingMemoryStatusChanged { memory: m } => {
            memory("processing_memory_status_changed", m)?
        }
        WebhookEvent::MemoryBackwardSynced { memory: m } => memory("memory_backward_synced", m)?,
        WebhookEvent::TranscriptSegment { segment } => {
            let batch = segment_batch(segment, &uid)?;
            Action::Publish(Inbound::json(EventKind::OmiTranscript, uid, None, &batch))
        }
        WebhookEvent::AudioBytes { audio } => {
            Action::Publish(audio_inbound(uid, decode_audio(&audio)?, sample_rate))
        }
        WebhookEvent::Ping => Action::Pong,
    })
}

/// A memory lifecycle event of `kind`. Its provider id is the memory's id and the event type
/// and, for a status change, the status: each status a memory goes through is its own event.
fn memory_inbound(uid: &str, kind: &str, memory: Memory) -> Result<Inbound, IngestError> {
    check_id("memory.id", &memory.id)?;
    let status = match memory.fields.get("status") {
        None | Some(Value::Null) => None,
        Some(Value::String(status)) => {
            check_id("memory.status", status)?;
            Some(status.as_str())
        }
        Some(_) => return Err(invalid_field("memory.status", "expected a string")),
    };
    let id = match status {
        Some(status) if kind == "processing_memory_status_changed" => {
            format!("{}:{kind}:{status}", memory.id)
        }
        _ => format!("{}:{kind}", memory.id),
    };
    let event = MemoryEvent {
        kind: kind.to_owned(),
        memory,
    };
    Ok(Inbound::json(
        EventKind::OmiMemoryEvent,
        uid.to_owned(),
        Some(id),
        &event,
    ))
}

/// `segment{text, start_time, end_time, ...}` as a one-segment batch of session `uid`.
fn segment_batch(
    mut segment: Map<String, Value>,
    uid: &str,
) -> Result<TranscriptBatch, IngestError> {
    for (from, to) in [("start_time", "start"), ("end_time", "end")] {
        if let Some(value) = segment.remove(from) {
            segment.insert(to.to_owned(), value);
        }
    }
    // Errors name the fields as the sender wrote them, under `segment`.
    let as_sent = |text: &str| {
        text.replace("`start`", "`start_time`")
            .replace("`end`", "`end_time`")
    };
    let segment: Segment = from_value(Value::Object(segment)).map_err(|error| match error {
        IngestError::InvalidBody(message) => IngestError::field("segment", as_sent(&message)),
        IngestError::InvalidField { field, problem } => {
            let field = match field.as_str() {
                "start" => "start_time",
                "end" => "end_time",
                other => other,
            };
            IngestError::field(&format!("segment.{field}"), as_sent(&problem))
        }
        other => other,
    })?;
    let segments = vec![segment];
    validate_segments(&segments)?;
    Ok(TranscriptBatch {
        session_id: uid.to_owned(),
        log_timestamp: None,
        segments,
    })
}

/// `audio` is hex-encoded PCM16.
fn decode_audio(audio: &str) -> Result<Bytes, IngestError> {
    let pcm = hex::decode(audio.trim())
        .map_err(|error| IngestError::field("audio", format!("not hexadecimal PCM ({error})")))?;
    check_pcm(Bytes::from(pcm), "audio")
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::testkit::fixture;

    fn publish(file: &str) -> Inbound {
        match parse_webhook(&fixture(file), "u1", 16_000) {
            Ok(Action::Publish(inbound)) => inbound,
            Ok(Action::Pong) => panic!("{file}: a pong"),
            Err(error) => panic!("{file}: {error}"),
        }
    }

    #[test]
    fn memory_events_keep_type_and_memory_and_are_told_apart() {
        let created = publish("omi-envelope/memory_created.json");
        let synced = publish("omi-envelope/memory_backward_synced.json");
        assert_eq!(created.kind, EventKind::OmiMemoryEvent);
        assert_ne!(created.provider_id, synced.provider_id);
        let event: MemoryEvent = serde_json::from_slice(&created.payload).unwrap();
        assert_eq!(event.kind, "memory_created");
        assert_eq!(event.memory.fields["text"], "Reviewed the firmware build.");
    }

    #[test]
    fn each_status_of_a_memory_is_its_own_event() {
        let status = |status: &str| {
            let body = format!(
                r#"{{"type": "processing_memory_status_changed", "memory": {{"id": "m1", "status": "{status}"}}}}"#
            );
            match parse_webhook(body.as_bytes(), "u1", 16_000) {
                Ok(Action::Publish(inbound)) => inbound.provider_id,
                _ => panic!("{body} was not published"),
            }
        };
        assert_ne!(status("processing"), status("completed"));
        assert_eq!(status("completed"), status("completed"));
    }

    #[test]
    fn a_transcript_segment_becomes_a_batch_of_one() {
        let inbound = publish("omi-envelope/transcript_segment.json");
        let batch: TranscriptBatch = serde_json::from_slice(&inbound.payload).unwrap();
        assert_eq!(batch.session_id, "u1");
        assert_eq!(
            (batch.segments[0].start, batch.segments[0].end),
            (15.1, 18.02)
        );
    }

    #[test]
    fn audio_bytes_are_decoded_from_hex() {
        let inbound = publish("omi-envelope/audio_bytes.json");
        assert_eq!(inbound.kind, EventKind::OmiAudio);
        assert_eq!(inbound.sample_rate, Some(16_000));
        assert_eq!(&inbound.payload[..4], &[0x00, 0x00, 0x01, 0x0b]);
    }

    #[test]
    fn bad_envelopes_are_refused_naming_the_field() {
        let cases: [(&[u8], &str); 6] = [
            (br#"{"type": "memory_deleted"}"#, "memory_deleted"),
            (br#"{"type": "audio_bytes", "audio": "zz"}"#, "audio"),
            (br#"{"type": "audio_bytes", "audio": "abc"}"#, "audio"),
            (br#"{"type": "audio_bytes", "audio": "ab"}"#, "audio"),
            (
                br#"{"type": "transcript_segment", "segment": {"text": "x"}}"#,
                "start_time",
            ),
            (br#"{"type": "memory_created", "memory": {}}"#, "id"),
        ];
        for (body, named) in cases {
            let Err(error) = parse_webhook(body, "u1", 16_000) else {
                panic!("{body:?} was accepted");
            };
            assert!(error.is_invalid_body(), "{error:?}");
            let message = error.to_string();
            assert!(message.contains(named), "{message:?} lacks {named:?}");
        }
    }
}
