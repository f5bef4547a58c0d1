//! Poison messages: the failures of each event's own processing are counted in
//! `processing_failures`; the consumer rejects an event once its count reaches
//! `DELIVERY_LIMIT`, and the queue dead-letters it to `<prefix>.dead`. This module records what
//! arrives there in `dead_letters` (with the last error the worker saw) and puts one back on
//! the events exchange when asked to redrive it.
//!
//! A message the broker dead-lettered by itself, for its own delivery limit (a queue declared
//! by an older release with a small `x-delivery-limit`, or RabbitMQ 4's default of 20), while
//! our count for its event is still below `DELIVERY_LIMIT`, is not poison: it is published
//! back to the events exchange instead. Every publish here is `mandatory` and confirmed, and
//! nothing is acked or marked redriven before the confirm.

use std::sync::Arc;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use serde_json::json;
use shared::Envelope;
use shared::broker::{self, EVENTS_ROUTING_KEY, PublishError, Topology};
use sqlx::PgPool;
use tracing::Instrument;
use uuid::Uuid;

use crate::WorkerContext;

/// Counts one failure of the event's own processing and remembers why, so its dead letter can
/// say so; returns its failures so far, or `None` if Postgres could not take the record.
pub async fn record_failure(pool: &PgPool, envelope: &Envelope, error: &str) -> Option<u32> {
    let result: Result<i32, _> = sqlx::query_scalar(
        "INSERT INTO processing_failures (event_id, last_error, uid) VALUES ($1, $2, $3)
         ON CONFLICT (event_id) DO UPDATE SET attempts = processing_failures.attempts + 1,
             last_error = EXCLUDED.last_error, uid = EXCLUDED.uid, updated_at = now()
         RETURNING attempts",
    )
    .bind(envelope.event_id)
    .bind(error)
    .bind(&envelope.uid)
    .fetch_one(pool)
    .await;
    match result {
        Ok(attempts) => Some(attempts.max(0) as u32),
        Err(failure) => {
            tracing::warn!(%failure, "could not record the processing failure");
            None
        }
    }
}

/// The failures of `event_id`'s own processing recorded so far.
async fn failures(pool: &PgPool, event_id: Uuid) -> Result<u32, sqlx::Error> {
    let attempts: Option<i32> =
        sqlx::query_scalar("SELECT attempts FROM processing_failures WHERE event_id = $1")
            .bind(event_id)
            .fetch_optional(pool)
            .await?;
    Ok(attempts.unwrap_or(0).max(0) as u32)
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
                settle(&context, &topology, delivery).await;
            }
        })
        .await;
    Ok(())
}

/// Records a dead letter, or puts back one the broker dead-lettered too early; acks it after.
/// Its log lines carry the request id of the event (its `correlation_id`), when it has one.
async fn settle(context: &WorkerContext, topology: &Topology, delivery: Delivery) {
    let request_id = delivery
        .properties
        .correlation_id()
        .as_ref()
        .map(|id| id.to_string());
    let span = tracing::info_span!("dead_letter", request_id);
    settle_in_span(context, topology, delivery)
        .instrument(span)
        .await
}

async fn settle_in_span(context: &WorkerContext, topology: &Topology, delivery: Delivery) {
    let result = match too_early(context, &delivery).await {
        Ok(Some(event_id)) => put_back(context, topology, &delivery, event_id).await,
        Ok(None) => store(&context.pool, &delivery).await.map_err(Into::into),
        Err(error) => Err(RedriveError::from(error)),
    };
    match result {
        Ok(()) => {
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
        }
        Err(error) => {
            tracing::warn!(%error, "could not settle a dead letter; it stays on the queue");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let requeue = BasicNackOptions {
                requeue: true,
                ..Default::default()
            };
            let _ = delivery.acker.nack(requeue).await;
        }
    }
}

