//! Benchmark: what retention costs the worker, and where the bytes go (issue 14).
//!
//! The worker's committed rate alone on a backlog of transcript events, with retention off
//! (every `RETAIN_*` forever) and on (events and outbox rows kept 2 s, a pass every second, so
//! it deletes about as fast as the worker stores), in the same run, as a ratio. Then the bytes
//! on disk (table, indexes and TOAST) per stored transcript event, and per hour of 16 kHz
//! audio: raw PCM, level windows and the outbox rows of the `audio.level` events, so a user can
//! size Postgres.

use std::fmt::Write;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::Plan;
use crate::end_to_end::saturation;
use crate::load;
use crate::process::free_addr;
use crate::report::median_of;
use crate::requests::Body;
use crate::stack::{Isolation, Server, Stack};
use crate::storage_floor;

/// How long ingest fills the backlog, and how long the worker's rate alone on it is measured.
const FILL: Duration = Duration::from_secs(8);
const DRAIN: Duration = Duration::from_secs(8);
/// How long the audio load runs (64 connections of 5 s chunks).
const AUDIO_LOAD: Duration = Duration::from_secs(3);

const OFF: &[(&str, &str)] = &[
    ("RETAIN_AUDIO_PCM", "forever"),
    ("RETAIN_AUDIO_LEVELS", "forever"),
    ("RETAIN_OUTBOX", "forever"),
    ("RETAIN_FAILED_DELIVERIES", "forever"),
    ("RETAIN_INBOUND_EVENTS", "forever"),
    ("RETAIN_TRANSCRIPTS", "forever"),
    ("SESSION_IDLE_MS", "1000"),
];
const ON: &[(&str, &str)] = &[
    ("RETAIN_OUTBOX", "2s"),
    ("RETAIN_FAILED_DELIVERIES", "2s"),
    ("RETAIN_INBOUND_EVENTS", "2s"),
    ("RETAIN_TRANSCRIPTS", "2s"),
    ("RETENTION_INTERVAL", "1s"),
    ("SESSION_IDLE_MS", "1000"),
];

#[derive(Debug, Default)]
pub struct Run {
    /// Events committed per second by the worker alone on the backlog, retention off.
    pub off_per_s: f64,
    /// The same with retention deleting.
    pub on_per_s: f64,
    /// Rows retention deleted per second meanwhile (`inbound_events` and `outbox`).
    pub deleted_per_s: f64,
    /// Bytes of the transcript tables per stored event (retention off).
    pub bytes_per_event: f64,
    /// Bytes per hour of 16 kHz audio: raw PCM (`audio_chunks`), level windows, and the
    /// `audio.level` outbox rows by the windows they carry (a lower bound).
    pub pcm_per_hour: f64,
    pub windows_per_hour: f64,
    pub levels_outbox_per_hour: f64,
}

/// What one backlog drain measured.
struct Drain {
    per_s: f64,
    deleted_per_s: f64,
    bytes_per_event: f64,
}

pub async fn measure(stack: &Stack, plan: &Plan) -> anyhow::Result<Vec<Run>> {
    let mut runs = Vec::new();
    for run in 0..plan.runs {
        // Alternate which goes first, so neither always has the warmer machine.
        let (off, on) = if run % 2 == 0 {
            let off = drain_isolated(stack, plan, OFF).await?;
            (off, drain_isolated(stack, plan, ON).await?)
        } else {
            let on = drain_isolated(stack, plan, ON).await?;
            (drain_isolated(stack, plan, OFF).await?, on)
        };
        let mut measured = audio_isolated(stack, plan).await?;
        measured.off_per_s = off.per_s;
        measured.on_per_s = on.per_s;
        measured.deleted_per_s = on.deleted_per_s;
        measured.bytes_per_event = off.bytes_per_event;
        eprintln!("retention run {}: {measured:?}", run + 1);
        runs.push(measured);
    }
    Ok(runs)
}

/// [`drain`] on an isolation of its own, removed afterwards whatever happened.
async fn drain_isolated(
    stack: &Stack,
    plan: &Plan,
    settings: &[(&str, &str)],
) -> anyhow::Result<Drain> {
    let isolation = Isolation::new("retention");
    let measured = drain(stack, plan, &isolation, settings).await;
    stack.remove(&isolation).await?;
    measured
}

/// [`audio`] on an isolation of its own, removed afterwards whatever happened.
async fn audio_isolated(stack: &Stack, plan: &Plan) -> anyhow::Result<Run> {
    let isolation = Isolation::new("retention-audio");
    let measured = audio(stack, plan, &isolation).await;
    stack.remove(&isolation).await?;
    measured
}

fn env<'a>(pairs: &[(&'a str, &str)]) -> Vec<(&'a str, String)> {
    pairs
        .iter()
        .map(|(name, value)| (*name, value.to_string()))
        .collect()
}

