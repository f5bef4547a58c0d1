//! Erasing a user (`DELETE /v1/users/{uid}`): every row of that uid goes, in bounded batches,
//! and every row of another uid stays; its pending deliveries are cancelled so the receiver
//! gets nothing more for it; the progress counts what was deleted; an event of that uid still
//! in the queue from before the erasure is dropped, one received after it is stored. And the
//! routes: token, bad uid, unknown uid, the same job for a second request, one worker at a time.

mod harness;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use harness::{Receiver, Reply, TestPipeline, TestWorker, envelope, poison};
use reqwest::Method;
use serde_json::{Value, json};
use shared::EventKind;
use shared::testkit::{eventually, fixture, scrape};
use sqlx::PgPool;
use worker::settings::WorkerSettings;

const ERASED: &str = "erased-user";
const KEPT: &str = "kept-user";

/// Every table that holds rows of a uid, with the count of `$1`'s rows in it.
const TABLES: [(&str, &str); 18] = [
    (
        "inbound_events",
        "SELECT count(*) FROM inbound_events WHERE uid = $1",
    ),
    (
        "transcript_sessions",
        "SELECT count(*) FROM transcript_sessions WHERE uid = $1",
    ),
    (
        "transcript_speakers",
        "SELECT count(*) FROM transcript_speakers r JOIN transcript_sessions s ON s.id = r.session_id WHERE s.uid = $1",
    ),
    (
        "transcript_segments",
        "SELECT count(*) FROM transcript_segments r JOIN transcript_sessions s ON s.id = r.session_id WHERE s.uid = $1",
    ),
    (
        "conversations",
        "SELECT count(*) FROM conversations WHERE uid = $1",
    ),
    (
        "memory_events",
        "SELECT count(*) FROM memory_events WHERE uid = $1",
    ),
    (
        "day_summaries",
        "SELECT count(*) FROM day_summaries WHERE uid = $1",
    ),
    (
        "audio_chunks",
        "SELECT count(*) FROM audio_chunks WHERE uid = $1",
    ),
    (
        "audio_streams",
        "SELECT count(*) FROM audio_streams WHERE uid = $1",
    ),
    (
        "audio_windows",
        "SELECT count(*) FROM audio_windows WHERE uid = $1",
    ),
    (
        "sleep_inferences",
        "SELECT count(*) FROM sleep_inferences WHERE uid = $1",
    ),
    (
        "sleep_reports",
        "SELECT count(*) FROM sleep_reports WHERE uid = $1",
    ),
    (
        "reflector_transcripts",
        "SELECT count(*) FROM reflector_transcripts WHERE uid = $1",
    ),
    (
        "processing_failures",
        "SELECT count(*) FROM processing_failures WHERE uid = $1",
    ),
    (
        "dead_letters",
        "SELECT count(*) FROM dead_letters WHERE uid = $1",
    ),
    ("outbox", "SELECT count(*) FROM outbox WHERE uid = $1"),
    (
        "deliveries",
        "SELECT count(*) FROM deliveries d JOIN outbox o ON o.id = d.event_id WHERE o.uid = $1",
    ),
    (
        "delivery_attempts",
        "SELECT count(*) FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
         JOIN outbox o ON o.id = d.event_id WHERE o.uid = $1",
    ),
];

/// The rows of `uid` in every table of [`TABLES`].
async fn rows_of(pool: &PgPool, uid: &str) -> BTreeMap<&'static str, i64> {
    let mut rows = BTreeMap::new();
    for (table, sql) in TABLES {
        let count: i64 = sqlx::query_scalar(sql)
            .bind(uid)
            .fetch_one(pool)
            .await
            .expect(table);
        rows.insert(table, count);
    }
    rows
}

/// Every row of every table in [`TABLES`], whoever's.
async fn all_rows(pool: &PgPool) -> BTreeMap<&'static str, i64> {
    let mut rows = BTreeMap::new();
    for (table, sql) in TABLES {
        let every = sql.replace("= $1", "IS NOT NULL");
        let count: i64 = sqlx::query_scalar(&every)
            .fetch_one(pool)
            .await
            .expect(table);
        rows.insert(table, count);
    }
    rows
}

async fn pending_deliveries_of(pool: &PgPool, uid: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM deliveries d JOIN outbox o ON o.id = d.event_id
         WHERE o.uid = $1 AND d.status = 'pending'",
    )
    .bind(uid)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Two workers that erase in batches of 2 rows, look for jobs every 50 ms, and retry a failing
/// delivery for a minute (so the failing endpoint's deliveries stay pending).
fn erasing(settings: &mut WorkerSettings) {
    settings.erasure.poll_interval = Duration::from_millis(50);
    settings.erasure.batch = 2;
    settings.delivery.window = Duration::from_secs(60);
}

