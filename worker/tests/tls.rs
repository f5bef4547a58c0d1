//! TLS to Postgres, RabbitMQ and outbound receivers: `sslmode=require` against the local
//! Postgres (which has TLS on), `sslmode=verify-full` and `amqps://` through TLS-terminating
//! proxies the test owns that present a certificate of a CA made at test time, and the CA file
//! settings that make a private CA trusted. A wrong CA fails, and says why.

mod harness;

use std::time::Duration;

use harness::ingest_server::post_transcript;
use harness::{readiness, spawn_unready, test_settings, wait_ready};
use shared::config::BrokerSettings;
use shared::testkit::{
    TestBroker, TestCa, TestDatabase, TlsPreamble, TlsProxy, eventually, postgres_server_addr,
    postgres_url_via, wait_for_count,
};
use sqlx::PgPool;
use worker::outbound::guard::TargetGuard;
use worker::outbound::send::{Message, Sender, Target};

/// A pool on the test's database that never uses TLS, to tell the worker's sessions apart.
async fn plaintext_pool(database: &TestDatabase) -> PgPool {
    PgPool::connect(&format!("{}?sslmode=disable", database.url))
        .await
        .expect("plaintext pool")
}

/// The worker's own sessions on the test's database: how many use TLS, how many in all.
async fn worker_sessions(pool: &PgPool, database: &TestDatabase) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) \
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.datname = $1 AND a.pid <> pg_backend_pid()",
    )
    .bind(&database.name)
    .fetch_one(pool)
    .await
    .expect("sessions")
}

#[tokio::test]
async fn sslmode_require_reaches_the_local_postgres_over_tls() {
    let (broker, database) = (TestBroker::new(), TestDatabase::new());
    let mut settings = test_settings(&broker, &database);
    settings.database_url = format!("{}?sslmode=require", database.url);
    let service = spawn_unready(settings).await;
    wait_ready(&service).await;

    let pool = plaintext_pool(&database).await;
    let (tls, all) = worker_sessions(&pool, &database).await;
    assert!(all > 0, "the worker holds sessions on its database");
    assert_eq!(tls, all, "every session of the worker uses TLS");
    service.stop().await;
}

/// `verify-full` against a proxy that presents a certificate of a CA of the test's own,
/// for `127.0.0.1`, in front of the local Postgres.
async fn postgres_behind_tls(ca: &TestCa) -> (TestDatabase, TlsProxy, String) {
    let database = TestDatabase::new();
    let proxy = TlsProxy::start(&postgres_server_addr(), ca, TlsPreamble::PostgresSslRequest).await;
    let url = postgres_url_via(proxy.addr, &database.name) + "?sslmode=verify-full";
    (database, proxy, url)
}

#[tokio::test]
async fn verify_full_trusts_the_database_ca_file_or_sslrootcert() {
    let ca = TestCa::new();
    let (database, proxy, url) = postgres_behind_tls(&ca).await;

    let options = worker::db::connect_options(&url, Some(&ca.ca_file())).unwrap();
    worker::db::migrate_with(&options)
        .await
        .expect("migrate over verify-full");
    let pool = plaintext_pool(&database).await;
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(tables > 0, "the migrations ran");

    let in_url = format!("{url}&sslrootcert={}", ca.pem_path.display());
    let options = worker::db::connect_options(&in_url, None).unwrap();
    worker::db::migrate_with(&options)
        .await
        .expect("sslrootcert in the URL");
    assert!(
        !proxy.first_messages().is_empty(),
        "the sessions went through the proxy"
    );
    assert_eq!(proxy.failed_handshakes(), 0);
}

#[tokio::test]
async fn verify_full_refuses_a_server_of_another_ca_and_says_why() {
    let (ca, other) = (TestCa::new(), TestCa::new());
    let (_database, proxy, url) = postgres_behind_tls(&ca).await;

    for ca_file in [Some(other.ca_file()), None] {
        let options = worker::db::connect_options(&url, ca_file.as_ref()).unwrap();
        let error = worker::db::migrate_with(&options).await.unwrap_err();
        let text = format!("{error:#}");
        assert!(text.contains("certificate"), "{text}");
    }
    assert!(
        proxy.first_messages().is_empty(),
        "nothing passed the handshake"
    );
    eventually(5, "the refused handshakes", || async {
        (proxy.failed_handshakes() == 2).then_some(())
    })
    .await;
}

/// `amqps://` to a TLS proxy of `ca` in front of the local RabbitMQ, trusting `trusted`.
async fn broker_behind_tls(
    broker: &TestBroker,
    ca: &TestCa,
    trusted: &TestCa,
) -> (TlsProxy, BrokerSettings) {
    let proxy = TlsProxy::start("127.0.0.1:5672", ca, TlsPreamble::None).await;
    let mut settings = broker.settings_via(format!("amqps://guest:guest@{}/%2f", proxy.addr));
    settings.ca_file = Some(trusted.ca_file());
    (proxy, settings)
}

