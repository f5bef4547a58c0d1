//! The worker's background tasks are supervised: a task that dies is restarted and shown in
//! `/readyz` and the metrics meanwhile. The worker waits for Postgres at start, and on
//! shutdown hands back what it holds within `SHUTDOWN_TIMEOUT_MS` even while Postgres is down.

mod harness;

use std::time::{Duration, Instant};

use harness::{
    TestWorker, database_behind_proxy, envelope, readiness, spawn_unready, test_settings,
    wait_ready,
};
use shared::EventKind;
use shared::testkit::{ProxyMode, TestBroker, eventually, fixture};
use worker::supervisor::Task;

fn transcript(key: &str) -> shared::Envelope {
    envelope(
        EventKind::OmiTranscript,
        "u1",
        key,
        fixture("omi/thalamus_batch.json"),
    )
}

/// Waits until `expected` events are stored.
async fn stored(pool: &sqlx::PgPool, expected: i64) {
    eventually(15, "the events stored", || async {
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM inbound_events")
            .fetch_one(pool)
            .await
            .unwrap();
        (stored == expected).then_some(())
    })
    .await
}

async fn metrics_text(worker: &TestWorker) -> String {
    shared::testkit::scrape(&worker.url("/metrics")).await
}

/// While a task keeps panicking, `/readyz` is 503 and names it; once it no longer does, the
/// supervisor's restart brings it back and the worker is ready again.
async fn a_panicking_task_is_restarted_and_shown(task: Task) -> TestWorker {
    let worker = TestWorker::start().await;
    worker.settings.faults.arm(task, true);
    let body = eventually(10, "readyz to name the task", || async {
        let (status, body) = readiness(worker.service.as_ref().unwrap()).await;
        let named = body["tasks_down"]
            .as_array()
            .is_some_and(|down| down.iter().any(|name| name == task.name()));
        (status == 503 && named).then_some(body)
    })
    .await;
    assert_eq!(body["status"], "not_ready");
    let restarts = format!("worker_task_restarts_total{{task=\"{}\"}}", task.name());
    assert!(metrics_text(&worker).await.contains(&restarts));
    assert!(
        metrics_text(&worker)
            .await
            .contains("# HELP worker_task_up")
    );

    // The gauge's value is not checked: the recorder is per process, shared by every worker
    // this test binary runs, and they set it too.
    let up = format!("worker_task_up{{task=\"{}\"}}", task.name());
    assert!(metrics_text(&worker).await.contains(&up));

    worker.settings.faults.arm(task, false);
    wait_ready(worker.service.as_ref().unwrap()).await;
    worker
}

#[tokio::test]
async fn a_panicking_sweeper_is_restarted_and_readyz_says_so_meanwhile() {
    a_panicking_task_is_restarted_and_shown(Task::Sweeper).await;
}

#[tokio::test]
async fn a_panicking_retention_loop_is_restarted_and_readyz_says_so_meanwhile() {
    a_panicking_task_is_restarted_and_shown(Task::Retention).await;
}

#[tokio::test]
async fn a_panicking_consumer_is_restarted_and_consumes_again() {
    let worker = a_panicking_task_is_restarted_and_shown(Task::Consumer).await;
    worker.broker.publish(&transcript("after-restart")).await;
    stored(&worker.pool, 1).await;
}

#[tokio::test]
async fn the_worker_waits_for_postgres_at_start_and_becomes_ready() {
    let broker = TestBroker::new();
    let (database, proxy, url) = database_behind_proxy().await;
    let mut settings = test_settings(&broker, &database);
    settings.database_url = url;
    proxy.set_mode(ProxyMode::Cut);
    let service = spawn_unready(settings).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, body) = readiness(&service).await;
    assert_eq!(status, 503, "not ready while Postgres is unreachable");
    assert_eq!(body["database"], "down");

    proxy.set_mode(ProxyMode::Open);
    wait_ready(&service).await;
    service.stop().await;
}

/// With the broker and Postgres both unreachable, `/readyz` says which is down in fixed words
/// and shows no error text from either (it is logged instead).
#[tokio::test]
async fn readyz_names_what_is_down_without_any_error_text() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let broker = TestBroker::new();
    let (database, proxy, url) = database_behind_proxy().await;
    let mut settings = test_settings(&broker, &database);
    settings.broker = broker.settings_via(TestBroker::url_for(closed_port));
    settings.database_url = url;
    proxy.set_mode(ProxyMode::Cut);
    let service = spawn_unready(settings).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (status, body) = readiness(&service).await;
    assert_eq!(status, 503);
    let expected = serde_json::json!({
        "status": "not_ready",
        "stopping": false,
        "broker": "down",
        "database": "down",
        "tasks_down": body["tasks_down"],
    });
    assert_eq!(body, expected);
    let text = body.to_string().to_lowercase();
    for leak in [
        "error",
        "refused",
        "connect",
        "timed out",
        "127.0.0.1",
        "postgres",
    ] {
        assert!(!text.contains(leak), "{leak:?} in {text}");
    }
    service.stop().await;
}

/// Postgres goes away while the worker holds events; the shutdown still completes within the
/// bound, and the events come back and are stored once when Postgres is back.
#[tokio::test]
async fn shutdown_with_postgres_down_is_bounded_and_loses_nothing() {
    let broker = TestBroker::new();
    let (database, proxy, url) = database_behind_proxy().await;
    let mut settings = test_settings(&broker, &database);
    settings.database_url = url;
    settings.shutdown_timeout = Duration::from_secs(2);
    let service = spawn_unready(settings.clone()).await;
    wait_ready(&service).await;
    proxy.set_mode(ProxyMode::Cut);
    let events: Vec<_> = (0..3).map(|n| transcript(&format!("held-{n}"))).collect();
    broker.publish_all(&events).await;
    eventually(10, "the worker to take the events", || async {
        (broker.events_ready().await == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(10), service.stop()).await;
    assert!(
        stopped.is_ok(),
        "shutdown did not complete with Postgres down"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    eventually(10, "the held events back on the queue", || async {
        (broker.events_ready().await == 3).then_some(())
    })
    .await;

    proxy.set_mode(ProxyMode::Open);
    let service = spawn_unready(settings).await;
    wait_ready(&service).await;
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    stored(&pool, 3).await;
    service.stop().await;
    let failures: i64 = sqlx::query_scalar("SELECT count(*) FROM processing_failures")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(failures, 0, "an outage is not a failure of the events");
    pool.close().await;
}

fn quick_sessions(settings: &mut worker::settings::WorkerSettings) {
    settings.session_idle = Duration::from_millis(300);
}

/// The sweeper's first step (folding audio) fails on every tick, here because its table is
/// gone; the steps after it still run, so a quiet transcript session still completes.
#[tokio::test]
async fn a_failing_sweep_step_does_not_skip_the_others() {
    let mut pipeline = harness::TestPipeline::start_tuned(1, quick_sessions).await;
    sqlx::query("DROP TABLE audio_chunks CASCADE")
        .execute(&pipeline.pool)
        .await
        .expect("drop audio_chunks");
    pipeline
        .post_omi("/v1/omi/transcript", "u1", "omi/realtime_transcript.json")
        .await;

    pipeline
        .wait_for_count(
            "SELECT count(*) FROM transcript_sessions WHERE completed_at IS NOT NULL",
            1,
        )
        .await;
    pipeline.drain_and_stop_workers().await;
}
