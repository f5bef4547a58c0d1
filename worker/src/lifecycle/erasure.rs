//! Erasing a user: `DELETE /v1/users/{uid}` records a job in `erasures` ([`request`]), and a
//! background loop ([`run`]) deletes every row of that uid, table by table, in batches of at
//! most `ERASURE_BATCH` rows, each batch its own short transaction that also adds what it
//! deleted to the job's `counts` (so the counts are exactly what is gone, even when a worker
//! dies mid-job and another resumes it).
//!
//! One worker at a time works through the jobs: it holds a session-level advisory lock
//! ([`LOCK`]) on a connection of its own, taken out of the pool, for as long as it works and
//! closes that connection after, so the lock goes with it even if the task is cut short.
//!
//! The order matters: first the uid's pending deliveries are cancelled (nothing more is sent
//! for them), then transcripts, inbound events with what hangs off them (audio chunks, memory
//! events, day summaries), the tables keyed by uid, and last the outbox with every delivery and
//! attempt ([`crate::outbound::erase`]). The job is `done` once the last send that a claim
//! made before the cancel could still be making has ended.
//!
//! The job stays in `erasures` after it is done: the batch store drops an event of the uid
//! received before the job's `requested_at` ([`crate::handlers`]), so a message still in the
//! queue when the erasure started is not stored again.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tokio::sync::watch;
use uuid::Uuid;

use crate::WorkerContext;
use crate::outbound::erase;

pub use super::locks::ERASURE as LOCK;

/// A job as the management API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = ErasureJob)]
pub struct Job {
    pub id: Uuid,
    pub uid: String,
    pub status: String,
    pub requested_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Rows deleted so far, by table.
    #[schema(value_type = std::collections::HashMap<String, i64>)]
    pub counts: serde_json::Value,
    pub last_error: Option<String>,
}

const JOB: &str =
    "SELECT id, uid, status, requested_at, started_at, finished_at, counts, last_error
     FROM erasures";

/// Records an erasure of `uid`, or finds the one not yet done (a second request is the same
/// job).
pub async fn request(pool: &PgPool, uid: &str) -> Result<Job, sqlx::Error> {
    // A job committed by a concurrent request after this statement's snapshot is neither
    // inserted nor seen; the next statement sees it.
    loop {
        let job: Option<Job> = sqlx::query_as(&format!(
            "WITH created AS (
                 INSERT INTO erasures (id, uid) VALUES ($1, $2)
                 ON CONFLICT (uid) WHERE status <> 'done' DO NOTHING
                 RETURNING *
             )
             SELECT id, uid, status, requested_at, started_at, finished_at, counts, last_error
             FROM created
             UNION ALL ({JOB} WHERE uid = $2 AND status <> 'done')
             LIMIT 1"
        ))
        .bind(Uuid::now_v7())
        .bind(uid)
        .fetch_optional(pool)
        .await?;
        if let Some(job) = job {
            return Ok(job);
        }
    }
}

/// The latest erasure of `uid`, if there was one.
pub async fn latest(pool: &PgPool, uid: &str) -> Result<Option<Job>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{JOB} WHERE uid = $1 ORDER BY requested_at DESC LIMIT 1"
    ))
    .bind(uid)
    .fetch_optional(pool)
    .await
}

/// Works through the jobs every `ERASURE_POLL_MS` until `stopping` turns true.
pub async fn run(context: Arc<WorkerContext>, mut stopping: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(context.settings.erasure.poll_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
        if let Err(error) = pass(&context, &stopping).await {
            tracing::warn!(error = format!("{error:#}"), "erasure failed; retrying");
            metrics::counter!("worker_erasure_failures_total").increment(1);
        }
    }
}

/// If a job is waiting and no other session holds [`LOCK`], takes it and works through every
/// job.
async fn pass(context: &WorkerContext, stopping: &watch::Receiver<bool>) -> anyhow::Result<()> {
    // Another worker holding the lock (a one-key advisory lock shows its high and low halves
    // as classid and objid, objsubid 1) means nothing to do here: no connection is opened.
    let waiting: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM erasures WHERE status <> 'done')
             AND NOT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
                 AND classid = ($1 >> 32)::oid AND objid = ($1 & 4294967295)::oid
                 AND objsubid = 1 AND database = (SELECT oid FROM pg_database
                                                  WHERE datname = current_database()))",
    )
    .bind(LOCK)
    .fetch_one(&context.pool)
    .await?;
    if !waiting {
        return Ok(());
    }
    // Out of the pool: closing it after (or dropping it, if this is cut short) ends the
    // session, and the lock with it; a pooled connection would keep the lock.
    let mut connection = crate::checkout::connection(&context.pool).await?.detach();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(LOCK)
        .fetch_one(&mut connection)
        .await?;
    let worked = match locked {
        true => work_through(&mut connection, context, stopping).await,
        false => Ok(()),
    };
    let _ = sqlx::Connection::close(connection).await;
    worked
}

