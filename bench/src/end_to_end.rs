//! Benchmark 2: ingest and one worker together, from request to committed row.
//!
//! First at saturation (64 connections, closed loop): how many events per second are accepted
//! and how many are committed to Postgres over the same window, and what backlog is left (then
//! purged). Then at half the committed rate, on a fixed schedule: the time from each 202 to its
//! `inbound_events` row becoming visible to a reader, found by its dedup key with a query
//! every [`POLL`]; a time is therefore late by at most one poll and one query. In the same run,
//! the worker alone on a backlog ([`worker_alone`]) and the storage floor
//! ([`crate::storage_floor`]) write the same rows on the same footing (a fresh database, a
//! checkpoint, the same warm-up and window): the worker's rate, and its WAL and CPU per event,
//! are set beside the floor's.

use std::collections::HashMap;
use std::fmt::Write;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::Plan;
use crate::ingest::CONNECTIONS;
use crate::load::{self, Load, Pace, quantile_ms};
use crate::process::MachineCpu;
use crate::report::{median_of, median_ratio, peak_mib, stolen_percent};
use crate::requests::{Body, stored_key};
use crate::scale_out::Cpu;
use crate::stack::{Isolation, Server, Stack};
use crate::storage_floor::{self, Floor};

const POLL: Duration = Duration::from_millis(2);
/// How long the half-rate phase runs.
const HALF_RATE_MEASURE: Duration = Duration::from_secs(10);
/// Messages waiting before the worker alone starts: more than it stores in its warm-up and
/// window on a fast machine (about 6,000 events/s for 11 s).
const ALONE_BACKLOG: u32 = 100_000;
/// How long ingest loads the queue at a time while it fills to [`ALONE_BACKLOG`].
const FILL_STEP: Duration = Duration::from_secs(2);
/// How long filling may take in all before the phase gives up.
const FILL_LIMIT: Duration = Duration::from_secs(60);
/// Request numbers of one fill step: far more than a step sends.
const STEP_NUMBERS: u64 = 100_000_000;

#[derive(Debug)]
pub struct Run {
    pub accepted_per_s: f64,
    pub committed_per_s: f64,
    pub backlog_at_end: u32,
    /// The worker alone on a backlog, measured in the same run as the floor.
    pub alone: Alone,
    /// The same, with TLS to PostgreSQL (`sslmode=require`).
    pub alone_tls: Alone,
    /// The transcript tables' bytes (indexes and TOAST included) per stored event.
    pub table_bytes_per_event: f64,
    /// The storage floor measured in the same run.
    pub floor: Floor,
    pub half_rate: f64,
    pub commit_p50_ms: f64,
    pub commit_p99_ms: f64,
    pub commits_timed: usize,
    pub ingest_rss: Option<u64>,
    pub worker_rss: Option<u64>,
}

/// The storage phases of a run, after its saturation phase, in a rotated order (run 1 in this
/// order, run 2 from the second, and so on). The first of them runs while the machine is still
/// busy with the saturation phase's leftovers (RabbitMQ deleting a queue of tens of thousands
/// of messages, the kernel writing back a dropped database); in a fixed order the worker alone
/// always took that slot (one run of 2026-12-08: the worker alone 0.51 of the floor, the same
/// worker with TLS right after it 0.81).
#[derive(Clone, Copy, Debug)]
enum StoragePhase {
    Alone,
    AloneTls,
    Floor,
}

const STORAGE_PHASES: [StoragePhase; 3] = [
    StoragePhase::Alone,
    StoragePhase::AloneTls,
    StoragePhase::Floor,
];

pub async fn measure(stack: &Stack, plan: &Plan) -> anyhow::Result<Vec<Run>> {
    let mut runs = Vec::new();
    for run in 0..plan.runs {
        let isolation = Isolation::new("e2e");
        let measured = once(stack, plan, &isolation).await;
        stack.remove(&isolation).await?;
        let mut measured = measured?;
        for turn in 0..STORAGE_PHASES.len() {
            match STORAGE_PHASES[(run + turn) % STORAGE_PHASES.len()] {
                StoragePhase::Alone => {
                    measured.alone = worker_alone(stack, Transport::Plain).await?;
                }
                StoragePhase::AloneTls => {
                    measured.alone_tls = worker_alone(stack, Transport::Tls).await?;
                }
                StoragePhase::Floor => measured.floor = storage_floor::measure(stack).await?,
            }
        }
        eprintln!("end to end run {}: {measured:?}", run + 1);
        runs.push(measured);
    }
    Ok(runs)
}