/// The event id of a message the broker dead-lettered for its own delivery limit while our
/// count of the event's failures is below `DELIVERY_LIMIT`; `None` for a real dead letter.
async fn too_early(
    context: &WorkerContext,
    delivery: &Delivery,
) -> Result<Option<Uuid>, sqlx::Error> {
    let Some(event_id) = Envelope::from_amqp(&delivery.properties, Vec::new())
        .ok()
        .map(|envelope| envelope.event_id)
    else {
        return Ok(None);
    };
    if last_death_reason(delivery).as_deref() != Some("delivery_limit") {
        return Ok(None);
    }
    let limit = context.settings.broker.delivery_limit;
    Ok((failures(&context.pool, event_id).await? < limit).then_some(event_id))
}

/// The reason of the most recent dead-lettering in the `x-death` header (newest first).
fn last_death_reason(delivery: &Delivery) -> Option<String> {
    let headers = delivery.properties.headers().as_ref()?;
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(latest) = deaths.as_slice().first()? else {
        return None;
    };
    match latest.inner().get("reason")? {
        AMQPValue::LongString(reason) => Some(reason.to_string()),
        AMQPValue::ShortString(reason) => Some(reason.to_string()),
        _ => None,
    }
}

/// Publishes a message the broker dead-lettered too early back to the events exchange.
async fn put_back(
    context: &WorkerContext,
    topology: &Topology,
    delivery: &Delivery,
    event_id: Uuid,
) -> Result<(), RedriveError> {
    let channel = context
        .publish_channel()
        .ok_or(RedriveError::NotConnected)?;
    let properties = delivery.properties.clone();
    publish_event(&channel, topology, &delivery.data, properties).await?;
    tracing::warn!(%event_id, "the broker dead-lettered an event that is not poison; put it back");
    metrics::counter!("worker_dead_letters_put_back_total").increment(1);
    Ok(())
}

/// Publishes to the events exchange, mandatory and confirmed.
async fn publish_event(
    channel: &Channel,
    topology: &Topology,
    payload: &[u8],
    properties: BasicProperties,
) -> Result<(), RedriveError> {
    broker::publish_routed(
        channel,
        &topology.events_exchange,
        EVENTS_ROUTING_KEY,
        payload,
        properties,
    )
    .await
    .map_err(Into::into)
}

/// Records a real dead letter (once per event until it is redriven).
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
        "correlation_id": properties.correlation_id().as_ref().map(|id| id.to_string()),
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
    .bind(&kind)
    .bind(uid)
    .bind(described)
    .bind(&delivery.data)
    .execute(pool)
    .await?;
    metrics::counter!("worker_dead_letters_total").increment(1);
    tracing::warn!(?event_id, kind, "dead letter recorded");
    Ok(())
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
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Publishes the dead letter `id` back to the events exchange and, once a queue has confirmed
/// it, marks it redriven and forgets the event's failures (it is processed anew).
pub async fn redrive(context: &WorkerContext, id: Uuid) -> Result<(), RedriveError> {
    let mut tx = crate::checkout::begin(&context.pool).await?;
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
    // Forgotten before the publish, in this transaction: a failure of the redriven message
    // waits for the commit and then counts from zero; if the publish fails, nothing changes.
    sqlx::query("DELETE FROM processing_failures WHERE event_id = $1")
        .bind(event_id)
        .execute(&mut *tx)
        .await?;
    let topology = Topology::new(&context.settings.broker);
    publish_event(&channel, &topology, &payload, properties).await?;
    sqlx::query("UPDATE dead_letters SET redriven_at = now() WHERE id = $1")
        .bind(id)
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
    if let Some(request_id) = described["correlation_id"].as_str() {
        properties = properties.with_correlation_id(request_id.into());
    }
    Some(properties)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redriven_message_keeps_its_request_id_and_an_old_one_has_none() {
        let described = |correlation_id: serde_json::Value| {
            json!({"message_id": "m", "type": "omi_transcript", "headers": {},
                   "correlation_id": correlation_id})
        };
        let kept = rebuild_properties(&described(json!("req-7"))).unwrap();
        assert_eq!(kept.correlation_id().as_ref().unwrap().as_str(), "req-7");
        let old = rebuild_properties(&described(serde_json::Value::Null)).unwrap();
        assert!(old.correlation_id().is_none());
    }
}
