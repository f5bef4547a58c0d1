//! Claims on deliveries, driven directly against the database with no delivery loop running:
//! one claimer at a time, and a claim whose worker died is taken again once its lease runs out.

mod harness;

use harness::TestWorker;
use serde_json::json;
use worker::outbound::claim::{self, Claimed, LEASE_MARGIN_MS};
use worker::outbound::dispatch;
use worker::outbound::isolation::Room;
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

/// One claim of up to 10 deliveries, 4 of an endpoint, with `room` limiting some endpoints.
async fn claim_with(pool: &sqlx::PgPool, room: &Room) -> Vec<Claimed> {
    let request = claim::Request {
        room,
        limit: 10,
        per_endpoint: 4,
        endpoints: 10,
        after: uuid::Uuid::nil(),
    };
    claim::claim(pool, &request).await.unwrap()
}

async fn claim_any(pool: &sqlx::PgPool) -> Vec<Claimed> {
    claim_with(pool, &Room::default()).await
}

#[tokio::test]
async fn concurrent_claims_hand_a_delivery_to_one_claimer() {
    let worker = one_due_delivery().await;
    let claims = (0..4).map(|_| claim_any(&worker.pool));
    let claimed: usize = futures_util::future::join_all(claims)
        .await
        .into_iter()
        .map(|claimed| claimed.len())
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
    let first = claim_any(&worker.pool).await;
    assert_eq!(first.len(), 1);
    assert!(claim_any(&worker.pool).await.is_empty());

    // The claimer dies without recording anything; time passes beyond the lease.
    sqlx::query("UPDATE deliveries SET next_attempt_at = now() - interval '1 second'")
        .execute(&worker.pool)
        .await
        .unwrap();
    let again = claim_any(&worker.pool).await;
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
    let blocked = Room {
        endpoints: vec![endpoint],
        attempts: vec![0],
        rows: vec![0],
    };
    assert!(claim_with(&worker.pool, &blocked).await.is_empty());
    sqlx::query("UPDATE outbox SET dispatched_at = NULL")
        .execute(&worker.pool)
        .await
        .unwrap();
    let again = dispatch::fan_out(&worker.pool).await.unwrap();
    assert_eq!((again.events, again.deliveries), (1, 0));
}

/// Two endpoints with `due` deliveries each, due a second apart in insertion order.
async fn two_endpoints_with_due(due: i64) -> (TestWorker, Vec<uuid::Uuid>) {
    let (worker, endpoints) = TestWorker::stopped_with_endpoints(2).await;
    for n in 0..due {
        worker.emit(EventType::AudioLevel, json!({"n": n})).await;
    }
    sqlx::query(
        "UPDATE deliveries d SET next_attempt_at = now() - interval '1 hour'
             + (o.data->>'n')::int * interval '1 second'
         FROM outbox o WHERE o.id = d.event_id",
    )
    .execute(&worker.pool)
    .await
    .unwrap();
    (worker, endpoints)
}

/// The events (`n`) of claimed deliveries, in due order.
async fn claimed_events(pool: &sqlx::PgPool, claimed: &[Claimed]) -> Vec<i64> {
    let ids: Vec<uuid::Uuid> = claimed.iter().map(|c| c.id).collect();
    sqlx::query_scalar(
        "SELECT (o.data->>'n')::bigint FROM deliveries d JOIN outbox o ON o.id = d.event_id
         WHERE d.id = ANY ($1) ORDER BY o.created_at",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_endpoint_is_claimed_oldest_first_and_never_beyond_its_room() {
    let (worker, endpoints) = two_endpoints_with_due(6).await;
    let room = Room {
        endpoints: vec![endpoints[0]],
        attempts: vec![1],
        rows: vec![2],
    };
    let claimed = claim_with(&worker.pool, &room).await;
    let of = |endpoint| claimed.iter().filter(|c| c.endpoint_id == endpoint).count();
    assert_eq!((of(endpoints[0]), of(endpoints[1])), (2, 4));
    let first: Vec<Claimed> = claimed
        .into_iter()
        .filter(|c| c.endpoint_id == endpoints[0])
        .collect();
    assert_eq!(claimed_events(&worker.pool, &first).await, vec![0, 1]);
}

#[tokio::test]
async fn endpoints_take_turns_when_more_are_due_than_slots_are_free() {
    let (worker, endpoints) = two_endpoints_with_due(4).await;
    let room = Room::default();
    let mut after = uuid::Uuid::nil();
    let mut served = Vec::new();
    for _ in 0..2 {
        let request = claim::Request {
            room: &room,
            limit: 4,
            per_endpoint: 4,
            endpoints: 4,
            after,
        };
        let claimed = claim::claim(&worker.pool, &request).await.unwrap();
        assert!(
            claimed
                .iter()
                .all(|c| c.endpoint_id == claimed[0].endpoint_id)
        );
        after = claim::last_served(after, &claimed);
        served.push(after);
    }
    assert_eq!(served, endpoints, "one endpoint a claim, each in turn");
}

#[tokio::test]
async fn a_claim_takes_no_more_endpoints_than_it_has_free_slots() {
    let (worker, _) = two_endpoints_with_due(3).await;
    let request = claim::Request {
        room: &Room::default(),
        limit: 64,
        per_endpoint: 64,
        endpoints: 1,
        after: uuid::Uuid::nil(),
    };
    let claimed = claim::claim(&worker.pool, &request).await.unwrap();
    assert_eq!(claimed.len(), 3, "all of one endpoint's due rows");
    assert!(
        claimed
            .iter()
            .all(|c| c.endpoint_id == claimed[0].endpoint_id)
    );
    let request = claim::Request {
        endpoints: 2,
        ..request
    };
    let claimed = claim::claim(&worker.pool, &request).await.unwrap();
    assert_eq!(
        claimed.len(),
        3,
        "then the other's: one endpoint's rows are leased"
    );
}
