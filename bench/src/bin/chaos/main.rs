//! `chaos`: proves that every 202 is stored once and every stored event delivered, while
//! processes die and the broker, the database and the receiver go away.
//!
//! It starts the ingest and worker binaries beside it (release for `make chaos`, debug for
//! `make test`) as processes on a queue prefix and database of its own, reaching RabbitMQ and
//! Postgres through TCP proxies it owns; subscribes a local receiver to every event type with a
//! shortened retry window; drives distinct events of every kind from concurrent senders that
//! retry like real ones while it SIGKILLs workers and ingest processes, cuts the broker and the
//! database and takes the receiver down for less than the window; waits for the pipeline to
//! drain; prints the tally; removes its database and queues; and exits 1 on any loss or double.
//!
//! ```text
//! chaos            the full run (CHAOS_SECONDS, default 240, of sending)
//! chaos --short    the run `make test` makes: 60 s of sending, shorter faults
//!                  (see `Plan::short`)
//! ```
//!
//! `CHAOS_SECONDS` and `CHAOS_RATE` (events/s) override either. Process logs go to
//! `target/chaos-logs/<run>/`.
//!
//! # Layout
//! - [`events`]: the logical events of every kind, their identity and request.
//! - [`senders`]: concurrent senders with real senders' retries.
//! - [`faults`]: the processes, the proxies and the fault schedule.
//! - [`receiver`]: the outbound receiver, which can go down.
//! - [`ledger`]: the accounting against Postgres and the receiver, and the table.

mod events;
mod faults;
mod ledger;
mod receiver;
mod senders;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bench::stack::{ADMIN_TOKEN, Isolation, OMI_KEY, Stack};
use shared::config::Env;

use crate::events::Style;
use crate::faults::{Chaos, Fleet, Severity};
use crate::ledger::Ledger;
use crate::receiver::Receiver;

/// What one run does.
#[derive(Clone, Debug)]
struct Plan {
    sending: Duration,
    rate: f64,
    senders: usize,
    workers: usize,
    ingests: usize,
    severity: Severity,
    /// `DELIVERY_WINDOW_MS` of the workers; the receiver is down for less.
    delivery_window: Duration,
    style: Style,
    /// `DELIVERY_LIMIT` of the workers and queue.
    delivery_limit: u32,
    /// Longest wait for the pipeline to drain after the senders stop.
    drain: Duration,
}

impl Plan {
    /// A few minutes, every fault at full length, senders as the oldest Omi releases send.
    fn full() -> Self {
        Plan {
            sending: Duration::from_secs(240),
            rate: 150.0,
            senders: 32,
            workers: 3,
            ingests: 2,
            severity: Severity {
                broker_cut: Duration::from_secs(8),
                database_cut: Duration::from_secs(10),
                receiver_down: Duration::from_secs(20),
                calm: Duration::from_secs(4),
            },
            delivery_window: Duration::from_secs(60),
            style: Style {
                keyed_status_changes: false,
            },
            delivery_limit: 5,
            drain: Duration::from_secs(240),
        }
    }

    /// About 75 s for `make test`: the full run's senders and settings, shorter and slower,
    /// with shorter faults.
    fn short() -> Self {
        let full = Plan::full();
        Plan {
            sending: Duration::from_secs(60),
            rate: 50.0,
            senders: 16,
            severity: Severity {
                broker_cut: Duration::from_secs(4),
                database_cut: Duration::from_secs(5),
                receiver_down: Duration::from_secs(8),
                calm: Duration::from_secs(3),
            },
            delivery_window: Duration::from_secs(60),
            drain: Duration::from_secs(120),
            ..full
        }
    }

    fn from_args() -> anyhow::Result<Self> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut plan = match args
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            [] => Plan::full(),
            ["--short"] => Plan::short(),
            _ => anyhow::bail!("usage: chaos [--short]"),
        };
        let env = Env::process();
        plan.sending = Duration::from_secs(env.parse("CHAOS_SECONDS", plan.sending.as_secs())?);
        plan.rate = env.parse("CHAOS_RATE", plan.rate)?;
        Ok(plan)
    }

    fn worker_env(&self) -> Vec<(&'static str, String)> {
        let ms = |d: Duration| d.as_millis().to_string();
        vec![
            ("DELIVERY_LIMIT", self.delivery_limit.to_string()),
            ("DELIVERY_RETRY_BASE_MS", "250".into()),
            ("DELIVERY_RETRY_MAX_DELAY_MS", "2000".into()),
            ("DELIVERY_WINDOW_MS", ms(self.delivery_window)),
            ("DELIVERY_POLL_MS", "250".into()),
            ("CIRCUIT_COOLDOWN_MS", "1000".into()),
            ("LISTENING_IDLE_MS", "2000".into()),
            ("SESSION_IDLE_MS", "3000".into()),
            // The ledger knows an audio chunk by its PCM, which retention drops once folded.
            ("RETAIN_AUDIO_PCM", "forever".into()),
            ("LOG_FORMAT", "json".into()),
        ]
    }

    fn ingest_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DELIVERY_LIMIT", self.delivery_limit.to_string()),
            ("ASLEEP_API_KEYS", events::ASLEEP_KEY.into()),
            ("REFLECTOR_SECRETS", events::REFLECTOR_SECRET.into()),
            ("OMI_KEYS", OMI_KEY.into()),
            ("LOG_FORMAT", "json".into()),
        ]
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let plan = Plan::from_args()?;
    let mut stack = Stack::from_env();
    let isolation = Isolation::new("chaos");
    stack.logs = std::path::Path::new("target/chaos-logs").join(&isolation.prefix);
    eprintln!("chaos: logs in {}", stack.logs.display());
    let outcome = drive(&stack, &isolation, &plan).await;
    if let Err(error) = stack.remove(&isolation).await {
        eprintln!("chaos: cleaning up {}: {error:#}", isolation.prefix);
    }
    if !outcome? {
        std::process::exit(1);
    }
    Ok(())
}

