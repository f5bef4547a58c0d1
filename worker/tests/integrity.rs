//! Every 202 is stored, once, as what it was: the inputs of real senders that were answered 202
//! and then dead-lettered, dropped as a duplicate or merged with another user's event, each
//! posted through ingest and read back from Postgres.

mod harness;

use harness::{OMI_KEY, TestPipeline};
use serde_json::{Value, json};
use shared::testkit::fixture;

const JSON: (&str, &str) = ("content-type", "application/json");

impl TestPipeline {
    /// Posts `body` to the Omi JSON route `route` as user `uid`, with `headers` besides.
    async fn post_omi_json(&self, route: &str, uid: &str, headers: &[(&str, &str)], body: &Value) {
        let headers: Vec<(&str, String)> = [JSON]
            .iter()
            .chain(headers)
            .map(|(name, value)| (*name, value.to_string()))
            .collect();
        let path = format!("{route}?key={OMI_KEY}&uid={uid}");
        self.post(&path, &headers, serde_json::to_vec(body).unwrap())
            .await
    }

    /// Waits for the queue to drain and the workers to settle; then nothing may be dead.
    async fn settle_without_dead_letters(&mut self) {
        self.drain_and_stop_workers().await;
        let dead = self.count("SELECT count(*) FROM dead_letters").await;
        let failures = self.count("SELECT count(*) FROM processing_failures").await;
        assert_eq!((dead, failures), (0, 0), "events failed in the worker");
    }
}

#[tokio::test]
async fn a_conversation_with_epoch_times_is_stored_with_its_times() {
    let mut pipeline = TestPipeline::start().await;
    let conversation = json!({
        "id": "c-epoch", "started_at": 1712345678, "finished_at": 1712345999000u64,
        "structured": {"title": "Standup"},
    });
    pipeline
        .post_omi_json("/v1/omi/conversation", "u1", &[], &conversation)
        .await;
    pipeline
        .wait_for_count("SELECT count(*) FROM conversations", 1)
        .await;
    pipeline.settle_without_dead_letters().await;
    let (started, finished, title): (String, String, String) = sqlx::query_as(
        "SELECT to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
                to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), title
         FROM conversations",
    )
    .fetch_one(&pipeline.pool)
    .await
    .unwrap();
    assert_eq!(started, "2024-04-05 19:34:38");
    assert_eq!(finished, "2024-04-05 19:39:59");
    assert_eq!(title, "Standup");
}

#[tokio::test]
async fn sleep_and_reflector_numbers_sent_as_floats_are_stored() {
    let mut pipeline = TestPipeline::start().await;
    let mut report: Value =
        serde_json::from_slice(&fixture("asleep/session_complete_flat.json")).expect("a fixture");
    report["stat"]["time_in_sleep"] = json!(27000.4);
    report["session"]["start_time"] = json!(1705788000);
    let headers = [
        ("x-api-key", harness::ASLEEP_KEY.to_owned()),
        ("x-user-id", "sleeper".to_owned()),
    ];
    pipeline
        .post("/v1/asleep", &headers, serde_json::to_vec(&report).unwrap())
        .await;
    let transcript =
        json!({"event": "transcript.completed", "transcript": {"id": "t1", "duration": 60}});
    pipeline
        .post_reflector(serde_json::to_vec(&transcript).unwrap())
        .await;
    pipeline
        .wait_for_count(
            "SELECT count(*) FROM sleep_reports WHERE time_in_sleep_s = 27000 \
             AND start_time = to_timestamp(1705788000)",
            1,
        )
        .await;
    pipeline
        .wait_for_count(
            "SELECT count(*) FROM reflector_transcripts WHERE duration_s = 60",
            1,
        )
        .await;
    pipeline.settle_without_dead_letters().await;
}

#[tokio::test]
async fn every_status_a_memory_goes_through_is_kept() {
    let mut pipeline = TestPipeline::start().await;
    let status = |status: &str| json!({"type": "processing_memory_status_changed", "memory": {"id": "m1", "status": status}});
    for body in [
        status("processing"),
        status("completed"),
        status("completed"),
    ] {
        pipeline.post_omi_json("/webhook", "u1", &[], &body).await;
    }
    pipeline.settle_without_dead_letters().await;
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT status FROM memory_events ORDER BY received_at")
            .fetch_all(&pipeline.pool)
            .await
            .unwrap();
    assert_eq!(statuses, ["processing", "completed"]);
    assert_eq!(pipeline.outbox_data("memory.status_changed").await.len(), 2);
}

#[tokio::test]
async fn one_users_idempotency_key_or_provider_id_never_stands_in_for_anothers() {
    let mut pipeline = TestPipeline::start().await;
    let shared_key = [("idempotency-key", "delivery-1")];
    let conversation = |title: &str| json!({"id": "c1", "structured": {"title": title}});
    for uid in ["alice", "bob"] {
        pipeline
            .post_omi_json("/v1/omi/conversation", uid, &shared_key, &conversation(uid))
            .await;
        pipeline
            .post_omi_json("/v1/omi/conversation", uid, &[], &conversation(uid))
            .await;
        pipeline
            .post_asleep(uid, "asleep/session_complete_flat.json")
            .await;
        pipeline
            .post_asleep(uid, "asleep/inference_complete_flat.json")
            .await;
        let room =
            json!({"event": "transcript.completed", "transcript": {"id": "t1", "room_id": uid}});
        pipeline
            .post_reflector(serde_json::to_vec(&room).unwrap())
            .await;
    }
    pipeline.settle_without_dead_letters().await;
    let titles: Vec<(String, String)> =
        sqlx::query_as("SELECT uid, title FROM conversations ORDER BY uid")
            .fetch_all(&pipeline.pool)
            .await
            .unwrap();
    let expected = [("alice", "alice"), ("bob", "bob")].map(|(u, t)| (u.to_owned(), t.to_owned()));
    assert_eq!(
        titles, expected,
        "each user keeps their own conversation c1"
    );
    for table in ["sleep_reports", "sleep_inferences", "reflector_transcripts"] {
        let sql = format!("SELECT count(DISTINCT uid) FROM {table}");
        assert_eq!(pipeline.count(&sql).await, 2, "{table}");
    }
    assert_eq!(pipeline.outbox_data("memory.created").await.len(), 2);
}

#[tokio::test]
async fn identical_audio_chunks_are_each_stored_unless_they_share_an_idempotency_key() {
    let mut pipeline = TestPipeline::start().await;
    let silence = fixture("omi/audio_silence_8k.pcm");
    let path = format!("/v1/omi/audio?key={OMI_KEY}&uid=u1&sample_rate=8000");
    let octets = ("content-type", "application/octet-stream".to_owned());
    for _ in 0..3 {
        pipeline
            .post(&path, std::slice::from_ref(&octets), silence.clone())
            .await;
    }
    let retried = [octets.clone(), ("idempotency-key", "chunk-9".to_owned())];
    for _ in 0..2 {
        pipeline.post(&path, &retried, silence.clone()).await;
    }
    pipeline.settle_without_dead_letters().await;
    assert_eq!(pipeline.count("SELECT count(*) FROM audio_chunks").await, 4);
}
