//! Endpoints in Postgres: the row as stored and shown, and the statements the handlers run.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::WorkerContext;
use crate::api::ApiError;
use crate::outbound::counts;
use crate::outbound::endpoint::{self as rules, EndpointError};

/// An endpoint as stored and shown; the secret is masked unless revealed.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Endpoint {
    pub id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    pub secret: String,
    #[serde(skip)]
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub headers: serde_json::Value,
    pub timeout_ms: i32,
    pub rate_limit_per_s: Option<i32>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Endpoint {
    /// The endpoint for an answer that must not reveal the secret: `whsec_abcd...`.
    pub fn masked(mut self) -> Self {
        let shown: String = self.secret.chars().take(10).collect();
        self.secret = format!("{shown}...");
        self
    }

    /// Checks every field, as stored after a create or a change.
    pub fn check(&self, context: &WorkerContext) -> Result<(), EndpointError> {
        rules::check_url(context.outbound.sender.guard(), &self.url)?;
        rules::check_event_types(&self.event_types)?;
        rules::check_secret(&self.secret)?;
        rules::check_headers(&self.headers)?;
        rules::check_timeout(self.timeout_ms)?;
        rules::check_rate_limit(self.rate_limit_per_s)
    }
}

const COLUMNS: &str = "id, url, event_types, secret, previous_secret, previous_secret_expires_at,
    headers, timeout_ms, rate_limit_per_s, enabled, disabled_reason, created_at, updated_at";

/// Whether [`save`] creates the endpoint or changes it.
#[derive(Debug, Clone, Copy)]
pub enum Write {
    Insert,
    Update,
}

/// Inserts or updates every field of `endpoint`; returns it as stored.
pub async fn save(
    context: &WorkerContext,
    endpoint: &Endpoint,
    write: Write,
) -> Result<Endpoint, ApiError> {
    let statement = match write {
        Write::Insert => format!(
            "INSERT INTO endpoints (url, event_types, secret, previous_secret,
                 previous_secret_expires_at, headers, timeout_ms, rate_limit_per_s, enabled,
                 disabled_reason, id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             RETURNING {COLUMNS}"
        ),
        Write::Update => format!(
            "UPDATE endpoints SET url = $1, event_types = $2, secret = $3, previous_secret = $4,
                 previous_secret_expires_at = $5, headers = $6, timeout_ms = $7,
                 rate_limit_per_s = $8, enabled = $9, disabled_reason = $10, updated_at = now()
             WHERE id = $11 RETURNING {COLUMNS}"
        ),
    };
    let saved: Option<Endpoint> = sqlx::query_as(&statement)
        .bind(&endpoint.url)
        .bind(&endpoint.event_types)
        .bind(&endpoint.secret)
        .bind(&endpoint.previous_secret)
        .bind(endpoint.previous_secret_expires_at)
        .bind(&endpoint.headers)
        .bind(endpoint.timeout_ms)
        .bind(endpoint.rate_limit_per_s)
        .bind(endpoint.enabled)
        .bind(&endpoint.disabled_reason)
        .bind(endpoint.id)
        .fetch_optional(&context.pool)
        .await?;
    saved.ok_or(ApiError::NotFound("endpoint"))
}

pub async fn find(context: &WorkerContext, id: Uuid) -> Result<Endpoint, ApiError> {
    let statement = format!("SELECT {COLUMNS} FROM endpoints WHERE id = $1");
    let found: Option<Endpoint> = sqlx::query_as(&statement)
        .bind(id)
        .fetch_optional(&context.pool)
        .await?;
    found.ok_or(ApiError::NotFound("endpoint"))
}

/// A page of endpoints after `cursor`, oldest first; `limit` rows at most.
pub async fn page_after(
    context: &WorkerContext,
    cursor: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Endpoint>, ApiError> {
    let statement = format!(
        "SELECT {COLUMNS} FROM endpoints WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2"
    );
    Ok(sqlx::query_as(&statement)
        .bind(cursor)
        .bind(limit)
        .fetch_all(&context.pool)
        .await?)
}

/// `GET /v1/endpoints/{id}/stats`: delivery counts, success rate and attempt latency.
#[derive(Debug, Serialize)]
pub struct Stats {
    succeeded: i64,
    failed: i64,
    pending: i64,
    /// Succeeded over finished deliveries; null before any finished.
    success_rate: Option<f64>,
    /// Attempts in the last 24 hours, and their latency percentiles in milliseconds.
    attempts_24h: i64,
    latency_p50_ms: Option<f64>,
    latency_p95_ms: Option<f64>,
    latency_p99_ms: Option<f64>,
}

/// Attempts of the last 24 hours and their latency percentiles.
#[derive(Debug, sqlx::FromRow)]
struct Latency {
    attempts_24h: i64,
    p: Option<Vec<f64>>,
}

/// Delivery counts (kept per endpoint, never counted: [`counts`]), success rate and attempt
/// latency of one endpoint.
pub async fn stats(context: &WorkerContext, id: Uuid) -> Result<Stats, ApiError> {
    let counted = counts::of_endpoint(&context.pool, id).await?;
    let latency: Latency = sqlx::query_as(
        "SELECT count(*) AS attempts_24h,
                percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY a.latency_ms) AS p
         FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
         WHERE d.endpoint_id = $1 AND a.attempted_at > now() - interval '24 hours'",
    )
    .bind(id)
    .fetch_one(&context.pool)
    .await?;
    let finished = counted.succeeded + counted.failed;
    let percentile = |n: usize| latency.p.as_ref().and_then(|p| p.get(n).copied());
    Ok(Stats {
        succeeded: counted.succeeded,
        failed: counted.failed,
        pending: counted.pending,
        success_rate: (finished > 0).then(|| counted.succeeded as f64 / finished as f64),
        attempts_24h: latency.attempts_24h,
        latency_p50_ms: percentile(0),
        latency_p95_ms: percentile(1),
        latency_p99_ms: percentile(2),
    })
}
