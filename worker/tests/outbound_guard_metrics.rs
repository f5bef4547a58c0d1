//! The outbound metrics an operator pages on, against the real delivery loop: the SSRF guard's
//! refusals counted by the kind of address (an IP literal refused when the endpoint is saved,
//! a host name refused when an attempt resolves it; nothing is ever connected to), and
//! `outbound_circuits_open` at 1 while a failing receiver's circuit is open (and the
//! endpoint's stats saying `"circuit": "open"`), back at 0 once a probe succeeds.
//!
//! The tests of this binary share one recorder, so each reads how much its own series rose.

mod harness;

use std::time::Duration;

use harness::{Receiver, Reply, TestWorker};
use serde_json::json;
use shared::testkit::eventually;
use worker::outbound::outbox::EventType;

fn refusals(reason: &str) -> String {
    format!("outbound_ssrf_refusals_total{{reason=\"{reason}\"}}")
}

const CIRCUITS_OPEN: &str = "outbound_circuits_open";

#[tokio::test]
async fn an_endpoint_at_a_private_address_is_refused_and_counted_as_private() {
    let worker = TestWorker::start().await;
    let before = worker.metric(&refusals("private")).await.expect("from 0");

    // An IP literal: refused when the endpoint is saved, before anything connects to it.
    let response = worker
        .admin(reqwest::Method::POST, "/v1/endpoints")
        .json(&json!({"url": "http://10.0.0.1/hook", "event_types": ["*"]}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("private"),
        "{body}"
    );

    let after = worker.metric(&refusals("private")).await.unwrap();
    assert_eq!(after - before, 1.0);
}

#[tokio::test]
async fn a_host_name_that_resolves_to_loopback_is_refused_at_the_attempt_and_counted() {
    // Loopback left out of ALLOWED_TARGET_CIDRS: `localhost` passes when saved (a name), and is
    // refused when the attempt resolves it, so the receiver never hears of it.
    let worker = TestWorker::start_with(|settings| {
        settings.delivery.allowed_target_cidrs = vec![];
    })
    .await;
    let mut receiver = Receiver::ok().await;
    let port = receiver.url().rsplit(':').next().unwrap().to_owned();
    let url = format!("http://localhost:{port}");
    worker
        .create_endpoint(json!({"url": url, "event_types": ["*"]}))
        .await;
    let before = worker.metric(&refusals("loopback")).await.expect("from 0");

    worker.emit(EventType::Test, json!({})).await;
    eventually(10, "the attempt refused as loopback", || async {
        let now = worker.metric(&refusals("loopback")).await?;
        (now > before).then_some(())
    })
    .await;
    assert!(
        receiver.drain(Duration::from_millis(300)).await.is_empty(),
        "a refused destination was reached"
    );
}

#[tokio::test]
async fn a_failing_receiver_opens_its_circuit_and_a_good_probe_closes_it() {
    let worker = TestWorker::start_with(|settings| {
        settings.delivery.circuit_failure_threshold = 2;
        settings.delivery.circuit_cooldown = Duration::from_millis(1500);
        settings.delivery.endpoint_concurrency = 1;
        settings.delivery.batch = 1;
    })
    .await;
    let failing = vec![Reply::status(500); 2];
    let mut receiver = Receiver::scripted(failing, Reply::status(200)).await;
    let endpoint = worker.endpoint_for(&receiver).await;
    assert_eq!(worker.metric(CIRCUITS_OPEN).await, Some(0.0));
    let stats = format!("/v1/endpoints/{}/stats", endpoint["id"].as_str().unwrap());
    assert_eq!(worker.get_json(&stats).await["circuit"], "closed");

    worker.emit(EventType::Test, json!({})).await;
    receiver.next().await;
    receiver.next().await;
    eventually(5, "the circuit open after two failures", || async {
        (worker.metric(CIRCUITS_OPEN).await? == 1.0).then_some(())
    })
    .await;
    // The endpoint's statistics say so too, as this worker sees it.
    assert_eq!(worker.get_json(&stats).await["circuit"], "open");

    // After the cool-down one probe goes out, is answered 200, and closes the circuit.
    receiver.next().await;
    eventually(5, "the circuit closed by the probe", || async {
        (worker.metric(CIRCUITS_OPEN).await? == 0.0).then_some(())
    })
    .await;
    assert_eq!(worker.get_json(&stats).await["circuit"], "closed");
}
