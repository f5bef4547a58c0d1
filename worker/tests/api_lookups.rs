//! The lookups operators need, through ingest and the real database: what became of an
//! inbound event (stored with what it emitted and delivered, a duplicate of which, or
//! dead-lettered), outbound events with the exact body sent, delivery filters, the users with
//! recent activity, and a user's sessions by the sender's session id.

mod harness;

use chrono::{SecondsFormat, TimeDelta, Utc};
use harness::{OMI_KEY, Receiver, TestPipeline};
use serde_json::Value;
use shared::testkit::{eventually, fixture};
use uuid::Uuid;

/// The sender's session id in `omi/realtime_transcript.json`.
const EXTERNAL_SESSION: &str = "u7ZkQ2fW9xLmN3pR";

/// Posts the two-segment transcript as `uid` with `Idempotency-Key: key`; returns the
/// `event_id` ingest answered.
async fn post_transcript(pipeline: &TestPipeline, uid: &str, key: &str) -> Uuid {
    let path = format!("/v1/omi/transcript?key={OMI_KEY}&uid={uid}");
    let headers = vec![
        ("content-type", "application/json".to_owned()),
        ("idempotency-key", key.to_owned()),
    ];
    let body = fixture("omi/realtime_transcript.json");
    pipeline.post_for_id(&path, &headers, body).await
}

/// `GET /v1/events/{id}` once the worker knows the event with `status`.
async fn fate(pipeline: &TestPipeline, id: Uuid, status: &str) -> Value {
    let url = pipeline.workers[0].url(&format!("/v1/events/{id}"));
    eventually(20, &format!("event {id} {status}"), || async {
        let response = pipeline
            .client
            .get(&url)
            .bearer_auth(harness::ADMIN_TOKEN)
            .send()
            .await
            .ok()?;
        let body: Value = response.json().await.ok()?;
        (body["status"] == status).then_some(body)
    })
    .await
}

fn items(page: &Value) -> Vec<Value> {
    page["items"].as_array().expect("items").clone()
}

