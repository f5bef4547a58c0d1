//! Catch-up fan-out: turns outbox rows written without their deliveries (by an older worker
//! during a rolling upgrade, or by hand) into deliveries, one per enabled endpoint subscribed to
//! the event's type (and uid). Events emitted through [`super::outbox`] get theirs in their own
//! transaction; the sweeper runs this for the rest.
//!
//! One statement does a batch in one transaction: it locks undispatched rows with
//! `FOR UPDATE SKIP LOCKED` (so concurrent workers take different rows), inserts the deliveries
//! (`ON CONFLICT DO NOTHING` on `(event_id, endpoint_id)`, so a repeat is harmless) and marks the
//! rows dispatched. Either all of it commits or none.

use sqlx::PgPool;

use super::outbox::subscribed_endpoints;

/// Outbox rows taken per statement.
const BATCH: i64 = 256;

const FAN_OUT: &str = concat!(
    "
WITH batch AS (
    SELECT id, event_type, uid FROM outbox
    WHERE dispatched_at IS NULL
    ORDER BY created_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), fanned AS (
    INSERT INTO deliveries (id, event_id, endpoint_id)
    SELECT uuid_v7(), batch.id, endpoints.id
    FROM batch JOIN endpoints ON ",
    subscribed_endpoints!("batch.event_type", "batch.uid"),
    "
    ON CONFLICT (event_id, endpoint_id) DO NOTHING
    RETURNING 1
)
UPDATE outbox SET dispatched_at = now()
WHERE id IN (SELECT id FROM batch)
RETURNING (SELECT count(*) FROM fanned)"
);

/// What one fan-out pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FanOut {
    pub events: u64,
    pub deliveries: u64,
}

/// Fans out every undispatched outbox row, batch by batch.
pub async fn fan_out(pool: &PgPool) -> Result<FanOut, sqlx::Error> {
    let mut total = FanOut::default();
    loop {
        let rows: Vec<i64> = sqlx::query_scalar(FAN_OUT)
            .bind(BATCH)
            .fetch_all(pool)
            .await?;
        total.events += rows.len() as u64;
        total.deliveries += rows.first().copied().unwrap_or(0) as u64;
        if (rows.len() as i64) < BATCH {
            return Ok(total);
        }
    }
}
