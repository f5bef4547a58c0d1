//! `/v1/endpoints`: where outbound webhooks go. Create, list, read, change and delete
//! endpoints; send a test event; rotate the secret (the old one keeps signing for 24 hours);
//! requeue failed deliveries; and per-endpoint delivery statistics. A secret is shown in full
//! only in the answers to create and rotate, custom header values only in the answer to
//! create. A change writes only the columns it changes, and a rotation only the secrets, so
//! concurrent admins never undo each other's work.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod store;

use super::input::{JsonBody, Params, PathId};
use super::{Admin, ApiError, Page};
use crate::WorkerContext;
use crate::outbound::endpoint::{self as rules, EndpointError};
use crate::outbound::manual;
use store::{Endpoint, Stats, find};

type Ctx = State<Arc<WorkerContext>>;

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
        let field = match &error {
            EndpointError::UnparsableUrl | EndpointError::Destination(_) => "url",
            EndpointError::EventTypes(_) => "event_types",
            EndpointError::Secret => "secret",
            EndpointError::Headers(_) => "headers",
            EndpointError::Timeout => "timeout_ms",
            EndpointError::RateLimit => "rate_limit_per_s",
        };
        // The error's text already starts with the field's name.
        ApiError::Invalid {
            field: field.to_owned(),
            message: error.to_string(),
        }
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

async fn create(
    _: Admin,
    State(context): Ctx,
    JsonBody(new): JsonBody<NewEndpoint>,
) -> Result<(StatusCode, Json<Endpoint>), ApiError> {
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
    let created = store::insert(&context, &endpoint).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /v1/endpoints`: newest first (ids are time-ordered UUIDs).
async fn list(
    _: Admin,
    State(context): Ctx,
    mut params: Params,
) -> Result<Json<Page<Endpoint>>, ApiError> {
    let page = params.page::<Uuid>("endpoints")?;
    params.finish()?;
    let rows = store::page_before(&context, page.after, page.fetch()).await?;
    let rows = rows.into_iter().map(Endpoint::masked).collect();
    Ok(Json(page.page(rows, |endpoint| endpoint.id)))
}

async fn read(
    _: Admin,
    State(context): Ctx,
    PathId(id): PathId,
) -> Result<Json<Endpoint>, ApiError> {
    Ok(Json(find(&context, id).await?.masked()))
}

async fn update(
    _: Admin,
    State(context): Ctx,
    PathId(id): PathId,
    JsonBody(patch): JsonBody<EndpointPatch>,
) -> Result<Json<Endpoint>, ApiError> {
    patch.check(&context)?;
    Ok(Json(store::update(&context, id, &patch).await?.masked()))
}

async fn remove(_: Admin, State(context): Ctx, PathId(id): PathId) -> Result<StatusCode, ApiError> {
    let deleted = sqlx::query("DELETE FROM endpoints WHERE id = $1")
        .bind(id)
        .execute(&context.pool)
        .await?;
    match deleted.rows_affected() {
        0 => Err(ApiError::NotFound("endpoint")),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}

async fn rotate(
    _: Admin,
    State(context): Ctx,
    PathId(id): PathId,
) -> Result<Json<Endpoint>, ApiError> {
    let expires_at = Utc::now() + ROTATION_OVERLAP;
    let secret = rules::generate_secret();
    let rotated = store::rotate_secret(&context, id, &secret, expires_at).await?;
    Ok(Json(rotated.headers_masked()))
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

async fn test(
    _: Admin,
    State(context): Ctx,
    PathId(id): PathId,
) -> Result<Json<TestResult>, ApiError> {
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

async fn recover(
    _: Admin,
    State(context): Ctx,
    PathId(id): PathId,
    mut params: Params,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let since = params
        .time("since")?
        .ok_or_else(|| ApiError::invalid("since", "required (an RFC 3339 time)"))?;
    params.finish()?;
    let requeued = manual::recover(&context.pool, id, since)
        .await?
        .ok_or(ApiError::NotFound("endpoint"))?;
    let body = serde_json::json!({ "endpoint_id": id, "since": since, "requeued": requeued });
    Ok((StatusCode::ACCEPTED, Json(body)))
}

async fn stats(_: Admin, State(context): Ctx, PathId(id): PathId) -> Result<Json<Stats>, ApiError> {
    find(&context, id).await?;
    let stats = store::stats(&context, id).await?;
    Ok(Json(stats))
}
