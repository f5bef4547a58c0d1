//! Disabling an endpoint the delivery side gave up on, announced with an `endpoint.disabled`
//! event, once: when a receiver answers 410 Gone ([`gone`], from the record of the attempt),
//! and when its current run of failures (`endpoints.failing_since`, kept by
//! [`super::attempt_stats::fold`]) has lasted `ENDPOINT_DISABLE_AFTER` ([`sweep`], from the
//! sweeper). Either way the endpoint's pending deliveries stay, shown as `paused`, until it
//! is enabled again. The sweep reads the endpoints table only, never a delivery or an attempt.

use std::time::Duration;

use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::outbox::{self, EventType};

/// The endpoints to disable: enabled, and failing for $1 seconds.
macro_rules! failing_for {
    () => {
        "enabled AND failing_since <= now() - $1 * interval '1 second'"
    };
}

/// An endpoint just disabled.
#[derive(Debug, sqlx::FromRow)]
struct Disabled {
    id: Uuid,
    url: String,
}

/// Disables `endpoint`, unless it already is, and emits `endpoint.disabled`, inside `tx`.
pub async fn gone(
    tx: &mut Transaction<'_, Postgres>,
    endpoint: Uuid,
    reason: &str,
) -> Result<(), sqlx::Error> {
    let disabled: Vec<Disabled> = sqlx::query_as(
        "UPDATE endpoints SET enabled = false, disabled_reason = $2, updated_at = now()
         WHERE id = $1 AND enabled RETURNING id, url",
    )
    .bind(endpoint)
    .bind(reason)
    .fetch_all(&mut **tx)
    .await?;
    announce(tx, &disabled, reason).await
}

/// Disables every enabled endpoint that has been failing, with no success, for `after`, and
/// emits `endpoint.disabled` for each, in one transaction; returns how many. `None` (the
/// setting `0`): never.
pub async fn sweep(pool: &PgPool, after: Option<Duration>) -> Result<usize, sqlx::Error> {
    let Some(after) = after else {
        return Ok(0);
    };
    let reason = format!(
        "no successful delivery for {} while failing (ENDPOINT_DISABLE_AFTER)",
        humantime::format_duration(after)
    );
    // Most sweeps find none: one read, and no transaction, then.
    let any: bool = sqlx::query_scalar(concat!(
        "SELECT EXISTS (SELECT 1 FROM endpoints WHERE ",
        failing_for!(),
        ")"
    ))
    .bind(after.as_secs_f64())
    .fetch_one(pool)
    .await?;
    if !any {
        return Ok(0);
    }
    let mut tx = crate::checkout::begin(pool).await?;
    let disabled: Vec<Disabled> = sqlx::query_as(concat!(
        "UPDATE endpoints SET enabled = false, disabled_reason = $2, updated_at = now()
         WHERE ",
        failing_for!(),
        " RETURNING id, url"
    ))
    .bind(after.as_secs_f64())
    .bind(&reason)
    .fetch_all(&mut *tx)
    .await?;
    announce(&mut tx, &disabled, &reason).await?;
    tx.commit().await?;
    Ok(disabled.len())
}

/// Emits `endpoint.disabled` for each endpoint just disabled.
async fn announce(
    tx: &mut Transaction<'_, Postgres>,
    disabled: &[Disabled],
    reason: &str,
) -> Result<(), sqlx::Error> {
    for endpoint in disabled {
        let data = serde_json::json!({
            "endpoint_id": endpoint.id,
            "url": endpoint.url,
            "reason": reason,
        });
        outbox::emit(tx, EventType::EndpointDisabled, None, data).await?;
        tracing::warn!(endpoint = %endpoint.id, reason, "endpoint disabled");
    }
    Ok(())
}
