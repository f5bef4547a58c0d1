//! The worker test harness: a database and a queue prefix of the test's own, ingest and worker
//! started in-process on port 0, typed helpers to post events, and queries to read back what
//! was stored.

#![allow(dead_code)]

use ingest::settings::IngestSettings;
use shared::testkit::{Spawned, TestBroker, TestDatabase, eventually};
use sqlx::PgPool;
use std::time::Duration;
use worker::settings::WorkerSettings;

pub const OMI_KEY: &str = "omi-test-key";
pub const ADMIN_TOKEN: &str = "admin-test-token";

pub struct TestPipeline {
    pub broker: TestBroker,
    pub database: TestDatabase,
    pub ingest: Spawned,
    pub workers: Vec<Spawned>,
    pub pool: PgPool,
    pub client: reqwest::Client,
}

impl TestPipeline {
    /// Ingest and one worker on a fresh database and queue prefix, both ready.
    pub async fn start() -> Self {
        Self::start_with_workers(1).await
    }

    pub async fn start_with_workers(count: usize) -> Self {
        let broker = TestBroker::new();
        let database = TestDatabase::new();
        worker::db::migrate(&database.url).await.expect("migrate");
        let settings = IngestSettings::local(broker.settings.clone(), &[OMI_KEY]);
        let ingest = Spawned::start(|listener, stop| ingest::run(settings, listener, stop)).await;
        let pool = PgPool::connect(&database.url).await.expect("test pool");
        let mut pipeline = TestPipeline {
            broker,
            database,
            ingest,
            workers: Vec::new(),
            pool,
            client: reqwest::Client::new(),
        };
        pipeline.wait_ready(&pipeline.ingest.url("/readyz")).await;
        for _ in 0..count {
            pipeline.add_worker().await;
        }
        pipeline
    }

    /// Settings for a worker of this pipeline: the admin token, and audio timing shrunk so
    /// tests see streams start and stop within a second.
    pub fn worker_settings(&self) -> WorkerSettings {
        let mut settings = WorkerSettings::local(self.broker.settings.clone(), &self.database.url);
        settings.admin_token = Some(ADMIN_TOKEN.into());
        settings.audio.listening_idle = Duration::from_millis(1500);
        settings.audio.level_interval = Duration::from_millis(100);
        settings.audio.reorder_delay = Duration::from_millis(1000);
        settings.audio.sweep_interval = Duration::from_millis(50);
        settings
    }

    /// Starts one more worker in-process and waits until it consumes.
    pub async fn add_worker(&mut self) {
        let settings = self.worker_settings();
        let worker = Spawned::start(|listener, stop| worker::run(settings, listener, stop)).await;
        self.wait_ready(&worker.url("/readyz")).await;
        self.workers.push(worker);
    }

    pub async fn wait_ready(&self, url: &str) {
        eventually(15, url, || async {
            let response = self.client.get(url).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await
    }

    /// `POST /v1/omi/transcript?key=..&uid=<uid>`, with an `Idempotency-Key` when given.
    pub async fn post_omi_transcript(
        &self,
        uid: &str,
        body: Vec<u8>,
        idempotency_key: Option<&str>,
    ) -> reqwest::Response {
        let url = self
            .ingest
            .url(&format!("/v1/omi/transcript?key={OMI_KEY}&uid={uid}"));
        let mut request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), 202, "ingest accepts the transcript");
        response
    }

    /// `GET <path>` on the first worker's management API, with the admin token.
    pub async fn admin_get(&self, path: &str) -> serde_json::Value {
        let response = self
            .client
            .get(self.workers[0].url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("JSON")
    }

    /// The outbox's event types in the order they were written.
    pub async fn outbox_types(&self) -> Vec<String> {
        sqlx::query_scalar("SELECT event_type FROM outbox ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .expect("outbox")
    }

    /// A count from `sql` (a `SELECT count(*) ...`).
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .expect(sql)
    }

    /// Waits until `sql` counts `expected`, then returns.
    pub async fn wait_for_count(&self, sql: &str, expected: i64) {
        eventually(15, sql, || async {
            (self.count(sql).await == expected).then_some(())
        })
        .await
    }
}