#[tokio::test]
async fn ingest_publishes_and_the_worker_consumes_over_amqps_with_the_ca_file() {
    let ca = TestCa::new();
    let (broker, database) = (TestBroker::new(), TestDatabase::new());
    let (proxy, settings) = broker_behind_tls(&broker, &ca, &ca).await;
    let ingest = harness::ingest_server::spawn(settings.clone()).await;
    let mut worker_settings = test_settings(&broker, &database);
    worker_settings.broker = settings;
    let worker = spawn_unready(worker_settings).await;
    wait_ready(&worker).await;
    harness::ingest_server::wait_ready(&ingest).await;

    assert_eq!(post_transcript(&ingest, "tls-user").await, 202);
    let pool = plaintext_pool(&database).await;
    wait_for_count(&pool, "SELECT count(*) FROM inbound_events", 1).await;
    // Ingest's and the worker's connections both went through the proxy, over TLS.
    let amqp_headers = (proxy.first_messages().iter())
        .filter(|first| first.starts_with(b"AMQP"))
        .count();
    assert!(
        amqp_headers >= 2,
        "{amqp_headers} AMQP sessions through TLS"
    );
    ingest.stop().await;
    worker.stop().await;
}

#[tokio::test]
async fn amqps_with_a_wrong_ca_fails_clearly_and_ingest_never_accepts() {
    let (ca, other) = (TestCa::new(), TestCa::new());
    let broker = TestBroker::new();
    let (proxy, settings) = broker_behind_tls(&broker, &ca, &other).await;

    let error = shared::broker::connect_to(&settings, "tls-test")
        .await
        .expect_err("a server of another CA is refused");
    let text = error.to_string();
    assert!(text.contains("certificate"), "{text}");

    let ingest = harness::ingest_server::spawn(settings).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = reqwest::get(ingest.url("/readyz")).await.unwrap().status();
    assert_eq!(status, 503, "not ready with a broker it cannot trust");
    assert_eq!(post_transcript(&ingest, "tls-user").await, 503);
    assert!(proxy.failed_handshakes() >= 2, "ingest kept trying");
    assert!(
        proxy.first_messages().is_empty(),
        "no AMQP passed the handshake"
    );
    ingest.stop().await;
}

#[tokio::test]
async fn the_worker_waits_while_the_broker_certificate_is_refused() {
    let (ca, other) = (TestCa::new(), TestCa::new());
    let (broker, database) = (TestBroker::new(), TestDatabase::new());
    let (_proxy, settings) = broker_behind_tls(&broker, &ca, &other).await;
    let mut worker_settings = test_settings(&broker, &database);
    worker_settings.broker = settings;
    let worker = spawn_unready(worker_settings).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, body) = readiness(&worker).await;
    assert_eq!((status, &body["broker"]), (503, &"down".into()));
    worker.stop().await;
}

/// An HTTPS receiver behind a CA of the test's own.
async fn https_receiver(ca: &TestCa) -> (harness::Receiver, TlsProxy) {
    let receiver = harness::Receiver::ok().await;
    let proxy = TlsProxy::start(&receiver.addr.to_string(), ca, TlsPreamble::None).await;
    (receiver, proxy)
}

async fn attempt(extra_roots: Option<&TestCa>, url: String) -> worker::outbound::send::Report {
    let (broker, database) = (TestBroker::new(), TestDatabase::new());
    let mut settings = test_settings(&broker, &database).delivery;
    settings.extra_roots = extra_roots.map(TestCa::ca_file);
    let guard = TargetGuard::new(settings.allowed_target_cidrs.clone());
    let sender = Sender::new(guard, &settings).expect("sender");
    let target = Target {
        url,
        secrets: vec!["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()],
        headers: serde_json::json!({}),
        timeout: Duration::from_secs(5),
    };
    let message = Message {
        id: uuid::Uuid::now_v7(),
        event_type: "test".into(),
        body: b"{}".to_vec(),
        retry: 0,
    };
    sender.send(&target, &message).await
}

#[tokio::test]
async fn outbound_https_trusts_the_outbound_ca_file() {
    let ca = TestCa::new();
    let (mut receiver, proxy) = https_receiver(&ca).await;
    let url = format!("https://127.0.0.1:{}/hook", proxy.addr.port());

    let report = attempt(Some(&ca), url.clone()).await;
    assert_eq!(report.status, Some(200), "{:?}", report.error);
    receiver.next().await;

    let report = attempt(None, url).await;
    assert_eq!(report.status, None);
    let error = report.error.expect("an error");
    assert!(error.to_lowercase().contains("certificate"), "{error}");
}
