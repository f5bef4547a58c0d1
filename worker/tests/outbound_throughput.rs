//! A measurement, not a check (ignored by default): how fast one worker delivers a backlog to
//! in-process receivers. Run with
//! `cargo test --release -p worker --test outbound_throughput -- --ignored --nocapture`.

mod harness;

use std::time::{Duration, Instant};

use harness::{Receiver, TestWorker};
use serde_json::json;
use worker::outbound::outbox::{self, EventType};

const EVENTS: usize = 2000;

async fn measure(endpoints: usize) {
    let worker = TestWorker::start_with(|settings| {
        settings.delivery.poll_interval = Duration::from_secs(1);
    })
    .await;
    let mut receivers = Vec::new();
    for _ in 0..endpoints {
        let receiver = Receiver::ok().await;
        worker.endpoint_for(&receiver).await;
        receivers.push(receiver);
    }
    let started = Instant::now();
    let mut tx = worker.pool.begin().await.unwrap();
    for n in 0..EVENTS / endpoints {
        outbox::emit(&mut tx, EventType::AudioLevel, None, json!({"n": n}))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let total = (EVENTS / endpoints * endpoints) as i64;
    shared::testkit::eventually(300, "the backlog delivered", || async {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status = 'succeeded'")
                .fetch_one(&worker.pool)
                .await
                .unwrap();
        (done == total).then_some(())
    })
    .await;
    let elapsed = started.elapsed();
    println!(
        "{total} deliveries to {endpoints} endpoint(s) in {elapsed:?}: {:.0}/s",
        total as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand"]
async fn deliveries_per_second_to_one_endpoint() {
    measure(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand"]
async fn deliveries_per_second_to_ten_endpoints() {
    measure(10).await;
}
