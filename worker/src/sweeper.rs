//! The periodic work of a worker that no message triggers: folding due audio chunks, stopping
//! idle streams, completing quiet transcript sessions, fanning out outbox rows written without
//! their deliveries, folding the delivery counts' and the attempt statistics' changes
//! ([`outbound::counts`], [`outbound::attempt_stats`]), and disabling endpoints that kept
//! failing ([`outbound::disable`]). Safe
//! with any number of workers: each unit of work is claimed with `FOR UPDATE SKIP LOCKED`, so
//! one worker at a time owns it. The steps are independent: one that fails does not keep the
//! others from running.

use std::sync::Arc;

use tokio::sync::watch;

use crate::WorkerContext;
use crate::audio::stream;
use crate::outbound::{self, attempt_stats, counts, disable, dispatch};
use crate::sessions;

/// Sweeps every `SWEEP_INTERVAL_MS` until `stopping` turns true.
pub async fn run(context: Arc<WorkerContext>, mut stopping: watch::Receiver<bool>) {
    let settings = &context.settings.audio;
    let mut every = tokio::time::interval(settings.sweep_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
        // Levels, status changes, completed sessions or deliveries may be new.
        if sweep(&context).await > 0 {
            context.events_committed(true);
        }
    }
}

/// One pass; returns how many units of work it did (streams folded or stopped, sessions
/// completed, outbox rows fanned out, endpoints disabled: each emits). Each step runs whatever the others did: one that fails
/// is logged, counts as no work, and is tried again next tick.
async fn sweep(context: &WorkerContext) -> usize {
    let (pool, audio) = (&context.pool, &context.settings.audio);
    let folded = step(Step::FoldDue, stream::fold_due(pool, audio)).await;
    let stopped = step(Step::StopIdle, stream::stop_idle(pool, audio)).await;
    let idle = context.settings.session_idle;
    let completed = step(Step::CompleteIdle, sessions::complete_idle(pool, idle)).await;
    let caught_up = step(Step::FanOut, async {
        dispatch::fan_out(pool)
            .await
            .map(|fanned| fanned.events as usize)
    })
    .await;
    if caught_up > 0 {
        outbound::metrics::caught_up(caught_up as _);
    }
    // Counts and statistics are bookkeeping: folding them is no work for the delivery loop.
    step(Step::FoldCounts, counts::fold(pool)).await;
    step(Step::FoldAttemptStats, attempt_stats::fold(pool)).await;
    // After the fold, so a run of failures is judged on every attempt recorded so far.
    let after = context.settings.delivery.disable_after;
    let disabled = step(Step::DisableFailing, disable::sweep(pool, after)).await;
    folded + stopped + completed + caught_up + disabled
}

/// The steps of a pass; their names are the `step` label of `worker_sweep_step_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    FoldDue,
    StopIdle,
    CompleteIdle,
    FanOut,
    FoldCounts,
    FoldAttemptStats,
    DisableFailing,
}

impl Step {
    pub const ALL: [Step; 7] = [
        Step::FoldDue,
        Step::StopIdle,
        Step::CompleteIdle,
        Step::FanOut,
        Step::FoldCounts,
        Step::FoldAttemptStats,
        Step::DisableFailing,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::FoldDue => "fold_due",
            Step::StopIdle => "stop_idle",
            Step::CompleteIdle => "complete_idle",
            Step::FanOut => "fan_out",
            Step::FoldCounts => "fold_counts",
            Step::FoldAttemptStats => "fold_attempt_stats",
            Step::DisableFailing => "disable_failing",
        }
    }
}

/// Runs one sweep step; its error is logged (with the step's name) and counts as no work.
async fn step(
    step: Step,
    work: impl std::future::Future<Output = Result<usize, sqlx::Error>>,
) -> usize {
    work.await.unwrap_or_else(|error| {
        tracing::warn!(%error, step = step.name(), "sweep step failed; retrying next tick");
        metrics::counter!("worker_sweep_step_failures_total", "step" => step.name()).increment(1);
        0
    })
}
