//! Per-endpoint attempt statistics over time windows (`GET /v1/endpoints/{id}/stats`), and the
//! run of failures that disables an endpoint ([`super::disable`]), both kept without reading
//! the attempts table.
//!
//! The statement that records a batch of attempts ([`super::deliver`]) also appends one
//! [`Change`] per endpoint to `endpoint_attempt_changes` (migration 0015): attempts by status
//! class, attempts per latency bucket ([`LATENCY_BOUNDS_MS`]), the batch's last success and its
//! first failure after it. Appending waits on no other transaction and adds no index entry, so
//! the delivery path pays one small row per batch. The sweeper [`fold`]s the changes into one
//! row per endpoint and minute (`endpoint_attempt_stats`) and into `endpoints.failing_since`
//! (written only when it changes); [`window`] adds up one endpoint's rows of a window and the
//! changes not yet folded. Latency percentiles are read off the buckets, interpolated within
//! one (bounds about 25 % apart), as Prometheus' `histogram_quantile` does.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// Upper bounds, in milliseconds, of the latency buckets; one more bucket holds the rest.
pub const LATENCY_BOUNDS_MS: [u32; 46] = [
    1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100, 120, 150, 200, 250, 300, 400,
    500, 600, 800, 1_000, 1_200, 1_500, 2_000, 2_500, 3_000, 4_000, 5_000, 6_000, 8_000, 10_000,
    12_000, 15_000, 20_000, 25_000, 30_000, 40_000, 50_000, 60_000,
];

/// The status classes counted, in the order of the `classes` arrays.
pub const CLASSES: [&str; 5] = ["2xx", "3xx", "4xx", "5xx", "error"];

/// The longest window asked for; folded rows older than it (and a day) are pruned.
pub const LONGEST_WINDOW: Duration = Duration::from_secs(7 * 86_400);

/// One attempt, as the statistics see it.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub endpoint_id: Uuid,
    pub attempted_at: DateTime<Utc>,
    /// The receiver's status; `None` when it did not answer.
    pub status: Option<u16>,
    pub latency: Duration,
}

impl Sample {
    fn class(&self) -> usize {
        match self.status {
            Some(code @ 200..=599) => usize::from(code / 100 - 2),
            _ => CLASSES.len() - 1,
        }
    }

    fn succeeded(&self) -> bool {
        self.class() == 0
    }
}

/// What a batch adds to one endpoint's statistics: a row of `endpoint_attempt_changes`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    endpoint_id: Uuid,
    attempted_at: DateTime<Utc>,
    classes: Vec<i64>,
    latency: Vec<i64>,
    succeeded_at: Option<DateTime<Utc>>,
    failed_at: Option<DateTime<Utc>>,
}

impl Change {
    fn new(first: &Sample) -> Self {
        Change {
            endpoint_id: first.endpoint_id,
            attempted_at: first.attempted_at,
            classes: vec![0; CLASSES.len()],
            latency: vec![0; LATENCY_BOUNDS_MS.len() + 1],
            succeeded_at: None,
            failed_at: None,
        }
    }

    fn add(&mut self, sample: &Sample) {
        self.attempted_at = self.attempted_at.min(sample.attempted_at);
        self.classes[sample.class()] += 1;
        self.latency[bucket(sample.latency)] += 1;
        if sample.succeeded() {
            self.succeeded_at = Some(sample.attempted_at);
            self.failed_at = None;
        } else if self.failed_at.is_none() {
            self.failed_at = Some(sample.attempted_at);
        }
    }
}

/// The changes of a batch's attempts, one per endpoint, samples taken in the order made.
pub fn changes(samples: impl IntoIterator<Item = Sample>) -> Vec<Change> {
    let mut changes: Vec<Change> = Vec::new();
    for sample in samples {
        match changes
            .iter_mut()
            .find(|change| change.endpoint_id == sample.endpoint_id)
        {
            Some(change) => change.add(&sample),
            None => {
                let mut change = Change::new(&sample);
                change.add(&sample);
                changes.push(change);
            }
        }
    }
    changes
}

/// The latency bucket of `latency`.
fn bucket(latency: Duration) -> usize {
    let millis = latency.as_secs_f64() * 1000.0;
    LATENCY_BOUNDS_MS
        .iter()
        .position(|&bound| millis <= f64::from(bound))
        .unwrap_or(LATENCY_BOUNDS_MS.len())
}

/// The common table expression, for the recording statement, that appends the changes bound
/// as JSON at parameter `$N`; see [`super::deliver`].
macro_rules! append_changes {
    ($parameter:literal) => {
        concat!(
            "INSERT INTO endpoint_attempt_changes
                 (endpoint_id, attempted_at, classes, latency, succeeded_at, failed_at)
             SELECT * FROM jsonb_to_recordset(",
            $parameter,
            ") AS c (endpoint_id uuid, attempted_at timestamptz, classes bigint[],
                     latency bigint[], succeeded_at timestamptz, failed_at timestamptz)"
        )
    };
}
pub(crate) use append_changes;

