//! The management API for outbound webhooks: authentication, the SSRF guard, endpoint CRUD
//! and pagination, test events, retry and recover, and statistics. Uid filters, replay,
//! automatic disabling, paused deliveries and statistics windows: `outbound_endpoint_features`.

mod harness;

use std::time::Duration;

use harness::{Receiver, Reply, TestWorker};
use reqwest::Method;
use serde_json::{Value, json};
use shared::testkit::{eventually, scrape};
use worker::outbound::outbox::EventType;

async fn error_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("a JSON error");
    (status, body["message"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn the_management_api_requires_the_admin_token() {
    let worker = TestWorker::start().await;
    let id = uuid::Uuid::now_v7();
    let routes = [
        (Method::POST, "/v1/endpoints".to_owned()),
        (Method::GET, "/v1/endpoints".to_owned()),
        (Method::GET, format!("/v1/endpoints/{id}")),
        (Method::PATCH, format!("/v1/endpoints/{id}")),
        (Method::DELETE, format!("/v1/endpoints/{id}")),
        (Method::POST, format!("/v1/endpoints/{id}/test")),
        (Method::POST, format!("/v1/endpoints/{id}/rotate-secret")),
        (
            Method::POST,
            format!("/v1/endpoints/{id}/recover?since=2026-01-01T00:00:00Z"),
        ),
        (Method::GET, format!("/v1/endpoints/{id}/stats")),
        (
            Method::POST,
            format!("/v1/endpoints/{id}/replay?since=2026-01-01T00:00:00Z"),
        ),
        (Method::GET, "/v1/deliveries".to_owned()),
        (Method::GET, format!("/v1/deliveries/{id}")),
        (Method::POST, format!("/v1/deliveries/{id}/retry")),
    ];
    for (method, path) in routes {
        let bare = worker.client.request(method.clone(), worker.url(&path));
        let wrong = bare.try_clone().unwrap().bearer_auth("not-the-token");
        for request in [bare, wrong] {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{method} {path}");
        }
    }
}

#[tokio::test]
async fn every_token_listed_in_admin_token_is_accepted_so_it_can_be_rotated() {
    let listed = [("ADMIN_TOKEN", "old-token, new-token")];
    let env = shared::config::Env::new(|name| {
        listed
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_string())
    });
    let parsed = worker::settings::WorkerSettings::from_env(&env).unwrap();
    let worker =
        TestWorker::start_with(|settings| settings.admin_tokens = parsed.admin_tokens).await;
    let with_token = |token: &str| {
        worker
            .client
            .get(worker.url("/v1/endpoints"))
            .bearer_auth(token)
            .send()
    };
    for token in ["old-token", "new-token"] {
        assert_eq!(with_token(token).await.unwrap().status(), 200, "{token}");
    }
    for token in [
        "old-token, new-token",
        "old-token,new-token",
        "other",
        harness::ADMIN_TOKEN,
    ] {
        assert_eq!(with_token(token).await.unwrap().status(), 401, "{token}");
    }
}

#[tokio::test]
async fn internal_addresses_and_bad_settings_are_refused_at_creation() {
    let worker = TestWorker::start().await;
    let refused = [
        json!({"url": "http://10.0.0.1/hook", "event_types": ["*"]}),
        json!({"url": "http://169.254.169.254/latest/meta-data", "event_types": ["*"]}),
        json!({"url": "http://[::1]:9/hook", "event_types": ["*"]}),
        json!({"url": "ftp://example.com/", "event_types": ["*"]}),
        json!({"url": "http://example.com/", "event_types": ["memory.deleted"]}),
        json!({"url": "http://example.com/", "event_types": []}),
        json!({"url": "http://example.com/", "event_types": ["*"], "secret": "short"}),
        json!({"url": "http://example.com/", "event_types": ["*"], "timeout_ms": 0}),
        json!({"url": "http://example.com/", "event_types": ["*"], "headers": {"webhook-id": "x"}}),
        json!({"event_types": ["*"]}),
    ];
    for body in refused {
        let response = worker
            .admin(Method::POST, "/v1/endpoints")
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, message) = error_of(response).await;
        assert_eq!(status, 400, "{body}: {message}");
    }
    let listed = worker.get_json("/v1/endpoints").await;
    assert_eq!(listed["items"], json!([]));
}

