//! Ingest's OpenAPI document (`GET /openapi.json`, generated from the route table) against the
//! ingest that serves it: every documented operation is served and nothing else is, real
//! answers (202 for each provider route, and the errors) are valid against the documented
//! schemas, the request body examples (the fixtures) are valid against theirs, and the
//! document is valid OpenAPI 3.1.

mod harness;

use harness::{OMI_KEY, TestIngest, omi_query};
use reqwest::Method;
use serde_json::Value;
use shared::openapi::check::{Document, routes_only_with_operations};
use shared::testkit::fixture;

/// Checks `response` to `POST template` against the document: `expected` status, the
/// documented schema.
async fn check(document: &Document, template: &str, response: reqwest::Response, expected: u16) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("a JSON answer");
    assert_eq!(status, expected, "POST {template}: {body}");
    document.check(&Method::POST, template, status, &body);
}

async fn document(ingest: &TestIngest) -> Document {
    Document::fetch(&ingest.client, &ingest.service.url("/openapi.json")).await
}

#[tokio::test]
async fn every_provider_route_answers_as_documented() {
    let ingest = TestIngest::start().await;
    let document = document(&ingest).await;
    let query = omi_query("u1");
    let omi = [
        ("/v1/omi/transcript", "omi/realtime_transcript.json"),
        (
            "/v1/omi/transcript",
            "omi/realtime_transcript_bare_array.json",
        ),
        ("/omi", "omi/thalamus_batch.json"),
        ("/v1/omi/conversation", "omi/conversation_created.json"),
        ("/v1/omi/day-summary", "omi/day_summary.json"),
        ("/webhook", "omi-envelope/memory_created.json"),
    ];
    for (path, body) in omi {
        let response = ingest.post_omi(path, &query, fixture(body)).await;
        check(&document, path, response, 202).await;
    }
    let ping = ingest
        .post_omi_webhook(&query, fixture("omi-envelope/ping.json"))
        .await;
    check(&document, "/webhook", ping, 200).await;
    let audio = fixture("omi/audio_silence_8k.pcm");
    let audio = ingest
        .post_omi_audio(&format!("{query}&sample_rate=8000"), audio)
        .await;
    check(&document, "/v1/omi/audio", audio, 202).await;
    let asleep = fixture("asleep/session_complete_nested.json");
    let asleep = ingest.post_asleep("u1", asleep).await;
    check(&document, "/v1/asleep", asleep, 202).await;
    let reflector = fixture("reflector/transcript_completed.json");
    let reflector = ingest.post_reflector(&reflector).await;
    check(&document, "/v1/reflector", reflector, 202).await;
}

#[tokio::test]
async fn refusals_answer_as_documented() {
    let ingest = TestIngest::start().await;
    let document = document(&ingest).await;
    let transcript = "/v1/omi/transcript";
    let no_key = ingest.post_omi(transcript, "uid=u1", "{}").await;
    check(&document, transcript, no_key, 401).await;
    let bad = fixture("bad/segment_missing_text.json");
    let bad = ingest.post_omi(transcript, &omi_query("u1"), bad).await;
    check(&document, transcript, bad, 400).await;
    let no_uid = ingest
        .post_omi(transcript, &format!("key={OMI_KEY}"), "{}")
        .await;
    check(&document, transcript, no_uid, 400).await;
    let json_audio = ingest
        .post_omi(
            "/v1/omi/audio",
            &format!("{}&sample_rate=8000", omi_query("u1")),
            "{}",
        )
        .await;
    check(&document, "/v1/omi/audio", json_audio, 415).await;
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1_and_lists_exactly_what_is_served() {
    let ingest = TestIngest::start().await;
    let document = document(&ingest).await;
    document.validate_openapi_3_1();
    document.check_references();
    assert!(
        document.check_examples() >= 7,
        "every provider body has its fixture"
    );
    let base = ingest.service.url("");
    document
        .check_served(&ingest.client, &base, |_| {
            unreachable!("no path parameters")
        })
        .await;
    routes_only_with_operations(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(document.operations().len() >= 14);
}
