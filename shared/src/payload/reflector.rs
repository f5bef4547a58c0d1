//! Reflector payloads as they travel on the queue.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::fields::{self, FieldReader};

/// A Reflector webhook body, kept whole; only what ingest reads is named.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReflectorEvent {
    /// `transcript.completed` is the only event accepted.
    pub event: String,
    pub transcript: ReflectorTranscript,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<ReflectorRoom>,
    #[serde(flatten)]
    #[schema(ignore)]
    pub extra: Map<String, Value>,
}

impl ReflectorEvent {
    /// The room the transcript belongs to: `transcript.room_id`, else `room.id`.
    pub fn room_id(&self) -> Option<&str> {
        let from_room = self.room.as_ref().and_then(|room| room.id.as_deref());
        self.transcript
            .room_id
            .as_deref()
            .or(from_room)
            .filter(|id| !id.is_empty())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReflectorTranscript {
    /// Stable across Reflector's retries (its `event_id` is not): the dedup id.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_id: Option<String>,
    #[serde(flatten)]
    #[schema(ignore)]
    pub extra: Map<String, Value>,
}

impl ReflectorTranscript {
    /// The transcript's title, when it is text.
    pub fn title(&self) -> Option<&str> {
        self.extra.get("title").and_then(Value::as_str)
    }

    /// `duration` in seconds (see [`FieldReader`]).
    pub fn duration_s(&self, reader: &mut FieldReader) -> Option<f64> {
        reader.read(
            "transcript.duration",
            self.extra.get("duration"),
            fields::number,
        )
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReflectorRoom {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(flatten)]
    #[schema(ignore)]
    pub extra: Map<String, Value>,
}
