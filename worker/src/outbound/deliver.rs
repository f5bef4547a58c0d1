//! One attempt of a claimed delivery ([`super::claim`]) and the record of its outcome.
//!
//! The outcome is written only if the delivery is still as it was claimed (`attempts`
//! unchanged), so a worker that outlived its lease cannot overwrite a newer attempt.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use super::Outbound;
use super::claim::{Claimed, LEASE_MARGIN_MS};
use super::endpoint::signing_secrets;
use super::outbox::{self, EventType};
use super::schedule::Decision;
use super::send::{self, Message, Report, Target};

/// Makes one attempt of a claimed delivery (unless its window has closed), records it, and
/// returns what happened; `None` when the window had closed and it was failed unattempted.
pub async fn attempt(
    outbound: &Outbound,
    pool: &PgPool,
    claimed: &Claimed,
) -> anyhow::Result<Option<Report>> {
    let now = Utc::now();
    if let Some(start) = claimed.first_attempt_at
        && now > start + outbound.schedule.window
    {
        finish_unattempted(pool, claimed).await?;
        return Ok(None);
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
    record_within_lease(pool, claimed, &report, decision).await?;
    Ok(Some(report))
}

/// Records the outcome, retrying while Postgres is unreachable until the claim's lease runs
/// out: an attempt the receiver answered but nobody recorded is sent again when the lease
/// expires, so a Postgres blip right after an attempt would otherwise deliver it twice.
async fn record_within_lease(
    pool: &PgPool,
    claimed: &Claimed,
    report: &Report,
    decision: Decision,
) -> anyhow::Result<()> {
    let lease = chrono::Duration::milliseconds((claimed.timeout_ms + LEASE_MARGIN_MS) as i64);
    let lease_ends = report.attempted_at + lease;
    let mut pause = std::time::Duration::from_millis(100);
    loop {
        let Err(error) = record(pool, claimed, report, decision).await else {
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

/// Writes the attempt and the delivery's new state, only if nobody has recorded an attempt
/// since the claim; on 410 disables the endpoint too, in the same transaction. Without a 410 it
/// is one statement: a delivery's record is then one round trip, not four.
async fn record(
    pool: &PgPool,
    claimed: &Claimed,
    report: &Report,
    decision: Decision,
) -> Result<(), sqlx::Error> {
    let (status, next) = match decision {
        Decision::Succeeded => ("succeeded", report.attempted_at),
        Decision::Failed { .. } => ("failed", report.attempted_at),
        Decision::RetryAt(at) => ("pending", at),
    };
    let recorded = if let Decision::Failed { disable: true } = decision {
        let mut tx = pool.begin().await?;
        let recorded = record_attempt(&mut *tx, claimed, report, status, next).await?;
        if recorded {
            disable_endpoint(&mut tx, claimed, "the receiver answered 410 Gone").await?;
        }
        tx.commit().await?;
        recorded
    } else {
        record_attempt(pool, claimed, report, status, next).await?
    };
    if !recorded {
        tracing::warn!(delivery = %claimed.id, "delivery changed since the claim; attempt not recorded");
    }
    Ok(())
}

/// Updates the claimed delivery and inserts its attempt, in one statement; false (and nothing
/// written) when the delivery changed since the claim.
async fn record_attempt(
    executor: impl sqlx::PgExecutor<'_>,
    claimed: &Claimed,
    report: &Report,
    status: &str,
    next: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "WITH updated AS (
             UPDATE deliveries SET status = $3, attempts = attempts + 1,
                 window_attempts = window_attempts + 1,
                 first_attempt_at = coalesce(first_attempt_at, $4), next_attempt_at = $5,
                 last_error = $6, updated_at = now()
             WHERE id = $1 AND attempts = $2 AND status = 'pending'
             RETURNING id
         )
         INSERT INTO delivery_attempts
             (delivery_id, attempted_at, status_code, latency_ms, response_excerpt, error)
         SELECT id, $4, $7, $8, $9, $10 FROM updated",
    )
    .bind(claimed.id)
    .bind(claimed.attempts)
    .bind(status)
    .bind(report.attempted_at)
    .bind(next)
    .bind(last_error(report))
    .bind(report.status.map(i32::from))
    .bind(report.latency.as_millis().min(i32::MAX as u128) as i32)
    .bind(report.excerpt.as_deref())
    .bind(report.error.as_deref())
    .execute(executor)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

fn last_error(report: &Report) -> Option<String> {
    match (report.status, &report.error) {
        (_, Some(error)) => Some(error.clone()),
        (Some(code), None) if !(200..300).contains(&code) => Some(format!("HTTP {code}")),
        _ => None,
    }
}

/// Disables the endpoint and emits `endpoint.disabled`, once.
async fn disable_endpoint(
    tx: &mut Transaction<'_, Postgres>,
    claimed: &Claimed,
    reason: &str,
) -> Result<(), sqlx::Error> {
    let disabled = sqlx::query(
        "UPDATE endpoints SET enabled = false, disabled_reason = $2, updated_at = now()
         WHERE id = $1 AND enabled",
    )
    .bind(claimed.endpoint_id)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    if disabled.rows_affected() == 1 {
        let data = serde_json::json!({
            "endpoint_id": claimed.endpoint_id,
            "url": claimed.url,
            "reason": reason,
        });
        outbox::emit(tx, EventType::EndpointDisabled, None, data).await?;
        tracing::warn!(endpoint = %claimed.endpoint_id, reason, "endpoint disabled");
    }
    Ok(())
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
    super::metrics::finished("failed");
    Ok(())
}
