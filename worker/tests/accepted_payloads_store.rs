//! Property test: what ingest answers 202 to, the worker can store. Generated bodies for every
//! event kind, with adversarial values where the worker reads typed fields (times in every
//! form, numbers as text, NUL, over-long identifiers), go through ingest's own body-to-envelope
//! step; every envelope it accepts is stored by the real worker handlers against Postgres, in
//! batches, and none may fail.

use std::cell::RefCell;
use std::collections::BTreeMap;

use axum::http::HeaderMap;
use bytes::Bytes;
use ingest::error::IngestError;
use ingest::sources::omi::audio::{audio_inbound, check_pcm};
use ingest::sources::omi::conversation::{conversation_inbound, day_summary_inbound};
use ingest::sources::omi::transcript::{thalamus_inbound, transcript_inbound};
use ingest::sources::omi::webhook::{Action, parse_webhook};
use ingest::sources::{Inbound, asleep::asleep_inbound, envelope, reflector::reflector_inbound};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use shared::testkit::TestDatabase;

/// One generated request: which route's parse it goes through, as which user, with what body.
#[derive(Clone, Debug)]
struct Request {
    route: Route,
    uid: String,
    body: Vec<u8>,
}

#[derive(Clone, Copy, Debug)]
enum Route {
    Transcript,
    Thalamus,
    Conversation,
    DaySummary,
    Webhook,
    Audio,
    Asleep,
    Reflector,
}

impl Request {
    /// Ingest's decision: the event it would publish, or why not.
    fn inbound(&self) -> Result<Inbound, IngestError> {
        let raw = Bytes::from(self.body.clone());
        let uid = self.uid.clone();
        match self.route {
            Route::Transcript => transcript_inbound(uid, &raw),
            Route::Thalamus => thalamus_inbound(Some(&self.uid), &raw),
            Route::Conversation => conversation_inbound(uid, &raw),
            Route::DaySummary => day_summary_inbound(uid, &raw),
            Route::Webhook => match parse_webhook(&raw, &uid, 16_000)? {
                Action::Publish(inbound) => Ok(inbound),
                Action::Pong => Err(IngestError::InvalidBody("a ping".into())),
            },
            Route::Audio => Ok(audio_inbound(uid, check_pcm(raw, "audio")?, 8_000)),
            Route::Asleep => asleep_inbound(uid, &raw),
            Route::Reflector => reflector_inbound(&raw),
        }
    }
}

/// Text a sender might put anywhere: plain, any Unicode, NUL, numeric, too long.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_]{1,12}",
        "\\PC{0,16}",
        Just("a\u{0}b".to_owned()),
        Just("1712345678".to_owned()),
        Just(String::new()),
        (250usize..262).prop_map(|length| "x".repeat(length)),
    ]
}

/// A time as senders write them, right or wrong: RFC 3339 with odd fields, naive, epoch.
fn time_text() -> impl Strategy<Value = String> {
    let parts = (0i32..12_000, 0u32..14, 0u32..33, 0u32..25, 0u32..61);
    let zones = prop::sample::select(vec!["Z", "+02:00", "-23:59", "", ".123456+00:00"]);
    (parts, zones).prop_map(|((year, month, day, hour, minute), zone)| {
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:00{zone}")
    })
}

/// A value where the worker reads a typed field.
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("JSON numbers are finite", |f| {
            f.is_finite().then(|| json!(f))
        }),
        (-1e13f64..1e13).prop_map(Value::from),
        (-100_000i64..100_000).prop_map(Value::from),
        time_text().prop_map(Value::from),
        text().prop_map(Value::from),
        Just(json!({"nested": [1, "a"]})),
    ]
}

/// An object of the template's fields, each present or absent, with generated values.
fn object(names: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop::collection::vec(prop::option::of(leaf()), names.len()).prop_map(move |values| {
        let fields = names
            .iter()
            .zip(values)
            .filter_map(|(name, value)| value.map(|value| (name.to_string(), value)));
        Value::Object(fields.collect())
    })
}

