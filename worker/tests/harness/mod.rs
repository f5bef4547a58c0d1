//! The worker test harness. Every test gets a database and a queue prefix of its own, services on
//! port 0, and tiny retry and audio timings:
//! - [`TestWorker`]: a worker alone, with typed helpers for the management API and the outbox,
//!   and [`Receiver`], an in-process server that answers outbound webhooks per a script and
//!   hands every request to the test;
//! - [`TestPipeline`]: ingest and any number of workers, with helpers that post as each sender
//!   does and read back what was stored;
//! - [`worker_binary`]: the real `worker` binary as a child process, stopped with SIGTERM.

#![allow(dead_code)]

pub mod browser;
pub mod ingest_server;
pub mod sse;
pub mod worker_binary;

use worker_binary::{LoggedWorker, spawn_worker_binary};

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use ingest::settings::IngestSettings;
use serde_json::{Value, json};
use shared::testkit::{Spawned, TcpProxy, TestBroker, TestDatabase, eventually, sample, scrape};
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;
use worker::outbound::outbox::{self, EventType};
use worker::settings::WorkerSettings;

pub const ADMIN_TOKEN: &str = "admin-test-token";

/// A worker on a database and queue prefix of the test's own.
pub struct TestWorker {
    pub settings: WorkerSettings,
    pub service: Option<Spawned>,
    pub pool: PgPool,
    pub client: reqwest::Client,
    // Dropped last: the database and queues go away with the test.
    pub broker: TestBroker,
    pub database: TestDatabase,
}

/// The test settings: admin token, loopback allowed, the whole schedule in about 3 seconds
/// (retries 50 ms doubling to 400 ms, window 3 s), a quick circuit breaker.
pub fn test_settings(broker: &TestBroker, database: &TestDatabase) -> WorkerSettings {
    let mut settings = WorkerSettings::local(broker.settings.clone(), &database.url);
    settings.admin_tokens = vec![ADMIN_TOKEN.to_owned()];
    let delivery = &mut settings.delivery;
    delivery.allowed_target_cidrs = vec!["127.0.0.0/8".parse().unwrap()];
    delivery.retry_base = Duration::from_millis(50);
    delivery.retry_max_delay = Duration::from_millis(400);
    delivery.window = Duration::from_secs(3);
    delivery.poll_interval = Duration::from_millis(200);
    delivery.circuit_cooldown = Duration::from_millis(200);
    settings
}

