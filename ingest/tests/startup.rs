//! Start-up: ingest waits for RabbitMQ with backoff instead of exiting; `/readyz` is 503 until
//! the broker answers, then 200, and events are accepted.

mod harness;

use harness::{TestIngest, omi_query};
use shared::testkit::{ProxyMode, TcpProxy, TestBroker};

#[tokio::test]
async fn ingest_waits_for_rabbitmq_at_start_and_becomes_ready() {
    let proxy = TcpProxy::start("127.0.0.1:5672").await;
    proxy.set_mode(ProxyMode::Cut);
    let broker = TestBroker::new();
    let settings = broker.settings_via(TestBroker::url_for(proxy.addr));
    let ingest = TestIngest::start_with(broker, settings).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let readyz = ingest.service.url("/readyz");
    let status = ingest.client.get(&readyz).send().await.unwrap().status();
    assert_eq!(status, 503, "not ready while RabbitMQ is unreachable");

    proxy.set_mode(ProxyMode::Open);
    ingest.wait_ready().await;
    let body = shared::testkit::fixture("omi/realtime_transcript.json");
    let response = ingest.post_omi_transcript(&omi_query("u1"), body).await;
    assert_eq!(response.status(), 202);
    assert!(
        ingest.broker.take_event().await.is_some(),
        "the event is queued"
    );
}
