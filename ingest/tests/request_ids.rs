//! `X-Request-Id` on the real queue: a sane id the caller gives is echoed and published with
//! the event as its AMQP `correlation_id`; a missing, over-long or non-ASCII one is replaced by
//! one ingest makes, which is echoed and published the same way. Refusals echo theirs too.

mod harness;

use harness::{JSON, TestIngest, omi_query};
use shared::testkit::fixture;

/// Posts a transcript with `request_id` (if any) and returns the echoed id, after checking
/// that the event published for it carries the same one.
async fn accepted_with(ingest: &TestIngest, request_id: Option<&str>) -> String {
    let mut headers = vec![JSON];
    headers.extend(request_id.map(|id| ("x-request-id", id)));
    let path = format!("/v1/omi/transcript?{}", omi_query("u1"));
    let body = fixture("omi/realtime_transcript.json");
    let response = ingest.post(&path, &headers, body).await;
    assert_eq!(response.status(), 202);
    let echoed = response.headers()["x-request-id"]
        .to_str()
        .expect("an ASCII id")
        .to_owned();
    let published = ingest.broker.take_event().await.expect("published");
    assert_eq!(published.request_id.as_deref(), Some(echoed.as_str()));
    echoed
}

#[tokio::test]
async fn a_sane_request_id_is_echoed_and_published_with_the_event() {
    let ingest = TestIngest::start().await;
    let given = "req-2026.12.02:abc_XYZ/42";
    assert_eq!(accepted_with(&ingest, Some(given)).await, given);
}

#[tokio::test]
async fn a_missing_request_id_is_made_echoed_and_published() {
    let ingest = TestIngest::start().await;
    let made = accepted_with(&ingest, None).await;
    assert!(uuid::Uuid::parse_str(&made).is_ok(), "{made}");
    assert_ne!(
        accepted_with(&ingest, None).await,
        made,
        "one id per request"
    );
}

#[tokio::test]
async fn an_over_long_spaced_or_non_ascii_request_id_is_replaced() {
    let ingest = TestIngest::start().await;
    let too_long = "a".repeat(129);
    for given in [too_long.as_str(), "two words", "caf\u{e9}"] {
        let made = accepted_with(&ingest, Some(given)).await;
        assert!(
            uuid::Uuid::parse_str(&made).is_ok(),
            "{given:?} gave {made}"
        );
    }
    let longest = "b".repeat(128);
    assert_eq!(accepted_with(&ingest, Some(&longest)).await, longest);
}

#[tokio::test]
async fn a_refused_request_echoes_its_request_id_too() {
    let ingest = TestIngest::start().await;
    let path = "/v1/omi/transcript?key=wrong&uid=u1";
    let response = ingest
        .post(path, &[JSON, ("x-request-id", "refused-1")], "{}")
        .await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["x-request-id"], "refused-1");
}
