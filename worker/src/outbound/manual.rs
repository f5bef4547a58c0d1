//! Deliveries on request, for the management API: a `test` event sent now, a retry of one
//! finished delivery, the recovery of an endpoint's failed deliveries, and the resumption of a
//! re-enabled endpoint's paused ones. Requeued and resumed deliveries open a new retry window
//! and wake the delivery loops with NOTIFY.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::claim::{self, LEASE_MARGIN_MS};
use super::deliver;
use super::send::Report;
use super::{Outbound, outbox::EventType};

/// What a manual retry found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    Requeued,
    /// Still pending: it is retried on its schedule (and may be in flight right now).
    AlreadyPending,
    NotFound,
}

/// Sends a `test` event to one endpoint now, through the usual attempt (signed, recorded, and
/// retried on the schedule if it fails). `None` when there is no such endpoint.
pub async fn send_test(
    outbound: &Outbound,
    pool: &PgPool,
    endpoint: Uuid,
) -> anyhow::Result<Option<(Uuid, Report)>> {
    let Some(delivery) = insert_test(pool, endpoint).await? else {
        return Ok(None);
    };
    let claimed = claim::load(pool, delivery)
        .await?
        .ok_or_else(|| anyhow::anyhow!("test delivery {delivery} vanished"))?;
    let report = deliver::attempt(outbound, pool, &claimed)
        .await?
        .ok_or_else(|| anyhow::anyhow!("test delivery {delivery} was not attempted"))?;
    Ok(Some((delivery, report)))
}

/// A dispatched `test` outbox row and its one delivery, already leased to this request.
async fn insert_test(pool: &PgPool, endpoint: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
    let mut tx = crate::checkout::begin(pool).await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT timeout_ms FROM endpoints WHERE id = $1")
        .bind(endpoint)
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        return Ok(None);
    }
    let (event, delivery) = (Uuid::now_v7(), Uuid::now_v7());
    let data = serde_json::json!({"endpoint_id": endpoint, "message": "a test event"});
    sqlx::query(
        "INSERT INTO outbox (id, event_type, data, dispatched_at) VALUES ($1, $2, $3, now())",
    )
    .bind(event)
    .bind(EventType::Test.as_str())
    .bind(data)
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "INSERT INTO deliveries (id, event_id, endpoint_id, next_attempt_at)
         SELECT $1, $2, id, now() + (timeout_ms + {LEASE_MARGIN_MS}) * interval '1 millisecond'
         FROM endpoints WHERE id = $3"
    ))
    .bind(delivery)
    .bind(event)
    .bind(endpoint)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(delivery))
}

/// Makes a finished delivery due again now, in a new retry window.
pub async fn retry(pool: &PgPool, delivery: Uuid) -> Result<Retry, sqlx::Error> {
    let status: Option<String> = sqlx::query_scalar(&requeue("id = $1 RETURNING status"))
        .bind(delivery)
        .fetch_optional(pool)
        .await?;
    if status.is_some() {
        wake(pool).await?;
        return Ok(Retry::Requeued);
    }
    let exists: Option<String> = sqlx::query_scalar("SELECT status FROM deliveries WHERE id = $1")
        .bind(delivery)
        .fetch_optional(pool)
        .await?;
    Ok(match exists {
        Some(_) => Retry::AlreadyPending,
        None => Retry::NotFound,
    })
}

/// True when there is an endpoint `endpoint`.
pub(super) async fn endpoint_exists(pool: &PgPool, endpoint: Uuid) -> Result<bool, sqlx::Error> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM endpoints WHERE id = $1")
        .bind(endpoint)
        .fetch_optional(pool)
        .await?;
    Ok(found.is_some())
}

/// Requeues every failed delivery of `endpoint` created since `since`; `None` when there is
/// no such endpoint.
pub async fn recover(
    pool: &PgPool,
    endpoint: Uuid,
    since: DateTime<Utc>,
) -> Result<Option<u64>, sqlx::Error> {
    if !endpoint_exists(pool, endpoint).await? {
        return Ok(None);
    }
    let requeued = sqlx::query(&requeue(
        "endpoint_id = $1 AND status = 'failed' AND created_at >= $2",
    ))
    .bind(endpoint)
    .bind(since)
    .execute(pool)
    .await?
    .rows_affected();
    wake(pool).await?;
    Ok(Some(requeued))
}

/// Pending deliveries whose window one resume statement reopens.
const RESUME_BATCH: i64 = 1000;

/// Readies the deliveries a disabled endpoint keeps pending (shown as `paused`) for its
/// re-enabling, run just before it: their retry windows start again at their next attempt, so
/// the time spent disabled does not fail them unattempted. Their due times stay (past ones are
/// due at once), so a delivery still in flight from before the endpoint was disabled is not
/// sent twice. In batches of [`RESUME_BATCH`], each its own statement (no attempt of a disabled
/// endpoint sets a window meanwhile, so it ends); returns how many. Wake the delivery loops
/// ([`wake`]) once the endpoint is enabled.
pub async fn resume(pool: &PgPool, endpoint: Uuid) -> Result<u64, sqlx::Error> {
    let mut resumed = 0;
    loop {
        let reopened = sqlx::query(
            "UPDATE deliveries SET first_attempt_at = NULL, window_attempts = 0, updated_at = now()
             WHERE id = ANY (ARRAY(
                 SELECT id FROM deliveries
                 WHERE endpoint_id = $1 AND status = 'pending' AND first_attempt_at IS NOT NULL
                 LIMIT $2))",
        )
        .bind(endpoint)
        .bind(RESUME_BATCH)
        .execute(pool)
        .await?
        .rows_affected();
        resumed += reopened;
        if reopened < RESUME_BATCH as u64 {
            return Ok(resumed);
        }
    }
}

/// The requeue statement for the finished deliveries matching `condition`.
pub(super) fn requeue(condition: &str) -> String {
    format!(
        "UPDATE deliveries SET status = 'pending', next_attempt_at = now(),
             first_attempt_at = NULL, window_attempts = 0, updated_at = now()
         WHERE status <> 'pending' AND {condition}"
    )
}

/// Wakes every worker's delivery loop.
pub async fn wake(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify('outbound', '')")
        .execute(pool)
        .await?;
    Ok(())
}
