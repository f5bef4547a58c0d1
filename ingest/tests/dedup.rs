//! Dedup keys on the real queue: a retried or replayed event carries the same key however the
//! sender dressed it up, and distinct events carry distinct keys.

mod harness;

use harness::{TestIngest, omi_query};
use serde_json::{Value, json};
use shared::testkit::fixture;

/// The dedup key of the event `response` accepted, read off the queue.
async fn published_key(ingest: &TestIngest, response: reqwest::Response) -> String {
    assert_eq!(response.status(), 202);
    ingest
        .broker
        .take_event()
        .await
        .expect("published")
        .dedup_key
}

/// The fixture `file` with the JSON `pointer` set to `value`.
fn edited(file: &str, edits: &[(&str, Value)]) -> Vec<u8> {
    let mut body: Value = serde_json::from_slice(&fixture(file)).unwrap();
    for (pointer, value) in edits {
        *body.pointer_mut(pointer).expect(pointer) = value.clone();
    }
    serde_json::to_vec(&body).unwrap()
}

#[tokio::test]
async fn a_conversation_is_deduplicated_on_its_id_whatever_else_changes() {
    let ingest = TestIngest::start().await;
    let file = "omi/conversation_created.json";
    let bodies = vec![
        fixture(file),
        edited(file, &[("/updated_at", json!("2026-11-21T00:00:00Z"))]),
        edited(file, &[("/id", json!("another-conversation"))]),
    ];
    let mut keys = Vec::new();
    for body in bodies {
        let response = ingest.post_omi_conversation(&omi_query("u1"), body).await;
        keys.push(published_key(&ingest, response).await);
    }
    assert_eq!(keys[0], keys[1]);
    assert_ne!(keys[0], keys[2]);
}

#[tokio::test]
async fn an_asleep_inference_is_deduplicated_on_session_and_sequence_in_either_shape() {
    let ingest = TestIngest::start().await;
    let bodies = vec![
        fixture("asleep/inference_complete_flat.json"),
        fixture("asleep/inference_complete_nested.json"),
        edited(
            "asleep/inference_complete_flat.json",
            &[("/seq_num", json!(61))],
        ),
        edited(
            "asleep/inference_complete_flat.json",
            &[("/session_id", json!("other"))],
        ),
    ];
    let mut keys = Vec::new();
    for body in bodies {
        let response = ingest.post_asleep("u1", body).await;
        keys.push(published_key(&ingest, response).await);
    }
    assert_eq!(keys[0], "id:asleep_sess_9001:60");
    assert_eq!(keys[0], keys[1]);
    assert_ne!(keys[0], keys[2]);
    assert_ne!(keys[0], keys[3]);
}

#[tokio::test]
async fn the_asleep_alias_route_publishes_the_same_event() {
    let ingest = TestIngest::start().await;
    let headers = [("x-api-key", harness::ASLEEP_KEY), ("x-user-id", "u1")];
    let nested = fixture("asleep/session_complete_nested.json");
    let alias = ingest.post("/asleep-webhook", &headers, nested).await;
    let alias_key = published_key(&ingest, alias).await;
    let flat = ingest
        .post_asleep("u1", fixture("asleep/session_complete_flat.json"))
        .await;
    assert_eq!(alias_key, "id:asleep_sess_9001");
    assert_eq!(published_key(&ingest, flat).await, alias_key);
}

#[tokio::test]
async fn a_reflector_retry_keeps_its_dedup_key_though_its_event_id_changes() {
    let ingest = TestIngest::start().await;
    let file = "reflector/transcript_completed.json";
    let bodies = vec![
        fixture(file),
        edited(file, &[("/event_id", json!("a-new-id-on-every-retry"))]),
        edited(file, &[("/transcript/id", json!("tr_other"))]),
    ];
    let mut keys = Vec::new();
    for body in bodies {
        let response = ingest.post_reflector(&body).await;
        keys.push(published_key(&ingest, response).await);
    }
    assert_eq!(keys[0], "id:tr_01J8Z6");
    assert_eq!(keys[0], keys[1]);
    assert_ne!(keys[0], keys[2]);
}

#[tokio::test]
async fn the_idempotency_key_wins_over_the_provider_id() {
    let ingest = TestIngest::start().await;
    let route = format!("/v1/omi/conversation?{}", omi_query("u1"));
    let headers = [
        ("content-type", "application/json"),
        ("idempotency-key", "delivery-1"),
    ];
    let body = fixture("omi/conversation_created.json");
    let response = ingest.post(&route, &headers, body).await;
    assert_eq!(
        published_key(&ingest, response).await,
        "idempotency-key:delivery-1"
    );
}

#[tokio::test]
async fn identical_bodies_from_other_users_are_not_merged() {
    let ingest = TestIngest::start().await;
    let body = fixture("omi/day_summary.json");
    let mut keys = Vec::new();
    for uid in ["u1", "u1", "u2"] {
        let response = ingest
            .post_omi_day_summary(&omi_query(uid), body.clone())
            .await;
        keys.push(published_key(&ingest, response).await);
    }
    assert_eq!(keys[0], keys[1]);
    assert_ne!(keys[0], keys[2]);
}
