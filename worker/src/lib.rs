//! `worker`: consumes accepted events from RabbitMQ and makes them durable in Postgres, exactly
//! once, acknowledging each message only after its transaction commits. Any number of workers
//! can run side by side as competing consumers.
//!
//! # Layout
//! - [`consumer`]: the RabbitMQ consumer: prefetch, ack after commit, retry, reconnect.
//! - [`audio`]: audio levels and listening status.
//! - [`handlers`]: the per-kind handlers and the dedup claim they share.
//! - [`api`]: health, readiness, metrics and the management API.
//! - [`outbound`]: the outbox and outbound webhook delivery.
//! - [`dead_letters`]: poison messages: recording and redriving them.
//! - [`db`]: database creation, pool and migrations.
//! - [`sessions`]: completing transcript sessions, and their Reflector-shaped transcript.
//! - [`sweeper`]: periodic work: folding audio, stopping idle streams.
//! - [`settings`]: configuration from the environment.

pub mod api;
pub mod audio;
pub mod consumer;
pub mod db;
pub mod dead_letters;
pub mod handlers;
pub mod outbound;
pub mod sessions;
pub mod settings;
pub mod sweeper;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::settings::WorkerSettings;

/// What the consumer and the HTTP handlers share.
pub struct WorkerContext {
    pub settings: WorkerSettings,
    pub pool: PgPool,
    /// True while the consumer holds a live broker connection (for `/readyz`).
    pub broker_connected: AtomicBool,
    /// A confirm-mode channel on the consumer's connection, for redriving dead letters.
    pub publish_channel: std::sync::RwLock<Option<lapin::Channel>>,
    /// The outbound delivery side: HTTP client, schedule, per-endpoint isolation.
    pub outbound: outbound::Outbound,
}

impl WorkerContext {
    pub fn publish_channel(&self) -> Option<lapin::Channel> {
        self.publish_channel.read().expect("channel lock").clone()
    }
}

/// Migrates, then consumes and serves HTTP on `listener` until `shutdown` resolves; in-flight
/// events finish (and are acknowledged) before it returns.
pub async fn run(
    settings: WorkerSettings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    db::migrate(&settings.database_url).await?;
    let pool = db::pool(&settings.database_url, settings.database_max_connections)?;
    let context = Arc::new(WorkerContext {
        outbound: outbound::Outbound::new(&settings.delivery)?,
        settings,
        pool,
        broker_connected: AtomicBool::new(false),
        publish_channel: std::sync::RwLock::new(None),
    });
    let (stop, stopping) = watch::channel(false);
    let consumer = tokio::spawn(consumer::run(context.clone(), stopping.clone()));
    let sweeper = tokio::spawn(sweeper::run(context.clone(), stopping.clone()));
    let deliveries = tokio::spawn(outbound::run(context.clone(), stopping.clone()));
    tracing::info!(addr = %listener.local_addr()?, "worker listening");
    let mut http_stopping = stopping;
    let server =
        axum::serve(listener, api::router(context.clone())).with_graceful_shutdown(async move {
            let _ = http_stopping.wait_for(|stop| *stop).await;
        });
    let server = tokio::spawn(server.into_future());
    shutdown.await;
    stop.send_replace(true);
    let _ = consumer.await;
    let _ = sweeper.await;
    let _ = deliveries.await;
    let _ = server.await;
    context.pool.close().await;
    Ok(())
}
