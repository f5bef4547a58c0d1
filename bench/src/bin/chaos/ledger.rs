//! The accounting: what the senders were answered, per logical event, against what Postgres
//! holds and what the receiver got. Events are keyed by their dedup identity (the provider's id,
//! or the memory id, type and status, or the Asleep session and sequence number), never by the
//! `event_id` of a 202, since a duplicate's 202 names an event that is never stored.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::events::Kind;

/// What the senders saw of one logical event.
#[derive(Clone, Copy, Debug)]
pub struct Answered {
    pub kind: Kind,
    /// Some attempt was answered 202.
    pub accepted: bool,
    /// Sent again on purpose after its 202 (a sender's retry of a delivered request).
    pub resent: bool,
}

/// Every logical event of the run, by identity.
#[derive(Default)]
pub struct Ledger {
    events: Mutex<HashMap<String, Answered>>,
}

impl Ledger {
    pub fn record(&self, identity: &str, answered: Answered) {
        self.events
            .lock()
            .unwrap()
            .insert(identity.to_owned(), answered);
    }

    fn snapshot(&self) -> HashMap<String, Answered> {
        self.events.lock().unwrap().clone()
    }
}

/// Each stored copy of a logical event, by identity: rows of its own table. Identities are
/// unique across kinds, so one map holds them all.
const STORED: [&str; 8] = [
    "SELECT omi_segment_id, count(*) FROM transcript_segments GROUP BY 1",
    "SELECT id, count(*) FROM conversations GROUP BY 1",
    "SELECT summary_json->>'headline', count(*) FROM day_summaries GROUP BY 1",
    "SELECT encode(substring(pcm FROM 1 FOR 16), 'escape'), count(*) FROM audio_chunks GROUP BY 1",
    "SELECT memory_id || '/' || type || '/' || coalesce(status, ''), count(*) FROM memory_events GROUP BY 1",
    "SELECT session_id || '/' || seq_num, count(*) FROM sleep_inferences GROUP BY 1",
    "SELECT session_id, count(*) FROM sleep_reports GROUP BY 1",
    "SELECT id, count(*) FROM reflector_transcripts GROUP BY 1",
];

/// The outbound events each logical event caused, by identity: a table with a unique key
/// keeps one row however often an event is processed, but each processing emits again.
const EMITTED: [&str; 5] = [
    "SELECT data->'segment'->>'id', count(*) FROM outbox WHERE event_type = 'transcript.segment' GROUP BY 1",
    "SELECT data->>'id', count(*) FROM outbox
     WHERE event_type IN ('memory.created', 'transcript.completed') GROUP BY 1",
    "SELECT data->'summary'->>'headline', count(*) FROM outbox WHERE event_type = 'day_summary.created' GROUP BY 1",
    "SELECT (data->'memory'->>'id') || '/' || (data->>'type') || '/' || coalesce(data->'memory'->>'status', ''),
            count(*) FROM outbox WHERE data ? 'memory' GROUP BY 1",
    "SELECT coalesce((data->>'session_id') || '/' || (data->>'seq_num'), data->>'session_id'), count(*)
     FROM outbox WHERE event_type IN ('sleep.inference', 'sleep.session_completed') GROUP BY 1",
];

/// One row of the storage table.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub sent: u64,
    pub resent: u64,
    pub accepted: u64,
    pub stored: u64,
    pub stored_twice: u64,
    /// Answered 202 but not stored.
    pub lost: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.sent += other.sent;
        self.resent += other.resent;
        self.accepted += other.accepted;
        self.stored += other.stored;
        self.stored_twice += other.stored_twice;
        self.lost += other.lost;
    }
}

/// What became of the outbound events.
#[derive(Clone, Copy, Debug, Default)]
pub struct Deliveries {
    pub dead_lettered: u64,
    pub outbound_events: u64,
    pub delivered: u64,
    /// Answered 200 more than once, with no worker killed between the first two answers.
    pub delivered_twice: u64,
    /// Answered 200 again after the worker that sent it was killed before it could record the
    /// answer: at-least-once delivery, the same `webhook-id` both times.
    pub redelivered_after_kill: u64,
    /// Outbound events the receiver never got (with a 2xx answer).
    pub never_delivered: u64,
    /// Deliveries the worker gave up on (`failed`).
    pub failed: u64,
}

