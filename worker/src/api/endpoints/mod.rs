//! `/v1/endpoints`: where outbound webhooks go. Create, list, read, change and delete
//! endpoints (optionally limited to some users' events, `uids`); send a test event; rotate the
//! secret (the old one keeps signing for 24 hours); requeue failed deliveries; replay every
//! event since a time; and per-endpoint statistics over a time window. Re-enabling a disabled
//! endpoint resumes its paused deliveries. A secret is shown in full
//! only in the answers to create and rotate, custom header values only in the answer to
//! create. A change writes only the columns it changes, and a rotation only the secrets, so
//! concurrent admins never undo each other's work.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use shared::http::ErrorBody;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

mod store;

use super::input::{JsonBody, Params, PathId};
use super::list::PageParams;
use super::{Admin, ApiError, Page};
use crate::WorkerContext;
use crate::outbound::attempt_stats;
use crate::outbound::endpoint::{self as rules, EndpointError};
use crate::outbound::{manual, replay};
use store::{Endpoint, Stats, find};

type Ctx = State<Arc<WorkerContext>>;

/// How long a rotated-out secret keeps signing.
const ROTATION_OVERLAP: chrono::TimeDelta = chrono::TimeDelta::hours(24);

pub fn routes() -> OpenApiRouter<Arc<WorkerContext>> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(read, update, remove))
        .routes(routes!(test))
        .routes(routes!(rotate))
        .routes(routes!(recover))
        .routes(routes!(replay))
        .routes(routes!(stats))
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
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://hooks.example.com/omi",
    "event_types": ["transcript.segment", "audio.level"], "uids": ["u1"]}))]
struct NewEndpoint {
    /// Where deliveries are POSTed (http or https).
    url: String,
    /// Event types and prefixes (`sleep.*`), or `*` for all.
    event_types: Vec<String>,
    /// `whsec_` + base64 of at least 24 bytes; generated when absent.
    secret: Option<String>,
    /// Custom headers sent with every delivery, name to value.
    #[schema(value_type = Option<std::collections::HashMap<String, String>>)]
    headers: Option<serde_json::Value>,
    /// Per-attempt timeout; 15000 when absent.
    timeout_ms: Option<i32>,
    /// At most this many attempts a second; none when absent.
    rate_limit_per_s: Option<i32>,
    /// True when absent.
    enabled: Option<bool>,
    /// Deliver only these users' events; absent or empty: every user's.
    uids: Option<Vec<String>>,
}

/// `PATCH /v1/endpoints/{id}` body: only the fields given change; `rate_limit_per_s: null`
/// removes the limit, `uids: []` the uid filter.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"enabled": true, "rate_limit_per_s": null}))]
struct EndpointPatch {
    url: Option<String>,
    event_types: Option<Vec<String>>,
    #[schema(value_type = Option<std::collections::HashMap<String, String>>)]
    headers: Option<serde_json::Value>,
    timeout_ms: Option<i32>,
    /// `null` removes the limit.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i32>)]
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

/// Create an endpoint.
///
/// Its secret is generated when absent. The answer is the only one that shows the secret and
/// the custom header values in full.
#[utoipa::path(post, path = "/v1/endpoints", tag = "endpoints", request_body = NewEndpoint,
    responses(
        (status = 201, description = "Created", body = Endpoint),
        (status = 400, description = "A field is invalid (named in `field`)", body = ErrorBody),
        (status = 415, description = "The body is not sent as JSON", body = ErrorBody)))]
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

/// List endpoints, newest first.
///
/// Secrets and custom header values are masked.
#[utoipa::path(get, path = "/v1/endpoints", tag = "endpoints", params(PageParams),
    responses(
        (status = 200, description = "A page of endpoints", body = Page<Endpoint>),
        (status = 400, description = "A bad `limit` or `cursor`, or an unknown parameter",
            body = ErrorBody)))]
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

/// One endpoint, its secret and custom header values masked.
#[utoipa::path(get, path = "/v1/endpoints/{id}", tag = "endpoints", params(EndpointId),
    responses(
        (status = 200, description = "The endpoint", body = Endpoint),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such endpoint", body = ErrorBody)))]
async fn read(
    _: Admin,
    State(context): Ctx,
    PathId(id): PathId,
) -> Result<Json<Endpoint>, ApiError> {
    Ok(Json(find(&context, id).await?.masked()))
}

/// Change an endpoint: only the fields given change.
///
/// Enabling a disabled endpoint resumes its paused deliveries.
#[utoipa::path(patch, path = "/v1/endpoints/{id}", tag = "endpoints", params(EndpointId),
    request_body = EndpointPatch,
    responses(
        (status = 200, description = "The endpoint as changed, masked", body = Endpoint),
        (status = 400, description = "A field is invalid (named in `field`)", body = ErrorBody),
        (status = 404, description = "No such endpoint", body = ErrorBody),
        (status = 415, description = "The body is not sent as JSON", body = ErrorBody)))]
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

