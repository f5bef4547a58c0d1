//! The ingest test harness: an ingest of the test's own on port 0, in front of a queue prefix of
//! the test's own, and typed helpers to post to it.

#![allow(dead_code)]

use ingest::settings::IngestSettings;
use shared::config::BrokerSettings;
use shared::testkit::{Spawned, TcpProxy, TestBroker};

pub const OMI_KEY: &str = "omi-test-key";
pub const ASLEEP_KEY: &str = "asleep-test-key";
pub const REFLECTOR_SECRET: &str = "whsec_reflector-test-secret";

pub struct TestIngest {
    pub broker: TestBroker,
    pub service: Spawned,
    pub client: reqwest::Client,
}

impl TestIngest {
    /// Ingest connected straight to the broker, with the keys [`OMI_KEY`] and [`ASLEEP_KEY`] and
    /// the secret [`REFLECTOR_SECRET`].
    pub async fn start() -> Self {
        Self::start_configured(|_| {}).await
    }

    /// Like [`TestIngest::start`], with the settings changed by `configure` first.
    pub async fn start_configured(configure: impl FnOnce(&mut IngestSettings)) -> Self {
        let broker = TestBroker::new();
        let mut settings = test_settings(broker.settings.clone());
        configure(&mut settings);
        let ingest = Self::spawn(broker, settings).await;
        ingest.wait_ready().await;
        ingest
    }

    /// Ingest reaching the broker through `broker_settings` (a proxy, a closed port).
    pub async fn start_with(broker: TestBroker, broker_settings: BrokerSettings) -> Self {
        Self::spawn(broker, test_settings(broker_settings)).await
    }

    async fn spawn(broker: TestBroker, settings: IngestSettings) -> Self {
        let service =
            Spawned::start(|listener, shutdown| ingest::run(settings, listener, shutdown)).await;
        TestIngest {
            broker,
            service,
            client: reqwest::Client::new(),
        }
    }

    /// Ingest reaching the broker through a [`TcpProxy`] the test owns, ready; `confirm_timeout`
    /// is how long it waits for a confirm before answering 503.
    pub async fn behind_proxy(confirm_timeout: std::time::Duration) -> (Self, TcpProxy) {
        let proxy = TcpProxy::start("127.0.0.1:5672").await;
        let broker = TestBroker::new();
        let mut settings = broker.settings_via(TestBroker::url_for(proxy.addr));
        settings.confirm_timeout = confirm_timeout;
        let ingest = Self::start_with(broker, settings).await;
        ingest.wait_ready().await;
        (ingest, proxy)
    }

    pub async fn wait_ready(&self) {
        shared::testkit::eventually(10, "ingest ready", || async {
            let response = self
                .client
                .get(self.service.url("/readyz"))
                .send()
                .await
                .ok()?;
            response.status().is_success().then_some(())
        })
        .await
    }

    /// `POST <path_and_query>` with `headers` and `body`.
    pub async fn post(
        &self,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut request = self.client.post(self.service.url(path_and_query));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(body).send().await.expect("request")
    }

    /// `POST <path>?<query>` with a JSON body: any Omi JSON route.
    pub async fn post_omi(
        &self,
        path: &str,
        query: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.post(&format!("{path}?{query}"), &[JSON], body).await
    }

    /// `POST /v1/omi/transcript?<query>` with a JSON body.
    pub async fn post_omi_transcript(
        &self,
        query: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.post_omi("/v1/omi/transcript", query, body).await
    }

    /// `POST /v1/omi/conversation?<query>` with a JSON body.
    pub async fn post_omi_conversation(
        &self,
        query: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.post_omi("/v1/omi/conversation", query, body).await
    }

    /// `POST /v1/omi/day-summary?<query>` with a JSON body.
    pub async fn post_omi_day_summary(
        &self,
        query: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.post_omi("/v1/omi/day-summary", query, body).await
    }

    /// `POST /webhook?<query>`: the Omi webhook-server envelope.
    pub async fn post_omi_webhook(
        &self,
        query: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.post_omi("/webhook", query, body).await
    }

    /// `POST /omi?<query>`: the Thalamus batch.
    pub async fn post_thalamus(
        &self,
        query: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.post_omi("/omi", query, body).await
    }

    /// `POST /v1/omi/audio?<query>` as `application/octet-stream`.
    pub async fn post_omi_audio(
        &self,
        query: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let content_type = ("content-type", "application/octet-stream");
        self.post(&format!("/v1/omi/audio?{query}"), &[content_type], body)
            .await
    }

    /// `POST /v1/asleep` with [`ASLEEP_KEY`] as user `uid`.
    pub async fn post_asleep(
        &self,
        uid: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let headers = [JSON, ("x-api-key", ASLEEP_KEY), ("x-user-id", uid)];
        self.post("/v1/asleep", &headers, body).await
    }

    /// `POST /v1/reflector` signed now with [`REFLECTOR_SECRET`].
    pub async fn post_reflector(&self, body: &[u8]) -> reqwest::Response {
        let signature = reflector_signature(body, 0);
        self.post_reflector_signed(&signature, body.to_vec()).await
    }

    /// `POST /v1/reflector` with the given `X-Webhook-Signature`.
    pub async fn post_reflector_signed(
        &self,
        signature: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let headers = [JSON, ("x-webhook-signature", signature)];
        self.post("/v1/reflector", &headers, body).await
    }
}

pub const JSON: (&str, &str) = ("content-type", "application/json");

/// The default test settings: every source configured with the harness's credentials.
pub fn test_settings(broker: BrokerSettings) -> IngestSettings {
    IngestSettings::local(broker, &[OMI_KEY])
        .with_partner_credentials(&[ASLEEP_KEY], &[REFLECTOR_SECRET])
}

/// Reflector's `X-Webhook-Signature` for `body` with [`REFLECTOR_SECRET`], stamped
/// `offset_s` seconds from now.
pub fn reflector_signature(body: &[u8], offset_s: i64) -> String {
    let timestamp = chrono::Utc::now().timestamp() + offset_s;
    shared::signature::reflector_header(&[REFLECTOR_SECRET], timestamp, body)
}

/// The query string that authenticates as Omi user `uid`.
pub fn omi_query(uid: &str) -> String {
    format!("key={OMI_KEY}&uid={uid}")
}

/// The head of a transcript request with `query`, announcing a body of `length` bytes: for raw
/// TCP clients that send their bodies slowly, or not at all.
pub fn transcript_head(query: &str, length: usize) -> String {
    format!(
        "POST /v1/omi/transcript?{query} HTTP/1.1\r\nHost: ingest\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
}

/// Reads an error answer and checks its shape: `{"error": <code>, "message": <text>}`.
pub async fn error_of(response: reqwest::Response) -> (u16, String, String) {
    let (status, code, message, _) = error_with_field_of(response).await;
    (status, code, message)
}

/// Like [`error_of`], with the error's `field` (`None` when the body has none).
pub async fn error_with_field_of(
    response: reqwest::Response,
) -> (u16, String, String, Option<String>) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.expect("a JSON error body");
    let code = body["error"].as_str().expect("an error code").to_owned();
    let message = body["message"].as_str().expect("a message").to_owned();
    let field = body
        .get("field")
        .map(|field| field.as_str().expect("a field is a string").to_owned());
    (status, code, message, field)
}
