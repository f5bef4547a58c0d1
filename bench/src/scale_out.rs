//! Benchmark 5: scale-out. The end-to-end saturation of benchmark 2, first with one ingest and
//! one worker, then, in the same run, with two ingest processes sharing one port
//! (`INGEST_REUSE_PORT`, the kernel spreads the connections) and two workers on one Postgres.
//! Each fleet is saturated for [`SATURATE`] (64 connections, closed loop), then its workers
//! drain the backlog alone until the queue is empty or [`DRAIN`] has passed. Over both windows
//! the CPU time of every process of the fleet, of PostgreSQL's processes and of RabbitMQ's is
//! read, so that the cost of one event in each is known; from those, [`Capacity`] says what a
//! load of [`TARGET_PER_S`] events/s needs. On this 2-core machine the two fleets share the same cores, so the ratio
//! of their rates shows what a second process costs or gains here, not what it gains on
//! machines of its own; the per-event costs are what carry over.

use std::fmt::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::Plan;
use crate::end_to_end;
use crate::load;
use crate::process::{Service, cpu_seconds_of_command, free_addr};
use crate::report::{median_of, median_ratio};
use crate::requests::Body;
use crate::stack::{Isolation, Stack};
use crate::storage_floor;

const SATURATE: Duration = Duration::from_secs(15);
const DRAIN: Duration = Duration::from_secs(10);
/// How often the drain looks at the queue's depth.
const DRAIN_POLL: Duration = Duration::from_millis(200);
/// The load the capacity estimate is for.
pub const TARGET_PER_S: f64 = 50_000.0;
/// How busy the estimate lets each core be: headroom for bursts and for a replica lost.
const UTILISATION: f64 = 0.7;

/// CPU seconds used over a window, by role.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cpu {
    pub ingest: f64,
    pub worker: f64,
    pub postgres: f64,
    pub rabbitmq: f64,
}

impl Cpu {
    pub fn read(ingest: &[Service], workers: &[Service]) -> Self {
        let sum = |services: &[Service]| services.iter().filter_map(Service::cpu_seconds).sum();
        Cpu {
            ingest: sum(ingest),
            worker: sum(workers),
            postgres: cpu_seconds_of_command("postgres"),
            rabbitmq: cpu_seconds_of_command("beam.smp"),
        }
    }

    pub fn since(self, before: Cpu) -> Cpu {
        Cpu {
            ingest: self.ingest - before.ingest,
            worker: self.worker - before.worker,
            postgres: self.postgres - before.postgres,
            rabbitmq: self.rabbitmq - before.rabbitmq,
        }
    }
}

/// What one fleet measured.
#[derive(Debug, Clone, Copy)]
pub struct Fleet {
    pub accepted_per_s: f64,
    pub committed_per_s: f64,
    /// Committed per second by the workers alone on the backlog, ingest idle.
    pub draining_per_s: f64,
    saturated: Cpu,
    drained: Cpu,
    accepted: f64,
    committed: f64,
    drained_events: f64,
}

/// CPU microseconds one event costs each part, from one fleet's windows.
#[derive(Debug, Clone, Copy)]
pub struct PerEvent {
    pub ingest_us: f64,
    pub worker_us: f64,
    pub postgres_us: f64,
    /// RabbitMQ's publish (with its confirm) and delivery (with its ack) of one event.
    pub rabbitmq_us: f64,
}

impl Fleet {
    /// Per-event costs: ingest's from the saturated window (the workers' share of it is theirs);
    /// the workers', Postgres's and RabbitMQ's delivery share from the drain, where only the
    /// workers run; RabbitMQ's publish share is what the saturated window used beyond its
    /// deliveries in that window.
    pub fn per_event(&self) -> PerEvent {
        let per = |seconds: f64, events: f64| seconds * 1e6 / events.max(1.0);
        let delivery_us = per(self.drained.rabbitmq, self.drained_events);
        let publish_seconds = self.saturated.rabbitmq - delivery_us * self.committed / 1e6;
        PerEvent {
            ingest_us: per(self.saturated.ingest, self.accepted),
            worker_us: per(self.drained.worker, self.drained_events),
            postgres_us: per(self.drained.postgres, self.drained_events),
            rabbitmq_us: delivery_us + per(publish_seconds.max(0.0), self.accepted),
        }
    }
}

#[derive(Debug)]
pub struct Run {
    pub one: Fleet,
    pub two: Fleet,
}

