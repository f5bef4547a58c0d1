//! Endpoints in Postgres: the row as stored and shown, and the statements the handlers run.

use chrono::{DateTime, DurationRound, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::EndpointPatch;
use crate::WorkerContext;
use crate::api::ApiError;
use crate::outbound::at_rest::SecretsKeys;
use crate::outbound::attempt_stats::{self, Window};
use crate::outbound::counts;
use crate::outbound::endpoint::{self as rules, EndpointError, MASK};

// As read from Postgres the secret and header values may be sealed ([`SecretsKeys`]): every
// read is masked, and create and rotate answer with the values as given.
/// An endpoint: where outbound webhooks go. Its secret is shown in full only in the answers to
/// create and rotate (`whsec_...` otherwise), its custom header values only in the answer to
/// create (`...` otherwise).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Endpoint {
    pub id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    pub secret: String,
    #[serde(skip)]
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// Custom headers, name to value (values masked but in the answer to create).
    #[schema(value_type = std::collections::HashMap<String, String>)]
    pub headers: serde_json::Value,
    pub timeout_ms: i32,
    pub rate_limit_per_s: Option<i32>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    /// The uids whose events it receives; empty: every user's.
    pub uids: Vec<String>,
    /// When its current run of failed attempts began; null while its last attempt succeeded.
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Endpoint {
    /// The endpoint for an answer that must not reveal the secret nor the custom header values
    /// (they often hold the receiver's credentials): `whsec_...`, `{"X-Api-Key": "..."}`.
    pub fn masked(mut self) -> Self {
        self.secret = format!("whsec_{MASK}");
        self.headers_masked()
    }

    /// The endpoint with its custom header values masked and its secret shown: the answer to a
    /// rotation.
    pub fn headers_masked(mut self) -> Self {
        if let Some(headers) = self.headers.as_object_mut() {
            for value in headers.values_mut() {
                *value = MASK.into();
            }
        }
        self
    }

    /// Checks every field, as stored after a create.
    pub fn check(&self, context: &WorkerContext) -> Result<(), EndpointError> {
        rules::check_url(context.outbound.sender.guard(), &self.url)?;
        rules::check_event_types(&self.event_types)?;
        rules::check_secret(&self.secret)?;
        rules::check_headers(&self.headers)?;
        rules::check_timeout(self.timeout_ms)?;
        rules::check_rate_limit(self.rate_limit_per_s)?;
        rules::check_uids(&self.uids)
    }
}

impl EndpointPatch {
    /// Checks the fields the patch changes.
    pub fn check(&self, context: &WorkerContext) -> Result<(), EndpointError> {
        if let Some(url) = &self.url {
            rules::check_url(context.outbound.sender.guard(), url)?;
        }
        if let Some(event_types) = &self.event_types {
            rules::check_event_types(event_types)?;
        }
        if let Some(headers) = &self.headers {
            rules::check_headers(headers)?;
        }
        if let Some(timeout_ms) = self.timeout_ms {
            rules::check_timeout(timeout_ms)?;
        }
        if let Some(rate_limit_per_s) = self.rate_limit_per_s {
            rules::check_rate_limit(rate_limit_per_s)?;
        }
        if let Some(uids) = &self.uids {
            rules::check_uids(uids)?;
        }
        Ok(())
    }
}

const COLUMNS: &str = "id, url, event_types, secret, previous_secret, previous_secret_expires_at,
    headers, timeout_ms, rate_limit_per_s, enabled, disabled_reason, uids, failing_since,
    created_at, updated_at";

/// The keys that seal secrets and header values before they are written.
fn keys(context: &WorkerContext) -> &SecretsKeys {
    context.outbound.sender.secrets_keys()
}

/// Inserts a new endpoint, its secrets and header values sealed; returns it as stored, with
/// them as given.
pub async fn insert(context: &WorkerContext, endpoint: &Endpoint) -> Result<Endpoint, ApiError> {
    let keys = keys(context);
    let statement = format!(
        "INSERT INTO endpoints (url, event_types, secret, previous_secret,
             previous_secret_expires_at, headers, timeout_ms, rate_limit_per_s, enabled,
             disabled_reason, id, uids)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         RETURNING {COLUMNS}"
    );
    let inserted: Endpoint = sqlx::query_as(&statement)
        .bind(&endpoint.url)
        .bind(&endpoint.event_types)
        .bind(keys.seal(&endpoint.secret))
        .bind(endpoint.previous_secret.as_deref().map(|v| keys.seal(v)))
        .bind(endpoint.previous_secret_expires_at)
        .bind(keys.seal_headers(&endpoint.headers))
        .bind(endpoint.timeout_ms)
        .bind(endpoint.rate_limit_per_s)
        .bind(endpoint.enabled)
        .bind(&endpoint.disabled_reason)
        .bind(endpoint.id)
        .bind(&endpoint.uids)
        .fetch_one(&context.pool)
        .await?;
    Ok(Endpoint {
        secret: endpoint.secret.clone(),
        previous_secret: endpoint.previous_secret.clone(),
        headers: endpoint.headers.clone(),
        ..inserted
    })
}

