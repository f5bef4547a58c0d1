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
pub const ASLEEP_KEY: &str = "asleep-test-key";
pub const REFLECTOR_SECRET: &str = "reflector-test-secret";

pub struct TestPipeline {
    pub broker: TestBroker,
    pub database: TestDatabase,
    pub ingest: Spawned,
    pub workers: Vec<Spawned>,
    pub pool: PgPool,
    pub client: reqwest::Client,
    /// Adjusts the settings of every worker this pipeline starts.
    tune: fn(&mut WorkerSettings),
}

impl TestPipeline {
    /// Ingest and one worker on a fresh database and queue prefix, both ready.
    pub async fn start() -> Self {
        Self::start_with_workers(1).await
    }

    pub async fn start_with_workers(count: usize) -> Self {
        Self::start_tuned(count, |_| {}).await
    }

    /// Like [`Self::start_with_workers`], with `tune` applied to every worker's settings.
    pub async fn start_tuned(count: usize, tune: fn(&mut WorkerSettings)) -> Self {
        let broker = TestBroker::new();
        let database = TestDatabase::new();
        worker::db::migrate(&database.url).await.expect("migrate");
        let settings = IngestSettings::local(broker.settings.clone(), &[OMI_KEY])
            .with_partner_credentials(&[ASLEEP_KEY], &[REFLECTOR_SECRET]);
        let ingest = Spawned::start(|listener, stop| ingest::run(settings, listener, stop)).await;
        let pool = PgPool::connect(&database.url).await.expect("test pool");
        let mut pipeline = TestPipeline {
            broker,
            database,
            ingest,
            workers: Vec::new(),
            pool,
            client: reqwest::Client::new(),
            tune,
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
        (self.tune)(&mut settings);
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

    /// `POST <path>` on the first worker's management API, with the admin token.
    pub async fn admin_post(&self, path: &str) -> reqwest::Response {
        self.client
            .post(self.workers[0].url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request")
    }

    /// The outbox's event types in the order they were written.
    pub async fn outbox_types(&self) -> Vec<String> {
        sqlx::query_scalar("SELECT event_type FROM outbox ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .expect("outbox")
    }

    /// `POST <path>` to ingest with `headers` and `body`; ingest must answer 202.
    pub async fn post(&self, path: &str, headers: &[(&str, String)], body: Vec<u8>) {
        let mut request = self.client.post(self.ingest.url(path)).body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        assert_eq!(
            status,
            202,
            "POST {path}: {}",
            response.text().await.unwrap_or_default()
        );
    }

    /// Posts a fixture to an Omi route as user `uid`.
    pub async fn post_omi(&self, route: &str, uid: &str, fixture: &str) {
        let path = format!("{route}?key={OMI_KEY}&uid={uid}");
        let json = vec![("content-type", "application/json".to_owned())];
        self.post(&path, &json, shared::testkit::fixture(fixture))
            .await
    }

    /// Posts an Asleep fixture for user `uid`.
    pub async fn post_asleep(&self, uid: &str, fixture: &str) {
        let headers = vec![
            ("x-api-key", ASLEEP_KEY.to_owned()),
            ("x-user-id", uid.to_owned()),
        ];
        self.post("/v1/asleep", &headers, shared::testkit::fixture(fixture))
            .await
    }

    /// Posts a Reflector body signed now with [`REFLECTOR_SECRET`].
    pub async fn post_reflector(&self, body: Vec<u8>) {
        let now = chrono::Utc::now().timestamp();
        let signature = shared::signature::reflector_header(&[REFLECTOR_SECRET], now, &body);
        let headers = vec![("x-webhook-signature", signature)];
        self.post("/v1/reflector", &headers, body).await
    }

    /// The data of every outbox event of `event_type`, oldest first.
    pub async fn outbox_data(&self, event_type: &str) -> Vec<serde_json::Value> {
        sqlx::query_scalar("SELECT data FROM outbox WHERE event_type = $1 ORDER BY id")
            .bind(event_type)
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