/// Erases job after job, oldest first, until none is left or the worker stops.
async fn work_through(
    connection: &mut PgConnection,
    context: &WorkerContext,
    stopping: &watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let limit = context.settings.erasure.batch as i64;
    while !*stopping.borrow() {
        let next: Option<(Uuid, String)> = sqlx::query_as(
            "UPDATE erasures SET status = 'running', started_at = coalesce(started_at, now())
             WHERE id = (SELECT id FROM erasures WHERE status <> 'done'
                         ORDER BY requested_at LIMIT 1)
             RETURNING id, uid",
        )
        .fetch_optional(&mut *connection)
        .await?;
        let Some((id, uid)) = next else {
            return Ok(());
        };
        tracing::info!(%id, "erasing a user");
        if let Err(error) = erase(connection, id, &uid, limit, stopping).await {
            let _ = sqlx::query("UPDATE erasures SET last_error = $2 WHERE id = $1")
                .bind(id)
                .bind(format!("{error:#}"))
                .execute(&mut *connection)
                .await;
            return Err(error.into());
        }
    }
    Ok(())
}

/// Every step in order, then the wait for sends in flight, then `done`; returns early (the
/// job stays `running`, to be resumed) when the worker stops.
async fn erase(
    connection: &mut PgConnection,
    id: Uuid,
    uid: &str,
    limit: i64,
    stopping: &watch::Receiver<bool>,
) -> Result<(), sqlx::Error> {
    for step in STEPS {
        let mut after = Uuid::nil();
        loop {
            if *stopping.borrow() {
                return Ok(());
            }
            let mut tx = sqlx::Connection::begin(&mut *connection).await?;
            let batch = step.run(&mut tx, uid, after, limit).await?;
            record(&mut tx, id, &batch).await?;
            tx.commit().await?;
            match batch.after {
                Some(next) if batch.more => after = next,
                _ if batch.more => {}
                _ => break,
            }
        }
    }
    wait_for_sends(connection, id, stopping.clone()).await?;
    sqlx::query(
        "UPDATE erasures SET status = 'done', finished_at = now(), last_error = NULL
         WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *connection)
    .await?;
    metrics::counter!("worker_erasures_done_total").increment(1);
    tracing::info!(%id, "user erased");
    Ok(())
}

/// Sleeps until the job's `sends_end_by` (or the worker stops).
async fn wait_for_sends(
    connection: &mut PgConnection,
    id: Uuid,
    mut stopping: watch::Receiver<bool>,
) -> Result<(), sqlx::Error> {
    let until: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT sends_end_by FROM erasures WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *connection)
            .await?;
    if let Some(wait) = until.and_then(|until| (until - Utc::now()).to_std().ok()) {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopping.wait_for(|stop| *stop) => {}
        }
    }
    Ok(())
}

