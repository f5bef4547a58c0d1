//! Benchmark 3: outbound deliveries by one worker, draining a backlog of outbox events to local
//! receivers that answer 200 at once.
//!
//! Three cases: one endpoint; ten endpoints; ten endpoints of which one never answers (every
//! attempt to it times out). The floor for each is the load generator posting the same body to
//! the same kind of receiver with as many connections as the worker may have attempts in flight
//! (`ENDPOINT_CONCURRENCY` per endpoint, 4 by default). With one silent endpoint, the rate counts
//! the nine healthy endpoints' deliveries and is compared with the all-healthy case of the same
//! run.

use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;

use crate::Plan;
use crate::floors::Receiver;
use crate::load::{self, Load, Pace, Request};
use crate::process::Service;
use crate::report::{median_of, median_ratio, peak_mib};
use crate::stack::{ADMIN_TOKEN, Isolation, Stack};
use sqlx::PgPool;
use uuid::Uuid;
use worker::outbound::counts;
use worker::outbound::outbox::{self, EventType};

/// Deliveries in each case's backlog (events times endpoints).
const DELIVERIES: usize = 6_000;
/// The worker's default per-endpoint cap on attempts in flight.
const ENDPOINT_CONCURRENCY: usize = 4;
pub(crate) const ENDPOINT_TIMEOUT_MS: u64 = 5_000;

#[derive(Clone, Copy, Debug)]
enum Case {
    OneEndpoint,
    TenEndpoints,
    TenWithOneSilent,
}

impl Case {
    fn endpoints(self) -> usize {
        match self {
            Case::OneEndpoint => 1,
            Case::TenEndpoints | Case::TenWithOneSilent => 10,
        }
    }

    fn silent(self) -> usize {
        match self {
            Case::TenWithOneSilent => 1,
            _ => 0,
        }
    }
}

#[derive(Debug)]
pub struct Run {
    pub floor_one: f64,
    pub floor_ten: f64,
    pub one: f64,
    pub ten: f64,
    /// Deliveries per second to the nine healthy endpoints while the tenth times out.
    pub ten_with_silent: f64,
    pub worker_rss: [Option<u64>; 3],
}

pub async fn measure(stack: &Stack, plan: &Plan) -> anyhow::Result<Vec<Run>> {
    let mut runs = Vec::new();
    for run in 0..plan.runs {
        let floor_one = floor(plan, 1).await?;
        let floor_ten = floor(plan, 10).await?;
        let (one, one_rss) = drain(stack, Case::OneEndpoint).await?;
        let (ten, ten_rss) = drain(stack, Case::TenEndpoints).await?;
        let (silent, silent_rss) = drain(stack, Case::TenWithOneSilent).await?;
        let measured = Run {
            floor_one,
            floor_ten,
            one,
            ten,
            ten_with_silent: silent,
            worker_rss: [one_rss, ten_rss, silent_rss],
        };
        eprintln!("deliveries run {}: {measured:?}", run + 1);
        runs.push(measured);
    }
    Ok(runs)
}

/// The body every delivery and floor request carries: an `audio.level` event's size.
fn event_data(n: u64) -> serde_json::Value {
    json!({"uid": format!("user-{}", n % 500), "window_start_ms": n * 1000, "rms_dbfs": -23.5, "peak_dbfs": -12.25})
}

/// Requests per second the load generator gets from `receivers` answering receivers, with the
/// worker's in-flight cap for that many endpoints.
async fn floor(plan: &Plan, receivers: usize) -> anyhow::Result<f64> {
    let mut total = 0.0;
    let mut targets = Vec::new();
    for _ in 0..receivers {
        targets.push(Receiver::answering().await?);
    }
    let loads = targets.iter().map(|receiver| {
        let load = Load {
            connections: ENDPOINT_CONCURRENCY,
            warm_up: plan.warm_up,
            measure: plan.measure,
            pace: Pace::Closed,
        };
        let requests = Arc::new(|n| Request {
            path_and_query: "/hook".into(),
            content_type: "application/json",
            body: Bytes::from(event_data(n).to_string()),
            idempotency_key: None,
        });
        load::run(receiver.addr, load, requests, None)
    });
    for outcome in futures_util::future::join_all(loads).await {
        total += outcome.accepted_per_s();
    }
    Ok(total)
}

/// Drains one case's backlog through a fresh worker: deliveries per second to the healthy
/// endpoints, and the worker's peak RSS.
async fn drain(stack: &Stack, case: Case) -> anyhow::Result<(f64, Option<u64>)> {
    let isolation = Isolation::new("deliveries");
    let result = drain_in(stack, case, &isolation).await;
    stack.remove(&isolation).await?;
    result
}

