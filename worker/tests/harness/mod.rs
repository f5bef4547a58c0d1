//! The worker test harness: a worker of the test's own (fresh database, own queue prefix,
//! port 0, tiny retry settings), typed helpers for the management API and the outbox, and an
//! in-process receiver that answers outbound webhooks per a script and hands every request to
//! the test.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use shared::testkit::{Spawned, TestBroker, TestDatabase, eventually};
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
    settings.admin_token = Some(ADMIN_TOKEN.to_owned());
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

    /// `POST /v1/endpoints`; panics unless 201. Returns the endpoint's JSON.
    pub async fn create_endpoint(&self, body: Value) -> Value {
        let response = self
            .admin(reqwest::Method::POST, "/v1/endpoints")
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        response.json().await.expect("endpoint JSON")
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

    /// Writes an event into the outbox the way a domain handler does.
    pub async fn emit(&self, event_type: EventType, data: Value) -> Uuid {
        let mut tx = self.pool.begin().await.expect("begin");
        let id = outbox::emit(&mut tx, event_type, Some("uid-1"), data)
            .await
            .expect("emit");
        tx.commit().await.expect("commit");
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

async fn spawn(settings: WorkerSettings) -> Spawned {
    let service =
        Spawned::start(|listener, shutdown| worker::run(settings, listener, shutdown)).await;
    let client = reqwest::Client::new();
    eventually(20, "worker ready", || async {
        let response = client.get(service.url("/readyz")).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
    service
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
