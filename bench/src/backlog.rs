//! Benchmark 4: one endpoint's deliveries beside a dead endpoint's deep backlog (issue 19).
//!
//! In one worker and database, after a warm-up drain and an ANALYZE: a healthy endpoint's
//! delivery rate alone; then an endpoint whose host refuses connections (a closed loopback
//! port) gets [`BACKLOG`] due deliveries, inserted with one statement (then vacuumed, as
//! autovacuum would long have done with a backlog that built up over hours), and once its
//! circuit has opened, a second healthy endpoint drains the same number as the first: the ratio
//! of the two rates says what the backlog costs the others.
//! Then, with the backlog still there, events committed one at a time at each of
//! [`LATENCY_RATES`] (to a new healthy endpoint each) give the time from each event's
//! transaction to its first attempt (both read from Postgres: `outbox.created_at` and the first
//! `delivery_attempts` row).

use std::fmt::Write;
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;
use worker::outbound::outbox::EventType;

use crate::Plan;
use crate::deliveries::{create_endpoint, delivered_per_s, emit};
use crate::floors::Receiver;
use crate::process::{Service, free_addr};
use crate::report::{median_of, median_ratio};
use crate::stack::{Isolation, Stack};

/// Due deliveries behind the dead endpoint.
const BACKLOG: i64 = 200_000;
/// Deliveries each healthy endpoint drains, alone and beside the backlog.
const HEALTHY_DELIVERIES: i64 = 5_000;
/// Events per second, each its own transaction, and for how long, for the commit-to-first-attempt
/// latency: the issue 19 rate and the issue 16 one.
const LATENCY_RATES: [u64; 2] = [100, 1_000];
const LATENCY_SECONDS: u64 = 5;
/// Connections committing the latency events, so commits never queue behind one another.
const LATENCY_CONNECTIONS: u32 = 8;
/// The worker's default consecutive failures before an endpoint's circuit opens.
const CIRCUIT_FAILURE_THRESHOLD: i64 = 5;

#[derive(Debug)]
pub struct Run {
    pub alone: f64,
    pub beside: f64,
    /// Per rate of [`LATENCY_RATES`]: p50 and p99 in ms from commit to first attempt.
    pub first_attempt_ms: Vec<(f64, f64)>,
}

pub async fn measure(stack: &Stack, plan: &Plan) -> anyhow::Result<Vec<Run>> {
    let mut runs = Vec::new();
    for run in 0..plan.runs {
        let isolation = Isolation::new("backlog");
        let measured = measure_in(stack, &isolation).await;
        stack.remove(&isolation).await?;
        let measured = measured?;
        eprintln!("backlog run {}: {measured:?}", run + 1);
        runs.push(measured);
    }
    Ok(runs)
}

async fn measure_in(stack: &Stack, isolation: &Isolation) -> anyhow::Result<Run> {
    let worker = stack.start_worker(isolation).await?;
    let pool = stack.database(isolation).await?;
    let receiver = Receiver::answering().await?;
    // A fresh worker's first drain pays for its connections and statement caches, and a table
    // never analyzed for its plans: neither belongs to "alone".
    healthy_rate(
        &worker,
        &pool,
        &receiver,
        EventType::TranscriptSegment,
        "warm-up",
    )
    .await?;
    sqlx::query("VACUUM (ANALYZE) deliveries, outbox")
        .execute(&pool)
        .await?;
    let alone = healthy_rate(&worker, &pool, &receiver, EventType::AudioLevel, "alone").await?;
    let dead_url = format!("http://{}/hook", free_addr()?);
    let dead = create_endpoint(&worker, &dead_url, EventType::SleepInference).await?;
    insert_backlog(&pool, dead).await?;
    circuit_opened(&pool, dead).await?;
    let beside = healthy_rate(
        &worker,
        &pool,
        &receiver,
        EventType::ListeningStatus,
        "beside the backlog",
    )
    .await?;
    let committing = sqlx::postgres::PgPoolOptions::new()
        .max_connections(LATENCY_CONNECTIONS)
        .connect(&stack.database_url(isolation))
        .await?;
    let event_types = [EventType::MemoryCreated, EventType::DaySummaryCreated];
    let mut first_attempt_ms = Vec::new();
    for (rate, event_type) in LATENCY_RATES.into_iter().zip(event_types) {
        let latency = Latency {
            rate,
            event_type,
            committing: &committing,
        };
        first_attempt_ms.push(latency.measure(&worker, &receiver).await?);
    }
    committing.close().await;
    pool.close().await;
    worker.stop().await;
    Ok(Run {
        alone,
        beside,
        first_attempt_ms,
    })
}

/// A new endpoint at `receiver` for `event_type` drains [`HEALTHY_DELIVERIES`]: per second.
async fn healthy_rate(
    worker: &Service,
    pool: &PgPool,
    receiver: &Receiver,
    event_type: EventType,
    case: &str,
) -> anyhow::Result<f64> {
    let endpoint = create_endpoint(worker, &receiver.url(), event_type).await?;
    emit(pool, event_type, HEALTHY_DELIVERIES).await?;
    delivered_per_s(pool, &[endpoint], HEALTHY_DELIVERIES, case).await
}