/// Applies a checked patch in one statement that writes only the columns it changes (the
/// others keep whatever they hold when it runs), so a concurrent rotation or a concurrent
/// patch of other fields is never undone. Disabling keeps the reason of an endpoint that was
/// already disabled; enabling a disabled one ends its run of failures (it is judged afresh).
/// New header values are sealed; the answer must be masked.
pub async fn update(
    context: &WorkerContext,
    id: Uuid,
    patch: &EndpointPatch,
) -> Result<Endpoint, ApiError> {
    let statement = format!(
        "UPDATE endpoints SET url = COALESCE($2, url), event_types = COALESCE($3, event_types),
             headers = COALESCE($4, headers), timeout_ms = COALESCE($5, timeout_ms),
             rate_limit_per_s = CASE WHEN $6 THEN $7 ELSE rate_limit_per_s END,
             enabled = COALESCE($8, enabled),
             disabled_reason = CASE WHEN $8 THEN NULL
                 WHEN NOT $8 AND enabled THEN 'disabled through the API'
                 ELSE disabled_reason END,
             failing_since = CASE WHEN $8 AND NOT enabled THEN NULL ELSE failing_since END,
             uids = COALESCE($9, uids),
             updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    );
    let updated: Option<Endpoint> = sqlx::query_as(&statement)
        .bind(id)
        .bind(&patch.url)
        .bind(&patch.event_types)
        .bind(
            patch
                .headers
                .as_ref()
                .map(|h| keys(context).seal_headers(h)),
        )
        .bind(patch.timeout_ms)
        .bind(patch.rate_limit_per_s.is_some())
        .bind(patch.rate_limit_per_s.flatten())
        .bind(patch.enabled)
        .bind(&patch.uids)
        .fetch_optional(&context.pool)
        .await?;
    updated.ok_or(ApiError::NotFound("endpoint"))
}

/// Makes `secret` the endpoint's secret and the one it replaces the previous secret, signing
/// until `previous_expires_at`, in one statement: the secret replaced is the one stored when
/// it runs, whatever else changes the endpoint meanwhile. The new secret is sealed, and shown
/// as given in the answer.
pub async fn rotate_secret(
    context: &WorkerContext,
    id: Uuid,
    secret: &str,
    previous_expires_at: DateTime<Utc>,
) -> Result<Endpoint, ApiError> {
    let statement = format!(
        "UPDATE endpoints SET previous_secret = secret, previous_secret_expires_at = $3,
             secret = $2, updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    );
    let rotated: Option<Endpoint> = sqlx::query_as(&statement)
        .bind(id)
        .bind(keys(context).seal(secret))
        .bind(previous_expires_at)
        .fetch_optional(&context.pool)
        .await?;
    let rotated = rotated.ok_or(ApiError::NotFound("endpoint"))?;
    Ok(Endpoint {
        secret: secret.to_owned(),
        previous_secret: None,
        ..rotated
    })
}

pub async fn find(context: &WorkerContext, id: Uuid) -> Result<Endpoint, ApiError> {
    let statement = format!("SELECT {COLUMNS} FROM endpoints WHERE id = $1");
    let found: Option<Endpoint> = sqlx::query_as(&statement)
        .bind(id)
        .fetch_optional(&context.pool)
        .await?;
    found.ok_or(ApiError::NotFound("endpoint"))
}

/// A page of endpoints older than the one with id `before`, newest first; `limit` rows at
/// most.
pub async fn page_before(
    context: &WorkerContext,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Endpoint>, ApiError> {
    let statement = format!(
        "SELECT {COLUMNS} FROM endpoints
         WHERE id < COALESCE($1, 'ffffffff-ffff-ffff-ffff-ffffffffffff') ORDER BY id DESC LIMIT $2"
    );
    Ok(sqlx::query_as(&statement)
        .bind(before)
        .bind(limit)
        .fetch_all(&context.pool)
        .await?)
}

/// `GET /v1/endpoints/{id}/stats`: the endpoint's deliveries by status now, and its attempts
/// over a window.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = EndpointStats)]
pub struct Stats {
    endpoint_id: Uuid,
    /// The window's name (`5m`, `1h`, `24h`, `7d`) and where it starts (a whole minute).
    window: String,
    since: DateTime<Utc>,
    /// Deliveries by status, of all time; a disabled endpoint's pending ones are `paused`.
    pending: i64,
    paused: i64,
    succeeded: i64,
    failed: i64,
    /// Its circuit breaker in the worker that answers (`closed`, `open`, `half_open`): each
    /// worker keeps its own.
    circuit: &'static str,
    #[serde(flatten)]
    attempts: Window,
}

/// The statistics of `endpoint` over the last `length`: delivery counts (kept per endpoint,
/// never counted: [`counts`]) and attempts ([`attempt_stats`]: per-minute rows, never the
/// attempts table).
pub async fn stats(
    context: &WorkerContext,
    endpoint: &Endpoint,
    window: String,
    length: std::time::Duration,
) -> Result<Stats, ApiError> {
    let counted = counts::of_endpoint(&context.pool, endpoint.id).await?;
    let attempts = attempt_stats::window(&context.pool, endpoint.id, length).await?;
    let start = Utc::now() - chrono::Duration::from_std(length).unwrap_or_default();
    let since = start
        .duration_trunc(chrono::TimeDelta::minutes(1))
        .unwrap_or(start);
    let (pending, paused) = match endpoint.enabled {
        true => (counted.pending, 0),
        false => (0, counted.pending),
    };
    Ok(Stats {
        endpoint_id: endpoint.id,
        window,
        since,
        pending,
        paused,
        succeeded: counted.succeeded,
        failed: counted.failed,
        circuit: context.outbound.isolation.circuit(endpoint.id),
        attempts,
    })
}
