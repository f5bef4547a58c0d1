//! `/v1/endpoints`: where outbound webhooks go. Create, list, read, change and delete
//! endpoints; send a test event; rotate the secret (the old one keeps signing for 24 hours);
//! requeue failed deliveries; and per-endpoint delivery statistics. A secret is shown in full
//! only in the answers to create and rotate.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::input::{PageQuery, input, page};
use super::{Admin, ApiError, Page};
use crate::WorkerContext;
use crate::outbound::endpoint::{self as rules, EndpointError};
use crate::outbound::manual;

type Ctx = State<Arc<WorkerContext>>;
type Id = Result<Path<Uuid>, PathRejection>;

/// How long a rotated-out secret keeps signing.
const ROTATION_OVERLAP: chrono::TimeDelta = chrono::TimeDelta::hours(24);

pub fn routes() -> Router<Arc<WorkerContext>> {
    Router::new()
        .route("/v1/endpoints", post(create).get(list))
        .route("/v1/endpoints/{id}", get(read).patch(update).delete(remove))
        .route("/v1/endpoints/{id}/test", post(test))
        .route("/v1/endpoints/{id}/rotate-secret", post(rotate))
        .route("/v1/endpoints/{id}/recover", post(recover))
        .route("/v1/endpoints/{id}/stats", get(stats))
}

impl From<EndpointError> for ApiError {
    fn from(error: EndpointError) -> Self {
        ApiError::BadRequest(error.to_string())
    }
}

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
    fn masked(mut self) -> Self {
        let shown: String = self.secret.chars().take(10).collect();
        self.secret = format!("{shown}...");
        self
    }

    /// Checks every field, as stored after a create or a change.
    fn check(&self, context: &WorkerContext) -> Result<(), EndpointError> {
        rules::check_url(context.outbound.sender.guard(), &self.url)?;
        rules::check_event_types(&self.event_types)?;
        rules::check_secret(&self.secret)?;
        rules::check_headers(&self.headers)?;
        rules::check_timeout(self.timeout_ms)?;
        rules::check_rate_limit(self.rate_limit_per_s)
    }
}

/// `POST /v1/endpoints` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEndpoint {
    url: String,
    event_types: Vec<String>,
    secret: Option<String>,
    headers: Option<serde_json::Value>,
    timeout_ms: Option<i32>,
    rate_limit_per_s: Option<i32>,
    enabled: Option<bool>,
}

/// `PATCH /v1/endpoints/{id}` body: only the fields given change; `rate_limit_per_s: null`
/// removes the limit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointPatch {
    url: Option<String>,
    event_types: Option<Vec<String>>,
    headers: Option<serde_json::Value>,
    timeout_ms: Option<i32>,
    #[serde(default, deserialize_with = "present")]
    rate_limit_per_s: Option<Option<i32>>,
    enabled: Option<bool>,
}

/// Tells a field given as `null` (`Some(None)`) from a missing one (`None`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

const COLUMNS: &str = "id, url, event_types, secret, previous_secret, previous_secret_expires_at,
    headers, timeout_ms, rate_limit_per_s, enabled, disabled_reason, created_at, updated_at";

