//! Consuming events from RabbitMQ: manual acks, a bounded prefetch, and reconnection.
//!
//! The messages that are waiting when the consumer looks (up to `WORKER_BATCH` of them) are
//! stored together in one Postgres transaction and acknowledged only after its commit; an idle
//! queue gives batches of one, so nothing waits for a batch to fill. `WORKER_CONCURRENCY`
//! batches are in flight at once, and the prefetch holds as many messages again, so that under
//! load the next batch is whole when a slot frees (with a prefetch of exactly what the batches
//! hold, a freed slot found only the few messages the broker had sent back so far). A failure
//! that passes by itself (Postgres down) is retried in place, holding the messages, and never
//! counts against the event. Any other failure takes the batch apart and stores its events one
//! at a time, so one bad event cannot hold the others back; the bad one's failure is counted in
//! `processing_failures`, and it is nacked back to the queue until that count reaches
//! `DELIVERY_LIMIT`, then rejected, which dead-letters it through `<prefix>.dead`. A committed
//! batch is acknowledged with one `basic.ack` (`multiple`) together with the committed batches
//! behind it, or, when an older message of its channel is still being stored, one ack a message
//! (while stopping, by the older one's batch instead; [`acks`]). If the worker
//! dies, every unacknowledged message is redelivered to another consumer, and that costs the
//! event nothing.
//!
//! On shutdown the consumer cancels its subscription and stops retrying: what is being stored
//! finishes and its acks are written, what it had received but not yet taken is stored and
//! acknowledged too ([`drain`]), what Postgres cannot take is nacked back to the queue, then
//! the channels and the connection are closed with a reply code (see [`close`]); whatever is
//! still held after `SHUTDOWN_TIMEOUT_MS` goes back when the connection closes.

mod acks;
mod drain;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use lapin::Connection;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use shared::Envelope;
use shared::broker::{self, Topology};
use tokio::sync::watch;
use tracing::Instrument;

use crate::WorkerContext;
use crate::dead_letters;
use crate::gauges;
use crate::handlers::{self, HandlerError, Outcome};
use crate::outbound::outbox;
use crate::supervisor::panic_message;
use acks::{Ledger, Settle};
use drain::stopped;

const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long closing the channels and the connection may take; within the second
/// [`crate::run`] gives the tasks past `SHUTDOWN_TIMEOUT_MS`.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(800);
/// AMQP's reply code for a close that is no error.
const REPLY_SUCCESS: u16 = 200;

/// Consumes until `stopping` turns true, reconnecting with backoff whenever the broker is lost.
pub async fn run(context: Arc<WorkerContext>, mut stopping: watch::Receiver<bool>) {
    // A previous run that panicked left no chance to say it lost its connection.
    gauges::broker_connected(&context, false);
    let mut backoff = Duration::from_millis(100);
    while !*stopping.borrow() {
        match consume(&context, stopping.clone()).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(error) => tracing::warn!(%error, "broker connection failed"),
        }
        gauges::broker_connected(&context, false);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopping.wait_for(|stop| *stop) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection's lifetime: declare, consume, and return when it is lost or we stop.
async fn consume(
    context: &Arc<WorkerContext>,
    stopping: watch::Receiver<bool>,
) -> lapin::Result<()> {
    let settings = &context.settings.broker;
    let topology = Topology::new(settings);
    let connection = broker::connect_to(settings, "worker").await?;
    let channel = topology.declare(&connection).await?;
    let prefetch = context.settings.prefetch;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            topology.events_queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let publish = connection.create_channel().await?;
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let _published = PublishChannel::install(context, publish);
    let dead = connection.create_channel().await?;
    let dead_channel = dead.clone();
    let sampled = gauges::queues(connection.create_channel().await?, topology.clone());
    gauges::broker_connected(context, true);
    tracing::info!(queue = %topology.events_queue, prefetch, "consuming");
    let drained = drain::Drained::default();
    let cancel = drain::cancel_when_stopped(&channel, consumer.tag(), stopping.clone());
    // Every delivery enters the ledger as the stream yields it, in the channel's order.
    let ledger = Arc::new(Ledger::default());
    let batches = consumer
        .map(|delivery| delivery.map(|delivery| (ledger.hold(&delivery), delivery)))
        .ready_chunks(context.settings.batch)
        .for_each_concurrent(context.settings.batches_in_flight, |deliveries| {
            drained.count(context, take_and_process(context, deliveries))
        });
    let events = async {
        tokio::select! {
            _ = batches => {}
            _ = cancel => {}
        }
    };
    let dead_letters =
        dead_letters::consume(context.clone(), dead, topology, stopped(stopping.clone()));
    // Boxed: checking these closures' futures for `Send` inside the larger one trips rustc's
    // higher-ranked lifetime inference.
    let work = futures_util::future::join(events.boxed(), dead_letters.boxed());
    tokio::select! {
        _ = work => {}
        _ = sampled => {}
        _ = deadline_after_stop(context, stopping) => {
            tracing::warn!("shutdown timeout; returning the messages still held to the queue");
        }
    }
    close(&connection, &[&channel, &dead_channel]).await;
    drained.report(context);
    Ok(())
}

/// Closes the channels that settle messages, then the connection, each with a reply code, within
/// [`CLOSE_TIMEOUT`]. A channel's close-ok comes back only once the broker has handled every ack
/// sent on it before the close; closing the connection alone let RabbitMQ (3.10, quorum queue)
/// drop acks it had read but not yet passed to the queue, so committed events came back (up to
/// a few dozen in one stop of two). Messages still held then go back to the queue. (A close-ok
/// does not cover acks the broker's channel is holding back from a busy quorum queue: [`acks`]
/// sends one ack a commit so that it has hardly any to hold.)
async fn close(connection: &Connection, channels: &[&lapin::Channel]) {
    const REASON: &str = "worker stopping or reconnecting";
    let closing = async {
        for channel in channels {
            if let Err(error) = channel.close(REPLY_SUCCESS, REASON.into()).await {
                tracing::debug!(%error, channel = channel.id(), "closing a channel");
            }
        }
        if let Err(error) = connection.close(REPLY_SUCCESS, REASON.into()).await {
            tracing::debug!(%error, "closing the broker connection");
        }
    };
    if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
        tracing::warn!("the broker did not answer the close in time; dropping the connection");
    }
}

