//! From ingest through RabbitMQ into Postgres: transcripts are stored once, whatever the broker,
//! the sender or a crashing worker do.

mod harness;

use harness::{TestPipeline, envelope, one_batch_at_a_time};
use serde_json::json;
use shared::testkit::{ProxyMode, TcpProxy, eventually, fixture};
use shared::{Envelope, EventKind};

const EVENTS: &str = "SELECT count(*) FROM inbound_events";
const SEGMENTS: &str = "SELECT count(*) FROM transcript_segments";
const SESSIONS: &str = "SELECT count(*) FROM transcript_sessions";

#[tokio::test]
async fn a_posted_transcript_is_stored_with_its_session_speakers_and_times() {
    let pipeline = TestPipeline::start().await;
    pipeline
        .post_omi_transcript("user-1", fixture("omi/realtime_transcript.json"), None)
        .await;
    pipeline.wait_for_count(SEGMENTS, 2).await;

    let (uid, external_id): (String, String) =
        sqlx::query_as("SELECT uid, external_id FROM transcript_sessions")
            .fetch_one(&pipeline.pool)
            .await
            .unwrap();
    assert_eq!(
        (uid.as_str(), external_id.as_str()),
        ("user-1", "u7ZkQ2fW9xLmN3pR")
    );

    let rows: Vec<(String, String, bool, f64, f64, serde_json::Value)> = sqlx::query_as(
        "SELECT sp.label, sg.text, sp.is_user, sg.start_s, sg.end_s, sg.extra
         FROM transcript_segments sg JOIN transcript_speakers sp ON sp.id = sg.speaker_id
         ORDER BY sg.start_s",
    )
    .fetch_all(&pipeline.pool)
    .await
    .unwrap();
    assert_eq!(rows[0].0, "SPEAKER_00");
    assert_eq!(rows[0].1, "Okay, let's go over the launch plan.");
    assert!(rows[0].2);
    assert_eq!((rows[0].3, rows[0].4), (12.48, 14.9));
    assert_eq!(
        (rows[1].0.as_str(), rows[1].3, rows[1].4),
        ("SPEAKER_01", 15.1, 18.02)
    );
    assert_eq!(
        rows[1].5["stt_provider"], "deepgram",
        "unknown fields are kept"
    );

    // One `transcript.segment` event per segment, shaped as INTERFACE.md section 5 shows.
    let (session_id, events): (uuid::Uuid, Vec<serde_json::Value>) = (
        sqlx::query_scalar("SELECT id FROM transcript_sessions")
            .fetch_one(&pipeline.pool)
            .await
            .unwrap(),
        sqlx::query_scalar(
            "SELECT data FROM outbox WHERE event_type = 'transcript.segment' \
             ORDER BY data #>> '{segment,start}'",
        )
        .fetch_all(&pipeline.pool)
        .await
        .unwrap(),
    );
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["uid"], "user-1");
    assert_eq!(events[1]["session_id"], session_id.to_string());
    assert_eq!(events[1]["external_session_id"], "u7ZkQ2fW9xLmN3pR");
    let segment = &events[1]["segment"];
    assert_eq!(
        (segment["speaker"].as_str(), segment["start"].as_f64()),
        (Some("SPEAKER_01"), Some(15.1))
    );
    assert_eq!(
        segment["stt_provider"], "deepgram",
        "unknown fields sit beside the known ones"
    );
    assert!(segment.get("extra").is_none(), "{segment}");
}

#[tokio::test]
async fn later_batches_of_a_session_reuse_its_session_and_speakers() {
    let pipeline = TestPipeline::start().await;
    pipeline
        .post_omi_transcript("user-1", fixture("omi/realtime_transcript.json"), None)
        .await;
    pipeline.wait_for_count(SEGMENTS, 2).await;
    pipeline
        .post_omi_transcript(
            "user-1",
            fixture("omi/realtime_transcript_bare_array.json"),
            None,
        )
        .await;
    pipeline.wait_for_count(SEGMENTS, 3).await;
    // The bare array's session is the uid; the object's is its session_id.
    assert_eq!(pipeline.count(SESSIONS).await, 2);
    assert_eq!(
        pipeline
            .count("SELECT count(*) FROM transcript_speakers")
            .await,
        3
    );
}

#[tokio::test]
async fn a_sender_retry_with_the_same_idempotency_key_is_stored_once() {
    let pipeline = TestPipeline::start().await;
    let body = fixture("omi/realtime_transcript.json");
    pipeline
        .post_omi_transcript("u1", body.clone(), Some("delivery-1"))
        .await;
    pipeline
        .post_omi_transcript("u1", body.clone(), Some("delivery-1"))
        .await;
    // A later, different event proves the worker has consumed everything before it.
    pipeline
        .post_omi_transcript("u1", fixture("omi/thalamus_batch.json"), Some("delivery-2"))
        .await;
    pipeline.wait_for_count(SEGMENTS, 3).await;
    assert_eq!(pipeline.count(EVENTS).await, 2);
}

#[tokio::test]
async fn a_redelivered_message_is_stored_once() {
    let pipeline = TestPipeline::start().await;
    pipeline
        .post_omi_transcript("u1", fixture("omi/realtime_transcript.json"), None)
        .await;
    pipeline.wait_for_count(SEGMENTS, 2).await;
    let event_id: uuid::Uuid = sqlx::query_scalar("SELECT event_id FROM inbound_events")
        .fetch_one(&pipeline.pool)
        .await
        .unwrap();

    // Publish the very same message again, as the broker does after a lost ack.
    let original = shared::Envelope {
        event_id,
        kind: shared::EventKind::OmiTranscript,
        uid: "u1".into(),
        dedup_key: "redelivered".into(),
        received_at: chrono::Utc::now(),
        sample_rate: None,
        payload: bytes::Bytes::from(fixture("omi/realtime_transcript.json")),
        request_id: None,
    };
    pipeline.broker.publish(&original).await;
    pipeline
        .post_omi_transcript("u1", fixture("omi/thalamus_batch.json"), None)
        .await;
    pipeline.wait_for_count(SEGMENTS, 3).await;
    assert_eq!(pipeline.count(EVENTS).await, 2);
}