/// Posts one of everything a user sends: a transcript and the conversation that completes it,
/// a day summary, a memory event, a second of audio, sleep data, a Reflector transcript in the
/// uid's room, and an event that is dead-lettered.
async fn store_everything_of(pipeline: &TestPipeline, uid: &str) {
    pipeline
        .post_omi("/v1/omi/transcript", uid, "omi/realtime_transcript.json")
        .await;
    // Stored before the conversation arrives, which completes the open session.
    let session = format!("SELECT count(*) FROM transcript_sessions WHERE uid = '{uid}'");
    pipeline.wait_for_count(&session, 1).await;
    pipeline
        .post_omi("/v1/omi/conversation", uid, "omi/conversation_created.json")
        .await;
    pipeline
        .post_omi("/v1/omi/day-summary", uid, "omi/day_summary.json")
        .await;
    pipeline
        .post_omi("/webhook", uid, "omi-envelope/memory_created.json")
        .await;
    let sine = fixture("omi/audio_sine440_half_16k.pcm");
    pipeline.post_omi_audio(uid, &sine, 6402).await;
    pipeline
        .post_asleep(uid, "asleep/inference_complete_flat.json")
        .await;
    pipeline
        .post_asleep(uid, "asleep/session_complete_flat.json")
        .await;
    let mut reflector: Value =
        serde_json::from_slice(&fixture("reflector/transcript_completed.json")).unwrap();
    reflector["transcript"]["room_id"] = json!(uid);
    pipeline
        .post_reflector(serde_json::to_vec(&reflector).unwrap())
        .await;
    pipeline.broker.publish(&poison(uid)).await;
}

/// Waits until both users' data is all stored and their audio streams have stopped (no more
/// windows or events come), and returns each one's rows.
async fn settled(pipeline: &TestPipeline) -> [BTreeMap<&'static str, i64>; 2] {
    eventually(30, "both users' data stored and settled", || async {
        let inbound = pipeline.count("SELECT count(*) FROM inbound_events").await;
        let dead = pipeline.count("SELECT count(*) FROM dead_letters").await;
        let stopped = pipeline
            .count("SELECT count(*) FROM audio_streams WHERE NOT listening")
            .await;
        let completed = pipeline.outbox_data("transcript.completed").await.len();
        // Twelve events each (five of them audio chunks), the poison ones dead, both streams
        // stopped, each Omi transcript completed by its conversation and a Reflector one each.
        (inbound == 24 && dead == 2 && stopped == 2 && completed == 4).then_some(())
    })
    .await;
    [
        rows_of(&pipeline.pool, ERASED).await,
        rows_of(&pipeline.pool, KEPT).await,
    ]
}

/// Every row counted `before` is still there: as many rows, but for attempts, which grow while
/// the failing endpoint is retried.
fn assert_intact(now: &BTreeMap<&str, i64>, before: &BTreeMap<&str, i64>) {
    for (table, rows) in before {
        match *table {
            "delivery_attempts" => assert!(now[table] >= *rows, "{table}: {now:?}"),
            _ => assert_eq!(now[table], *rows, "{table}: {now:?} vs {before:?}"),
        }
    }
}

/// Polls the progress route until the job is done.
async fn done(pipeline: &TestPipeline, uid: &str) -> Value {
    eventually(60, "the erasure to finish", || async {
        let progress = pipeline
            .admin_get(&format!("/v1/users/{uid}/erasure"))
            .await;
        (progress["status"] == "done").then_some(progress)
    })
    .await
}

