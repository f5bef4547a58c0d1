//! Retention on a compressed clock (retentions of seconds, a pass every 200 ms): under a steady
//! stream of audio and transcripts from several users the database stops growing, nothing
//! younger than its retention is gone, raw PCM goes once folded while its windows stay, and a
//! pending delivery is never deleted. One worker at a time runs a pass.

mod harness;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use harness::{Receiver, Reply, TestPipeline, TestWorker};
use serde_json::json;
use shared::testkit::{eventually, fixture, scrape};
use sqlx::{Executor, PgPool};
use tokio::sync::watch;
use uuid::Uuid;
use worker::lifecycle::locks;
use worker::lifecycle::retention::{self, Place, TABLES, v7_floor};
use worker::settings::{RetentionSettings, WorkerSettings};

const PCM: Duration = Duration::ZERO;
const LEVELS: Duration = Duration::from_secs(4);
const OUTBOX: Duration = Duration::from_secs(3);
const FAILED: Duration = Duration::from_secs(4);
const INBOUND: Duration = Duration::from_secs(3);
const TRANSCRIPTS: Duration = Duration::from_secs(3);
/// How long the load runs: several retention periods.
const LOAD: Duration = Duration::from_secs(21);
const USERS: usize = 4;
/// Time for the worker to catch up after a bound: two passes and a query or two.
const SLACK: Duration = Duration::from_secs(1);

/// Retentions of seconds, a pass every 200 ms in batches of 50; sessions complete after half a
/// second; a delivery that fails to connect waits an hour for its retry (it stays pending).
fn compressed(settings: &mut WorkerSettings) {
    settings.retention = RetentionSettings {
        audio_pcm: Some(PCM),
        audio_levels: Some(LEVELS),
        outbox: Some(OUTBOX),
        failed_deliveries: Some(FAILED),
        inbound_events: Some(INBOUND),
        dead_letters: Some(OUTBOX),
        transcripts: Some(TRANSCRIPTS),
        sleep_reports: Some(TRANSCRIPTS),
        interval: Duration::from_millis(200),
        batch: 50,
        pause: Duration::from_millis(5),
    };
    settings.session_idle = Duration::from_millis(500);
    settings.delivery.retry_base = Duration::from_secs(3600);
    settings.delivery.retry_max_delay = Duration::from_secs(3600);
    settings.delivery.window = Duration::from_secs(7200);
}

/// The time a uuid v7 was made.
fn made_at(id: Uuid) -> DateTime<Utc> {
    let (seconds, nanos) = id.get_timestamp().expect("a v7 id").to_unix();
    DateTime::from_timestamp(seconds as i64, nanos).expect("a time")
}

/// A uuid v7 made `age` ago.
fn id_aged(age: Duration) -> Uuid {
    let at = Utc::now() - age;
    Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        at.timestamp() as u64,
        at.timestamp_subsec_nanos(),
    ))
}

fn ago(now: DateTime<Utc>, age: Duration) -> DateTime<Utc> {
    now - chrono::Duration::from_std(age).unwrap()
}

/// A transcript batch of two segments never sent before, in a sender session of `uid` that
/// takes the batches of one second (ticks `n` of 100 ms) and then goes quiet, so that it
/// completes and its retention can run out while the load goes on.
fn transcript(uid: &str, n: usize) -> Vec<u8> {
    let segment = |k: usize| {
        json!({
            "id": Uuid::new_v4(), "text": format!("segment {n}.{k} of {uid}"),
            "speaker": format!("SPEAKER_0{k}"), "speaker_id": k, "is_user": k == 0,
            "start": n as f64 + k as f64 * 0.5, "end": n as f64 + k as f64 * 0.5 + 0.4,
        })
    };
    serde_json::to_vec(
        &json!({"session_id": format!("s-{uid}-{}", n / 10), "segments": [segment(0), segment(1)]}),
    )
    .unwrap()
}

/// What the senders were answered, for the checks at the end.
#[derive(Default)]
struct Sent {
    audio: Vec<Uuid>,
    transcripts: Vec<Uuid>,
}