async fn once(stack: &Stack, plan: &Plan, isolation: &Isolation) -> anyhow::Result<Run> {
    let worker = stack.start_worker(isolation).await?;
    let ingest = stack.start(Server::Ingest, isolation).await?;
    let pool = stack.database(isolation).await?;
    let stored = || storage_floor::stored_events(&pool);

    // Saturation: count the rows committed over the same window the load is measured in.
    let saturate = saturation(plan, plan.end_to_end_measure);
    let requests = Body::Transcript.requests(&format!("{}-full", isolation.prefix));
    let load = tokio::spawn(load::run(ingest.addr, saturate, requests, None));
    tokio::time::sleep(saturate.warm_up).await;
    let (before, window_start) = (stored().await?, Instant::now());
    tokio::time::sleep(saturate.measure).await;
    let (after, window_end) = (stored().await?, Instant::now());
    let outcome = load.await?;
    let committed_per_s = (after - before) as f64 / (window_end - window_start).as_secs_f64();
    let backlog_at_end = stack.queue_depth(isolation).await?;

    // The rest of the backlog purged; the worker alone is measured on a database of its own.
    stack.purge(isolation).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Half the committed rate, timing each event from its 202 to its row.
    let half_rate = plan
        .end_to_end_rate
        .unwrap_or(committed_per_s.min(outcome.accepted_per_s()) / 2.0);
    let (accepted, commits) = mpsc::unbounded_channel();
    let watcher = tokio::spawn(time_commits(pool.clone(), commits));
    let paced = Load {
        connections: CONNECTIONS,
        warm_up: Duration::ZERO,
        measure: HALF_RATE_MEASURE,
        pace: Pace::Rate(half_rate.max(1.0)),
    };
    let requests = Body::Transcript.requests(&format!("{}-half", isolation.prefix));
    load::run(ingest.addr, paced, requests, Some(accepted)).await;
    let commit_latencies = watcher.await??;
    let table_bytes_per_event = storage_floor::table_bytes(&pool).await? / stored().await? as f64;

    let measured = Run {
        accepted_per_s: outcome.accepted_per_s(),
        committed_per_s,
        backlog_at_end,
        alone: Alone::default(),
        alone_tls: Alone::default(),
        table_bytes_per_event,
        floor: Floor::default(),
        half_rate,
        commit_p50_ms: quantile_ms(&commit_latencies, 0.5),
        commit_p99_ms: quantile_ms(&commit_latencies, 0.99),
        commits_timed: commit_latencies.len(),
        ingest_rss: ingest.peak_rss(),
        worker_rss: worker.peak_rss(),
    };
    pool.close().await;
    ingest.stop().await;
    worker.stop().await;
    Ok(measured)
}

/// The worker alone on a backlog, set beside the floor ([`storage_floor`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Alone {
    /// Rows committed per second, ingest stopped.
    pub events_per_s: f64,
    /// WAL the cluster wrote per event.
    pub wal_bytes_per_event: f64,
    /// CPU microseconds per event: the worker's, PostgreSQL's and RabbitMQ's (delivery and
    /// ack).
    pub worker_us_per_event: f64,
    pub postgres_us_per_event: f64,
    pub rabbitmq_us_per_event: f64,
    /// The share of the machine's CPU time the hypervisor stole in the window.
    pub stolen: Option<f64>,
}

/// How the worker alone reaches PostgreSQL. Every other connection of the benchmark is plain
/// ([`Stack::database_url`]); this phase is measured both ways, so what TLS costs (managed
/// services require it) is a figure of its own rather than part of the storage ratio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Plain,
    Tls,
}

/// The worker's storage rate on the floor's footing: a fresh database, a checkpoint just
/// before, [`storage_floor::WARM_UP`] and then [`storage_floor::MEASURE`], ingest stopped. Ingest
/// first fills a queue of its own to [`ALONE_BACKLOG`] with no worker running; the phase fails
/// rather than report a rate that ran out of backlog. Measured this way, and not on the
/// saturation phase's leftover backlog, because the database there has grown by what the
/// saturation stored (several times `shared_buffers`) and checkpoints the saturation's WAL
/// forced fall into the window: both slowed the worker's figure against a floor that starts
/// empty, by as much as 0.48 against 0.74 in two runs of one evening.
async fn worker_alone(stack: &Stack, transport: Transport) -> anyhow::Result<Alone> {
    let isolation = Isolation::new("worker-alone");
    let measured = worker_alone_in(stack, &isolation, transport).await;
    stack.remove(&isolation).await?;
    measured
}

