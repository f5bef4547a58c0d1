//! Endpoint features of the management API against the real database: the `uids` filter,
//! `POST /v1/endpoints/{id}/replay`, automatic disabling after sustained failure
//! (`ENDPOINT_DISABLE_AFTER`, here seconds), paused deliveries and their resumption, and
//! statistics over a window.

mod harness;

use std::time::Duration;

use harness::{Receiver, Reply, TestWorker};
use reqwest::Method;
use serde_json::{Value, json};
use shared::testkit::eventually;
use uuid::Uuid;
use worker::outbound::outbox::{self, EventType, NewEvent};

/// Emits `count` events of `event_type` about `uid` (none: about no user) in one transaction.
async fn emit_about(worker: &TestWorker, uid: Option<&str>, count: usize) -> Vec<Uuid> {
    let events = (0..count)
        .map(|n| NewEvent {
            uid,
            data: json!({"n": n}),
            cause: None,
        })
        .collect();
    let mut tx = worker.pool.begin().await.unwrap();
    let ids = outbox::emit_all(&mut tx, EventType::MemoryCreated, events)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    ids
}

/// How many deliveries `endpoint` has.
async fn deliveries_of(worker: &TestWorker, endpoint: &Value) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE endpoint_id = $1::uuid")
        .bind(endpoint["id"].as_str().unwrap())
        .fetch_one(&worker.pool)
        .await
        .unwrap()
}

