//! The logical events of a chaos run: every kind in turn, each with the identity the service
//! deduplicates it on (as the accounting reads it back from Postgres), and the request a real
//! sender makes for it, the same on every retry except where the sender changes it (Reflector
//! signs each attempt anew, with a new `event_id`).

use serde_json::{Value, json};

use bench::stack::OMI_KEY;

pub const ASLEEP_KEY: &str = "chaos-asleep-key";
pub const REFLECTOR_SECRET: &str = "chaos-reflector-secret";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Transcript,
    Conversation,
    DaySummary,
    Audio,
    MemoryCreated,
    MemoryProcessing,
    MemoryCompleted,
    SleepInference,
    SleepSession,
    Reflector,
}

impl Kind {
    /// One of each, in the order events cycle through them.
    pub const ALL: [Kind; 10] = [
        Kind::Transcript,
        Kind::Conversation,
        Kind::DaySummary,
        Kind::Audio,
        Kind::MemoryCreated,
        Kind::MemoryProcessing,
        Kind::MemoryCompleted,
        Kind::SleepInference,
        Kind::SleepSession,
        Kind::Reflector,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Transcript => "Omi transcript",
            Kind::Conversation => "Omi conversation",
            Kind::DaySummary => "Omi day summary",
            Kind::Audio => "Omi audio",
            Kind::MemoryCreated => "/webhook memory_created",
            Kind::MemoryProcessing => "/webhook status processing",
            Kind::MemoryCompleted => "/webhook status completed",
            Kind::SleepInference => "Asleep inference",
            Kind::SleepSession => "Asleep session complete",
            Kind::Reflector => "Reflector transcript.completed",
        }
    }
}

/// Where senders of the same kind differ, chosen per run.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    /// Memory status changes carry an `Idempotency-Key` (newer Omi releases) rather than none.
    pub keyed_status_changes: bool,
}

/// One logical event, sent (and resent) until it is answered 202.
#[derive(Clone, Debug)]
pub struct Event {
    pub kind: Kind,
    /// What the service deduplicates it on, spelled as [`crate::ledger`] reads it back.
    pub identity: String,
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    body: Value,
}

