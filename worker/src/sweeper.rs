//! The periodic work of a worker that no message triggers: folding due audio chunks, stopping
//! idle streams, completing quiet transcript sessions, fanning out outbox rows written without
//! their deliveries. Safe with any number of workers: each unit of work is claimed with
//! `FOR UPDATE SKIP LOCKED`, so one worker at a time owns it.

use std::sync::Arc;

use tokio::sync::watch;

use crate::WorkerContext;
use crate::audio::stream;
use crate::outbound::{self, dispatch};
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
        match sweep(&context).await {
            // Levels, status changes, completed sessions or deliveries may be new.
            Ok(units) if units > 0 => context.outbound.wake.notify_one(),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "sweep failed; retrying next tick"),
        }
    }
}

/// One pass; returns how many units of work it did (streams folded or stopped, sessions
/// completed, outbox rows fanned out).
async fn sweep(context: &WorkerContext) -> Result<usize, sqlx::Error> {
    let settings = &context.settings.audio;
    let folded = stream::fold_due(&context.pool, settings).await?;
    let stopped = stream::stop_idle(&context.pool, settings).await?;
    let completed = sessions::complete_idle(&context.pool, context.settings.session_idle).await?;
    let caught_up = dispatch::fan_out(&context.pool).await?.events;
    if caught_up > 0 {
        outbound::metrics::caught_up(caught_up);
    }
    Ok(folded + stopped + completed + caught_up as usize)
}
