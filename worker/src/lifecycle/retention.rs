//! Retention: every `RETENTION_INTERVAL`, one worker deletes each kind of data older than its
//! `RETAIN_*` setting (README "Retention"), in batches of at most `RETENTION_BATCH` rows, each
//! its own short transaction, with `RETENTION_PAUSE` between two batches.
//!
//! One worker at a time: a pass runs on one pooled connection that first takes the session
//! advisory lock [`locks::RETENTION`] with `pg_try_advisory_lock`; a worker that does not get
//! it skips the pass. A worker that dies mid-pass closes its session, which frees the lock.
//!
//! No index is added on the insert path; each table is walked in an order it already has:
//! - by its time-ordered primary key (uuid v7, made when the row was): `inbound_events`,
//!   `audio_chunks`, `dead_letters`, `processing_failures`, `transcript_sessions`,
//!   `memory_events`, `day_summaries`. A batch is the next `RETENTION_BATCH` keys below the
//!   bound; those that also meet the table's condition (folded, completed) go.
//! - `audio_windows` by its primary key (uid, start_at), uid by uid from `audio_streams`.
//! - `outbox` by its uuid v7 id, in two walks: events older than `RETAIN_OUTBOX` whose
//!   deliveries all succeeded (or that had none), and events older than
//!   `RETAIN_FAILED_DELIVERIES` with no pending delivery. Deliveries go first, each re-checked
//!   under its row lock (a manual retry can make one pending again), then the events left with
//!   none; attempts go with their deliveries (cascade). The first walk keeps its place between
//!   passes, so events it skipped (a failed or a pending delivery) are not read again every
//!   pass; it starts over every [`REWALK`].
//! - the small tables with no time-ordered key (`reflector_transcripts`, `conversations`,
//!   `sleep_reports`, `sleep_inferences`, kept forever by default) by a scan that stops at the
//!   batch's rows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use uuid::Uuid;

use super::locks;
use crate::WorkerContext;
use crate::settings::RetentionSettings;

/// How long the first outbox walk keeps its place before it starts from the oldest row again.
pub const REWALK: Duration = Duration::from_secs(3600);

/// Every table retention deletes from, the `table` label of its metrics.
pub const TABLES: [&str; 14] = [
    "audio_chunks",
    "audio_windows",
    "outbox",
    "deliveries",
    "inbound_events",
    "dead_letters",
    "processing_failures",
    "transcript_sessions",
    "reflector_transcripts",
    "conversations",
    "memory_events",
    "day_summaries",
    "sleep_reports",
    "sleep_inferences",
];