/// Moves every unfolded change into the per-minute rows (of endpoints that still exist) and
/// into `failing_since`, prunes rows older than $1 seconds, in one statement. A run of failures
/// starts at the first failure after the latest success; a success later than the run's start
/// ends it (and a failure after that success starts the next). A concurrent fold waits on the
/// changes this one deletes and then skips them, so nothing is counted twice.
const FOLD: &str = "WITH folded AS (
         DELETE FROM endpoint_attempt_changes RETURNING *
     ), rolled AS (
         INSERT INTO endpoint_attempt_stats AS s (endpoint_id, minute, classes, latency)
         SELECT f.endpoint_id, date_trunc('minute', f.attempted_at), counters_sum(f.classes),
                counters_sum(f.latency)
         FROM folded f JOIN endpoints e ON e.id = f.endpoint_id
         GROUP BY 1, 2
         ON CONFLICT (endpoint_id, minute) DO UPDATE
             SET classes = counters_add(s.classes, excluded.classes),
                 latency = counters_add(s.latency, excluded.latency)
         RETURNING 1
     ), latest AS (
         SELECT endpoint_id, max(succeeded_at) AS succeeded_at FROM folded GROUP BY endpoint_id
     ), runs AS (
         SELECT l.endpoint_id, l.succeeded_at,
                min(f.failed_at) FILTER (WHERE f.failed_at > coalesce(l.succeeded_at, '-infinity'))
                    AS failed_at
         FROM latest l JOIN folded f USING (endpoint_id)
         GROUP BY l.endpoint_id, l.succeeded_at
     ), marked AS (
         UPDATE endpoints e SET failing_since = n.failing_since
         FROM (
             SELECT r.endpoint_id,
                    CASE WHEN r.succeeded_at > coalesce(x.failing_since, '-infinity')
                         THEN r.failed_at ELSE coalesce(x.failing_since, r.failed_at) END
                        AS failing_since
             FROM runs r JOIN endpoints x ON x.id = r.endpoint_id
         ) n
         WHERE e.id = n.endpoint_id AND e.failing_since IS DISTINCT FROM n.failing_since
     ), pruned AS (
         DELETE FROM endpoint_attempt_stats WHERE minute < now() - $1 * interval '1 second'
     )
     SELECT count(*) FROM rolled";

/// Folds the changes appended since the last fold; returns how many per-minute rows it wrote.
pub async fn fold(pool: &PgPool) -> Result<usize, sqlx::Error> {
    let keep = LONGEST_WINDOW + Duration::from_secs(86_400);
    let written: i64 = sqlx::query_scalar(FOLD)
        .bind(keep.as_secs_f64())
        .fetch_one(pool)
        .await?;
    Ok(written as usize)
}

/// One endpoint's attempts over a window.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Window {
    pub attempts: i64,
    /// Attempts answered 2xx over all attempts; null without attempts.
    pub success_ratio: Option<f64>,
    pub latency_ms: Percentiles,
    /// Attempts by the class of their answer: `2xx`, `3xx`, `4xx`, `5xx`, `error` (none).
    #[schema(value_type = std::collections::HashMap<String, i64>)]
    pub attempts_by_class: serde_json::Map<String, serde_json::Value>,
}

/// Latency percentiles in milliseconds; null without attempts.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

/// The window's rows: the minutes from the one `$2` seconds ago to now, folded or not.
const WINDOW: &str = "SELECT counters_sum(classes) AS classes, counters_sum(latency) AS latency
     FROM (
         SELECT classes, latency FROM endpoint_attempt_stats
         WHERE endpoint_id = $1 AND minute >= date_trunc('minute', now() - $2 * interval '1 second')
         UNION ALL
         SELECT classes, latency FROM endpoint_attempt_changes
         WHERE endpoint_id = $1
             AND attempted_at >= date_trunc('minute', now() - $2 * interval '1 second')
     ) w";

/// `endpoint`'s attempts over the last `length` (from the start of that minute).
pub async fn window(
    pool: &PgPool,
    endpoint: Uuid,
    length: Duration,
) -> Result<Window, sqlx::Error> {
    let (classes, latency): (Vec<i64>, Vec<i64>) = sqlx::query_as(WINDOW)
        .bind(endpoint)
        .bind(length.as_secs_f64())
        .fetch_one(pool)
        .await?;
    Ok(summarize(&classes, &latency))
}