/// `object(names)` with `overrides` set on top (the fields a route needs to be taken at all).
fn shaped(names: &'static [&'static str], overrides: Value) -> impl Strategy<Value = Value> {
    (object(names), Just(overrides)).prop_map(|(mut value, overrides)| {
        for (name, field) in overrides.as_object().expect("an object") {
            value[name] = field.clone();
        }
        value
    })
}

fn id() -> impl Strategy<Value = Value> {
    prop_oneof![4 => "[a-z0-9]{1,8}".prop_map(Value::from), 1 => leaf()]
}

fn segment() -> impl Strategy<Value = Value> {
    const NAMES: &[&str] = &[
        "text",
        "speaker",
        "speaker_id",
        "is_user",
        "person_id",
        "extra",
    ];
    let times = (leaf(), leaf(), 0f64..100.0, 0f64..100.0);
    (object(NAMES), id(), times, any::<bool>()).prop_map(|(mut segment, id, times, plain)| {
        let (start, end, low, high) = times;
        segment["id"] = id;
        if plain {
            segment["text"] = json!("hello");
            segment["start"] = json!(low.min(high));
            segment["end"] = json!(low.max(high));
        } else {
            segment["start"] = start;
            segment["end"] = end;
        }
        segment
    })
}

fn transcript_body() -> impl Strategy<Value = Value> {
    let segments = prop::collection::vec(segment(), 0..4);
    (id(), prop::option::of(leaf()), segments).prop_map(|(session_id, logged, segments)| {
        let mut body = json!({"session_id": session_id, "segments": segments});
        if let Some(logged) = logged {
            body["log_timestamp"] = logged;
        }
        body
    })
}

fn asleep_body() -> impl Strategy<Value = Value> {
    let event = prop::sample::select(vec!["INFERENCE_COMPLETE", "SESSION_COMPLETE"]);
    let session = object(&["id", "start_time", "end_time", "state"]);
    let stat = prop_oneof![
        1 => Just(Value::Null),
        2 =>
        object(&["time_in_sleep", "sleep_efficiency", "sleep_latency"])
    ];
    let nested = any::<bool>();
    let seq_num = prop_oneof![3 => (0i64..100).prop_map(Value::from), 1 => leaf()];
    (event, id(), seq_num, session, stat, nested).prop_map(
        |(event, session_id, seq_num, session, stat, nested)| {
            let fields = json!({"session_id": session_id, "seq_num": seq_num,
                                "session": session, "stat": stat});
            match nested {
                true => json!({"event": event, "version": "V3", "data": fields}),
                false => {
                    let mut flat = fields;
                    flat["event"] = json!(event);
                    flat
                }
            }
        },
    )
}

fn webhook_body() -> impl Strategy<Value = Value> {
    let kind = prop::sample::select(vec![
        "memory_created",
        "memory_processing_started",
        "processing_memory_status_changed",
        "memory_backward_synced",
    ]);
    let memory = shaped(&["status", "created_at", "text"], json!({}));
    (kind, id(), memory).prop_map(|(kind, id, mut memory)| {
        memory["id"] = id;
        json!({"type": kind, "memory": memory})
    })
}

fn reflector_body() -> impl Strategy<Value = Value> {
    let transcript = object(&["room_id", "duration", "title", "webvtt"]);
    (id(), transcript).prop_map(|(id, mut transcript)| {
        transcript["id"] = id;
        json!({"event": "transcript.completed", "transcript": transcript})
    })
}

fn json_request(
    route: Route,
    body: impl Strategy<Value = Value> + 'static,
) -> BoxedStrategy<Request> {
    let uid = prop_oneof![8 => "u[0-3]".prop_map(String::from), 1 => text()];
    (uid, body)
        .prop_map(move |(uid, body)| Request {
            route,
            uid,
            body: serde_json::to_vec(&body).expect("JSON"),
        })
        .boxed()
}

