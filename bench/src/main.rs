//! `bench`: the benchmarks `make bench` runs against the release builds of ingest and worker,
//! with local PostgreSQL and RabbitMQ, and the markdown they report.
//!
//! ```text
//! bench run [ingest] [end-to-end] [deliveries] [backlog] [scale-out] [slow-clients] [retention]
//!                                                measure (all by default), print markdown
//! bench floor http|publish ADDR                  serve a floor (started by `bench run` itself)
//! bench load transcript|audio ADDR               64 connections at ADDR for BENCH_SECONDS, to
//!                                                profile a server started by hand
//! bench wrk [BODY_FILE]                          ingest and its floor under our generator and
//!                                                under wrk, same run (needs wrk installed)
//! ```
//!
//! `BENCH_RUNS` (default 3), `BENCH_SECONDS` (default 5, each ingest load and delivery floor)
//! and `BENCH_E2E_SECONDS` (default 30, the end-to-end saturation window) size a run, and
//! `BENCH_E2E_RATE` (events/s) replaces the end-to-end latency phase's half rate; every
//! figure is the median over the runs. Logs of the processes go to `BENCH_LOGS`
//! (default `target/bench-logs`).

mod backlog;
mod deliveries;
mod end_to_end;
mod floors;
mod ingest;
mod report;
mod requests;
mod retention;
mod scale_out;
mod slow_clients;
mod storage_floor;
mod wrk;

use bench::{load, process, stack};

use std::time::Duration;

use shared::config::{BrokerSettings, Env};

use crate::requests::Body;
use crate::stack::Stack;

/// How long and how often to measure.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub runs: usize,
    pub warm_up: Duration,
    pub measure: Duration,
    pub end_to_end_measure: Duration,
    /// The end-to-end latency phase's fixed rate, when not half the committed rate.
    pub end_to_end_rate: Option<f64>,
}