/// A window's numbers from its summed class and latency counters.
fn summarize(classes: &[i64], latency: &[i64]) -> Window {
    let count = |class: usize| classes.get(class).copied().unwrap_or(0);
    let attempts: i64 = (0..CLASSES.len()).map(count).sum();
    let attempts_by_class = CLASSES
        .iter()
        .enumerate()
        .map(|(class, name)| (name.to_string(), count(class).into()))
        .collect();
    Window {
        attempts,
        success_ratio: (attempts > 0).then(|| count(0) as f64 / attempts as f64),
        latency_ms: Percentiles {
            p50: percentile(latency, 0.5),
            p95: percentile(latency, 0.95),
            p99: percentile(latency, 0.99),
        },
        attempts_by_class,
    }
}

/// The `q` quantile of the bucketed latencies, interpolated linearly within its bucket; the
/// last bucket (beyond every bound) answers its lower bound.
fn percentile(buckets: &[i64], q: f64) -> Option<f64> {
    let total: i64 = buckets.iter().sum();
    if total <= 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0i64;
    for (index, &count) in buckets.iter().enumerate() {
        if count > 0 && (below + count) as f64 >= rank {
            let lower = index
                .checked_sub(1)
                .map_or(0.0, |previous| f64::from(LATENCY_BOUNDS_MS[previous]));
            let Some(&upper) = LATENCY_BOUNDS_MS.get(index) else {
                return Some(lower);
            };
            let within = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
            return Some(lower + (f64::from(upper) - lower) * within);
        }
        below += count;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(endpoint: u128, seconds: i64, status: Option<u16>, millis: u64) -> Sample {
        Sample {
            endpoint_id: Uuid::from_u128(endpoint),
            attempted_at: DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap(),
            status,
            latency: Duration::from_millis(millis),
        }
    }

    #[test]
    fn a_batch_counts_its_attempts_by_class_and_latency_bucket() {
        let made = changes([
            sample(1, 0, Some(200), 3),
            sample(1, 1, Some(302), 3),
            sample(1, 2, Some(404), 70),
            sample(1, 3, Some(503), 70_000),
            sample(1, 4, None, 0),
            sample(1, 5, Some(101), 1),
        ]);
        assert_eq!(made.len(), 1);
        assert_eq!(made[0].classes, vec![1, 1, 1, 1, 2]);
        assert_eq!(made[0].latency[bucket(Duration::from_millis(3))], 2);
        assert_eq!(made[0].latency[LATENCY_BOUNDS_MS.len()], 1, "beyond 60 s");
        assert_eq!(made[0].latency.iter().sum::<i64>(), 6);
    }

    #[test]
    fn a_batch_remembers_its_last_success_and_the_first_failure_after_it() {
        let made = changes([
            sample(1, 0, Some(500), 1),
            sample(1, 1, Some(200), 1),
            sample(1, 2, Some(500), 1),
            sample(1, 3, None, 1),
            sample(2, 4, Some(500), 1),
        ]);
        assert_eq!(made.len(), 2, "one change per endpoint");
        assert_eq!(
            made[0].succeeded_at,
            Some(sample(1, 1, None, 0).attempted_at)
        );
        assert_eq!(made[0].failed_at, Some(sample(1, 2, None, 0).attempted_at));
        assert_eq!(made[1].succeeded_at, None);
        assert_eq!(made[1].failed_at, Some(sample(2, 4, None, 0).attempted_at));
        let healthy = changes([sample(1, 0, Some(500), 1), sample(1, 1, Some(204), 1)]);
        assert_eq!(healthy[0].failed_at, None);
    }

    #[test]
    fn percentiles_are_interpolated_within_their_bucket() {
        let mut latency = vec![0; LATENCY_BOUNDS_MS.len() + 1];
        let ten_ms = bucket(Duration::from_millis(10));
        latency[ten_ms] = 100;
        let p50 = percentile(&latency, 0.5).unwrap();
        assert!((8.0..=10.0).contains(&p50), "{p50}");
        latency[LATENCY_BOUNDS_MS.len()] = 100;
        assert_eq!(percentile(&latency, 0.99), Some(60_000.0));
        assert_eq!(percentile(&[0; 3], 0.5), None);
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn a_window_without_attempts_has_no_ratio_and_no_percentiles() {
        let empty = summarize(&[], &[]);
        assert_eq!(empty.attempts, 0);
        assert_eq!(empty.success_ratio, None);
        assert_eq!(empty.latency_ms.p99, None);
        assert_eq!(empty.attempts_by_class["5xx"], 0);
        let some = summarize(&[3, 0, 1, 0, 0], &[4]);
        assert_eq!(some.success_ratio, Some(0.75));
        assert_eq!(some.attempts_by_class["2xx"], 3);
    }
}
