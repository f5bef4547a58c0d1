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
    let publisher = Publisher::start(settings.broker.clone());
    let app = router(AppState::new(&settings, publisher), &settings);
    tracing::info!(addr = %listener.local_addr()?, "ingest listening");
    server::serve(listener, app, settings.header_timeout, shutdown).await
}
