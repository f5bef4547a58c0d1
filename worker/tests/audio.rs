//! Audio chunks become level windows over one stream per uid, in the order ingest accepted them,
//! whatever order workers see them in; listening starts and stops.

mod harness;

use bytes::Bytes;
use chrono::{Duration, Utc};
use harness::TestPipeline;
use shared::testkit::{eventually, fixture};
use shared::{Envelope, EventKind};
use uuid::Uuid;

/// Audio cut into chunks, as envelopes stamped in stream order (ingest's acceptance order).
/// Event ids run the other way, so only the acceptance time can order them.
fn chunk_envelopes(uid: &str, chunks: Vec<Vec<u8>>) -> Vec<Envelope> {
    let accepted = Utc::now();
    let mut ids: Vec<Uuid> = chunks.iter().map(|_| Uuid::now_v7()).collect();
    ids.reverse();
    chunks
        .into_iter()
        .zip(ids)
        .enumerate()
        .map(|(n, (pcm, event_id))| Envelope {
            event_id,
            kind: EventKind::OmiAudio,
            uid: uid.into(),
            dedup_key: format!("chunk-{n}"),
            received_at: accepted + Duration::milliseconds(n as i64),
            sample_rate: Some(16_000),
            payload: Bytes::from(pcm),
            request_id: None,
        })
        .collect()
}

/// The sine fixture (1 s at 16 kHz) in chunks whose boundaries fall inside windows.
fn sine_chunks(uid: &str, chunk_bytes: usize) -> Vec<Envelope> {
    let sine = fixture("omi/audio_sine440_half_16k.pcm");
    chunk_envelopes(uid, sine.chunks(chunk_bytes).map(<[u8]>::to_vec).collect())
}

/// Chunks of 499 samples, each louder than the one before: any other order gives other windows.
fn stepped_chunks(count: i16) -> Vec<Vec<u8>> {
    (1..=count)
        .map(|step| {
            (0..499)
                .flat_map(|i| if i % 2 == 0 { step * 300 } else { -step * 300 }.to_le_bytes())
                .collect()
        })
        .collect()
}

/// Sends `chunks` of `uid` over time as ingest accepts them: one every `gap`, each stamped when
/// accepted, and every third held back `stall` before it reaches the broker (as if the worker
/// that took it were still in its transaction), so the two after it are stored first.
async fn send_over_time(
    pipeline: &TestPipeline,
    uid: &str,
    chunks: Vec<Vec<u8>>,
    gap: std::time::Duration,
    stall: std::time::Duration,
) {
    let sends = chunks.into_iter().enumerate().map(|(n, pcm)| async move {
        tokio::time::sleep(gap * n as u32).await;
        let mut envelope = harness::envelope(EventKind::OmiAudio, uid, &format!("chunk-{n}"), pcm);
        envelope.sample_rate = Some(16_000);
        if n % 3 == 0 {
            tokio::time::sleep(stall).await;
        }
        pipeline.broker.publish(&envelope).await;
    });
    futures_util::future::join_all(sends).await;
}

/// The windows a meter gives for `chunks` in order, the last partial one flushed (as a stream
/// that stops listening flushes it).
fn windows_in_order(chunks: &[Vec<u8>]) -> Vec<worker::audio::levels::Window> {
    let mut windows = Vec::new();
    let mut meter = worker::audio::levels::Meter::new(16_000, 100);
    meter.feed(&chunks.concat(), &mut windows);
    windows.extend(meter.flush());
    windows
}

fn assert_windows(got: &[serde_json::Value], want: &[worker::audio::levels::Window]) {
    assert_eq!(got.len(), want.len());
    for (n, (got, want)) in got.iter().zip(want).enumerate() {
        let rms = got["rms_dbfs"].as_f64().unwrap();
        assert!(
            (rms - want.rms_dbfs.unwrap()).abs() < 1e-9,
            "window {n}: {got} vs {want:?}"
        );
    }
}

/// The uid's level windows in time order (the API lists them newest first).
async fn levels_of(pipeline: &TestPipeline, uid: &str, expected: usize) -> Vec<serde_json::Value> {
    eventually(15, "the level windows", || async {
        let page = pipeline
            .admin_get(&format!("/v1/users/{uid}/audio-levels?limit=1000"))
            .await;
        let mut items = page["items"].as_array().cloned().unwrap_or_default();
        items.reverse();
        (items.len() == expected).then_some(items)
    })
    .await
}

fn assert_sine_levels(windows: &[serde_json::Value]) {
    for window in windows {
        let rms = window["rms_dbfs"].as_f64().unwrap();
        assert!((rms - -9.03).abs() < 0.01, "window {window}");
    }
}

