//! The stream's reads of the outbox, in position order (`outbox_stream`, migration 0014). A row
//! counts only once its transaction is below `pg_snapshot_xmin(pg_current_snapshot())` of the
//! reading statement ("settled"): every transaction below that has ended, so the statement
//! sees all of their rows and none can be added behind a position it returns.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::{Filter, Position, StreamEvent};
use crate::outbound::send;

/// What follows the rows a read returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rest {
    /// Nothing more is visible now.
    Nothing,
    /// The page was full: read again from its last row.
    More,
    /// Rows of committed transactions wait behind one still running: read again shortly.
    Unsettled,
}

/// Rows after a position, and what follows them.
#[derive(Debug)]
pub struct Page {
    pub events: Vec<Arc<StreamEvent>>,
    pub rest: Rest,
}

#[derive(sqlx::FromRow)]
struct Row {
    at_tx: String,
    id: Uuid,
    event_type: String,
    uid: Option<String>,
    data: serde_json::Value,
    created_at: DateTime<Utc>,
    settled: bool,
}

/// Rows after `$1`/`$2` (tx as text, id), then the query's `$rest`. `tx >= $1` is implied by
/// the row comparison but written out so the partial index's `tx IS NOT NULL` is provably met.
macro_rules! after {
    ($rest:literal) => {
        concat!(
            "SELECT o.tx::text AS at_tx, o.id, o.event_type, o.uid, o.data, o.created_at,
                    o.tx < horizon.xmin AS settled
             FROM outbox o CROSS JOIN (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) horizon
             WHERE o.tx >= $1::text::xid8 AND (o.tx, o.id) > ($1::text::xid8, $2) ",
            $rest
        )
    };
}

/// Every row, settled or not, so a read can tell [`Rest::Unsettled`].
const EVERY: &str = after!("ORDER BY o.tx, o.id LIMIT $3");
/// The settled rows of a uid (`$4`, or any) and types (`$5`, or any): stopping at the horizon,
/// a rare uid does not walk the unsettled rows too.
const FILTERED: &str = after!(
    "AND o.tx < horizon.xmin
     AND ($4::text IS NULL OR o.uid = $4) AND ($5::text[] IS NULL OR o.event_type = ANY($5))
     ORDER BY o.tx, o.id LIMIT $3"
);

/// The settled rows after a position that `filter` takes, at most `limit`, in position order.
pub async fn after(
    pool: &PgPool,
    from: Position,
    filter: &Filter,
    limit: usize,
) -> Result<Page, sqlx::Error> {
    let every = filter == &Filter::ALL;
    let query = sqlx::query_as(if every { EVERY } else { FILTERED })
        .bind(from.tx.to_string())
        .bind(from.id)
        .bind(limit as i64);
    let query = if every {
        query
    } else {
        let types: Option<Vec<&str>> = filter.types.clone();
        query.bind(filter.uid.clone()).bind(types)
    };
    let rows: Vec<Row> = query.fetch_all(pool).await?;
    Ok(page(rows, limit))
}

/// The settled rows as events, up to the first unsettled one.
fn page(rows: Vec<Row>, limit: usize) -> Page {
    let full = rows.len() >= limit;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        if !row.settled {
            return Page {
                events,
                rest: Rest::Unsettled,
            };
        }
        events.push(Arc::new(event(row)));
    }
    let rest = if full { Rest::More } else { Rest::Nothing };
    Page { events, rest }
}

fn event(row: Row) -> StreamEvent {
    let body = send::body(&row.event_type, row.created_at, &row.data);
    StreamEvent {
        position: Position {
            tx: row.at_tx.parse().unwrap_or_default(),
            id: row.id,
        },
        body: String::from_utf8(body).expect("serde_json writes UTF-8"),
        event_type: row.event_type,
        uid: row.uid,
    }
}

/// The last settled row's position ([`Position::START`] when there is none): everything at or
/// before it is visible now, and whatever becomes visible later comes after it.
pub async fn tail(pool: &PgPool) -> Result<Position, sqlx::Error> {
    let last: Option<(String, Uuid)> = sqlx::query_as(
        "SELECT o.tx::text AS at_tx, o.id FROM outbox o
         WHERE o.tx < pg_snapshot_xmin(pg_current_snapshot())
         ORDER BY o.tx DESC, o.id DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(last.map_or(Position::START, |(tx, id)| Position {
        tx: tx.parse().unwrap_or_default(),
        id,
    }))
}
