//! Postgres: how to connect (TLS included), creating the database if it is missing, the
//! connection pool, migrations (waiting for Postgres to come up), which errors pass by
//! themselves, and waiting for a `NOTIFY`.

use std::str::FromStr;
use std::time::Duration;

use shared::config::CaFile;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use tokio::sync::watch;

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// "database does not exist" (`invalid_catalog_name`).
const DATABASE_DOES_NOT_EXIST: &str = "3D000";

/// The migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// How to reach Postgres: `DATABASE_URL` (with its `sslmode` and `sslrootcert`), trusting
/// `DATABASE_CA_FILE`'s certificates instead of `sslrootcert` when that is set.
pub fn connect_options(url: &str, ca_file: Option<&CaFile>) -> anyhow::Result<PgConnectOptions> {
    let options = PgConnectOptions::from_str(url)?;
    Ok(match ca_file {
        Some(ca_file) => options.ssl_root_cert_from_pem(ca_file.pem().as_bytes().to_vec()),
        None => options,
    })
}

/// Makes sure the database named in `options` exists: connects to it, and only when Postgres
/// answers that it does not exist, connects to the `postgres` maintenance database to create
/// it (so a managed Postgres whose role may not reach `postgres` works as long as the database
/// is there). Safe when several workers start at once: losing the race to create it is fine.
pub async fn ensure_database(options: &PgConnectOptions) -> anyhow::Result<()> {
    match options.connect().await {
        Ok(connection) => Ok(connection.close().await?),
        Err(error) if is_code(&error, DATABASE_DOES_NOT_EXIST) => create_database(options).await,
        Err(error) => Err(error.into()),
    }
}

async fn create_database(options: &PgConnectOptions) -> anyhow::Result<()> {
    let name = options
        .get_database()
        .ok_or_else(|| anyhow::anyhow!("DATABASE_URL names no database"))?
        .to_owned();
    let mut admin = options.clone().database("postgres").connect().await?;
    let create = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    match sqlx::query(&create).execute(&mut admin).await {
        Ok(_) => tracing::info!(database = %name, "created the database"),
        Err(error) if is_code(&error, "42P04") => {}
        Err(error) => return Err(error.into()),
    }
    admin.close().await?;
    Ok(())
}

fn is_code(error: &sqlx::Error, code: &str) -> bool {
    error
        .as_database_error()
        .and_then(|error| error.code())
        .is_some_and(|found| found == code)
}

/// A pool that connects lazily, so the worker starts (and reconnects) while Postgres is down.
pub fn pool(options: PgConnectOptions, max_connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        // No ping before each checkout: it was one more round trip per event. A connection
        // that broke is found by the statement that uses it, and the consumer retries that
        // event in place as a transient failure.
        .test_before_acquire(false)
        .connect_lazy_with(options)
}

/// Creates the database if needed and applies pending migrations, once.
pub async fn migrate(url: &str) -> anyhow::Result<()> {
    migrate_with(&connect_options(url, None)?).await
}

/// [`migrate`] with connect options (TLS roots included).
pub async fn migrate_with(options: &PgConnectOptions) -> anyhow::Result<()> {
    ensure_database(options).await?;
    let pool = pool(options.clone(), 2);
    MIGRATOR.run(&pool).await?;
    pool.close().await;
    Ok(())
}

/// Like [`migrate_with`], but while Postgres is unreachable it logs and retries with backoff until
/// Postgres answers (`Ok(true)`) or `stopping` turns true first (`Ok(false)`). Any other
/// failure (a bad URL, a migration that fails) is returned.
pub async fn migrate_when_reachable(
    options: &PgConnectOptions,
    mut stopping: watch::Receiver<bool>,
) -> anyhow::Result<bool> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match migrate_with(options).await {
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

/// Resolves on a notification on one of `channels`; (re)connects `listener` on its own
/// connection when it is missing (and then resolves at once, since what was notified before it
/// listened is lost), and drops it when it breaks. While it cannot listen it never resolves, so
/// the caller's own timer (its poll interval) takes over.
pub async fn notified(pool: &PgPool, listener: &mut Option<PgListener>, channels: &[&str]) {
    if listener.is_none() {
        match listen(pool, channels).await {
            Ok(connected) => {
                *listener = Some(connected);
                return;
            }
            Err(error) => {
                tracing::debug!(%error, ?channels, "LISTEN unavailable; polling");
                return std::future::pending().await;
            }
        }
    }
    let Some(connected) = listener.as_mut() else {
        return;
    };
    if let Err(error) = connected.recv().await {
        tracing::debug!(%error, ?channels, "LISTEN connection lost");
        *listener = None;
        std::future::pending::<()>().await;
    }
}

async fn listen(pool: &PgPool, channels: &[&str]) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all(channels.iter().copied()).await?;
    Ok(listener)
}