/// Resolves `SHUTDOWN_TIMEOUT_MS` after `stopping` turns true.
async fn deadline_after_stop(context: &WorkerContext, stopping: watch::Receiver<bool>) {
    stopped(stopping).await;
    tokio::time::sleep(context.settings.shutdown_timeout).await;
}

/// The confirm-mode channel redrives publish on, offered in the context while the connection
/// lives and withdrawn when this is dropped (a channel keeps its connection open).
struct PublishChannel<'a>(&'a WorkerContext);

impl<'a> PublishChannel<'a> {
    fn install(context: &'a WorkerContext, channel: lapin::Channel) -> Self {
        *context.publish_channel.write().expect("channel lock") = Some(channel);
        PublishChannel(context)
    }
}

impl Drop for PublishChannel<'_> {
    fn drop(&mut self) {
        *self.0.publish_channel.write().expect("channel lock") = None;
    }
}

/// Reads the deliveries that arrived together, then stores and settles them as one batch;
/// returns how many messages it acknowledged after their commit.
async fn take_and_process(
    context: &Arc<WorkerContext>,
    deliveries: Vec<lapin::Result<(Settle, Delivery)>>,
) -> usize {
    let mut taken = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        match delivery {
            Ok((settle, delivery)) => taken.extend(take(settle, delivery).await),
            Err(error) => tracing::warn!(%error, "consumer error"),
        }
    }
    process(context, taken).await
}

/// A message taken off the queue: its event, and the handle that settles it.
struct Taken {
    envelope: Envelope,
    settle: Settle,
}

/// Reads a delivery's envelope; a message that is not one is dead-lettered at once.
async fn take(settle: Settle, delivery: Delivery) -> Option<Taken> {
    match Envelope::from_amqp(&delivery.properties, delivery.data) {
        Ok(envelope) => Some(Taken { envelope, settle }),
        Err(error) => {
            tracing::error!(%error, "unreadable message; dead-lettering it");
            let _ = settle.reject(false).await;
            None
        }
    }
}

/// Stores a batch and settles its messages; if it fails, stores its events one at a time.
/// Returns how many messages it acknowledged after their commit.
async fn process(context: &Arc<WorkerContext>, taken: Vec<Taken>) -> usize {
    if taken.len() <= 1 {
        let Some(taken) = taken.into_iter().next() else {
            return 0;
        };
        return process_alone(context, taken).await;
    }
    let (envelopes, settles): (Vec<Envelope>, Vec<Settle>) =
        taken.into_iter().map(|t| (t.envelope, t.settle)).unzip();
    let started = Instant::now();
    match store(context, &envelopes, &settles).await {
        Ok(handled) => acknowledge(context, &envelopes, &settles, &handled, started).await,
        Err(error) if error.is_transient() => return_all(&settles, &error).await,
        Err(error) => {
            tracing::warn!(%error, events = envelopes.len(), "a batch failed; storing its events one at a time");
            let mut acked = 0;
            for (envelope, settle) in envelopes.into_iter().zip(settles) {
                acked += process_alone(context, Taken { envelope, settle }).await;
            }
            acked
        }
    }
}

/// Stores one event and settles its message: ack after commit, else count the failure and
/// nack it back, or reject it (dead-letter it) once it has failed `DELIVERY_LIMIT` times. Its
/// log lines carry the event's id and the request id ingest gave it. Returns 1 if it was acked.
async fn process_alone(context: &Arc<WorkerContext>, taken: Taken) -> usize {
    let span = tracing::info_span!(
        "event",
        event_id = %taken.envelope.event_id,
        request_id = taken.envelope.request_id.as_deref(),
    );
    process_one(context, taken).instrument(span).await
}