/// Ingest fills a backlog for [`FILL`]; then the worker's rate alone on it over [`DRAIN`],
/// read from the queue's depth, and what retention deleted meanwhile.
async fn drain(
    stack: &Stack,
    plan: &Plan,
    isolation: &Isolation,
    settings: &[(&str, &str)],
) -> anyhow::Result<Drain> {
    let worker = stack
        .start_worker_at(isolation, free_addr()?, &env(settings))
        .await?;
    let ingest = stack.start(Server::Ingest, isolation).await?;
    let pool = stack.database(isolation).await?;
    let requests = Body::Transcript.requests(&format!("{}-fill", isolation.prefix));
    load::run(ingest.addr, saturation(plan, FILL), requests, None).await;
    let rows_before = rows(&pool).await?;
    let (depth_before, started) = (stack.queue_depth(isolation).await?, Instant::now());
    tokio::time::sleep(DRAIN).await;
    let (depth_after, elapsed) = (stack.queue_depth(isolation).await?, started.elapsed());
    let rows_after = rows(&pool).await?;
    if depth_after == 0 {
        eprintln!("retention: the backlog emptied before the drain window ended; rate too low");
    }
    let committed = depth_before.saturating_sub(depth_after) as f64;
    let stored = storage_floor::stored_events(&pool).await?.max(1) as f64;
    let measured = Drain {
        per_s: committed / elapsed.as_secs_f64(),
        // Each event adds one inbound_events row and six outbox rows.
        deleted_per_s: (committed * 7.0 - (rows_after - rows_before) as f64).max(0.0)
            / elapsed.as_secs_f64(),
        bytes_per_event: storage_floor::table_bytes(&pool).await? / stored,
    };
    pool.close().await;
    ingest.stop().await;
    worker.stop().await;
    Ok(measured)
}

/// Rows of `inbound_events` and `outbox` together.
async fn rows(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM inbound_events) + (SELECT count(*) FROM outbox)",
    )
    .fetch_one(pool)
    .await?)
}

/// Stores [`AUDIO_LOAD`] of 5 s audio chunks with every retention off, waits until each is
/// folded, and divides each table's bytes by the hours of audio stored.
async fn audio(stack: &Stack, plan: &Plan, isolation: &Isolation) -> anyhow::Result<Run> {
    let worker = stack
        .start_worker_at(isolation, free_addr()?, &env(OFF))
        .await?;
    let ingest = stack.start(Server::Ingest, isolation).await?;
    let pool = stack.database(isolation).await?;
    let requests = Body::Audio.requests(&format!("{}-audio", isolation.prefix));
    let mut paced = saturation(plan, AUDIO_LOAD);
    paced.warm_up = Duration::ZERO;
    load::run(ingest.addr, paced, requests, None).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while (stack.queue_depth(isolation).await? > 0 || unfolded(&pool).await? > 0)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (chunks, windows): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM audio_chunks), (SELECT count(*) FROM audio_windows)",
    )
    .fetch_one(&pool)
    .await?;
    let hours = (chunks as f64 * 5.0 / 3600.0).max(f64::MIN_POSITIVE);
    let bytes = |table: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, f64>("SELECT pg_total_relation_size($1::regclass)::float8")
                .bind(table)
                .fetch_one(&pool)
                .await
        }
    };
    // In the benchmark one event carries a whole 5 s chunk's windows; a live stream sends one
    // a second with ten. Scaled by the windows carried, which leaves out the extra rows'
    // overhead: a lower bound.
    let per_window = bytes("outbox").await? / windows.max(1) as f64;
    let measured = Run {
        pcm_per_hour: bytes("audio_chunks").await? / hours,
        windows_per_hour: bytes("audio_windows").await? / hours,
        levels_outbox_per_hour: per_window * 36_000.0,
        ..Run::default()
    };
    pool.close().await;
    ingest.stop().await;
    worker.stop().await;
    Ok(measured)
}

async fn unfolded(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM audio_chunks WHERE folded_at IS NULL")
            .fetch_one(pool)
            .await?,
    )
}

pub fn table(runs: &[Run]) -> String {
    let mib = |bytes: f64| bytes / 1_048_576.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| figure | median over runs |\n| --- | --- |\n\
         | committed by one worker alone on a backlog, retention off | {:.0} events/s |\n\
         | the same, retention deleting (events and outbox kept 2 s, a pass a second) | {:.0} events/s |\n\
         | with / without retention (within each run) | **{:.2}** |\n\
         | rows retention deleted meanwhile (`inbound_events`, `outbox`) | {:.0} rows/s |\n\
         | bytes on disk per stored transcript event (6 segments; tables, indexes, TOAST) | {:.0} bytes |\n\
         | per hour of 16 kHz audio: raw PCM (`audio_chunks`, kept only if `RETAIN_AUDIO_PCM` > 0) | {:.1} MiB |\n\
         | per hour of 16 kHz audio: level windows (`audio_windows`) | {:.1} MiB |\n\
         | per hour of 16 kHz audio: `audio.level` outbox rows, one a second (at least) | {:.1} MiB |",
        median_of(runs, |run| run.off_per_s),
        median_of(runs, |run| run.on_per_s),
        crate::report::median_ratio(runs, |run| run.on_per_s, |run| run.off_per_s),
        median_of(runs, |run| run.deleted_per_s),
        median_of(runs, |run| run.bytes_per_event),
        mib(median_of(runs, |run| run.pcm_per_hour)),
        mib(median_of(runs, |run| run.windows_per_hour)),
        mib(median_of(runs, |run| run.levels_outbox_per_hour)),
    );
    out
}
