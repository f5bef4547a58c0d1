//! The one list contract, held for every list of the management API by one walker: a list
//! walked a few items a page, with a new item inserted between pages, gives every item that
//! was there once, in its order (newest first; users by uid), and none of the new ones (they
//! sort before the cursor), so nothing is skipped or repeated; each `next` is URL-safe. Items
//! are written straight into the tables (marked dispatched, so no delivery loop touches them).

mod harness;

use chrono::{DateTime, TimeDelta, Utc};
use harness::TestWorker;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// Items each list holds before the walk, and the page size it is walked with: several pages,
/// the last one short.
const SEEDED: usize = 8;
const PAGE: usize = 3;

/// Every list of the management API.
#[derive(Debug, Clone, Copy)]
enum List {
    Endpoints,
    Deliveries,
    DeadLetters,
    AudioLevels,
    SleepReports,
    Sessions,
    OutboundEvents,
    Users,
}

const LISTS: [List; 8] = [
    List::Endpoints,
    List::Deliveries,
    List::DeadLetters,
    List::AudioLevels,
    List::SleepReports,
    List::Sessions,
    List::OutboundEvents,
    List::Users,
];

/// A moment `n` seconds into the seeding (an hour ago) or, for inserts during the walk, later.
fn moment(n: usize) -> DateTime<Utc> {
    Utc::now() - TimeDelta::hours(1) + TimeDelta::seconds(n as i64)
}

/// A time-ordered id of the moment `n`.
fn id_at(n: usize) -> Uuid {
    let at = moment(n);
    let (secs, nanos) = (at.timestamp() as u64, at.timestamp_subsec_nanos());
    Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, secs, nanos))
}

/// The endpoint the walker's deliveries go to.
const ENDPOINT: &str = "0190a000-0000-7000-8000-000000000001";

impl List {
    fn path(self) -> String {
        match self {
            List::Endpoints => "/v1/endpoints".into(),
            List::Deliveries => format!("/v1/deliveries?endpoint_id={ENDPOINT}&status=failed"),
            List::DeadLetters => "/v1/dead-letters".into(),
            List::AudioLevels => "/v1/users/walker/audio-levels".into(),
            List::SleepReports => "/v1/users/walker/sleep/reports".into(),
            List::Sessions => "/v1/users/walker/sessions".into(),
            List::OutboundEvents => "/v1/outbound-events?type=test".into(),
            List::Users => "/v1/users".into(),
        }
    }

    /// What names an item in the list's answer.
    fn identity(self, item: &Value) -> String {
        let field = |name: &str| item[name].as_str().expect(name).to_owned();
        match self {
            List::AudioLevels => {
                let start: DateTime<Utc> = field("start").parse().expect("a time");
                start.timestamp_micros().to_string()
            }
            List::SleepReports => field("session_id"),
            List::Users => field("uid"),
            _ => field("id"),
        }
    }

