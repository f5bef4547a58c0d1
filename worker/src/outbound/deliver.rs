//! Attempts of claimed deliveries ([`super::claim`]), a batch at a time ([`super::batch`]), and
//! the record of their outcomes, all of a batch with one statement.
//!
//! An outcome is written only if the delivery is still as it was claimed (`attempts`
//! unchanged), so a worker that outlived its lease cannot overwrite a newer attempt. A batch's
//! record is committed before its attempt slot is freed: at most one batch per slot is ever
//! sent and unrecorded, and a crash between a send and its record resends with the same
//! `webhook-id` once the lease runs out, nothing more.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use super::Outbound;
use super::attempt_stats::{self, Sample, append_changes};
use super::batch::Batch;
use super::claim::{self, Claimed, LEASE_MARGIN_MS, SEND_FOR};
use super::disable;
use super::endpoint::signing_secrets;
use super::isolation::Permit;
use super::schedule::Decision;
use super::send::{self, Message, Report, Target};

/// One delivery's attempt and what the schedule made of its answer.
struct Outcome<'a> {
    claimed: &'a Claimed,
    report: Report,
    decision: Decision,
}

/// Makes one attempt of a claimed delivery (unless its window has closed), records it, and
/// returns what happened; `None` when the window had closed and it was failed unattempted.
pub async fn attempt(
    outbound: &Outbound,
    pool: &PgPool,
    claimed: &Claimed,
) -> anyhow::Result<Option<Report>> {
    let Some(outcome) = send(outbound, pool, claimed).await else {
        return Ok(None);
    };
    let lease_ends = outcome.report.attempted_at + lease(claimed);
    record_within_lease(pool, std::slice::from_ref(&outcome), &[], lease_ends).await?;
    Ok(Some(outcome.report))
}

/// Sends a batch's deliveries one after another, for as long as `permit` allows (circuit
/// closed, rate-limit tokens left), [`SEND_FOR`] after `claimed_at` has not passed and the
/// worker is not `stopping`, stopping at a 410; then records every outcome and gives back what
/// was not sent, in one transaction. So on a stop the attempt under way finishes and is
/// recorded, and the rest of the batch goes back for the next worker at once.
pub async fn batch(
    outbound: &Outbound,
    pool: &PgPool,
    batch: &Batch,
    permit: &Permit,
    claimed_at: DateTime<Utc>,
    stopping: &watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let Some(first) = batch.deliveries.first() else {
        return Ok(());
    };
    let send_until = claimed_at + SEND_FOR;
    let mut outcomes = Vec::with_capacity(batch.deliveries.len());
    let mut started = 0;
    for claimed in &batch.deliveries {
        let turn_over = started > 0 && (Utc::now() >= send_until || !permit.may_send_another());
        if turn_over || *stopping.borrow() {
            break;
        }
        started += 1;
        let Some(outcome) = send(outbound, pool, claimed).await else {
            continue;
        };
        let healthy = !outcome.report.answer().is_trouble();
        outbound.isolation.record(batch.endpoint_id, healthy);
        let gone = matches!(outcome.decision, Decision::Failed { disable: true });
        outcomes.push(outcome);
        if gone {
            break;
        }
    }
    let unsent = &batch.deliveries[started..];
    record_within_lease(pool, &outcomes, unsent, claimed_at + lease(first)).await
}

/// A claim's lease on a delivery of this endpoint.
fn lease(claimed: &Claimed) -> chrono::Duration {
    chrono::Duration::milliseconds((claimed.timeout_ms + LEASE_MARGIN_MS) as i64)
}

/// Makes one attempt and decides what its answer means; `None` when the delivery's window
/// had closed, and it was failed without one.
async fn send<'a>(outbound: &Outbound, pool: &PgPool, claimed: &'a Claimed) -> Option<Outcome<'a>> {
    let now = Utc::now();
    let window = chrono::Duration::from_std(outbound.schedule.window).ok();
    let window_end = claimed
        .first_attempt_at
        .and_then(|start| start.checked_add_signed(window?));
    if window_end.is_some_and(|end| now > end) {
        if let Err(error) = finish_unattempted(pool, claimed).await {
            tracing::warn!(%error, delivery = %claimed.id, "failing a delivery whose window closed; the lease will expire");
        }
        return None;
    }
    let report = outbound
        .sender
        .send(&target(claimed, now), &message(claimed))
        .await;
    let window_start = claimed.first_attempt_at.unwrap_or(report.attempted_at);
    let decision = outbound.schedule.decide(
        report.answer(),
        (claimed.window_attempts + 1) as u32,
        window_start,
        Utc::now(),
        jitter(),
    );
    super::metrics::attempted(&report, decision);
    Some(Outcome {
        claimed,
        report,
        decision,
    })
}

