//! Request ids reach the worker: an event that ingest published with the request's
//! `X-Request-Id` as its AMQP `correlation_id` is stored, and so is a message from before
//! request ids (no `correlation_id`), published straight to the queue.

mod harness;

use harness::{OMI_KEY, TestPipeline, envelope};
use shared::EventKind;
use shared::testkit::fixture;

#[tokio::test]
async fn events_with_and_without_a_correlation_id_are_stored() {
    let pipeline = TestPipeline::start().await;
    let headers = [
        ("content-type", "application/json".to_owned()),
        ("x-request-id", "req-from-the-sender".to_owned()),
    ];
    let path = format!("/v1/omi/transcript?key={OMI_KEY}&uid=u1");
    pipeline
        .post(&path, &headers, fixture("omi/realtime_transcript.json"))
        .await;
    let old = envelope(
        EventKind::OmiTranscript,
        "u2",
        "published-before-request-ids",
        fixture("omi/realtime_transcript.json"),
    );
    assert_eq!(old.request_id, None);
    assert!(old.amqp_properties().correlation_id().is_none());
    pipeline.broker.publish(&old).await;

    pipeline
        .wait_for_count("SELECT count(*) FROM inbound_events", 2)
        .await;
    let uids: Vec<String> = sqlx::query_scalar("SELECT uid FROM inbound_events ORDER BY uid")
        .fetch_all(&pipeline.pool)
        .await
        .unwrap();
    assert_eq!(uids, ["u1", "u2"]);
}
