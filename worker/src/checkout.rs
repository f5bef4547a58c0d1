//! Taking a connection from the Postgres pool, counted: `worker_db_pool_waiting` is how many
//! tasks wait for one right now (sqlx counts connections in use and idle, not the tasks queued
//! behind them). A pool that is too small for the load shows here first: `in_use` sits at the
//! max and waiters pile up.
//!
//! Every transaction the worker opens and every connection it holds goes through [`begin`] or
//! [`connection`]: the consumer's batches, the delivery loop's claims and records, the sweeper,
//! retention, erasure, the API's writes. Single statements sent straight to the pool (most API
//! reads, the sampled gauges, the stream's reads) are not counted; they queue the same way, so
//! the gauge can read low but never high.

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres, Transaction};

const WAITING: &str = "worker_db_pool_waiting";

/// `pool.begin()`, counted while it waits for a connection (and for its `BEGIN`, one round
/// trip: sqlx offers no stable way to begin on a connection already taken).
pub async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let _waiting = Waiting::start();
    pool.begin().await
}

/// `pool.acquire()`, counted while it waits.
pub async fn connection(pool: &PgPool) -> Result<PoolConnection<Postgres>, sqlx::Error> {
    let _waiting = Waiting::start();
    pool.acquire().await
}

/// One task in `worker_db_pool_waiting` while it lives, dropped or not (a waiting future that
/// is cancelled stops counting too).
struct Waiting;

impl Waiting {
    fn start() -> Self {
        metrics::gauge!(WAITING).increment(1.0);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        metrics::gauge!(WAITING).decrement(1.0);
    }
}

/// Help text of the gauge, and its series at 0.
pub fn describe_metrics() {
    metrics::describe_gauge!(
        WAITING,
        "Tasks of this worker waiting now for a connection from its Postgres pool (transactions and held connections; single statements on the pool are not counted)"
    );
    metrics::gauge!(WAITING).increment(0.0);
}
