//! A deep backlog behind one endpoint costs the others nothing: with 20,000 due deliveries of an
//! endpoint the loop may not send to (circuit open, or disabled), one claim returns a healthy
//! endpoint's due deliveries, and the claim, the next-due lookup and the pending gauge read a
//! number of rows and buffers that does not grow with the backlog. Measured with `EXPLAIN (ANALYZE, BUFFERS)` on the
//! very statements the delivery loop runs, not with a clock.

mod harness;

use harness::TestWorker;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgArguments;
use uuid::Uuid;
use worker::gauges::OUTBOUND_STATE;
use worker::outbound::claim::{self, CLAIM, NEXT_DUE};
use worker::outbound::counts;
use worker::outbound::isolation::Room;

const BACKLOG: i64 = 20_000;
/// Far below the backlog, well above what a claim of a few rows needs.
const MOST_ROWS_READ: f64 = 200.0;
const MOST_BUFFERS: i64 = 200;

/// How the backlog's endpoint is kept from sending.
#[derive(Debug, Clone, Copy)]
enum Blocked {
    /// Its circuit is open in this worker (no room).
    CircuitOpen,
    /// Disabled by the operator or by a 410.
    Disabled,
}

/// A stopped worker's database with a blocked endpoint holding `BACKLOG` deliveries due an hour
/// ago, and a healthy endpoint with `healthy_due` due now and one due in five minutes.
struct Backlog {
    worker: TestWorker,
    blocked: Uuid,
    healthy: Uuid,
}

impl Backlog {
    async fn new(healthy_due: i64) -> Self {
        let mut worker = TestWorker::start().await;
        worker.stop().await;
        let (blocked, healthy) = (Uuid::now_v7(), Uuid::now_v7());
        for id in [blocked, healthy] {
            insert_endpoint(&worker.pool, id).await;
        }
        insert_deliveries(&worker.pool, blocked, BACKLOG, "now() - interval '1 hour'").await;
        insert_deliveries(&worker.pool, healthy, healthy_due, "now()").await;
        insert_deliveries(&worker.pool, healthy, 1, "now() + interval '5 minutes'").await;
        sqlx::query("ANALYZE deliveries")
            .execute(&worker.pool)
            .await
            .unwrap();
        Backlog {
            worker,
            blocked,
            healthy,
        }
    }

    /// What the loop would pass as room: nothing for the backlog's endpoint when its circuit is
    /// open; when it is disabled, the loop knows nothing of it (the database does).
    async fn room(&self, how: Blocked) -> Room {
        match how {
            Blocked::CircuitOpen => Room {
                endpoints: vec![self.blocked],
                attempts: vec![0],
                rows: vec![0],
            },
            Blocked::Disabled => {
                sqlx::query("UPDATE endpoints SET enabled = false WHERE id = $1")
                    .bind(self.blocked)
                    .execute(&self.worker.pool)
                    .await
                    .unwrap();
                Room::default()
            }
        }
    }
}

async fn insert_endpoint(pool: &PgPool, id: Uuid) {
    sqlx::query(
        "INSERT INTO endpoints (id, url, event_types, secret)
         VALUES ($1, 'http://127.0.0.1:9/hook', '{*}', 'whsec_dGVzdA==')",
    )
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
}

/// `count` events and one delivery of each to `endpoint`, due at `due`, in one statement.
async fn insert_deliveries(pool: &PgPool, endpoint: Uuid, count: i64, due: &str) {
    sqlx::query(&format!(
        "WITH events AS (
             INSERT INTO outbox (id, event_type, data, dispatched_at)
             SELECT uuid_v7(), 'audio.level', '{{}}', now() FROM generate_series(1, $2)
             RETURNING id
         )
         INSERT INTO deliveries (id, event_id, endpoint_id, next_attempt_at)
         SELECT uuid_v7(), id, $1, {due} FROM events"
    ))
    .bind(endpoint)
    .bind(count)
    .execute(pool)
    .await
    .unwrap();
}

/// What a statement read: rows out of and filtered away by every plan node (times its loops),
/// and the shared buffers it touched.
#[derive(Debug)]
struct Reads {
    rows: f64,
    buffers: i64,
}

impl Reads {
    fn of(plan: &Value) -> Reads {
        let root = &plan[0]["Plan"];
        let buffers = ["Shared Hit Blocks", "Shared Read Blocks"]
            .iter()
            .map(|key| root[key].as_i64().unwrap_or(0))
            .sum();
        Reads {
            rows: rows_read(root),
            buffers,
        }
    }

