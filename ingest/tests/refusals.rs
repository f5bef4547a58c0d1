//! Everything ingest refuses, on every route: the status, the JSON error naming what is wrong,
//! and nothing on the queue afterwards.

mod harness;

use harness::{
    ASLEEP_KEY, OMI_KEY, REFLECTOR_SECRET, TestIngest, error_of, error_with_field_of, omi_query,
    reflector_signature,
};
use shared::testkit::fixture;

/// Request headers, as a table row holds them.
type Headers<'a> = Vec<(&'a str, &'a str)>;

const OMI_JSON_ROUTES: [&str; 5] = [
    "/v1/omi/transcript",
    "/v1/omi/conversation",
    "/v1/omi/day-summary",
    "/webhook",
    "/omi",
];

/// Posts `body` to `path_and_query` with `headers` and returns (status, code, message).
async fn refused(
    ingest: &TestIngest,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, String, String) {
    error_of(ingest.post(path_and_query, headers, body).await).await
}

#[tokio::test]
async fn missing_or_wrong_credentials_are_401_on_every_route() {
    let ingest = TestIngest::start().await;
    let body = fixture("omi/realtime_transcript.json");
    let mut cases: Vec<(String, Headers)> = Vec::new();
    for route in OMI_JSON_ROUTES.into_iter().chain(["/v1/omi/audio"]) {
        cases.push((format!("{route}?uid=u1"), vec![]));
        cases.push((format!("{route}?uid=u1&key=wrong"), vec![]));
        cases.push((format!("{route}?uid=u1"), vec![("x-api-key", "wrong")]));
        cases.push((
            format!("{route}?uid=u1"),
            vec![("authorization", "Bearer wrong")],
        ));
    }
    for route in ["/v1/asleep", "/asleep-webhook"] {
        cases.push((route.into(), vec![("x-user-id", "u1")]));
        cases.push((
            route.into(),
            vec![("x-user-id", "u1"), ("x-api-key", OMI_KEY)],
        ));
    }
    let wrong_secret = shared::signature::reflector_header(&["other"], now(), &body);
    let signature_cases = ["", "t=1,v1=", "garbage", "v1=00", wrong_secret.as_str()];
    for signature in signature_cases {
        cases.push((
            "/v1/reflector".into(),
            vec![("x-webhook-signature", signature)],
        ));
    }
    for (route, headers) in &cases {
        let (status, code, _) = refused(&ingest, route, headers, body.clone()).await;
        assert_eq!(
            (status, code.as_str()),
            (401, "unauthorized"),
            "{route} {headers:?}"
        );
    }
    assert_eq!(ingest.broker.events_ready().await, 0);
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test]
async fn reflector_signatures_more_than_five_minutes_off_either_way_are_401() {
    let ingest = TestIngest::start().await;
    let body = fixture("reflector/transcript_completed.json");
    for offset in [-301, 301, -3_600, 86_400] {
        let signature = reflector_signature(&body, offset);
        let response = ingest.post_reflector_signed(&signature, body.clone()).await;
        let (status, _, message) = error_of(response).await;
        assert_eq!(status, 401, "{offset}");
        assert!(message.contains("5 minutes"), "{offset}: {message}");
    }
    let tampered = String::from_utf8(body.clone())
        .unwrap()
        .replace("room_7", "room_8");
    let signature = reflector_signature(&body, 0);
    let response = ingest.post_reflector_signed(&signature, tampered).await;
    assert_eq!(error_of(response).await.0, 401);
    assert_eq!(ingest.broker.events_ready().await, 0);
}

/// Timestamps at the ends of `i64`, correctly signed, are refused as stale: the check used to
/// overflow on `now - t` and panic the request.
#[tokio::test]
async fn reflector_timestamps_at_the_ends_of_i64_are_401_not_a_panic() {
    let ingest = TestIngest::start().await;
    let body = fixture("reflector/transcript_completed.json");
    for timestamp in [i64::MIN, i64::MAX] {
        let signature = shared::signature::reflector_header(&[REFLECTOR_SECRET], timestamp, &body);
        let response = ingest.post_reflector_signed(&signature, body.clone()).await;
        let (status, _, message) = error_of(response).await;
        assert_eq!(status, 401, "t={timestamp}");
        assert!(message.contains("5 minutes"), "t={timestamp}: {message}");
    }
    assert_eq!(ingest.broker.events_ready().await, 0);
}

