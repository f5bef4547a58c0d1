//! Claims on deliveries, driven directly against the database with no delivery loop running:
//! one claimer at a time, and a claim whose worker died is taken again once its lease runs out.

mod harness;

use harness::TestWorker;
use serde_json::json;
use worker::outbound::deliver::{self, LEASE_MARGIN_MS};
use worker::outbound::dispatch;
use worker::outbound::outbox::EventType;

/// A stopped worker's database holding one due delivery, committed with its event: no fan-out
/// pass runs.
async fn one_due_delivery() -> TestWorker {
    let mut worker = TestWorker::start().await;
    let body = json!({"url": "http://127.0.0.1:9/hook", "event_types": ["*"]});
    worker.create_endpoint(body).await;
    worker.stop().await;
    worker.emit(EventType::AudioLevel, json!({})).await;
    let deliveries: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries")
        .fetch_one(&worker.pool)
        .await
        .unwrap();
    assert_eq!(deliveries, 1);
    worker
}

#[tokio::test]
async fn concurrent_claims_hand_a_delivery_to_one_claimer() {
    let worker = one_due_delivery().await;
    let claims = (0..4).map(|_| deliver::claim(&worker.pool, &[], 10, 4));
    let claimed: usize = futures_util::future::join_all(claims)
        .await
        .into_iter()
        .map(|claim| claim.unwrap().len())
        .sum();
    assert_eq!(claimed, 1);
    let lease: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM next_attempt_at - now())::float8 FROM deliveries",
    )
    .fetch_one(&worker.pool)
    .await
    .unwrap();
    assert!(
        lease > f64::from(LEASE_MARGIN_MS) / 1000.0 - 2.0,
        "lease {lease} s"
    );
}

#[tokio::test]
async fn a_dead_claimers_delivery_is_claimed_again_when_its_lease_runs_out() {
    let worker = one_due_delivery().await;
    let first = deliver::claim(&worker.pool, &[], 10, 4).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(
        deliver::claim(&worker.pool, &[], 10, 4)
            .await
            .unwrap()
            .is_empty()
    );

    // The claimer dies without recording anything; time passes beyond the lease.
    sqlx::query("UPDATE deliveries SET next_attempt_at = now() - interval '1 second'")
        .execute(&worker.pool)
        .await
        .unwrap();
    let again = deliver::claim(&worker.pool, &[], 10, 4).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, first[0].id);
    assert_eq!(again[0].attempts, 0, "the lost attempt was never recorded");
}

/// An outbox row written without its deliveries (as an older worker did) is fanned out once.
#[tokio::test]
async fn a_row_written_without_deliveries_is_fanned_out_once() {
    let mut worker = TestWorker::start().await;
    worker
        .create_endpoint(json!({"url": "http://127.0.0.1:9/hook", "event_types": ["*"]}))
        .await;
    worker
        .create_endpoint(json!({"url": "http://127.0.0.1:9/other", "event_types": ["test"]}))
        .await;
    worker.stop().await;
    sqlx::query(
        "INSERT INTO outbox (id, event_type, data) VALUES (uuid_v7(), 'audio.level', '{}')",
    )
    .execute(&worker.pool)
    .await
    .unwrap();
    let fanned = dispatch::fan_out(&worker.pool).await.unwrap();
    assert_eq!(
        (fanned.events, fanned.deliveries),
        (1, 1),
        "to the subscribed endpoint"
    );
    let again = dispatch::fan_out(&worker.pool).await.unwrap();
    assert_eq!((again.events, again.deliveries), (0, 0));
}

#[tokio::test]
async fn blocked_endpoints_are_not_claimed_and_repeated_fan_out_adds_nothing() {
    let worker = one_due_delivery().await;
    let endpoint: uuid::Uuid = sqlx::query_scalar("SELECT id FROM endpoints")
        .fetch_one(&worker.pool)
        .await
        .unwrap();
    let blocked = deliver::claim(&worker.pool, &[endpoint], 10, 4).await;
    assert!(blocked.unwrap().is_empty());
    sqlx::query("UPDATE outbox SET dispatched_at = NULL")
        .execute(&worker.pool)
        .await
        .unwrap();
    let again = dispatch::fan_out(&worker.pool).await.unwrap();
    assert_eq!((again.events, again.deliveries), (1, 0));
}
