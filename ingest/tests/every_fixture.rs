//! Every sender fixture is accepted on its route with its credentials, and what lands on the
//! real queue is the envelope the worker expects: kind, uid, dedup key and payload.

mod harness;

use harness::{TestIngest, omi_query};
use serde_json::Value;
use shared::testkit::fixture;
use shared::{Envelope, EventKind};

/// Where a fixture is posted.
#[derive(Clone, Copy)]
enum Route {
    /// An Omi JSON route, as user `u1`.
    Omi(&'static str),
    /// `POST /omi` with no `uid`: the batch's session id is the user.
    Thalamus,
    /// `POST /v1/omi/audio?sample_rate=<rate>` as user `u1`.
    Audio(u32),
    /// `POST /v1/asleep` as user `sleeper`.
    Asleep,
    /// `POST /v1/reflector`, signed now.
    Reflector,
}

struct Case {
    fixture: &'static str,
    route: Route,
    kind: EventKind,
    uid: &'static str,
    /// The whole dedup key, `sha256:` when it is the body hash, or `event:` when it is the
    /// acceptance's own event id (audio is never merged by content).
    dedup_key: &'static str,
    /// A field of the published JSON payload (a JSON pointer) and its expected value;
    /// for audio, the payload must be the fixture's bytes instead.
    payload: Option<(&'static str, &'static str)>,
}

const CASES: &[Case] = &[
    Case {
        fixture: "omi/realtime_transcript.json",
        route: Route::Omi("/v1/omi/transcript"),
        kind: EventKind::OmiTranscript,
        uid: "u1",
        dedup_key: "sha256:",
        payload: Some(("/segments/1/speaker", "SPEAKER_01")),
    },
    Case {
        fixture: "omi/realtime_transcript_bare_array.json",
        route: Route::Omi("/v1/omi/transcript"),
        kind: EventKind::OmiTranscript,
        uid: "u1",
        dedup_key: "sha256:",
        payload: Some(("/session_id", "u1")),
    },
    Case {
        fixture: "omi/thalamus_batch.json",
        route: Route::Thalamus,
        kind: EventKind::OmiTranscript,
        uid: "thalamus_session_123",
        dedup_key: "sha256:",
        payload: Some(("/segments/0/text", "Hello, this is a test.")),
    },
    Case {
        fixture: "omi/conversation_created.json",
        route: Route::Omi("/v1/omi/conversation"),
        kind: EventKind::OmiConversation,
        uid: "u1",
        dedup_key: "id:c0a8f6d2-5b7e-4f11-8d4c-2e9b7a1f3c55",
        payload: Some(("/transcript_segments/1/speaker_name", "Speaker 1")),
    },
    Case {
        fixture: "omi/day_summary.json",
        route: Route::Omi("/v1/omi/day-summary"),
        kind: EventKind::OmiDaySummary,
        uid: "u1",
        dedup_key: "sha256:",
        payload: Some(("/summary_json/headline", "Launch prep day")),
    },
    Case {
        fixture: "omi/audio_silence_8k.pcm",
        route: Route::Audio(8_000),
        kind: EventKind::OmiAudio,
        uid: "u1",
        dedup_key: "event:",
        payload: None,
    },
    Case {
        fixture: "omi/audio_sine440_half_16k.pcm",
        route: Route::Audio(16_000),
        kind: EventKind::OmiAudio,
        uid: "u1",
        dedup_key: "event:",
        payload: None,
    },
    Case {
        fixture: "omi-envelope/memory_created.json",
        route: Route::Omi("/webhook"),
        kind: EventKind::OmiMemoryEvent,
        uid: "u1",
        dedup_key: "id:memory_8812:memory_created",
        payload: Some(("/memory/text", "Reviewed the firmware build.")),
    },
    Case {
        fixture: "omi-envelope/memory_processing_started.json",
        route: Route::Omi("/webhook"),
        kind: EventKind::OmiMemoryEvent,
        uid: "u1",
        dedup_key: "id:memory_8812:memory_processing_started",
        payload: Some(("/type", "memory_processing_started")),
    },
    Case {
        fixture: "omi-envelope/processing_memory_status_changed.json",
        route: Route::Omi("/webhook"),
        kind: EventKind::OmiMemoryEvent,
        uid: "u1",
        dedup_key: "id:memory_8812:processing_memory_status_changed:processing",
        payload: Some(("/memory/status", "processing")),
    },
    Case {
        fixture: "omi-envelope/memory_backward_synced.json",
        route: Route::Omi("/webhook"),
        kind: EventKind::OmiMemoryEvent,
        uid: "u1",
        dedup_key: "id:memory_8812:memory_backward_synced",
        payload: Some(("/memory/id", "memory_8812")),
    },
    Case {
        fixture: "omi-envelope/transcript_segment.json",
        route: Route::Omi("/webhook"),
        kind: EventKind::OmiTranscript,
        uid: "u1",
        dedup_key: "sha256:",
        payload: Some(("/segments/0/text", "Sure. The firmware build is ready.")),
    },
    Case {
        fixture: "omi-envelope/audio_bytes.json",
        route: Route::Omi("/webhook"),
        kind: EventKind::OmiAudio,
        uid: "u1",
        dedup_key: "event:",
        payload: None,
    },
    Case {
        fixture: "asleep/inference_complete_flat.json",
        route: Route::Asleep,
        kind: EventKind::AsleepInference,
        uid: "sleeper",
        dedup_key: "id:asleep_sess_9001:60",
        payload: Some(("/event", "INFERENCE_COMPLETE")),
    },
    Case {
        fixture: "asleep/inference_complete_nested.json",
        route: Route::Asleep,
        kind: EventKind::AsleepInference,
        uid: "sleeper",
        dedup_key: "id:asleep_sess_9001:60",
        payload: Some(("/user_id", "asleep_user_42")),
    },
    Case {
        fixture: "asleep/session_complete_flat.json",
        route: Route::Asleep,
        kind: EventKind::AsleepSessionComplete,
        uid: "sleeper",
        dedup_key: "id:asleep_sess_9001",
        payload: Some(("/stat/sleep_time", "06:30:00")),
    },
    Case {
        fixture: "asleep/session_complete_nested.json",
        route: Route::Asleep,
        kind: EventKind::AsleepSessionComplete,
        uid: "sleeper",
        dedup_key: "id:asleep_sess_9001",
        payload: Some(("/timezone", "Asia/Seoul")),
    },
    Case {
        fixture: "asleep/session_complete_null_stat.json",
        route: Route::Asleep,
        kind: EventKind::AsleepSessionComplete,
        uid: "sleeper",
        dedup_key: "id:asleep_sess_9002",
        payload: Some(("/peculiarities/0", "TOO_SHORT_FOR_ANALYSIS")),
    },
    Case {
        fixture: "reflector/transcript_completed.json",
        route: Route::Reflector,
        kind: EventKind::ReflectorTranscript,
        uid: "room_7",
        dedup_key: "id:tr_01J8Z6",
        payload: Some(("/transcript/title", "Weekly sync")),
    },
];

/// Fixtures that are not a body a sender posts successfully, and where they are tested.
const NOT_ACCEPTED: &[&str] = &[
    "omi/audio_odd_length.pcm",        // refusals.rs: odd length is 400
    "omi-envelope/ping.json",          // refusals.rs: answered, not published
    "reflector/signature_vector.json", // shared::signature's unit tests
    "standard_webhooks_vectors.json",  // shared::signature's unit tests
];

async fn post(ingest: &TestIngest, route: Route, body: Vec<u8>) -> reqwest::Response {
    match route {
        Route::Omi(path) => ingest.post_omi(path, &omi_query("u1"), body).await,
        Route::Thalamus => {
            ingest
                .post_thalamus(&format!("key={}", harness::OMI_KEY), body)
                .await
        }
        Route::Audio(rate) => {
            let query = format!("{}&sample_rate={rate}", omi_query("u1"));
            ingest.post_omi_audio(&query, body).await
        }
        Route::Asleep => ingest.post_asleep("sleeper", body).await,
        Route::Reflector => ingest.post_reflector(&body).await,
    }
}

fn check(case: &Case, envelope: &Envelope, body: &[u8]) {
    let name = case.fixture;
    assert_eq!(envelope.kind, case.kind, "{name}");
    assert_eq!(envelope.uid, case.uid, "{name}");
    if case.dedup_key == "sha256:" {
        assert!(
            envelope.dedup_key.starts_with("sha256:"),
            "{name}: {}",
            envelope.dedup_key
        );
    } else if case.dedup_key == "event:" {
        let own = format!("event:{}", envelope.event_id);
        assert_eq!(envelope.dedup_key, own, "{name}");
    } else {
        assert_eq!(envelope.dedup_key, case.dedup_key, "{name}");
    }
    match (case.payload, case.route) {
        (Some((pointer, expected)), _) => {
            let payload: Value = serde_json::from_slice(&envelope.payload).expect("JSON payload");
            assert_eq!(
                payload.pointer(pointer),
                Some(&Value::from(expected)),
                "{name}"
            );
            assert_eq!(envelope.sample_rate, None, "{name}");
        }
        (None, Route::Audio(rate)) => {
            assert_eq!(envelope.payload.as_ref(), body, "{name}");
            assert_eq!(envelope.sample_rate, Some(rate), "{name}");
        }
        (None, _) => {
            assert_eq!(
                envelope.sample_rate,
                Some(16_000),
                "{name}: the envelope's default"
            );
            let hex: Value = serde_json::from_slice(body).unwrap();
            let pcm = hex::decode(hex["audio"].as_str().unwrap()).unwrap();
            assert_eq!(envelope.payload.as_ref(), pcm.as_slice(), "{name}");
        }
    }
}

#[tokio::test]
async fn every_fixture_is_accepted_on_its_route_and_published_as_its_envelope() {
    let ingest = TestIngest::start().await;
    for case in CASES {
        let body = fixture(case.fixture);
        let response = post(&ingest, case.route, body.clone()).await;
        assert_eq!(response.status(), 202, "{}", case.fixture);
        let answer: Value = response.json().await.unwrap();
        let envelope = ingest.broker.take_event().await.expect(case.fixture);
        assert_eq!(
            answer["event_id"],
            envelope.event_id.to_string(),
            "{}",
            case.fixture
        );
        check(case, &envelope, &body);
    }
    assert_eq!(ingest.broker.events_ready().await, 0);
}

#[test]
fn every_fixture_outside_bad_is_in_the_table() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/fixtures");
    let mut files = Vec::new();
    for dir in ["", "omi", "omi-envelope", "asleep", "reflector"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                files.push(
                    path.strip_prefix(&root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let known: Vec<&str> = CASES
        .iter()
        .map(|case| case.fixture)
        .chain(NOT_ACCEPTED.iter().copied())
        .collect();
    for file in &files {
        assert!(
            known.contains(&file.as_str()),
            "fixture {file} is not tested"
        );
    }
    let dirs: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| root.join(name).is_dir())
        .collect();
    for dir in dirs {
        assert!(
            ["omi", "omi-envelope", "asleep", "reflector", "bad"].contains(&dir.as_str()),
            "fixture folder {dir} is not tested"
        );
    }
}
