//! The storage floor: what Postgres takes of the rows that transcript events produce, written
//! by plain SQL from a minimal client, to set beside what one worker stores (issue 16).
//!
//! Each transaction is one statement that writes, for [`EVENTS_PER_TRANSACTION`] events of six
//! segments each (the end-to-end benchmark's events, over the same 500 users), what the worker
//! writes for them: the `inbound_events` row, the session and speaker upserts, the segments and
//! one outbox row per segment. The rows are made in the server (`generate_series`), so the
//! client does no work but to send the statement and wait; [`CONNECTIONS`] clients run at once,
//! as many as the worker's batches in flight. Besides events per second it reports WAL and
//! table bytes and PostgreSQL's CPU per event, the same figures the end-to-end phase reports for
//! the worker.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::process::{MachineCpu, cpu_seconds_of_command};
use crate::stack::{Isolation, Stack};

/// The worker's batch (`WORKER_BATCH`): events per transaction.
const EVENTS_PER_TRANSACTION: i64 = 16;
/// Transactions at once: the worker's default `WORKER_CONCURRENCY`.
const CONNECTIONS: usize = 4;

/// The warm-up before a window, here and for the worker alone beside it
/// ([`crate::end_to_end`]).
pub const WARM_UP: Duration = Duration::from_secs(1);
/// The window events are counted over, here and for the worker alone.
pub const MEASURE: Duration = Duration::from_secs(10);

/// Tables a transcript event writes to.
pub const TRANSCRIPT_TABLES: &str = "'inbound_events', 'transcript_sessions', \
    'transcript_speakers', 'transcript_segments', 'outbox'";

/// One transaction's $3 events: $1 numbers the transaction (its users follow from it), $2 is
/// the segments' text.
const WRITE_EVENTS: &str = "
WITH ev AS (
    SELECT gen_random_uuid() AS event_id, 'user-' || (($1 * $3 + g) % 500) AS uid
    FROM generate_series(0, $3 - 1) g
), inbound AS (
    INSERT INTO inbound_events (event_id, source, kind, uid, dedup_key, received_at)
    SELECT event_id, 'omi', 'transcript', uid, 'idempotency-key:floor-' || event_id, now() FROM ev
    ON CONFLICT DO NOTHING
), sessions AS (
    INSERT INTO transcript_sessions (id, uid, external_id, started_at, last_segment_at)
    SELECT gen_random_uuid(), uid, uid, now(), now() FROM (SELECT DISTINCT uid FROM ev ORDER BY uid) u
    ON CONFLICT (uid, external_id) WHERE completed_at IS NULL
    DO UPDATE SET last_segment_at = GREATEST(transcript_sessions.last_segment_at, EXCLUDED.last_segment_at)
    RETURNING id, uid
), speakers AS (
    INSERT INTO transcript_speakers (session_id, label, speaker_index, is_user, person_id)
    SELECT s.id, 'SPEAKER_0' || k, k, k = 0, NULL
    FROM sessions s CROSS JOIN generate_series(0, 1) k ORDER BY 1, 2
    ON CONFLICT (session_id, label) DO UPDATE SET
        is_user = transcript_speakers.is_user OR EXCLUDED.is_user,
        person_id = COALESCE(EXCLUDED.person_id, transcript_speakers.person_id)
    RETURNING id, session_id, speaker_index
), segments AS (
    INSERT INTO transcript_segments
        (session_id, event_id, log_timestamp, speaker_id, position, omi_segment_id, text, start_s, end_s, extra)
    SELECT s.id, ev.event_id, NULL, sp.id, p, ev.event_id || '-' || p, $2, p * 2.5, p * 2.5 + 2.4, '{}'
    FROM ev JOIN sessions s ON s.uid = ev.uid
    CROSS JOIN generate_series(0, 5) p
    JOIN speakers sp ON sp.session_id = s.id AND sp.speaker_index = p % 2
    ON CONFLICT DO NOTHING
    RETURNING session_id, event_id, position, omi_segment_id, text, start_s, end_s
)
INSERT INTO outbox (id, event_type, uid, data, dispatched_at)
SELECT uuid_v7(), 'transcript.segment', s.uid, jsonb_build_object(
    'uid', s.uid, 'session_id', g.session_id, 'external_session_id', s.uid,
    'segment', jsonb_build_object('id', g.omi_segment_id, 'text', g.text,
        'speaker', 'SPEAKER_0' || (g.position % 2), 'speaker_id', g.position % 2,
        'is_user', g.position % 2 = 0, 'person_id', NULL, 'start', g.start_s, 'end', g.end_s)),
    now()
FROM segments g JOIN sessions s ON s.id = g.session_id";

const SENTENCE: &str = "so the plan for tomorrow is to walk the new route before the meeting \
    and then write up what we saw on the way, including the bridge and the market";

