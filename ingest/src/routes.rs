//! The route table of ingest, in one place, and the state every handler shares. Each route is
//! registered with the OpenAPI operation its handler declares (`routes!`), so `GET
//! /openapi.json` ([`openapi`]) documents exactly what is served.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use shared::http::{ErrorBody, error_response};
use shared::openapi::Served;
use tracing::Instrument;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::guards::{self, BodyBudget, Guards, RequestLimit};
use crate::openapi;
use crate::publisher::Publisher;
use crate::rate_limit::RateLimiter;
use crate::request_id;
use crate::request_metrics::{AcceptedByKind, RequestMetrics};
use crate::settings::IngestSettings;
use crate::sources::{self, KeySet};

/// What every handler can reach; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<AppContext>);

pub struct AppContext {
    pub publisher: Publisher,
    pub omi_keys: KeySet,
    pub asleep_api_keys: KeySet,
    /// `REFLECTOR_SECRETS`, kept as given: the signature is an HMAC keyed with them.
    pub reflector_secrets: Vec<String>,
    pub rate_limiter: RateLimiter,
    pub json_body_limit: usize,
    pub audio_body_limit: usize,
    /// `LOG_EVENTS`: one log line per accepted event.
    pub log_events: bool,
    /// `ingest_events_accepted_total`, by kind.
    pub accepted: AcceptedByKind,
    /// Set when shutdown begins: `/readyz` answers 503 from then on.
    stopping: AtomicBool,
}

impl Deref for AppState {
    type Target = AppContext;
    fn deref(&self) -> &AppContext {
        &self.0
    }
}

impl AppState {
    pub fn new(settings: &IngestSettings, publisher: Publisher) -> Self {
        AppState(Arc::new(AppContext {
            publisher,
            omi_keys: KeySet::new("OMI_KEYS", &settings.omi_keys),
            asleep_api_keys: KeySet::new("ASLEEP_API_KEYS", &settings.asleep_api_keys),
            reflector_secrets: settings.reflector_secrets.clone(),
            rate_limiter: RateLimiter::new(settings.rate_limit_per_s, settings.rate_limit_burst),
            json_body_limit: settings.json_body_limit,
            audio_body_limit: settings.audio_body_limit,
            log_events: settings.logs.events,
            accepted: AcceptedByKind::new(),
            stopping: AtomicBool::new(false),
        }))
    }

    /// Shutdown has begun: `/readyz` answers 503 from now on.
    pub fn mark_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }
}

/// The route table. The provider routes are guarded against too many and too slow requests
/// ([`crate::guards`]); health, metrics and OpenAPI are not, so they answer under any load.
pub fn router(state: AppState, settings: &IngestSettings) -> Router {
    let (providers, _) = provider_routes()
        .layer(middleware::from_fn_with_state(
            Guards {
                limit: RequestLimit::new(settings.max_concurrent_requests),
                body_timeout: settings.body_timeout,
                budget: Arc::new(BodyBudget::new(settings.max_body_bytes_in_flight)),
                largest_body: settings.largest_body_limit(),
            },
            guards::guard,
        ))
        .split_for_parts();
    let (service, _) = service_routes().split_for_parts();
    service
        .merge(providers)
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(middleware::from_fn_with_state(
            Arc::new(RequestMetrics::default()),
            observe,
        ))
        .with_state(state)
}

/// Ingest's OpenAPI 3.1 document, generated from the route table.
pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi::finish(service_routes().merge(provider_routes()).into_openapi())
}

/// The provider routes, each with its operation.
fn provider_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(sources::omi::routes())
        .merge(sources::asleep::routes())
        .merge(sources::reflector::routes())
}

/// Health, metrics and this document, each with its operation.
fn service_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::Frame::openapi())
        .routes(routes!(ping))
        .routes(routes!(shared::http::healthz))
        .routes(routes!(readyz))
        .routes(routes!(shared::http::metrics))
        .routes(routes!(openapi_json))
}

static DOCUMENT: Served = Served::new(openapi);

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "Ingest's OpenAPI 3.1 document, generated from the \
        route table", body = serde_json::Value)))]
async fn openapi_json() -> Response {
    DOCUMENT.response()
}

/// `GET /ping`: anyone may ask.
#[utoipa::path(get, path = "/ping", tag = "operations",
    responses((status = 200, description = "`pong`", body = String, content_type = "text/plain",
        example = "pong")))]
async fn ping() -> &'static str {
    "pong"
}

/// `GET /readyz`: 200 only while the broker connection is up and shutdown has not begun.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "`ready`", body = String, content_type = "text/plain"),
        (status = 503, description = "Stopping, or not connected to the broker",
            body = ErrorBody)))]
async fn readyz(State(state): State<AppState>) -> Response {
    if state.is_stopping() {
        error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "shutting down: finishing the requests in flight",
        )
    } else if state.publisher.is_ready() {
        "ready".into_response()
    } else {
        error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "not connected to the broker",
        )
    }
}

/// Every request, in one layer: its id and span ([`request_id`]), echoed in the answer; then its
/// count and time by route and status ([`RequestMetrics`]).
async fn observe(
    State(metrics): State<Arc<RequestMetrics>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let id = request_id::assign(&mut request);
    let span = request_id::span(&id, request.method(), route);
    let mut response = next.run(request).instrument(span).await;
    metrics.record(route, response.status(), started.elapsed());
    response.headers_mut().insert(request_id::HEADER, id);
    response
}