pub struct Tally {
    pub per_kind: BTreeMap<Kind, Counts>,
    pub total: Counts,
    pub deliveries: Deliveries,
}

impl Tally {
    /// Any loss or double, stored or delivered.
    pub fn failed(&self) -> bool {
        let d = &self.deliveries;
        self.total.lost + self.total.stored_twice + d.delivered_twice + d.never_delivered > 0
    }
}

/// When each `webhook-id` was answered 200 by the receiver.
pub type Received = HashMap<String, Vec<Instant>>;

/// Counts the run from Postgres and from what the receiver got; `kills`: when workers were
/// killed.
pub async fn tally(
    pool: &PgPool,
    ledger: &Ledger,
    received: &Received,
    kills: &[Instant],
) -> anyhow::Result<Tally> {
    let stored = copies(pool, &STORED).await?;
    let emitted = copies(pool, &EMITTED).await?;
    let mut per_kind: BTreeMap<Kind, Counts> = BTreeMap::new();
    for (identity, answered) in ledger.snapshot() {
        let rows = stored.get(&identity).copied().unwrap_or(0);
        let events = emitted.get(&identity).copied().unwrap_or(0);
        let counts = per_kind.entry(answered.kind).or_default();
        counts.add(&count_one(answered, rows.max(events)));
    }
    let mut total = Counts::default();
    per_kind.values().for_each(|counts| total.add(counts));
    let deliveries = deliveries(pool, received, kills).await?;
    Ok(Tally {
        per_kind,
        total,
        deliveries,
    })
}

fn count_one(answered: Answered, copies: i64) -> Counts {
    Counts {
        sent: 1,
        resent: answered.resent as u64,
        accepted: answered.accepted as u64,
        stored: (copies > 0) as u64,
        stored_twice: (copies > 1) as u64,
        lost: (answered.accepted && copies == 0) as u64,
    }
}

async fn copies(pool: &PgPool, queries: &[&str]) -> anyhow::Result<HashMap<String, i64>> {
    let mut copies = HashMap::new();
    for query in queries {
        let rows: Vec<(Option<String>, i64)> = sqlx::query_as(query).fetch_all(pool).await?;
        copies.extend(rows.into_iter().filter_map(|(id, n)| Some((id?, n))));
    }
    Ok(copies)
}

/// How long after a kill the receiver may still answer a request the killed worker wrote
/// before it died: the kernel delivers what was in the socket after the process is gone.
const ANSWERED_AFTER_KILL: Duration = Duration::from_secs(1);

/// Whether a double is the at-least-once resend of an attempt nobody recorded: the receiver
/// answered more often than the worker recorded answers, and a worker was killed between the
/// first two answers (or just before the first: a request already written when it died).
fn killed_mid_attempt(answers: &[Instant], recorded: &Recorded, kills: &[Instant]) -> bool {
    let (first, second) = (answers[0], answers[1]);
    let unrecorded = (recorded.answered_2xx as usize) < answers.len();
    let since = first.checked_sub(ANSWERED_AFTER_KILL).unwrap_or(first);
    unrecorded && kills.iter().any(|&kill| since <= kill && kill <= second)
}

