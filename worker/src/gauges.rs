//! Gauges sampled every few seconds rather than kept on the hot path: the queues' depth and
//! consumers (a passive declare on a channel of the consumer's connection), the database's
//! state and the pool's connections, disabled endpoints and the oldest due delivery.
//!
//! Every worker samples the same queues and tables, so the alert rules read them with `max`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use shared::broker::Topology;
use tokio::sync::watch;

use crate::WorkerContext;

/// How often the gauges are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How long one database sample may take before the database counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Samples the queues' depth and consumers on `channel` until a declare fails (the connection
/// is going); then it waits forever, so the caller can race it with the consumer's own work.
pub async fn queues(channel: lapin::Channel, topology: Topology) {
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    let queues = [
        ("events", topology.events_queue),
        ("dead", topology.dead_queue),
    ];
    'sampling: loop {
        every.tick().await;
        for (label, name) in &queues {
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            let Ok(queue) = channel
                .queue_declare(name.as_str().into(), passive, FieldTable::default())
                .await
            else {
                break 'sampling;
            };
            metrics::gauge!("worker_queue_messages", "queue" => *label)
                .set(queue.message_count() as f64);
            metrics::gauge!("worker_queue_consumers", "queue" => *label)
                .set(queue.consumer_count() as f64);
        }
    }
    std::future::pending::<()>().await
}

/// Sets `worker_broker_connected` beside the flag `/readyz` reads.
pub fn broker_connected(context: &WorkerContext, connected: bool) {
    context.broker_connected.store(connected, Ordering::SeqCst);
    metrics::gauge!("worker_broker_connected").set(if connected { 1.0 } else { 0.0 });
}

/// Samples the database gauges until `stopping` turns true.
pub async fn database(context: Arc<WorkerContext>, mut stopping: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
        sample_database(&context).await;
    }
}

async fn sample_database(context: &WorkerContext) {
    let pool = &context.pool;
    let (size, idle) = (pool.size(), pool.num_idle() as u32);
    metrics::gauge!("worker_db_pool_connections", "state" => "in_use")
        .set(size.saturating_sub(idle) as f64);
    metrics::gauge!("worker_db_pool_connections", "state" => "idle").set(idle as f64);
    metrics::gauge!("worker_db_pool_max_connections")
        .set(f64::from(pool.options().get_max_connections()));
    let sampled = tokio::time::timeout(PROBE_TIMEOUT, outbound_state(pool)).await;
    let connected = matches!(sampled, Ok(Ok(_)));
    metrics::gauge!("worker_database_connected").set(if connected { 1.0 } else { 0.0 });
    if let Ok(Ok((disabled, oldest_due))) = sampled {
        metrics::gauge!("outbound_endpoints_disabled").set(disabled as f64);
        metrics::gauge!("outbound_oldest_due_delivery_seconds").set(oldest_due.max(0.0));
    }
}

/// Disabled endpoints, and how long ago the earliest pending delivery of an enabled endpoint
/// became due (0 when none is due). Bounded by endpoints, never by deliveries (issue 19): the
/// endpoints are counted, and each enabled one's earliest pending row is one probe of the
/// index `deliveries_pending_by_endpoint (endpoint_id, next_attempt_at)`.
async fn outbound_state(pool: &sqlx::PgPool) -> sqlx::Result<(i64, f64)> {
    sqlx::query_as(OUTBOUND_STATE).fetch_one(pool).await
}

/// The statement of [`outbound_state`] (public so a test can EXPLAIN it).
pub const OUTBOUND_STATE: &str = "SELECT (SELECT count(*) FROM endpoints WHERE NOT enabled),
                COALESCE((
                    SELECT extract(epoch FROM now() - min(first.next_attempt_at))::float8
                    FROM endpoints e
                    CROSS JOIN LATERAL (
                        SELECT next_attempt_at FROM deliveries
                        WHERE endpoint_id = e.id AND status = 'pending'
                        ORDER BY next_attempt_at LIMIT 1
                    ) first
                    WHERE e.enabled
                ), 0)";

/// Help text of the sampled gauges.
pub fn describe_metrics() {
    use metrics::{Unit, describe_gauge};
    describe_gauge!(
        "worker_queue_messages",
        "Messages ready (not yet delivered to a consumer) on the queue named by `queue` (events, dead), sampled every 5 s"
    );
    describe_gauge!(
        "worker_queue_consumers",
        "Consumers of the queue named by `queue`, sampled every 5 s"
    );
    describe_gauge!(
        "worker_broker_connected",
        "1 while the consumer holds a live broker connection, else 0"
    );
    describe_gauge!(
        "worker_database_connected",
        "1 when Postgres answered the last sample (every 5 s) within 2 s, else 0"
    );
    describe_gauge!(
        "worker_db_pool_connections",
        "Connections of the worker's Postgres pool, by state (in_use, idle), sampled every 5 s"
    );
    describe_gauge!(
        "worker_db_pool_max_connections",
        "Most connections the pool opens (DATABASE_MAX_CONNECTIONS)"
    );
    describe_gauge!(
        "outbound_endpoints_disabled",
        "Endpoints disabled (by an operator or by the worker), sampled every 5 s"
    );
    describe_gauge!(
        "outbound_oldest_due_delivery_seconds",
        Unit::Seconds,
        "Seconds since the earliest pending delivery became due (0 when none is due), sampled every 5 s"
    );
}