/// The run; true when nothing was lost or doubled.
async fn drive(stack: &Stack, isolation: &Isolation, plan: &Plan) -> anyhow::Result<bool> {
    let mut receiver = Receiver::start().await?;
    let counts = (plan.ingests, plan.workers);
    let mut fleet = Fleet::start(
        stack,
        isolation,
        counts,
        plan.ingest_env(),
        plan.worker_env(),
    )
    .await;
    let result = match &mut fleet {
        Ok(fleet) => run_with(stack, isolation, plan, fleet, &mut receiver).await,
        Err(error) => Err(anyhow::anyhow!("starting the processes: {error:#}")),
    };
    if let Ok(fleet) = &mut fleet {
        fleet.kill_all().await;
    }
    result
}

async fn run_with(
    stack: &Stack,
    isolation: &Isolation,
    plan: &Plan,
    fleet: &mut Fleet,
    receiver: &mut Receiver,
) -> anyhow::Result<bool> {
    subscribe(fleet, receiver).await?;
    let ledger = Arc::new(Ledger::default());
    let until = Instant::now() + plan.sending;
    let load = senders::Load {
        ingest: fleet.ingest.iter().map(|ingest| ingest.addr).collect(),
        rate: plan.rate,
        senders: plan.senders,
        until,
        patience: Duration::from_secs(60),
        style: plan.style,
    };
    let sending = tokio::spawn(senders::run(load, ledger.clone()));
    let chaos = Chaos {
        stack,
        isolation,
        fleet,
        receiver,
    };
    let made = faults::run(chaos, plan.severity, until).await?;
    sending.await?;
    eprintln!("chaos: senders done; waiting for the pipeline to drain");
    let pool = stack.database(isolation).await?;
    let drained = drain(stack, isolation, &pool, plan.drain).await?;
    let received = receiver.received();
    let tally = ledger::tally(&pool, &ledger, &received, &made.worker_killed_at).await?;
    println!("{}", summary(plan, &made, drained));
    println!("{}", ledger::table(&tally));
    for double in ledger::doubles(&pool, &received).await? {
        println!("- answered more than once: {double}");
    }
    Ok(drained && !tally.failed())
}

/// Subscribes the receiver to every event type through the first worker's management API.
async fn subscribe(fleet: &Fleet, receiver: &Receiver) -> anyhow::Result<()> {
    let body = serde_json::json!({"url": receiver.url(), "event_types": ["*"]});
    let worker = fleet.workers[0].addr;
    let (status, answer) =
        bench::load::post_json(worker, "/v1/endpoints", ADMIN_TOKEN, &body).await?;
    anyhow::ensure!(status == 201, "creating the endpoint: {status} {answer}");
    Ok(())
}

/// What is still to do: messages waiting, deliveries pending, audio unfolded, streams
/// listening, sessions open; with the stored events, which must stop changing.
const BACKLOG: &str = "SELECT (SELECT count(*) FROM deliveries WHERE status = 'pending')
    + (SELECT count(*) FROM audio_chunks WHERE folded_at IS NULL)
    + (SELECT count(*) FROM audio_streams WHERE listening)
    + (SELECT count(*) FROM transcript_sessions WHERE completed_at IS NULL),
    (SELECT count(*) FROM inbound_events)";

/// Waits until nothing is left to do for three polls in a row; false when `longest` passes first.
async fn drain(
    stack: &Stack,
    isolation: &Isolation,
    pool: &sqlx::PgPool,
    longest: Duration,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + longest;
    let (mut quiet, mut stored_before) = (0, -1);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (pending, stored): (i64, i64) = sqlx::query_as(BACKLOG).fetch_one(pool).await?;
        let waiting = stack.queue_depth(isolation).await?;
        let idle = pending == 0 && waiting == 0 && stored == stored_before;
        quiet = if idle { quiet + 1 } else { 0 };
        if quiet == 3 {
            return Ok(true);
        }
        stored_before = stored;
    }
    Ok(false)
}

fn summary(plan: &Plan, made: &faults::Made, drained: bool) -> String {
    format!(
        "{} s of sending at {} events/s from {} senders to {} ingest and {} workers; \
         {} worker SIGKILLs, {} ingest SIGKILLs, {} broker cuts of {} s, {} database cuts of {} s, \
         receiver down {} s of a {} s retry window; DELIVERY_LIMIT {}; status changes {}; {}\n",
        plan.sending.as_secs(),
        plan.rate,
        plan.senders,
        plan.ingests,
        plan.workers,
        made.worker_kills,
        made.ingest_kills,
        made.broker_cuts,
        plan.severity.broker_cut.as_secs(),
        made.database_cuts,
        plan.severity.database_cut.as_secs(),
        plan.severity.receiver_down.as_secs() * made.receiver_downs as u64,
        plan.delivery_window.as_secs(),
        plan.delivery_limit,
        if plan.style.keyed_status_changes {
            "with Idempotency-Key"
        } else {
            "without Idempotency-Key"
        },
        if drained {
            "drained"
        } else {
            "NOT drained within the limit"
        },
    )
}
