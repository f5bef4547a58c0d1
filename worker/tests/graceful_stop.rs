//! SIGTERM to the real `worker` binary under load. While it works through a backlog, four
//! times in a row: `/readyz` turns 503 at once, it exits within `SHUTDOWN_TIMEOUT_MS`, and
//! before it does it stores what it held: the batches in flight and the messages it had
//! received but not taken (its log says how many); every event is then either stored or back
//! on the queue (none lost, none counted as a failure, hardly any committed event redelivered),
//! and the next worker stores the rest, each once. While senders post to ingest: every event
//! ingest answered 202 is stored exactly once, by the stopped worker or the next. While
//! deliveries are in flight: the worker finishes and records its attempts and gives back the
//! rest before it exits, so the next worker sends none of them again.

mod harness;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use harness::worker_binary::{LoggedWorker, exits_within, spawn_worker_binary, terminate};
use harness::{OMI_KEY, Receiver, Reply, TestPipeline, TestWorker, transcript_backlog};
use serde_json::{Value, json};
use shared::testkit::{eventually, fixture};
use uuid::Uuid;
use worker::outbound::outbox::EventType;

const EVENTS: &str = "SELECT count(*) FROM inbound_events";
const BACKLOG: i64 = 3_000;
/// SIGTERMs in a row, each to a new worker binary part way through the same backlog.
const STOPS: usize = 4;
/// `WORKER_BATCH`'s default: the events one transaction commits.
const BATCH: i64 = 16;
/// `WORKER_CONCURRENCY`'s default: the batches being stored at once.
const BATCHES_IN_FLIGHT: u64 = 4;
/// The stopping worker's bound, and how long the test gives it to exit (a second more).
const SHUTDOWN_TIMEOUT: (&str, &str) = ("SHUTDOWN_TIMEOUT_MS", "3000");
const EXIT_WITHIN: Duration = Duration::from_secs(4);
/// How soon after SIGTERM `/readyz` must say 503.
const NOT_READY_WITHIN: Duration = Duration::from_secs(1);

/// What a stopped worker logged it stored and acknowledged after SIGTERM.
#[derive(Debug)]
struct Drained {
    /// Of the batches being stored when the signal came.
    in_flight: u64,
    /// Of the messages it had received but not yet taken.
    buffered: u64,
}

impl Drained {
    async fn logged_by(worker: &LoggedWorker) -> Self {
        let line = worker.logged("consumer drained").await;
        let count = |field: &str| {
            line[field]
                .as_u64()
                .unwrap_or_else(|| panic!("{field} in {line}"))
        };
        Drained {
            in_flight: count("stored_in_flight"),
            buffered: count("stored_buffered"),
        }
    }
}

/// SIGTERMs `worker` under load and checks the stop: 503 at once, an exit in bound, and some
/// of the messages it had received but not taken stored rather than left to redelivery.
async fn stop_under_load(mut worker: LoggedWorker) -> Drained {
    worker.terminate_and_see_not_ready(NOT_READY_WITHIN).await;
    worker.exits_within(EXIT_WITHIN).await;
    let drained = Drained::logged_by(&worker).await;
    assert!(
        drained.buffered > 0,
        "{drained:?}: the worker left every message it had received to be redelivered"
    );
    assert!(
        drained.in_flight <= BATCHES_IN_FLIGHT * BATCH as u64,
        "{drained:?}: more in flight than the batches being stored"
    );
    drained
}

