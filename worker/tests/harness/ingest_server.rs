//! An ingest of the test's own with given broker settings (through a proxy, over TLS, with its
//! own `DELIVERY_LIMIT`), beside the workers a test starts itself, and a post to it.

use ingest::settings::IngestSettings;
use shared::config::BrokerSettings;
use shared::testkit::{Spawned, eventually, fixture};

use super::OMI_KEY;

/// Starts ingest on `broker` with the Omi key [`OMI_KEY`], without waiting for the broker.
pub async fn spawn(broker: BrokerSettings) -> Spawned {
    let settings = IngestSettings::local(broker, &[OMI_KEY]);
    Spawned::start(|listener, stop| ingest::run(settings, listener, stop)).await
}

/// Waits until ingest's `/readyz` answers 200.
pub async fn wait_ready(ingest: &Spawned) {
    eventually(10, "ingest ready", || async {
        let response = reqwest::get(ingest.url("/readyz")).await.ok()?;
        response.status().is_success().then_some(())
    })
    .await
}

/// Posts an Omi real-time transcript for `uid`; the status ingest answered.
pub async fn post_transcript(ingest: &Spawned, uid: &str) -> u16 {
    let url = ingest.url(&format!("/v1/omi/transcript?key={OMI_KEY}&uid={uid}"));
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(fixture("omi/realtime_transcript.json"))
        .send()
        .await
        .expect("request");
    response.status().as_u16()
}
