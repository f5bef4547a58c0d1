//! Start-up: the worker uses its own database when it exists and only then falls back to the
//! `postgres` maintenance database to create it; it waits for RabbitMQ (as for Postgres,
//! `supervision.rs`) with backoff instead of exiting, turning ready once the broker answers;
//! and `worker migrate`, what a migration Job runs, waits for Postgres and then migrates.

mod harness;

use std::time::Duration;

use harness::{readiness, spawn_unready, test_settings, wait_ready};
use shared::testkit::{
    ProxyMode, TcpProxy, TestBroker, TestCa, TestDatabase, TlsPreamble, TlsProxy,
    postgres_server_addr, postgres_url_via,
};
use sqlx::Connection;

/// The database each Postgres session through `proxy` asked for, in order (from the startup
/// message: protocol version, then `key\0value\0` pairs).
fn databases_asked_for(proxy: &TlsProxy) -> Vec<String> {
    (proxy.first_messages().iter())
        .filter_map(|startup| {
            let pairs: Vec<&[u8]> = startup.get(8..)?.split(|byte| *byte == 0).collect();
            let at = pairs.iter().position(|key| *key == b"database")?;
            Some(String::from_utf8_lossy(pairs.get(at + 1)?).into_owned())
        })
        .collect()
}

/// A proxy in front of the local Postgres that records which database each session asks for,
/// and connect options for `database` through it.
async fn recorded_postgres(
    ca: &TestCa,
    database: &TestDatabase,
) -> (TlsProxy, sqlx::postgres::PgConnectOptions) {
    let proxy = TlsProxy::start(&postgres_server_addr(), ca, TlsPreamble::PostgresSslRequest).await;
    let url = postgres_url_via(proxy.addr, &database.name) + "?sslmode=verify-full";
    let options = worker::db::connect_options(&url, Some(&ca.ca_file())).unwrap();
    (proxy, options)
}

#[tokio::test]
async fn an_existing_database_is_used_without_touching_the_maintenance_database() {
    let (ca, database) = (TestCa::new(), TestDatabase::new());
    let admin = format!("{}/postgres", shared::testkit::postgres_server_url());
    let mut admin = sqlx::PgConnection::connect(&admin).await.unwrap();
    let create = format!("CREATE DATABASE \"{}\"", database.name);
    sqlx::query(&create).execute(&mut admin).await.unwrap();
    let (proxy, options) = recorded_postgres(&ca, &database).await;

    worker::db::migrate_with(&options).await.expect("migrate");
    let asked = databases_asked_for(&proxy);
    assert!(!asked.is_empty());
    assert!(asked.iter().all(|name| *name == database.name), "{asked:?}");
}

#[tokio::test]
async fn a_missing_database_is_created_through_the_maintenance_database() {
    let (ca, database) = (TestCa::new(), TestDatabase::new());
    let (proxy, options) = recorded_postgres(&ca, &database).await;

    worker::db::migrate_with(&options).await.expect("migrate");
    let asked = databases_asked_for(&proxy);
    assert_eq!(
        asked[..3],
        [&database.name, "postgres", &database.name],
        "{asked:?}"
    );
    // Once it exists, a second start goes straight to it.
    let before = asked.len();
    worker::db::migrate_with(&options)
        .await
        .expect("migrate again");
    let again = &databases_asked_for(&proxy)[before..];
    assert!(again.iter().all(|name| *name == database.name), "{again:?}");
}

#[tokio::test]
async fn the_worker_waits_for_rabbitmq_at_start_and_becomes_ready() {
    let (broker, database) = (TestBroker::new(), TestDatabase::new());
    let proxy = TcpProxy::start("127.0.0.1:5672").await;
    proxy.set_mode(ProxyMode::Cut);
    let mut settings = test_settings(&broker, &database);
    settings.broker = broker.settings_via(TestBroker::url_for(proxy.addr));
    let service = spawn_unready(settings).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, body) = readiness(&service).await;
    assert_eq!(status, 503, "not ready while RabbitMQ is unreachable");
    assert_eq!(
        (&body["broker"], &body["database"]),
        (&"down".into(), &"up".into())
    );

    proxy.set_mode(ProxyMode::Open);
    wait_ready(&service).await;
    broker
        .publish(&harness::envelope(
            shared::EventKind::OmiTranscript,
            "u1",
            "after-the-wait",
            shared::testkit::fixture("omi/thalamus_batch.json"),
        ))
        .await;
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    shared::testkit::wait_for_count(&pool, "SELECT count(*) FROM inbound_events", 1).await;
    service.stop().await;
}

#[tokio::test]
async fn worker_migrate_waits_for_postgres_then_migrates_and_exits() {
    let database = TestDatabase::new();
    let proxy = TcpProxy::start(&postgres_server_addr()).await;
    proxy.set_mode(ProxyMode::Cut);
    let url = postgres_url_via(proxy.addr, &database.name);
    let mut migrate = tokio::process::Command::new(env!("CARGO_BIN_EXE_worker"))
        .arg("migrate")
        .env("DATABASE_URL", url)
        .env("LOG_LEVEL", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("start worker migrate");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(migrate.try_wait().unwrap().is_none(), "it waits, not exits");

    proxy.set_mode(ProxyMode::Open);
    let status = tokio::time::timeout(Duration::from_secs(20), migrate.wait())
        .await
        .expect("it exits once Postgres answers")
        .unwrap();
    assert!(status.success(), "{status}");
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(applied > 0);
}