impl TestWorker {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with the test settings changed by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut WorkerSettings)) -> Self {
        let (broker, database) = (TestBroker::new(), TestDatabase::new());
        let mut settings = test_settings(&broker, &database);
        adjust(&mut settings);
        let service = spawn(settings.clone()).await;
        let pool = PgPool::connect(&database.url).await.expect("test pool");
        TestWorker {
            settings,
            service: Some(service),
            pool,
            client: reqwest::Client::new(),
            broker,
            database,
        }
    }

    /// Another worker on the same database and queues (a competing consumer).
    pub async fn another(&self) -> Spawned {
        spawn(self.settings.clone()).await
    }

    /// Stops the worker gracefully.
    pub async fn stop(&mut self) {
        if let Some(service) = self.service.take() {
            service.stop().await;
        }
    }

    /// Starts the worker again with the same settings.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.service = Some(spawn(self.settings.clone()).await);
    }

    pub fn url(&self, path: &str) -> String {
        self.service.as_ref().expect("worker running").url(path)
    }

    /// A management API request with the admin token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(ADMIN_TOKEN)
    }

    /// The value of one series in this worker's `/metrics`, named with its labels as exported
    /// (`outbound_ssrf_refusals_total{reason="private"}`); `None` when it is not there.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        sample(&scrape(&self.url("/metrics")).await, series)
    }

    /// `POST /v1/endpoints`; panics unless 201. Returns the endpoint's JSON.
    pub async fn create_endpoint(&self, body: Value) -> Value {
        create_endpoint(self.admin(reqwest::Method::POST, "/v1/endpoints"), body).await
    }

    /// A stopped worker's database with `count` endpoints for every event type at a port nobody
    /// listens on; returns their ids in id order. No delivery loop runs.
    pub async fn stopped_with_endpoints(count: usize) -> (Self, Vec<Uuid>) {
        let mut worker = Self::start().await;
        for n in 0..count {
            let url = format!("http://127.0.0.1:9/hook-{n}");
            worker
                .create_endpoint(json!({"url": url, "event_types": ["*"]}))
                .await;
        }
        worker.stop().await;
        let endpoints = sqlx::query_scalar("SELECT id FROM endpoints ORDER BY id")
            .fetch_all(&worker.pool)
            .await
            .expect("endpoint ids");
        (worker, endpoints)
    }

    /// An endpoint for every event type at `receiver`.
    pub async fn endpoint_for(&self, receiver: &Receiver) -> Value {
        self.create_endpoint(json!({"url": receiver.url(), "event_types": ["*"]}))
            .await
    }

    /// `GET <path>` with the token; the JSON answer.
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self
            .admin(reqwest::Method::GET, path)
            .send()
            .await
            .expect("request");
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.expect("JSON")
    }

    /// `POST <path>` with the token; the status and the JSON answer (null when there is none).
    pub async fn post_json(&self, path: &str) -> (u16, Value) {
        let response = self
            .admin(reqwest::Method::POST, path)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Writes an event into the outbox the way a domain handler does.
    pub async fn emit(&self, event_type: EventType, data: Value) -> Uuid {
        let mut tx = self.pool.begin().await.expect("begin");
        let id = outbox::emit(&mut tx, event_type, Some("uid-1"), data)
            .await
            .expect("emit");
        tx.commit().await.expect("commit");
        // A writer outside the worker wakes the delivery loops itself.
        sqlx::query("SELECT pg_notify('outbound', '')")
            .execute(&self.pool)
            .await
            .expect("notify");
        id
    }

    /// The delivery of `event` to `endpoint`, with its attempts, once it exists.
    pub async fn delivery(&self, event: Uuid, endpoint: &Value) -> Value {
        let endpoint_id = endpoint["id"].as_str().expect("endpoint id");
        let id: Uuid = eventually(10, "the delivery row", || async {
            sqlx::query_scalar(
                "SELECT id FROM deliveries WHERE event_id = $1 AND endpoint_id = $2::uuid",
            )
            .bind(event)
            .bind(endpoint_id)
            .fetch_optional(&self.pool)
            .await
            .expect("query")
        })
        .await;
        self.get_json(&format!("/v1/deliveries/{id}")).await
    }

    /// Waits (generously) until the delivery of `event` to `endpoint` has `status`.
    pub async fn delivery_with_status(&self, event: Uuid, endpoint: &Value, status: &str) -> Value {
        let first = self.delivery(event, endpoint).await;
        let path = format!("/v1/deliveries/{}", first["id"].as_str().unwrap());
        eventually(20, &format!("delivery {status}"), || async {
            let delivery = self.get_json(&path).await;
            (delivery["status"] == status).then_some(delivery)
        })
        .await
    }
}

/// Sends `request` (a `POST /v1/endpoints` with the token) with `body`; panics unless 201.
/// Returns the endpoint's JSON.
async fn create_endpoint(request: reqwest::RequestBuilder, body: Value) -> Value {
    let response = request.json(&body).send().await.expect("request");
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    response.json().await.expect("endpoint JSON")
}

async fn spawn(settings: WorkerSettings) -> Spawned {
    let service = spawn_unready(settings).await;
    wait_ready(&service).await;
    service
}

/// Starts a worker without waiting for it to be ready.
pub async fn spawn_unready(settings: WorkerSettings) -> Spawned {
    Spawned::start(|listener, shutdown| worker::run(settings, listener, shutdown)).await
}