async fn create(
    _: Admin,
    State(context): Ctx,
    body: Result<Json<NewEndpoint>, JsonRejection>,
) -> Result<(StatusCode, Json<Endpoint>), ApiError> {
    let Json(new) = input(body)?;
    let now = Utc::now();
    let enabled = new.enabled.unwrap_or(true);
    let endpoint = Endpoint {
        id: Uuid::now_v7(),
        url: new.url,
        event_types: new.event_types,
        secret: new.secret.unwrap_or_else(rules::generate_secret),
        previous_secret: None,
        previous_secret_expires_at: None,
        headers: new.headers.unwrap_or_else(|| serde_json::json!({})),
        timeout_ms: new.timeout_ms.unwrap_or(15_000),
        rate_limit_per_s: new.rate_limit_per_s,
        enabled,
        disabled_reason: (!enabled).then(|| "created disabled".to_owned()),
        created_at: now,
        updated_at: now,
    };
    endpoint.check(&context)?;
    let created = save(&context, &endpoint, Write::Insert).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Whether [`save`] creates the endpoint or changes it.
#[derive(Debug, Clone, Copy)]
enum Write {
    Insert,
    Update,
}

/// Inserts or updates every field of `endpoint`; returns it as stored.
async fn save(
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

async fn find(context: &WorkerContext, id: Uuid) -> Result<Endpoint, ApiError> {
    let statement = format!("SELECT {COLUMNS} FROM endpoints WHERE id = $1");
    let found: Option<Endpoint> = sqlx::query_as(&statement)
        .bind(id)
        .fetch_optional(&context.pool)
        .await?;
    found.ok_or(ApiError::NotFound("endpoint"))
}

async fn list(
    _: Admin,
    State(context): Ctx,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Page<Endpoint>>, ApiError> {
    let Query(query) = input(query)?;
    let statement = format!(
        "SELECT {COLUMNS} FROM endpoints WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2"
    );
    let rows: Vec<Endpoint> = sqlx::query_as(&statement)
        .bind(query.cursor)
        .bind(query.limit() + 1)
        .fetch_all(&context.pool)
        .await?;
    let rows = rows.into_iter().map(Endpoint::masked).collect();
    Ok(Json(page(rows, query.limit(), |endpoint| endpoint.id)))
}

async fn read(_: Admin, State(context): Ctx, id: Id) -> Result<Json<Endpoint>, ApiError> {
    let Path(id) = input(id)?;
    Ok(Json(find(&context, id).await?.masked()))
}

async fn update(
    _: Admin,
    State(context): Ctx,
    id: Id,
    body: Result<Json<EndpointPatch>, JsonRejection>,
) -> Result<Json<Endpoint>, ApiError> {
    let (Path(id), Json(patch)) = (input(id)?, input(body)?);
    let mut endpoint = find(&context, id).await?;
    endpoint.url = patch.url.unwrap_or(endpoint.url);
    endpoint.event_types = patch.event_types.unwrap_or(endpoint.event_types);
    endpoint.headers = patch.headers.unwrap_or(endpoint.headers);
    endpoint.timeout_ms = patch.timeout_ms.unwrap_or(endpoint.timeout_ms);
    endpoint.rate_limit_per_s = patch.rate_limit_per_s.unwrap_or(endpoint.rate_limit_per_s);
    match patch.enabled {
        Some(true) => (endpoint.enabled, endpoint.disabled_reason) = (true, None),
        Some(false) if endpoint.enabled => {
            endpoint.enabled = false;
            endpoint.disabled_reason = Some("disabled through the API".to_owned());
        }
        _ => {}
    }
    endpoint.check(&context)?;
    Ok(Json(
        save(&context, &endpoint, Write::Update).await?.masked(),
    ))
}

async fn remove(_: Admin, State(context): Ctx, id: Id) -> Result<StatusCode, ApiError> {
    let Path(id) = input(id)?;
    let deleted = sqlx::query("DELETE FROM endpoints WHERE id = $1")
        .bind(id)
        .execute(&context.pool)
        .await?;
    match deleted.rows_affected() {
        0 => Err(ApiError::NotFound("endpoint")),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}

async fn rotate(_: Admin, State(context): Ctx, id: Id) -> Result<Json<Endpoint>, ApiError> {
    let Path(id) = input(id)?;
    let mut endpoint = find(&context, id).await?;
    endpoint.previous_secret = Some(endpoint.secret);
    endpoint.previous_secret_expires_at = Some(Utc::now() + ROTATION_OVERLAP);
    endpoint.secret = rules::generate_secret();
    Ok(Json(save(&context, &endpoint, Write::Update).await?))
}

/// `POST /v1/endpoints/{id}/test` answer: what the receiver said.
#[derive(Debug, Serialize)]
struct TestResult {
    delivery_id: Uuid,
    succeeded: bool,
    status_code: Option<u16>,
    latency_ms: u128,
    response_excerpt: Option<String>,
    error: Option<String>,
}

async fn test(_: Admin, State(context): Ctx, id: Id) -> Result<Json<TestResult>, ApiError> {
    let Path(id) = input(id)?;
    let (delivery_id, report) = manual::send_test(&context.outbound, &context.pool, id)
        .await?
        .ok_or(ApiError::NotFound("endpoint"))?;
    Ok(Json(TestResult {
        delivery_id,
        succeeded: report.status.is_some_and(|code| (200..300).contains(&code)),
        status_code: report.status,
        latency_ms: report.latency.as_millis(),
        response_excerpt: report.excerpt,
        error: report.error,
    }))
}

#[derive(Debug, Deserialize)]
struct Since {
    since: DateTime<Utc>,
}

async fn recover(
    _: Admin,
    State(context): Ctx,
    id: Id,
    query: Result<Query<Since>, QueryRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let (Path(id), Query(Since { since })) = (input(id)?, input(query)?);
    let requeued = manual::recover(&context.pool, id, since)
        .await?
        .ok_or(ApiError::NotFound("endpoint"))?;
    let body = serde_json::json!({ "endpoint_id": id, "since": since, "requeued": requeued });
    Ok((StatusCode::ACCEPTED, Json(body)))
}

/// `GET /v1/endpoints/{id}/stats`: delivery counts, success rate and attempt latency.
#[derive(Debug, Serialize, sqlx::FromRow)]
struct Stats {
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

async fn stats(_: Admin, State(context): Ctx, id: Id) -> Result<Json<Stats>, ApiError> {
    let Path(id) = input(id)?;
    find(&context, id).await?;
    let stats: Stats = sqlx::query_as(
        "WITH counts AS (
             SELECT count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
                    count(*) FILTER (WHERE status = 'failed') AS failed,
                    count(*) FILTER (WHERE status = 'pending') AS pending
             FROM deliveries WHERE endpoint_id = $1
         ), latency AS (
             SELECT count(*) AS attempts_24h,
                    percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY a.latency_ms)
                        AS p
             FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
             WHERE d.endpoint_id = $1 AND a.attempted_at > now() - interval '24 hours'
         )
         SELECT succeeded, failed, pending,
                succeeded::float8 / nullif(succeeded + failed, 0) AS success_rate,
                attempts_24h, p[1] AS latency_p50_ms, p[2] AS latency_p95_ms,
                p[3] AS latency_p99_ms
         FROM counts, latency",
    )
    .bind(id)
    .fetch_one(&context.pool)
    .await?;
    Ok(Json(stats))
}
