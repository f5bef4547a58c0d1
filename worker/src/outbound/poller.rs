//! The delivery loop each worker runs: claim due deliveries for the free attempt slots (a batch
//! of `DELIVERY_BATCH` each, [`super::batch`]), start the batches, then sleep until the next
//! delivery is due, this worker commits new events (`Outbound::wake`), another writer sends
//! `NOTIFY outbound`, a batch finishes, or `DELIVERY_POLL_MS` passes, whichever comes first.
//!
//! Several workers run this loop on one database at once: `FOR UPDATE SKIP LOCKED` hands each
//! due delivery to one of them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::batch::{Batch, Split};
use super::claim::{self, Claimed};
use super::{counts, deliver, metrics};
use crate::{WorkerContext, db};

/// The shortest sleep between two passes, so a due but unclaimable delivery cannot spin.
const MIN_WAIT: Duration = Duration::from_millis(10);
/// How often the pending gauge is refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(1);

/// Runs until `stopping` turns true, then waits for the attempts under way (each batch
/// finishes the attempt it is making and gives back the deliveries it has not started).
pub async fn run(context: Arc<WorkerContext>, mut stopping: watch::Receiver<bool>) {
    let mut listener: Option<PgListener> = None;
    let mut attempts = JoinSet::new();
    let mut gauge_at = Instant::now();
    let mut after = Uuid::nil();
    while !*stopping.borrow() {
        pass(&context, &mut attempts, &mut after).await;
        if gauge_at.elapsed() >= GAUGE_EVERY {
            refresh_gauge(&context).await;
            gauge_at = Instant::now();
        }
        let wait = next_wait(&context).await;
        tokio::select! {
            _ = context.outbound.wake.notified() => {}
            _ = db::notified(&context.pool, &mut listener, &["outbound"]) => {}
            _ = tokio::time::sleep(wait) => {}
            Some(_) = attempts.join_next() => {}
            _ = stopping.wait_for(|stop| *stop) => {}
        }
    }
    while attempts.join_next().await.is_some() {}
}

/// One pass: claim, start batches. `after` is the endpoint the previous pass's claim ended
/// with, so endpoints take turns when there are more due than free slots.
async fn pass(context: &Arc<WorkerContext>, attempts: &mut JoinSet<()>, after: &mut Uuid) {
    let outbound = &context.outbound;
    let free = outbound.slots.available_permits();
    if free == 0 {
        return;
    }
    let room = outbound.isolation.room();
    let request = claim::Request {
        room: &room,
        limit: (free * outbound.batch) as i64,
        per_endpoint: outbound.isolation.full_rows() as i64,
        endpoints: free as i64,
        after: *after,
    };
    let claimed_at = Utc::now();
    let claimed = match claim::claim(&context.pool, &request).await {
        Ok(claimed) => claimed,
        Err(error) => return tracing::warn!(%error, "claiming deliveries failed"),
    };
    *after = claim::last_served(*after, &claimed);
    let split = Split {
        slots: free,
        room: &room,
        per_endpoint: outbound.endpoint_concurrency,
        batch: outbound.batch,
    };
    let (batches, left_over) = split.split(claimed);
    give_back(context, attempts, left_over);
    for batch in batches {
        start(context, attempts, batch, claimed_at);
    }
}

/// Starts one batch as a task holding a global slot and its endpoint's permit; gives the
/// deliveries back when its endpoint is busy.
fn start(
    context: &Arc<WorkerContext>,
    attempts: &mut JoinSet<()>,
    batch: Batch,
    claimed_at: chrono::DateTime<Utc>,
) {
    let outbound = &context.outbound;
    let slot = outbound.slots.clone().try_acquire_owned();
    let rate_limit = batch.deliveries.first().and_then(|d| d.rate_limit_per_s);
    let permit = outbound.isolation.try_start(batch.endpoint_id, rate_limit);
    let (Ok(slot), Some(permit)) = (slot, permit) else {
        return give_back(context, attempts, batch.deliveries);
    };
    let context = context.clone();
    attempts.spawn(async move {
        let _slot = slot;
        let outbound = &context.outbound;
        let stopping = &context.stopping;
        if let Err(error) = deliver::batch(outbound, &context.pool, &batch, &permit, claimed_at, stopping).await {
            let deliveries = batch.deliveries.len();
            tracing::warn!(error = format!("{error:#}"), endpoint = %batch.endpoint_id, deliveries, "batch not recorded; the lease will expire");
        }
    });
}

/// Gives claimed deliveries back unattempted, in the background.
fn give_back(context: &Arc<WorkerContext>, attempts: &mut JoinSet<()>, deliveries: Vec<Claimed>) {
    if deliveries.is_empty() {
        return;
    }
    let context = context.clone();
    attempts.spawn(async move {
        if let Err(error) = claim::release(&context.pool, &deliveries).await {
            let deliveries = deliveries.len();
            tracing::warn!(%error, deliveries, "release failed; the lease will expire");
        }
    });
}

/// Until the next delivery is due, between [`MIN_WAIT`] and the poll interval; the poll
/// interval when every slot is taken (a finishing attempt wakes the loop anyway).
async fn next_wait(context: &WorkerContext) -> Duration {
    let poll = context.settings.delivery.poll_interval;
    if context.outbound.slots.available_permits() == 0 {
        return poll;
    }
    let blocked = context.outbound.isolation.room().blocked();
    let next = claim::next_due(&context.pool, &blocked).await;
    match next {
        Ok(Some(at)) => (at - Utc::now())
            .to_std()
            .unwrap_or_default()
            .clamp(MIN_WAIT, poll),
        _ => poll,
    }
}

/// Sets the pending gauge from the kept counts ([`super::counts`]): no delivery is counted.
async fn refresh_gauge(context: &WorkerContext) {
    if let Ok(count) = counts::pending(&context.pool).await {
        metrics::pending(count);
    }
}