/// Waits (generously) until the worker's `/readyz` answers 200.
pub async fn wait_ready(service: &Spawned) {
    let client = reqwest::Client::new();
    eventually(20, "worker ready", || async {
        let response = client.get(service.url("/readyz")).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
}

/// `GET /readyz`: its status and JSON body.
pub async fn readiness(service: &Spawned) -> (u16, Value) {
    let response = reqwest::get(service.url("/readyz")).await.expect("readyz");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A migrated database of the test's own, and a proxy the test owns in front of Postgres;
/// the URL reaches the database through the proxy.
pub async fn database_behind_proxy() -> (TestDatabase, TcpProxy, String) {
    let database = TestDatabase::new();
    worker::db::migrate(&database.url).await.expect("migrate");
    let server = shared::testkit::postgres_server_url();
    let (scheme_and_user, host_port) = server.rsplit_once('@').expect("user@host:port");
    let proxy = TcpProxy::start(host_port).await;
    let url = format!("{scheme_and_user}@{}/{}", proxy.addr, database.name);
    (database, proxy, url)
}

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub delay: Duration,
    pub retry_after: Option<String>,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            delay: Duration::ZERO,
            retry_after: None,
        }
    }

    /// Adds `Retry-After: <value>`.
    pub fn retry_after(mut self, value: &str) -> Self {
        self.retry_after = Some(value.to_owned());
        self
    }

    /// Answers only after `delay`.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// An axum server on 127.0.0.1:0 answering per a script (then `otherwise`).
pub struct Receiver {
    pub addr: std::net::SocketAddr,
    requests: mpsc::UnboundedReceiver<Received>,
    _server: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Script {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    otherwise: Reply,
    seen: mpsc::UnboundedSender<Received>,
}

impl Receiver {
    /// Answers 200 to everything.
    pub async fn ok() -> Self {
        Self::scripted(vec![], Reply::status(200)).await
    }

    /// Answers with `replies` in order, then `otherwise`.
    pub async fn scripted(replies: Vec<Reply>, otherwise: Reply) -> Self {
        let (seen, requests) = mpsc::unbounded_channel();
        let script = Script {
            replies: Arc::new(Mutex::new(replies.into())),
            otherwise,
            seen,
        };
        let app = axum::Router::new().fallback(answer).with_state(script);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            addr,
            requests,
            _server: server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The next request, waiting generously.
    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(20), self.requests.recv())
            .await
            .expect("timed out waiting for a webhook")
            .expect("receiver closed")
    }

    /// Every request that arrives in the next `period` (however busy the receiver is).
    pub async fn during(&mut self, period: Duration) -> Vec<Received> {
        let until = tokio::time::Instant::now() + period;
        let mut received = Vec::new();
        while let Ok(Some(request)) = tokio::time::timeout_at(until, self.requests.recv()).await {
            received.push(request);
        }
        received
    }

    /// Every request that arrives within `quiet` of the previous one (or of now).
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Received> {
        let mut received = Vec::new();
        while let Ok(Some(request)) = tokio::time::timeout(quiet, self.requests.recv()).await {
            received.push(request);
        }
        received
    }
}

async fn answer(
    axum::extract::State(script): axum::extract::State<Script>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let _ = script.seen.send(Received {
        headers,
        body,
        at: Instant::now(),
    });
    let reply = script
        .replies
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| script.otherwise.clone());
    tokio::time::sleep(reply.delay).await;
    let mut response = axum::response::IntoResponse::into_response((
        StatusCode::from_u16(reply.status).unwrap(),
        format!("answer {}", reply.status),
    ));
    if let Some(value) = reply.retry_after {
        response
            .headers_mut()
            .insert("retry-after", value.parse().unwrap());
    }
    response
}

pub const OMI_KEY: &str = "omi-test-key";
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

/// An event as ingest would publish it, stamped now with a fresh event id.
pub fn envelope(
    kind: shared::EventKind,
    uid: &str,
    dedup_key: &str,
    payload: impl Into<Bytes>,
) -> shared::Envelope {
    shared::Envelope {
        event_id: Uuid::now_v7(),
        kind,
        uid: uid.into(),
        dedup_key: dedup_key.into(),
        received_at: chrono::Utc::now(),
        sample_rate: None,
        payload: payload.into(),
        request_id: None,
    }
}

/// `count` distinct transcript events (the realtime fixture, keys `k0`, `k1`, ...) spread over
/// `users` uids, as a backlog published straight to the queue.
pub fn transcript_backlog(count: i64, users: i64) -> Vec<shared::Envelope> {
    let body = Bytes::from(shared::testkit::fixture("omi/realtime_transcript.json"));
    (0..count)
        .map(|n| {
            let uid = format!("u{}", n % users);
            envelope(
                shared::EventKind::OmiTranscript,
                &uid,
                &format!("k{n}"),
                body.clone(),
            )
        })
        .collect()
}

/// A transcript event of `uid` whose payload is no transcript batch: it fails every time and
/// is dead-lettered after `DELIVERY_LIMIT` failures.
pub fn poison(uid: &str) -> shared::Envelope {
    let payload: &[u8] = b"{\"this is\": \"not a transcript batch\"}";
    envelope(shared::EventKind::OmiTranscript, uid, "poison", payload)
}

