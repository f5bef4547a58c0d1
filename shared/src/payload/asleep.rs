//! Asleep payloads as they travel on the queue: one flat shape, whether Asleep nested its fields
//! under `data` or sent them flat.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::fields::{self, FieldReader};

/// The Asleep events we accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AsleepEventName {
    /// A partial analysis, every 5 to 40 minutes of a session; carries `seq_num`.
    InferenceComplete,
    /// The end of a session; carries `session` and `stat` (which may be null).
    SessionComplete,
}

impl AsleepEventName {
    pub const ALL: [AsleepEventName; 2] = [
        AsleepEventName::InferenceComplete,
        AsleepEventName::SessionComplete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AsleepEventName::InferenceComplete => "INFERENCE_COMPLETE",
            AsleepEventName::SessionComplete => "SESSION_COMPLETE",
        }
    }
}

/// One Asleep event, flattened. Fields not named here are kept in `extra`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AsleepEvent {
    pub event: AsleepEventName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Asleep's own user id (the uid of the envelope is the `x-user-id` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The sleep session; taken from `session.id` when the body only has that.
    pub session_id: String,
    /// `INFERENCE_COMPLETE` only: the position of this inference in the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_num: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_seq_num: Option<i64>,
    /// `SESSION_COMPLETE` only: the session record, kept whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Map<String, Value>>,
    /// `SESSION_COMPLETE` only: the statistics, `None` when Asleep sent null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat: Option<Map<String, Value>>,
    #[serde(flatten)]
    #[schema(ignore)]
    pub extra: Map<String, Value>,
}

/// The typed columns a `SESSION_COMPLETE` report is stored with.
#[derive(Debug, PartialEq)]
pub struct SleepReportColumns {
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub time_in_sleep_s: Option<i64>,
    pub sleep_efficiency: Option<f64>,
}

impl AsleepEvent {
    /// Reads the report's columns from `session` and `stat` (see [`FieldReader`]).
    pub fn report_columns(&self, reader: &mut FieldReader) -> SleepReportColumns {
        let session = |name: &str| self.session.as_ref().and_then(|session| session.get(name));
        let stat = |name: &str| self.stat.as_ref().and_then(|stat| stat.get(name));
        SleepReportColumns {
            start_time: reader.read(
                "session.start_time",
                session("start_time"),
                fields::timestamp,
            ),
            end_time: reader.read("session.end_time", session("end_time"), fields::timestamp),
            time_in_sleep_s: reader.read(
                "stat.time_in_sleep",
                stat("time_in_sleep"),
                fields::integer,
            ),
            sleep_efficiency: reader.read(
                "stat.sleep_efficiency",
                stat("sleep_efficiency"),
                fields::number,
            ),
        }
    }
}
