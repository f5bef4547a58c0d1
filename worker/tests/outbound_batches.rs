//! Batches through the real delivery loop: a backlog to one endpoint goes out a batch per
//! attempt slot, each recorded with one statement, and a batch stops early (giving the rest
//! back at once) when its endpoint's circuit opens or the endpoint answers 410.

mod harness;

use std::collections::HashSet;
use std::time::Duration;

use harness::{Receiver, Reply, TestWorker};
use serde_json::json;
use shared::testkit::eventually;
use worker::outbound::outbox::EventType;
use worker::settings::WorkerSettings;

/// A stopped worker with one endpoint at `url` and `events` due deliveries to it; `adjust`
/// changes the settings it restarts with.
async fn backlog_to(
    url: &str,
    events: usize,
    adjust: impl FnOnce(&mut WorkerSettings),
) -> TestWorker {
    let mut worker = TestWorker::start_with(adjust).await;
    worker
        .create_endpoint(json!({"url": url, "event_types": ["*"]}))
        .await;
    worker.stop().await;
    for n in 0..events {
        worker.emit(EventType::AudioLevel, json!({"n": n})).await;
    }
    worker
}

async fn count(worker: &TestWorker, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&worker.pool)
        .await
        .expect(sql)
}

#[tokio::test]
async fn a_backlog_goes_out_a_batch_per_slot_each_recorded_by_one_statement() {
    let mut receiver = Receiver::ok().await;
    let mut worker = backlog_to(&receiver.url(), 64, |settings| {
        settings.delivery.endpoint_concurrency = 4;
        settings.delivery.batch = 16;
    })
    .await;
    worker.restart().await;

    let mut ids = HashSet::new();
    for _ in 0..64 {
        ids.insert(receiver.next().await.header("webhook-id").to_owned());
    }
    assert_eq!(ids.len(), 64, "each delivery sent once");
    eventually(10, "every delivery recorded", || async {
        let succeeded = count(
            &worker,
            "SELECT count(*) FROM deliveries WHERE status = 'succeeded'",
        )
        .await;
        (succeeded == 64).then_some(())
    })
    .await;
    // Rows a transaction wrote share its xmin: one per batch, not one per delivery.
    let transactions = count(
        &worker,
        "SELECT count(DISTINCT xmin::text) FROM delivery_attempts",
    )
    .await;
    assert!(
        transactions <= 8,
        "64 attempts recorded in {transactions} transactions (4 batches of 16 expected)"
    );
}

#[tokio::test]
async fn a_batch_stops_when_the_circuit_opens_and_gives_the_rest_back() {
    // Nothing listens on port 9: every attempt is refused at once.
    let mut worker = backlog_to("http://127.0.0.1:9/hook", 16, |settings| {
        settings.delivery.endpoint_concurrency = 1;
        settings.delivery.batch = 16;
        settings.delivery.circuit_failure_threshold = 3;
        settings.delivery.circuit_cooldown = Duration::from_secs(60);
    })
    .await;
    worker.restart().await;

    eventually(10, "three attempts", || async {
        let attempts = count(&worker, "SELECT count(*) FROM delivery_attempts").await;
        (attempts >= 3).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let attempts = count(&worker, "SELECT count(*) FROM delivery_attempts").await;
    assert_eq!(attempts, 3, "the batch stopped when the circuit opened");
    let given_back = count(
        &worker,
        "SELECT count(*) FROM deliveries WHERE attempts = 0 AND status = 'pending'
             AND next_attempt_at < now() + interval '1 second'",
    )
    .await;
    assert_eq!(given_back, 13, "the rest are due again, not leased");
}

#[tokio::test]
async fn a_batch_stops_at_410_and_the_disabled_endpoints_rest_stay_pending() {
    let replies = vec![Reply::status(200), Reply::status(410)];
    let mut receiver = Receiver::scripted(replies, Reply::status(200)).await;
    let mut worker = backlog_to(&receiver.url(), 5, |settings| {
        settings.delivery.endpoint_concurrency = 1;
    })
    .await;
    worker.restart().await;

    receiver.next().await;
    receiver.next().await;
    let more = receiver.drain(Duration::from_millis(700)).await;
    assert!(more.is_empty(), "{} sent after the 410", more.len());
    let enabled = count(&worker, "SELECT count(*) FROM endpoints WHERE enabled").await;
    assert_eq!(enabled, 0, "the endpoint was disabled");
    let untouched = count(
        &worker,
        "SELECT count(*) FROM deliveries WHERE attempts = 0 AND status = 'pending'",
    )
    .await;
    assert_eq!(untouched, 3);
}