async fn deliveries(
    pool: &PgPool,
    received: &Received,
    kills: &[Instant],
) -> anyhow::Result<Deliveries> {
    let webhook_ids: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT d.id::text FROM outbox o LEFT JOIN deliveries d ON d.event_id = o.id",
    )
    .fetch_all(pool)
    .await?;
    let delivered = webhook_ids
        .iter()
        .flatten()
        .filter(|id| received.contains_key(id.as_str()))
        .count() as u64;
    let recorded = recorded_attempts(pool, received).await?;
    let doubled = recorded.len() as u64;
    let doubled_after_kill = recorded
        .iter()
        .filter(|(id, recorded)| killed_mid_attempt(&received[*id], recorded, kills))
        .count() as u64;
    let count = |sql: &'static str| async move {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(pool).await?;
        anyhow::Ok(n as u64)
    };
    Ok(Deliveries {
        dead_lettered: count("SELECT count(*) FROM dead_letters").await?,
        outbound_events: webhook_ids.len() as u64,
        delivered,
        delivered_twice: doubled - doubled_after_kill,
        redelivered_after_kill: doubled_after_kill,
        never_delivered: webhook_ids.len() as u64 - delivered,
        failed: count("SELECT count(*) FROM deliveries WHERE status = 'failed'").await?,
    })
}

/// What the worker recorded of a delivery the receiver answered more than once.
#[derive(Debug)]
struct Recorded {
    event_type: String,
    /// Recorded attempts that the receiver answered with a 2xx.
    answered_2xx: i64,
    /// Each recorded attempt: its time and status code or error.
    attempts: Vec<String>,
}

/// [`Recorded`] of each delivery the receiver answered more than once, by `webhook-id`.
async fn recorded_attempts(
    pool: &PgPool,
    received: &Received,
) -> anyhow::Result<HashMap<String, Recorded>> {
    let twice: Vec<String> = received
        .iter()
        .filter(|(_, answers)| answers.len() > 1)
        .map(|(id, _)| id.clone())
        .collect();
    let rows: Vec<(String, Recorded)> = sqlx::query_as::<_, (String, String, i64, Vec<String>)>(
        "SELECT d.id::text, o.event_type,
                count(a.id) FILTER (WHERE a.status_code BETWEEN 200 AND 299),
                coalesce(array_agg(a.attempted_at::text || ' ' || coalesce(a.status_code::text, a.error, '')
                          ORDER BY a.attempted_at) FILTER (WHERE a.id IS NOT NULL), '{}')
         FROM deliveries d JOIN outbox o ON o.id = d.event_id
         LEFT JOIN delivery_attempts a ON a.delivery_id = d.id
         WHERE d.id::text = ANY($1) GROUP BY 1, 2",
    )
    .bind(&twice)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(id, event_type, answered_2xx, attempts)| {
        let recorded = Recorded {
            event_type,
            answered_2xx,
            attempts,
        };
        (id, recorded)
    })
    .collect();
    Ok(rows.into_iter().collect())
}

/// Each delivery the receiver answered more than once, with its attempts as the worker
/// recorded them (time, status code or error), to tell which fault caused it.
pub async fn doubles(pool: &PgPool, received: &Received) -> anyhow::Result<Vec<String>> {
    Ok(recorded_attempts(pool, received)
        .await?
        .into_iter()
        .map(|(id, recorded)| {
            let answered = received[&id].len();
            let Recorded {
                event_type,
                attempts,
                ..
            } = recorded;
            format!("{id} ({event_type}): answered 200 {answered} times; attempts recorded: {attempts:?}")
        })
        .collect())
}

/// The tally as markdown: storage per kind, then the outbound side.
pub fn table(tally: &Tally) -> String {
    let mut out = String::from(
        "| kind | sent | resent on purpose | answered 202 | stored | stored twice | lost (202, not stored) |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let row = |label: &str, c: &Counts| {
        format!(
            "| {label} | {} | {} | {} | {} | {} | {} |\n",
            c.sent, c.resent, c.accepted, c.stored, c.stored_twice, c.lost
        )
    };
    for (kind, counts) in &tally.per_kind {
        out.push_str(&row(kind.label(), counts));
    }
    out.push_str(&row("**all**", &tally.total));
    let d = &tally.deliveries;
    out.push_str(&format!(
        "\n| dead-lettered | outbound events | delivered | delivered twice | redelivered after a worker kill mid-attempt | never delivered | deliveries failed |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n\
         | {} | {} | {} | {} | {} | {} | {} |\n",
        d.dead_lettered, d.outbound_events, d.delivered, d.delivered_twice, d.redelivered_after_kill, d.never_delivered, d.failed
    ));
    out
}
