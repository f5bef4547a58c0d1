//! Postgres: creating the database if it is missing, the connection pool, and migrations.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

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
