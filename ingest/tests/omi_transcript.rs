//! `POST /v1/omi/transcript` against the real broker: what is accepted is on the queue, what is
//! refused is not, and nothing is acknowledged that the broker has not confirmed. (Bad bodies on
//! every route are in `refusals.rs`.)

mod harness;

use harness::{OMI_KEY, TestIngest, error_of, omi_query};
use shared::EventKind;
use shared::payload::omi::TranscriptBatch;
use shared::testkit::{ProxyMode, TestBroker, fixture};

#[tokio::test]
async fn an_accepted_transcript_is_on_the_queue_with_its_envelope() {
    let ingest = TestIngest::start().await;
    let response = ingest
        .post_omi_transcript(
            &omi_query("user-1"),
            fixture("omi/realtime_transcript.json"),
        )
        .await;
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "queued");

    let envelope = ingest
        .broker
        .take_event()
        .await
        .expect("one message on the queue");
    assert_eq!(
        envelope.event_id.to_string(),
        body["event_id"].as_str().unwrap()
    );
    assert_eq!(envelope.kind, EventKind::OmiTranscript);
    assert_eq!(envelope.uid, "user-1");
    assert!(
        envelope.dedup_key.starts_with("sha256:"),
        "{}",
        envelope.dedup_key
    );
    let batch: TranscriptBatch = serde_json::from_slice(&envelope.payload).unwrap();
    assert_eq!(batch.segments.len(), 2);
    assert_eq!(batch.segments[0].start, 12.48);
    assert_eq!(
        batch.segments[0].extra["speaker_label_source"],
        "diarization"
    );
}

#[tokio::test]
async fn the_omi_key_is_accepted_in_every_place_omi_puts_it() {
    let ingest = TestIngest::start().await;
    let body = fixture("omi/realtime_transcript.json");
    let url = |query: &str| ingest.service.url(&format!("/v1/omi/transcript?{query}"));
    let requests = [
        ingest.client.post(url(&format!("key={OMI_KEY}?uid=u1"))),
        ingest
            .client
            .post(url("uid=u1"))
            .header("x-api-key", OMI_KEY),
        ingest.client.post(url("uid=u1")).bearer_auth(OMI_KEY),
    ];
    for request in requests {
        let response = request.body(body.clone()).send().await.unwrap();
        assert_eq!(response.status(), 202);
        assert_eq!(ingest.broker.take_event().await.unwrap().uid, "u1");
    }
}

#[tokio::test]
async fn missing_or_wrong_keys_are_401_and_nothing_is_published() {
    let ingest = TestIngest::start().await;
    let body = fixture("omi/realtime_transcript.json");
    for query in ["uid=u1", "uid=u1&key=wrong", "uid=u1&key="] {
        let (status, code, _) =
            error_of(ingest.post_omi_transcript(query, body.clone()).await).await;
        assert_eq!((status, code.as_str()), (401, "unauthorized"), "{query}");
    }
    assert_eq!(ingest.broker.events_ready().await, 0);
}

#[tokio::test]
async fn an_unreachable_broker_is_503_with_retry_after() {
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let broker = TestBroker::new();
    let settings = broker.settings_via(TestBroker::url_for(closed_port));
    let ingest = TestIngest::start_with(broker, settings).await;
    let response = ingest
        .post_omi_transcript(&omi_query("u1"), fixture("omi/realtime_transcript.json"))
        .await;
    assert_eq!(response.headers()["retry-after"], "5");
    let (status, code, _) = error_of(response).await;
    assert_eq!((status, code.as_str()), (503, "unavailable"));
}

/// `/readyz` on an unreachable broker is 503 in fixed words, with no error text from the
/// broker connection (the publisher logs it).
#[tokio::test]
async fn readyz_on_an_unreachable_broker_is_503_without_any_error_text() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let broker = TestBroker::new();
    let settings = broker.settings_via(TestBroker::url_for(closed_port));
    let ingest = TestIngest::start_with(broker, settings).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let response = ingest
        .client
        .get(ingest.service.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    let expected = serde_json::json!({
        "error": "not_ready",
        "message": "not connected to the broker",
    });
    assert_eq!(body, expected);
}

#[tokio::test]
async fn a_broker_outage_is_503_never_202_and_ingest_recovers_by_itself() {
    let (ingest, proxy) = TestIngest::behind_proxy(std::time::Duration::from_secs(5)).await;
    let body = fixture("omi/realtime_transcript.json");
    assert_eq!(
        ingest
            .post_omi_transcript(&omi_query("u1"), body.clone())
            .await
            .status(),
        202
    );

    proxy.set_mode(ProxyMode::Cut);
    for _ in 0..5 {
        let status = ingest
            .post_omi_transcript(&omi_query("u1"), body.clone())
            .await
            .status();
        assert_eq!(status, 503);
    }

    proxy.set_mode(ProxyMode::Open);
    ingest.wait_ready().await;
    assert_eq!(
        ingest
            .post_omi_transcript(&omi_query("u1"), body.clone())
            .await
            .status(),
        202
    );
    assert_eq!(
        ingest.broker.events_ready().await,
        2,
        "only the confirmed events are queued"
    );
}

#[tokio::test]
async fn a_broker_that_stops_answering_is_503_after_the_confirm_timeout() {
    let (ingest, proxy) = TestIngest::behind_proxy(std::time::Duration::from_millis(300)).await;

    proxy.set_mode(ProxyMode::Stalled);
    let response = ingest
        .post_omi_transcript(&omi_query("u1"), fixture("omi/realtime_transcript.json"))
        .await;
    assert_eq!(response.status(), 503);
    assert!(
        proxy.held_bytes() > 0,
        "the publish reached the proxy and was held"
    );
}

#[tokio::test]
async fn ping_and_health_answer_without_credentials() {
    let ingest = TestIngest::start().await;
    for (path, expected) in [
        ("/ping", Some("pong")),
        ("/healthz", None),
        ("/metrics", None),
    ] {
        let response = ingest
            .client
            .get(ingest.service.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        if let Some(expected) = expected {
            assert_eq!(response.text().await.unwrap(), expected);
        }
    }
}
