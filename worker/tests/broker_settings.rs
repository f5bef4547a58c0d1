//! Broker settings that differ between processes cannot break publishing or consuming: the
//! queues are declared with the same arguments whatever `DELIVERY_LIMIT` says (the worker
//! counts failures itself, in Postgres; consumer timeout and length limits are policies,
//! `deploy/rabbitmq-policies.sh`), so two ingests and two workers started with different
//! values share one queue, and a poison event still takes the worker's own count of failures.

mod harness;

use harness::{OMI_KEY, envelope, spawn_unready, test_settings, wait_ready};
use ingest::settings::IngestSettings;
use shared::EventKind;
use shared::testkit::{Spawned, TestBroker, TestDatabase, eventually, fixture};
use sqlx::PgPool;

async fn ingest_with_limit(broker: &TestBroker, delivery_limit: u32) -> Spawned {
    let mut settings = IngestSettings::local(broker.settings.clone(), &[OMI_KEY]);
    settings.broker.delivery_limit = delivery_limit;
    let ingest = Spawned::start(|listener, stop| ingest::run(settings, listener, stop)).await;
    eventually(10, "ingest ready", || async {
        let response = reqwest::get(ingest.url("/readyz")).await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
    ingest
}

async fn worker_with_limit(
    broker: &TestBroker,
    database: &TestDatabase,
    delivery_limit: u32,
) -> Spawned {
    let mut settings = test_settings(broker, database);
    settings.broker.delivery_limit = delivery_limit;
    let worker = spawn_unready(settings).await;
    wait_ready(&worker).await;
    worker
}

async fn post_transcript(ingest: &Spawned, uid: &str) -> u16 {
    let url = ingest.url(&format!("/v1/omi/transcript?key={OMI_KEY}&uid={uid}"));
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(fixture("omi/realtime_transcript.json"))
        .send()
        .await
        .expect("request");
    response.status().as_u16()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

/// Consumers of the events queue, as the broker counts them.
async fn consumers(broker: &TestBroker) -> u32 {
    let connection = shared::broker::connect(&broker.settings.url, "test")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let queue = broker.topology().events_queue;
    let declared = channel
        .queue_declare(queue.as_str().into(), passive, Default::default())
        .await
        .unwrap();
    let _ = connection.close(200, "done".into()).await;
    declared.consumer_count()
}

#[tokio::test]
async fn processes_with_different_delivery_limits_share_the_queues() {
    let (broker, database) = (TestBroker::new(), TestDatabase::new());
    worker::db::migrate(&database.url).await.expect("migrate");
    let pool = PgPool::connect(&database.url).await.unwrap();
    let first_worker = worker_with_limit(&broker, &database, 2).await;
    let ingests = [
        ingest_with_limit(&broker, 1).await,
        ingest_with_limit(&broker, 9).await,
    ];
    let second_worker = worker_with_limit(&broker, &database, 7).await;
    assert_eq!(consumers(&broker).await, 2, "both workers consume");

    for (n, ingest) in ingests.iter().enumerate() {
        for user in 0..3 {
            assert_eq!(post_transcript(ingest, &format!("u{n}-{user}")).await, 202);
        }
    }
    let poison = envelope(
        EventKind::OmiTranscript,
        "u1",
        "poison",
        &b"{\"not\": 1}"[..],
    );
    broker.publish(&poison).await;

    eventually(
        20,
        "the events stored and the poison dead-lettered",
        || async {
            let stored = count(&pool, "SELECT count(*) FROM inbound_events").await;
            let dead = count(&pool, "SELECT count(*) FROM dead_letters").await;
            (stored == 6 && dead == 1).then_some(())
        },
    )
    .await;
    // Neither ingest's DELIVERY_LIMIT reached the queue: the poison failed at least as often
    // as the smaller worker limit before a worker rejected it.
    let failures: i32 =
        sqlx::query_scalar("SELECT attempts FROM processing_failures WHERE event_id = $1")
            .bind(poison.event_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!((2..=7).contains(&failures), "{failures} failures");
    for service in ingests.into_iter().chain([first_worker, second_worker]) {
        service.stop().await;
    }
}
