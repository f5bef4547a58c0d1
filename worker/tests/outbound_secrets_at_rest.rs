//! Endpoint secrets and custom header values at rest (`SECRETS_KEY`): sealed in Postgres,
//! opened for signing, so a delivery to an in-process receiver still carries valid signatures
//! and the header as given; rows from before a key was set, and rows sealed with a key now
//! later in the list, keep working and are sealed again with the first key at start.

mod harness;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use harness::{Received, Receiver, TestWorker};
use serde_json::{Value, json};
use shared::signature;
use uuid::Uuid;
use worker::outbound::at_rest::{SEALED_PREFIX, SecretsKeys};
use worker::outbound::outbox::EventType;

const RECEIVER_CREDENTIAL: &str = "receiver-credential-5d1e";

/// A fresh `SECRETS_KEY` entry: base64 of 32 random bytes.
fn new_key() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).unwrap();
    BASE64.encode(bytes)
}

fn keys(listed: &[&String]) -> SecretsKeys {
    SecretsKeys::parse(&listed.iter().map(|key| key.to_string()).collect::<Vec<_>>()).unwrap()
}

/// The endpoint's columns as Postgres holds them: secret, previous secret, the header value.
async fn stored(worker: &TestWorker, endpoint: &Value) -> (String, Option<String>, String) {
    let id: Uuid = endpoint["id"].as_str().unwrap().parse().unwrap();
    let (secret, previous, headers): (String, Option<String>, Value) =
        sqlx::query_as("SELECT secret, previous_secret, headers FROM endpoints WHERE id = $1")
            .bind(id)
            .fetch_one(&worker.pool)
            .await
            .unwrap();
    let header = headers["X-Api-Key"].as_str().unwrap().to_owned();
    (secret, previous, header)
}

async fn endpoint_with_credential(worker: &TestWorker, receiver: &Receiver) -> Value {
    worker
        .create_endpoint(json!({
            "url": receiver.url(), "event_types": ["*"],
            "headers": {"X-Api-Key": RECEIVER_CREDENTIAL}
        }))
        .await
}

/// Emits an event and asserts that the request it causes is signed with `secret` in both
/// schemes and carries the receiver's credential in plaintext.
async fn delivers_signed_with(worker: &TestWorker, receiver: &mut Receiver, secret: &str) {
    worker
        .emit(EventType::MemoryCreated, json!({"id": Uuid::now_v7()}))
        .await;
    let request = receiver.next().await;
    assert!(signed_with(secret, &request), "{:?}", request.headers);
    assert_eq!(request.header("x-api-key"), RECEIVER_CREDENTIAL);
}

fn signed_with(secret: &str, request: &Received) -> bool {
    let timestamp: i64 = request.header("webhook-timestamp").parse().unwrap();
    let standard = signature::standard_sign(
        secret,
        request.header("webhook-id"),
        timestamp,
        &request.body,
    )
    .unwrap();
    let reflector = signature::reflector_verify(
        request.header("x-webhook-signature"),
        &request.body,
        &[secret.to_owned()],
        timestamp,
    );
    request
        .header("webhook-signature")
        .split(' ')
        .any(|s| s == standard)
        && reflector.is_ok()
}

fn assert_sealed(value: &str, plaintext: &str) {
    assert!(value.starts_with(SEALED_PREFIX), "{value}");
    assert!(!value.contains(plaintext), "{value}");
}

#[tokio::test]
async fn with_a_key_secrets_and_header_values_are_stored_sealed_and_deliveries_still_sign() {
    let key = new_key();
    let sealing = keys(&[&key]);
    let worker = TestWorker::start_with(|s| s.delivery.secrets_keys = sealing.clone()).await;
    let mut receiver = Receiver::ok().await;
    let endpoint = endpoint_with_credential(&worker, &receiver).await;
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    assert!(
        secret.starts_with("whsec_") && secret.len() > 20,
        "{secret}"
    );

    let (stored_secret, _, stored_header) = stored(&worker, &endpoint).await;
    assert_sealed(&stored_secret, &secret);
    assert_sealed(&stored_header, RECEIVER_CREDENTIAL);
    assert_eq!(sealing.open(&stored_secret).unwrap(), secret);
    delivers_signed_with(&worker, &mut receiver, &secret).await;

    let path = format!(
        "/v1/endpoints/{}/rotate-secret",
        endpoint["id"].as_str().unwrap()
    );
    let (status, rotated) = worker.post_json(&path).await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    let (stored_secret, stored_previous, _) = stored(&worker, &endpoint).await;
    assert_sealed(&stored_secret, &new_secret);
    assert_sealed(&stored_previous.unwrap(), &secret);
    for signing in [&new_secret, &secret] {
        delivers_signed_with(&worker, &mut receiver, signing).await;
    }
}

#[tokio::test]
async fn rows_stored_in_plaintext_keep_delivering_and_are_sealed_when_a_key_is_set() {
    let mut worker = TestWorker::start().await;
    let mut receiver = Receiver::ok().await;
    let endpoint = endpoint_with_credential(&worker, &receiver).await;
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    let (plain_secret, _, plain_header) = stored(&worker, &endpoint).await;
    assert_eq!(
        (plain_secret.as_str(), plain_header.as_str()),
        (secret.as_str(), RECEIVER_CREDENTIAL)
    );

    let key = new_key();
    worker.settings.delivery.secrets_keys = keys(&[&key]);
    worker.restart().await;
    let (stored_secret, _, stored_header) = stored(&worker, &endpoint).await;
    assert_sealed(&stored_secret, &secret);
    assert_sealed(&stored_header, RECEIVER_CREDENTIAL);
    delivers_signed_with(&worker, &mut receiver, &secret).await;

    // A plaintext row written while the worker runs (by an older worker) is used as it is.
    sqlx::query("UPDATE endpoints SET secret = $1, headers = $2")
        .bind(&secret)
        .bind(json!({"X-Api-Key": RECEIVER_CREDENTIAL}))
        .execute(&worker.pool)
        .await
        .unwrap();
    delivers_signed_with(&worker, &mut receiver, &secret).await;
}

#[tokio::test]
async fn a_value_sealed_with_an_old_key_opens_while_that_key_is_listed_after_the_new_one() {
    let (old, new) = (new_key(), new_key());
    let mut worker = TestWorker::start_with(|s| s.delivery.secrets_keys = keys(&[&old])).await;
    let mut receiver = Receiver::ok().await;
    let endpoint = endpoint_with_credential(&worker, &receiver).await;
    let secret = endpoint["secret"].as_str().unwrap().to_owned();

    worker.settings.delivery.secrets_keys = keys(&[&new, &old]);
    worker.restart().await;
    let (resealed, _, resealed_header) = stored(&worker, &endpoint).await;
    let new_only = keys(&[&new]);
    assert_eq!(
        new_only.open(&resealed).unwrap(),
        secret,
        "sealed again with the new key"
    );
    assert_eq!(
        new_only.open(&resealed_header).unwrap(),
        RECEIVER_CREDENTIAL
    );
    delivers_signed_with(&worker, &mut receiver, &secret).await;

    // A row still sealed with the old key (written by a worker that had only the old one).
    let old_only = keys(&[&old]);
    sqlx::query("UPDATE endpoints SET secret = $1, headers = $2")
        .bind(old_only.seal(&secret))
        .bind(old_only.seal_headers(&json!({"X-Api-Key": RECEIVER_CREDENTIAL})))
        .execute(&worker.pool)
        .await
        .unwrap();
    delivers_signed_with(&worker, &mut receiver, &secret).await;
}