/// What [`TARGET_PER_S`] events/s needs, at [`UTILISATION`] of each core.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    pub ingest_cores: f64,
    /// Workers: a worker's rate is bounded by its batches in flight before its CPU, so this
    /// is the load over one worker's draining rate, or its CPU, whichever needs more.
    pub workers: f64,
    pub postgres_cores: f64,
    pub rabbitmq_cores: f64,
}

impl Capacity {
    pub fn for_target(per_event: PerEvent, one_worker_per_s: f64) -> Self {
        let cores = |us: f64| TARGET_PER_S * us / 1e6 / UTILISATION;
        Capacity {
            ingest_cores: cores(per_event.ingest_us),
            workers: (TARGET_PER_S / one_worker_per_s.max(1.0)).max(cores(per_event.worker_us)),
            postgres_cores: cores(per_event.postgres_us),
            rabbitmq_cores: cores(per_event.rabbitmq_us),
        }
    }
}

pub async fn measure(stack: &Stack, plan: &Plan) -> anyhow::Result<Vec<Run>> {
    let mut runs = Vec::new();
    for run in 0..plan.runs {
        let one = fleet(stack, plan, 1).await?;
        let two = fleet(stack, plan, 2).await?;
        let measured = Run { one, two };
        eprintln!("scale-out run {}: {measured:?}", run + 1);
        runs.push(measured);
    }
    Ok(runs)
}

/// Starts `processes` ingest processes on one port and as many workers, measures, removes all.
async fn fleet(stack: &Stack, plan: &Plan, processes: usize) -> anyhow::Result<Fleet> {
    let isolation = Isolation::new(&format!("scale-{processes}"));
    let measured = fleet_in(stack, plan, processes, &isolation).await;
    stack.remove(&isolation).await?;
    measured
}

async fn fleet_in(
    stack: &Stack,
    plan: &Plan,
    processes: usize,
    isolation: &Isolation,
) -> anyhow::Result<Fleet> {
    let shared_port: SocketAddr = free_addr()?;
    let mut workers = Vec::new();
    let mut ingest = Vec::new();
    for _ in 0..processes {
        workers.push(stack.start_worker(isolation).await?);
        let reuse = [("INGEST_REUSE_PORT", "true".to_string())];
        ingest.push(
            stack
                .start_ingest_at(isolation, shared_port, &reuse)
                .await?,
        );
    }
    let pool = stack.database(isolation).await?;
    let stored = || storage_floor::stored_events(&pool);

    let saturate = end_to_end::saturation(plan, SATURATE);
    let requests = Body::Transcript.requests(&isolation.prefix);
    let load = tokio::spawn(load::run(shared_port, saturate, requests, None));
    tokio::time::sleep(saturate.warm_up).await;
    let (stored_before, cpu_before, started) = (
        stored().await?,
        Cpu::read(&ingest, &workers),
        Instant::now(),
    );
    tokio::time::sleep(saturate.measure).await;
    let (stored_after, cpu_after, saturated_for) = (
        stored().await?,
        Cpu::read(&ingest, &workers),
        started.elapsed(),
    );
    let outcome = load.await?;

    let (drain_before, drain_cpu_before, drain_started) = (
        stored().await?,
        Cpu::read(&ingest, &workers),
        Instant::now(),
    );
    until_drained(stack, isolation).await?;
    let (drain_after, drain_cpu_after, drained_for) = (
        stored().await?,
        Cpu::read(&ingest, &workers),
        drain_started.elapsed(),
    );
    stack.purge(isolation).await?;

    let committed = (stored_after - stored_before) as f64;
    let drained_events = (drain_after - drain_before) as f64;
    let fleet = Fleet {
        accepted_per_s: outcome.accepted_per_s(),
        committed_per_s: committed / saturated_for.as_secs_f64(),
        draining_per_s: drained_events / drained_for.as_secs_f64(),
        saturated: cpu_after.since(cpu_before),
        drained: drain_cpu_after.since(drain_cpu_before),
        accepted: outcome.accepted as f64,
        committed,
        drained_events,
    };
    pool.close().await;
    for service in ingest.into_iter().chain(workers) {
        service.stop().await;
    }
    Ok(fleet)
}

/// Waits until the events queue has no ready message left, or [`DRAIN`] has passed: a fleet
/// that empties its backlog early is timed over the seconds it was busy, not the whole window.
async fn until_drained(stack: &Stack, isolation: &Isolation) -> anyhow::Result<()> {
    let deadline = Instant::now() + DRAIN;
    while Instant::now() < deadline && stack.queue_depth(isolation).await? > 0 {
        tokio::time::sleep(DRAIN_POLL).await;
    }
    Ok(())
}

/// One figure of a fleet, as the table reads it.
type Figure = fn(&Fleet) -> f64;