/// One user's stream: 100 ms of the sine every 100 ms, a transcript every half second.
async fn stream(pipeline: &TestPipeline, uid: String, sent: Arc<Mutex<Sent>>) {
    let sine = fixture("omi/audio_sine440_half_16k.pcm");
    let mut every = tokio::time::interval(Duration::from_millis(100));
    let started = Instant::now();
    for n in 0.. {
        every.tick().await;
        if started.elapsed() >= LOAD {
            return;
        }
        let chunk = sine.chunks(3200).nth(n % 10).unwrap();
        let ids = pipeline.post_omi_audio(&uid, chunk, chunk.len()).await;
        sent.lock().unwrap().audio.extend(ids);
        if n % 5 == 0 {
            let path = format!("/v1/omi/transcript?key={}&uid={uid}", harness::OMI_KEY);
            let json = vec![("content-type", "application/json".to_owned())];
            let id = pipeline
                .post_for_id(&path, &json, transcript(&uid, n))
                .await;
            sent.lock().unwrap().transcripts.push(id);
        }
    }
}

/// The tables that grow with the load.
const GROWING: [&str; 8] = [
    "audio_chunks",
    "audio_windows",
    "outbox",
    "deliveries",
    "delivery_attempts",
    "inbound_events",
    "transcript_sessions",
    "transcript_segments",
];

/// Rows and bytes on disk (table, indexes and TOAST) of each growing table at one moment.
#[derive(Debug)]
struct Sample {
    at: Duration,
    rows: BTreeMap<&'static str, i64>,
    bytes: BTreeMap<&'static str, i64>,
}

/// Vacuums the growing tables, as autovacuum does in production (its one-minute nap is longer
/// than this whole test), then counts them.
async fn sample(pool: &PgPool, at: Duration) -> Sample {
    pool.execute(format!("VACUUM {}", GROWING.join(", ")).as_str())
        .await
        .expect("vacuum");
    let mut sample = Sample {
        at,
        rows: BTreeMap::new(),
        bytes: BTreeMap::new(),
    };
    for table in GROWING {
        let (rows, bytes): (i64, i64) = sqlx::query_as(&format!(
            "SELECT (SELECT count(*) FROM {table}), pg_total_relation_size('{table}')"
        ))
        .fetch_one(pool)
        .await
        .expect("count");
        sample.rows.insert(table, rows);
        sample.bytes.insert(table, bytes);
    }
    sample
}

/// The largest value of `pick` among the samples taken within `from..to` of the load.
fn peak(samples: &[Sample], from: f64, to: f64, pick: impl Fn(&Sample) -> i64) -> i64 {
    let span = LOAD.as_secs_f64();
    samples
        .iter()
        .filter(|s| (from * span..=to * span).contains(&s.at.as_secs_f64()))
        .map(pick)
        .max()
        .expect("samples in the span")
}

/// Every growing table's rows and bytes in the last sixth of the load stay within 1.5 times
/// their peak between a third and half of it (growing without bound would be twice).
fn assert_stopped_growing(samples: &[Sample]) {
    for table in GROWING {
        for (what, slack) in [("rows", 20), ("bytes", 64 * 1024)] {
            let pick = |s: &Sample| {
                if what == "rows" {
                    s.rows[table]
                } else {
                    s.bytes[table]
                }
            };
            let (early, late) = (
                peak(samples, 1.0 / 3.0, 0.5, pick),
                peak(samples, 5.0 / 6.0, 1.0, pick),
            );
            assert!(
                late as f64 <= early as f64 * 1.5 + slack as f64,
                "{table} {what} kept growing: {early} then {late}; {samples:#?}"
            );
        }
    }
}

/// A count from `sql` with `$1` bound to `value`.
async fn count<T>(pool: &PgPool, sql: &str, value: T) -> i64
where
    T: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send,
{
    sqlx::query_scalar(sql)
        .bind(value)
        .fetch_one(pool)
        .await
        .expect(sql)
}