/// Delete an endpoint and its deliveries.
#[utoipa::path(delete, path = "/v1/endpoints/{id}", tag = "endpoints", params(EndpointId),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such endpoint", body = ErrorBody)))]
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

/// Rotate the secret: a new one signs from now on, the old one beside it for 24 hours.
#[utoipa::path(post, path = "/v1/endpoints/{id}/rotate-secret", tag = "endpoints",
    params(EndpointId),
    responses(
        (status = 200, description = "The endpoint with its new secret in full", body = Endpoint),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such endpoint", body = ErrorBody)))]
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
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct TestResult {
    delivery_id: Uuid,
    /// The receiver answered 2xx.
    succeeded: bool,
    /// Null when no answer came (a timeout, a refused connection).
    status_code: Option<u16>,
    #[schema(value_type = u64)]
    latency_ms: u128,
    response_excerpt: Option<String>,
    error: Option<String>,
}

/// The `{id}` of an endpoint's routes.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct EndpointId {
    /// The endpoint's id.
    id: Uuid,
}

/// The `since` of recover and replay.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct Since {
    /// An RFC 3339 time (send `Z`, or the `+` of an offset as `%2B`).
    since: chrono::DateTime<Utc>,
}

/// Send a `test` event to the endpoint now, and answer with what its receiver said.
#[utoipa::path(post, path = "/v1/endpoints/{id}/test", tag = "endpoints", params(EndpointId),
    responses(
        (status = 200, description = "The attempt, whatever the receiver answered",
            body = TestResult),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such endpoint", body = ErrorBody)))]
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

/// `POST /v1/endpoints/{id}/recover` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Recovered {
    endpoint_id: Uuid,
    since: chrono::DateTime<Utc>,
    /// Failed deliveries made pending again.
    requeued: u64,
}

/// Redeliver every failed delivery of the endpoint since a time.
#[utoipa::path(post, path = "/v1/endpoints/{id}/recover", tag = "endpoints",
    params(EndpointId, Since),
    responses(
        (status = 202, description = "Requeued; they are sent on the schedule", body = Recovered),
        (status = 400, description = "A bad id or `since`", body = ErrorBody),
        (status = 404, description = "No such endpoint", body = ErrorBody)))]
async fn recover(
    _: Admin,
    State(context): Ctx,
    PathId(id): PathId,
    mut params: Params,
) -> Result<(StatusCode, Json<Recovered>), ApiError> {
    let since = since(&mut params)?;
    params.finish()?;
    let requeued = manual::recover(&context.pool, id, since)
        .await?
        .ok_or(ApiError::NotFound("endpoint"))?;
    let body = Recovered {
        endpoint_id: id,
        since,
        requeued,
    };
    Ok((StatusCode::ACCEPTED, Json(body)))
}

/// `POST /v1/endpoints/{id}/replay` answer: what the replay did, its deliveries still to send.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ReplayResult {
    endpoint_id: Uuid,
    since: chrono::DateTime<Utc>,
    #[serde(flatten)]
    replayed: replay::Replayed,
}

/// Give the endpoint a delivery of every event of its types and uids since a time, including
/// ones it never had; a second call creates nothing twice.
#[utoipa::path(post, path = "/v1/endpoints/{id}/replay", tag = "endpoints",
    params(EndpointId, Since),
    responses(
        (status = 202, description = "Replayed; the deliveries are sent on the schedule",
            body = ReplayResult),
        (status = 400, description = "A bad id or `since`", body = ErrorBody),
        (status = 404, description = "No such endpoint", body = ErrorBody)))]
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

/// The endpoint's deliveries by status, and its attempts over a window.
#[utoipa::path(get, path = "/v1/endpoints/{id}/stats", tag = "endpoints",
    params(EndpointId, ("window" = Option<String>, Query,
        description = "`5m`, `1h`, `24h` (the default) or `7d`")),
    responses(
        (status = 200, description = "The statistics", body = Stats),
        (status = 400, description = "A bad id or `window`", body = ErrorBody),
        (status = 404, description = "No such endpoint", body = ErrorBody)))]
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
