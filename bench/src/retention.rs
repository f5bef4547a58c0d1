//! Benchmark: what retention costs ingest and the worker, and where the bytes go (issue 14).
//!
//! Each run measures retention off (every `RETAIN_*` forever) and on (events and outbox rows
//! kept 2 s, a pass every second, so it deletes about as fast as the worker stores), in turn,
//! alternating which goes first: ingest saturated for `BENCH_SECONDS` with the worker storing
//! beside it (ingest's accept rate), then the worker alone on the backlog left for as long (its
//! commit rate, from its own `worker_events_total`, which retention's deletes do not move), each
//! stated on / off within the run.
//!
//! Once, in the first run: the bytes on disk (tables, indexes and TOAST) per stored transcript
//! event, against the bytes of its request body, and per hour of 16 kHz audio: raw PCM, level
//! windows and the outbox rows of the `audio.level` events, against the PCM's own 115.2 MB an
//! hour. The audio is random noise ([`crate::requests`]), which TOAST cannot compress, as it
//! nearly cannot compress speech; a tone or silence would be stored in a few per cent of its
//! size and make the figure useless for sizing.

use std::fmt::Write;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::Plan;
use crate::end_to_end::saturation;
use crate::load::{self, Load, Pace};
use crate::process::{Service, free_addr};
use crate::report::{median_of, median_ratio};
use crate::requests::Body;
use crate::stack::{Isolation, Server, Stack};
use crate::storage_floor;

/// The audio sent once: 5 s chunks at this rate for this long (200 chunks, 16.7 minutes).
const AUDIO_RATE: f64 = 100.0;
const AUDIO_LOAD: Duration = Duration::from_secs(2);
/// How long the worker may take to store and fold the audio before it is measured anyway.
const AUDIO_SETTLE: Duration = Duration::from_secs(60);
/// The raw PCM of an hour at 16 kHz, 16-bit mono.
const PCM_BYTES_PER_HOUR: f64 = 16_000.0 * 2.0 * 3600.0;

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

/// One run: the rates with retention off and on.
#[derive(Debug, Default)]
pub struct Run {
    pub off: Rates,
    pub on: Rates,
}

/// What one pass (retention off or on) measured.
#[derive(Debug, Default)]
pub struct Rates {
    /// Requests ingest accepted per second, saturated, with the worker storing beside it.
    pub ingest_per_s: f64,
    /// Events committed per second by the worker alone on the backlog.
    pub worker_per_s: f64,
    /// Rows retention deleted per second while the worker was alone (`inbound_events` and
    /// `outbox`); 0 with retention off.
    pub deleted_per_s: f64,
    /// Bytes of the transcript tables per stored event.
    pub bytes_per_event: f64,
}

/// Bytes on disk, measured once with every retention off.
#[derive(Debug, Default)]
pub struct Sizes {
    /// Per stored transcript event (six segments), and the mean request body it came from.
    pub bytes_per_event: f64,
    pub body_bytes: f64,
    /// Per hour of 16 kHz audio: raw PCM (`audio_chunks`), level windows, and the
    /// `audio.level` outbox rows by the windows they carry (a lower bound).
    pub pcm_per_hour: f64,
    pub windows_per_hour: f64,
    pub levels_outbox_per_hour: f64,
}

pub async fn measure(stack: &Stack, plan: &Plan) -> anyhow::Result<(Vec<Run>, Sizes)> {
    let mut runs = Vec::new();
    for run in 0..plan.runs {
        // Alternate which goes first, so neither always has the warmer machine.
        let measured = if run % 2 == 0 {
            let off = pass_isolated(stack, plan, OFF).await?;
            let on = pass_isolated(stack, plan, ON).await?;
            Run { off, on }
        } else {
            let on = pass_isolated(stack, plan, ON).await?;
            let off = pass_isolated(stack, plan, OFF).await?;
            Run { off, on }
        };
        eprintln!("retention run {}: {measured:?}", run + 1);
        runs.push(measured);
    }
    let mut sizes = audio_isolated(stack).await?;
    sizes.bytes_per_event = runs.first().map_or(0.0, |run| run.off.bytes_per_event);
    sizes.body_bytes = mean_transcript_body();
    eprintln!("retention sizes: {sizes:?}");
    Ok((runs, sizes))
}