/// Worker settings that store a backlog in batches, one batch at a time.
pub fn one_batch_at_a_time(settings: &mut WorkerSettings) {
    settings.prefetch = 16;
    settings.batch = 16;
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
        let mut settings = test_settings(&self.broker, &self.database);
        settings.audio.listening_idle = Duration::from_millis(1500);
        settings.audio.level_interval = Duration::from_millis(100);
        settings.audio.reorder_delay = Duration::from_millis(1000);
        settings.audio.sweep_interval = Duration::from_millis(50);
        (self.tune)(&mut settings);
        settings
    }

    /// Starts one more worker in-process and waits until it consumes.
    pub async fn add_worker(&mut self) {
        let worker = self.worker_at("127.0.0.1:0".parse().unwrap()).await;
        self.workers.push(worker);
    }

    /// Stops worker `index` gracefully; returns the address it listened on.
    pub async fn stop_worker(&mut self, index: usize) -> std::net::SocketAddr {
        let worker = self.workers.remove(index);
        let addr = worker.addr;
        worker.stop().await;
        addr
    }

    /// Starts a worker listening on `addr` (where a stopped one was), as worker `index`, and
    /// waits until it consumes.
    pub async fn start_worker_at(&mut self, index: usize, addr: std::net::SocketAddr) {
        let worker = self.worker_at(addr).await;
        self.workers.insert(index, worker);
    }

    async fn worker_at(&self, addr: std::net::SocketAddr) -> Spawned {
        let settings = self.worker_settings();
        let run = |listener, stop| worker::run(settings, listener, stop);
        let worker = Spawned::start_at(addr, run).await;
        self.wait_ready(&worker.url("/readyz")).await;
        worker
    }

    /// Waits until the events queue is empty, then stops every worker: once stopped, every
    /// message they took is settled, so the database holds all that will be stored.
    pub async fn drain_and_stop_workers(&mut self) {
        eventually(15, "the queue to drain", || async {
            (self.broker.events_ready().await == 0).then_some(())
        })
        .await;
        for worker in std::mem::take(&mut self.workers) {
            worker.stop().await;
        }
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
        let response = self.admin(reqwest::Method::GET, path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("JSON")
    }

    /// `POST /v1/endpoints` on the first worker; panics unless 201. Returns the endpoint.
    pub async fn create_endpoint(&self, body: Value) -> Value {
        create_endpoint(
            self.admin_request(reqwest::Method::POST, "/v1/endpoints"),
            body,
        )
        .await
    }

    /// `method path` on the first worker's management API, with the admin token.
    pub async fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::Response {
        self.admin_request(method, path)
            .send()
            .await
            .expect("request")
    }

    fn admin_request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.workers[0].url(path))
            .bearer_auth(ADMIN_TOKEN)
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
        self.post_for_id(path, headers, body).await;
    }

    /// Like [`Self::post`]; returns the `event_id` ingest answered.
    pub async fn post_for_id(&self, path: &str, headers: &[(&str, String)], body: Vec<u8>) -> Uuid {
        let mut request = self.client.post(self.ingest.url(path)).body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, 202, "POST {path}: {text}");
        let accepted: Value = serde_json::from_str(&text).expect("a JSON answer");
        accepted["event_id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .expect("an event_id")
    }

    /// Posts a fixture to an Omi route as user `uid`.
    pub async fn post_omi(&self, route: &str, uid: &str, fixture: &str) {
        let path = format!("{route}?key={OMI_KEY}&uid={uid}");
        let json = vec![("content-type", "application/json".to_owned())];
        self.post(&path, &json, shared::testkit::fixture(fixture))
            .await
    }

    /// Posts raw PCM16 audio of `uid` at 16 kHz to `/v1/omi/audio`, in chunks of `chunk_bytes`;
    /// returns the chunks' event ids.
    pub async fn post_omi_audio(&self, uid: &str, pcm: &[u8], chunk_bytes: usize) -> Vec<Uuid> {
        let path = format!("/v1/omi/audio?key={OMI_KEY}&uid={uid}&sample_rate=16000");
        let headers = vec![("content-type", "application/octet-stream".to_owned())];
        let mut ids = Vec::new();
        for chunk in pcm.chunks(chunk_bytes) {
            ids.push(self.post_for_id(&path, &headers, chunk.to_vec()).await);
        }
        ids
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

    /// Runs the real `worker` binary on this pipeline's queue prefix with Postgres at
    /// `database_url` (this pipeline's database, or a proxy in front of it) and `env` added,
    /// and waits until it is ready.
    pub async fn spawn_worker_binary(
        &self,
        database_url: &str,
        env: &[(&str, &str)],
    ) -> tokio::process::Child {
        spawn_worker_binary(&self.broker.settings, database_url, env).await
    }

    /// Like [`Self::spawn_worker_binary`] on this pipeline's database, with the consumer's log
    /// kept ([`LoggedWorker`]).
    pub async fn spawn_logged_worker(&self, env: &[(&str, &str)]) -> LoggedWorker {
        LoggedWorker::start(&self.broker.settings, &self.database.url, env).await
    }

    /// Waits until `sql` counts `expected`, then returns.
    pub async fn wait_for_count(&self, sql: &str, expected: i64) {
        eventually(15, sql, || async {
            (self.count(sql).await == expected).then_some(())
        })
        .await
    }
}