/// What one attempt sends.
pub struct Request {
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// Event `n` of the run.
pub fn event(n: u64, style: Style) -> Event {
    let kind = Kind::ALL[(n % Kind::ALL.len() as u64) as usize];
    let uid = format!("chaos-u{}", n % 29);
    let keyed = (n / 10).is_multiple_of(2);
    let (identity, path, body) = match kind {
        Kind::Transcript => transcript(n, &uid),
        Kind::Conversation => omi(&uid, "conversation", conversation(n)),
        Kind::DaySummary => omi(&uid, "day-summary", day_summary(n, &uid)),
        Kind::Audio => audio(n),
        Kind::MemoryCreated => webhook(&uid, memory_created(n)),
        Kind::MemoryProcessing => webhook(&uid, status_changed(n, "processing")),
        Kind::MemoryCompleted => webhook(&uid, status_changed(n, "completed")),
        Kind::SleepInference => asleep(sleep_inference(n, &uid)),
        Kind::SleepSession => asleep(sleep_session(n, &uid)),
        Kind::Reflector => reflector(n),
    };
    let mut headers = match kind {
        Kind::SleepInference | Kind::SleepSession => vec![
            ("x-api-key", ASLEEP_KEY.to_owned()),
            ("x-user-id", uid.clone()),
        ],
        _ => Vec::new(),
    };
    let idempotency_key = match kind {
        Kind::Audio => true,
        Kind::MemoryProcessing | Kind::MemoryCompleted => style.keyed_status_changes,
        Kind::SleepInference | Kind::SleepSession | Kind::Reflector => false,
        _ => keyed,
    };
    if idempotency_key {
        headers.push(("idempotency-key", format!("chaos-key-{n}")));
    }
    Event {
        kind,
        identity,
        path,
        headers,
        body,
    }
}

impl Event {
    /// The request of attempt `attempt` (0 first).
    pub fn request(&self, attempt: u32) -> Request {
        let mut headers = self.headers.clone();
        let body = match self.kind {
            Kind::Audio => audio_pcm(&self.identity),
            Kind::Reflector => {
                let mut body = self.body.clone();
                body["event_id"] = json!(format!("{}-attempt-{attempt}", self.identity));
                let bytes = serde_json::to_vec(&body).expect("JSON");
                let now = chrono::Utc::now().timestamp();
                let signature =
                    shared::signature::reflector_header(&[REFLECTOR_SECRET], now, &bytes);
                headers.push(("x-webhook-signature", signature));
                headers.push(("x-webhook-retry", attempt.to_string()));
                bytes
            }
            _ => serde_json::to_vec(&self.body).expect("JSON"),
        };
        let content_type = if self.kind == Kind::Audio {
            "application/octet-stream"
        } else {
            "application/json"
        };
        headers.push(("content-type", content_type.to_owned()));
        Request { headers, body }
    }
}

fn omi(uid: &str, route: &str, (identity, body): (String, Value)) -> (String, String, Value) {
    let path = format!("/v1/omi/{route}?key={OMI_KEY}&uid={uid}");
    (identity, path, body)
}

fn webhook(uid: &str, (identity, body): (String, Value)) -> (String, String, Value) {
    (identity, format!("/webhook?key={OMI_KEY}&uid={uid}"), body)
}

fn asleep((identity, body): (String, Value)) -> (String, String, Value) {
    (identity, "/v1/asleep".to_owned(), body)
}

fn transcript(n: u64, uid: &str) -> (String, String, Value) {
    let id = format!("t-{n}");
    let start = (n % 1000) as f64 * 2.0;
    let body = json!({"session_id": uid, "segments": [{
        "id": id, "text": format!("Chaos segment {n}."), "speaker": "SPEAKER_00",
        "speaker_id": 0, "is_user": true, "person_id": null, "start": start,
        "end": start + 1.5, "translations": [], "stt_provider": "deepgram",
    }]});
    omi(uid, "transcript", (id, body))
}

fn conversation(n: u64) -> (String, Value) {
    let id = format!("c-{n}");
    let body = json!({
        "id": id, "created_at": "2026-11-20T09:31:07.512000+00:00",
        "started_at": "2026-11-20T09:14:02+00:00", "finished_at": "2026-11-20T09:30:55+00:00",
        "source": "omi", "language": "en",
        "structured": {"title": format!("Chaos conversation {n}"), "overview": "Chaos.",
                       "emoji": "\u{1f680}", "category": "work", "action_items": [], "events": []},
        "transcript_segments": [{"id": format!("{id}-s0"), "text": "Hello.", "speaker": "SPEAKER_00",
            "speaker_id": 0, "is_user": true, "person_id": null, "start": 0.0, "end": 1.0}],
        "discarded": false, "status": "completed",
    });
    (id, body)
}

fn day_summary(n: u64, uid: &str) -> (String, Value) {
    let id = format!("d-{n}");
    let body = json!({
        "summary": format!("{{'date': '2026-11-20', 'headline': '{id}'}}"),
        "summary_json": {"date": "2026-11-20", "headline": id, "highlights": []},
        "uid": uid, "created_at": "2026-11-20T22:00:03.118000+00:00",
    });
    (id, body)
}

/// Audio goes to a few uids of its own, each a stream.
fn audio(n: u64) -> (String, String, Value) {
    let identity = format!("a-{n:014}");
    let uid = format!("chaos-a{}", n % 7);
    let path = format!("/v1/omi/audio?key={OMI_KEY}&uid={uid}&sample_rate=16000");
    (identity, path, Value::Null)
}

/// 0.1 s of PCM whose first 16 bytes spell the identity, so every chunk is distinct and the
/// accounting finds it in `audio_chunks.pcm`.
fn audio_pcm(identity: &str) -> Vec<u8> {
    let mut pcm = identity.as_bytes().to_vec();
    for i in 0..1600 - pcm.len() / 2 {
        let sample: i16 = if i % 20 < 10 { 800 } else { -800 };
        pcm.extend_from_slice(&sample.to_le_bytes());
    }
    pcm
}

fn memory_created(n: u64) -> (String, Value) {
    let id = format!("mc-{n}");
    let body = json!({"type": "memory_created", "memory": {
        "id": id, "created_at": "2026-11-20T09:31:07Z", "text": format!("Memory {n}."),
    }});
    (format!("{id}/memory_created/"), body)
}

/// Both status changes of one memory share its id: `ms-<n / 10>`.
fn status_changed(n: u64, status: &str) -> (String, Value) {
    let id = format!("ms-{}", n / 10);
    let kind = "processing_memory_status_changed";
    let body = json!({"type": kind, "memory": {"id": id, "status": status}});
    (format!("{id}/{kind}/{status}"), body)
}

fn sleep_inference(n: u64, uid: &str) -> (String, Value) {
    let session = format!("ai-{}", n / 100);
    let body = json!({
        "event": "INFERENCE_COMPLETE", "version": "V3", "timestamp": "2024-01-21T06:15:00Z",
        "user_id": uid, "session_id": session, "seq_num": n, "inference_seq_num": n / 10,
        "sleep_stages": [1, 1, 2, 2, 2], "breath_stages": null, "snoring_stages": [0, 0, 1, 1, 0],
    });
    (format!("{session}/{n}"), body)
}

fn sleep_session(n: u64, uid: &str) -> (String, Value) {
    let id = format!("as-{n}");
    let body = json!({"event": "SESSION_COMPLETE", "version": "V3", "data": {
        "user_id": uid, "timezone": "Asia/Seoul", "peculiarities": [], "missing_data_ratio": 0.0,
        "session": {"id": id, "state": "COMPLETE", "start_time": "2024-01-20T22:00:00+00:00",
                    "end_time": "2024-01-21T06:30:00+00:00", "sleep_stages": [0, 1, 2, 3, 2, 0]},
        "stat": {"sleep_time": "06:30:00", "sleep_efficiency": 88.24, "time_in_bed": 30600,
                 "time_in_sleep": 27000, "time_in_wake": 3600, "waso_count": 2},
    }});
    (id, body)
}

fn reflector(n: u64) -> (String, String, Value) {
    let id = format!("r-{n}");
    let webvtt = "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\n<v Speaker 0>Hello everyone.\n";
    let body = json!({
        "event": "transcript.completed", "event_id": "", "timestamp": "2025-08-27T12:00:00Z",
        "transcript": {
            "id": id, "room_id": "room_7", "created_at": "2025-08-27T11:00:00Z",
            "duration": 300.5, "title": format!("Chaos sync {n}"), "webvtt": webvtt,
            "topics": [], "participants": [{"id": "p1", "name": "Speaker 0", "speaker": 0}],
            "source_language": "en", "status": "ended", "action_items": null,
        },
        "room": {"id": "room_7", "name": "weekly"},
    });
    (id, "/v1/reflector".to_owned(), body)
}