/// The uid in a webhook's body (every event of a user carries it in `data`).
fn uid_of(request: &harness::Received) -> String {
    request.json()["data"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn erasing_a_user_deletes_every_row_of_theirs_and_nothing_of_anyone_else() {
    let pipeline = TestPipeline::start_tuned(2, erasing).await;
    let ok = Receiver::ok().await;
    let mut failing = Receiver::scripted(vec![], Reply::status(503)).await;
    for receiver in [&ok, &failing] {
        pipeline
            .create_endpoint(
                json!({"url": receiver.url(), "event_types": ["*"], "timeout_ms": 1000}),
            )
            .await;
    }
    store_everything_of(&pipeline, ERASED).await;
    store_everything_of(&pipeline, KEPT).await;
    let [erased_before, kept_before] = settled(&pipeline).await;
    for (table, rows) in &erased_before {
        assert!(
            *rows > 0,
            "the erased user has rows in {table}: {erased_before:?}"
        );
    }
    assert!(pending_deliveries_of(&pipeline.pool, ERASED).await > 0);
    let retried = failing.during(Duration::from_millis(1000)).await;
    assert!(
        retried.iter().any(|request| uid_of(request) == ERASED),
        "the failing endpoint is retried for the user to erase"
    );

    let response = pipeline
        .admin(Method::DELETE, &format!("/v1/users/{ERASED}"))
        .await;
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.headers()["location"],
        format!("/v1/users/{ERASED}/erasure").as_str()
    );
    let job: Value = response.json().await.unwrap();
    assert_eq!(
        (job["uid"].as_str(), job["status"].as_str()),
        (Some(ERASED), Some("pending"))
    );
    let requested_at: DateTime<Utc> = job["requested_at"].as_str().unwrap().parse().unwrap();

    let progress = done(&pipeline, ERASED).await;
    let done_at = Instant::now();
    assert_eq!(progress["id"], job["id"]);
    assert!(progress["started_at"].is_string() && progress["finished_at"].is_string());
    assert_eq!(
        rows_of(&pipeline.pool, ERASED).await.values().sum::<i64>(),
        0
    );
    assert_intact(&rows_of(&pipeline.pool, KEPT).await, &kept_before);
    assert_intact(&all_rows(&pipeline.pool).await, &kept_before);

    // Counts: exactly what was stored; attempts are at least those made before the request
    // (the failing endpoint kept being retried until the cancel).
    let counts = &progress["counts"];
    for (table, stored) in &erased_before {
        let deleted = counts[table]
            .as_i64()
            .unwrap_or_else(|| panic!("{table} in {counts}"));
        if *table == "delivery_attempts" {
            assert!(deleted >= *stored, "{table}: {deleted} < {stored}");
        } else {
            assert_eq!(deleted, *stored, "{table}");
        }
    }

    // Nothing more is sent for the erased user; the other's retries go on.
    let later = failing.during(Duration::from_millis(1500)).await;
    let later: Vec<_> = later
        .iter()
        .filter(|request| request.at > done_at)
        .collect();
    assert!(later.iter().all(|request| uid_of(request) != ERASED));
    assert!(later.iter().any(|request| uid_of(request) == KEPT));

    // An event received before the erasure and still queued is dropped on arrival; one
    // received after it is stored (the user came back).
    let transcript = || fixture("omi/realtime_transcript.json");
    let mut queued = envelope(EventKind::OmiTranscript, ERASED, "queued", transcript());
    queued.received_at = requested_at - chrono::Duration::seconds(1);
    let back = envelope(EventKind::OmiTranscript, ERASED, "back", transcript());
    pipeline
        .broker
        .publish_all(&[queued.clone(), back.clone()])
        .await;
    eventually(15, "the event from before dropped", || async {
        let metrics = scrape(&pipeline.workers[0].url("/metrics")).await;
        metrics
            .contains("worker_events_total{kind=\"omi_transcript\",outcome=\"erased\"}")
            .then_some(())
    })
    .await;
    let sql = format!(
        "SELECT count(*) FROM inbound_events WHERE event_id = '{}'",
        back.event_id
    );
    pipeline.wait_for_count(&sql, 1).await;
    let stored: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT event_id FROM inbound_events WHERE uid = $1")
            .bind(ERASED)
            .fetch_all(&pipeline.pool)
            .await
            .unwrap();
    assert_eq!(
        stored,
        vec![back.event_id],
        "only the event received after the erasure"
    );
    assert!(rows_of(&pipeline.pool, ERASED).await["transcript_segments"] > 0);
}

#[tokio::test]
async fn the_erasure_routes_answer_in_the_api_shape_and_one_worker_at_a_time_erases() {
    let worker = TestWorker::start_with(|settings| {
        settings.erasure.poll_interval = Duration::from_millis(50);
    })
    .await;
    let client = reqwest::Client::new();
    for (method, path) in [
        (reqwest::Method::DELETE, "/v1/users/u1"),
        (reqwest::Method::GET, "/v1/users/u1/erasure"),
    ] {
        let response = client
            .request(method, worker.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path} without the token");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
    }
    let unknown = worker
        .admin(reqwest::Method::GET, "/v1/users/nobody/erasure")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"], "not_found", "{body}");
    let long = "u".repeat(257);
    let refused = worker
        .admin(reqwest::Method::DELETE, &format!("/v1/users/{long}"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().starts_with("uid:"),
        "{body}"
    );

    // While another session holds the erasure lock, no worker starts the job, and a second
    // request is the same job.
    let mut holder = worker.pool.acquire().await.unwrap().detach();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(worker::lifecycle::erasure::LOCK)
        .execute(&mut holder)
        .await
        .unwrap();
    let request = || async {
        let response = worker
            .admin(reqwest::Method::DELETE, "/v1/users/a%20user")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        assert_eq!(response.headers()["location"], "/v1/users/a%20user/erasure");
        response.json::<Value>().await.unwrap()
    };
    let first = request().await;
    let second = request().await;
    assert_eq!(first, second, "the same job");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let progress = worker.get_json("/v1/users/a%20user/erasure").await;
    assert_eq!(
        progress["status"], "pending",
        "not started while the lock is held"
    );
    assert_eq!(progress["uid"], "a user");

    sqlx::Connection::close(holder).await.unwrap();
    let finished = eventually(15, "the erasure done", || async {
        let progress = worker.get_json("/v1/users/a%20user/erasure").await;
        (progress["status"] == "done").then_some(progress)
    })
    .await;
    assert_eq!(finished["id"], first["id"]);
    assert_eq!(finished["counts"]["inbound_events"], 0, "{finished}");
    let again = request().await;
    assert_ne!(again["id"], first["id"], "a finished erasure is not reused");
}