#[tokio::test]
async fn a_host_name_that_resolves_to_loopback_is_refused_on_every_attempt() {
    let worker = TestWorker::start_with(|settings| {
        settings.delivery.allowed_target_cidrs.clear();
    })
    .await;
    let mut receiver = Receiver::ok().await;
    let literal = json!({"url": receiver.url(), "event_types": ["*"]});
    let response = worker
        .admin(Method::POST, "/v1/endpoints")
        .json(&literal)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let by_name = format!("http://localhost:{}/hook", receiver.addr.port());
    let endpoint = worker
        .create_endpoint(json!({"url": by_name, "event_types": ["*"]}))
        .await;
    let event = worker.emit(EventType::AudioLevel, json!({})).await;

    let delivery = eventually(20, "a refused attempt", || async {
        let delivery = worker.delivery(event, &endpoint).await;
        let error = delivery["attempts"][0]["error"].as_str()?.to_owned();
        Some((delivery, error))
    })
    .await;
    assert!(delivery.1.contains("refused"), "{}", delivery.1);
    assert!(delivery.0["attempts"][0]["status_code"].is_null());
    assert!(receiver.drain(Duration::from_millis(300)).await.is_empty());
}

/// Creates `count` endpoints (never sent anything: no events are emitted).
async fn endpoints(worker: &TestWorker, count: usize) -> Vec<Value> {
    let mut created = Vec::new();
    for n in 0..count {
        let url = format!("http://127.0.0.1:9/hook{n}");
        let body = json!({"url": url, "event_types": ["*"]});
        created.push(worker.create_endpoint(body).await);
    }
    created
}