/// A malformed or stale signature header is refused before the body is read: an oversized body
/// behind it is a 401, not a 413 (which would mean ingest read it first).
#[tokio::test]
async fn a_bad_reflector_signature_header_is_401_before_the_body_is_read() {
    let ingest = TestIngest::start_configured(|settings| settings.json_body_limit = 1_024).await;
    let oversized = vec![b'x'; 8_192];
    let stale = reflector_signature(&oversized, -3_600);
    for signature in ["t=1,v1=zz", "v1=00", "t=5", stale.as_str()] {
        let response = ingest
            .post_reflector_signed(signature, oversized.clone())
            .await;
        let (status, _, message) = error_of(response).await;
        assert_eq!(status, 401, "{signature}: {message}");
    }
}

#[tokio::test]
async fn sources_without_credentials_are_503_naming_the_variable_to_set() {
    let ingest = TestIngest::start_configured(|settings| {
        settings.omi_keys.clear();
        settings.asleep_api_keys.clear();
        settings.reflector_secrets.clear();
    })
    .await;
    let body = fixture("reflector/transcript_completed.json");
    let signature = reflector_signature(&body, 0);
    let cases = [
        ("/v1/omi/conversation?uid=u1&key=k", vec![], "OMI_KEYS"),
        (
            "/v1/asleep",
            vec![("x-api-key", ASLEEP_KEY), ("x-user-id", "u1")],
            "ASLEEP_API_KEYS",
        ),
        (
            "/v1/reflector",
            vec![("x-webhook-signature", signature.as_str())],
            "REFLECTOR_SECRETS",
        ),
    ];
    for (route, headers, variable) in cases {
        let (status, code, message) = refused(&ingest, route, &headers, body.clone()).await;
        assert_eq!((status, code.as_str()), (503, "not_configured"), "{route}");
        assert!(message.contains(variable), "{route}: {message}");
    }
    assert_eq!(ingest.broker.events_ready().await, 0);
}

#[tokio::test]
async fn every_bad_fixture_is_400_on_its_route_naming_what_is_wrong() {
    let ingest = TestIngest::start().await;
    // (fixture, route, what the message names, the answer's `field`)
    let cases = [
        (
            "asleep_unknown_event.json",
            "/v1/asleep",
            "SOMETHING_ELSE",
            Some("event"),
        ),
        (
            "envelope_audio_not_hex.json",
            "/webhook",
            "audio",
            Some("audio"),
        ),
        (
            "deeply_nested.json",
            "/v1/omi/transcript",
            "segments",
            Some("segments[0]"),
        ),
        ("not_utf8.json", "/v1/omi/transcript", "session_id", None),
        (
            "segment_end_before_start.json",
            "/v1/omi/transcript",
            "segments[0].end",
            Some("segments[0].end"),
        ),
        (
            "segment_missing_text.json",
            "/v1/omi/transcript",
            "text",
            Some("segments[0]"),
        ),
        (
            "segments_not_list.json",
            "/v1/omi/transcript",
            "segments",
            Some("segments"),
        ),
        (
            "start_is_string.json",
            "/v1/omi/transcript",
            "segments[0]",
            Some("segments[0].start"),
        ),
        (
            "truncated.json",
            "/v1/omi/transcript",
            "malformed JSON",
            None,
        ),
    ];
    let bad =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/fixtures/bad");
    assert_eq!(
        std::fs::read_dir(bad).unwrap().count(),
        cases.len(),
        "a bad fixture is untested"
    );
    let asleep = [("x-api-key", ASLEEP_KEY), ("x-user-id", "u1")];
    for (file, route, named, field) in cases {
        let body = fixture(&format!("bad/{file}"));
        let response = if route == "/v1/asleep" {
            ingest.post(route, &asleep, body).await
        } else {
            ingest.post_omi(route, &omi_query("u1"), body).await
        };
        let (status, code, message, answered_field) = error_with_field_of(response).await;
        assert_eq!((status, code.as_str()), (400, "invalid_body"), "{file}");
        assert!(
            message.contains(named),
            "{file}: {message:?} does not name {named:?}"
        );
        assert_eq!(answered_field.as_deref(), field, "{file}: {message}");
    }
    assert_eq!(ingest.broker.events_ready().await, 0);
}