/// Runs a pass every `RETENTION_INTERVAL` until `stopping` turns true.
pub async fn run(context: Arc<WorkerContext>, mut stopping: watch::Receiver<bool>) {
    let settings = &context.settings.retention;
    let mut every = tokio::time::interval(settings.interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut place = Place::default();
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
        let started = Instant::now();
        match pass(&context.pool, settings, &mut place, stopping.clone()).await {
            Ok(Some(_)) => {
                metrics::histogram!("lifecycle_retention_pass_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::gauge!("lifecycle_retention_last_success_timestamp_seconds")
                    .set(Utc::now().timestamp_millis() as f64 / 1000.0);
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "retention pass failed; retrying next interval"),
        }
    }
}

/// Where the first outbox walk stopped, kept between passes.
#[derive(Debug)]
pub struct Place {
    outbox: Uuid,
    since: Instant,
}

impl Default for Place {
    fn default() -> Self {
        Place {
            outbox: Uuid::nil(),
            since: Instant::now(),
        }
    }
}

/// Rows one pass deleted, by table.
pub type Deleted = Vec<(&'static str, u64)>;

/// One pass, if this session gets the advisory lock (`None` when another holds it). Stops
/// between two batches once `stopping` turns true.
pub async fn pass(
    pool: &PgPool,
    settings: &RetentionSettings,
    place: &mut Place,
    stopping: watch::Receiver<bool>,
) -> Result<Option<Deleted>, sqlx::Error> {
    let mut connection = crate::checkout::connection(pool).await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(locks::RETENTION)
        .fetch_one(&mut *connection)
        .await?;
    if !locked {
        return Ok(None);
    }
    let outcome = Pass::start(&mut connection, settings, stopping)
        .await?
        .run(place)
        .await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(locks::RETENTION)
        .execute(&mut *connection)
        .await;
    if outcome.is_err() || unlocked.is_err() {
        // A session that may still hold the lock is closed, never handed back to the pool.
        drop(connection.detach());
    }
    outcome.map(Some)
}

/// One pass in progress, on the connection that holds the lock.
struct Pass<'a> {
    connection: &'a mut PgConnection,
    settings: &'a RetentionSettings,
    stopping: watch::Receiver<bool>,
    /// The database's clock when the pass began: every bound is measured from it.
    now: DateTime<Utc>,
    deleted: Deleted,
}

impl<'a> Pass<'a> {
    async fn start(
        connection: &'a mut PgConnection,
        settings: &'a RetentionSettings,
        stopping: watch::Receiver<bool>,
    ) -> Result<Self, sqlx::Error> {
        let now = sqlx::query_scalar("SELECT now()")
            .fetch_one(&mut *connection)
            .await?;
        Ok(Pass {
            connection,
            settings,
            stopping,
            now,
            deleted: Vec::new(),
        })
    }

    async fn run(mut self, place: &mut Place) -> Result<Deleted, sqlx::Error> {
        let retain = self.settings.clone();
        self.by_key(&AUDIO_CHUNKS, retain.audio_pcm).await?;
        self.audio_windows(retain.audio_levels).await?;
        self.outbox(place).await?;
        self.by_key(&INBOUND_EVENTS, retain.inbound_events).await?;
        self.by_key(&DEAD_LETTERS, retain.dead_letters).await?;
        self.by_key(&PROCESSING_FAILURES, retain.dead_letters)
            .await?;
        for walk in [&TRANSCRIPT_SESSIONS, &MEMORY_EVENTS, &DAY_SUMMARIES] {
            self.by_key(walk, retain.transcripts).await?;
        }
        for walk in [&REFLECTOR_TRANSCRIPTS, &CONVERSATIONS] {
            self.by_scan(walk, retain.transcripts).await?;
        }
        for walk in [&SLEEP_REPORTS, &SLEEP_INFERENCES] {
            self.by_scan(walk, retain.sleep_reports).await?;
        }
        Ok(self.deleted)
    }

    /// The cut of a retention: rows older than this go.
    fn cut(&self, retain: Duration) -> DateTime<Utc> {
        chrono::Duration::from_std(retain)
            .ok()
            .and_then(|retain| self.now.checked_sub_signed(retain))
            .unwrap_or(DateTime::UNIX_EPOCH)
    }

    fn count(&mut self, table: &'static str, rows: i64) {
        let rows = rows.max(0) as u64;
        metrics::counter!("lifecycle_retention_deleted_rows_total", "table" => table)
            .increment(rows);
        match self.deleted.iter_mut().find(|(name, _)| *name == table) {
            Some((_, total)) => *total += rows,
            None => self.deleted.push((table, rows)),
        }
    }

    /// Waits `RETENTION_PAUSE` after a full batch; false once the worker is stopping.
    async fn pause(&mut self) -> bool {
        let paused = tokio::select! {
            _ = tokio::time::sleep(self.settings.pause) => true,
            _ = self.stopping.wait_for(|stop| *stop) => false,
        };
        paused && !*self.stopping.borrow()
    }

    async fn by_key(
        &mut self,
        walk: &KeyWalk,
        retain: Option<Duration>,
    ) -> Result<(), sqlx::Error> {
        let Some(retain) = retain else { return Ok(()) };
        let (cut, sql) = (self.cut(retain), walk.sql());
        let mut after = Uuid::nil();
        loop {
            let (examined, last, gone): (i64, Option<Uuid>, i64) = sqlx::query_as(&sql)
                .bind(after)
                .bind(v7_floor(cut))
                .bind(cut)
                .bind(self.settings.batch)
                .fetch_one(&mut *self.connection)
                .await?;
            self.count(walk.table, gone);
            match last {
                Some(last) if examined >= self.settings.batch && self.pause().await => after = last,
                _ => return Ok(()),
            }
        }
    }

    async fn by_scan(
        &mut self,
        walk: &ScanWalk,
        retain: Option<Duration>,
    ) -> Result<(), sqlx::Error> {
        let Some(retain) = retain else { return Ok(()) };
        let (cut, sql) = (self.cut(retain), walk.sql());
        loop {
            let gone: i64 = sqlx::query_scalar(&sql)
                .bind(cut)
                .bind(self.settings.batch)
                .fetch_one(&mut *self.connection)
                .await?;
            self.count(walk.table, gone);
            if gone < self.settings.batch || !self.pause().await {
                return Ok(());
            }
        }
    }

    /// Level windows older than the cut, uid by uid along the primary key; a window not yet
    /// sent in an `audio.level` event is kept until it is.
    async fn audio_windows(&mut self, retain: Option<Duration>) -> Result<(), sqlx::Error> {
        let Some(retain) = retain else { return Ok(()) };
        let cut = self.cut(retain);
        let uids: Vec<String> = sqlx::query_scalar("SELECT uid FROM audio_streams ORDER BY uid")
            .fetch_all(&mut *self.connection)
            .await?;
        for uid in uids {
            loop {
                let gone: i64 = sqlx::query_scalar(
                    "WITH gone AS (
                         DELETE FROM audio_windows WHERE (uid, start_at) IN (
                             SELECT uid, start_at FROM audio_windows
                             WHERE uid = $1 AND start_at < $2 AND emitted
                             ORDER BY start_at LIMIT $3)
                         RETURNING 1)
                     SELECT count(*) FROM gone",
                )
                .bind(&uid)
                .bind(cut)
                .bind(self.settings.batch)
                .fetch_one(&mut *self.connection)
                .await?;
                self.count("audio_windows", gone);
                if gone < self.settings.batch {
                    break;
                }
                if !self.pause().await {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The two outbox walks: events whose deliveries all succeeded, from where the last pass
    /// stopped; then, from the oldest, events with no pending delivery.
    async fn outbox(&mut self, place: &mut Place) -> Result<(), sqlx::Error> {
        if place.since.elapsed() >= REWALK {
            *place = Place::default();
        }
        let failed_bound = self
            .settings
            .failed_deliveries
            .map(|r| v7_floor(self.cut(r)));
        if let Some(retain) = self.settings.outbox {
            let start = place.outbox.max(failed_bound.unwrap_or_default());
            place.outbox = self
                .outbox_walk(start, v7_floor(self.cut(retain)), &["succeeded"])
                .await?;
        }
        if let Some(bound) = failed_bound {
            self.outbox_walk(Uuid::nil(), bound, &["succeeded", "failed"])
                .await?;
        }
        Ok(())
    }

    /// Walks the outbox from `after` to `bound`, deleting the events whose deliveries are all in
    /// `finished`, with those deliveries; returns the last id it read.
    async fn outbox_walk(
        &mut self,
        mut after: Uuid,
        bound: Uuid,
        finished: &[&str],
    ) -> Result<Uuid, sqlx::Error> {
        loop {
            let mut tx = self.connection.begin().await?;
            let (batch, deliveries): (Vec<Uuid>, i64) = sqlx::query_as(DELETE_FINISHED_DELIVERIES)
                .bind(after)
                .bind(bound)
                .bind(self.settings.batch)
                .bind(finished)
                .fetch_one(&mut *tx)
                .await?;
            let events: i64 = sqlx::query_scalar(DELETE_EVENTS_WITHOUT_DELIVERIES)
                .bind(&batch)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            self.count("deliveries", deliveries);
            self.count("outbox", events);
            let Some(last) = batch.last() else {
                return Ok(after);
            };
            after = *last;
            if (batch.len() as i64) < self.settings.batch || !self.pause().await {
                return Ok(after);
            }
        }
    }
}

/// The next batch of outbox ids after `$1` below `$2` (at most `$3`), and the deletion of the
/// deliveries, each in `$4`, of those events whose deliveries are all in `$4`. A delivery that
/// a manual retry made pending meanwhile fails the re-check under its row lock and stays.
const DELETE_FINISHED_DELIVERIES: &str = "
WITH batch AS (
    SELECT id FROM outbox WHERE id > $1 AND id < $2 ORDER BY id LIMIT $3
), gone AS (
    DELETE FROM deliveries d USING batch
    WHERE d.event_id = batch.id AND d.status = ANY($4)
      AND NOT EXISTS (SELECT 1 FROM deliveries other
                      WHERE other.event_id = d.event_id AND other.status <> ALL($4))
    RETURNING 1
)
SELECT ARRAY(SELECT id FROM batch ORDER BY id), (SELECT count(*) FROM gone)";

/// The events of the batch `$1` left without deliveries (a fresh snapshot, after the
/// deliveries' deletion). An event not fanned out yet stays for the sweeper.
const DELETE_EVENTS_WITHOUT_DELIVERIES: &str = "
WITH gone AS (
    DELETE FROM outbox o WHERE o.id = ANY($1) AND o.dispatched_at IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = o.id)
    RETURNING 1
)
SELECT count(*) FROM gone";

/// A table walked along its time-ordered (uuid v7) primary key.
struct KeyWalk {
    table: &'static str,
    key: &'static str,
    /// What else a row below the bound must meet to go; `$3` is the cut.
    condition: &'static str,
}

impl KeyWalk {
    /// Binds: `$1` after, `$2` the bound, `$3` the cut, `$4` the batch. Answers the keys read,
    /// the last of them and the rows deleted.
    fn sql(&self) -> String {
        let KeyWalk {
            table,
            key,
            condition,
        } = self;
        format!(
            "WITH batch AS (
                 SELECT {key} FROM {table} WHERE {key} > $1 AND {key} < $2 ORDER BY {key} LIMIT $4
             ), gone AS (
                 DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM batch) AND ({condition})
                 RETURNING 1
             )
             SELECT (SELECT count(*) FROM batch),
                    (SELECT {key} FROM batch ORDER BY {key} DESC LIMIT 1),
                    (SELECT count(*) FROM gone)"
        )
    }
}

const ALWAYS: &str = "$3::timestamptz IS NOT NULL";

const AUDIO_CHUNKS: KeyWalk = KeyWalk {
    table: "audio_chunks",
    key: "event_id",
    condition: "folded_at < $3",
};
const INBOUND_EVENTS: KeyWalk = KeyWalk {
    table: "inbound_events",
    key: "event_id",
    condition: ALWAYS,
};
const DEAD_LETTERS: KeyWalk = KeyWalk {
    table: "dead_letters",
    key: "id",
    condition: "dead_at < $3",
};
const PROCESSING_FAILURES: KeyWalk = KeyWalk {
    table: "processing_failures",
    key: "event_id",
    condition: "updated_at < $3",
};
const TRANSCRIPT_SESSIONS: KeyWalk = KeyWalk {
    table: "transcript_sessions",
    key: "id",
    condition: "completed_at < $3",
};
const MEMORY_EVENTS: KeyWalk = KeyWalk {
    table: "memory_events",
    key: "event_id",
    condition: ALWAYS,
};
const DAY_SUMMARIES: KeyWalk = KeyWalk {
    table: "day_summaries",
    key: "event_id",
    condition: ALWAYS,
};

/// A small table with no time-ordered key, scanned for rows older than the cut.
struct ScanWalk {
    table: &'static str,
    column: &'static str,
}

impl ScanWalk {
    /// Binds: `$1` the cut, `$2` the batch. Answers the rows deleted.
    fn sql(&self) -> String {
        let ScanWalk { table, column } = self;
        format!(
            "WITH gone AS (
                 DELETE FROM {table}
                 WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE {column} < $1 LIMIT $2))
                   AND {column} < $1
                 RETURNING 1)
             SELECT count(*) FROM gone"
        )
    }
}