impl Plan {
    fn from_env() -> anyhow::Result<Self> {
        let env = Env::process();
        Ok(Plan {
            runs: env.parse("BENCH_RUNS", 3)?,
            warm_up: Duration::from_secs(1),
            measure: Duration::from_secs(env.parse("BENCH_SECONDS", 5)?),
            end_to_end_measure: Duration::from_secs(env.parse("BENCH_E2E_SECONDS", 30)?),
            end_to_end_rate: env
                .optional("BENCH_E2E_RATE")
                .map(|rate| rate.parse())
                .transpose()?,
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["floor", "http", addr] => floors::serve_http_floor(addr.parse()?).await,
        ["floor", "publish", addr] => {
            let broker = BrokerSettings::from_env(&Env::process())?;
            floors::serve_publish_floor(addr.parse()?, broker).await
        }
        ["load", body @ ("transcript" | "audio"), addr] => {
            let body = if *body == "audio" {
                Body::Audio
            } else {
                Body::Transcript
            };
            let plan = Plan::from_env()?;
            let outcome = ingest::load_once(addr.parse()?, plan, body, "by-hand".into()).await;
            println!("{:?}", report::Figures::new(&outcome, None, None));
            Ok(())
        }
        ["wrk", body @ ..] if body.len() <= 1 => {
            let plan = Plan::from_env()?;
            let body = body.first().map(std::path::Path::new);
            print!("{}", wrk::compare(&Stack::from_env(), &plan, body).await?);
            Ok(())
        }
        ["run", which @ ..] => {
            let all = which.is_empty();
            let wants = |name: &str| all || which.contains(&name);
            print!("{}", run(wants).await?);
            Ok(())
        }
        _ => anyhow::bail!(
            "usage: bench run [ingest] [end-to-end] [deliveries] [backlog] [scale-out] [slow-clients] [retention] | bench floor http|publish ADDR | bench load transcript|audio ADDR | bench wrk [BODY_FILE]"
        ),
    }
}

async fn run(wants: impl Fn(&str) -> bool) -> anyhow::Result<String> {
    let plan = Plan::from_env()?;
    let stack = Stack::from_env();
    let mut out = format!(
        "Each figure is the median of {} runs; each ingest load and delivery floor is measured \
         for {} s after {} s of warm-up.\n\n",
        plan.runs,
        plan.measure.as_secs(),
        plan.warm_up.as_secs()
    );
    let mut ingest_floor = None;
    if wants("ingest") {
        out.push_str(
            "## Ingest against its floors (64 connections, closed loop)\n\n\
             Ingest runs with authentication, validation, the envelope, metrics and tracing \
             (info, JSON lines) on. All three servers publish to a quorum queue, persistent, \
             and answer after the broker's confirm, except the HTTP floor, which only answers.\n\n",
        );
        for body in [Body::Transcript, Body::Audio] {
            let runs = ingest::measure(&stack, &plan, body).await?;
            out.push_str(&ingest::table(body, &runs));
            if body == Body::Transcript {
                ingest_floor = Some(report::median_of(&runs, |run| run[1].per_s));
            }
        }
    }
    if wants("end-to-end") {
        out.push_str(&format!(
            "## End to end: ingest and one worker, transcripts\n\n\
             Saturated for {} s at 64 connections, then half the committed rate for 10 s on a \
             fixed schedule, timing each event from its 202 to its `inbound_events` row being \
             visible (polled every 2 ms).\n\n",
            plan.end_to_end_measure.as_secs()
        ));
        let runs = end_to_end::measure(&stack, &plan).await?;
        out.push_str(&end_to_end::table(&runs, ingest_floor.unwrap_or(f64::NAN)));
        out.push('\n');
    }
    if wants("deliveries") {
        out.push_str("## Outbound deliveries, one worker\n\n");
        let runs = deliveries::measure(&stack, &plan).await?;
        out.push_str(&deliveries::table(&runs));
    }
    if wants("backlog") {
        out.push_str("## One endpoint beside a dead endpoint's backlog, one worker\n\n");
        let runs = backlog::measure(&stack, &plan).await?;
        out.push_str(&backlog::table(&runs));
    }
    if wants("scale-out") {
        out.push_str(
            "## Scale-out: two ingest processes on one port and two workers, beside one of each\n\n\
             Transcripts, saturated for 15 s at 64 connections, then the workers alone on the \
             backlog until it is empty (at most 10 s). Both fleets share this machine's two \
             cores with PostgreSQL, RabbitMQ and the load generator, so the ratio shows what a \
             second process costs or gains on the same cores; the CPU per event is what carries \
             over to a fleet.\n\n",
        );
        let runs = scale_out::measure(&stack, &plan).await?;
        out.push_str(&scale_out::table(&runs));
    }
    if wants("slow-clients") {
        out.push_str(&format!(
            "\n## Ingest beside slow clients\n\n\
             The 64-connection transcript load, each case on a fresh ingest with the default \
             limits, beside {} slow connections that reconnect when cut off.\n\n",
            slow_clients::SLOW_CLIENTS
        ));
        let runs = slow_clients::measure(&stack, &plan).await?;
        out.push_str(&slow_clients::table(&runs));
    }
    if wants("retention") {
        out.push_str(
            "\n## Retention: its cost to ingest and one worker, and bytes on disk\n\n\
             Retention off and on (events and outbox rows kept 2 s, a pass a second) in each \
             run: ingest saturated with the worker storing beside it, then the worker alone on \
             the backlog left. Then, once, bytes on disk per stored transcript event and per hour \
             of 16 kHz audio of random noise (incompressible, as speech nearly is), every \
             retention off: size Postgres from these and the `RETAIN_*` settings.\n\n",
        );
        let (runs, sizes) = retention::measure(&stack, &plan).await?;
        out.push_str(&retention::table(&runs, &sizes));
    }
    Ok(out)
}