#[tokio::test]
async fn chunks_split_inside_windows_give_the_levels_of_the_whole_stream() {
    let pipeline = TestPipeline::start().await;
    pipeline.broker.publish_all(&sine_chunks("u1", 3202)).await;
    let windows = levels_of(&pipeline, "u1", 10).await;
    assert_sine_levels(&windows);
    let listening = pipeline.admin_get("/v1/users/u1/listening").await;
    assert!(listening["session_id"].is_string(), "{listening}");
}

#[tokio::test]
async fn chunks_seen_out_of_order_by_two_workers_are_folded_in_ingest_order() {
    let pipeline = TestPipeline::start_with_workers(2).await;
    let chunks = stepped_chunks(32);
    let mut expected = Vec::new();
    let mut meter = worker::audio::levels::Meter::new(16_000, 100);
    meter.feed(&chunks.concat(), &mut expected);
    let mut envelopes = chunk_envelopes("u1", chunks);
    envelopes.reverse();
    pipeline.broker.publish_all(&envelopes).await;
    let windows = levels_of(&pipeline, "u1", expected.len()).await;
    assert_windows(&windows, &expected);
    // The last chunks (a few ms younger) may fold a pass after the windows are there.
    pipeline
        .wait_for_count(
            "SELECT count(*) FROM audio_chunks WHERE folded_at IS NULL",
            0,
        )
        .await;
}

#[tokio::test]
async fn listening_starts_with_audio_and_stops_after_the_idle_gap() {
    let pipeline = TestPipeline::start().await;
    pipeline
        .broker
        .publish_all(&sine_chunks("u1", 32_000))
        .await;
    eventually(15, "listening to stop", || async {
        let listening = pipeline.admin_get("/v1/users/u1/listening").await;
        (listening["listening"] == false && listening["session_id"].is_string()).then_some(())
    })
    .await;
    let types = pipeline.outbox_types().await;
    assert_eq!(types.first().map(String::as_str), Some("listening.status"));
    assert_eq!(types.last().map(String::as_str), Some("listening.status"));
    assert!(types.iter().any(|kind| kind == "audio.level"), "{types:?}");
    let statuses: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT data FROM outbox WHERE event_type = 'listening.status' ORDER BY id",
    )
    .fetch_all(&pipeline.pool)
    .await
    .unwrap();
    assert_eq!(statuses.len(), 2);
    assert_eq!(
        (
            statuses[0]["isListening"].clone(),
            statuses[1]["isListening"].clone()
        ),
        (true.into(), false.into())
    );
    let level: serde_json::Value = sqlx::query_scalar(
        "SELECT data FROM outbox WHERE event_type = 'audio.level' ORDER BY id LIMIT 1",
    )
    .fetch_one(&pipeline.pool)
    .await
    .unwrap();
    assert!(
        (level["audioLevel"].as_f64().unwrap() - 84.95).abs() < 0.05,
        "{level}"
    );
    assert_eq!(level["sessionId"], statuses[0]["sessionId"]);
}

#[tokio::test]
async fn the_management_api_needs_the_admin_token() {
    let pipeline = TestPipeline::start().await;
    let url = pipeline.workers[0].url("/v1/users/u1/listening");
    let anonymous = pipeline.client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = pipeline
        .client
        .get(&url)
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
}

/// A reorder window of 3 s, longer than a chunk's trip from stamp to commit on a busy machine
/// (each test publish opens its own connection), and a listening idle gap longer than that.
fn slow_reorder(settings: &mut worker::settings::WorkerSettings) {
    settings.audio.reorder_delay = std::time::Duration::from_secs(3);
    settings.audio.listening_idle = std::time::Duration::from_secs(4);
}

#[tokio::test]
async fn chunks_sent_over_time_and_stored_late_by_two_workers_are_folded_in_ingest_order() {
    let pipeline = TestPipeline::start_tuned(2, slow_reorder).await;
    // 45 distinct chunks over 4.5 s, more than the reorder window; every third stored 500 ms
    // late, so at any moment a later chunk is stored while an earlier one is not yet.
    let chunks = stepped_chunks(45);
    let expected = windows_in_order(&chunks);
    let gap = std::time::Duration::from_millis(100);
    let stall = std::time::Duration::from_millis(500);
    send_over_time(&pipeline, "u1", chunks, gap, stall).await;
    let windows = levels_of(&pipeline, "u1", expected.len()).await;
    assert_windows(&windows, &expected);
}
