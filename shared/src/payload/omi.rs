//! Omi payloads as they travel on the queue: transcripts, conversations, day summaries and
//! memory lifecycle events (audio travels as raw PCM, with no type of its own).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A batch of real-time transcript segments, whichever of Omi's shapes it arrived in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TranscriptBatch {
    /// The sender's session id: the uid for Omi's real-time transcripts, a conversation id for
    /// the Thalamus batch.
    pub session_id: String,
    /// When the sender logged the batch (Thalamus only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_timestamp: Option<DateTime<Utc>>,
    pub segments: Vec<Segment>,
}

/// One transcribed utterance. Fields Omi adds over time are kept in `extra`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    #[serde(flatten)]
    pub extra: Map<String, Value>,
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: String,
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

/// Omi's day summary. `summary` is a Python repr string that JSON parsers cannot read, so it is
/// kept as text; `summary_json` holds the same data as JSON and is the one to use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DaySummary {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    pub summary_json: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A memory lifecycle event from the Omi webhook-server envelope (`memory_created`,
/// `memory_processing_started`, `processing_memory_status_changed`, `memory_backward_synced`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryEvent {
    /// The envelope's `type`, e.g. `memory_created`.
    #[serde(rename = "type")]
    pub kind: String,
    pub memory: Memory,
}

/// The memory a lifecycle event is about, kept whole: only `id` is required.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    pub id: String,
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}
