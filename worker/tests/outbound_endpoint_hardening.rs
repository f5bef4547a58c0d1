//! Endpoints against hostile input and concurrent admins, through the real management API on a
//! database of the test's own: hop-by-hop and framing headers refused, secrets and custom
//! header values masked in every read, and a rotation that no concurrent PATCH can undo.

mod harness;

use harness::{Receiver, TestWorker};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

/// Every header an endpoint may not set because the HTTP client owns it, spelt as a user might.
const HOP_BY_HOP: [&str; 9] = [
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "TE",
    "Upgrade",
    "Host",
    "Keep-Alive",
    "Proxy-Connection",
    "Trailer",
];

const RECEIVER_CREDENTIAL: &str = "receiver-credential-7f3a";

/// `method path` with a JSON body: the status and the answer's `message`.
async fn refusal(worker: &TestWorker, method: Method, path: &str, body: Value) -> (u16, String) {
    let response = worker.admin(method, path).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.expect("a JSON answer");
    (status, answer["message"].as_str().unwrap_or("").to_owned())
}

/// `method path` with a JSON body; panics unless 2xx. The JSON answer.
async fn admin_json(worker: &TestWorker, method: Method, path: &str, body: Value) -> Value {
    let response = worker.admin(method, path).json(&body).send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.expect("JSON")
}

async fn stored_secrets(worker: &TestWorker, id: &str) -> (String, Option<String>) {
    sqlx::query_as("SELECT secret, previous_secret FROM endpoints WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&worker.pool)
        .await
        .expect("the endpoint row")
}

#[tokio::test]
async fn hop_by_hop_and_framing_headers_are_400_naming_the_header_on_create_and_patch() {
    let worker = TestWorker::start().await;
    let endpoint = worker
        .create_endpoint(json!({"url": "http://example.com/", "event_types": ["*"],
            "headers": {"X-Tenant": "t1"}}))
        .await;
    let path = format!("/v1/endpoints/{}", endpoint["id"].as_str().unwrap());
    for name in HOP_BY_HOP {
        let headers = json!({ name: "1", "X-Tenant": "t2" });
        let create =
            json!({"url": "http://example.com/", "event_types": ["*"], "headers": headers});
        let (status, message) = refusal(&worker, Method::POST, "/v1/endpoints", create).await;
        assert_eq!(status, 400, "create with {name}: {message}");
        assert!(
            message.contains(name),
            "create: {message:?} does not name {name}"
        );

        let patch = json!({ "headers": headers });
        let (status, message) = refusal(&worker, Method::PATCH, &path, patch).await;
        assert_eq!(status, 400, "patch with {name}: {message}");
        assert!(
            message.contains(name),
            "patch: {message:?} does not name {name}"
        );
    }
    let listed = worker.get_json("/v1/endpoints").await;
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        1,
        "nothing created"
    );
    let stored: Value = sqlx::query_scalar("SELECT headers FROM endpoints")
        .fetch_one(&worker.pool)
        .await
        .unwrap();
    assert_eq!(stored, json!({"X-Tenant": "t1"}), "nothing changed");
}

/// The create answer shows what was sent; every later answer masks the secret (showing none of
/// its key) and the custom header values, which are still sent to the receiver as set.
#[tokio::test]
async fn secrets_and_custom_header_values_are_masked_in_every_read() {
    let worker = TestWorker::start().await;
    let mut receiver = Receiver::ok().await;
    let created = worker
        .create_endpoint(json!({"url": receiver.url(), "event_types": ["*"],
            "headers": {"X-Api-Key": RECEIVER_CREDENTIAL}}))
        .await;
    assert_eq!(created["headers"]["X-Api-Key"], RECEIVER_CREDENTIAL);
    let secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap();
    let path = format!("/v1/endpoints/{id}");

    let read = worker.get_json(&path).await;
    let listed = worker.get_json("/v1/endpoints").await["items"][0].clone();
    let patched = admin_json(&worker, Method::PATCH, &path, json!({"timeout_ms": 900})).await;
    let rotate = format!("{path}/rotate-secret");
    let rotated = admin_json(&worker, Method::POST, &rotate, json!({})).await;
    let rotated_secret = rotated["secret"].as_str().unwrap().to_owned();
    let read_after = worker.get_json(&path).await;
    for (answer, what) in [(&read, "read"), (&listed, "list"), (&patched, "patch")] {
        assert_masked(answer, &[&secret], what);
    }
    assert_masked(
        &read_after,
        &[&secret, &rotated_secret],
        "read after rotate",
    );
    assert!(
        !rotated.to_string().contains(RECEIVER_CREDENTIAL),
        "{rotated}"
    );
    assert_eq!(rotated["headers"]["X-Api-Key"], "...");
    assert_ne!(
        rotated_secret, secret,
        "the rotation shows the new secret in full"
    );

    let (status, _) = worker.post_json(&format!("{path}/test")).await;
    assert_eq!(status, 200);
    assert_eq!(
        receiver.next().await.header("x-api-key"),
        RECEIVER_CREDENTIAL
    );
}

/// `answer` shows the secret as `whsec_...` and every header value as `...`, and contains no
/// part of the header value nor of any of `secrets`' keys.
fn assert_masked(answer: &Value, secrets: &[&str], what: &str) {
    assert_eq!(answer["secret"], "whsec_...", "{what}: {answer}");
    assert_eq!(answer["headers"], json!({"X-Api-Key": "..."}), "{what}");
    let text = answer.to_string();
    assert!(!text.contains(RECEIVER_CREDENTIAL), "{what}: {text}");
    for secret in secrets {
        let key = secret.strip_prefix("whsec_").unwrap();
        for part in key.as_bytes().windows(8) {
            let part = std::str::from_utf8(part).unwrap();
            assert!(
                !text.contains(part),
                "{what} shows {part:?} of the key: {text}"
            );
        }
    }
}

/// Many rounds of one rotation racing several PATCHes of other fields: each round the stored
/// secret is the one the rotation answered and the previous secret the one it replaced, and
/// every PATCH's change is kept.
#[tokio::test]
async fn a_concurrent_patch_never_restores_the_secret_a_rotation_replaced() {
    let worker = TestWorker::start().await;
    let endpoint = worker
        .create_endpoint(json!({"url": "http://example.com/", "event_types": ["*"]}))
        .await;
    let id = endpoint["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/endpoints/{id}");
    let rotate = format!("{path}/rotate-secret");
    for round in 0..60 {
        let (before, _) = stored_secrets(&worker, &id).await;
        let timeout_ms = 1_000 + round;
        let patch = || {
            admin_json(
                &worker,
                Method::PATCH,
                &path,
                json!({"timeout_ms": timeout_ms}),
            )
        };
        let (rotated, ..) = tokio::join!(
            admin_json(&worker, Method::POST, &rotate, json!({})),
            patch(),
            patch(),
            patch(),
            patch(),
        );
        let (secret, previous) = stored_secrets(&worker, &id).await;
        assert_eq!(secret, rotated["secret"].as_str().unwrap(), "round {round}");
        assert_eq!(previous.as_deref(), Some(before.as_str()), "round {round}");
        let read = worker.get_json(&path).await;
        assert_eq!(read["timeout_ms"], timeout_ms, "round {round}");
    }
    let missing = format!("/v1/endpoints/{}/rotate-secret", Uuid::now_v7());
    let (status, _) = worker.post_json(&missing).await;
    assert_eq!(status, 404);
}
