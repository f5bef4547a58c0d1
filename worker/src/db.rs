//! Postgres: creating the database if it is missing, the connection pool, migrations (waiting
//! for Postgres to come up), and which errors pass by themselves.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use tokio::sync::watch;

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Creates the database named in `url` when it does not exist yet. Safe when several workers
/// start at once: losing the race to create it is fine.
pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(url)?;
    let name = options
        .get_database()
        .ok_or_else(|| anyhow::anyhow!("DATABASE_URL names no database"))?
        .to_owned();
    let mut admin = options.database("postgres").connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let create = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&create).execute(&mut admin).await {
            Ok(_) => tracing::info!(database = %name, "created the database"),
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P04") => {}
            Err(error) => return Err(error.into()),
        }
    }
    admin.close().await?;
    Ok(())
}

/// A pool that connects lazily, so the worker starts (and reconnects) while Postgres is down.
pub fn pool(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(url)?;
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        // No ping before each checkout: it was one more round trip per event. A connection
        // that broke is found by the statement that uses it, and the consumer retries that
        // event in place as a transient failure.
        .test_before_acquire(false)
        .connect_lazy_with(options))
}

/// Creates the database if needed and applies pending migrations (`worker migrate`).
pub async fn migrate(url: &str) -> anyhow::Result<()> {
    ensure_database(url).await?;
    let pool = pool(url, 2)?;
    MIGRATOR.run(&pool).await?;
    pool.close().await;
    Ok(())
}

/// Like [`migrate`], but while Postgres is unreachable it logs and retries with backoff until
/// Postgres answers (`Ok(true)`) or `stopping` turns true first (`Ok(false)`). Any other
/// failure (a bad URL, a migration that fails) is returned.
pub async fn migrate_when_reachable(
    url: &str,
    mut stopping: watch::Receiver<bool>,
) -> anyhow::Result<bool> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match migrate(url).await {
            Ok(()) => return Ok(true),
            Err(error) if unreachable(&error) => {
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "Postgres is unreachable; waiting for it");
            }
            Err(error) => return Err(error),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopping.wait_for(|stop| *stop) => return Ok(false),
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// True when `error` (from [`migrate`]) says Postgres could not be reached or is starting up.
fn unreachable(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        let database = cause.downcast_ref::<sqlx::Error>().or_else(|| {
            match cause.downcast_ref::<sqlx::migrate::MigrateError>() {
                Some(sqlx::migrate::MigrateError::Execute(error)) => Some(error),
                _ => None,
            }
        });
        database.is_some_and(is_transient) || cause.is::<std::io::Error>()
    })
}

/// True for failures that pass by themselves: Postgres unreachable, restarting or shutting
/// down, and serialization failures or deadlocks worth a retry.
pub fn is_transient(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed
    ) || is_transient_code(error)
}

/// Serialization failures, deadlocks, "the server is shutting down or starting up" and "too
/// many connections".
fn is_transient_code(error: &sqlx::Error) -> bool {
    let Some(code) = error.as_database_error().and_then(|e| e.code()) else {
        return false;
    };
    matches!(
        &*code,
        "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300"
    )
}
