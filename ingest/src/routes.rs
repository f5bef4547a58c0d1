//! The route table of ingest, in one place, and the state every handler shares.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use shared::http::{INGEST_OPENAPI, error_response, healthz, metrics, openapi_response};
use tracing::Instrument;

use crate::guards::{self, BodyBudget, Guards, RequestLimit};
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
    let providers = Router::new()
        .merge(sources::omi::routes())
        .merge(sources::asleep::routes())
        .merge(sources::reflector::routes())
        .layer(middleware::from_fn_with_state(
            Guards {
                limit: RequestLimit::new(settings.max_concurrent_requests),
                body_timeout: settings.body_timeout,
                budget: Arc::new(BodyBudget::new(settings.max_body_bytes_in_flight)),
                largest_body: settings.largest_body_limit(),
            },
            guards::guard,
        ));
    Router::new()
        .route("/ping", get(|| async { "pong" }))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|| async { openapi_response(INGEST_OPENAPI) }),
        )
        .merge(providers)
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(middleware::from_fn_with_state(
            Arc::new(RequestMetrics::default()),
            observe,
        ))
        .with_state(state)
}

/// `GET /readyz`: 200 only while the broker connection is up and shutdown has not begun.
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
