//! What ingest answers 202 to, the worker can store: every value that once got a 202 and was
//! then dead-lettered (a time Postgres could not cast, a number that was text, a NUL, an
//! identifier too long for an index entry) is refused with a 400 naming the field, on every
//! route, and nothing reaches the queue. The forms real senders use (epoch times) are accepted.

mod harness;

use harness::{ASLEEP_KEY, TestIngest, error_of, omi_query, reflector_signature};
use serde_json::{Value, json};

/// Where a table row is posted.
enum Route {
    Omi(&'static str),
    Asleep,
    Reflector,
}

impl Route {
    async fn post(&self, ingest: &TestIngest, uid: &str, body: &Value) -> reqwest::Response {
        let body = serde_json::to_vec(body).unwrap();
        self.post_raw(ingest, uid, &[], body).await
    }

    async fn post_raw(
        &self,
        ingest: &TestIngest,
        uid: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> reqwest::Response {
        let json = ("content-type", "application/json");
        match self {
            Route::Omi(path) => {
                let path = format!("{path}?{}", omi_query(uid));
                ingest.post(&path, &[&[json], headers].concat(), body).await
            }
            Route::Asleep => {
                let caller = [json, ("x-api-key", ASLEEP_KEY), ("x-user-id", uid)];
                ingest
                    .post("/v1/asleep", &[&caller, headers].concat(), body)
                    .await
            }
            Route::Reflector => {
                let signature = reflector_signature(&body, 0);
                let signed = [json, ("x-webhook-signature", signature.as_str())];
                ingest
                    .post("/v1/reflector", &[&signed, headers].concat(), body)
                    .await
            }
        }
    }
}

const CONVERSATION: Route = Route::Omi("/v1/omi/conversation");
const TRANSCRIPT: Route = Route::Omi("/v1/omi/transcript");
const THALAMUS: Route = Route::Omi("/omi");
const DAY_SUMMARY: Route = Route::Omi("/v1/omi/day-summary");
const WEBHOOK: Route = Route::Omi("/webhook");

fn transcript(session_id: &str, segment: Value) -> Value {
    json!({"session_id": session_id, "segments": [segment]})
}

fn segment() -> Value {
    json!({"id": "s1", "text": "hi", "speaker": "SPEAKER_00", "start": 0.0, "end": 1.0})
}

/// `value` with the field at `pointer` (`/a/b`) set to `field`, added if missing.
fn with(mut value: Value, pointer: &str, field: Value) -> Value {
    let (parent, name) = pointer.rsplit_once('/').expect("a JSON pointer");
    let object = value.pointer_mut(parent).and_then(Value::as_object_mut);
    object
        .expect("an object in the template")
        .insert(name.to_owned(), field);
    value
}

fn session_complete(session: Value, stat: Value) -> Value {
    json!({"event": "SESSION_COMPLETE", "session_id": "sleep-1", "session": session, "stat": stat})
}

fn reflector(transcript: Value) -> Value {
    json!({"event": "transcript.completed", "transcript": transcript})
}

#[tokio::test]
async fn values_the_worker_could_not_store_are_400_naming_the_field() {
    let ingest = TestIngest::start().await;
    let long = "x".repeat(257);
    let cases: Vec<(&Route, Value, &str)> = vec![
        (
            &CONVERSATION,
            json!({"id": "c1", "started_at": "yesterday"}),
            "started_at",
        ),
        (
            &CONVERSATION,
            json!({"id": "c1", "finished_at": true}),
            "finished_at",
        ),
        (
            &CONVERSATION,
            json!({"id": "c1", "started_at": 1e300}),
            "started_at",
        ),
        (&CONVERSATION, json!({"id": long}), "id"),
        (
            &CONVERSATION,
            json!({"id": "c1", "structured": {"title": "a\u{0}b"}}),
            "structured.title",
        ),
        (
            &TRANSCRIPT,
            transcript("s", with(segment(), "/text", json!("a\u{0}"))),
            "segments[0].text",
        ),
        (
            &TRANSCRIPT,
            transcript(
                "s",
                with(segment(), "/translations", json!([{"k\u{0}": 1}])),
            ),
            "segments[0].translations[0]",
        ),
        (&TRANSCRIPT, transcript(&long, segment()), "session_id"),
        (
            &TRANSCRIPT,
            transcript("s", with(segment(), "/id", json!(long))),
            "segments[0].id",
        ),
        (
            &TRANSCRIPT,
            transcript("s", with(segment(), "/speaker", json!(long))),
            "segments[0].speaker",
        ),
        (
            &THALAMUS,
            json!({"session_id": "s", "log_timestamp": "soon", "segments": []}),
            "log_timestamp",
        ),
        (
            &DAY_SUMMARY,
            json!({"summary_json": {}, "created_at": "today"}),
            "created_at",
        ),
        (
            &WEBHOOK,
            json!({"type": "processing_memory_status_changed", "memory": {"id": "m", "status": 5}}),
            "memory.status",
        ),
        (
            &WEBHOOK,
            json!({"type": "memory_created", "memory": {"id": long}}),
            "memory.id",
        ),
        (
            &Route::Asleep,
            session_complete(json!({"start_time": "22h"}), json!(null)),
            "session.start_time",
        ),
        (
            &Route::Asleep,
            session_complete(json!({}), json!({"time_in_sleep": "7h"})),
            "stat.time_in_sleep",
        ),
        (
            &Route::Asleep,
            session_complete(json!({}), json!({"sleep_efficiency": "high"})),
            "stat.sleep_efficiency",
        ),
        (
            &Route::Asleep,
            json!({"event": "SESSION_COMPLETE", "session_id": long}),
            "session_id",
        ),
        (
            &Route::Reflector,
            reflector(json!({"id": "t1", "duration": "an hour"})),
            "transcript.duration",
        ),
        (
            &Route::Reflector,
            reflector(json!({"id": long})),
            "transcript.id",
        ),
    ];
    for (route, body, named) in cases {
        let (status, _, message) = error_of(route.post(&ingest, "u1", &body).await).await;
        assert_eq!(status, 400, "{body}: {message}");
        assert!(
            message.contains(named),
            "{body}: {message:?} does not name {named:?}"
        );
    }
    assert_eq!(ingest.broker.events_ready().await, 0);
}

#[tokio::test]
async fn over_long_or_nul_uids_and_idempotency_keys_are_400_naming_them() {
    let ingest = TestIngest::start().await;
    let conversation = json!({"id": "c1"});
    let long = "u".repeat(257);
    for (route, uid, named) in [
        (&CONVERSATION, long.as_str(), "uid"),
        (&CONVERSATION, "a%00b", "uid"),
        (&Route::Asleep, long.as_str(), "x-user-id"),
    ] {
        let body = match route {
            Route::Asleep => session_complete(json!({}), json!(null)),
            _ => conversation.clone(),
        };
        let (status, _, message) = error_of(route.post(&ingest, uid, &body).await).await;
        assert_eq!(status, 400, "{uid}: {message}");
        assert!(
            message.contains(named),
            "{message:?} does not name {named:?}"
        );
    }
    let key = "k".repeat(256);
    let body = serde_json::to_vec(&conversation).unwrap();
    let response = CONVERSATION
        .post_raw(&ingest, "u1", &[("idempotency-key", &key)], body)
        .await;
    let (status, _, message) = error_of(response).await;
    assert_eq!(status, 400, "{message}");
    assert!(message.contains("Idempotency-Key"), "{message}");
    assert_eq!(ingest.broker.events_ready().await, 0);
}

#[tokio::test]
async fn epoch_times_and_whole_numbers_as_floats_are_accepted() {
    let ingest = TestIngest::start().await;
    let cases: Vec<(&Route, Value)> = vec![
        (
            &CONVERSATION,
            json!({"id": "c1", "started_at": 1712345678, "finished_at": 1712345999000u64}),
        ),
        (
            &THALAMUS,
            json!({"session_id": "s", "log_timestamp": 1712345678.5, "segments": []}),
        ),
        (
            &DAY_SUMMARY,
            json!({"summary_json": {}, "created_at": "1712345678"}),
        ),
        (
            &Route::Asleep,
            session_complete(
                json!({"start_time": 1712345678, "end_time": "2024-04-06T06:00:00Z"}),
                json!({"time_in_sleep": 27000.0, "sleep_efficiency": 88}),
            ),
        ),
        (
            &Route::Reflector,
            reflector(json!({"id": "t1", "duration": 60})),
        ),
        (
            &TRANSCRIPT,
            transcript(
                "s",
                with(segment(), "/text", json!("a\\u0000 is text here")),
            ),
        ),
    ];
    let count = cases.len();
    for (route, body) in cases {
        let response = route.post(&ingest, "u1", &body).await;
        assert_eq!(response.status(), 202, "{body}");
    }
    assert_eq!(ingest.broker.events_ready().await, count as u32);
}
