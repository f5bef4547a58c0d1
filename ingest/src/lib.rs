//! `ingest`: the inbound edge. It authenticates and validates each webhook, publishes it to
//! RabbitMQ as a persistent message, and answers 202 only after the broker's confirm. It never
//! touches Postgres, keeps no state of its own, and can run as many copies as needed.
//!
//! # Layout
//! - [`routes`]: the route table and the state handlers share.
//! - [`sources`]: one module per provider (authenticate, parse, dedup id) and [`sources::accept`].
//! - [`publisher`]: the shared confirm-mode channel and its reconnecting supervisor.
//! - [`rate_limit`]: a token bucket per credential (429 beyond it).
//! - [`server`]: the HTTP server and its bounds on slow and concurrent clients (408, 503).
//! - [`error`]: every failure and its HTTP answer.
//! - [`settings`]: configuration from the environment.

pub mod error;
pub mod publisher;
pub mod rate_limit;
pub mod routes;
pub mod server;
pub mod settings;
pub mod sources;

use std::future::Future;

use tokio::net::TcpListener;

use crate::publisher::Publisher;
use crate::routes::{AppState, router};
use crate::settings::IngestSettings;

/// Serves ingest on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn run(
    settings: IngestSettings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The recorder first, so the help text and the first samples are kept.
    let _ = shared::telemetry::metrics();
    describe_metrics();
    let publisher = Publisher::start(settings.broker.clone());
    let app = router(AppState::new(&settings, publisher), &settings);
    tracing::info!(addr = %listener.local_addr()?, "ingest listening");
    server::serve(listener, app, settings.header_timeout, shutdown).await
}

/// Help text of every metric ingest exports (the recorder shows it once a metric is set).
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_histogram};
    publisher::describe_metrics();
    describe_counter!(
        "ingest_requests_total",
        "HTTP requests answered, by matched route and status code"
    );
    describe_histogram!(
        "ingest_request_duration_seconds",
        Unit::Seconds,
        "Seconds from a request's arrival to its answer, by matched route"
    );
    describe_counter!(
        "ingest_events_accepted_total",
        "Events confirmed by the broker and answered 202, by kind"
    );
    describe_counter!(
        "ingest_unavailable_total",
        "Requests answered 503, by reason: busy (MAX_CONCURRENT_REQUESTS), not_configured, \
         not_connected, timeout, nack, returned, error (the broker's)"
    );
    describe_counter!(
        "ingest_requests_shed_total",
        "Requests answered 503 at once because MAX_CONCURRENT_REQUESTS were in progress"
    );
    describe_counter!(
        "ingest_rate_limited_total",
        "Requests answered 429 because their credential's token bucket was empty"
    );
}