async fn process_one(context: &Arc<WorkerContext>, taken: Taken) -> usize {
    let Taken { envelope, settle } = taken;
    let (envelopes, settles) = (
        std::slice::from_ref(&envelope),
        std::slice::from_ref(&settle),
    );
    let started = Instant::now();
    match store(context, envelopes, settles).await {
        Ok(handled) => acknowledge(context, envelopes, settles, &handled, started).await,
        Err(error) if error.is_transient() => return_all(settles, &error).await,
        Err(error) => {
            fail(context, &envelope, &settle, &error).await;
            0
        }
    }
}

/// Hands messages back to the queue after a failure that is not theirs (Postgres down while
/// stopping, or the channel gone): nothing is counted against them, and none is acked (0).
async fn return_all(settles: &[Settle], error: &HandlerError) -> usize {
    tracing::warn!(%error, events = settles.len(), "returning events to the queue untouched");
    for settle in settles {
        let _ = settle.nack(true).await;
    }
    0
}

/// Counts a failure of the event's own processing and settles its message accordingly.
async fn fail(context: &WorkerContext, envelope: &Envelope, settle: &Settle, error: &HandlerError) {
    metrics::counter!("worker_events_failed_total", "kind" => envelope.kind.as_str()).increment(1);
    let limit = context.settings.broker.delivery_limit;
    let failures = dead_letters::record_failure(&context.pool, envelope, &error.to_string()).await;
    let (event_id, kind) = (envelope.event_id, envelope.kind.as_str());
    match failures {
        Some(failures) if failures >= limit => {
            tracing::error!(%error, %event_id, kind, failures, "event failed for the last time; dead-lettering it");
            let _ = settle.reject(false).await;
        }
        failures => {
            tracing::error!(%error, %event_id, kind, ?failures, limit, "event failed; returning it to the queue");
            let _ = settle.nack(true).await;
        }
    }
}

/// Stores the events in one transaction, retrying in place while the failure is one that
/// passes by itself, the messages are still ours to settle and the worker is not stopping.
async fn store(
    context: &WorkerContext,
    envelopes: &[Envelope],
    settles: &[Settle],
) -> Result<Handled, HandlerError> {
    let mut backoff = Duration::from_millis(100);
    let mut stopping = context.stopping.clone();
    loop {
        match handle_all(context, envelopes).await {
            Err(error)
                if error.is_transient()
                    && settles.iter().all(Settle::usable)
                    && !*stopping.borrow() =>
            {
                tracing::warn!(%error, events = envelopes.len(), "transient failure; retrying");
                metrics::counter!("worker_transient_failures_total").increment(1);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopping.wait_for(|stop| *stop) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            result => return result,
        }
    }
}

/// What became of a batch whose transaction committed.
struct Handled {
    /// One per envelope, in order.
    outcomes: Vec<Outcome>,
    /// Deliveries the transaction queued for the delivery loop.
    deliveries_queued: u64,
}

/// [`handlers::handle_all`], with a panic turned into a failure of these events.
async fn handle_all(
    context: &WorkerContext,
    envelopes: &[Envelope],
) -> Result<Handled, HandlerError> {
    let handling = AssertUnwindSafe(handlers::handle_all(&context.pool, envelopes)).catch_unwind();
    let (result, deliveries_queued) = outbox::counting_deliveries(handling).await;
    let outcomes =
        result.unwrap_or_else(|panic| Err(HandlerError::Panicked(panic_message(&*panic))))?;
    Ok(Handled {
        outcomes,
        deliveries_queued,
    })
}

/// Acknowledges stored events' messages, after recording them and waking the delivery loop;
/// returns how many were acknowledged or went into a run's ack (see [`acks::ack_all`]).
async fn acknowledge(
    context: &WorkerContext,
    envelopes: &[Envelope],
    settles: &[Settle],
    handled: &Handled,
    started: Instant,
) -> usize {
    for (envelope, &outcome) in envelopes.iter().zip(&handled.outcomes) {
        record(context, envelope, outcome, started);
    }
    if handled.outcomes.contains(&Outcome::Stored) {
        context.events_committed(handled.deliveries_queued > 0);
    }
    acks::ack_all(settles, context.is_stopping()).await
}

fn record(context: &WorkerContext, envelope: &Envelope, outcome: Outcome, started: Instant) {
    let outcome_name = outcome.name();
    metrics::counter!("worker_events_total", "kind" => envelope.kind.as_str(), "outcome" => outcome_name)
        .increment(1);
    metrics::histogram!("worker_event_seconds").record(started.elapsed());
    let lag = (chrono::Utc::now() - envelope.received_at)
        .to_std()
        .unwrap_or_default();
    metrics::histogram!("worker_ingest_to_commit_seconds").record(lag);
    if context.settings.logs.events {
        shared::telemetry::log_event(envelope, outcome_name);
    }
}
