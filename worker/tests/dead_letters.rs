//! A message that keeps failing is dead-lettered after the delivery limit instead of looping,
//! is listed with its error, and can be redriven; good events keep flowing meanwhile.

mod harness;

use harness::{TestPipeline, envelope, one_batch_at_a_time};
use shared::testkit::{eventually, fixture};
use shared::{Envelope, EventKind};

fn poison() -> Envelope {
    let payload: &[u8] = b"{\"this is\": \"not a transcript batch\"}";
    envelope(EventKind::OmiTranscript, "u1", "poison", payload)
}

async fn dead_letters(pipeline: &TestPipeline, expected: usize) -> Vec<serde_json::Value> {
    eventually(20, "dead letters", || async {
        let page = pipeline.admin_get("/v1/dead-letters").await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        (items.len() == expected).then_some(items)
    })
    .await
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_with_its_error_and_can_be_redriven() {
    let pipeline = TestPipeline::start().await;
    let poison = poison();
    pipeline.broker.publish(&poison).await;
    pipeline
        .post_omi("/v1/omi/transcript", "u1", "omi/realtime_transcript.json")
        .await;

    let letters = dead_letters(&pipeline, 1).await;
    assert_eq!(letters[0]["event_id"], poison.event_id.to_string());
    assert_eq!(letters[0]["kind"], "omi_transcript");
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap()
            .contains("cannot be read"),
        "{}",
        letters[0]
    );
    pipeline
        .wait_for_count("SELECT count(*) FROM transcript_segments", 2)
        .await;
    assert_eq!(
        pipeline.count("SELECT count(*) FROM inbound_events").await,
        1,
        "only the good event"
    );

    let id = letters[0]["id"].as_str().unwrap();
    let redriven = pipeline
        .admin_post(&format!("/v1/dead-letters/{id}/redrive"))
        .await;
    assert_eq!(redriven.status(), 200);
    // Still poison: it fails again and comes back as a new dead letter.
    let letters = dead_letters(&pipeline, 2).await;
    assert!(letters[0]["redriven_at"].is_string());
    assert!(letters[1]["redriven_at"].is_null());

    let again = pipeline
        .admin_post(&format!("/v1/dead-letters/{id}/redrive"))
        .await;
    assert_eq!(again.status(), 404, "a dead letter is redriven once");
}

/// The poison event sits in the middle of a backlog the worker takes as one batch: the batch
/// is taken apart, the good events are stored and only the poison one comes back.
#[tokio::test]
async fn a_poison_message_in_a_batch_does_not_hold_back_the_others() {
    let mut pipeline = TestPipeline::start_tuned(0, one_batch_at_a_time).await;
    let good = |n: usize| {
        let key = format!("good-{n}");
        envelope(
            EventKind::OmiTranscript,
            "u1",
            &key,
            fixture("omi/thalamus_batch.json"),
        )
    };
    let poison = poison();
    pipeline
        .broker
        .publish_all(&[good(1), good(2), poison.clone(), good(3), good(4)])
        .await;
    pipeline.add_worker().await;

    let letters = dead_letters(&pipeline, 1).await;
    assert_eq!(letters[0]["event_id"], poison.event_id.to_string());
    pipeline
        .wait_for_count("SELECT count(*) FROM inbound_events", 4)
        .await;
}
