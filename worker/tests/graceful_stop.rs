//! SIGTERM to the real `worker` binary while it works through a backlog: it exits within
//! `SHUTDOWN_TIMEOUT_MS`, every event is then either stored or back on the queue (none lost,
//! none counted as a failure, at most a prefetch's worth both), and the next worker stores the
//! rest, each once.

mod harness;

use std::time::{Duration, Instant};

use harness::{TestPipeline, envelope};
use shared::EventKind;
use shared::testkit::{eventually, fixture};

const EVENTS: &str = "SELECT count(*) FROM inbound_events";
const BACKLOG: i64 = 3_000;
/// `WORKER_PREFETCH`'s default: the most messages the worker holds unacknowledged.
const PREFETCH: u16 = 64;

#[tokio::test]
async fn sigterm_mid_backlog_stops_in_bound_and_loses_nothing() {
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
    let mut worker = pipeline
        .spawn_worker_binary(&database_url, &[("SHUTDOWN_TIMEOUT_MS", "3000")])
        .await;
    eventually(20, "the worker well into the backlog", || async {
        (pipeline.count(EVENTS).await >= 200).then_some(())
    })
    .await;

    let terminated = Instant::now();
    let pid = worker.id().expect("the worker runs").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(10), worker.wait())
        .await
        .expect("the worker exits within 10 s")
        .expect("wait for the worker");
    let stopped_after = terminated.elapsed();
    assert!(status.success(), "{status}");
    assert!(stopped_after < Duration::from_secs(5), "{stopped_after:?}");

    let stored = pipeline.count(EVENTS).await;
    assert!(stored < BACKLOG, "the backlog was done before the SIGTERM");
    // Every event is stored or back on the queue. A few may be both: stored, but their acks
    // did not reach the broker before the connection closed (seen in about one run in four);
    // the next worker finds them stored. Never more than the worker held (its prefetch).
    let ready = eventually(10, "every event stored or back on the queue", || async {
        let ready = i64::from(pipeline.broker.events_ready().await);
        (stored + ready >= BACKLOG).then_some(ready)
    })
    .await;
    let returned_after_commit = stored + ready - BACKLOG;
    eprintln!(
        "stored {stored}, back on the queue {ready}, of which stored already {returned_after_commit}"
    );
    assert!(
        returned_after_commit <= i64::from(PREFETCH),
        "{returned_after_commit} stored events returned to the queue"
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