#[tokio::test]
async fn sigterm_mid_backlog_stores_what_the_worker_holds_and_returns_only_what_it_did_not() {
    let mut pipeline = TestPipeline::start_with_workers(0).await;
    let events = transcript_backlog(BACKLOG, 50);
    pipeline.broker.publish_all(&events).await;
    let mut returned_in_all = 0;
    for stop in 1..=STOPS {
        let before = pipeline.count(EVENTS).await;
        let worker = pipeline.spawn_logged_worker(&[SHUTDOWN_TIMEOUT]).await;
        eventually(20, "the worker well into the backlog", || async {
            (pipeline.count(EVENTS).await >= before + 200).then_some(())
        })
        .await;

        let drained = stop_under_load(worker).await;
        let stored = pipeline.count(EVENTS).await;
        assert!(
            stored < BACKLOG,
            "the backlog was done before SIGTERM {stop}"
        );
        // Every event is stored or back on the queue, and hardly any is both. Two causes of
        // both are mended: the connection closed before its channels (the broker dropped acks
        // it had read), and a stop's acks sent one a message, which under load put the channel
        // over the quorum queue's limit of 32 commands in flight, so the broker kept the rest
        // back and dropped them at the close (55 and 95 in one stop; 1 run of 6 beside the
        // whole worker suite). Now 0 in 64 stops beside it; a stop is still held only to one
        // batch, and the four to less than 32 together, since a broker whose disk stalls can
        // keep even a few acks back. The next worker finds those stored.
        let ready = eventually(10, "every event stored or back on the queue", || async {
            let ready = i64::from(pipeline.broker.events_ready().await);
            (stored + ready >= BACKLOG).then_some(ready)
        })
        .await;
        let returned_after_commit = stored + ready - BACKLOG;
        eprintln!(
            "stop {stop}: stored {stored} ({drained:?} after SIGTERM), back on the queue \
             {ready}, of which stored already {returned_after_commit}"
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

/// Posts transcripts to `ingest` as user `name` with keys `<name>-<n>`, one after another,
/// until `stop` is set; returns the event ids ingest answered 202 (any other answer fails).
async fn sender(ingest: String, name: String, stop: Arc<AtomicBool>) -> Vec<Uuid> {
    let client = reqwest::Client::new();
    let url = format!("{ingest}/v1/omi/transcript?key={OMI_KEY}&uid={name}");
    let mut accepted = Vec::new();
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let response = client
            .post(&url)
            .header("content-type", "application/json")
            .header("idempotency-key", format!("{name}-{n}"))
            .body(fixture("omi/realtime_transcript.json"))
            .send()
            .await
            .expect("ingest answers");
        assert_eq!(response.status(), 202, "{name}-{n}");
        let answer: Value = response.json().await.expect("a JSON answer");
        let event_id = answer["event_id"].as_str().and_then(|id| id.parse().ok());
        accepted.push(event_id.expect("an event_id"));
    }
    accepted
}

#[tokio::test]
async fn sigterm_while_senders_post_loses_no_202_and_stores_each_once() {
    let mut pipeline = TestPipeline::start_with_workers(0).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ingest = pipeline.ingest.url("");
    let senders: Vec<_> = (0..8)
        .map(|n| tokio::spawn(sender(ingest.clone(), format!("s{n}"), stop.clone())))
        .collect();
    eventually(30, "a backlog on the queue", || async {
        (pipeline.broker.events_ready().await >= 600).then_some(())
    })
    .await;

    let worker = pipeline.spawn_logged_worker(&[SHUTDOWN_TIMEOUT]).await;
    eventually(20, "the worker well into the backlog", || async {
        (pipeline.count(EVENTS).await >= 200).then_some(())
    })
    .await;
    let drained = stop_under_load(worker).await;
    let stored_by_the_stopped = pipeline.count(EVENTS).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut accepted = Vec::new();
    for sender in senders {
        accepted.extend(sender.await.expect("a sender"));
    }
    eprintln!(
        "{} accepted; {stored_by_the_stopped} stored by the stopped worker, {drained:?} after \
         SIGTERM",
        accepted.len()
    );
    assert!(
        (stored_by_the_stopped as usize) < accepted.len(),
        "all stored before SIGTERM"
    );

    pipeline.add_worker().await;
    eventually(60, "the rest stored by the next worker", || async {
        (pipeline.count(EVENTS).await as usize >= accepted.len()).then_some(())
    })
    .await;
    pipeline.drain_and_stop_workers().await;
    let stored: Vec<Uuid> = sqlx::query_scalar("SELECT event_id FROM inbound_events")
        .fetch_all(&pipeline.pool)
        .await
        .expect("stored events");
    let accepted: HashSet<Uuid> = accepted.into_iter().collect();
    let stored_set: HashSet<Uuid> = stored.iter().copied().collect();
    let lost: Vec<_> = accepted.difference(&stored_set).collect();
    assert!(lost.is_empty(), "202 but not stored: {lost:?}");
    assert_eq!(
        stored.len(),
        accepted.len(),
        "stored but never accepted, or twice"
    );
    let failures = pipeline
        .count("SELECT count(*) FROM processing_failures")
        .await;
    assert_eq!(failures, 0, "a graceful stop is no failure of the events");
}

#[tokio::test]
async fn sigterm_mid_deliveries_records_what_was_sent_gives_back_the_rest_and_resends_nothing() {
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
    // What it had claimed but not sent it gave back: none is left under its lease (an
    // endpoint's timeout and ten seconds), so the next worker need not wait the lease out.
    let leased: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM deliveries
         WHERE status = 'pending' AND next_attempt_at > now() + interval '2 seconds'",
    )
    .fetch_one(&worker.pool)
    .await
    .unwrap();
    assert_eq!(
        leased, 0,
        "claimed deliveries left under lease by a graceful stop"
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