fn request() -> impl Strategy<Value = Request> {
    let conversation = (id(), object(&["started_at", "finished_at", "structured"])).prop_map(
        |(id, mut conversation)| {
            conversation["id"] = id;
            conversation
        },
    );
    let day_summary = shaped(
        &["summary", "created_at", "uid"],
        json!({"summary_json": {}}),
    );
    let audio = prop::collection::vec(any::<u8>(), 0..64).prop_map(|pcm| Request {
        route: Route::Audio,
        uid: "u1".into(),
        body: pcm,
    });
    prop_oneof![
        json_request(Route::Transcript, transcript_body()),
        json_request(Route::Thalamus, transcript_body()),
        json_request(Route::Conversation, conversation),
        json_request(Route::DaySummary, day_summary),
        json_request(Route::Webhook, webhook_body()),
        audio.boxed(),
        json_request(Route::Asleep, asleep_body()),
        json_request(Route::Reflector, reflector_body()),
    ]
}

#[test]
fn every_event_ingest_accepts_is_stored_by_the_worker() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let database = TestDatabase::new();
    let pool = runtime.block_on(async {
        worker::db::migrate(&database.url).await.expect("migrate");
        sqlx::PgPool::connect(&database.url).await.expect("a pool")
    });
    let accepted: RefCell<BTreeMap<&'static str, usize>> = RefCell::default();
    let mut runner = TestRunner::new(Config {
        cases: 500,
        failure_persistence: None,
        ..Config::default()
    });
    let batch = prop::collection::vec(request(), 1..6);
    runner
        .run(&batch, |requests| {
            let envelopes: Vec<_> = requests
                .iter()
                .filter_map(|request| request.inbound().ok())
                .map(|inbound| envelope(&HeaderMap::new(), b"", inbound))
                .filter_map(Result::ok)
                .collect();
            for envelope in &envelopes {
                *accepted
                    .borrow_mut()
                    .entry(envelope.kind.as_str())
                    .or_default() += 1;
            }
            let stored = runtime.block_on(worker::handlers::handle_all(&pool, &envelopes));
            prop_assert!(stored.is_ok(), "{stored:?} for {requests:?}");
            Ok(())
        })
        .unwrap();
    let accepted = accepted.into_inner();
    for kind in shared::EventKind::ALL {
        let count = accepted.get(kind.as_str()).copied().unwrap_or(0);
        assert!(
            count >= 10,
            "only {count} {kind:?} events were accepted: {accepted:?}"
        );
    }
    runtime.block_on(pool.close());
}

/// What an older ingest let through (and a redrive of its dead letter brings back) is stored
/// too: a value that cannot fill its column leaves it empty and stays in the raw JSON.
#[tokio::test]
async fn values_the_worker_cannot_use_are_kept_raw_and_never_fail_the_event() {
    use shared::EventKind;
    let database = TestDatabase::new();
    worker::db::migrate(&database.url).await.expect("migrate");
    let pool = sqlx::PgPool::connect(&database.url).await.expect("a pool");
    let envelope = |kind, key: &str, payload: Value| shared::Envelope {
        event_id: uuid::Uuid::now_v7(),
        kind,
        uid: "u1".into(),
        dedup_key: key.into(),
        received_at: chrono::Utc::now(),
        sample_rate: None,
        payload: serde_json::to_vec(&payload).unwrap().into(),
        request_id: None,
    };
    let envelopes = [
        envelope(
            EventKind::OmiConversation,
            "c",
            json!({"id": "c1", "started_at": "yesterday", "finished_at": 1e300}),
        ),
        envelope(
            EventKind::AsleepSessionComplete,
            "s",
            json!({"event": "SESSION_COMPLETE", "session_id": "s1",
                   "session": {"start_time": "22h"}, "stat": {"time_in_sleep": "7h"}}),
        ),
        envelope(
            EventKind::ReflectorTranscript,
            "r",
            json!({"event": "transcript.completed", "transcript": {"id": "t1", "duration": "long"}}),
        ),
    ];
    worker::handlers::handle_all(&pool, &envelopes)
        .await
        .expect("stored");
    let empty_columns: (bool, bool, bool) = sqlx::query_as(
        "SELECT (SELECT started_at IS NULL AND data->>'started_at' = 'yesterday' FROM conversations),
                (SELECT time_in_sleep_s IS NULL AND start_time IS NULL FROM sleep_reports),
                (SELECT duration_s IS NULL AND data->>'duration' = 'long' FROM reflector_transcripts)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(empty_columns, (true, true, true));
    pool.close().await;
}