/// A request with a JSON body; its status and JSON answer.
async fn send(worker: &TestWorker, method: Method, path: &str, body: Value) -> (u16, Value) {
    let response = worker.admin(method, path).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn endpoint_path(endpoint: &Value) -> String {
    format!("/v1/endpoints/{}", endpoint["id"].as_str().unwrap())
}

fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[tokio::test]
async fn an_endpoint_with_uids_gets_only_those_users_events() {
    let worker = TestWorker::start().await;
    let filtered = worker
        .create_endpoint(json!({
            "url": "http://127.0.0.1:9/a", "event_types": ["*"], "uids": ["u1", "u3", "u1"],
        }))
        .await;
    assert_eq!(filtered["uids"], json!(["u1", "u3"]), "named once each");
    let everyone = worker
        .create_endpoint(json!({"url": "http://127.0.0.1:9/b", "event_types": ["*"]}))
        .await;
    assert_eq!(everyone["uids"], json!([]));

    emit_about(&worker, Some("u1"), 2).await;
    emit_about(&worker, Some("u2"), 3).await;
    emit_about(&worker, None, 1).await;
    assert_eq!(deliveries_of(&worker, &filtered).await, 2, "u1's only");
    assert_eq!(
        deliveries_of(&worker, &everyone).await,
        6,
        "every user's and none's"
    );

    let path = endpoint_path(&filtered);
    let (status, patched) = send(&worker, Method::PATCH, &path, json!({"uids": []})).await;
    assert_eq!((status, patched["uids"].clone()), (200, json!([])));
    emit_about(&worker, Some("u2"), 1).await;
    assert_eq!(
        deliveries_of(&worker, &filtered).await,
        3,
        "every user's now"
    );
    assert_eq!(worker.get_json(&path).await["uids"], json!([]));
}

#[tokio::test]
async fn bad_uids_are_refused_naming_the_field() {
    let worker = TestWorker::start().await;
    let too_many: Vec<String> = (0..1001).map(|n| format!("u{n}")).collect();
    let refused = [
        json!([""]),
        json!(["ok", "a\u{0}b"]),
        json!(too_many),
        json!("u1"),
    ];
    let endpoint = worker
        .create_endpoint(json!({"url": "http://127.0.0.1:9/a", "event_types": ["*"]}))
        .await;
    for uids in refused {
        let body = json!({"url": "http://127.0.0.1:9/a", "event_types": ["*"], "uids": uids});
        let (status, error) = send(&worker, Method::POST, "/v1/endpoints", body).await;
        assert_eq!(
            (status, error["field"].clone()),
            (400, json!("uids")),
            "{error}"
        );
        let patch = json!({"uids": uids});
        let path = endpoint_path(&endpoint);
        let (status, error) = send(&worker, Method::PATCH, &path, patch).await;
        assert_eq!(
            (status, error["field"].clone()),
            (400, json!("uids")),
            "{error}"
        );
    }
}

#[tokio::test]
async fn a_replay_delivers_every_event_since_then_once_in_bounded_batches() {
    let worker = TestWorker::start().await;
    let before = emit_about(&worker, Some("u1"), 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = chrono::Utc::now();
    // More than one replay statement's batch, and some of another user's.
    let mine = emit_about(&worker, Some("u1"), 1100).await;
    emit_about(&worker, Some("u2"), 5).await;
    // Created disabled: what it is given waits, paused, so nothing finishes meanwhile.
    let endpoint = worker
        .create_endpoint(json!({
            "url": "http://127.0.0.1:9/a", "event_types": ["memory.created"],
            "uids": ["u1"], "enabled": false,
        }))
        .await;
    let replay = format!(
        "{}/replay?since={}",
        endpoint_path(&endpoint),
        rfc3339(since)
    );

    let (status, first) = worker.post_json(&replay).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["events"], 1100, "{first}");
    assert_eq!(first["created"], 1100);
    let (status, again) = worker.post_json(&replay).await;
    assert_eq!(status, 202);
    assert_eq!(
        (
            again["created"].clone(),
            again["requeued"].clone(),
            again["already_pending"].clone()
        ),
        (json!(0), json!(0), json!(1100)),
        "{again}"
    );
    assert_eq!(deliveries_of(&worker, &endpoint).await, 1100);
    let older: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE event_id = $1")
        .bind(before[0])
        .fetch_one(&worker.pool)
        .await
        .unwrap();
    assert_eq!(older, 0, "nothing before `since`");
    let paused = format!(
        "/v1/deliveries?endpoint_id={}&status=paused&limit=1",
        endpoint["id"].as_str().unwrap()
    );
    let paused = worker.get_json(&paused).await;
    assert_eq!(paused["items"][0]["status"], "paused");
    let last: Option<Uuid> = sqlx::query_scalar(
        "SELECT event_id FROM deliveries WHERE endpoint_id = $1::uuid ORDER BY event_id DESC LIMIT 1",
    )
    .bind(endpoint["id"].as_str().unwrap())
    .fetch_optional(&worker.pool)
    .await
    .unwrap();
    assert_eq!(last, Some(mine[1099]), "the walk reached the newest event");
}

#[tokio::test]
async fn a_replay_resends_what_the_endpoint_had_and_sends_what_it_never_had() {
    let worker = TestWorker::start().await;
    let mut receiver = Receiver::ok().await;
    let since = chrono::Utc::now();
    let never_had = emit_about(&worker, Some("u1"), 1).await[0];
    let endpoint = worker.endpoint_for(&receiver).await;
    let had = emit_about(&worker, Some("u1"), 1).await[0];
    worker
        .delivery_with_status(had, &endpoint, "succeeded")
        .await;
    receiver.next().await;

    let replay = format!(
        "{}/replay?since={}",
        endpoint_path(&endpoint),
        rfc3339(since)
    );
    let (status, replayed) = worker.post_json(&replay).await;
    assert_eq!(status, 202);
    assert_eq!(
        (replayed["created"].clone(), replayed["requeued"].clone()),
        (json!(1), json!(1)),
        "{replayed}"
    );
    let sent = receiver.drain(Duration::from_millis(500)).await;
    assert_eq!(sent.len(), 2, "both sent, once each");
    worker
        .delivery_with_status(never_had, &endpoint, "succeeded")
        .await;
}

#[tokio::test]
async fn a_replay_needs_a_time_and_an_endpoint() {
    let worker = TestWorker::start().await;
    let endpoint = worker
        .create_endpoint(json!({"url": "http://127.0.0.1:9/a", "event_types": ["*"]}))
        .await;
    let path = format!("{}/replay", endpoint_path(&endpoint));
    let cases = [
        ("", "since"),
        ("?since=yesterday", "since"),
        ("?since=2026-01-01T00:00:00Z&until=x", "until"),
    ];
    for (query, field) in cases {
        let (status, error) = worker.post_json(&format!("{path}{query}")).await;
        assert_eq!(
            (status, error["field"].clone()),
            (400, json!(field)),
            "{query}"
        );
    }
    let unknown = format!(
        "/v1/endpoints/{}/replay?since=2026-01-01T00:00:00Z",
        Uuid::now_v7()
    );
    assert_eq!(worker.post_json(&unknown).await.0, 404);
}

#[tokio::test]
async fn an_endpoint_failing_for_the_disable_after_setting_is_disabled_paused_and_resumable() {
    let worker = TestWorker::start_with(|settings| {
        settings.delivery.disable_after = Some(Duration::from_secs(2));
        settings.delivery.window = Duration::from_secs(30);
    })
    .await;
    let failing_receiver = Receiver::scripted(vec![], Reply::status(500)).await;
    let failing = worker.endpoint_for(&failing_receiver).await;
    let mut watcher = Receiver::ok().await;
    let watching = worker
        .create_endpoint(json!({"url": watcher.url(), "event_types": ["endpoint.disabled"]}))
        .await;
    let events = emit_about(&worker, Some("u1"), 3).await;

    let path = endpoint_path(&failing);
    let disabled = eventually(20, "the failing endpoint disabled", || async {
        let endpoint = worker.get_json(&path).await;
        (endpoint["enabled"] == false).then_some(endpoint)
    })
    .await;
    let reason = disabled["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("ENDPOINT_DISABLE_AFTER"), "{reason}");
    let failing_since: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(disabled["failing_since"].clone()).unwrap();
    let updated_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(disabled["updated_at"].clone()).unwrap();
    assert!(
        updated_at - failing_since >= chrono::Duration::seconds(2),
        "{disabled}"
    );
    let announced = watcher.next().await.json();
    assert_eq!(announced["type"], "endpoint.disabled");
    assert_eq!(announced["data"]["endpoint_id"], failing["id"]);
    assert_eq!(
        worker.get_json(&endpoint_path(&watching)).await["enabled"],
        true
    );

    let failing_id = failing["id"].as_str().unwrap();
    let paused = worker
        .get_json(&format!(
            "/v1/deliveries?endpoint_id={failing_id}&status=paused"
        ))
        .await;
    assert_eq!(paused["items"].as_array().unwrap().len(), 3, "{paused}");
    let pending = worker
        .get_json(&format!(
            "/v1/deliveries?endpoint_id={failing_id}&status=pending"
        ))
        .await;
    assert_eq!(pending["items"], json!([]));
    let one = worker.delivery(events[0], &failing).await;
    assert_eq!(one["status"], "paused");
    let stats = worker.get_json(&format!("{path}/stats?window=5m")).await;
    assert_eq!(
        (stats["paused"].clone(), stats["pending"].clone()),
        (json!(3), json!(0))
    );
    assert_eq!(stats["success_ratio"], 0.0);
    assert!(
        stats["attempts_by_class"]["5xx"].as_i64().unwrap() >= 3,
        "{stats}"
    );

    // Fixed (a new URL) and re-enabled: the paused deliveries go out.
    let mut fixed = Receiver::ok().await;
    let enable = json!({"enabled": true, "url": fixed.url()});
    let (status, enabled) = send(&worker, Method::PATCH, &path, enable).await;
    assert_eq!(status, 200, "{enabled}");
    assert!(enabled["failing_since"].is_null() && enabled["disabled_reason"].is_null());
    for event in &events {
        worker
            .delivery_with_status(*event, &failing, "succeeded")
            .await;
    }
    assert_eq!(
        fixed.drain(Duration::from_millis(300)).await.len(),
        3,
        "once each"
    );
}

#[tokio::test]
async fn a_healthy_endpoint_is_never_disabled_and_the_setting_zero_disables_none() {
    for disable_after in [Some(Duration::from_millis(500)), None] {
        let worker = TestWorker::start_with(|settings| {
            settings.delivery.disable_after = disable_after;
        })
        .await;
        let script = vec![Reply::status(500), Reply::status(200)];
        let flaky = Receiver::scripted(script, Reply::status(200)).await;
        let healthy = worker.endpoint_for(&flaky).await;
        let failing_receiver = Receiver::scripted(vec![], Reply::status(503)).await;
        let failing = worker.endpoint_for(&failing_receiver).await;
        let events = emit_about(&worker, Some("u1"), 2).await;
        worker
            .delivery_with_status(events[1], &healthy, "succeeded")
            .await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let healthy = worker.get_json(&endpoint_path(&healthy)).await;
        assert_eq!(healthy["enabled"], true, "{disable_after:?}");
        assert!(healthy["failing_since"].is_null(), "{healthy}");
        let failing = worker.get_json(&endpoint_path(&failing)).await;
        assert_eq!(
            failing["enabled"],
            disable_after.is_none(),
            "{disable_after:?}"
        );
        assert!(failing["failing_since"].is_string(), "{failing}");
    }
}

#[tokio::test]
async fn statistics_cover_the_window_asked_for() {
    let worker = TestWorker::start().await;
    let script = vec![Reply::status(422), Reply::status(302)];
    let receiver =
        Receiver::scripted(script, Reply::status(200).after(Duration::from_millis(30))).await;
    let endpoint = worker.endpoint_for(&receiver).await;
    let events = emit_about(&worker, Some("u1"), 4).await;
    for event in &events {
        eventually(20, "a finished delivery", || async {
            let delivery = worker.delivery(*event, &endpoint).await;
            (delivery["status"] != "pending").then_some(())
        })
        .await;
    }
    let path = format!("{}/stats", endpoint_path(&endpoint));
    let stats = eventually(10, "every attempt counted", || async {
        let stats = worker.get_json(&format!("{path}?window=1h")).await;
        let by_class = &stats["attempts_by_class"];
        (by_class["2xx"].as_i64()? >= 2 && by_class["4xx"] == 1).then_some(stats)
    })
    .await;
    assert_eq!(stats["window"], "1h");
    let attempts = stats["attempts"].as_i64().unwrap();
    let ok = stats["attempts_by_class"]["2xx"].as_i64().unwrap();
    assert_eq!(
        stats["success_ratio"].as_f64().unwrap(),
        ok as f64 / attempts as f64
    );
    let (p50, p99) = (
        stats["latency_ms"]["p50"].as_f64().unwrap(),
        stats["latency_ms"]["p99"].as_f64().unwrap(),
    );
    assert!(p50 <= p99 && (25.0..1000.0).contains(&p99), "{stats}");
    for window in ["5m", "24h", "7d"] {
        let other = worker.get_json(&format!("{path}?window={window}")).await;
        assert_eq!(other["attempts"], stats["attempts"], "{window}");
    }
    let (status, error) = send(
        &worker,
        Method::GET,
        &format!("{path}?window=2h"),
        json!({}),
    )
    .await;
    assert_eq!(
        (status, error["field"].clone()),
        (400, json!("window")),
        "{error}"
    );
}
