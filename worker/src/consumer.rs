//! Consuming events from RabbitMQ: manual acks, a bounded prefetch, and reconnection.
//!
//! Each delivery is handled in its own Postgres transaction and acknowledged only after the
//! commit. A failure that passes by itself (Postgres down) is retried in place, holding the
//! message, so an outage never burns the message's delivery count; any other failure nacks it
//! back to the queue, which dead-letters it after `DELIVERY_LIMIT` deliveries. If the worker
//! dies, every unacknowledged message is redelivered to another consumer.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
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
use crate::handlers::{self, Outcome};

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
    consumer
        .take_until(stop)
        .for_each_concurrent(prefetch as usize, |delivery| async {
            match delivery {
                Ok(delivery) => process(context, delivery).await,
                Err(error) => tracing::warn!(%error, "consumer error"),
            }
        })
        .await;
    *context.publish_channel.write().expect("channel lock") = None;
    let _ = connection
        .close(200, "worker stopping or reconnecting".into())
        .await;
    let _ = dead_consumer.await;
    Ok(())
}

/// Handles one delivery and settles it: ack after commit, retry in place, or nack.
async fn process(context: &Arc<WorkerContext>, delivery: Delivery) {
    let envelope = match Envelope::from_amqp(&delivery.properties, delivery.data) {
        Ok(envelope) => envelope,
        Err(error) => {
            tracing::error!(%error, "unreadable message; dead-lettering it");
            let _ = delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await;
            return;
        }
    };
    let started = Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        match handlers::handle(&context.pool, &envelope).await {
            Ok(outcome) => {
                record(context, &envelope, outcome, started);
                if outcome == Outcome::Stored {
                    context.outbound.wake.notify_one();
                }
                if let Err(error) = delivery.acker.ack(BasicAckOptions::default()).await {
                    tracing::warn!(%error, event_id = %envelope.event_id, "ack failed; the redelivery will be a duplicate");
                }
                return;
            }
            Err(error) if error.is_transient() && delivery.acker.usable() => {
                tracing::warn!(%error, event_id = %envelope.event_id, "transient failure; retrying");
                metrics::counter!("worker_transient_failures_total").increment(1);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
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
                let _ = delivery.acker.nack(requeue).await;
                return;
            }
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
