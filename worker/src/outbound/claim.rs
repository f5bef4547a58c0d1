//! Claiming due deliveries, per endpoint and in batches, at a cost that does not depend on what
//! is pending elsewhere.
//!
//! A claim walks the endpoints table (one row per endpoint, however many deliveries wait), in a
//! rotating order that starts after the endpoint the previous claim ended with (round-robin).
//! Endpoints this worker may not send to now are dropped there, before any delivery is read:
//! disabled ones, and those with no [`Room`] (circuit open, at their concurrency or rate
//! limit). Of the rest it takes those with a due delivery (one index probe each), no more than
//! the worker's free attempt slots, so each gets at least one slot. For each a `LATERAL`
//! subquery reads its earliest due rows from the index `deliveries_pending_by_endpoint
//! (endpoint_id, next_attempt_at)`, at most its room's rows (a batch of `DELIVERY_BATCH` per
//! attempt it may start), and locks them with `FOR UPDATE SKIP LOCKED`. A claim therefore
//! reads O(endpoints + rows claimed) index entries, and a backlog of a million rows behind one
//! blocked endpoint is never read for another's sake (migration 0010). [`super::batch`] splits
//! what was claimed into batches, one per attempt slot.
//!
//! The same statement pushes `next_attempt_at` forward by a lease (the endpoint's timeout plus
//! [`LEASE_MARGIN_MS`]): one worker at a time owns a delivery, and if it dies mid-attempt the
//! lease runs out and any worker retries it. A batch stops sending [`SEND_FOR`] after its claim,
//! so its last attempt and its record fit in the lease. The next-due lookup ([`NEXT_DUE`]) is
//! bounded the same way: the earliest of each sendable endpoint's first pending row.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::{Arguments, PgPool};
use uuid::Uuid;

use super::isolation::Room;

/// Added to an endpoint's timeout to make the lease of a claim.
pub const LEASE_MARGIN_MS: i32 = 10_000;
/// How long after its claim a batch may start another attempt: half the lease's margin, so
/// the last attempt (at most the endpoint's timeout) and its record end within the lease.
pub const SEND_FOR: std::time::Duration =
    std::time::Duration::from_millis(LEASE_MARGIN_MS as u64 / 2);

/// A claimed delivery with everything its attempt needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub attempts: i32,
    pub window_attempts: i32,
    pub first_attempt_at: Option<DateTime<Utc>>,
    pub event_type: String,
    pub data: serde_json::Value,
    pub event_created_at: DateTime<Utc>,
    pub url: String,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub headers: serde_json::Value,
    pub timeout_ms: i32,
    pub rate_limit_per_s: Option<i32>,
    /// When it was due, before the claim leased it: a batch sends oldest first.
    pub due_at: DateTime<Utc>,
}

/// The columns of [`Claimed`], as a literal so the statements below are built at compile time.
macro_rules! claimed_columns {
    () => {
        "d.id, d.endpoint_id, d.attempts, d.window_attempts, d.first_attempt_at, o.event_type,
         o.data, o.created_at AS event_created_at, e.url, e.secret, e.previous_secret,
         e.previous_secret_expires_at, e.headers, e.timeout_ms, e.rate_limit_per_s"
    };
}

/// What one claim asks for; see [`arguments`] for how it binds.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// Endpoints this worker limits now: their rows to claim (zero: skip them).
    pub room: &'a Room,
    /// Deliveries to claim in all: the worker's free slots, a batch each.
    pub limit: i64,
    /// Deliveries to claim of an endpoint not in `room`: its concurrency, a batch each.
    pub per_endpoint: i64,
    /// Endpoints to claim of: the worker's free slots, so each gets one.
    pub endpoints: i64,
    /// The endpoint the previous claim ended with: this one starts after it.
    pub after: Uuid,
}

/// Leases, for each endpoint's timeout plus $6 ms, up to $4 due deliveries of at most $7
/// endpoints that have any due, walking enabled endpoints in id order from the one after $5
/// round to $5, taking of each at most its room ($1/$2, else $3) of its earliest due rows. The
/// due condition sits in the locking subquery, so a row another worker claimed meanwhile is
/// rechecked after the lock and skipped. Every read of `deliveries` is an index lookup by
/// construction, whatever the statistics say: "has a due row" is a `LIMIT 1` in due order
/// (never flattened into a semi-join that may scan), and the update finds its rows by primary
/// key through `= ANY` (never a hash join over the whole table).
pub const CLAIM: &str = concat!(
    "WITH walk AS (
         SELECT e.id, coalesce(r.rows, $3) AS rows
         FROM endpoints e
         LEFT JOIN UNNEST($1::uuid[], $2::bigint[]) AS r (endpoint_id, rows)
             ON r.endpoint_id = e.id
         CROSS JOIN LATERAL (
             SELECT next_attempt_at FROM deliveries
             WHERE endpoint_id = e.id AND status = 'pending'
             ORDER BY next_attempt_at LIMIT 1
         ) first
         WHERE e.enabled AND coalesce(r.rows, $3) > 0 AND first.next_attempt_at <= now()
         ORDER BY e.id <= $5, e.id
         LIMIT $7
     ),
     due AS (
         SELECT c.id, c.next_attempt_at
         FROM walk e
         CROSS JOIN LATERAL (
             SELECT id, next_attempt_at FROM deliveries
             WHERE endpoint_id = e.id AND status = 'pending' AND next_attempt_at <= now()
             ORDER BY next_attempt_at LIMIT e.rows
             FOR UPDATE SKIP LOCKED
         ) c
         LIMIT $4
     )
     UPDATE deliveries d
     SET next_attempt_at = now() + (e.timeout_ms + $6) * interval '1 millisecond'
     FROM due, endpoints e, outbox o
     WHERE d.id = ANY (ARRAY(SELECT id FROM due)) AND d.id = due.id
         AND e.id = d.endpoint_id AND o.id = d.event_id
     RETURNING due.next_attempt_at AS due_at, ",
    claimed_columns!()
);