#[tokio::test]
async fn a_steady_stream_leaves_a_bounded_database_and_keeps_what_is_young() {
    let pipeline = TestPipeline::start_tuned(1, compressed).await;
    let mut ok = Receiver::ok().await;
    pipeline
        .create_endpoint(json!({"url": ok.url(), "event_types": ["*"]}))
        .await;
    let refusing = Receiver::scripted(vec![], Reply::status(400)).await;
    pipeline
        .create_endpoint(json!({"url": refusing.url(), "event_types": ["transcript.segment"]}))
        .await;
    // Nobody listens on port 9: its deliveries wait an hour for their retry, pending.
    pipeline
        .create_endpoint(
            json!({"url": "http://127.0.0.1:9/", "event_types": ["day_summary.created"]}),
        )
        .await;
    pipeline
        .post_omi("/v1/omi/day-summary", "u0", "omi/day_summary.json")
        .await;

    let sent = Arc::new(Mutex::new(Sent::default()));
    let received = Arc::new(Mutex::new(Vec::<Uuid>::new()));
    let (done, finished) = watch::channel(false);
    let receiving = {
        let received = received.clone();
        tokio::spawn(async move {
            while !*finished.borrow() {
                let ids = ok.drain(Duration::from_millis(50)).await.into_iter();
                let ids = ids.map(|r| r.header("webhook-id").parse::<Uuid>().unwrap());
                received.lock().unwrap().extend(ids);
            }
        })
    };
    let started = Instant::now();
    let streams = futures_util::future::join_all(
        (0..USERS).map(|n| stream(&pipeline, format!("u{n}"), sent.clone())),
    );
    let sampling = async {
        let mut samples = Vec::new();
        // Sampling ends with the load, so the checks below start as it stops.
        while started.elapsed() + Duration::from_millis(750) < LOAD {
            tokio::time::sleep(Duration::from_millis(750)).await;
            samples.push(sample(&pipeline.pool, started.elapsed()).await);
        }
        samples
    };
    let ((), samples) = tokio::join!(
        async {
            streams.await;
        },
        sampling
    );
    assert_stopped_growing(&samples);
    eventually(15, "the queue to drain", || async {
        (pipeline.broker.events_ready().await == 0).then_some(())
    })
    .await;
    done.send_replace(true);
    receiving.await.unwrap();

    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&pipeline.pool)
        .await
        .unwrap();
    let young = |ids: &[Uuid], retain: Duration| -> Vec<Uuid> {
        ids.iter()
            .copied()
            .filter(|id| {
                made_at(*id) > ago(now, retain) + chrono::Duration::from_std(SLACK).unwrap()
            })
            .collect()
    };
    let (audio, transcripts) = {
        let sent = sent.lock().unwrap();
        (
            young(&sent.audio, INBOUND),
            young(&sent.transcripts, INBOUND),
        )
    };
    let delivered = young(&received.lock().unwrap(), OUTBOX);
    assert!(
        audio.len() > 10 && transcripts.len() > 2 && delivered.len() > 10,
        "{} {} {}",
        audio.len(),
        transcripts.len(),
        delivered.len()
    );
    let young_events: Vec<Uuid> = audio.iter().chain(&transcripts).copied().collect();
    let kept = count(
        &pipeline.pool,
        "SELECT count(*) FROM inbound_events WHERE event_id = ANY($1)",
        &young_events,
    )
    .await;
    assert_eq!(
        kept as usize,
        young_events.len(),
        "every event younger than RETAIN_INBOUND_EVENTS is kept"
    );
    let kept = count(
        &pipeline.pool,
        "SELECT count(*) FROM transcript_segments WHERE event_id = ANY($1)",
        &transcripts,
    )
    .await;
    assert_eq!(
        kept as usize,
        2 * transcripts.len(),
        "every segment of a recent session is kept"
    );
    let kept = count(
        &pipeline.pool,
        "SELECT count(*) FROM deliveries WHERE id = ANY($1)",
        &delivered,
    )
    .await;
    assert_eq!(
        kept as usize,
        delivered.len(),
        "every delivery younger than RETAIN_OUTBOX is kept"
    );
    assert_windows_contiguous_since(
        &pipeline.pool,
        ago(now, LEVELS) + chrono::Duration::from_std(SLACK).unwrap(),
    )
    .await;
    let pcm_gone_windows_kept = count(
        &pipeline.pool,
        "SELECT count(*) FROM audio_windows WHERE start_at < $1",
        ago(now, Duration::from_secs(3)),
    )
    .await;
    assert!(
        pcm_gone_windows_kept > 0,
        "windows older than their folded PCM are kept"
    );

    // What is older than its retention (and a pass or two) is gone.
    let gone = |sql: &'static str, at: DateTime<Utc>| {
        let pool = pipeline.pool.clone();
        async move {
            eventually(10, sql, || async {
                (count(&pool, sql, at).await == 0).then_some(())
            })
            .await
        }
    };
    let past = |retain: Duration| ago(now, retain + SLACK);
    gone(
        "SELECT count(*) FROM audio_chunks WHERE folded_at < $1",
        past(PCM),
    )
    .await;
    gone(
        "SELECT count(*) FROM audio_chunks WHERE received_at < $1",
        past(Duration::from_secs(2)),
    )
    .await;
    gone(
        "SELECT count(*) FROM audio_windows WHERE start_at < $1",
        past(LEVELS),
    )
    .await;
    gone(
        "SELECT count(*) FROM transcript_sessions WHERE completed_at < $1",
        past(TRANSCRIPTS),
    )
    .await;
    let bound = |retain: Duration| v7_floor(past(retain));
    let gone_by_id = |sql: &'static str, bound: Uuid| {
        let pool = pipeline.pool.clone();
        async move {
            eventually(10, sql, || async {
                (count(&pool, sql, bound).await == 0).then_some(())
            })
            .await
        }
    };
    gone_by_id(
        "SELECT count(*) FROM inbound_events WHERE event_id < $1",
        bound(INBOUND),
    )
    .await;
    gone_by_id(
        "SELECT count(*) FROM outbox o WHERE id < $1
         AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = o.id AND d.status = 'pending')",
        bound(FAILED),
    )
    .await;

    // The day summary's delivery to the endpoint that never answers is pending, and kept.
    let pending: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT d.status, o.created_at FROM deliveries d JOIN outbox o ON o.id = d.event_id
         WHERE o.event_type = 'day_summary.created' AND d.endpoint_id = (SELECT id FROM endpoints WHERE url = 'http://127.0.0.1:9/')",
    )
    .fetch_all(&pipeline.pool)
    .await
    .unwrap();
    assert_eq!(pending.len(), 1, "the pending delivery survives");
    assert_eq!(pending[0].0, "pending");
    assert!(
        pending[0].1 < past(FAILED),
        "and is older than every retention"
    );
}

