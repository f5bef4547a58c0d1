//! Delivery counts kept without counting: whatever inserts, moves or deletes deliveries (fan-out,
//! attempts, a manual requeue, an endpoint's deletion), the kept counts, folded or not, agree
//! with a `count(*)` over the table.

mod harness;

use harness::TestWorker;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;
use worker::outbound::counts::{self, Counts};
use worker::outbound::outbox::EventType;

/// Every endpoint's counts by `count(*)`, the slow way.
async fn counted_the_slow_way(pool: &PgPool, endpoint: Uuid) -> Counts {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
                count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
                count(*) FILTER (WHERE status = 'failed') AS failed
         FROM deliveries WHERE endpoint_id = $1",
    )
    .bind(endpoint)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn assert_counts_agree(pool: &PgPool, endpoints: &[Uuid], when: &str) {
    let mut pending = 0;
    for &endpoint in endpoints {
        let slow = counted_the_slow_way(pool, endpoint).await;
        let kept = counts::of_endpoint(pool, endpoint).await.unwrap();
        assert_eq!(kept, slow, "{when}");
        pending += slow.pending;
    }
    assert_eq!(counts::pending(pool).await.unwrap(), pending, "{when}");
}

async fn run(pool: &PgPool, statement: &str) {
    sqlx::query(statement).execute(pool).await.unwrap();
}

#[tokio::test]
async fn kept_counts_agree_with_counting_through_every_kind_of_change() {
    let (worker, endpoints) = TestWorker::stopped_with_endpoints(2).await;
    let pool = &worker.pool;
    for n in 0..5 {
        worker.emit(EventType::AudioLevel, json!({"n": n})).await;
    }
    assert_counts_agree(pool, &endpoints, "after fan-out").await;

    run(pool, "UPDATE deliveries SET next_attempt_at = now()").await;
    run(
        pool,
        "UPDATE deliveries SET status = 'succeeded'
         WHERE id IN (SELECT id FROM deliveries ORDER BY id LIMIT 4)",
    )
    .await;
    run(
        pool,
        "UPDATE deliveries SET status = 'failed'
         WHERE id IN (SELECT id FROM deliveries WHERE status = 'pending' ORDER BY id LIMIT 2)",
    )
    .await;
    assert_counts_agree(pool, &endpoints, "after attempts, unfolded").await;

    counts::fold(pool).await.unwrap();
    assert_counts_agree(pool, &endpoints, "after a fold").await;

    run(
        pool,
        "UPDATE deliveries SET status = 'pending' WHERE status = 'failed'",
    )
    .await;
    run(
        pool,
        "DELETE FROM endpoints WHERE id = (SELECT id FROM endpoints ORDER BY id LIMIT 1)",
    )
    .await;
    assert_counts_agree(pool, &endpoints, "after a requeue and a deletion").await;
    for _ in 0..2 {
        counts::fold(pool).await.unwrap();
    }
    assert_counts_agree(pool, &endpoints, "after folds").await;
    let zeros: i64 = sqlx::query_scalar("SELECT count(*) FROM delivery_counts WHERE count = 0")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(
        zeros, 0,
        "counts that reached zero are dropped by the next fold"
    );
}