/// [`pass`] on an isolation of its own, removed afterwards whatever happened.
async fn pass_isolated(
    stack: &Stack,
    plan: &Plan,
    settings: &[(&str, &str)],
) -> anyhow::Result<Rates> {
    let isolation = Isolation::new("retention");
    let measured = pass(stack, plan, &isolation, settings).await;
    stack.remove(&isolation).await?;
    measured
}

/// [`audio`] on an isolation of its own, removed afterwards whatever happened.
async fn audio_isolated(stack: &Stack) -> anyhow::Result<Sizes> {
    let isolation = Isolation::new("retention-audio");
    let measured = audio(stack, &isolation).await;
    stack.remove(&isolation).await?;
    measured
}

fn env<'a>(pairs: &[(&'a str, &str)]) -> Vec<(&'a str, String)> {
    pairs
        .iter()
        .map(|(name, value)| (*name, value.to_string()))
        .collect()
}

/// Ingest saturated for the plan's measure with the worker storing beside it; then the
/// worker's rate alone on the backlog over as long, read from the queue's depth, and what
/// retention deleted meanwhile.
async fn pass(
    stack: &Stack,
    plan: &Plan,
    isolation: &Isolation,
    settings: &[(&str, &str)],
) -> anyhow::Result<Rates> {
    let worker = stack
        .start_worker_at(isolation, free_addr()?, &env(settings))
        .await?;
    let ingest = stack.start(Server::Ingest, isolation).await?;
    let pool = stack.database(isolation).await?;
    let requests = Body::Transcript.requests(&format!("{}-fill", isolation.prefix));
    let fill = load::run(ingest.addr, saturation(plan, plan.measure), requests, None).await;
    let rows_before = rows(&pool).await?;
    let (stored_before, started) = (stored_by(&worker).await, Instant::now());
    tokio::time::sleep(plan.measure).await;
    let (stored_after, elapsed) = (stored_by(&worker).await, started.elapsed());
    let rows_after = rows(&pool).await?;
    if stack.queue_depth(isolation).await? == 0 {
        eprintln!("retention: the backlog emptied before the drain window ended; rate too low");
    }
    let committed = stored_after - stored_before;
    let stored = storage_floor::stored_events(&pool).await?.max(1) as f64;
    let measured = Rates {
        ingest_per_s: fill.accepted_per_s(),
        worker_per_s: committed / elapsed.as_secs_f64(),
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

/// Transcript events the worker has stored, by its own counter: retention's deletes do not
/// move it, as they move a count of rows, and it is exact where the quorum queue's message
/// count lags and moves in steps.
async fn stored_by(worker: &Service) -> f64 {
    let exposition = shared::testkit::scrape(&format!("http://{}/metrics", worker.addr)).await;
    shared::testkit::sample(&exposition, STORED_SERIES).unwrap_or(0.0)
}

const STORED_SERIES: &str = r#"worker_events_total{kind="omi_transcript",outcome="stored"}"#;

/// Rows of `inbound_events` and `outbox` together.
async fn rows(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM inbound_events) + (SELECT count(*) FROM outbox)",
    )
    .fetch_one(pool)
    .await?)
}

/// The mean body of the transcript requests the passes send.
fn mean_transcript_body() -> f64 {
    const SAMPLE: u64 = 1_000;
    let requests = Body::Transcript.requests("size");
    let bytes: usize = (0..SAMPLE).map(|n| requests(n).body.len()).sum();
    bytes as f64 / SAMPLE as f64
}