/// Every user's level windows since `since` are all there: 100 ms apart, from the first window
/// after `since` on, with none missing.
async fn assert_windows_contiguous_since(pool: &PgPool, since: DateTime<Utc>) {
    for n in 0..USERS {
        let starts: Vec<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT start_at FROM audio_windows WHERE uid = $1 AND start_at >= $2 ORDER BY start_at",
        )
        .bind(format!("u{n}"))
        .bind(since)
        .fetch_all(pool)
        .await
        .unwrap();
        assert!(starts.len() >= 5, "u{n} has recent windows: {starts:?}");
        assert!(
            starts[0] - since <= chrono::Duration::milliseconds(101),
            "u{n}'s first window after {since} is missing"
        );
        for pair in starts.windows(2) {
            let gap = (pair[1] - pair[0]).num_microseconds().unwrap();
            assert!(
                (99_990..=100_010).contains(&gap),
                "u{n} misses windows between {} and {}",
                pair[0],
                pair[1]
            );
        }
    }
}

/// Retention of `settings` on `pool`, once, as the worker's loop runs it.
async fn one_pass(pool: &PgPool, settings: &RetentionSettings) -> Option<retention::Deleted> {
    let (_stop, stopping) = watch::channel(false);
    retention::pass(pool, settings, &mut Place::default(), stopping)
        .await
        .expect("a pass")
}

fn retaining_outbox(outbox: Duration, failed: Duration) -> RetentionSettings {
    let mut settings = RetentionSettings::from_env(&shared::config::Env::new(|_| None)).unwrap();
    settings.outbox = Some(outbox);
    settings.failed_deliveries = Some(failed);
    settings.batch = 2;
    settings.pause = Duration::ZERO;
    settings
}

/// An outbox event made `age` ago, fanned out unless `dispatched` is false, with one delivery
/// of each status given (one attempt each), to successive endpoints.
async fn event(
    pool: &PgPool,
    endpoints: &[Uuid],
    age: u64,
    dispatched: bool,
    statuses: &[&str],
) -> Uuid {
    let id = id_aged(Duration::from_secs(age));
    sqlx::query("INSERT INTO outbox (id, event_type, data, created_at, dispatched_at) VALUES ($1, 'test', '{}', now() - make_interval(secs => $2), CASE WHEN $3 THEN now() END)")
        .bind(id)
        .bind(age as f64)
        .bind(dispatched)
        .execute(pool)
        .await
        .unwrap();
    for (status, endpoint) in statuses.iter().zip(endpoints) {
        sqlx::query(
            "WITH d AS (INSERT INTO deliveries (id, event_id, endpoint_id, status) VALUES (uuid_v7(), $1, $2, $3) RETURNING id)
             INSERT INTO delivery_attempts (delivery_id, attempted_at, latency_ms) SELECT id, now(), 1 FROM d",
        )
        .bind(id)
        .bind(endpoint)
        .bind(status)
        .execute(pool)
        .await
        .unwrap();
    }
    id
}