#[tokio::test]
async fn endpoints_are_listed_a_page_at_a_time_newest_first() {
    let worker = TestWorker::start().await;
    let created = endpoints(&worker, 3).await;

    let first = worker.get_json("/v1/endpoints?limit=2").await;
    assert_eq!(first["items"][0]["id"], created[2]["id"]);
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next"].as_str().expect("a next page");
    let second = worker
        .get_json(&format!("/v1/endpoints?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(second["items"][0]["id"], created[0]["id"]);
    assert!(second["next"].is_null());
}

#[tokio::test]
async fn an_endpoint_can_be_read_changed_and_deleted() {
    let worker = TestWorker::start().await;
    let created = endpoints(&worker, 1).await.remove(0);
    assert!(
        created["secret"].as_str().unwrap().len() > 40,
        "full on create"
    );
    let path = format!("/v1/endpoints/{}", created["id"].as_str().unwrap());
    let read = worker.get_json(&path).await;
    assert!(read["secret"].as_str().unwrap().ends_with("..."), "masked");

    let patch = json!({"event_types": ["memory.created"], "timeout_ms": 500, "enabled": false});
    let response = worker.admin(Method::PATCH, &path).json(&patch).send().await;
    let changed: Value = response.unwrap().json().await.unwrap();
    assert_eq!(changed["event_types"], json!(["memory.created"]));
    assert_eq!(changed["timeout_ms"], 500);
    assert_eq!(changed["enabled"], false);
    let internal = json!({"url": "http://10.1.2.3/"});
    let response = worker
        .admin(Method::PATCH, &path)
        .json(&internal)
        .send()
        .await;
    assert_eq!(response.unwrap().status(), 400);

    let deleted = worker.admin(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = worker.admin(Method::GET, &path).send().await.unwrap();
    assert_eq!(gone.status(), 404);
}

#[tokio::test]
async fn the_test_route_sends_a_test_event_and_reports_the_answer() {
    let worker = TestWorker::start().await;
    let mut receiver = Receiver::scripted(vec![Reply::status(202)], Reply::status(200)).await;
    let endpoint = worker.endpoint_for(&receiver).await;
    let path = format!("/v1/endpoints/{}/test", endpoint["id"].as_str().unwrap());

    let (_, answer) = worker.post_json(&path).await;
    assert_eq!(answer["status_code"], 202);
    assert_eq!(answer["succeeded"], true);
    assert_eq!(answer["response_excerpt"], "answer 202");
    assert!(answer["latency_ms"].is_u64());
    let request = receiver.next().await;
    assert_eq!(request.header("x-webhook-event"), "test");
    assert_eq!(request.json()["type"], "test");
    assert_eq!(
        request.header("webhook-id"),
        answer["delivery_id"].as_str().unwrap()
    );
}

/// A `Retry-After` no date can hold fails the delivery after its one attempt, recorded, both
/// through the test route and through the delivery loop (it used to panic the attempt, which
/// was then sent again forever, and the test route's handler with it).
#[tokio::test]
async fn a_retry_after_beyond_any_date_fails_the_delivery_after_one_recorded_attempt() {
    let worker = TestWorker::start().await;
    let forever = Reply::status(503).retry_after("99999999999999");
    let mut receiver = Receiver::scripted(vec![], forever).await;
    let endpoint = worker.endpoint_for(&receiver).await;
    let path = format!("/v1/endpoints/{}/test", endpoint["id"].as_str().unwrap());

    let (status, answer) = worker.post_json(&path).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status_code"], 503);
    let tested = format!("/v1/deliveries/{}", answer["delivery_id"].as_str().unwrap());
    assert_eq!(worker.get_json(&tested).await["status"], "failed");
    receiver.next().await;

    let event = worker.emit(EventType::AudioLevel, json!({})).await;
    let delivery = worker
        .delivery_with_status(event, &endpoint, "failed")
        .await;
    assert_eq!(delivery["attempts"].as_array().unwrap().len(), 1);
    receiver.next().await;
    let resent = receiver.drain(Duration::from_secs(1)).await;
    assert!(resent.is_empty(), "sent again {} times", resent.len());
}

#[tokio::test]
async fn failed_deliveries_can_be_retried_and_recovered() {
    let worker = TestWorker::start().await;
    let script = vec![Reply::status(422), Reply::status(422)];
    let mut receiver = Receiver::scripted(script, Reply::status(200)).await;
    let endpoint = worker.endpoint_for(&receiver).await;
    let since = chrono::Utc::now() - chrono::Duration::minutes(1);
    let first = worker.emit(EventType::AudioLevel, json!({"n": 1})).await;
    let second = worker.emit(EventType::AudioLevel, json!({"n": 2})).await;
    let failed = worker
        .delivery_with_status(first, &endpoint, "failed")
        .await;
    worker
        .delivery_with_status(second, &endpoint, "failed")
        .await;

    let retry = format!("/v1/deliveries/{}/retry", failed["id"].as_str().unwrap());
    assert_eq!(worker.post_json(&retry).await.0, 202);
    let retried = worker
        .delivery_with_status(first, &endpoint, "succeeded")
        .await;
    assert_eq!(retried["attempt_count"], 2);

    let since = since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let id = endpoint["id"].as_str().unwrap();
    let (status, recovered) = worker
        .post_json(&format!("/v1/endpoints/{id}/recover?since={since}"))
        .await;
    assert_eq!((status, recovered["requeued"].clone()), (202, json!(1)));
    worker
        .delivery_with_status(second, &endpoint, "succeeded")
        .await;
    assert_eq!(receiver.drain(Duration::from_millis(300)).await.len(), 4);
}

#[tokio::test]
async fn deliveries_are_listed_by_endpoint_and_status_and_counted_in_stats() {
    let worker = TestWorker::start().await;
    let receiver = Receiver::scripted(vec![Reply::status(422)], Reply::status(200)).await;
    let endpoint = worker.endpoint_for(&receiver).await;
    let id = endpoint["id"].as_str().unwrap();
    for n in 0..2 {
        let event = worker.emit(EventType::AudioLevel, json!({"n": n})).await;
        eventually(20, "a finished delivery", || async {
            let delivery = worker.delivery(event, &endpoint).await;
            (delivery["status"] != "pending").then_some(())
        })
        .await;
    }

    for status in ["failed", "succeeded"] {
        let path = format!("/v1/deliveries?endpoint_id={id}&status={status}");
        let listed = worker.get_json(&path).await;
        assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{status}");
    }
    let bogus = worker
        .admin(Method::GET, "/v1/deliveries?status=lost")
        .send()
        .await;
    assert_eq!(bogus.unwrap().status(), 400);
    let stats = worker.get_json(&format!("/v1/endpoints/{id}/stats")).await;
    assert_eq!(
        (stats["succeeded"].clone(), stats["failed"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(
        (stats["pending"].clone(), stats["paused"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(stats["window"], "24h", "the default window");
    assert_eq!(stats["success_ratio"], 0.5);
    assert_eq!(stats["attempts"], 2);
    assert_eq!(stats["attempts_by_class"]["4xx"], 1);
    assert!(stats["latency_ms"]["p95"].is_number(), "{stats}");
}

#[tokio::test]
async fn delivery_metrics_are_exported() {
    let _ = shared::telemetry::metrics();
    let worker = TestWorker::start().await;
    let receiver = Receiver::ok().await;
    let endpoint = worker.endpoint_for(&receiver).await;
    let event = worker.emit(EventType::AudioLevel, json!({})).await;
    worker
        .delivery_with_status(event, &endpoint, "succeeded")
        .await;

    let text = eventually(10, "the pending gauge", || async {
        let text = scrape(&worker.url("/metrics")).await;
        text.contains("outbound_deliveries_pending").then_some(text)
    })
    .await;
    assert!(
        text.contains(r#"outbound_deliveries_total{outcome="succeeded"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"outbound_attempts_total{result="succeeded",status_class="2xx"}"#),
        "{text}"
    );
    assert!(text.contains("outbound_attempt_seconds_bucket"));
}
