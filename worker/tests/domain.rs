//! Every kind of event, posted through ingest as its sender posts it, stored by the worker and
//! read back through the management API, with the outbound events it causes.

mod harness;

use std::time::Duration;

use harness::TestPipeline;
use shared::testkit::{eventually, fixture};

#[tokio::test]
async fn a_conversation_completes_the_open_session_as_a_reflector_shaped_transcript() {
    let pipeline = TestPipeline::start().await;
    pipeline
        .post_omi("/v1/omi/transcript", "u1", "omi/realtime_transcript.json")
        .await;
    pipeline
        .wait_for_count("SELECT count(*) FROM transcript_segments", 2)
        .await;
    pipeline
        .post_omi(
            "/v1/omi/conversation",
            "u1",
            "omi/conversation_created.json",
        )
        .await;
    pipeline
        .wait_for_count("SELECT count(*) FROM conversations", 1)
        .await;

    let completed = pipeline.outbox_data("transcript.completed").await;
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0]["title"], "Launch plan review");
    assert_eq!(completed[0]["participants"].as_array().unwrap().len(), 2);
    assert!((completed[0]["duration"].as_f64().unwrap() - 5.54).abs() < 1e-9);
    assert_eq!(pipeline.outbox_data("memory.created").await.len(), 1);
    assert_eq!(pipeline.outbox_data("transcript.segment").await.len(), 2);

    let id = completed[0]["id"].as_str().unwrap();
    let session = pipeline.admin_get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(session["status"], "completed");
    let vtt = pipeline
        .client
        .get(pipeline.workers[0].url(&format!("/v1/sessions/{id}/transcript?format=vtt")))
        .bearer_auth(harness::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(vtt.starts_with("WEBVTT\n"), "{vtt}");
    assert!(
        vtt.contains(
            "00:00:12.480 --> 00:00:14.900\n<v Speaker 0>Okay, let's go over the launch plan."
        ),
        "{vtt}"
    );
}

#[tokio::test]
async fn a_quiet_session_completes_once_after_the_idle_time() {
    let pipeline = TestPipeline::start_tuned(2, |settings| {
        settings.session_idle = Duration::from_millis(300)
    })
    .await;
    pipeline
        .post_omi("/v1/omi/transcript", "u1", "omi/thalamus_batch.json")
        .await;
    eventually(15, "the session to complete", || async {
        let completed = pipeline.outbox_data("transcript.completed").await;
        (!completed.is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pipeline.outbox_data("transcript.completed").await.len(), 1);
}

#[tokio::test]
async fn sleep_reports_count_once_and_feed_the_stats() {
    let pipeline = TestPipeline::start().await;
    for fixture in [
        "asleep/inference_complete_nested.json",
        "asleep/inference_complete_flat.json",
        "asleep/session_complete_nested.json",
        "asleep/session_complete_flat.json",
        "asleep/session_complete_null_stat.json",
    ] {
        pipeline.post_asleep("sleeper", fixture).await;
    }
    pipeline
        .wait_for_count("SELECT count(*) FROM inbound_events", 3)
        .await;
    pipeline
        .wait_for_count("SELECT count(*) FROM sleep_reports", 2)
        .await;
    assert_eq!(
        pipeline
            .count("SELECT count(*) FROM sleep_inferences")
            .await,
        1
    );

    let stats = pipeline.admin_get("/v1/users/sleeper/sleep/stats").await;
    assert_eq!(stats["total_sessions"], 2);
    assert_eq!(stats["total_sleep_time_s"], 27000);
    assert_eq!(stats["sleep_efficiency_avg_last_30"], 88.24);
    let reports = pipeline.admin_get("/v1/users/sleeper/sleep/reports").await;
    assert_eq!(reports["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        pipeline.outbox_data("sleep.session_completed").await.len(),
        2
    );
    assert_eq!(pipeline.outbox_data("sleep.inference").await.len(), 1);
}

#[tokio::test]
async fn a_reflector_transcript_retried_with_a_new_event_id_is_stored_once() {
    let pipeline = TestPipeline::start().await;
    let body = fixture("reflector/transcript_completed.json");
    pipeline.post_reflector(body.clone()).await;
    let retried = String::from_utf8(body).unwrap().replace(
        "5f0c2b6e8f7a4d2c9e1b3a4d5c6e7f80",
        "0000000000000000000000000000retry",
    );
    pipeline.post_reflector(retried.into_bytes()).await;
    pipeline
        .post_omi("/v1/omi/day-summary", "u1", "omi/day_summary.json")
        .await;
    pipeline
        .wait_for_count("SELECT count(*) FROM day_summaries", 1)
        .await;
    assert_eq!(
        pipeline
            .count("SELECT count(*) FROM reflector_transcripts")
            .await,
        1
    );
    let transcripts = pipeline.outbox_data("transcript.completed").await;
    assert_eq!(transcripts.len(), 1);
    assert_eq!(transcripts[0]["title"], "Weekly sync");
    let summaries = pipeline.outbox_data("day_summary.created").await;
    assert_eq!(summaries[0]["summary"]["headline"], "Launch prep day");
}

#[tokio::test]
async fn omi_envelope_memory_events_are_stored_and_passed_on() {
    let pipeline = TestPipeline::start().await;
    for fixture in [
        "omi-envelope/memory_created.json",
        "omi-envelope/memory_processing_started.json",
        "omi-envelope/processing_memory_status_changed.json",
        "omi-envelope/memory_backward_synced.json",
    ] {
        pipeline.post_omi("/webhook", "u1", fixture).await;
    }
    pipeline
        .wait_for_count("SELECT count(*) FROM memory_events", 4)
        .await;
    assert_eq!(pipeline.outbox_data("memory.created").await.len(), 1);
    let changes = pipeline.outbox_data("memory.status_changed").await;
    assert_eq!(changes.len(), 3);
    // Events of one memory are handled concurrently, so their order in the outbox is not fixed.
    let statuses: Vec<&serde_json::Value> =
        changes.iter().map(|c| &c["memory"]["status"]).collect();
    assert!(
        statuses.contains(&&serde_json::json!("processing")),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn audio_posted_through_ingest_becomes_levels() {
    let pipeline = TestPipeline::start().await;
    let sine = fixture("omi/audio_sine440_half_16k.pcm");
    pipeline.post_omi_audio("u1", &sine, 6402).await;
    let windows = eventually(15, "ten windows", || async {
        let page = pipeline.admin_get("/v1/users/u1/audio-levels").await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        (items.len() == 10).then_some(items)
    })
    .await;
    for window in windows {
        assert!(
            (window["rms_dbfs"].as_f64().unwrap() - -9.03).abs() < 0.01,
            "{window}"
        );
    }
}