#[tokio::test]
async fn an_event_goes_with_its_deliveries_only_once_none_is_pending_and_each_retention_passed() {
    let (worker, endpoints) = TestWorker::stopped_with_endpoints(2).await;
    let pool = &worker.pool;
    let succeeded = event(pool, &endpoints, 60, true, &["succeeded", "succeeded"]).await;
    let unsubscribed = event(pool, &endpoints, 60, true, &[]).await;
    let young = event(pool, &endpoints, 1, true, &["succeeded"]).await;
    let one_failed = event(pool, &endpoints, 60, true, &["succeeded", "failed"]).await;
    let pending = event(pool, &endpoints, 7200, true, &["pending", "succeeded"]).await;
    let old_failed = event(pool, &endpoints, 7200, true, &["failed", "succeeded"]).await;
    let not_fanned_out = event(pool, &endpoints, 7200, false, &[]).await;
    let deleted = one_pass(
        pool,
        &retaining_outbox(Duration::from_secs(30), Duration::from_secs(3600)),
    )
    .await
    .expect("no other session holds the lock");
    let left: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM outbox ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    let mut kept = vec![young, one_failed, pending, not_fanned_out];
    kept.sort();
    assert_eq!(left, kept, "gone: {succeeded} {unsubscribed} {old_failed}");
    let by_table: BTreeMap<_, _> = deleted.into_iter().collect();
    assert_eq!(by_table["outbox"], 3);
    assert_eq!(by_table["deliveries"], 4);
    let deliveries: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT event_id, status FROM deliveries ORDER BY event_id, status")
            .fetch_all(pool)
            .await
            .unwrap();
    let expected = [
        (young, "succeeded"),
        (one_failed, "failed"),
        (one_failed, "succeeded"),
        (pending, "pending"),
        (pending, "succeeded"),
    ];
    let mut expected: Vec<(Uuid, String)> = expected
        .iter()
        .map(|(id, s)| (*id, s.to_string()))
        .collect();
    expected.sort();
    assert_eq!(
        deliveries, expected,
        "a pending delivery and its event's others stay"
    );
    let orphans = count(
        pool,
        "SELECT count(*) FROM delivery_attempts WHERE delivery_id <> ALL($1)",
        sqlx::query_scalar::<_, Uuid>("SELECT id FROM deliveries")
            .fetch_all(pool)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(orphans, 0, "attempts go with their deliveries");
    // The kept counts follow the deletions: the sweeper folds the triggers' differences.
    let counted = count(
        pool,
        "SELECT coalesce(sum(delta), 0)::bigint FROM delivery_count_changes WHERE delta < $1",
        0i64,
    )
    .await;
    assert_eq!(counted, -4);
}

#[tokio::test]
async fn no_pass_runs_while_another_session_holds_the_lock() {
    let worker = TestWorker::start_with(|settings| {
        settings.retention.inbound_events = Some(Duration::from_secs(1));
        settings.retention.interval = Duration::from_millis(50);
    })
    .await;
    let pool = &worker.pool;
    let mut holder = pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(locks::RETENTION)
        .execute(&mut *holder)
        .await
        .unwrap();
    let old: Vec<Uuid> = (0..5).map(|_| id_aged(Duration::from_secs(60))).collect();
    sqlx::query(
        "INSERT INTO inbound_events (event_id, source, kind, uid, dedup_key, received_at)
         SELECT id, 'omi', 'omi.transcript', 'u1', id::text, now() FROM UNNEST($1::uuid[]) AS id",
    )
    .bind(&old)
    .execute(pool)
    .await
    .unwrap();
    assert!(
        one_pass(pool, &worker.settings.retention).await.is_none(),
        "a second session gets no pass"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored = "SELECT count(*) FROM inbound_events WHERE event_id = ANY($1)";
    assert_eq!(
        count(pool, stored, &old).await,
        5,
        "ten intervals passed and the worker deleted nothing"
    );
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(locks::RETENTION)
        .execute(&mut *holder)
        .await
        .unwrap();
    eventually(10, "the worker's pass", || async {
        (count(pool, stored, &old).await == 0).then_some(())
    })
    .await;
    let metrics = scrape(&worker.url("/metrics")).await;
    for table in TABLES {
        let series = format!("lifecycle_retention_deleted_rows_total{{table=\"{table}\"}}");
        assert!(
            metrics.contains(&series),
            "{series} is exported from the start"
        );
    }
    assert!(metrics.contains("lifecycle_retention_pass_seconds_bucket"));
    assert!(metrics.contains("lifecycle_retention_last_success_timestamp_seconds"));
}