/// Sends [`AUDIO_LOAD`] of 5 s noise chunks at [`AUDIO_RATE`] with every retention off, waits
/// until each is stored and folded, and divides each table's bytes by the hours stored.
async fn audio(stack: &Stack, isolation: &Isolation) -> anyhow::Result<Sizes> {
    let worker = stack
        .start_worker_at(isolation, free_addr()?, &env(OFF))
        .await?;
    let ingest = stack.start(Server::Ingest, isolation).await?;
    let pool = stack.database(isolation).await?;
    let requests = Body::Audio.requests(&format!("{}-audio", isolation.prefix));
    let paced = Load {
        connections: 16,
        warm_up: Duration::ZERO,
        measure: AUDIO_LOAD,
        pace: Pace::Rate(AUDIO_RATE),
    };
    load::run(ingest.addr, paced, requests, None).await;
    let deadline = Instant::now() + AUDIO_SETTLE;
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
    // In the benchmark one event carries a whole 5 s chunk's windows; a live stream sends one
    // a second with ten. Scaled by the windows carried, which leaves out the extra rows'
    // overhead: a lower bound.
    let per_window = total_bytes(&pool, "outbox").await? / windows.max(1) as f64;
    let measured = Sizes {
        pcm_per_hour: total_bytes(&pool, "audio_chunks").await? / hours,
        windows_per_hour: total_bytes(&pool, "audio_windows").await? / hours,
        levels_outbox_per_hour: per_window * 36_000.0,
        ..Sizes::default()
    };
    pool.close().await;
    ingest.stop().await;
    worker.stop().await;
    Ok(measured)
}

/// A table's bytes with its indexes and TOAST.
async fn total_bytes(pool: &PgPool, table: &str) -> anyhow::Result<f64> {
    Ok(
        sqlx::query_scalar("SELECT pg_total_relation_size($1::regclass)::float8")
            .bind(table)
            .fetch_one(pool)
            .await?,
    )
}

async fn unfolded(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM audio_chunks WHERE folded_at IS NULL")
            .fetch_one(pool)
            .await?,
    )
}

pub fn table(runs: &[Run], sizes: &Sizes) -> String {
    let mib = |bytes: f64| bytes / 1_048_576.0;
    let of_pcm = |bytes: f64| bytes / PCM_BYTES_PER_HOUR;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| figure | retention off | retention on | on / off, or on disk / as sent |\n\
         | --- | --- | --- | --- |\n\
         | ingest accepted, saturated, the worker storing beside it | {:.0}/s | {:.0}/s | **{:.2}** |\n\
         | committed by the worker alone on the backlog | {:.0}/s | {:.0}/s | **{:.2}** |\n\
         | rows retention deleted meanwhile (`inbound_events`, `outbox`) | | {:.0}/s | |\n\
         | bytes on disk per stored transcript event (6 segments; tables, indexes, TOAST), against its {:.0}-byte request body | {:.0} | | {:.2} |\n\
         | per hour of 16 kHz noise: raw PCM (`audio_chunks`, kept only if `RETAIN_AUDIO_PCM` > 0), against the PCM's {:.1} MiB | {:.1} MiB | | {:.2} |\n\
         | per hour of 16 kHz audio: level windows (`audio_windows`), against the PCM | {:.1} MiB | | {:.3} |\n\
         | per hour of 16 kHz audio: `audio.level` outbox rows, one a second (at least), against the PCM | {:.1} MiB | | {:.3} |",
        median_of(runs, |run| run.off.ingest_per_s),
        median_of(runs, |run| run.on.ingest_per_s),
        median_ratio(runs, |run| run.on.ingest_per_s, |run| run.off.ingest_per_s),
        median_of(runs, |run| run.off.worker_per_s),
        median_of(runs, |run| run.on.worker_per_s),
        median_ratio(runs, |run| run.on.worker_per_s, |run| run.off.worker_per_s),
        median_of(runs, |run| run.on.deleted_per_s),
        sizes.body_bytes,
        sizes.bytes_per_event,
        sizes.bytes_per_event / sizes.body_bytes.max(1.0),
        mib(PCM_BYTES_PER_HOUR),
        mib(sizes.pcm_per_hour),
        of_pcm(sizes.pcm_per_hour),
        mib(sizes.windows_per_hour),
        of_pcm(sizes.windows_per_hour),
        mib(sizes.levels_outbox_per_hour),
        of_pcm(sizes.levels_outbox_per_hour),
    );
    out
}
