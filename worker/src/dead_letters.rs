//! Poison messages: events that failed processing `DELIVERY_LIMIT` times are dead-lettered by
//! RabbitMQ to `<prefix>.dead`; this module records them in Postgres (with the last error the
//! worker saw) and puts one back on the events exchange when asked to redrive it.

use std::sync::Arc;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use serde_json::json;
use shared::Envelope;
use shared::broker::{EVENTS_ROUTING_KEY, Topology};
use sqlx::PgPool;
use uuid::Uuid;

use crate::WorkerContext;

/// Remembers why an event failed, so its dead letter can say so.
pub async fn record_failure(pool: &PgPool, event_id: Uuid, error: &str) {
    let result = sqlx::query(
        "INSERT INTO processing_failures (event_id, last_error) VALUES ($1, $2)
         ON CONFLICT (event_id) DO UPDATE SET attempts = processing_failures.attempts + 1,
             last_error = EXCLUDED.last_error, updated_at = now()",
    )
    .bind(event_id)
    .bind(error)
    .execute(pool)
    .await;
    if let Err(failure) = result {
        tracing::warn!(%failure, "could not record the processing failure");
    }
}

/// Consumes the dead-letter queue on `channel` until the channel closes or `stop` resolves.
pub async fn consume(
    context: Arc<WorkerContext>,
    channel: Channel,
    topology: Topology,
    stop: impl std::future::Future<Output = ()> + Send,
) -> lapin::Result<()> {
    let consumer = channel
        .basic_consume(
            topology.dead_queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    consumer
        .take_until(stop)
        .for_each(|delivery| async {
            if let Ok(delivery) = delivery {
                settle(&context.pool, delivery).await;
            }
        })
        .await;
    Ok(())
}

async fn settle(pool: &PgPool, delivery: Delivery) {
    match store(pool, &delivery).await {
        Ok(()) => {
            metrics::counter!("worker_dead_letters_total").increment(1);
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
        }
        Err(error) => {
            tracing::warn!(%error, "could not store a dead letter; it stays on the queue");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let requeue = BasicNackOptions {
                requeue: true,
                ..Default::default()
            };
            let _ = delivery.acker.nack(requeue).await;
        }
    }
}

async fn store(pool: &PgPool, delivery: &Delivery) -> Result<(), sqlx::Error> {
    let properties = &delivery.properties;
    let envelope = Envelope::from_amqp(properties, Vec::new()).ok();
    let event_id = envelope.as_ref().map(|envelope| envelope.event_id);
    let kind = properties.kind().as_ref().map(|kind| kind.to_string());
    let uid = envelope.map(|envelope| envelope.uid);
    let headers = serde_json::to_value(properties.headers()).unwrap_or_default();
    let described = json!({
        "message_id": event_id,
        "type": kind,
        "content_type": properties.content_type().as_ref().map(|t| t.to_string()),
        "headers": headers,
    });
    sqlx::query(
        "INSERT INTO dead_letters (id, event_id, kind, uid, properties, payload, reason)
         VALUES ($1, $2, $3, $4, $5, $6,
                 COALESCE((SELECT last_error FROM processing_failures WHERE event_id = $2), 'unreadable message'))
         ON CONFLICT (event_id) WHERE redriven_at IS NULL DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(event_id)
    .bind(kind)
    .bind(uid)
    .bind(described)
    .bind(&delivery.data)
    .execute(pool)
    .await
    .map(drop)
}

/// Why a redrive did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error("no such dead letter, or it was already redriven")]
    NotFound,
    #[error("not connected to the broker")]
    NotConnected,
    #[error("the dead letter's message properties are unreadable")]
    Unreadable,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
}

/// Publishes the dead letter `id` back to the events exchange and marks it redriven.
pub async fn redrive(context: &WorkerContext, id: Uuid) -> Result<(), RedriveError> {
    let mut tx = context.pool.begin().await?;
    let row: Option<(serde_json::Value, Vec<u8>, Option<Uuid>)> = sqlx::query_as(
        "SELECT properties, payload, event_id FROM dead_letters WHERE id = $1 AND redriven_at IS NULL FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let (described, payload, event_id) = row.ok_or(RedriveError::NotFound)?;
    let properties = rebuild_properties(&described).ok_or(RedriveError::Unreadable)?;
    let channel = context
        .publish_channel()
        .ok_or(RedriveError::NotConnected)?;
    let topology = Topology::new(&context.settings.broker);
    let confirm = channel
        .basic_publish(
            topology.events_exchange.as_str().into(),
            EVENTS_ROUTING_KEY.into(),
            BasicPublishOptions::default(),
            &payload,
            properties,
        )
        .await?
        .await?;
    if !confirm.is_ack() {
        return Err(RedriveError::NotConnected);
    }
    sqlx::query("UPDATE dead_letters SET redriven_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM processing_failures WHERE event_id = $1")
        .bind(event_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

fn rebuild_properties(described: &serde_json::Value) -> Option<BasicProperties> {
    let headers: FieldTable = serde_json::from_value(described.get("headers")?.clone()).ok()?;
    let mut properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers);
    if let Some(id) = described["message_id"].as_str() {
        properties = properties.with_message_id(id.into());
    }
    if let Some(kind) = described["type"].as_str() {
        properties = properties.with_type(kind.into());
    }
    if let Some(content_type) = described["content_type"].as_str() {
        properties = properties.with_content_type(content_type.into());
    }
    Some(properties)
}
