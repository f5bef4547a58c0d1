//! The event envelope: one accepted inbound request, as ingest publishes it and the worker
//! consumes it.
//!
//! On the wire the envelope's fields travel as AMQP properties and headers and its payload as
//! the message body, untouched: JSON payloads stay JSON and audio stays raw PCM, so neither side
//! pays for base64 or a second JSON encoding.
//!
//! The properties carry what [`Envelope::from_amqp`] reads and nothing more: RabbitMQ decodes,
//! stores and copies every property of every message, and a publish confirm waits for it. The
//! `app_id` (the source, which the kind implies), `content_type` (likewise) and `timestamp`
//! (the received-at, to the second, which a header holds to the microsecond) that ingest used to
//! add were read by nobody; a consumer of earlier messages ignores them.

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Who sent the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Omi,
    Asleep,
    Reflector,
}

/// What the payload is; decides how the worker parses and stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// [`crate::payload::omi::TranscriptBatch`]
    OmiTranscript,
    /// [`crate::payload::omi::Conversation`]: an Omi conversation ("memory") object, kept whole.
    OmiConversation,
    /// [`crate::payload::omi::MemoryEvent`]: a memory lifecycle event from the Omi webhook-server
    /// envelope, kept whole.
    OmiMemoryEvent,
    /// [`crate::payload::omi::DaySummary`]
    OmiDaySummary,
    /// Raw PCM16 LE mono; the sample rate is in [`Envelope::sample_rate`].
    OmiAudio,
    /// [`crate::payload::asleep::AsleepEvent`]: an Asleep `INFERENCE_COMPLETE`, normalised to the
    /// flat shape.
    AsleepInference,
    /// [`crate::payload::asleep::AsleepEvent`]: an Asleep `SESSION_COMPLETE`, normalised to the
    /// flat shape.
    AsleepSessionComplete,
    /// [`crate::payload::reflector::ReflectorEvent`]: a Reflector `transcript.completed` payload,
    /// kept whole.
    ReflectorTranscript,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Omi => "omi",
            Source::Asleep => "asleep",
            Source::Reflector => "reflector",
        }
    }
}

impl EventKind {
    pub const ALL: [EventKind; 8] = [
        EventKind::OmiTranscript,
        EventKind::OmiConversation,
        EventKind::OmiMemoryEvent,
        EventKind::OmiDaySummary,
        EventKind::OmiAudio,
        EventKind::AsleepInference,
        EventKind::AsleepSessionComplete,
        EventKind::ReflectorTranscript,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::OmiTranscript => "omi_transcript",
            EventKind::OmiConversation => "omi_conversation",
            EventKind::OmiMemoryEvent => "omi_memory_event",
            EventKind::OmiDaySummary => "omi_day_summary",
            EventKind::OmiAudio => "omi_audio",
            EventKind::AsleepInference => "asleep_inference",
            EventKind::AsleepSessionComplete => "asleep_session_complete",
            EventKind::ReflectorTranscript => "reflector_transcript",
        }
    }

    pub fn parse(name: &str) -> Option<EventKind> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    pub fn source(self) -> Source {
        match self {
            EventKind::OmiTranscript
            | EventKind::OmiConversation
            | EventKind::OmiMemoryEvent
            | EventKind::OmiDaySummary
            | EventKind::OmiAudio => Source::Omi,
            EventKind::AsleepInference | EventKind::AsleepSessionComplete => Source::Asleep,
            EventKind::ReflectorTranscript => Source::Reflector,
        }
    }
}

/// One accepted inbound event.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    /// Our id for this acceptance; a retried request gets a new one, the dedup key stays.
    pub event_id: Uuid,
    pub kind: EventKind,
    /// The user the event belongs to (Omi `uid`, Asleep `x-user-id`, Reflector room id).
    pub uid: String,
    /// What makes two deliveries "the same event" (INTERFACE.md section 3); unique per source
    /// and uid.
    pub dedup_key: String,
    /// When ingest accepted the request; orders audio chunks of one uid.
    pub received_at: DateTime<Utc>,
    /// Audio only: samples per second of the PCM payload.
    pub sample_rate: Option<u32>,
    /// The body: canonical JSON for every kind but audio, raw PCM for audio.
    pub payload: Bytes,
    /// The id of the inbound request (`X-Request-Id`, taken or made by ingest), so the worker's
    /// log lines of this event carry it; on the wire the AMQP `correlation_id`. Messages
    /// published before it existed have none.
    pub request_id: Option<String>,
}

