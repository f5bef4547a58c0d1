//! Consuming events from RabbitMQ: manual acks, a bounded prefetch, and reconnection.
//!
//! The messages that are waiting when the consumer looks (up to `WORKER_BATCH` of them) are
//! stored together in one Postgres transaction and acknowledged only after its commit; an idle
//! queue gives batches of one, so nothing waits for a batch to fill. Several batches are in
//! flight at once, `WORKER_PREFETCH` messages in all. A failure that passes by itself (Postgres
//! down) is retried in place, holding the messages, so an outage never burns their delivery
//! counts. Any other failure takes the batch apart and stores its events one at a time, so one
//! bad event cannot hold the others back; the bad one is nacked back to the queue, which
//! dead-letters it after `DELIVERY_LIMIT` deliveries. If the worker dies, every unacknowledged
//! message is redelivered to another consumer.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::Acker;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use shared::Envelope;
use shared::broker::{self, Topology};
use tokio::sync::watch;

use crate::WorkerContext;
use crate::dead_letters;
use crate::handlers::{self, HandlerError, Outcome};

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Consumes until `stopping` turns true, reconnecting with backoff whenever the broker is lost.
pub async fn run(context: Arc<WorkerContext>, mut stopping: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(100);
    while !*stopping.borrow() {
        match consume(&context, stopping.clone()).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(error) => tracing::warn!(%error, "broker connection failed"),
        }
        context.broker_connected.store(false, Ordering::SeqCst);
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
    mut stopping: watch::Receiver<bool>,
) -> lapin::Result<()> {
    let settings = &context.settings.broker;
    let topology = Topology::new(settings);
    let connection = broker::connect(&settings.url, "worker").await?;
    let channel = connection.create_channel().await?;
    topology.declare(&channel).await?;
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
    *context.publish_channel.write().expect("channel lock") = Some(publish);
    let dead = connection.create_channel().await?;
    context.broker_connected.store(true, Ordering::SeqCst);
    tracing::info!(queue = %topology.events_queue, prefetch, "consuming");
    let mut dead_stopping = stopping.clone();
    let dead_consumer = tokio::spawn(dead_letters::consume(
        context.clone(),
        dead,
        topology.clone(),
        async move {
            let _ = dead_stopping.wait_for(|stop| *stop).await;
        },
    ));
    let stop = async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    let batch = context.settings.batch.max(1);
    consumer
        .take_until(stop)
        .ready_chunks(batch)
        .for_each_concurrent(usize::from(prefetch).div_ceil(batch), |deliveries| async {
            let mut taken = Vec::with_capacity(deliveries.len());
            for delivery in deliveries {
                match delivery {
                    Ok(delivery) => taken.extend(take(delivery).await),
                    Err(error) => tracing::warn!(%error, "consumer error"),
                }
            }
            process(context, taken).await;
        })
        .await;
    *context.publish_channel.write().expect("channel lock") = None;
    let _ = connection
        .close(200, "worker stopping or reconnecting".into())
        .await;
    let _ = dead_consumer.await;
    Ok(())
}

/// A message taken off the queue: its event, and the handle that settles it.
struct Taken {
    envelope: Envelope,
    acker: Acker,
}

/// Reads a delivery's envelope; a message that is not one is dead-lettered at once.
async fn take(delivery: Delivery) -> Option<Taken> {
    match Envelope::from_amqp(&delivery.properties, delivery.data) {
        Ok(envelope) => Some(Taken {
            envelope,
            acker: delivery.acker,
        }),
        Err(error) => {
            tracing::error!(%error, "unreadable message; dead-lettering it");
            let _ = delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await;
            None
        }
    }
}

/// Stores a batch and settles its messages; if it fails, stores its events one at a time.
async fn process(context: &Arc<WorkerContext>, taken: Vec<Taken>) {
    if taken.len() <= 1 {
        if let Some(taken) = taken.into_iter().next() {
            process_alone(context, taken).await;
        }
        return;
    }
    let (envelopes, ackers): (Vec<Envelope>, Vec<Acker>) =
        taken.into_iter().map(|t| (t.envelope, t.acker)).unzip();
    let started = Instant::now();
    match store(context, &envelopes, &ackers).await {
        Ok(outcomes) => settle(context, &envelopes, &ackers, &outcomes, started).await,
        Err(error) => {
            tracing::warn!(%error, events = envelopes.len(), "a batch failed; storing its events one at a time");
            for (envelope, acker) in envelopes.into_iter().zip(ackers) {
                process_alone(context, Taken { envelope, acker }).await;
            }
        }
    }
}

/// Stores one event and settles its message: ack after commit, or nack on failure.
async fn process_alone(context: &Arc<WorkerContext>, taken: Taken) {
    let Taken { envelope, acker } = taken;
    let (envelopes, ackers) = (
        std::slice::from_ref(&envelope),
        std::slice::from_ref(&acker),
    );
    let started = Instant::now();
    match store(context, envelopes, ackers).await {
        Ok(outcomes) => settle(context, envelopes, ackers, &outcomes, started).await,
        Err(error) => {
            tracing::error!(%error, event_id = %envelope.event_id, kind = envelope.kind.as_str(), "event failed; returning it to the queue");
            metrics::counter!("worker_events_failed_total", "kind" => envelope.kind.as_str())
                .increment(1);
            dead_letters::record_failure(&context.pool, envelope.event_id, &error.to_string())
                .await;
            let requeue = BasicNackOptions {
                requeue: true,
                ..Default::default()
            };
            let _ = acker.nack(requeue).await;
        }
    }
}

/// Stores the events in one transaction, retrying in place while the failure is one that
/// passes by itself and the messages are still ours to settle.
async fn store(
    context: &WorkerContext,
    envelopes: &[Envelope],
    ackers: &[Acker],
) -> Result<Vec<Outcome>, HandlerError> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match handlers::handle_all(&context.pool, envelopes).await {
            Err(error) if error.is_transient() && ackers.iter().all(Acker::usable) => {
                tracing::warn!(%error, events = envelopes.len(), "transient failure; retrying");
                metrics::counter!("worker_transient_failures_total").increment(1);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            result => return result,
        }
    }
}

/// Acknowledges stored events' messages, after recording them and waking the delivery loop.
async fn settle(
    context: &WorkerContext,
    envelopes: &[Envelope],
    ackers: &[Acker],
    outcomes: &[Outcome],
    started: Instant,
) {
    for (envelope, &outcome) in envelopes.iter().zip(outcomes) {
        record(context, envelope, outcome, started);
    }
    if outcomes.contains(&Outcome::Stored) {
        context.outbound.wake.notify_one();
    }
    for (envelope, acker) in envelopes.iter().zip(ackers) {
        if let Err(error) = acker.ack(BasicAckOptions::default()).await {
            tracing::warn!(%error, event_id = %envelope.event_id, "ack failed; the redelivery will be a duplicate");
        }
    }
}

fn record(context: &WorkerContext, envelope: &Envelope, outcome: Outcome, started: Instant) {
    let outcome_name = match outcome {
        Outcome::Stored => "stored",
        Outcome::Duplicate => "duplicate",
    };
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
