//! `ingest`: the inbound edge. It authenticates and validates each webhook, publishes it to
//! RabbitMQ as a persistent message, and answers 202 only after the broker's confirm. It never
//! touches Postgres, keeps no state of its own, and can run as many copies as needed.
//!
//! # Layout
//! - [`routes`]: the route table and the state handlers share.
//! - [`sources`]: one module per provider (authenticate, parse, dedup id) and [`sources::accept`].
//! - [`publisher`]: the shared confirm-mode channel and its reconnecting supervisor.
//! - [`rate_limit`]: a token bucket per credential (429 beyond it).
//! - [`request_id`]: the `X-Request-Id` taken or made, echoed, and in every log line.
//! - [`request_metrics`]: the handles of the metrics every request records, found once.
//! - [`server`]: the HTTP server: connections, and the drain on shutdown.
//! - [`head_timeout`]: a connection's request-head timeout, answered with 408.
//! - [`guards`]: bounds on concurrent requests and on their bodies' time and bytes (408, 503).
//! - [`error`]: every failure and its HTTP answer.
//! - [`openapi`]: the frame of the OpenAPI document the routes' operations make up.
//! - [`settings`]: configuration from the environment.

pub mod error;
pub mod guards;
pub mod head_timeout;
pub mod openapi;
pub mod publisher;
pub mod rate_limit;
pub mod request_id;
pub mod request_metrics;
pub mod routes;
pub mod server;
pub mod settings;
pub mod sources;

use std::future::Future;

use tokio::net::TcpListener;

use crate::publisher::Publisher;
use crate::routes::{AppState, router};
use crate::settings::IngestSettings;

/// Serves ingest on `listener` until `shutdown` resolves. Then `/readyz` answers 503 at once,
/// ingest keeps serving for `SHUTDOWN_GRACE_MS` (a load balancer notices and stops sending),
/// closes its listener, and returns once the requests in flight are answered, their confirms
/// included, or `SHUTDOWN_TIMEOUT_MS` later at most.
pub async fn run(
    settings: IngestSettings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The recorder first, so the help text and the first samples are kept.
    let _ = shared::telemetry::metrics();
    describe_metrics();
    zero_counters();
    let publisher = Publisher::start(settings.broker.clone());
    let state = AppState::new(&settings, publisher);
    let app = router(state.clone(), &settings);
    tracing::info!(addr = %listener.local_addr()?, "ingest listening");
    let grace = settings.shutdown_grace;
    let shutdown = async move {
        shutdown.await;
        state.mark_stopping();
        tracing::info!(
            ?grace,
            "stopping: /readyz answers 503; serving through the grace"
        );
        tokio::time::sleep(grace).await;
    };
    let timeouts = server::Timeouts {
        header: settings.header_timeout,
        drain: settings.shutdown_timeout,
    };
    server::serve(listener, app, timeouts, shutdown).await
}

/// Every counter ingest exports, at 0 for each of its label values, so that `rate()` and
/// `increase()` see the first count and alerts can read a failure that has not happened yet.
/// `ingest_requests_total{route,status}` is left out: its status codes are whatever is answered.
fn zero_counters() {
    use metrics::counter;
    for outcome in publisher::PublishOutcome::ALL {
        counter!("ingest_publish_total", "outcome" => outcome.name()).increment(0);
    }
    for reason in error::UnavailableReason::ALL {
        counter!("ingest_unavailable_total", "reason" => reason.name()).increment(0);
    }
    for kind in shared::EventKind::ALL {
        counter!("ingest_events_accepted_total", "kind" => kind.as_str()).increment(0);
    }
    for name in [
        "ingest_requests_shed_total",
        "ingest_rate_limited_total",
        "ingest_request_head_timeouts_total",
    ] {
        counter!(name).increment(0);
    }
}

/// Help text of every metric ingest exports (the recorder shows it once a metric is set).
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
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
        "Requests answered 503, by reason: busy (MAX_CONCURRENT_REQUESTS), body_budget \
         (MAX_BODY_BYTES_IN_FLIGHT), not_configured, not_connected, timeout, nack, returned, \
         error (the broker's)"
    );
    describe_gauge!(
        "ingest_body_bytes_in_flight",
        Unit::Bytes,
        "Request body bytes held now, within MAX_BODY_BYTES_IN_FLIGHT"
    );
    describe_counter!(
        "ingest_request_head_timeouts_total",
        "Connections answered 408 because part of a request head came but not all of it \
         within REQUEST_HEADER_TIMEOUT_MS"
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