#[tokio::test]
async fn two_workers_racing_on_duplicates_store_each_event_once() {
    let mut pipeline = TestPipeline::start_with_workers(2).await;
    let body = fixture("omi/realtime_transcript.json");
    let posts = (0..20).map(|n| {
        let key = format!("delivery-{}", n % 5);
        let body = body.clone();
        let pipeline = &pipeline;
        async move { pipeline.post_omi_transcript("u1", body, Some(&key)).await }
    });
    futures_util::future::join_all(posts).await;
    pipeline.wait_for_count(EVENTS, 5).await;
    pipeline.drain_and_stop_workers().await;
    assert_eq!(pipeline.count(EVENTS).await, 5);
    // The five events carry the same two Omi segment ids: stored and emitted once each.
    assert_eq!(pipeline.count(SEGMENTS).await, 2);
    let emitted = pipeline.outbox_data("transcript.segment").await;
    assert_eq!(emitted.len(), 2, "each stored segment is emitted once");
}

/// Batch `n` of a backlog: user `n % 3`'s session, two segments, the second by a speaker that
/// alternates between two labels; the user speaks first in even batches.
fn backlog_batch(n: usize, first_segment_id: &str) -> Envelope {
    let payload = json!({
        "session_id": format!("session-{}", n % 3),
        "segments": [
            {"id": first_segment_id, "text": "first", "speaker": "SPEAKER_00", "speaker_id": 0,
             "is_user": n.is_multiple_of(2), "start": n as f64, "end": n as f64 + 0.5},
            {"id": format!("seg-{n}-b"), "text": "second", "speaker": format!("SPEAKER_0{}", 1 + n % 2),
             "start": n as f64 + 0.5, "end": n as f64 + 1.0},
        ],
    });
    let uid = format!("user-{}", n % 3);
    envelope(
        EventKind::OmiTranscript,
        &uid,
        &format!("batch-{n}"),
        payload.to_string(),
    )
}

/// A backlog is stored in shared transactions, and the rows are the ones storing each event
/// alone gives: a sender's retry and a segment id sent twice are stored once.
#[tokio::test]
async fn a_backlog_stored_in_batches_keeps_every_rule_of_one_by_one() {
    let mut pipeline = TestPipeline::start_tuned(0, one_batch_at_a_time).await;
    let mut backlog: Vec<Envelope> = (0..12)
        .map(|n| backlog_batch(n, &format!("seg-{n}-a")))
        .collect();
    // The sender retries batch 3 (same dedup key, new event), and batch 13 repeats batch 4's
    // first segment in the same session.
    backlog.push(Envelope {
        event_id: uuid::Uuid::now_v7(),
        ..backlog[3].clone()
    });
    backlog.push(backlog_batch(13, "seg-4-a"));
    pipeline.broker.publish_all(&backlog).await;
    pipeline.add_worker().await;

    pipeline.wait_for_count(EVENTS, 13).await;
    pipeline.drain_and_stop_workers().await;
    assert!(
        pipeline
            .count("SELECT count(DISTINCT stored_at) FROM inbound_events")
            .await
            < 13,
        "events shared a transaction"
    );
    assert_eq!(pipeline.count(EVENTS).await, 13);
    assert_eq!(pipeline.count(SESSIONS).await, 3);
    assert_eq!(pipeline.count(SEGMENTS).await, 25);
    assert_eq!(pipeline.outbox_data("transcript.segment").await.len(), 25);
    let speakers = "SELECT count(*) FROM transcript_speakers";
    assert_eq!(pipeline.count(speakers).await, 9);
    let users = "SELECT count(*) FROM transcript_speakers WHERE is_user";
    assert_eq!(pipeline.count(users).await, 3, "SPEAKER_00 of each session");
    let misfiled = "SELECT count(*) FROM transcript_segments sg
         JOIN transcript_sessions se ON se.id = sg.session_id
         JOIN inbound_events ev ON ev.event_id = sg.event_id
         JOIN transcript_speakers sp ON sp.id = sg.speaker_id
         WHERE se.uid <> ev.uid OR sp.session_id <> se.id";
    assert_eq!(pipeline.count(misfiled).await, 0);
}

/// The worker is killed (SIGKILL) after it took the message and began its transaction, before
/// the commit; the broker redelivers the message and a new worker stores it, once.
#[tokio::test]
async fn a_worker_killed_before_its_commit_loses_nothing() {
    let mut pipeline = TestPipeline::start_with_workers(0).await;
    let database = TcpProxy::start("127.0.0.1:5432").await;
    let database_url = format!(
        "postgres://postgres@{}/{}",
        database.addr, pipeline.database.name
    );
    let mut doomed = pipeline.spawn_worker_binary(&database_url, &[]).await;

    database.set_mode(ProxyMode::Stalled);
    pipeline
        .post_omi_transcript("u1", fixture("omi/realtime_transcript.json"), None)
        .await;
    eventually(15, "the worker to start its transaction", || async {
        (database.held_bytes() > 0).then_some(())
    })
    .await;
    doomed.kill().await.expect("kill the worker");
    assert_eq!(pipeline.count(EVENTS).await, 0, "nothing was committed");

    pipeline.add_worker().await;
    pipeline.wait_for_count(SEGMENTS, 2).await;
    assert_eq!(pipeline.count(EVENTS).await, 1);
}
