//! A message that keeps failing is dead-lettered after the delivery limit instead of looping,
//! is listed with its error, and can be redriven; good events keep flowing meanwhile.

mod harness;

use harness::{TestPipeline, envelope, one_batch_at_a_time};
use reqwest::Method;
use shared::testkit::{eventually, fixture};
use shared::{Envelope, EventKind};

fn good(key: &str) -> Envelope {
    envelope(
        EventKind::OmiTranscript,
        "u1",
        key,
        fixture("omi/thalamus_batch.json"),
    )
}

fn poison() -> Envelope {
    harness::poison("u1")
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
        .admin(Method::POST, &format!("/v1/dead-letters/{id}/redrive"))
        .await;
    assert_eq!(redriven.status(), 200);
    // Still poison: it fails again and comes back as a new dead letter, listed first.
    let letters = dead_letters(&pipeline, 2).await;
    assert!(letters[0]["redriven_at"].is_null());
    assert!(letters[1]["redriven_at"].is_string());

    let again = pipeline
        .admin(Method::POST, &format!("/v1/dead-letters/{id}/redrive"))
        .await;
    assert_eq!(again.status(), 404, "a dead letter is redriven once");
}

/// The poison event sits in the middle of a backlog the worker takes as one batch: the batch
/// is taken apart, the good events are stored and only the poison one comes back.
#[tokio::test]
async fn a_poison_message_in_a_batch_does_not_hold_back_the_others() {
    let mut pipeline = TestPipeline::start_tuned(0, one_batch_at_a_time).await;
    let good = |n: usize| good(&format!("good-{n}"));
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

/// The failures of the poison event recorded by the worker.
async fn failures(pipeline: &TestPipeline, event: &Envelope) -> i32 {
    sqlx::query_scalar("SELECT attempts FROM processing_failures WHERE event_id = $1")
        .bind(event.event_id)
        .fetch_optional(&pipeline.pool)
        .await
        .expect("processing_failures")
        .unwrap_or(0)
}

/// Starts a worker on the pipeline's queue, which holds one good event: it is stored, and
/// nothing is dead-lettered.
async fn stored_and_not_dead_lettered(mut pipeline: TestPipeline) {
    pipeline.add_worker().await;
    pipeline
        .wait_for_count("SELECT count(*) FROM inbound_events", 1)
        .await;
    pipeline.drain_and_stop_workers().await;
    assert_eq!(pipeline.count("SELECT count(*) FROM dead_letters").await, 0);
}

/// A worker killed with a message in its prefetch hands it back unprocessed; on RabbitMQ 3.x
/// each of those returns counts toward the queue's delivery limit, but not toward ours.
#[tokio::test]
async fn an_event_returned_unprocessed_more_often_than_the_limit_is_still_stored() {
    let pipeline = TestPipeline::start_with_workers(0).await;
    let event = good("returned");
    pipeline.broker.publish(&event).await;
    let returns = 2 * pipeline.broker.settings.delivery_limit;
    for n in 1..=returns {
        assert!(
            pipeline.broker.take_and_return().await,
            "the event is still on the events queue after {n} returns"
        );
    }
    stored_and_not_dead_lettered(pipeline).await;
}

/// A queue declared by an older release keeps `x-delivery-limit = DELIVERY_LIMIT`, and the
/// broker dead-letters an event returned that often by itself: the worker's count says it is
/// not poison, so it is put back on the events queue and stored, not kept as a dead letter.
#[tokio::test]
async fn an_event_the_broker_dead_letters_by_its_own_count_is_put_back_and_stored() {
    let pipeline = TestPipeline::start_with_workers(0).await;
    pipeline
        .broker
        .recreate_events_queue_as_older_release()
        .await;
    let event = good("returned-old-queue");
    pipeline.broker.publish(&event).await;
    let mut returns = 0;
    while pipeline.broker.take_and_return().await {
        returns += 1;
        assert!(
            returns < 100,
            "the older queue never dead-lettered the event"
        );
    }
    stored_and_not_dead_lettered(pipeline).await;
}

/// Returns that are not failures (kills, restarts) leave the count alone: the poison event is
/// dead-lettered after exactly `DELIVERY_LIMIT` failures of its own processing.
#[tokio::test]
async fn a_poison_message_is_dead_lettered_after_exactly_the_limit_of_its_own_failures() {
    let mut pipeline = TestPipeline::start_with_workers(0).await;
    let poison = poison();
    pipeline.broker.publish(&poison).await;
    for _ in 0..3 {
        assert!(pipeline.broker.take_and_return().await);
    }
    pipeline.add_worker().await;

    let letters = dead_letters(&pipeline, 1).await;
    assert_eq!(letters[0]["event_id"], poison.event_id.to_string());
    let limit = pipeline.broker.settings.delivery_limit as i32;
    assert_eq!(failures(&pipeline, &poison).await, limit);
    pipeline.drain_and_stop_workers().await;
    assert_eq!(
        failures(&pipeline, &poison).await,
        limit,
        "and no more after"
    );
}

/// A redrive the events exchange cannot route (its binding is gone) is an error, and the dead
/// letter stays as it was, to be redriven later.
#[tokio::test]
async fn a_redrive_that_reaches_no_queue_fails_and_leaves_the_dead_letter() {
    let pipeline = TestPipeline::start().await;
    let poison = poison();
    pipeline.broker.publish(&poison).await;
    let letters = dead_letters(&pipeline, 1).await;
    let id = letters[0]["id"].as_str().unwrap();
    pipeline.broker.unbind_events_queue().await;

    let redriven = pipeline
        .admin(Method::POST, &format!("/v1/dead-letters/{id}/redrive"))
        .await;
    assert_eq!(redriven.status(), 503);
    let letters = dead_letters(&pipeline, 1).await;
    assert!(letters[0]["redriven_at"].is_null(), "{}", letters[0]);
    let limit = pipeline.broker.settings.delivery_limit as i32;
    assert_eq!(failures(&pipeline, &poison).await, limit, "failures kept");
}