pub fn table(runs: &[Run]) -> String {
    let mut out = String::new();
    let one = |figure: Figure| median_of(runs, |run| figure(&run.one));
    let two = |figure: Figure| median_of(runs, |run| figure(&run.two));
    let ratio = |figure: Figure| median_ratio(runs, |run| figure(&run.two), |run| figure(&run.one));
    let rows: [(&str, Figure); 3] = [
        ("accepted by ingest, 64 connections", |f| f.accepted_per_s),
        ("committed over the same window", |f| f.committed_per_s),
        ("committed by the workers alone on the backlog", |f| {
            f.draining_per_s
        }),
    ];
    let _ = writeln!(
        out,
        "| figure (events/s) | one ingest, one worker | two ingest on one port, two workers | two / one (within each run) |\n| --- | --- | --- | --- |"
    );
    for (name, figure) in rows {
        let _ = writeln!(
            out,
            "| {name} | {:.0} | {:.0} | {:.2} |",
            one(figure),
            two(figure),
            ratio(figure)
        );
    }
    let cost = |figure: fn(&PerEvent) -> f64| median_of(runs, |run| figure(&run.one.per_event()));
    let per_event = PerEvent {
        ingest_us: cost(|p| p.ingest_us),
        worker_us: cost(|p| p.worker_us),
        postgres_us: cost(|p| p.postgres_us),
        rabbitmq_us: cost(|p| p.rabbitmq_us),
    };
    let capacity = Capacity::for_target(per_event, one(|f| f.draining_per_s));
    let _ = writeln!(
        out,
        "\nCPU per transcript event (one of each, medians), and what {TARGET_PER_S:.0} events/s \
         needs with every core at most {:.0} % busy:\n\n\
         | part | CPU per event | for {TARGET_PER_S:.0} events/s |\n| --- | --- | --- |\n\
         | ingest (auth, parse, envelope, publish and confirm) | {:.0} us | {:.1} cores |\n\
         | worker (consume, batch, statements, acks) | {:.0} us | {:.0} workers (one drains {:.0}/s; their CPU alone needs {:.1} cores) |\n\
         | PostgreSQL (the worker's statements and commits) | {:.0} us | {:.1} cores |\n\
         | RabbitMQ (publish with confirm, delivery with ack) | {:.0} us | {:.1} cores |",
        UTILISATION * 100.0,
        per_event.ingest_us,
        capacity.ingest_cores,
        per_event.worker_us,
        capacity.workers.ceil(),
        one(|f| f.draining_per_s),
        TARGET_PER_S * per_event.worker_us / 1e6 / UTILISATION,
        per_event.postgres_us,
        capacity.postgres_cores,
        per_event.rabbitmq_us,
        capacity.rabbitmq_cores,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rabbitmqs_publish_share_is_what_the_saturated_window_used_beyond_its_deliveries() {
        // Drain: 1,000 deliveries cost 0.1 s (100 us each). Saturated: 2,000 accepted and
        // 500 committed (delivered) in 0.45 s: 0.05 s of it delivering, 0.4 s publishing.
        let fleet = Fleet {
            accepted_per_s: 0.0,
            committed_per_s: 0.0,
            draining_per_s: 0.0,
            saturated: Cpu {
                ingest: 0.1,
                rabbitmq: 0.45,
                ..Cpu::default()
            },
            drained: Cpu {
                worker: 0.05,
                postgres: 0.3,
                rabbitmq: 0.1,
                ..Cpu::default()
            },
            accepted: 2_000.0,
            committed: 500.0,
            drained_events: 1_000.0,
        };
        let per_event = fleet.per_event();
        assert!((per_event.ingest_us - 50.0).abs() < 1e-9);
        assert!((per_event.worker_us - 50.0).abs() < 1e-9);
        assert!((per_event.postgres_us - 300.0).abs() < 1e-9);
        assert!((per_event.rabbitmq_us - 300.0).abs() < 1e-9);
    }

    #[test]
    fn workers_are_sized_by_their_rate_when_it_binds_before_their_cpu() {
        let per_event = PerEvent {
            ingest_us: 70.0,
            worker_us: 70.0,
            postgres_us: 280.0,
            rabbitmq_us: 140.0,
        };
        let capacity = Capacity::for_target(per_event, 2_500.0);
        assert!((capacity.ingest_cores - 5.0).abs() < 1e-9);
        assert!((capacity.workers - 20.0).abs() < 1e-9);
        assert!((capacity.postgres_cores - 20.0).abs() < 1e-9);
        assert!((capacity.rabbitmq_cores - 10.0).abs() < 1e-9);
    }
}