/// Records the outcomes and gives back `unsent`, retrying while Postgres is unreachable until
/// the claim's lease runs out: an attempt the receiver answered but nobody recorded is sent
/// again when the lease expires, so a Postgres blip right after an attempt would otherwise
/// deliver it twice.
async fn record_within_lease(
    pool: &PgPool,
    outcomes: &[Outcome<'_>],
    unsent: &[Claimed],
    lease_ends: DateTime<Utc>,
) -> anyhow::Result<()> {
    let mut pause = std::time::Duration::from_millis(100);
    loop {
        let Err(error) = record(pool, outcomes, unsent).await else {
            return Ok(());
        };
        let error = crate::handlers::HandlerError::Database(error);
        if !error.is_transient() || Utc::now() + pause >= lease_ends {
            return Err(error.into());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(2));
    }
}

fn target(claimed: &Claimed, now: DateTime<Utc>) -> Target {
    Target {
        url: claimed.url.clone(),
        secrets: signing_secrets(
            &claimed.secret,
            claimed.previous_secret.as_deref(),
            claimed.previous_secret_expires_at,
            now,
        ),
        headers: claimed.headers.clone(),
        timeout: std::time::Duration::from_millis(claimed.timeout_ms.max(1) as u64),
    }
}

fn message(claimed: &Claimed) -> Message {
    Message {
        id: claimed.id,
        event_type: claimed.event_type.clone(),
        body: send::body(&claimed.event_type, claimed.event_created_at, &claimed.data),
        retry: claimed.attempts,
    }
}

/// A uniform number in [0, 1) from the OS.
fn jitter() -> f64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random source");
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// Writes the attempts and the deliveries' new states, of those nobody has recorded an attempt
/// of since the claim, and gives back `unsent`; on a recorded 410 disables the endpoint too.
/// Without a 410 or anything to give back it is one statement: a batch's record is then one
/// round trip and one WAL flush.
async fn record(
    pool: &PgPool,
    outcomes: &[Outcome<'_>],
    unsent: &[Claimed],
) -> Result<(), sqlx::Error> {
    let gone = outcomes
        .iter()
        .find(|outcome| matches!(outcome.decision, Decision::Failed { disable: true }));
    let recorded = if gone.is_none() && unsent.is_empty() {
        let mut connection = crate::checkout::connection(pool).await?;
        record_attempts(&mut *connection, outcomes).await?
    } else {
        let mut tx = crate::checkout::begin(pool).await?;
        let recorded = record_attempts(&mut *tx, outcomes).await?;
        if let Some(gone) = gone.filter(|gone| recorded.contains(&gone.claimed.id)) {
            let reason = "the receiver answered 410 Gone";
            disable::gone(&mut tx, gone.claimed.endpoint_id, reason).await?;
        }
        claim::release(&mut *tx, unsent).await?;
        tx.commit().await?;
        recorded
    };
    if recorded.len() < outcomes.len() {
        let skipped = outcomes.len() - recorded.len();
        tracing::warn!(
            skipped,
            "deliveries changed since the claim; their attempts not recorded"
        );
    }
    Ok(())
}

/// Updates the claimed deliveries, inserts their attempts and appends what they add to their
/// endpoint's statistics ([`attempt_stats`]: every attempt made counts, recorded or not), in
/// one statement; returns the deliveries recorded (nothing is written of one that changed
/// since the claim). The rows are found by primary key (`= ANY`), never by a join the planner
/// might hash over the table.
async fn record_attempts(
    executor: impl sqlx::PgExecutor<'_>,
    outcomes: &[Outcome<'_>],
) -> Result<Vec<Uuid>, sqlx::Error> {
    if outcomes.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = outcomes.iter().map(|o| o.claimed.id).collect();
    let attempts: Vec<i32> = outcomes.iter().map(|o| o.claimed.attempts).collect();
    let (statuses, next_attempts): (Vec<&str>, Vec<DateTime<Utc>>) = outcomes
        .iter()
        .map(|o| match o.decision {
            Decision::Succeeded => ("succeeded", o.report.attempted_at),
            Decision::Failed { .. } => ("failed", o.report.attempted_at),
            Decision::RetryAt(at) => ("pending", at),
        })
        .unzip();
    let attempted_at: Vec<DateTime<Utc>> = outcomes.iter().map(|o| o.report.attempted_at).collect();
    let last_errors: Vec<Option<String>> = outcomes.iter().map(|o| last_error(&o.report)).collect();
    let status_codes: Vec<Option<i32>> = outcomes
        .iter()
        .map(|o| o.report.status.map(i32::from))
        .collect();
    let latencies: Vec<i32> = outcomes
        .iter()
        .map(|o| o.report.latency.as_millis().min(i32::MAX as u128) as i32)
        .collect();
    let excerpts: Vec<Option<&str>> = outcomes
        .iter()
        .map(|o| o.report.excerpt.as_deref())
        .collect();
    let errors: Vec<Option<&str>> = outcomes.iter().map(|o| o.report.error.as_deref()).collect();
    sqlx::query_scalar(concat!(
        "WITH outcome AS (
             SELECT * FROM UNNEST($1::uuid[], $2::int[], $3::text[], $4::timestamptz[],
                                  $5::timestamptz[], $6::text[], $7::int[], $8::int[],
                                  $9::text[], $10::text[])
                 AS o (id, attempts, status, attempted_at, next_attempt_at, last_error,
                       status_code, latency_ms, excerpt, error)
         ),
         updated AS (
             UPDATE deliveries d SET status = o.status, attempts = d.attempts + 1,
                 window_attempts = d.window_attempts + 1,
                 first_attempt_at = coalesce(d.first_attempt_at, o.attempted_at),
                 next_attempt_at = o.next_attempt_at, last_error = o.last_error,
                 updated_at = now()
             FROM outcome o
             WHERE d.id = ANY ($1) AND d.id = o.id AND d.attempts = o.attempts
                 AND d.status = 'pending'
             RETURNING d.id
         ),
         counted AS (",
        append_changes!("$11"),
        "
         )
         INSERT INTO delivery_attempts
             (delivery_id, attempted_at, status_code, latency_ms, response_excerpt, error)
         SELECT o.id, o.attempted_at, o.status_code, o.latency_ms, o.excerpt, o.error
         FROM outcome o JOIN updated USING (id)
         RETURNING delivery_id"
    ))
    .bind(ids)
    .bind(attempts)
    .bind(statuses)
    .bind(attempted_at)
    .bind(next_attempts)
    .bind(last_errors)
    .bind(status_codes)
    .bind(latencies)
    .bind(excerpts)
    .bind(errors)
    .bind(statistics(outcomes))
    .fetch_all(executor)
    .await
}

/// What the outcomes add to their endpoints' statistics, as the JSON [`append_changes`] reads.
fn statistics(outcomes: &[Outcome<'_>]) -> serde_json::Value {
    let samples = outcomes.iter().map(|o| Sample {
        endpoint_id: o.claimed.endpoint_id,
        attempted_at: o.report.attempted_at,
        status: o.report.status,
        latency: o.report.latency,
    });
    serde_json::to_value(attempt_stats::changes(samples)).expect("statistics changes serialize")
}

fn last_error(report: &Report) -> Option<String> {
    match (report.status, &report.error) {
        (_, Some(error)) => Some(error.clone()),
        (Some(code), None) if !(200..300).contains(&code) => Some(format!("HTTP {code}")),
        _ => None,
    }
}

/// Fails a delivery whose window closed before this attempt could start.
async fn finish_unattempted(pool: &PgPool, claimed: &Claimed) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE deliveries SET status = 'failed', updated_at = now(),
             last_error = coalesce(last_error || ' ', '') || '(retry window closed)'
         WHERE id = $1 AND attempts = $2 AND status = 'pending'",
    )
    .bind(claimed.id)
    .bind(claimed.attempts)
    .execute(pool)
    .await?;
    super::metrics::finished(super::metrics::Finished::Failed);
    Ok(())
}
