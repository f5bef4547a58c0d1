//! Outbound delivery end to end: outbox row -> fan-out -> signed request to an in-process
//! receiver -> retries on the schedule -> the delivery's final state.

mod harness;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use harness::{Received, Receiver, Reply, TestWorker};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use shared::testkit::{ProxyMode, TcpProxy};
use worker::outbound::outbox::{self, EventType, NewEvent};

// Independent implementations of both signature schemes, straight from their specifications.

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// Standard Webhooks: `v1,` + base64 HMAC of `id.timestamp.body`, keyed with the base64
/// after `whsec_`; one of the space-separated signatures must match.
fn standard_signature_matches(secret: &str, request: &Received) -> bool {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut signed = format!(
        "{}.{}.",
        request.header("webhook-id"),
        request.header("webhook-timestamp")
    )
    .into_bytes();
    signed.extend_from_slice(&request.body);
    let expected = format!("v1,{}", BASE64.encode(hmac_sha256(&key, &signed)));
    request
        .header("webhook-signature")
        .split(' ')
        .any(|signature| signature == expected)
}

/// Reflector: `t=<unix>,v1=<hex HMAC of "t.body">`, keyed with the secret string's bytes.
fn reflector_signature_matches(secret: &str, request: &Received) -> bool {
    let header = request.header("x-webhook-signature");
    let timestamp = header
        .split(',')
        .find_map(|part| part.strip_prefix("t="))
        .unwrap();
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(&request.body);
    let expected = hex::encode(hmac_sha256(secret.as_bytes(), &signed));
    header
        .split(',')
        .filter_map(|part| part.strip_prefix("v1="))
        .any(|mac| mac == expected)
}

fn secret_of(endpoint: &serde_json::Value) -> String {
    endpoint["secret"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_delivery_is_signed_in_both_schemes_and_shaped_as_standard_webhooks() {
    let worker = TestWorker::start().await;
    let mut receiver = Receiver::ok().await;
    let endpoint = worker
        .create_endpoint(json!({
            "url": receiver.url(), "event_types": ["memory.created"], "headers": {"X-Tenant": "acme"}
        }))
        .await;
    let event = worker
        .emit(EventType::MemoryCreated, json!({"id": "m1"}))
        .await;

    let request = receiver.next().await;
    let secret = secret_of(&endpoint);
    assert!(standard_signature_matches(&secret, &request));
    assert!(reflector_signature_matches(&secret, &request));
    let other = worker::outbound::endpoint::generate_secret();
    assert!(!standard_signature_matches(&other, &request));
    assert!(!reflector_signature_matches(&other, &request));
    assert_eq!(request.header("x-webhook-event"), "memory.created");
    assert_eq!(request.header("x-webhook-retry"), "0");
    assert_eq!(request.header("content-type"), "application/json");
    assert_eq!(request.header("x-tenant"), "acme");
    let sent_at: i64 = request.header("webhook-timestamp").parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - sent_at).abs() < 300);
    let body = request.json();
    assert_eq!(body["type"], "memory.created");
    assert_eq!(body["data"], json!({"id": "m1"}));
    chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().unwrap()).unwrap();

    let delivery = worker
        .delivery_with_status(event, &endpoint, "succeeded")
        .await;
    assert_eq!(
        request.header("webhook-id"),
        delivery["id"].as_str().unwrap()
    );
    assert_eq!(delivery["attempts"][0]["status_code"], 200);
    assert_eq!(delivery["attempts"][0]["response_excerpt"], "answer 200");
}

