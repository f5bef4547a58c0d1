//! `/v1/endpoints`: where outbound webhooks go. Create, list, read, change and delete
//! endpoints (optionally limited to some users' events, `uids`); send a test event; rotate the
//! secret (the old one keeps signing for 24 hours); requeue failed deliveries; replay every
//! event since a time; and per-endpoint statistics over a time window. Re-enabling a disabled
//! endpoint resumes its paused deliveries. A secret is shown in full
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
use crate::outbound::attempt_stats;
use crate::outbound::endpoint::{self as rules, EndpointError};
use crate::outbound::{manual, replay};
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
        .route("/v1/endpoints/{id}/replay", post(replay))
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
            EndpointError::Uids(_) => "uids",
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
    /// Deliver only these users' events; absent or empty: every user's.
    uids: Option<Vec<String>>,
}

/// `PATCH /v1/endpoints/{id}` body: only the fields given change; `rate_limit_per_s: null`
/// removes the limit, `uids: []` the uid filter.
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
    uids: Option<Vec<String>>,
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
        uids: rules::distinct_uids(new.uids.unwrap_or_default()),
        failing_since: None,
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
    JsonBody(mut patch): JsonBody<EndpointPatch>,
) -> Result<Json<Endpoint>, ApiError> {
    patch.check(&context)?;
    patch.uids = patch.uids.map(rules::distinct_uids);
    let resumes = patch.enabled == Some(true) && !find(&context, id).await?.enabled;
    if resumes {
        manual::resume(&context.pool, id).await?;
    }
    let updated = store::update(&context, id, &patch).await?;
    if resumes {
        manual::wake(&context.pool).await?;
    }
    Ok(Json(updated.masked()))
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

/// The required `since` of recover and replay.
fn since(params: &mut Params) -> Result<chrono::DateTime<Utc>, ApiError> {
    params
        .time("since")?
        .ok_or_else(|| ApiError::invalid("since", "required (an RFC 3339 time)"))
}

async fn recover(
    _: Admin,
    State(context): Ctx,
    PathId(id): PathId,
    mut params: Params,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let since = since(&mut params)?;
    params.finish()?;
    let requeued = manual::recover(&context.pool, id, since)
        .await?
        .ok_or(ApiError::NotFound("endpoint"))?;
    let body = serde_json::json!({ "endpoint_id": id, "since": since, "requeued": requeued });
    Ok((StatusCode::ACCEPTED, Json(body)))
}

/// `POST /v1/endpoints/{id}/replay` answer: what the replay did, its deliveries still to send.
#[derive(Debug, Serialize)]
struct ReplayResult {
    endpoint_id: Uuid,
    since: chrono::DateTime<Utc>,
    #[serde(flatten)]
    replayed: replay::Replayed,
}

async fn replay(
    _: Admin,
    State(context): Ctx,
    PathId(id): PathId,
    mut params: Params,
) -> Result<(StatusCode, Json<ReplayResult>), ApiError> {
    let since = since(&mut params)?;
    params.finish()?;
    let replayed = replay::replay(&context.pool, id, since)
        .await?
        .ok_or(ApiError::NotFound("endpoint"))?;
    let body = ReplayResult {
        endpoint_id: id,
        since,
        replayed,
    };
    Ok((StatusCode::ACCEPTED, Json(body)))
}

/// The windows `GET /v1/endpoints/{id}/stats?window=` takes, and their lengths.
const WINDOWS: [(&str, std::time::Duration); 4] = [
    ("5m", std::time::Duration::from_secs(300)),
    ("1h", std::time::Duration::from_secs(3600)),
    ("24h", std::time::Duration::from_secs(86_400)),
    ("7d", attempt_stats::LONGEST_WINDOW),
];

async fn stats(
    _: Admin,
    State(context): Ctx,
    PathId(id): PathId,
    mut params: Params,
) -> Result<Json<Stats>, ApiError> {
    let names: Vec<&str> = WINDOWS.iter().map(|(name, _)| *name).collect();
    let window = params
        .one_of("window", &names)?
        .unwrap_or_else(|| "24h".to_owned());
    params.finish()?;
    let length = WINDOWS
        .iter()
        .find(|(name, _)| *name == window)
        .map(|(_, length)| *length)
        .unwrap_or(attempt_stats::LONGEST_WINDOW);
    let endpoint = find(&context, id).await?;
    Ok(Json(
        store::stats(&context, &endpoint, window, length).await?,
    ))
}