/// What the floor reached in one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Floor {
    pub events_per_s: f64,
    pub wal_bytes_per_event: f64,
    pub table_bytes_per_event: f64,
    /// PostgreSQL's CPU microseconds per event.
    pub postgres_us_per_event: f64,
    /// The share of the machine's CPU time the hypervisor stole in the window.
    pub stolen: Option<f64>,
}

/// Runs the floor for [`MEASURE`] after [`WARM_UP`], in a database of its own that starts with
/// a checkpoint, as the worker alone does.
pub async fn measure(stack: &Stack) -> anyhow::Result<Floor> {
    let isolation = Isolation::new("storage-floor");
    let measured = measure_in(stack, &isolation).await;
    stack.remove(&isolation).await?;
    measured
}

async fn measure_in(stack: &Stack, isolation: &Isolation) -> anyhow::Result<Floor> {
    let url = stack.database_url(isolation);
    worker::db::migrate(&url).await?;
    let pool = PgPoolOptions::new()
        .max_connections(CONNECTIONS as u32 + 1)
        .connect(&url)
        .await?;
    checkpoint(&pool).await?;
    let until = Instant::now() + WARM_UP + MEASURE;
    let writers: Vec<_> = (0..CONNECTIONS)
        .map(|writer| tokio::spawn(write_until(pool.clone(), writer as i64, until)))
        .collect();
    tokio::time::sleep(WARM_UP).await;
    let (events_before, wal_before) = (stored_events(&pool).await?, wal_lsn(&pool).await?);
    let (cpu_before, started) = (cpu_seconds_of_command("postgres"), Instant::now());
    let machine_before = MachineCpu::now();
    tokio::time::sleep(MEASURE).await;
    let stolen = MachineCpu::stolen_since(machine_before);
    let cpu = cpu_seconds_of_command("postgres") - cpu_before;
    let (events_after, wal_after) = (stored_events(&pool).await?, wal_lsn(&pool).await?);
    let elapsed = started.elapsed();
    for writer in writers {
        writer.await??;
    }
    let stored = stored_events(&pool).await? as f64;
    let written = (events_after - events_before) as f64;
    let floor = Floor {
        events_per_s: written / elapsed.as_secs_f64(),
        wal_bytes_per_event: wal_bytes(&pool, &wal_before, &wal_after).await? / written,
        table_bytes_per_event: table_bytes(&pool).await? / stored,
        postgres_us_per_event: cpu * 1e6 / written.max(1.0),
        stolen,
    };
    pool.close().await;
    Ok(floor)
}

/// Writes transactions one after another until `until`; `writer` keeps its numbers apart.
async fn write_until(pool: PgPool, writer: i64, until: Instant) -> anyhow::Result<()> {
    let mut transaction = writer;
    while Instant::now() < until {
        sqlx::query(WRITE_EVENTS)
            .bind(transaction)
            .bind(SENTENCE)
            .bind(EVENTS_PER_TRANSACTION)
            .execute(&pool)
            .await?;
        transaction += CONNECTIONS as i64;
    }
    Ok(())
}

/// Writes every dirty buffer out now, so that no checkpoint the earlier phases' WAL made due
/// falls into a window and each window starts with the same full-page-write state.
pub async fn checkpoint(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("CHECKPOINT").execute(pool).await?;
    Ok(())
}

/// Events stored in the database: `inbound_events` rows, whoever wrote them.
pub async fn stored_events(pool: &PgPool) -> anyhow::Result<i64> {
    // Counting is cheap beside the writes: a few hundred thousand rows at most.
    Ok(sqlx::query_scalar("SELECT count(*) FROM inbound_events")
        .fetch_one(pool)
        .await?)
}

/// The cluster's current WAL position.
pub async fn wal_lsn(pool: &PgPool) -> anyhow::Result<String> {
    Ok(sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(pool)
        .await?)
}

/// WAL written between two positions (by the whole cluster: the benchmark is all that runs).
pub async fn wal_bytes(pool: &PgPool, from: &str, to: &str) -> anyhow::Result<f64> {
    Ok(
        sqlx::query_scalar("SELECT pg_wal_lsn_diff($2::pg_lsn, $1::pg_lsn)::float8")
            .bind(from)
            .bind(to)
            .fetch_one(pool)
            .await?,
    )
}

/// Bytes of the transcript tables with their indexes and TOAST.
pub async fn table_bytes(pool: &PgPool) -> anyhow::Result<f64> {
    let sql = format!(
        "SELECT sum(pg_total_relation_size(c.oid))::float8 FROM pg_class c
         WHERE c.relname IN ({TRANSCRIPT_TABLES}) AND c.relkind = 'r'
           AND c.relnamespace = 'public'::regnamespace"
    );
    Ok(sqlx::query_scalar(&sql).fetch_one(pool).await?)
}