/// [`BACKLOG`] events and a due delivery of each to `endpoint`, with one statement.
async fn insert_backlog(pool: &PgPool, endpoint: Uuid) -> anyhow::Result<()> {
    sqlx::query(
        "WITH events AS (
             INSERT INTO outbox (id, event_type, data, dispatched_at)
             SELECT uuid_v7(), 'sleep.inference', '{\"n\": 1}', now()
             FROM generate_series(1, $2)
             RETURNING id
         )
         INSERT INTO deliveries (id, event_id, endpoint_id) SELECT uuid_v7(), id, $1 FROM events",
    )
    .bind(endpoint)
    .bind(BACKLOG)
    .execute(pool)
    .await?;
    // A real backlog builds up over hours, long after autovacuum has visited its rows; here it
    // is written at once, so vacuum now rather than while the healthy endpoint is measured.
    sqlx::query("VACUUM (ANALYZE) deliveries, outbox")
        .execute(pool)
        .await?;
    sqlx::query("SELECT pg_notify('outbound', '')")
        .execute(pool)
        .await?;
    Ok(())
}

/// Waits until the dead endpoint has failed often enough for its circuit to open.
async fn circuit_opened(pool: &PgPool, endpoint: Uuid) -> anyhow::Result<()> {
    for _ in 0..500 {
        let failed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
             WHERE d.endpoint_id = $1 AND d.status = 'pending' AND d.attempts > 0",
        )
        .bind(endpoint)
        .fetch_one(pool)
        .await?;
        if failed >= CIRCUIT_FAILURE_THRESHOLD {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("the dead endpoint was never attempted")
}

/// Events committed one by one at `rate` for [`LATENCY_SECONDS`], each its own transaction.
struct Latency<'a> {
    rate: u64,
    event_type: EventType,
    committing: &'a PgPool,
}

impl Latency<'_> {
    /// Commits the events to a new endpoint at `receiver` on a fixed schedule (from
    /// [`LATENCY_CONNECTIONS`] connections, so one slow commit does not delay the next); returns
    /// the p50 and p99, in ms, from each event's transaction to its first attempt.
    async fn measure(&self, worker: &Service, receiver: &Receiver) -> anyhow::Result<(f64, f64)> {
        let endpoint = create_endpoint(worker, &receiver.url(), self.event_type).await?;
        let events = (self.rate * LATENCY_SECONDS) as i64;
        let mut every = tokio::time::interval(Duration::from_micros(1_000_000 / self.rate));
        let mut commits = tokio::task::JoinSet::new();
        for _ in 0..events {
            every.tick().await;
            let (pool, event_type) = (self.committing.clone(), self.event_type);
            commits.spawn(async move { emit(&pool, event_type, 1).await });
        }
        while let Some(committed) = commits.join_next().await {
            committed??;
        }
        for _ in 0..500 {
            let (p50, p99): (Option<f64>, Option<f64>) = sqlx::query_as(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),
                        percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)
                 FROM (
                     SELECT extract(epoch FROM min(a.attempted_at) - o.created_at) * 1000 AS ms
                     FROM deliveries d JOIN outbox o ON o.id = d.event_id
                     JOIN delivery_attempts a ON a.delivery_id = d.id
                     WHERE d.endpoint_id = $1 GROUP BY d.id, o.created_at
                 ) first
                 HAVING count(*) >= $2",
            )
            .bind(endpoint)
            .bind(events)
            .fetch_optional(self.committing)
            .await?
            .unwrap_or((None, None));
            if let (Some(p50), Some(p99)) = (p50, p99) {
                return Ok((p50, p99));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::bail!(
            "the latency events at {}/s were not all attempted",
            self.rate
        )
    }
}

pub fn table(runs: &[Run]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| case | deliveries/s | ratio to alone |\n| --- | --- | --- |\n\
         | one healthy endpoint alone | {:.0} | |\n\
         | one healthy endpoint beside a dead one holding {BACKLOG} due deliveries | {:.0} | **{:.2}** |",
        median_of(runs, |run| run.alone),
        median_of(runs, |run| run.beside),
        median_ratio(runs, |run| run.beside, |run| run.alone),
    );
    let _ = writeln!(
        out,
        "\nWith that backlog present, events committed one at a time (each its own transaction, \
         on a fixed schedule, for {LATENCY_SECONDS} s) to a new healthy endpoint reach their first \
         attempt in (median over runs; from the event's transaction to the attempt's start, both \
         read from Postgres):\n\n\
         | events/s | p50 | p99 |\n| --- | --- | --- |"
    );
    for (at, rate) in LATENCY_RATES.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {rate} | {:.0} ms | **{:.0} ms** |",
            median_of(runs, |run| run.first_attempt_ms[at].0),
            median_of(runs, |run| run.first_attempt_ms[at].1),
        );
    }
    let _ = writeln!(
        out,
        "\nThe dead endpoint is a closed loopback port; its circuit is open while the healthy \
         endpoints are measured. Each healthy endpoint drains {HEALTHY_DELIVERIES} deliveries.\n"
    );
    out
}
