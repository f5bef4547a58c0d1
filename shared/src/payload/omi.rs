//! Omi payloads as they travel on the queue: transcripts, conversations, day summaries and
//! memory lifecycle events (audio travels as raw PCM, with no type of its own).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::fields::{self, FieldReader};

/// A batch of real-time transcript segments, whichever of Omi's shapes it arrived in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TranscriptBatch {
    /// The sender's session id: the uid for Omi's real-time transcripts, a conversation id for
    /// the Thalamus batch.
    pub session_id: String,
    /// When the sender logged the batch (Thalamus only).
    #[serde(
        default,
        deserialize_with = "super::fields::deserialize_timestamp",
        skip_serializing_if = "Option::is_none"
    )]
    pub log_timestamp: Option<DateTime<Utc>>,
    pub segments: Vec<Segment>,
}

/// One transcribed utterance. Fields Omi adds over time are kept in `extra`.
///
/// Deserialized by hand (below) rather than with `#[serde(flatten)]`, which buffers every segment
/// into an intermediate tree first and made parsing a transcript batch ingest's largest cost.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Segment {
    /// Omi's segment id, when it sends one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub text: String,
    /// The diarization label, e.g. `SPEAKER_00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker_id: Option<i64>,
    #[serde(default)]
    pub is_user: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person_id: Option<String>,
    /// Seconds from the start of the recording.
    pub start: f64,
    pub end: f64,
    /// Any other field, kept as sent.
    #[serde(flatten)]
    #[schema(ignore)]
    pub extra: Map<String, Value>,
}

impl<'de> Deserialize<'de> for Segment {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(SegmentVisitor)
    }
}

struct SegmentVisitor;

impl<'de> serde::de::Visitor<'de> for SegmentVisitor {
    type Value = Segment;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a transcript segment object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Segment, A::Error> {
        use serde::de::Error;
        let (mut id, mut text, mut speaker, mut speaker_id) = (None, None, None, None);
        let (mut is_user, mut person_id, mut start, mut end) = (None, None, None, None);
        let mut extra = Map::new();
        while let Some(key) = map.next_key::<SegmentKey>()? {
            let duplicate = match key {
                SegmentKey::Id => id.replace(map.next_value()?).is_some(),
                SegmentKey::Text => text.replace(map.next_value()?).is_some(),
                SegmentKey::Speaker => speaker.replace(map.next_value()?).is_some(),
                SegmentKey::SpeakerId => speaker_id.replace(map.next_value()?).is_some(),
                SegmentKey::IsUser => is_user.replace(map.next_value()?).is_some(),
                SegmentKey::PersonId => person_id.replace(map.next_value()?).is_some(),
                SegmentKey::Start => start.replace(map.next_value()?).is_some(),
                SegmentKey::End => end.replace(map.next_value()?).is_some(),
                SegmentKey::Other(name) => extra.insert(name, map.next_value()?).is_some(),
            };
            if duplicate {
                return Err(A::Error::custom("a field appears twice"));
            }
        }
        Ok(Segment {
            id: id.flatten(),
            text: text.ok_or_else(|| A::Error::missing_field("text"))?,
            speaker: speaker.flatten(),
            speaker_id: speaker_id.flatten(),
            is_user: is_user.unwrap_or(false),
            person_id: person_id.flatten(),
            start: start.ok_or_else(|| A::Error::missing_field("start"))?,
            end: end.ok_or_else(|| A::Error::missing_field("end"))?,
            extra,
        })
    }
}

/// A segment's field name: the modelled ones, without allocating, or any other, kept.
enum SegmentKey {
    Id,
    Text,
    Speaker,
    SpeakerId,
    IsUser,
    PersonId,
    Start,
    End,
    Other(String),
}

