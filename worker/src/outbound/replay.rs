//! Replaying an endpoint's events (`POST /v1/endpoints/{id}/replay?since=`): every outbox event
//! since a time that the endpoint [`subscribes`] to (types and uids) gets a pending delivery to
//! it, including events it never had (it was created, subscribed or enabled later). An event
//! it already has a pending delivery of is skipped; one it has a finished delivery of has that
//! delivery requeued in a new retry window (a delivery is one per event and endpoint, so its
//! `webhook-id` stays the same). `test` events, each meant for one endpoint, are not replayed.
//!
//! The outbox is walked by its time-ordered id, from just before `since` to the newest event
//! when the replay started, [`BATCH`] events per statement, each statement its own short
//! transaction: a replay of a week holds no lock for long and leaves nothing half-done that a
//! second call would repeat. Calling it twice creates nothing twice (the deliveries' unique
//! `(event_id, endpoint_id)` decides, and a pending delivery is never requeued), and events
//! committed after the walk started are fanned out as usual.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::manual;
use super::outbox::subscribes;

/// Outbox events one statement walks.
pub const BATCH: i64 = 1000;

/// How much earlier than `since` the walk starts by id: ids are taken by the worker's clock and
/// `created_at` by Postgres', so the walk starts early and `created_at` decides.
const CLOCK_MARGIN: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// What a replay did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Replayed {
    /// Events since then of the endpoint's types and uids.
    pub events: i64,
    /// Deliveries created for events it never had.
    pub created: i64,
    /// Finished deliveries made pending again.
    pub requeued: i64,
    /// Events whose delivery was pending already, left as they were.
    pub already_pending: i64,
}

/// One statement's walk: $4 events after id $2 up to id $3, those since $5 that endpoint $1
/// wants, their new deliveries and their requeued ones.
fn statement() -> String {
    let requeued = manual::requeue(
        "endpoint_id = $1 AND event_id = ANY (ARRAY(SELECT id FROM matching)) RETURNING 1",
    );
    format!(
        "WITH batch AS (
             SELECT id, event_type, uid, created_at FROM outbox
             WHERE id > $2 AND id <= $3 ORDER BY id LIMIT $4
         ), matching AS (
             SELECT batch.id FROM batch JOIN endpoints ON endpoints.id = $1 AND {subscribed}
             WHERE batch.created_at >= $5 AND batch.event_type <> 'test'
         ), created AS (
             INSERT INTO deliveries (id, event_id, endpoint_id)
             SELECT uuid_v7(), id, $1 FROM matching
             ON CONFLICT (event_id, endpoint_id) DO NOTHING
             RETURNING 1
         ), requeued AS ({requeued})
         SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1) AS last, (SELECT count(*) FROM batch) AS walked,
                (SELECT count(*) FROM matching) AS matched,
                (SELECT count(*) FROM created) AS created,
                (SELECT count(*) FROM requeued) AS requeued",
        subscribed = subscribes!("batch.event_type", "batch.uid"),
    )
}

/// One statement's counts.
#[derive(Debug, sqlx::FromRow)]
struct Step {
    last: Option<Uuid>,
    walked: i64,
    matched: i64,
    created: i64,
    requeued: i64,
}

/// Replays `endpoint`'s events since `since`; `None` when there is no such endpoint. Wakes the
/// delivery loops when it is done.
pub async fn replay(
    pool: &PgPool,
    endpoint: Uuid,
    since: DateTime<Utc>,
) -> Result<Option<Replayed>, sqlx::Error> {
    if !manual::endpoint_exists(pool, endpoint).await? {
        return Ok(None);
    }
    let statement = statement();
    let start = since.checked_sub_signed(CLOCK_MARGIN).unwrap_or(since);
    let (mut after, until) = (first_id_at(start), Uuid::now_v7());
    let mut replayed = Replayed::default();
    loop {
        let step: Step = sqlx::query_as(&statement)
            .bind(endpoint)
            .bind(after)
            .bind(until)
            .bind(BATCH)
            .bind(since)
            .fetch_one(pool)
            .await?;
        replayed.events += step.matched;
        replayed.created += step.created;
        replayed.requeued += step.requeued;
        replayed.already_pending += step.matched - step.created - step.requeued;
        match step.last {
            Some(last) if step.walked == BATCH => after = last,
            _ => break,
        }
    }
    manual::wake(pool).await?;
    Ok(Some(replayed))
}

/// The smallest version 7 UUID of the millisecond `at` (ids compare as bytes, time first).
fn first_id_at(at: DateTime<Utc>) -> Uuid {
    let millis = at.timestamp_millis().clamp(0, (1 << 48) - 1) as u128;
    Uuid::from_u128(millis << 80)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_id_of_a_millisecond_sorts_before_every_id_made_in_it_and_after_earlier_ones() {
        let before = Uuid::now_v7();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let now = Utc::now();
        let bound = first_id_at(now);
        let after = Uuid::now_v7();
        assert!(before < bound, "{before} < {bound}");
        assert!(bound <= after, "{bound} <= {after}");
        assert_eq!(first_id_at(DateTime::<Utc>::MIN_UTC), Uuid::nil());
    }
}