/// Why a message could not be read back as an envelope.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("message property `{0}` is missing or malformed")]
    Property(&'static str),
    #[error("message header `{0}` is missing or malformed")]
    Header(&'static str),
}

impl Envelope {
    pub fn source(&self) -> Source {
        self.kind.source()
    }

    /// The AMQP properties that carry every field but the payload (and no more; see the module
    /// doc); persistent delivery.
    pub fn amqp_properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert("uid".into(), long_string(&self.uid));
        headers.insert("dedup_key".into(), long_string(&self.dedup_key));
        headers.insert(
            "received_at_us".into(),
            AMQPValue::LongLongInt(self.received_at.timestamp_micros()),
        );
        if let Some(rate) = self.sample_rate {
            headers.insert("sample_rate".into(), AMQPValue::LongUInt(rate));
        }
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(self.event_id.to_string().into())
            .with_type(self.kind.as_str().into())
            .with_headers(headers);
        match &self.request_id {
            Some(id) => properties.with_correlation_id(id.as_str().into()),
            None => properties,
        }
    }

    /// Reads an envelope back from a consumed message.
    pub fn from_amqp(properties: &BasicProperties, body: Vec<u8>) -> Result<Self, EnvelopeError> {
        let event_id = properties
            .message_id()
            .as_ref()
            .and_then(|id| Uuid::parse_str(id.as_str()).ok())
            .ok_or(EnvelopeError::Property("message_id"))?;
        let kind = properties
            .kind()
            .as_ref()
            .and_then(|kind| EventKind::parse(kind.as_str()))
            .ok_or(EnvelopeError::Property("type"))?;
        let headers = properties
            .headers()
            .as_ref()
            .ok_or(EnvelopeError::Property("headers"))?;
        let micros = match header(headers, "received_at_us") {
            Some(AMQPValue::LongLongInt(micros)) => *micros,
            _ => return Err(EnvelopeError::Header("received_at_us")),
        };
        let sample_rate = match header(headers, "sample_rate") {
            Some(AMQPValue::LongUInt(rate)) => Some(*rate),
            None => None,
            Some(_) => return Err(EnvelopeError::Header("sample_rate")),
        };
        Ok(Envelope {
            event_id,
            kind,
            uid: header_string(headers, "uid")?,
            dedup_key: header_string(headers, "dedup_key")?,
            received_at: Utc
                .timestamp_micros(micros)
                .single()
                .ok_or(EnvelopeError::Header("received_at_us"))?,
            sample_rate,
            payload: Bytes::from(body),
            request_id: properties
                .correlation_id()
                .as_ref()
                .map(|id| id.as_str().to_owned()),
        })
    }
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}

fn header<'a>(headers: &'a FieldTable, name: &str) -> Option<&'a AMQPValue> {
    headers.inner().get(&ShortString::from(name))
}

fn header_string(headers: &FieldTable, name: &'static str) -> Result<String, EnvelopeError> {
    match header(headers, name) {
        Some(AMQPValue::LongString(value)) => Ok(String::from_utf8_lossy(value.as_bytes()).into()),
        _ => Err(EnvelopeError::Header(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: EventKind, sample_rate: Option<u32>) -> Envelope {
        Envelope {
            event_id: Uuid::now_v7(),
            kind,
            uid: "u1".into(),
            dedup_key: "sha256:abc".into(),
            received_at: Utc.timestamp_micros(1_700_000_000_123_456).unwrap(),
            sample_rate,
            payload: Bytes::from_static(b"{\"a\":1}"),
            request_id: Some("req-1".into()),
        }
    }

    #[test]
    fn every_field_survives_the_amqp_round_trip() {
        for kind in EventKind::ALL {
            let original = sample(kind, (kind == EventKind::OmiAudio).then_some(16_000));
            let properties = original.amqp_properties();
            let decoded = Envelope::from_amqp(&properties, original.payload.to_vec()).unwrap();
            assert_eq!(decoded, original);
        }
    }

    #[test]
    fn the_request_id_travels_as_the_correlation_id_and_may_be_absent() {
        let mut original = sample(EventKind::OmiTranscript, None);
        let properties = original.amqp_properties();
        assert_eq!(
            properties.correlation_id().as_ref().unwrap().as_str(),
            "req-1"
        );
        original.request_id = None;
        let properties = original.amqp_properties();
        assert!(properties.correlation_id().is_none());
        let decoded = Envelope::from_amqp(&properties, original.payload.to_vec()).unwrap();
        assert_eq!(decoded.request_id, None);
    }

    #[test]
    fn the_properties_hold_only_what_is_read_back() {
        let properties = sample(EventKind::OmiAudio, Some(16_000)).amqp_properties();
        assert!(properties.app_id().is_none());
        assert!(properties.content_type().is_none());
        assert!(properties.timestamp().is_none());
        let headers = properties.headers().as_ref().unwrap().inner();
        let names: Vec<&str> = headers.keys().map(|name| name.as_str()).collect();
        assert_eq!(
            names,
            ["dedup_key", "received_at_us", "sample_rate", "uid"],
            "every header is one `from_amqp` reads"
        );
    }

    #[test]
    fn messages_are_persistent() {
        let properties = sample(EventKind::OmiTranscript, None).amqp_properties();
        assert_eq!(*properties.delivery_mode(), Some(2));
    }

    #[test]
    fn a_message_without_headers_is_refused() {
        let properties = BasicProperties::default()
            .with_message_id(Uuid::now_v7().to_string().into())
            .with_type("omi_transcript".into());
        let error = Envelope::from_amqp(&properties, vec![]).unwrap_err();
        assert!(matches!(error, EnvelopeError::Property("headers")));
    }
}