const REFLECTOR_TRANSCRIPTS: ScanWalk = ScanWalk {
    table: "reflector_transcripts",
    column: "received_at",
};
const CONVERSATIONS: ScanWalk = ScanWalk {
    table: "conversations",
    column: "updated_at",
};
const SLEEP_REPORTS: ScanWalk = ScanWalk {
    table: "sleep_reports",
    column: "received_at",
};
const SLEEP_INFERENCES: ScanWalk = ScanWalk {
    table: "sleep_inferences",
    column: "received_at",
};

/// The smallest uuid v7 of the millisecond `at`: every v7 id made before `at` sorts below it.
pub fn v7_floor(at: DateTime<Utc>) -> Uuid {
    let millis = at.timestamp_millis().max(0) as u64;
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    Uuid::from_bytes(bytes)
}

/// Help text of the retention metrics, and every table's counter at 0.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "lifecycle_retention_deleted_rows_total",
        "Rows retention deleted, by table (rows that went by cascade are counted with their parent)"
    );
    describe_histogram!(
        "lifecycle_retention_pass_seconds",
        Unit::Seconds,
        "Seconds one retention pass took, pauses between batches included"
    );
    describe_gauge!(
        "lifecycle_retention_last_success_timestamp_seconds",
        "Unix time at which this worker last finished a retention pass"
    );
    for table in TABLES {
        metrics::counter!("lifecycle_retention_deleted_rows_total", "table" => table).increment(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v7_floor_sorts_between_ids_of_the_millisecond_before_and_its_own() {
        let at = Utc::now();
        let floor = v7_floor(at);
        let millis = |ms: i64| {
            let t = at.timestamp_millis() + ms;
            Uuid::new_v7(uuid::Timestamp::from_unix(
                uuid::NoContext,
                (t / 1000) as u64,
                ((t % 1000) * 1_000_000) as u32,
            ))
        };
        assert!(millis(-1) < floor);
        assert!(floor <= millis(0));
        assert_eq!(floor.get_version_num(), 0, "never an id itself");
    }
}