impl<'de> Deserialize<'de> for SegmentKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = SegmentKey;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a field name")
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<SegmentKey, E> {
                Ok(match name {
                    "id" => SegmentKey::Id,
                    "text" => SegmentKey::Text,
                    "speaker" => SegmentKey::Speaker,
                    "speaker_id" => SegmentKey::SpeakerId,
                    "is_user" => SegmentKey::IsUser,
                    "person_id" => SegmentKey::PersonId,
                    "start" => SegmentKey::Start,
                    "end" => SegmentKey::End,
                    other => SegmentKey::Other(other.to_owned()),
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

impl Segment {
    /// The label that identifies this segment's speaker within its session.
    pub fn speaker_label(&self) -> String {
        match (&self.speaker, self.speaker_id) {
            (Some(label), _) => label.clone(),
            (None, Some(index)) => format!("SPEAKER_{index:02}"),
            (None, None) => "SPEAKER_UNKNOWN".to_owned(),
        }
    }
}

/// A conversation ("memory") as Omi posts it when one is created, kept whole: only `id` is
/// required; every other field travels in `fields` exactly as sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Conversation {
    pub id: String,
    /// Every other field, kept as sent.
    #[serde(flatten)]
    #[schema(ignore)]
    pub fields: Map<String, Value>,
}

/// The typed columns a conversation is stored with.
#[derive(Debug, PartialEq)]
pub struct ConversationColumns<'a> {
    pub title: Option<&'a str>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Conversation {
    /// Reads the conversation's columns (see [`FieldReader`]).
    pub fn columns(&self, reader: &mut FieldReader) -> ConversationColumns<'_> {
        let field = |name: &str| self.fields.get(name);
        ConversationColumns {
            title: self
                .fields
                .get("structured")
                .and_then(|structured| structured.get("title"))
                .and_then(Value::as_str),
            started_at: reader.read("started_at", field("started_at"), fields::timestamp),
            finished_at: reader.read("finished_at", field("finished_at"), fields::timestamp),
        }
    }
}

/// Omi's day summary. `summary` is a Python repr string that JSON parsers cannot read, so it is
/// kept as text; `summary_json` holds the same data as JSON and is the one to use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DaySummary {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    pub summary_json: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(
        default,
        deserialize_with = "super::fields::deserialize_timestamp",
        skip_serializing_if = "Option::is_none"
    )]
    pub created_at: Option<DateTime<Utc>>,
    /// Any other field, kept as sent.
    #[serde(flatten)]
    #[schema(ignore)]
    pub extra: Map<String, Value>,
}

/// A memory lifecycle event from the Omi webhook-server envelope (`memory_created`,
/// `memory_processing_started`, `processing_memory_status_changed`, `memory_backward_synced`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemoryEvent {
    /// The envelope's `type`, e.g. `memory_created`.
    #[serde(rename = "type")]
    pub kind: String,
    pub memory: Memory,
}

/// The memory a lifecycle event is about, kept whole: only `id` is required.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Memory {
    pub id: String,
    /// Every other field, kept as sent.
    #[serde(flatten)]
    #[schema(ignore)]
    pub fields: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_segment_keeps_the_fields_it_does_not_model() {
        let sent = json!({
            "id": "s1", "text": "hi", "speaker": "SPEAKER_01", "speaker_id": 1,
            "is_user": true, "person_id": null, "start": 0.5, "end": 1.5,
            "translations": [{"lang": "de", "text": "hallo"}], "stt_provider": "deepgram",
        });
        let segment: Segment = serde_json::from_value(sent.clone()).unwrap();
        assert_eq!(segment.id.as_deref(), Some("s1"));
        assert_eq!((segment.speaker_id, segment.is_user), (Some(1), true));
        assert_eq!((segment.start, segment.end), (0.5, 1.5));
        assert_eq!(segment.person_id, None);
        assert_eq!(segment.extra["stt_provider"], "deepgram");
        assert_eq!(segment.extra["translations"][0]["text"], "hallo");
        let mut expected = sent;
        expected.as_object_mut().unwrap().remove("person_id");
        assert_eq!(serde_json::to_value(&segment).unwrap(), expected);
    }

    #[test]
    fn a_segment_needs_text_start_and_end_and_no_field_twice() {
        for (body, problem) in [
            (r#"{"start": 0, "end": 1}"#, "missing field `text`"),
            (r#"{"text": "a", "end": 1}"#, "missing field `start`"),
            (r#"{"text": "a", "start": 0}"#, "missing field `end`"),
            (
                r#"{"text": "a", "text": "b", "start": 0, "end": 1}"#,
                "appears twice",
            ),
            (r#"{"text": 5, "start": 0, "end": 1}"#, "invalid type"),
            (
                r#"{"text": "a", "is_user": null, "start": 0, "end": 1}"#,
                "invalid type",
            ),
        ] {
            let error = serde_json::from_str::<Segment>(body)
                .unwrap_err()
                .to_string();
            assert!(error.contains(problem), "{body}: {error}");
        }
        let minimal: Segment =
            serde_json::from_str(r#"{"text": "a", "start": 0, "end": 1}"#).unwrap();
        assert_eq!(
            (minimal.id, minimal.is_user, minimal.extra.len()),
            (None, false, 0)
        );
    }
}