    /// Inserts item `n` (later `n`, newer item; for users, inserts during the walk sort first)
    /// and returns its identity.
    async fn insert(self, pool: &PgPool, n: usize, during_walk: bool) -> String {
        let id = id_at(n);
        let at = moment(n);
        let query = |sql: &'static str| sqlx::query(sql);
        let done = match self {
            List::Endpoints => query(
                "INSERT INTO endpoints (id, url, event_types, secret)
                 VALUES ($1, 'http://127.0.0.1:9/walker', '{test}', 'whsec_walker')",
            )
            .bind(id)
            .execute(pool),
            List::Deliveries => query(
                "WITH endpoint AS (
                     INSERT INTO endpoints (id, url, event_types, secret)
                     VALUES ($2, 'http://127.0.0.1:9/walker', '{audio.level}', 'whsec_walker')
                     ON CONFLICT DO NOTHING
                 ), event AS (
                     INSERT INTO outbox (id, event_type, data, dispatched_at)
                     VALUES ($1, 'audio.level', '{}', now())
                     RETURNING id
                 )
                 INSERT INTO deliveries (id, event_id, endpoint_id, status)
                 SELECT $1, id, $2, 'failed' FROM event",
            )
            .bind(id)
            .bind(Uuid::parse_str(ENDPOINT).unwrap())
            .execute(pool),
            List::DeadLetters => query(
                "INSERT INTO dead_letters (id, properties, payload) VALUES ($1, '{}', '')",
            )
            .bind(id)
            .execute(pool),
            List::AudioLevels => query(
                "INSERT INTO audio_windows (uid, session_id, start_at, end_at, level)
                 VALUES ('walker', $1, $2, $2 + interval '100 ms', 50)",
            )
            .bind(id)
            .bind(at)
            .execute(pool),
            List::SleepReports => {
                // Every third report has no start time: they come after the others.
                let start = (!n.is_multiple_of(3)).then_some(at);
                let session_id = format!("sleep-{n:04}");
                let inserted = sqlx::query(
                    "INSERT INTO sleep_reports (session_id, uid, start_time, data, received_at)
                     VALUES ($1, 'walker', $2, '{}', now())",
                )
                .bind(&session_id)
                .bind(start)
                .execute(pool)
                .await;
                inserted.expect("insert a sleep report");
                return session_id;
            }
            List::Sessions => query(
                "INSERT INTO transcript_sessions (id, uid, external_id, started_at, last_segment_at,
                     completed_at)
                 VALUES ($1, 'walker', 'external', $2, $2, $2)",
            )
            .bind(id)
            .bind(at)
            .execute(pool),
            List::OutboundEvents => {
                query(
                    "INSERT INTO outbox (id, event_type, data, dispatched_at)
                     VALUES ($1, 'test', '{}', now())",
                )
                    .bind(id)
                    .execute(pool)
            }
            List::Users => {
                let uid = if during_walk {
                    format!("a-{n:04}")
                } else {
                    format!("user-{n:04}")
                };
                let inserted = sqlx::query(
                    "INSERT INTO outbox (id, event_type, uid, data, dispatched_at)
                     VALUES ($1, 'listening.status', $2, '{}', now())",
                )
                .bind(id)
                .bind(&uid)
                .execute(pool)
                .await;
                inserted.expect("insert a user's event");
                return uid;
            }
        };
        done.await
            .unwrap_or_else(|error| panic!("insert into {self:?}: {error}"));
        match self {
            List::AudioLevels => at.timestamp_micros().to_string(),
            _ => id.to_string(),
        }
    }

    /// The order the list gives the items seeded as `0..SEEDED`.
    fn expected(self, seeded: Vec<(usize, String)>) -> Vec<String> {
        let mut seeded = seeded;
        match self {
            List::Users => seeded.sort_by(|a, b| a.1.cmp(&b.1)),
            List::SleepReports => {
                seeded.sort_by_key(|(n, _)| (n.is_multiple_of(3), std::cmp::Reverse(*n)))
            }
            _ => seeded.sort_by_key(|(n, _)| std::cmp::Reverse(*n)),
        }
        seeded.into_iter().map(|(_, identity)| identity).collect()
    }
}

/// `path` with `parameters` added.
fn with(path: &str, parameters: &str) -> String {
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}{parameters}")
}

/// Walks `list` `PAGE` items a page, inserting an item before each next page; returns the
/// identities seen, in order.
async fn walk(worker: &TestWorker, list: List) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for page_number in 0.. {
        let mut path = with(&list.path(), &format!("limit={PAGE}"));
        if let Some(cursor) = &cursor {
            path = with(&path, &format!("cursor={cursor}"));
        }
        let page = worker.get_json(&path).await;
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= PAGE, "{list:?}: {} items", items.len());
        seen.extend(items.iter().map(|item| list.identity(item)));
        match page["next"].as_str() {
            None => break,
            Some(next) => {
                assert!(
                    next.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                    "{list:?}: {next} is not URL-safe"
                );
                cursor = Some(next.to_owned());
            }
        }
        list.insert(&worker.pool, 1000 + page_number, true).await;
        assert!(page_number < 100, "{list:?} never ends");
    }
    seen
}

#[tokio::test]
async fn every_list_walked_page_by_page_while_items_are_added_gives_each_item_once_in_order() {
    let worker = TestWorker::start().await;
    for list in LISTS {
        let mut seeded = Vec::new();
        for n in 0..SEEDED {
            seeded.push((n, list.insert(&worker.pool, n, false).await));
        }
        let expected = list.expected(seeded);
        let seen = walk(&worker, list).await;
        assert_eq!(seen, expected, "{list:?}");
        let whole = worker.get_json(&list.path()).await;
        let count = whole["items"].as_array().unwrap().len();
        assert_eq!(
            count,
            SEEDED + seen.len().div_ceil(PAGE) - 1,
            "{list:?}: the inserts are there"
        );
    }
}

#[tokio::test]
async fn a_list_answers_100_items_by_default_and_at_most_1000() {
    let worker = TestWorker::start().await;
    sqlx::query(
        "INSERT INTO dead_letters (id, properties, payload)
         SELECT uuid_v7(), '{}', '' FROM generate_series(1, 1001)",
    )
    .execute(&worker.pool)
    .await
    .unwrap();
    let default = worker.get_json("/v1/dead-letters").await;
    assert_eq!(default["items"].as_array().unwrap().len(), 100);
    assert!(default["next"].is_string());
    let most = worker.get_json("/v1/dead-letters?limit=1000").await;
    assert_eq!(most["items"].as_array().unwrap().len(), 1000);
    let rest = worker
        .get_json(&format!(
            "/v1/dead-letters?limit=1000&cursor={}",
            most["next"].as_str().unwrap()
        ))
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest["next"].is_null());
}