async fn drain_in(
    stack: &Stack,
    case: Case,
    isolation: &Isolation,
) -> anyhow::Result<(f64, Option<u64>)> {
    let worker = stack.start_worker(isolation).await?;
    let pool = stack.database(isolation).await?;
    let mut receivers = Vec::new();
    let mut healthy = Vec::new();
    for index in 0..case.endpoints() {
        let receiver = if index < case.silent() {
            Receiver::silent().await?
        } else {
            Receiver::answering().await?
        };
        let id = create_endpoint(&worker, &receiver.url(), EventType::AudioLevel).await?;
        if index >= case.silent() {
            healthy.push(id);
        }
        receivers.push(receiver);
    }
    let events = (DELIVERIES / case.endpoints()) as i64;
    emit(&pool, EventType::AudioLevel, events).await?;
    let per_s = delivered_per_s(&pool, &healthy, events, &format!("{case:?}")).await?;
    let rss = worker.peak_rss();
    pool.close().await;
    worker.stop().await;
    Ok((per_s, rss))
}

/// Creates an endpoint at `url` for `event_type` through the management API; returns its id.
pub(crate) async fn create_endpoint(
    worker: &Service,
    url: &str,
    event_type: EventType,
) -> anyhow::Result<Uuid> {
    let endpoint = json!({
        "url": url,
        "event_types": [event_type],
        "timeout_ms": ENDPOINT_TIMEOUT_MS,
    });
    let (status, created) =
        load::post_json(worker.addr, "/v1/endpoints", ADMIN_TOKEN, &endpoint).await?;
    anyhow::ensure!(
        status.is_success(),
        "creating an endpoint: {status} {created}"
    );
    Ok(created["id"].as_str().unwrap_or_default().parse()?)
}

/// Commits `count` events of `event_type` (and their deliveries) in one transaction, as a
/// handler does, and wakes the delivery loop.
pub(crate) async fn emit(pool: &PgPool, event_type: EventType, count: i64) -> anyhow::Result<()> {
    let data: Vec<serde_json::Value> = (0..count as u64).map(event_data).collect();
    let uids: Vec<String> = data
        .iter()
        .map(|d| d["uid"].as_str().unwrap_or_default().to_owned())
        .collect();
    let mut tx = pool.begin().await?;
    let emitted = uids
        .iter()
        .zip(data)
        .map(|(uid, data)| outbox::NewEvent {
            uid: Some(uid.as_str()),
            data,
            cause: None,
        })
        .collect();
    outbox::emit_all(&mut tx, event_type, emitted).await?;
    tx.commit().await?;
    sqlx::query("SELECT pg_notify('outbound', '')")
        .execute(pool)
        .await?;
    Ok(())
}

/// Waits until each of `endpoints` has `per_endpoint` more succeeded deliveries than now;
/// returns their deliveries per second (read from the kept counts, so polling costs little).
pub(crate) async fn delivered_per_s(
    pool: &PgPool,
    endpoints: &[Uuid],
    per_endpoint: i64,
    case: &str,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let expected = succeeded(pool, endpoints).await? + per_endpoint * endpoints.len() as i64;
    let wanted = per_endpoint * endpoints.len() as i64;
    loop {
        let delivered = succeeded(pool, endpoints).await?;
        if delivered >= expected {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "{case}: {} of {wanted} deliveries after 5 minutes",
            wanted - (expected - delivered)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(wanted as f64 / started.elapsed().as_secs_f64())
}

async fn succeeded(pool: &PgPool, endpoints: &[Uuid]) -> anyhow::Result<i64> {
    let mut total = 0;
    for &endpoint in endpoints {
        total += counts::of_endpoint(pool, endpoint).await?.succeeded;
    }
    Ok(total)
}

pub fn table(runs: &[Run]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| case | deliveries/s | floor: load generator, same receivers and in-flight cap | ratio to floor | worker peak RSS |\n| --- | --- | --- | --- | --- |"
    );
    type Figure = fn(&Run) -> f64;
    let with_floor: [(&str, Figure, Figure, usize); 2] = [
        ("one endpoint", |run| run.one, |run| run.floor_one, 0),
        ("ten endpoints", |run| run.ten, |run| run.floor_ten, 1),
    ];
    for (case, rate, floor, index) in with_floor {
        let _ = writeln!(
            out,
            "| {case} | {:.0} | {:.0} requests/s | {:.2} | {} |",
            median_of(runs, rate),
            median_of(runs, floor),
            median_ratio(runs, rate, floor),
            peak_mib(runs, |run| run.worker_rss[index]),
        );
    }
    let _ = writeln!(
        out,
        "| ten endpoints, one never answering (its nine healthy ones) | {:.0} | | | {} |",
        median_of(runs, |run| run.ten_with_silent),
        peak_mib(runs, |run| run.worker_rss[2]),
    );
    let _ = writeln!(
        out,
        "\nWith one endpoint timing out, the nine healthy ones keep **{:.2}** of the rate ten \
         healthy endpoints get (within-run ratio, median). Each case drains {DELIVERIES} \
         deliveries through a fresh worker; the silent endpoint's timeout is {ENDPOINT_TIMEOUT_MS} ms.\n",
        median_ratio(runs, |run| run.ten_with_silent, |run| run.ten),
    );
    out
}
