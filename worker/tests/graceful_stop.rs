//! SIGTERM to the real `worker` binary while it works through a backlog, four times in a row:
//! each exits within `SHUTDOWN_TIMEOUT_MS`, every event is then either stored or back on the
//! queue (none lost, none counted as a failure, hardly any committed event redelivered), and
//! the next worker stores the rest, each once. SIGTERM while deliveries are in flight: the worker finishes and records
//! its batches before it exits, so the next worker sends none of them again.

mod harness;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use harness::{
    Receiver, Reply, TestPipeline, TestWorker, envelope, spawn_worker_binary, terminate,
};
use serde_json::json;
use shared::EventKind;
use shared::testkit::{eventually, fixture};
use worker::outbound::outbox::EventType;

const EVENTS: &str = "SELECT count(*) FROM inbound_events";
const BACKLOG: i64 = 3_000;
/// SIGTERMs in a row, each to a new worker binary part way through the same backlog.
const STOPS: usize = 4;
/// `WORKER_BATCH`'s default: the events one transaction commits.
const BATCH: i64 = 16;

/// Waits for `child` to exit, successfully, within `bound`.
async fn exits_within(child: &mut tokio::process::Child, bound: Duration) {
    let started = Instant::now();
    let status = tokio::time::timeout(bound, child.wait())
        .await
        .unwrap_or_else(|_| panic!("the worker did not exit within {bound:?}"))
        .expect("wait for the worker");
    assert!(status.success(), "{status} after {:?}", started.elapsed());
}

#[tokio::test]
async fn sigterm_mid_backlog_stops_in_bound_and_returns_only_what_was_not_stored() {
    let mut pipeline = TestPipeline::start_with_workers(0).await;
    let body = fixture("omi/realtime_transcript.json");
    let events: Vec<_> = (0..BACKLOG)
        .map(|n| {
            let uid = format!("u{}", n % 50);
            envelope(
                EventKind::OmiTranscript,
                &uid,
                &format!("k{n}"),
                body.clone(),
            )
        })
        .collect();
    pipeline.broker.publish_all(&events).await;
    let database_url = pipeline.database.url.clone();
    let mut returned_in_all = 0;
    for stop in 1..=STOPS {
        let before = pipeline.count(EVENTS).await;
        let mut worker = pipeline
            .spawn_worker_binary(&database_url, &[("SHUTDOWN_TIMEOUT_MS", "3000")])
            .await;
        eventually(20, "the worker well into the backlog", || async {
            (pipeline.count(EVENTS).await >= before + 200).then_some(())
        })
        .await;

        terminate(&worker);
        exits_within(&mut worker, Duration::from_secs(5)).await;

        let stored = pipeline.count(EVENTS).await;
        assert!(
            stored < BACKLOG,
            "the backlog was done before SIGTERM {stop}"
        );
        // Every event is stored or back on the queue. Since the consumer closes its channels
        // before its connection, none is both when this test runs alone (0 in 12 stops); under
        // a loaded machine a stop has still returned a few committed events (8, once in 4
        // stops during a full workspace run), so each stop is held to at most one batch and
        // the four together to less than one stop returned before the fix (32). The next
        // worker finds those stored.
        let ready = eventually(10, "every event stored or back on the queue", || async {
            let ready = i64::from(pipeline.broker.events_ready().await);
            (stored + ready >= BACKLOG).then_some(ready)
        })
        .await;
        let returned_after_commit = stored + ready - BACKLOG;
        eprintln!(
            "stop {stop}: stored {stored}, back on the queue {ready}, of which stored already \
             {returned_after_commit}"
        );
        assert!(
            returned_after_commit <= BATCH,
            "stop {stop}: {returned_after_commit} stored events returned to the queue"
        );
        returned_in_all += returned_after_commit;
    }
    assert!(
        returned_in_all < 32,
        "{returned_in_all} stored events returned to the queue over {STOPS} stops"
    );

    pipeline.add_worker().await;
    eventually(60, "the rest stored by the next worker", || async {
        (pipeline.count(EVENTS).await == BACKLOG).then_some(())
    })
    .await;
    pipeline.drain_and_stop_workers().await;
    assert_eq!(pipeline.count(EVENTS).await, BACKLOG);
    let failures = pipeline
        .count("SELECT count(*) FROM processing_failures")
        .await;
    assert_eq!(failures, 0, "a graceful stop is no failure of the events");
}

#[tokio::test]
async fn sigterm_mid_deliveries_records_what_was_sent_and_resends_nothing() {
    const EVENTS: usize = 300;
    let mut worker = TestWorker::start().await;
    let slow = Reply::status(200).after(Duration::from_millis(20));
    let mut receiver = Receiver::scripted(vec![], slow).await;
    worker.endpoint_for(&receiver).await;
    worker.stop().await;
    for n in 0..EVENTS {
        worker.emit(EventType::Test, json!({ "n": n })).await;
    }
    let env = [
        ("ADMIN_TOKEN", harness::ADMIN_TOKEN),
        ("ALLOWED_TARGET_CIDRS", "127.0.0.0/8"),
        ("SHUTDOWN_TIMEOUT_MS", "5000"),
    ];
    let mut sender = spawn_worker_binary(&worker.settings.broker, &worker.database.url, &env).await;
    let mut received = Vec::new();
    while received.len() < 40 {
        received.push(receiver.next().await);
    }
    terminate(&sender);
    exits_within(&mut sender, Duration::from_secs(8)).await;
    received.extend(receiver.drain(Duration::from_millis(300)).await);
    assert!(received.len() < EVENTS, "all sent before the SIGTERM");

    // Every request the stopped worker made was answered, and it recorded each one.
    let succeeded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status = 'succeeded'")
            .fetch_one(&worker.pool)
            .await
            .unwrap();
    eprintln!("sent and recorded before the stop: {succeeded} of {EVENTS}");
    assert_eq!(
        succeeded as usize,
        received.len(),
        "answered but not recorded"
    );

    worker.restart().await;
    while received.len() < EVENTS {
        received.push(receiver.next().await);
    }
    received.extend(receiver.drain(Duration::from_millis(500)).await);
    let mut sent = HashMap::<String, usize>::new();
    for request in &received {
        *sent
            .entry(request.header("webhook-id").to_owned())
            .or_default() += 1;
    }
    let twice: Vec<_> = sent.iter().filter(|(_, times)| **times > 1).collect();
    assert!(
        twice.is_empty(),
        "sent again after a graceful stop: {twice:?}"
    );
    assert_eq!(sent.len(), EVENTS);
}