/// An RFC 3339 time for a query string (`Z`, so there is no `+` to encode).
fn query_time(at: chrono::DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[tokio::test]
async fn an_inbound_event_is_followed_to_what_it_emitted_and_delivered_and_its_duplicate_named() {
    let pipeline = TestPipeline::start().await;
    let mut receiver = Receiver::ok().await;
    let endpoint = pipeline
        .create_endpoint(serde_json::json!({"url": receiver.url(), "event_types": ["*"]}))
        .await;
    let before = Utc::now() - TimeDelta::seconds(1);
    let id = post_transcript(&pipeline, "u1", "delivery-1").await;
    let sent = [receiver.next().await, receiver.next().await];

    let stored = fate(&pipeline, id, "stored").await;
    assert_eq!(stored["stored"]["uid"], "u1");
    assert_eq!(stored["stored"]["source"], "omi");
    let caused = stored["outbound_events"].as_array().unwrap();
    assert_eq!(caused.len(), 2, "{stored}");
    for event in caused {
        assert_eq!(event["event_type"], "transcript.segment");
        assert_eq!(event["inbound_event_id"], id.to_string());
        let deliveries = event["deliveries"].as_array().unwrap();
        assert_eq!(deliveries.len(), 1, "{event}");
        assert_eq!(deliveries[0]["endpoint_id"], endpoint["id"]);
    }

    // The exact body sent, by the delivery id each request carried as webhook-id.
    for request in &sent {
        let delivery = pipeline
            .admin_get(&format!("/v1/deliveries/{}", request.header("webhook-id")))
            .await;
        let event = pipeline
            .admin_get(&format!(
                "/v1/outbound-events/{}",
                delivery["event_id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(
            event["body"].as_str().unwrap().as_bytes(),
            &request.body[..]
        );
        assert_eq!(event["deliveries"][0]["id"], delivery["id"]);
    }

    let duplicate = post_transcript(&pipeline, "u1", "delivery-1").await;
    let named = fate(&pipeline, duplicate, "duplicate").await;
    assert_eq!(named["duplicate_of"], id.to_string());
    assert_eq!(named["stored"]["event_id"], id.to_string());
    assert_eq!(named["outbound_events"], serde_json::json!([]));

    let later = query_time(Utc::now() + TimeDelta::minutes(1));
    let before = query_time(before);
    for (path, count) in [
        (
            "/v1/outbound-events?type=transcript.segment&uid=u1".to_owned(),
            2,
        ),
        ("/v1/outbound-events?uid=u2".to_owned(), 0),
        (format!("/v1/outbound-events?since={before}"), 2),
        (format!("/v1/outbound-events?since={later}"), 0),
        ("/v1/deliveries?event_type=transcript.segment".to_owned(), 2),
        ("/v1/deliveries?event_type=memory.created".to_owned(), 0),
        ("/v1/deliveries?uid=u1".to_owned(), 2),
        ("/v1/deliveries?uid=u2".to_owned(), 0),
        (format!("/v1/deliveries?since={before}&until={later}"), 2),
        (format!("/v1/deliveries?until={before}"), 0),
        (format!("/v1/deliveries?since={later}"), 0),
    ] {
        let page = pipeline.admin_get(&path).await;
        assert_eq!(items(&page).len(), count, "{path}: {page}");
    }
}

#[tokio::test]
async fn users_with_recent_activity_and_their_sessions_are_listed() {
    let pipeline = TestPipeline::start().await;
    let before = Utc::now() - TimeDelta::seconds(1);
    for uid in ["u2", "u1"] {
        let id = post_transcript(&pipeline, uid, &format!("key-{uid}")).await;
        fate(&pipeline, id, "stored").await;
    }

    let users = items(&pipeline.admin_get("/v1/users").await);
    let uids: Vec<&str> = users
        .iter()
        .map(|user| user["uid"].as_str().unwrap())
        .collect();
    assert_eq!(uids, ["u1", "u2"]);
    let last = users[0]["last_event_at"].as_str().unwrap();
    let last: chrono::DateTime<Utc> = last.parse().unwrap();
    assert!(last >= before && last <= Utc::now(), "{last}");
    let later = query_time(Utc::now() + TimeDelta::minutes(1));
    let none = pipeline
        .admin_get(&format!("/v1/users?since={later}"))
        .await;
    assert_eq!(items(&none).len(), 0);

    let sessions = items(&pipeline.admin_get("/v1/users/u1/sessions").await);
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["external_id"], EXTERNAL_SESSION);
    let path = format!("/v1/users/u1/sessions?external_id={EXTERNAL_SESSION}");
    let by_external = items(&pipeline.admin_get(&path).await);
    assert_eq!(by_external[0]["id"], sessions[0]["id"]);
    let other = items(
        &pipeline
            .admin_get("/v1/users/u1/sessions?external_id=other")
            .await,
    );
    assert!(other.is_empty());
    let session_id = sessions[0]["id"].as_str().unwrap();
    let session = pipeline
        .admin_get(&format!("/v1/sessions/{session_id}"))
        .await;
    assert_eq!(session["uid"], "u1");
    assert_eq!(session["segment_count"], 2);
}

#[tokio::test]
async fn a_dead_lettered_event_says_why() {
    let pipeline = TestPipeline::start().await;
    let poison = harness::poison("u1");
    pipeline.broker.publish(&poison).await;
    let dead = fate(&pipeline, poison.event_id, "dead_lettered").await;
    let reason = dead["dead_letters"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("cannot be read"), "{dead}");
    assert!(dead["stored"].is_null());
    assert!(
        dead["processing"]["attempts"].as_i64().unwrap() >= 1,
        "{dead}"
    );
}

/// Two workers store one event's two deliveries at once: the original's transaction has
/// claimed the dedup key but not committed when the duplicate's claim runs, which waits on it.
/// The duplicate must still be recorded (and named by the lookup), not lost because the row
/// it duplicates committed after the claim's snapshot was taken.
#[tokio::test]
async fn a_duplicate_racing_its_original_in_another_worker_is_recorded() {
    use shared::EventKind;
    let mut worker = harness::TestWorker::start().await;
    // Stopped, so that only the two transactions below wait on locks.
    worker.stop().await;
    let batch = fixture("omi/thalamus_batch.json");
    let original = harness::envelope(EventKind::OmiTranscript, "u1", "racing", batch.clone());
    let duplicate = harness::envelope(EventKind::OmiTranscript, "u1", "racing", batch);

    // Holds the original's transaction open after its claim: its handler waits to write the
    // outbox, which this transaction has locked.
    let mut blocker = worker.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE outbox IN EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let store = |envelope: shared::Envelope| {
        let pool = worker.pool.clone();
        tokio::spawn(async move { worker::handlers::handle_all(&pool, &[envelope]).await })
    };
    let first = store(original.clone());
    waiting_on(&worker.pool, "relation").await;
    let second = store(duplicate.clone());
    // The duplicate's claim waits for the original's transaction to end.
    waiting_on(&worker.pool, "transactionid").await;
    blocker.commit().await.unwrap();

    use worker::handlers::Outcome;
    assert_eq!(first.await.unwrap().unwrap(), vec![Outcome::Stored]);
    assert_eq!(second.await.unwrap().unwrap(), vec![Outcome::Duplicate]);
    worker.restart().await;
    let fate = worker
        .get_json(&format!("/v1/events/{}", duplicate.event_id))
        .await;
    assert_eq!(fate["status"], "duplicate", "{fate}");
    assert_eq!(fate["duplicate_of"], original.event_id.to_string());
}

/// Until a session of the test's database waits on a lock of kind `wait_event`.
async fn waiting_on(pool: &sqlx::PgPool, wait_event: &str) {
    eventually(
        20,
        &format!("a session waiting on a {wait_event} lock"),
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = $1",
            )
            .bind(wait_event)
            .fetch_one(pool)
            .await
            .ok()?;
            (waiting > 0).then_some(())
        },
    )
    .await
}