async fn worker_alone_in(
    stack: &Stack,
    isolation: &Isolation,
    transport: Transport,
) -> anyhow::Result<Alone> {
    let ingest = stack.start(Server::Ingest, isolation).await?;
    let requests = Body::Transcript.requests(&format!("{}-alone", isolation.prefix));
    let filling = Instant::now();
    let mut step = 0u64;
    while stack.queue_depth(isolation).await? < ALONE_BACKLOG {
        anyhow::ensure!(
            filling.elapsed() < FILL_LIMIT,
            "the backlog did not fill in {FILL_LIMIT:?}"
        );
        let fill = Load {
            connections: CONNECTIONS,
            warm_up: Duration::ZERO,
            measure: FILL_STEP,
            pace: Pace::Closed,
        };
        // Each step numbers its requests apart from the others', so no key repeats.
        let (make, offset) = (requests.clone(), step * STEP_NUMBERS);
        let numbered: load::MakeRequest = std::sync::Arc::new(move |n| make(offset + n));
        load::run(ingest.addr, fill, numbered, None).await;
        step += 1;
    }
    ingest.stop().await;

    let worker = match transport {
        Transport::Plain => stack.start_worker(isolation).await?,
        Transport::Tls => {
            let url = stack.database_url_with(isolation, "require");
            let addr = crate::process::free_addr()?;
            stack
                .start_worker_at(isolation, addr, &[("DATABASE_URL", url)])
                .await?
        }
    };
    let pool = stack.database(isolation).await?;
    storage_floor::checkpoint(&pool).await?;
    tokio::time::sleep(storage_floor::WARM_UP).await;
    let cpu = || Cpu::read(&[], std::slice::from_ref(&worker));
    let wal_before = storage_floor::wal_lsn(&pool).await?;
    let stored = || storage_floor::stored_events(&pool);
    let (before, cpu_before, started) = (stored().await?, cpu(), Instant::now());
    let machine_before = MachineCpu::now();
    tokio::time::sleep(storage_floor::MEASURE).await;
    let stolen = MachineCpu::stolen_since(machine_before);
    let (after, cpu_after, ended) = (stored().await?, cpu(), Instant::now());
    let wal_after = storage_floor::wal_lsn(&pool).await?;
    anyhow::ensure!(
        stack.queue_depth(isolation).await? > 0,
        "the worker ran out of backlog inside its window: raise ALONE_BACKLOG"
    );
    let drained = (after - before) as f64;
    let spent = cpu_after.since(cpu_before);
    let us_per_event = |seconds: f64| seconds * 1e6 / drained.max(1.0);
    let alone = Alone {
        events_per_s: drained / (ended - started).as_secs_f64(),
        wal_bytes_per_event: storage_floor::wal_bytes(&pool, &wal_before, &wal_after).await?
            / drained,
        worker_us_per_event: us_per_event(spent.worker),
        postgres_us_per_event: us_per_event(spent.postgres),
        rabbitmq_us_per_event: us_per_event(spent.rabbitmq),
        stolen,
    };
    pool.close().await;
    worker.stop().await;
    Ok(alone)
}

/// The saturating load both this benchmark and the scale-out one put on ingest: every
/// connection closed-loop, after the plan's warm-up, measured for `measure`.
pub fn saturation(plan: &Plan, measure: Duration) -> Load {
    Load {
        connections: CONNECTIONS,
        warm_up: plan.warm_up,
        measure,
        pace: Pace::Closed,
    }
}

