//! Endpoints kept apart and receivers' wishes honoured: a slow endpoint does not hold up a fast
//! one, the per-endpoint rate limit is enforced, and `Retry-After` on 429 is respected.

mod harness;

use std::time::Duration;

use harness::{Receiver, Reply, TestWorker};
use serde_json::json;
use worker::outbound::outbox::EventType;

#[tokio::test]
async fn a_slow_endpoint_does_not_hold_up_the_others() {
    let worker = TestWorker::start_with(|settings| {
        settings.delivery.concurrency = 6;
        settings.delivery.endpoint_concurrency = 2;
    })
    .await;
    let stuck = Reply::status(200).after(Duration::from_secs(30));
    let mut slow = Receiver::scripted(vec![], stuck).await;
    let mut fast = Receiver::ok().await;
    worker
        .create_endpoint(json!({"url": slow.url(), "event_types": ["*"], "timeout_ms": 20000}))
        .await;
    worker.endpoint_for(&fast).await;
    const EVENTS: usize = 20;
    for n in 0..EVENTS {
        worker.emit(EventType::AudioLevel, json!({"n": n})).await;
    }

    for _ in 0..EVENTS {
        fast.next().await;
    }
    let in_flight = slow.drain(Duration::from_millis(300)).await;
    assert!(
        in_flight.len() <= 2,
        "{} requests at once to the slow endpoint",
        in_flight.len()
    );
}

#[tokio::test]
async fn the_per_endpoint_rate_limit_spaces_requests_out() {
    let worker = TestWorker::start().await;
    let mut receiver = Receiver::ok().await;
    worker
        .create_endpoint(
            json!({"url": receiver.url(), "event_types": ["*"], "rate_limit_per_s": 4}),
        )
        .await;
    const EVENTS: usize = 12;
    for n in 0..EVENTS {
        worker.emit(EventType::AudioLevel, json!({"n": n})).await;
    }

    let mut requests = Vec::new();
    for _ in 0..EVENTS {
        requests.push(receiver.next().await);
    }
    // A full bucket (4) goes at once, the other 8 need at least 2 s at 4 per second.
    let span = requests.last().unwrap().at - requests[0].at;
    assert!(
        span >= Duration::from_millis(1800),
        "{EVENTS} requests in {span:?}"
    );
}

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let worker = TestWorker::start().await;
    let busy = Reply::status(429).retry_after("2");
    let mut receiver = Receiver::scripted(vec![busy], Reply::status(200)).await;
    let endpoint = worker.endpoint_for(&receiver).await;
    let event = worker.emit(EventType::AudioLevel, json!({})).await;

    let first = receiver.next().await;
    let second = receiver.next().await;
    assert!(second.at - first.at >= Duration::from_millis(1900));
    worker
        .delivery_with_status(event, &endpoint, "succeeded")
        .await;
}

#[tokio::test]
async fn an_endpoint_whose_circuit_opened_drains_its_backlog_once_a_probe_succeeds() {
    let worker = TestWorker::start_with(|settings| {
        settings.delivery.circuit_failure_threshold = 2;
        settings.delivery.window = Duration::from_secs(30);
    })
    .await;
    // Two failures open the circuit; the first probe fails too, the second succeeds.
    let down = vec![Reply::status(503); 3];
    let mut recovering = Receiver::scripted(down, Reply::status(200)).await;
    let mut steady = Receiver::ok().await;
    let endpoint = worker.endpoint_for(&recovering).await;
    worker.endpoint_for(&steady).await;
    const EVENTS: usize = 12;
    let mut events = Vec::new();
    for n in 0..EVENTS {
        events.push(worker.emit(EventType::AudioLevel, json!({"n": n})).await);
    }

    for _ in 0..EVENTS {
        steady.next().await;
    }
    for event in events {
        worker
            .delivery_with_status(event, &endpoint, "succeeded")
            .await;
    }
    let requests = recovering.drain(Duration::from_millis(300)).await;
    assert!(
        requests.len() >= 3,
        "the failed attempts and probe reached it"
    );
}