/// The earliest `next_attempt_at` of a pending delivery of an enabled endpoint not in $1: one
/// index probe per endpoint, never a walk over a blocked endpoint's rows.
pub const NEXT_DUE: &str = "SELECT min(first.next_attempt_at) FROM endpoints e
     CROSS JOIN LATERAL (
         SELECT next_attempt_at FROM deliveries
         WHERE endpoint_id = e.id AND status = 'pending'
         ORDER BY next_attempt_at LIMIT 1
     ) first
     WHERE e.enabled AND e.id <> ALL ($1)";

const LOAD: &str = concat!(
    "SELECT d.next_attempt_at AS due_at, ",
    claimed_columns!(),
    " FROM deliveries d
     JOIN endpoints e ON e.id = d.endpoint_id JOIN outbox o ON o.id = d.event_id
     WHERE d.id = $1"
);

/// The bound parameters of [`CLAIM`] for `request` (public so a test can EXPLAIN the very
/// statement the loop runs).
pub fn arguments(request: &Request<'_>) -> PgArguments {
    let mut arguments = PgArguments::default();
    add(&mut arguments, request.room.endpoints.as_slice());
    add(&mut arguments, request.room.rows.as_slice());
    add(&mut arguments, request.per_endpoint);
    add(&mut arguments, request.limit);
    add(&mut arguments, request.after);
    add(&mut arguments, LEASE_MARGIN_MS);
    add(&mut arguments, request.endpoints);
    arguments
}

fn add<'q, T>(arguments: &mut PgArguments, value: T)
where
    T: sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + 'q,
{
    arguments
        .add(value)
        .expect("uuids and integers always encode");
}

/// Claims what `request` asks for; see [`CLAIM`].
pub async fn claim(pool: &PgPool, request: &Request<'_>) -> Result<Vec<Claimed>, sqlx::Error> {
    let mut connection = crate::checkout::connection(pool).await?;
    sqlx::query_as_with(CLAIM, arguments(request))
        .fetch_all(&mut *connection)
        .await
}

/// When the next delivery of an endpoint not in `blocked` is due; `None` when none is pending.
pub async fn next_due(
    pool: &PgPool,
    blocked: &[Uuid],
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(NEXT_DUE)
        .bind(blocked)
        .fetch_one(pool)
        .await
}

/// The endpoint a claim ended with, in the rotation that started after `after`: where the next
/// claim starts.
pub fn last_served(after: Uuid, claimed: &[Claimed]) -> Uuid {
    claimed
        .iter()
        .map(|delivery| delivery.endpoint_id)
        .max_by_key(|&endpoint| (endpoint <= after, endpoint))
        .unwrap_or(after)
}

/// Reads one delivery in the claimed shape (for an attempt made on request).
pub async fn load(pool: &PgPool, id: Uuid) -> Result<Option<Claimed>, sqlx::Error> {
    sqlx::query_as(LOAD).bind(id).fetch_optional(pool).await
}

/// How soon a delivery given back unattempted ([`release`]) is due again.
const RELEASE_AFTER_MS: i64 = 100;

/// Gives claimed deliveries back without an attempt (their batch stopped early, or their
/// endpoint was busy): due again in [`RELEASE_AFTER_MS`], unless another attempt was recorded
/// since.
pub async fn release(
    executor: impl sqlx::PgExecutor<'_>,
    deliveries: &[Claimed],
) -> Result<(), sqlx::Error> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = deliveries.iter().map(|claimed| claimed.id).collect();
    let attempts: Vec<i32> = deliveries.iter().map(|claimed| claimed.attempts).collect();
    sqlx::query(
        "UPDATE deliveries d SET next_attempt_at = now() + $3 * interval '1 millisecond'
         FROM UNNEST($1::uuid[], $2::int[]) AS r (id, attempts)
         WHERE d.id = ANY ($1) AND d.id = r.id AND d.attempts = r.attempts
             AND d.status = 'pending'",
    )
    .bind(ids)
    .bind(attempts)
    .bind(RELEASE_AFTER_MS as f64)
    .execute(executor)
    .await?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn claimed_of(endpoint: u128) -> Claimed {
        Claimed {
            id: Uuid::now_v7(),
            endpoint_id: Uuid::from_u128(endpoint),
            attempts: 0,
            window_attempts: 0,
            first_attempt_at: None,
            event_type: "test".into(),
            data: serde_json::json!({}),
            event_created_at: Utc::now(),
            url: String::new(),
            secret: String::new(),
            previous_secret: None,
            previous_secret_expires_at: None,
            headers: serde_json::json!({}),
            timeout_ms: 1,
            rate_limit_per_s: None,
            due_at: Utc::now(),
        }
    }

    #[test]
    fn the_next_claim_starts_after_the_last_endpoint_served_in_rotation_order() {
        let claimed = |ids: &[u128]| ids.iter().map(|&id| claimed_of(id)).collect::<Vec<_>>();
        let after = Uuid::from_u128(5);
        assert_eq!(last_served(after, &claimed(&[6, 9, 7])), Uuid::from_u128(9));
        assert_eq!(
            last_served(after, &claimed(&[8, 9, 1, 3])),
            Uuid::from_u128(3),
            "wrapped round"
        );
        assert_eq!(last_served(after, &[]), after, "nothing claimed");
    }
}
