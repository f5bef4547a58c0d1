//! The ingest test harness: an ingest of the test's own on port 0, in front of a queue prefix of
//! the test's own, and typed helpers to post to it.

#![allow(dead_code)]

use ingest::settings::IngestSettings;
use shared::config::BrokerSettings;
use shared::testkit::{Spawned, TestBroker};

pub const OMI_KEY: &str = "omi-test-key";

pub struct TestIngest {
    pub broker: TestBroker,
    pub service: Spawned,
    pub client: reqwest::Client,
}

impl TestIngest {
    /// Ingest connected straight to the broker, with the Omi key [`OMI_KEY`].
    pub async fn start() -> Self {
        let broker = TestBroker::new();
        let settings = broker.settings.clone();
        let ingest = Self::start_with(broker, settings).await;
        ingest.wait_ready().await;
        ingest
    }

    /// Ingest reaching the broker through `broker_settings` (a proxy, a closed port).
    pub async fn start_with(broker: TestBroker, broker_settings: BrokerSettings) -> Self {
        let settings = IngestSettings::local(broker_settings, &[OMI_KEY]);
        let service =
            Spawned::start(|listener, shutdown| ingest::run(settings, listener, shutdown)).await;
        TestIngest {
            broker,
            service,
            client: reqwest::Client::new(),
        }
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

    /// `POST /v1/omi/transcript?<query>` with a JSON body.
    pub async fn post_omi_transcript(
        &self,
        query: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(self.service.url(&format!("/v1/omi/transcript?{query}")))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request")
    }
}

/// The query string that authenticates as Omi user `uid`.
pub fn omi_query(uid: &str) -> String {
    format!("key={OMI_KEY}&uid={uid}")
}

/// Reads an error answer and checks its shape: `{"error": <code>, "message": <text>}`.
pub async fn error_of(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.expect("a JSON error body");
    let code = body["error"].as_str().expect("an error code").to_owned();
    let message = body["message"].as_str().expect("a message").to_owned();
    (status, code, message)
}
