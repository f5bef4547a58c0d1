//! The worker test harness: a database and a queue prefix of the test's own, ingest and worker
//! started in-process on port 0, typed helpers to post events, and queries to read back what
//! was stored.

#![allow(dead_code)]

use ingest::settings::IngestSettings;
use shared::testkit::{Spawned, TestBroker, TestDatabase, eventually};
use sqlx::PgPool;
use worker::settings::WorkerSettings;

pub const OMI_KEY: &str = "omi-test-key";

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

    /// Settings for a worker of this pipeline.
    pub fn worker_settings(&self) -> WorkerSettings {
        WorkerSettings::local(self.broker.settings.clone(), &self.database.url)
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