#[tokio::test]
async fn malformed_requests_are_400_naming_what_is_wrong() {
    let ingest = TestIngest::start().await;
    let omi = |route: &str, extra: &str| format!("{route}?{}{extra}", omi_query("u1"));
    let envelope = |json: &str| json.as_bytes().to_vec();
    let cases: Vec<(String, Vec<u8>, &str)> = vec![
        (
            omi("/v1/omi/conversation", ""),
            envelope(r#"{"title": "no id"}"#),
            "id",
        ),
        (
            omi("/v1/omi/day-summary", ""),
            envelope(r#"{"summary": "{'a': 1}"}"#),
            "summary_json",
        ),
        (
            omi("/webhook", ""),
            envelope(r#"{"type": "memory_deleted"}"#),
            "memory_deleted",
        ),
        (omi("/webhook", ""), envelope(r#"{"memory": {}}"#), "type"),
        (
            omi("/webhook", ""),
            envelope(r#"{"type": "audio_bytes", "audio": "abc"}"#),
            "audio",
        ),
        (
            omi("/webhook", ""),
            envelope(r#"{"type": "audio_bytes", "audio": "00"}"#),
            "audio",
        ),
        (
            omi("/webhook", "&sample_rate=5"),
            fixture("omi-envelope/audio_bytes.json"),
            "sample_rate",
        ),
        (
            omi("/webhook", ""),
            envelope(
                r#"{"type": "transcript_segment", "segment": {"start_time": 1, "end_time": 2}}"#,
            ),
            "text",
        ),
        (
            format!("/omi?key={OMI_KEY}"),
            fixture("omi/realtime_transcript_bare_array.json"),
            "session_id",
        ),
        (
            format!("/v1/omi/transcript?key={OMI_KEY}"),
            fixture("omi/realtime_transcript.json"),
            "uid",
        ),
    ];
    for (route, body, named) in cases {
        let (status, _, message) = error_of(ingest.post(&route, &[], body).await).await;
        assert_eq!(status, 400, "{route}: {message}");
        assert!(
            message.contains(named),
            "{route}: {message:?} does not name {named:?}"
        );
    }
    // A parameter or header at fault is named in `field` too, as the management API does.
    let transcript = fixture("omi/realtime_transcript.json");
    let long_key = "k".repeat(256);
    let parameters: [(String, Headers, &str); 4] = [
        (format!("/v1/omi/transcript?key={OMI_KEY}"), vec![], "uid"),
        (omi("/v1/omi/transcript", "&uid=a%00b"), vec![], "uid"),
        (
            omi("/v1/omi/transcript", ""),
            vec![("idempotency-key", long_key.as_str())],
            "Idempotency-Key",
        ),
        (
            "/v1/asleep".into(),
            vec![("x-api-key", ASLEEP_KEY)],
            "x-user-id",
        ),
    ];
    for (route, headers, named) in parameters {
        let response = ingest.post(&route, &headers, transcript.clone()).await;
        let (status, code, message, field) = error_with_field_of(response).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "invalid_request"),
            "{route}: {message}"
        );
        assert_eq!(field.as_deref(), Some(named), "{route}: {message}");
    }
    assert_eq!(ingest.broker.events_ready().await, 0);
}

#[tokio::test]
async fn audio_needs_octet_stream_a_sample_rate_and_whole_samples() {
    let ingest = TestIngest::start().await;
    let pcm = fixture("omi/audio_silence_8k.pcm");
    let rate = |rate: &str| format!("{}&sample_rate={rate}", omi_query("u1"));
    let cases = [
        (
            rate("16000"),
            Some("application/json"),
            pcm.clone(),
            415,
            "application/octet-stream",
        ),
        (
            rate("16000"),
            None,
            pcm.clone(),
            415,
            "application/octet-stream",
        ),
        (
            omi_query("u1"),
            Some("application/octet-stream"),
            pcm.clone(),
            400,
            "sample_rate",
        ),
        (
            rate("999"),
            Some("application/octet-stream"),
            pcm.clone(),
            400,
            "sample_rate",
        ),
        (
            rate("192001"),
            Some("application/octet-stream"),
            pcm.clone(),
            400,
            "sample_rate",
        ),
        (
            rate("16k"),
            Some("application/octet-stream"),
            pcm.clone(),
            400,
            "sample_rate",
        ),
        (
            rate("8000"),
            Some("application/octet-stream"),
            fixture("omi/audio_odd_length.pcm"),
            400,
            "321 bytes",
        ),
        (
            rate("8000"),
            Some("application/octet-stream"),
            vec![],
            400,
            "no audio",
        ),
    ];
    for (query, content_type, body, expected, named) in cases {
        let headers: Vec<(&str, &str)> = content_type
            .map(|value| ("content-type", value))
            .into_iter()
            .collect();
        let response = ingest
            .post(&format!("/v1/omi/audio?{query}"), &headers, body)
            .await;
        let (status, _, message) = error_of(response).await;
        assert_eq!(status, expected, "{query} {content_type:?}: {message}");
        assert!(
            message.contains(named),
            "{query}: {message:?} does not name {named:?}"
        );
    }
    assert_eq!(ingest.broker.events_ready().await, 0);
}

#[tokio::test]
async fn asleep_needs_the_user_header() {
    let ingest = TestIngest::start().await;
    let body = fixture("asleep/session_complete_flat.json");
    for headers in [
        vec![("x-api-key", ASLEEP_KEY)],
        vec![("x-api-key", ASLEEP_KEY), ("x-user-id", " ")],
    ] {
        let (status, _, message) = refused(&ingest, "/v1/asleep", &headers, body.clone()).await;
        assert_eq!(status, 400);
        assert!(message.contains("x-user-id"), "{message}");
    }
    assert_eq!(ingest.broker.events_ready().await, 0);
}

#[tokio::test]
async fn reflector_events_other_than_a_completed_transcript_are_400() {
    let ingest = TestIngest::start().await;
    let cases = [
        (
            r#"{"event": "transcript.started", "transcript": {"id": "t1"}}"#,
            "event",
        ),
        (
            r#"{"event": "transcript.completed", "transcript": {"room_id": "r"}}"#,
            "id",
        ),
        (r#"{"event": "transcript.completed"}"#, "transcript"),
        ("not json", "malformed JSON"),
    ];
    for (body, named) in cases {
        let (status, _, message) = error_of(ingest.post_reflector(body.as_bytes()).await).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            message.contains(named),
            "{body}: {message:?} does not name {named:?}"
        );
    }
    assert_eq!(ingest.broker.events_ready().await, 0);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_with_a_json_error() {
    let ingest = TestIngest::start_configured(|settings| {
        settings.json_body_limit = 1_024;
        settings.audio_body_limit = 2_048;
    })
    .await;
    let big_json = format!(
        r#"{{"session_id": "s", "segments": [], "pad": "{}"}}"#,
        "x".repeat(8_192)
    );
    let signature = reflector_signature(big_json.as_bytes(), 0);
    let octet = [("content-type", "application/octet-stream")];
    let asleep = [("x-api-key", ASLEEP_KEY), ("x-user-id", "u1")];
    let omi = |route: &str| format!("{route}?{}&sample_rate=16000", omi_query("u1"));
    let mut cases: Vec<(String, Headers, Vec<u8>)> = OMI_JSON_ROUTES
        .iter()
        .map(|route| (omi(route), vec![], big_json.clone().into_bytes()))
        .collect();
    cases.push((omi("/v1/omi/audio"), octet.to_vec(), vec![0; 4_096]));
    cases.push((
        "/v1/asleep".into(),
        asleep.to_vec(),
        big_json.clone().into_bytes(),
    ));
    cases.push((
        "/v1/reflector".into(),
        vec![("x-webhook-signature", &signature)],
        big_json.clone().into_bytes(),
    ));
    for (route, headers, body) in cases {
        let (status, code, message) = refused(&ingest, &route, &headers, body).await;
        assert_eq!((status, code.as_str()), (413, "too_large"), "{route}");
        assert!(message.contains("bytes"), "{route}: {message}");
    }
    assert_eq!(ingest.broker.events_ready().await, 0);
}

#[tokio::test]
async fn a_credential_over_its_rate_is_429_with_retry_after_and_others_go_on() {
    let ingest = TestIngest::start_configured(|settings| {
        settings.rate_limit_per_s = 0.1;
        settings.rate_limit_burst = 2;
    })
    .await;
    let body = fixture("omi/realtime_transcript.json");
    for _ in 0..2 {
        let response = ingest
            .post_omi_transcript(&omi_query("u1"), body.clone())
            .await;
        assert_eq!(response.status(), 202);
    }
    let response = ingest
        .post_omi_transcript(&omi_query("u1"), body.clone())
        .await;
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    let (status, code, _) = error_of(response).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"));

    let other_user = ingest
        .post_omi_transcript(&omi_query("u2"), body.clone())
        .await;
    assert_eq!(other_user.status(), 202);
    let asleep = fixture("asleep/session_complete_flat.json");
    assert_eq!(ingest.post_asleep("u1", asleep).await.status(), 202);
    assert_eq!(
        ingest.broker.events_ready().await,
        4,
        "the refused request was not published"
    );
}

#[tokio::test]
async fn an_envelope_ping_is_answered_and_not_published() {
    let ingest = TestIngest::start().await;
    let response = ingest
        .post_omi_webhook(&omi_query("u1"), fixture("omi-envelope/ping.json"))
        .await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(ingest.broker.events_ready().await, 0);
}
