//! The one task per worker behind the live stream (supervised as `stream`): it tells the other
//! workers when this one has committed events, and, while this worker has stream clients, it
//! reads the outbox once for all of them and broadcasts each read as a [`Batch`].

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::watch;

use super::read::{self, Rest};
use super::{Batch, Filter, Position};
use crate::{WorkerContext, db};

/// The channel a worker notifies after it commits outbox events.
pub const CHANNEL: &str = "outbox_stream";
/// Also listened to: writers outside a worker (the management API's test events, tests) wake
/// the delivery loops there, and that means new outbox rows too.
const OUTBOUND_CHANNEL: &str = "outbound";
/// The most rows one read takes; a full read is followed by another at once.
const READ_LIMIT: usize = 1000;
/// The first wait before reading again when committed rows wait behind a running transaction;
/// it doubles while they keep waiting, up to the poll interval.
const SETTLE_FIRST: Duration = Duration::from_millis(10);

/// Runs the announcer and the fan-in until `stopping` turns true.
pub async fn run(context: Arc<WorkerContext>, stopping: watch::Receiver<bool>) {
    tokio::join!(
        announce(&context, stopping.clone()),
        fan_in(&context, stopping)
    );
}

/// Sends `NOTIFY outbox_stream` after this worker commits events: at once after a quiet spell,
/// then at most once per `STREAM_NOTIFY_MS`, however many batches commit meanwhile. A NOTIFY
/// that fails is only logged: the readers' poll interval bounds what it delays.
async fn announce(context: &WorkerContext, mut stopping: watch::Receiver<bool>) {
    let interval = context.settings.stream.notify_interval;
    loop {
        tokio::select! {
            _ = context.stream.committed.notified() => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
        let notify = sqlx::query("SELECT pg_notify($1, '')").bind(CHANNEL);
        if let Err(error) = notify.execute(&context.pool).await {
            tracing::debug!(%error, "NOTIFY {CHANNEL} failed; stream readers will poll");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
    }
}

/// While this worker has stream clients: reads what is new on each notification (or after the
/// poll interval), again at once after a full read, and soon after a read that found committed
/// rows behind a running transaction. Without clients it reads nothing, stops listening and
/// forgets its place: the next client reads the outbox itself from where it starts.
async fn fan_in(context: &WorkerContext, mut stopping: watch::Receiver<bool>) {
    let hub = &context.stream;
    let poll = context.settings.stream.poll_interval;
    let mut listener: Option<PgListener> = None;
    let mut place: Option<Position> = None;
    let mut settle_wait = SETTLE_FIRST;
    loop {
        if hub.live.receiver_count() == 0 {
            // A listener nobody reads would hold back Postgres's notification queue.
            (listener, place) = (None, None);
            tokio::select! {
                _ = hub.joined.notified() => continue,
                _ = stopping.wait_for(|stop| *stop) => return,
            }
        }
        let (wait, unsettled) = match read_and_broadcast(context, &mut place).await {
            Ok(Rest::More) => (Duration::ZERO, false),
            Ok(Rest::Unsettled) => (settle_wait, true),
            Ok(Rest::Nothing) => (poll, false),
            Err(error) => {
                tracing::warn!(%error, "reading the outbox for the stream failed");
                (poll, false)
            }
        };
        settle_wait = if unsettled {
            (settle_wait * 2).min(poll)
        } else {
            SETTLE_FIRST
        };
        let channels = [CHANNEL, OUTBOUND_CHANNEL];
        tokio::select! {
            _ = db::notified(&context.pool, &mut listener, &channels) => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
    }
}

/// One read after `place` (the tail of the outbox when there is none yet), broadcast when it
/// found anything; `place` moves to the last row read.
async fn read_and_broadcast(
    context: &WorkerContext,
    place: &mut Option<Position>,
) -> Result<Rest, sqlx::Error> {
    let from = match *place {
        Some(from) => from,
        None => *place.insert(read::tail(&context.pool).await?),
    };
    let page = read::after(&context.pool, from, &Filter::ALL, READ_LIMIT).await?;
    if let Some(last) = page.events.last() {
        let to = last.position;
        let batch = Batch {
            from,
            to,
            events: page.events,
        };
        // No receiver left is fine: the next client reads the outbox itself.
        let _ = context.stream.live.send(Arc::new(batch));
        *place = Some(to);
    }
    Ok(page.rest)
}
