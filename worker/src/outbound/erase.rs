//! A user's outbound traffic, erased for [`crate::lifecycle::erasure`]: first their pending
//! deliveries are cancelled, so nothing more is sent for them, and last their outbox events go
//! with every delivery and attempt. These are the only deletes of `deliveries` outside this
//! module's siblings; each works on a batch of the uid's outbox events (`outbox_by_uid`,
//! migration 0012) inside the caller's transaction, so the caller records its counts with it.
//!
//! The kept delivery counts ([`super::counts`]) stay right by themselves: the statement trigger
//! on `deliveries` appends -n per endpoint and status for every row deleted here.
//!
//! A claim sends from memory: a delivery claimed just before it was cancelled may still be
//! sent, but no later than [`SEND_FOR`] plus its endpoint's timeout after the claim. A claim
//! sets `next_attempt_at` to the claim's time plus that timeout plus [`LEASE_MARGIN_MS`], so
//! [`Cancelled::sends_end_by`] says, from the rows cancelled, when every such send has ended.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::claim::{LEASE_MARGIN_MS, SEND_FOR};

/// What one batch of [`cancel_pending`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cancelled {
    /// The last outbox event of the batch (where the next one starts); `None` at the end.
    pub last_event: Option<Uuid>,
    pub deliveries: u64,
    pub attempts: u64,
    /// When a send of a cancelled delivery that was claimed may still be under way ends.
    pub sends_end_by: Option<DateTime<Utc>>,
}

/// The uid's ($1) outbox events after $2 in id order, at most $3 of them.
const EVENTS: &str = "SELECT id FROM outbox WHERE uid = $1 AND id > $2 ORDER BY id LIMIT $3";

/// Deletes the pending deliveries (and their attempts) of the next `events` outbox events of
/// `uid` after `after`.
pub async fn cancel_pending(
    connection: &mut PgConnection,
    uid: &str,
    after: Uuid,
    events: i64,
) -> Result<Cancelled, sqlx::Error> {
    let batch: Vec<Uuid> = sqlx::query_scalar(EVENTS)
        .bind(uid)
        .bind(after)
        .bind(events)
        .fetch_all(&mut *connection)
        .await?;
    let Some(&last_event) = batch.last() else {
        return Ok(Cancelled::default());
    };
    let attempts = sqlx::query(
        "DELETE FROM delivery_attempts a USING deliveries d
         WHERE d.event_id = ANY ($1) AND d.status = 'pending' AND a.delivery_id = d.id",
    )
    .bind(&batch)
    .execute(&mut *connection)
    .await?
    .rows_affected();
    let (deliveries, sends_end_by): (i64, Option<DateTime<Utc>>) = sqlx::query_as(&format!(
        "WITH gone AS (
             DELETE FROM deliveries d USING endpoints e
             WHERE d.event_id = ANY ($1) AND d.status = 'pending' AND e.id = d.endpoint_id
             RETURNING d.next_attempt_at, e.timeout_ms
         )
         SELECT count(*), max(next_attempt_at - interval '{lease_margin} milliseconds'
                              + interval '{send_for} milliseconds')
             FILTER (WHERE next_attempt_at > now() AND next_attempt_at
                     <= now() + (timeout_ms + {lease_margin}) * interval '1 millisecond')
         FROM gone",
        lease_margin = LEASE_MARGIN_MS,
        send_for = SEND_FOR.as_millis(),
    ))
    .bind(&batch)
    .fetch_one(&mut *connection)
    .await?;
    Ok(Cancelled {
        last_event: Some(last_event),
        deliveries: deliveries as u64,
        attempts,
        sends_end_by,
    })
}

/// What one batch of [`erase_events`] deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Erased {
    pub outbox: u64,
    pub deliveries: u64,
    pub attempts: u64,
}

/// Deletes the first `events` outbox events of `uid` with their deliveries and attempts.
pub async fn erase_events(
    connection: &mut PgConnection,
    uid: &str,
    events: i64,
) -> Result<Erased, sqlx::Error> {
    let batch: Vec<Uuid> = sqlx::query_scalar(EVENTS)
        .bind(uid)
        .bind(Uuid::nil())
        .bind(events)
        .fetch_all(&mut *connection)
        .await?;
    if batch.is_empty() {
        return Ok(Erased::default());
    }
    let attempts = sqlx::query(
        "DELETE FROM delivery_attempts a USING deliveries d
         WHERE d.event_id = ANY ($1) AND a.delivery_id = d.id",
    )
    .bind(&batch)
    .execute(&mut *connection)
    .await?
    .rows_affected();
    let deliveries = sqlx::query("DELETE FROM deliveries WHERE event_id = ANY ($1)")
        .bind(&batch)
        .execute(&mut *connection)
        .await?
        .rows_affected();
    let outbox = sqlx::query("DELETE FROM outbox WHERE id = ANY ($1)")
        .bind(&batch)
        .execute(&mut *connection)
        .await?
        .rows_affected();
    Ok(Erased {
        outbox,
        deliveries,
        attempts,
    })
}
