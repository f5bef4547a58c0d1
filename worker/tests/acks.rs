//! The consumer's acknowledgements: batches stored concurrently, finishing in any order, each
//! settled with one `basic.ack` (`multiple`) when it is the oldest its channel holds and one
//! ack a message otherwise, never settle a message twice nor leave one unsettled. A second
//! settlement of a tag closes the channel (PRECONDITION_FAILED), and every message in flight
//! then comes back and is found stored already; one left unsettled comes back when the
//! worker stops.

mod harness;

use harness::{TestPipeline, transcript_backlog};

const BACKLOG: i64 = 2_000;

#[tokio::test]
async fn a_backlog_stored_in_concurrent_batches_is_acknowledged_once_each() {
    let mut pipeline = TestPipeline::start_with_workers(0).await;
    let events = transcript_backlog(BACKLOG, 40);
    pipeline.broker.publish_all(&events).await;

    pipeline.add_worker().await;
    pipeline
        .wait_for_count("SELECT count(*) FROM inbound_events", BACKLOG)
        .await;
    pipeline.drain_and_stop_workers().await;

    let redelivered = pipeline
        .count("SELECT count(*) FROM inbound_duplicates")
        .await;
    assert_eq!(redelivered, 0, "stored events came back to the worker");
    assert_eq!(
        pipeline.broker.events_ready().await,
        0,
        "messages were left unacknowledged and came back when the worker stopped"
    );
}