/// Adds a batch's counts (zeros included, so every table shows) and `sends_end_by` to the job.
async fn record(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    batch: &Batch,
) -> Result<(), sqlx::Error> {
    let (tables, rows): (Vec<&str>, Vec<i64>) = batch
        .counts
        .iter()
        .map(|(table, rows)| (*table, *rows as i64))
        .unzip();
    for (table, rows) in &batch.counts {
        metrics::counter!("worker_erasure_rows_total", "table" => *table).increment(*rows);
    }
    sqlx::query(
        "UPDATE erasures SET last_error = NULL,
             sends_end_by = greatest(sends_end_by, $4),
             counts = (SELECT jsonb_object_agg(key, total) FROM (
                 SELECT key, sum(rows)::bigint AS total FROM (
                     SELECT key, value::bigint AS rows FROM jsonb_each_text(counts)
                     UNION ALL SELECT * FROM UNNEST($2::text[], $3::bigint[])
                 ) every GROUP BY key) summed)
         WHERE id = $1",
    )
    .bind(id)
    .bind(tables)
    .bind(rows)
    .bind(batch.sends_end_by)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// What one batch of a step did.
#[derive(Debug, Default)]
struct Batch {
    counts: Vec<(&'static str, u64)>,
    /// Whether the step has more to do.
    more: bool,
    /// Where the next batch starts, for a step that walks rows it does not delete.
    after: Option<Uuid>,
    sends_end_by: Option<DateTime<Utc>>,
}

impl Batch {
    /// One table's rows deleted by a batch of at most `limit`.
    fn deleted(table: &'static str, rows: u64, limit: i64) -> Self {
        Batch {
            counts: vec![(table, rows)],
            more: rows >= limit as u64,
            ..Default::default()
        }
    }
}

/// One kind of row to delete; [`STEPS`] says in which order.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// The pending deliveries of the uid's outbox events, walked by event id.
    CancelDeliveries,
    /// Rows of a session of the uid: segments, then speakers (segments refer to them).
    OfSessions(&'static str),
    /// The uid's inbound events, with the rows that refer to them.
    InboundEvents,
    /// A table with a `uid` column (and an index leading with it): rows of the uid.
    ByUid(&'static str),
    /// The outbox events with their deliveries and attempts.
    OutboxEvents,
}

const STEPS: [Step; 14] = [
    Step::CancelDeliveries,
    Step::OfSessions("transcript_segments"),
    Step::OfSessions("transcript_speakers"),
    Step::ByUid("transcript_sessions"),
    Step::InboundEvents,
    Step::ByUid("conversations"),
    Step::ByUid("sleep_inferences"),
    Step::ByUid("sleep_reports"),
    Step::ByUid("reflector_transcripts"),
    // After the chunks (with the inbound events): a fold in progress finishes first.
    Step::ByUid("audio_windows"),
    Step::ByUid("audio_streams"),
    Step::ByUid("processing_failures"),
    Step::ByUid("dead_letters"),
    Step::OutboxEvents,
];

impl Step {
    async fn run(
        self,
        tx: &mut Transaction<'_, Postgres>,
        uid: &str,
        after: Uuid,
        limit: i64,
    ) -> Result<Batch, sqlx::Error> {
        match self {
            Step::CancelDeliveries => cancel_deliveries(tx, uid, after, limit).await,
            Step::OfSessions(table) => {
                let rows = sqlx::query(&format!(
                    "DELETE FROM {table} WHERE id = ANY (ARRAY(
                         SELECT r.id FROM transcript_sessions s
                         JOIN {table} r ON r.session_id = s.id
                         WHERE s.uid = $1 LIMIT $2))"
                ))
                .bind(uid)
                .bind(limit)
                .execute(&mut **tx)
                .await?;
                Ok(Batch::deleted(table, rows.rows_affected(), limit))
            }
            Step::InboundEvents => inbound_events(tx, uid, limit).await,
            Step::ByUid(table) => {
                // By row address (a TID scan): `key IN (subquery)` was planned as a semi join
                // that read every row of the uid for each batch. A row updated since the
                // subquery read it is skipped (its address changed), so the step goes on
                // until a batch deletes nothing, not until one is short.
                let rows = sqlx::query(&format!(
                    "DELETE FROM {table} WHERE ctid = ANY (ARRAY(
                         SELECT ctid FROM {table} WHERE uid = $1 LIMIT $2))"
                ))
                .bind(uid)
                .bind(limit)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                Ok(Batch {
                    counts: vec![(table, rows)],
                    more: rows > 0,
                    ..Default::default()
                })
            }
            Step::OutboxEvents => {
                let erased = erase::erase_events(tx, uid, limit).await?;
                Ok(Batch {
                    counts: vec![
                        ("outbox", erased.outbox),
                        ("deliveries", erased.deliveries),
                        ("delivery_attempts", erased.attempts),
                    ],
                    more: erased.outbox >= limit as u64,
                    ..Default::default()
                })
            }
        }
    }
}

async fn cancel_deliveries(
    tx: &mut Transaction<'_, Postgres>,
    uid: &str,
    after: Uuid,
    limit: i64,
) -> Result<Batch, sqlx::Error> {
    let cancelled = erase::cancel_pending(tx, uid, after, limit).await?;
    Ok(Batch {
        counts: vec![
            ("deliveries", cancelled.deliveries),
            ("delivery_attempts", cancelled.attempts),
        ],
        more: cancelled.last_event.is_some(),
        after: cancelled.last_event,
        sends_end_by: cancelled.sends_end_by,
    })
}

/// The sources, whose names lead the dedup constraint `(source, uid, dedup_key)` that finds a
/// uid's inbound events.
fn sources() -> Vec<&'static str> {
    let mut sources: Vec<&str> = shared::EventKind::ALL
        .iter()
        .map(|kind| kind.source().as_str())
        .collect();
    sources.sort_unstable();
    sources.dedup();
    sources
}

/// Up to `limit` inbound events of `uid` and the rows that refer to them (a segment stored
/// since the sessions' step went, too).
async fn inbound_events(
    tx: &mut Transaction<'_, Postgres>,
    uid: &str,
    limit: i64,
) -> Result<Batch, sqlx::Error> {
    let events: Vec<Uuid> = sqlx::query_scalar(
        "SELECT event_id FROM inbound_events WHERE source = ANY ($2) AND uid = $1 LIMIT $3",
    )
    .bind(uid)
    .bind(sources())
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?;
    let mut counts = Vec::new();
    for table in [
        "audio_chunks",
        "memory_events",
        "day_summaries",
        "transcript_segments",
        "inbound_events",
    ] {
        let rows = sqlx::query(&format!("DELETE FROM {table} WHERE event_id = ANY ($1)"))
            .bind(&events)
            .execute(&mut **tx)
            .await?;
        counts.push((table, rows.rows_affected()));
    }
    Ok(Batch {
        counts,
        more: events.len() as i64 >= limit,
        ..Default::default()
    })
}

/// Help text of the erasure loop's metrics.
pub fn describe_metrics() {
    use metrics::describe_counter;
    describe_counter!(
        "worker_erasure_rows_total",
        "Rows deleted by user erasures, by table"
    );
    describe_counter!("worker_erasures_done_total", "User erasures finished");
    describe_counter!(
        "worker_erasure_failures_total",
        "Erasure batches that failed (the job is retried on the next poll)"
    );
}