    fn assert_bounded(&self, what: &str) {
        assert!(
            self.rows < MOST_ROWS_READ && self.buffers < MOST_BUFFERS,
            "{what} read {self:?} with a blocked backlog of {BACKLOG}"
        );
    }
}

fn rows_read(node: &Value) -> f64 {
    let number = |key: &str| node[key].as_f64().unwrap_or(0.0);
    let own = number("Actual Rows") + number("Rows Removed by Filter");
    let own = (own + number("Rows Removed by Join Filter")) * number("Actual Loops");
    let children = node["Plans"].as_array().into_iter().flatten();
    own + children.map(rows_read).sum::<f64>()
}

/// Runs `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)` of `statement` in a transaction it rolls back.
async fn explain(pool: &PgPool, statement: &str, arguments: PgArguments) -> Reads {
    let mut tx = pool.begin().await.unwrap();
    let explain = format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}");
    let plan: Value = sqlx::query_scalar_with(&explain, arguments)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    Reads::of(&plan)
}

fn request(room: &Room) -> claim::Request<'_> {
    claim::Request {
        room,
        limit: 64,
        per_endpoint: 4,
        endpoints: 64,
        after: Uuid::nil(),
    }
}

async fn a_claim_reads_only_the_healthy_endpoints_rows(how: Blocked) {
    let backlog = Backlog::new(3).await;
    let room = backlog.room(how).await;
    let pool = &backlog.worker.pool;

    let reads = explain(pool, CLAIM, claim::arguments(&request(&room))).await;
    reads.assert_bounded(&format!("a claim ({how:?})"));

    let claimed = claim::claim(pool, &request(&room)).await.unwrap();
    let endpoints: Vec<Uuid> = claimed.iter().map(|c| c.endpoint_id).collect();
    assert_eq!(endpoints, vec![backlog.healthy; 3], "{how:?}");
}

#[tokio::test]
async fn a_claim_beside_an_open_circuits_backlog_reads_a_bounded_number_of_rows() {
    a_claim_reads_only_the_healthy_endpoints_rows(Blocked::CircuitOpen).await;
}

#[tokio::test]
async fn a_claim_beside_a_disabled_endpoints_backlog_reads_a_bounded_number_of_rows() {
    a_claim_reads_only_the_healthy_endpoints_rows(Blocked::Disabled).await;
}

#[tokio::test]
async fn the_next_due_lookup_beside_a_blocked_backlog_reads_a_bounded_number_of_rows() {
    let backlog = Backlog::new(0).await;
    let room = backlog.room(Blocked::CircuitOpen).await;
    let pool = &backlog.worker.pool;
    let blocked = room.blocked();

    let mut arguments = PgArguments::default();
    sqlx::Arguments::add(&mut arguments, blocked.as_slice()).unwrap();
    explain(pool, NEXT_DUE, arguments)
        .await
        .assert_bounded("the next-due lookup");

    let next = claim::next_due(pool, &blocked).await.unwrap().unwrap();
    let in_seconds = (next - chrono::Utc::now()).num_seconds();
    assert!(
        (290..=300).contains(&in_seconds),
        "the healthy endpoint's next delivery, not the backlog's: in {in_seconds} s"
    );
}

#[tokio::test]
async fn the_pending_gauge_beside_a_backlog_reads_a_bounded_number_of_rows() {
    let backlog = Backlog::new(3).await;
    let pool = &backlog.worker.pool;
    for fold in [false, true] {
        if fold {
            counts::fold(pool).await.unwrap();
        }
        explain(pool, counts::PENDING, PgArguments::default())
            .await
            .assert_bounded(&format!("the pending gauge (folded: {fold})"));
        let pending = counts::pending(pool).await.unwrap();
        assert_eq!(pending, BACKLOG + 3 + 1);
    }
}

#[tokio::test]
async fn the_oldest_due_gauge_beside_a_backlog_reads_a_bounded_number_of_rows() {
    let backlog = Backlog::new(3).await;
    let pool = &backlog.worker.pool;
    explain(pool, OUTBOUND_STATE, PgArguments::default())
        .await
        .assert_bounded("the disabled-endpoints and oldest-due gauges");
    let (disabled, oldest_due): (i64, f64) = sqlx::query_as(OUTBOUND_STATE)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(disabled, 0);
    assert!(oldest_due > 0.0, "the backlog is overdue: {oldest_due} s");
}
