//! Broker settings that differ between processes cannot break publishing or consuming: the
//! queues are declared with the same arguments whatever `DELIVERY_LIMIT` says (the worker
//! counts failures itself, in Postgres; consumer timeout and length limits are policies,
//! `deploy/rabbitmq-policies.sh`), so two ingests and two workers started with different
//! values share one queue, and a poison event still takes the worker's own count of failures.
//! A length limit set by the policy script reaches a queue declared before it, and goes away
//! with it, without any redeclaration.

mod harness;

use harness::ingest_server::post_transcript;
use harness::{envelope, spawn_unready, test_settings, wait_ready};
use shared::EventKind;
use shared::testkit::{Spawned, TestBroker, TestDatabase, eventually};
use sqlx::PgPool;

async fn ingest_with_limit(broker: &TestBroker, delivery_limit: u32) -> Spawned {
    let mut settings = broker.settings.clone();
    settings.delivery_limit = delivery_limit;
    let ingest = harness::ingest_server::spawn(settings).await;
    harness::ingest_server::wait_ready(&ingest).await;
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

/// Runs `deploy/rabbitmq-policies.sh` for the broker's prefix with `settings` (the local
/// `rabbitmqctl`); the policies match only this test's queues.
fn policies(broker: &TestBroker, command: &str, settings: &[(&str, &str)]) {
    let status = policy_script(broker, command, settings);
    assert!(status.success(), "rabbitmq-policies.sh {command}: {status}");
}

fn policy_script(
    broker: &TestBroker,
    command: &str,
    settings: &[(&str, &str)],
) -> std::process::ExitStatus {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/rabbitmq-policies.sh"
    );
    std::process::Command::new("bash")
        .args([script, command])
        .env("QUEUE_PREFIX", &broker.settings.prefix)
        .envs(settings.iter().copied())
        .status()
        .expect("run the policy script")
}

/// Clears the test's policies when dropped, also when the test fails.
struct Policies<'a>(&'a TestBroker);

impl Drop for Policies<'_> {
    fn drop(&mut self) {
        policy_script(self.0, "clear", &[]);
    }
}

#[tokio::test]
async fn a_queue_length_limit_set_by_policy_reaches_the_declared_queue_and_ingest_answers_503() {
    let broker = TestBroker::new();
    let ingest = ingest_with_limit(&broker, 5).await;
    let settle = std::time::Duration::from_secs(1);

    policies(&broker, "apply", &[("EVENTS_MAX_LENGTH", "2")]);
    let _clear = Policies(&broker);
    tokio::time::sleep(settle).await;
    let mut answers = Vec::new();
    for n in 0..4 {
        answers.push(post_transcript(&ingest, &format!("u{n}")).await);
    }
    // A quorum queue checks the limit before it takes a message, so it may hold one past it.
    assert_eq!(answers[..2], [202, 202], "{answers:?}");
    assert!(
        answers[2..].contains(&503),
        "the broker refuses beyond: {answers:?}"
    );
    assert!(broker.events_ready().await <= 3);

    // Once the workers drain the queue, the broker takes publishes again.
    while broker.take_event().await.is_some() {}
    eventually(10, "publishes accepted again", || async {
        (post_transcript(&ingest, "u-drained").await == 202).then_some(())
    })
    .await;
    // Cleared, the queue is unbounded again: more than the old limit is taken.
    policies(&broker, "clear", &[]);
    tokio::time::sleep(settle).await;
    for n in 0..3 {
        assert_eq!(post_transcript(&ingest, &format!("v{n}")).await, 202);
    }
    ingest.stop().await;
}
