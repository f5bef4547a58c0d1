//! `worker admin ...`, the built binary run against a live worker: each command makes its call
//! of the management API and prints the answer; an API refusal exits 1 with the API's message,
//! an unreachable worker exits 3, a usage error exits 2.

mod harness;

use std::process::Output;
use std::time::Duration;

use harness::{ADMIN_TOKEN, Receiver, TestWorker};
use serde_json::{Value, json};
use worker::outbound::outbox::EventType;

/// Runs `worker admin <words>` against `worker` with the admin token.
async fn admin(worker: &TestWorker, words: &[&str]) -> Output {
    admin_with(&worker.url(""), Some(ADMIN_TOKEN), words).await
}

async fn admin_with(api: &str, token: Option<&str>, words: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_worker"));
    command
        .arg("admin")
        .args(words)
        .env("WORKER_API_URL", api.trim_end_matches('/'))
        .env_remove("ADMIN_TOKEN");
    if let Some(token) = token {
        command.env("ADMIN_TOKEN", token);
    }
    command.output().await.expect("run worker admin")
}

/// The JSON a command printed; panics unless it exited 0.
fn printed(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the command prints JSON")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn endpoints_and_deliveries_are_managed_from_the_command_line() {
    let worker = TestWorker::start().await;
    let mut receiver = Receiver::ok().await;
    let url = receiver.url();
    let created = printed(
        &admin(
            &worker,
            &[
                "endpoints",
                "create",
                "--url",
                &url,
                "--types",
                "audio.level,test",
                "--timeout-ms",
                "2500",
            ],
        )
        .await,
    );
    let id = created["id"].as_str().expect("an id").to_owned();
    assert_eq!(created["event_types"], json!(["audio.level", "test"]));
    assert_eq!(created["timeout_ms"], 2500);
    assert!(
        created["secret"].as_str().unwrap().starts_with("whsec_"),
        "the secret is shown once, at creation: {created}"
    );

    let listed = printed(&admin(&worker, &["endpoints", "list", "--limit", "1"]).await);
    assert_eq!(listed["items"][0]["id"], id.as_str());
    let shown = printed(&admin(&worker, &["endpoints", "show", &id]).await);
    assert_eq!(shown["url"], url.as_str());

    let tested = printed(&admin(&worker, &["endpoints", "test", &id]).await);
    assert_eq!(receiver.next().await.json()["type"], "test", "{tested}");

    let event = worker
        .emit(EventType::AudioLevel, json!({"level": 40}))
        .await;
    let delivery = worker
        .delivery_with_status(event, &created, "succeeded")
        .await;
    let delivery_id = delivery["id"].as_str().unwrap();
    let page = printed(
        &admin(
            &worker,
            &[
                "deliveries",
                "list",
                "--endpoint-id",
                &id,
                "--status",
                "succeeded",
            ],
        )
        .await,
    );
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| item["id"].as_str())
        .collect();
    assert!(ids.contains(&delivery_id), "{page}");
    let shown = printed(&admin(&worker, &["deliveries", "show", delivery_id]).await);
    assert_eq!(
        shown["attempts"].as_array().map(Vec::len),
        Some(1),
        "{shown}"
    );
    receiver.drain(Duration::from_millis(200)).await;
    printed(&admin(&worker, &["deliveries", "retry", delivery_id]).await);
    let again = receiver.next().await;
    assert_eq!(again.json()["type"], "audio.level");
    assert_eq!(again.json()["data"]["level"], 40);

    receiver.drain(Duration::from_millis(200)).await;
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let replayed = printed(&admin(&worker, &["endpoints", "replay", &id, "--since", &since]).await);
    assert_eq!(
        replayed["requeued"], 1,
        "the one delivery it had is sent again: {replayed}"
    );
    let resent = receiver.next().await;
    assert_eq!(resent.json()["data"]["level"], 40);
}

#[tokio::test]
async fn a_user_is_erased_and_followed_and_dead_letters_are_listed() {
    let worker = TestWorker::start().await;
    worker
        .emit(EventType::AudioLevel, json!({"level": 1}))
        .await;
    let job = printed(&admin(&worker, &["users", "erase", "uid-1"]).await);
    assert_eq!(job["uid"], "uid-1", "{job}");
    let progress = printed(&admin(&worker, &["users", "erasure", "uid-1"]).await);
    assert_eq!(progress["uid"], "uid-1", "{progress}");
    assert!(progress.get("status").is_some(), "{progress}");

    let letters = printed(&admin(&worker, &["dead-letters", "list"]).await);
    assert_eq!(letters["items"], json!([]));
    assert!(
        letters.get("next").is_some(),
        "the list contract: {letters}"
    );
}

#[tokio::test]
async fn refusals_and_failures_exit_non_zero_with_the_reason() {
    let worker = TestWorker::start().await;
    let unknown = admin(
        &worker,
        &["deliveries", "show", "00000000-0000-0000-0000-000000000000"],
    )
    .await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("404"), "{}", stderr(&unknown));

    let bad_id = admin(&worker, &["dead-letters", "redrive", "not-a-uuid"]).await;
    assert_eq!(bad_id.status.code(), Some(1));
    assert!(stderr(&bad_id).contains("400"), "{}", stderr(&bad_id));

    let wrong_token = admin_with(&worker.url(""), Some("wrong"), &["endpoints", "list"]).await;
    assert_eq!(wrong_token.status.code(), Some(1));
    assert!(
        stderr(&wrong_token).contains("401"),
        "{}",
        stderr(&wrong_token)
    );

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let unreachable = admin_with(&closed, Some(ADMIN_TOKEN), &["endpoints", "list"]).await;
    assert_eq!(
        unreachable.status.code(),
        Some(3),
        "{}",
        stderr(&unreachable)
    );

    let usage = admin(
        &worker,
        &["endpoints", "create", "--url", "http://127.0.0.1:9/"],
    )
    .await;
    assert_eq!(usage.status.code(), Some(2), "--types is required");
    assert!(stderr(&usage).contains("--types"), "{}", stderr(&usage));
}