#[tokio::test]
async fn a_failing_receiver_is_retried_with_growing_gaps_under_one_webhook_id() {
    // Gaps of 0.8-1.2 s, then 1.6-2.4 s: apart by more than a busy machine's hiccup (with
    // 300 ms gaps, a parallel test run once delayed the first retry by 250 ms).
    let worker = TestWorker::start_with(|settings| {
        settings.delivery.retry_base = Duration::from_secs(1);
        settings.delivery.retry_max_delay = Duration::from_secs(4);
        settings.delivery.window = Duration::from_secs(20);
    })
    .await;
    let script = vec![Reply::status(500), Reply::status(500)];
    let mut receiver = Receiver::scripted(script, Reply::status(200)).await;
    let endpoint = worker.endpoint_for(&receiver).await;
    let event = worker
        .emit(EventType::AudioLevel, json!({"level": 3}))
        .await;

    let requests = [
        receiver.next().await,
        receiver.next().await,
        receiver.next().await,
    ];
    let ids: Vec<&str> = requests.iter().map(|r| r.header("webhook-id")).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let retries: Vec<&str> = requests
        .iter()
        .map(|r| r.header("x-webhook-retry"))
        .collect();
    assert_eq!(retries, ["0", "1", "2"]);
    let first_gap = requests[1].at - requests[0].at;
    let second_gap = requests[2].at - requests[1].at;
    assert!(second_gap > first_gap, "{first_gap:?} then {second_gap:?}");

    let delivery = worker
        .delivery_with_status(event, &endpoint, "succeeded")
        .await;
    assert_eq!(delivery["attempt_count"], 3);
    let codes: Vec<_> = delivery["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].clone())
        .collect();
    assert_eq!(codes, [json!(500), json!(500), json!(200)]);
}

#[tokio::test]
async fn a_400_fails_at_once_without_retries() {
    let worker = TestWorker::start().await;
    let mut receiver = Receiver::scripted(vec![], Reply::status(400)).await;
    let endpoint = worker.endpoint_for(&receiver).await;
    let event = worker.emit(EventType::AudioLevel, json!({})).await;

    receiver.next().await;
    let delivery = worker
        .delivery_with_status(event, &endpoint, "failed")
        .await;
    assert_eq!(delivery["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(delivery["last_error"], "HTTP 400");
    assert!(receiver.drain(Duration::from_millis(500)).await.is_empty());
}

#[tokio::test]
async fn a_410_disables_the_endpoint_and_emits_endpoint_disabled() {
    let worker = TestWorker::start().await;
    let mut gone = Receiver::scripted(vec![], Reply::status(410)).await;
    let mut watcher = Receiver::ok().await;
    let endpoint = worker
        .create_endpoint(json!({"url": gone.url(), "event_types": ["memory.created"]}))
        .await;
    worker
        .create_endpoint(json!({"url": watcher.url(), "event_types": ["endpoint.disabled"]}))
        .await;
    let event = worker.emit(EventType::MemoryCreated, json!({})).await;

    gone.next().await;
    worker
        .delivery_with_status(event, &endpoint, "failed")
        .await;
    let id = endpoint["id"].as_str().unwrap();
    let stored = worker.get_json(&format!("/v1/endpoints/{id}")).await;
    assert_eq!(stored["enabled"], false);
    assert!(stored["disabled_reason"].as_str().unwrap().contains("410"));
    let notice = watcher.next().await;
    assert_eq!(notice.header("x-webhook-event"), "endpoint.disabled");
    assert_eq!(notice.json()["data"]["endpoint_id"], id);
    assert!(gone.drain(Duration::from_millis(300)).await.is_empty());
}

#[tokio::test]
async fn a_receiver_that_always_fails_is_given_up_at_the_end_of_the_window() {
    let worker = TestWorker::start().await;
    let mut receiver = Receiver::scripted(vec![], Reply::status(500)).await;
    let endpoint = worker.endpoint_for(&receiver).await;
    let event = worker.emit(EventType::AudioLevel, json!({})).await;

    let delivery = worker
        .delivery_with_status(event, &endpoint, "failed")
        .await;
    let mut requests = vec![receiver.next().await];
    requests.extend(receiver.drain(Duration::from_millis(500)).await);
    assert!(requests.len() >= 3, "{} attempts", requests.len());
    assert_eq!(delivery["attempt_count"], requests.len());
    assert!(
        requests
            .iter()
            .all(|r| r.header("webhook-id") == delivery["id"])
    );
    let span = requests.last().unwrap().at - requests[0].at;
    assert!(
        span <= worker.settings.delivery.window + Duration::from_secs(2),
        "{span:?}"
    );
}

#[tokio::test]
async fn a_receiver_slower_than_the_timeout_is_retried() {
    let worker = TestWorker::start().await;
    let slow = Reply::status(200).after(Duration::from_secs(5));
    let mut receiver = Receiver::scripted(vec![slow], Reply::status(200)).await;
    let endpoint = worker
        .create_endpoint(json!({"url": receiver.url(), "event_types": ["*"], "timeout_ms": 1000}))
        .await;
    let event = worker.emit(EventType::AudioLevel, json!({})).await;

    receiver.next().await;
    let retry = receiver.next().await;
    assert_eq!(retry.header("x-webhook-retry"), "1");
    let delivery = worker
        .delivery_with_status(event, &endpoint, "succeeded")
        .await;
    let first = &delivery["attempts"][0];
    assert!(first["status_code"].is_null(), "{first}");
    assert!(first["error"].is_string(), "{first}");
    assert_eq!(delivery["attempts"][1]["status_code"], 200);
}

#[tokio::test]
async fn a_restarted_worker_resumes_the_schedule() {
    let mut worker = TestWorker::start_with(|settings| {
        settings.delivery.retry_base = Duration::from_millis(1500);
        settings.delivery.retry_max_delay = Duration::from_secs(3);
        settings.delivery.window = Duration::from_secs(60);
    })
    .await;
    let mut receiver = Receiver::scripted(vec![Reply::status(503)], Reply::status(200)).await;
    let endpoint = worker.endpoint_for(&receiver).await;
    let event = worker.emit(EventType::AudioLevel, json!({})).await;

    let first = receiver.next().await;
    shared::testkit::eventually(10, "the first attempt recorded", || async {
        let delivery = worker.delivery(event, &endpoint).await;
        (delivery["attempt_count"] == 1).then_some(())
    })
    .await;
    worker.restart().await;

    let second = receiver.next().await;
    assert_eq!(second.header("webhook-id"), first.header("webhook-id"));
    assert_eq!(second.header("x-webhook-retry"), "1");
    assert!(second.at - first.at >= Duration::from_millis(1200));
    worker
        .delivery_with_status(event, &endpoint, "succeeded")
        .await;
}

#[tokio::test]
async fn two_workers_deliver_each_event_to_each_endpoint_once() {
    let worker = TestWorker::start().await;
    let other = worker.another().await;
    let mut receivers = [Receiver::ok().await, Receiver::ok().await];
    for receiver in &receivers {
        worker.endpoint_for(receiver).await;
    }
    const EVENTS: usize = 20;
    for n in 0..EVENTS {
        worker.emit(EventType::AudioLevel, json!({"n": n})).await;
    }

    shared::testkit::eventually(20, "every delivery succeeded", || async {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status = 'succeeded'")
                .fetch_one(&worker.pool)
                .await
                .unwrap();
        (done == 2 * EVENTS as i64).then_some(())
    })
    .await;
    for receiver in &mut receivers {
        let requests = receiver.drain(Duration::from_millis(500)).await;
        let mut ids: Vec<&str> = requests.iter().map(|r| r.header("webhook-id")).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(requests.len(), EVENTS, "each event once");
        assert_eq!(ids.len(), EVENTS);
    }
    other.stop().await;
}

#[tokio::test]
async fn event_types_filter_what_an_endpoint_receives() {
    let worker = TestWorker::start().await;
    let (mut memories, mut everything) = (Receiver::ok().await, Receiver::ok().await);
    worker
        .create_endpoint(json!({"url": memories.url(), "event_types": ["memory.created"]}))
        .await;
    worker.endpoint_for(&everything).await;
    worker.emit(EventType::AudioLevel, json!({})).await;
    worker.emit(EventType::MemoryCreated, json!({})).await;

    let mut seen = [everything.next().await, everything.next().await]
        .map(|r| r.header("x-webhook-event").to_owned());
    seen.sort();
    assert_eq!(seen, ["audio.level", "memory.created"]);
    assert_eq!(
        memories.next().await.header("x-webhook-event"),
        "memory.created"
    );
    assert!(memories.drain(Duration::from_millis(500)).await.is_empty());
}

#[tokio::test]
async fn a_rotated_secret_signs_with_the_old_and_the_new_secret() {
    let worker = TestWorker::start().await;
    let mut receiver = Receiver::ok().await;
    let endpoint = worker.endpoint_for(&receiver).await;
    let id = endpoint["id"].as_str().unwrap();
    let (_, rotated) = worker
        .post_json(&format!("/v1/endpoints/{id}/rotate-secret"))
        .await;
    let (old, new) = (secret_of(&endpoint), secret_of(&rotated));
    assert_ne!(old, new);
    assert!(rotated["previous_secret_expires_at"].is_string());
    worker.emit(EventType::AudioLevel, json!({})).await;

    let request = receiver.next().await;
    for secret in [&old, &new] {
        assert!(standard_signature_matches(secret, &request));
        assert!(reflector_signature_matches(secret, &request));
    }
    assert_eq!(request.header("webhook-signature").split(' ').count(), 2);
    assert_eq!(
        request.header("x-webhook-signature").matches("v1=").count(),
        2
    );
}

/// No trigger and no NOTIFY: the worker that commits an event wakes its own delivery loop, so
/// the delivery goes out at once even with polling as good as off.
#[tokio::test]
async fn an_event_the_worker_commits_is_delivered_without_waiting_for_a_poll() {
    let worker = TestWorker::start_with(|settings| {
        settings.delivery.poll_interval = Duration::from_secs(3600);
        settings.audio.sweep_interval = Duration::from_secs(3600);
    })
    .await;
    let mut receiver = Receiver::ok().await;
    worker
        .create_endpoint(json!({"url": receiver.url(), "event_types": ["transcript.segment"]}))
        .await;
    let transcript = shared::Envelope {
        event_id: uuid::Uuid::now_v7(),
        kind: shared::EventKind::OmiTranscript,
        uid: "u1".into(),
        dedup_key: "wake-test".into(),
        received_at: chrono::Utc::now(),
        sample_rate: None,
        payload: br#"{"session_id": "u1", "segments": [{"text": "hi", "start": 0, "end": 1}]}"#
            .to_vec()
            .into(),
        request_id: None,
    };
    worker.broker.publish(&transcript).await;

    let request = receiver.next().await;
    assert_eq!(request.json()["type"], "transcript.segment");
    assert_eq!(request.json()["data"]["segment"]["text"], "hi");
}

/// The consumer wakes its delivery loop only after a commit that queued deliveries: emitting
/// counts what it queues, nothing for an event no endpoint subscribes to.
#[tokio::test]
async fn emitting_counts_the_deliveries_it_queues() {
    let worker = TestWorker::start().await;
    let receiver = Receiver::ok().await;
    worker
        .create_endpoint(json!({"url": receiver.url(), "event_types": ["audio.level"]}))
        .await;
    let mut tx = worker.pool.begin().await.unwrap();
    let two = || {
        (0..2).map(|n| NewEvent {
            uid: Some("u1"),
            data: json!({"n": n}),
            cause: None,
        })
    };
    let listening = outbox::emit_all(&mut tx, EventType::ListeningStatus, two().collect());
    let (emitted, queued) = outbox::counting_deliveries(listening).await;
    assert_eq!(emitted.unwrap().len(), 2);
    assert_eq!(queued, 0, "no endpoint subscribes to listening.status");
    let levels = outbox::emit_all(&mut tx, EventType::AudioLevel, two().collect());
    let (emitted, queued) = outbox::counting_deliveries(levels).await;
    assert_eq!(emitted.unwrap().len(), 2);
    assert_eq!(queued, 2, "one delivery per audio.level event");
    tx.rollback().await.unwrap();
}

/// An outbox row written without its deliveries (as an older worker did during an upgrade) is
/// fanned out by the sweep and delivered.
#[tokio::test]
async fn a_row_written_without_deliveries_is_delivered_by_the_sweep() {
    let worker = TestWorker::start().await;
    let mut receiver = Receiver::ok().await;
    worker.endpoint_for(&receiver).await;
    sqlx::query(
        "INSERT INTO outbox (id, event_type, data) VALUES (uuid_v7(), 'audio.level', '{}')",
    )
    .execute(&worker.pool)
    .await
    .unwrap();

    let request = receiver.next().await;
    assert_eq!(request.header("x-webhook-event"), "audio.level");
}

/// Postgres goes away while the receiver is answering: the worker records the answer once
/// Postgres is back, within the claim's lease, instead of leaving the lease to expire and
/// sending the delivery a second time.
#[tokio::test]
async fn an_answer_is_recorded_after_a_postgres_outage_and_not_sent_again() {
    let database = TcpProxy::start("127.0.0.1:5432").await;
    let proxied = database.addr.to_string();
    let worker = TestWorker::start_with(|settings| {
        settings.database_url = settings.database_url.replace("127.0.0.1:5432", &proxied);
    })
    .await;
    let slow_ok = Reply::status(200).after(Duration::from_millis(800));
    let mut receiver = Receiver::scripted(vec![], slow_ok).await;
    let endpoint = worker.endpoint_for(&receiver).await;
    let event = worker.emit(EventType::AudioLevel, json!({})).await;

    receiver.next().await;
    database.set_mode(ProxyMode::Cut);
    tokio::time::sleep(Duration::from_secs(2)).await;
    database.set_mode(ProxyMode::Open);

    let delivery = worker
        .delivery_with_status(event, &endpoint, "succeeded")
        .await;
    assert_eq!(delivery["attempt_count"], 1, "{delivery}");
    assert!(receiver.drain(Duration::from_secs(2)).await.is_empty());
}
