//! How many deliveries each endpoint has in each status, known without counting them.
//!
//! Triggers on `deliveries` (migration 0010) append every change of a delivery's status to
//! `delivery_count_changes` (+n for inserted rows, -1/+1 for a row whose status changed, -n for
//! deleted ones), so no writer can forget one and no writer waits on a shared counter row. The
//! sweeper [`fold`]s those into `delivery_counts` (one row per endpoint and status), and a
//! reader adds the two (`counted!`). A count then costs O(endpoints + changes since the last
//! fold), however many deliveries are pending, succeeded or failed: the pending gauge and
//! `/stats` never walk the backlog.

use sqlx::PgPool;
use uuid::Uuid;

/// `(endpoint_id, status, n)` rows whose sums per endpoint and status are the counts, for the
/// endpoints matching `$condition` (a literal over `endpoint_id`).
macro_rules! counted {
    ($condition:literal) => {
        concat!(
            "(SELECT endpoint_id, status, count AS n FROM delivery_counts WHERE ",
            $condition,
            " UNION ALL SELECT endpoint_id, status, delta FROM delivery_count_changes WHERE ",
            $condition,
            ")"
        )
    };
}

/// Moves every unfolded change into `delivery_counts`, in one statement, and drops the counts
/// an earlier fold left at zero (an endpoint's deliveries deleted with it) unless this one
/// changes them (a statement must not touch a row twice). A concurrent fold waits on the rows
/// this one deletes and then skips them, so nothing is counted twice.
const FOLD: &str = "WITH folded AS (
         DELETE FROM delivery_count_changes RETURNING endpoint_id, status, delta
     ), summed AS (
         INSERT INTO delivery_counts (endpoint_id, status, count)
         SELECT endpoint_id, status, sum(delta) FROM folded GROUP BY endpoint_id, status
         ON CONFLICT (endpoint_id, status)
             DO UPDATE SET count = delivery_counts.count + excluded.count
         RETURNING 1
     ), emptied AS (
         DELETE FROM delivery_counts
         WHERE count = 0 AND (endpoint_id, status) NOT IN (SELECT endpoint_id, status FROM folded)
     )
     SELECT count(*) FROM summed";

/// Pending deliveries of every endpoint.
pub const PENDING: &str = concat!(
    "SELECT coalesce(sum(n), 0)::int8 FROM ",
    counted!("status = 'pending'"),
    " pending"
);

/// Folds the changes appended since the last fold; returns how many counts it changed.
pub async fn fold(pool: &PgPool) -> Result<usize, sqlx::Error> {
    let changed: i64 = sqlx::query_scalar(FOLD).fetch_one(pool).await?;
    Ok(changed as usize)
}

/// Pending deliveries of every endpoint, as of now.
pub async fn pending(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(PENDING).fetch_one(pool).await
}

/// One endpoint's deliveries by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Counts {
    pub pending: i64,
    pub succeeded: i64,
    pub failed: i64,
}

/// `endpoint`'s deliveries by status, as of now.
pub async fn of_endpoint(pool: &PgPool, endpoint: Uuid) -> Result<Counts, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT coalesce(sum(n) FILTER (WHERE status = 'pending'), 0)::int8 AS pending,
                coalesce(sum(n) FILTER (WHERE status = 'succeeded'), 0)::int8 AS succeeded,
                coalesce(sum(n) FILTER (WHERE status = 'failed'), 0)::int8 AS failed
         FROM ",
        counted!("endpoint_id = $1"),
        " counts"
    ))
    .bind(endpoint)
    .fetch_one(pool)
    .await
}