/// Receives (idempotency key, time of 202) for each accepted request and polls for its row;
/// returns the sorted times to visibility in microseconds once the sender is gone and every
/// row was seen (or after 60 s more, leaving out what never appeared).
async fn time_commits(
    pool: sqlx::PgPool,
    mut accepted: mpsc::UnboundedReceiver<(String, Instant)>,
) -> anyhow::Result<Vec<u32>> {
    let mut pending: HashMap<(String, String), Instant> = HashMap::new();
    let mut latencies = Vec::new();
    let mut sender_gone_at: Option<Instant> = None;
    loop {
        loop {
            match accepted.try_recv() {
                Ok((key, at)) => {
                    pending.insert(stored_key(&key), at);
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    sender_gone_at.get_or_insert_with(Instant::now);
                    break;
                }
            }
        }
        if let Some(gone) = sender_gone_at
            && (pending.is_empty() || gone.elapsed() > Duration::from_secs(60))
        {
            break;
        }
        if !pending.is_empty() {
            let (uids, keys): (Vec<&str>, Vec<&str>) = pending
                .keys()
                .map(|(uid, key)| (uid.as_str(), key.as_str()))
                .unzip();
            // One probe of the dedup index (source, uid, dedup_key) per pending event.
            let visible: Vec<(String, String)> = sqlx::query_as(
                "SELECT e.uid, e.dedup_key FROM UNNEST($1::text[], $2::text[]) AS k (uid, dedup_key)
                 JOIN inbound_events e
                   ON e.source = 'omi' AND e.uid = k.uid AND e.dedup_key = k.dedup_key",
            )
            .bind(uids)
            .bind(keys)
            .fetch_all(&pool)
            .await?;
            let seen_at = Instant::now();
            for key in visible {
                if let Some(at) = pending.remove(&key) {
                    let micros = seen_at.duration_since(at).as_micros();
                    latencies.push(micros.min(u32::MAX as u128) as u32);
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
    latencies.sort_unstable();
    Ok(latencies)
}

pub fn table(runs: &[Run], ingest_floor_per_s: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| figure | median over runs |\n| --- | --- |\n\
         | accepted by ingest, 64 connections | {:.0} events/s |\n\
         | committed by one worker over the same window | {:.0} events/s |\n\
         | committed / accepted (within each run) | {:.2} |\n\
         | committed / the ingest floor's throughput (benchmark 1, transcripts) | {:.2} |\n\
         | backlog left in the queue when the load stopped | {:.0} messages |\n\
         | committed by the worker alone on a backlog (fresh database, ingest stopped; the floor's footing) | {:.0} events/s |\n\
         | storage floor: the same rows by plain SQL, 16 events a transaction, 4 connections | {:.0} events/s |\n\
         | worker alone / storage floor (within each run; target at least 0.8) | **{:.2}** |\n\
         | WAL per event, worker alone / floor | {:.0} / {:.0} bytes |\n\
         | CPU per event, worker alone: worker / PostgreSQL / RabbitMQ | {:.0} / {:.0} / {:.0} us |\n\
         | worker alone with TLS to PostgreSQL (`sslmode=require`) / without (within each run) | {:.2} ({:.0} events/s) |\n\
         | CPU per event, worker alone with TLS: worker / PostgreSQL | {:.0} / {:.0} us |\n\
         | CPU per event, floor: PostgreSQL | {:.0} us |\n\
         | CPU stolen by the hypervisor in the window, worker alone / floor | {} / {} |\n\
         | table bytes per event (with indexes and TOAST), worker / floor | {:.0} / {:.0} bytes |\n\
         | half rate, on a fixed schedule | {:.0} events/s |\n\
         | 202 to committed row, p50 | {:.1} ms |\n\
         | 202 to committed row, p99 | {:.1} ms |\n\
         | events timed per run | {:.0} |\n\
         | peak RSS, ingest / worker | {} / {} |",
        median_of(runs, |run| run.accepted_per_s),
        median_of(runs, |run| run.committed_per_s),
        median_ratio(runs, |run| run.committed_per_s, |run| run.accepted_per_s),
        median_of(runs, |run| run.committed_per_s) / ingest_floor_per_s,
        median_of(runs, |run| run.backlog_at_end as f64),
        median_of(runs, |run| run.alone.events_per_s),
        median_of(runs, |run| run.floor.events_per_s),
        median_ratio(
            runs,
            |run| run.alone.events_per_s,
            |run| run.floor.events_per_s
        ),
        median_of(runs, |run| run.alone.wal_bytes_per_event),
        median_of(runs, |run| run.floor.wal_bytes_per_event),
        median_of(runs, |run| run.alone.worker_us_per_event),
        median_of(runs, |run| run.alone.postgres_us_per_event),
        median_of(runs, |run| run.alone.rabbitmq_us_per_event),
        median_ratio(
            runs,
            |run| run.alone_tls.events_per_s,
            |run| run.alone.events_per_s
        ),
        median_of(runs, |run| run.alone_tls.events_per_s),
        median_of(runs, |run| run.alone_tls.worker_us_per_event),
        median_of(runs, |run| run.alone_tls.postgres_us_per_event),
        median_of(runs, |run| run.floor.postgres_us_per_event),
        stolen_percent(runs, |run| run.alone.stolen),
        stolen_percent(runs, |run| run.floor.stolen),
        median_of(runs, |run| run.table_bytes_per_event),
        median_of(runs, |run| run.floor.table_bytes_per_event),
        median_of(runs, |run| run.half_rate),
        median_of(runs, |run| run.commit_p50_ms),
        median_of(runs, |run| run.commit_p99_ms),
        median_of(runs, |run| run.commits_timed as f64),
        peak_mib(runs, |run| run.ingest_rss),
        peak_mib(runs, |run| run.worker_rss),
    );
    out
}
