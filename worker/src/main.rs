//! The `worker` binary: `worker` (or `worker run`) runs the worker; `worker migrate` creates
//! the database if it is missing, applies the migrations and exits (what a migration Job runs).
//! Both wait for Postgres with backoff while it is unreachable. `worker admin ...` is the
//! operator's client of a running worker's management API ([`worker::cli`]).

use shared::config::Env;
use shared::http::shutdown_signal;
use tokio::sync::watch;
use worker::settings::WorkerSettings;

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    if std::env::args().nth(1).as_deref() == Some("admin") {
        return Ok(worker::cli::run(std::env::args().skip(2)).await);
    }
    let settings = WorkerSettings::from_env(&Env::process())?;
    shared::telemetry::init_tracing(&settings.logs);
    let _ = shared::telemetry::metrics();
    match std::env::args().nth(1).as_deref() {
        Some("migrate") => migrate(&settings).await?,
        None | Some("run") => {
            let listener = tokio::net::TcpListener::bind(settings.addr).await?;
            worker::run(settings, listener, shutdown_signal()).await?;
            tracing::info!("worker stopped");
        }
        Some(other) => {
            anyhow::bail!("unknown command {other:?}; expected `migrate`, `admin` or nothing")
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// `worker migrate`: waits for Postgres (until SIGTERM or Ctrl-C), migrates, and exits.
async fn migrate(settings: &WorkerSettings) -> anyhow::Result<()> {
    let database =
        worker::db::connect_options(&settings.database_url, settings.database_ca_file.as_ref())?;
    let (stop, stopping) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.send_replace(true);
    });
    if !worker::db::migrate_when_reachable(&database, stopping).await? {
        anyhow::bail!("stopped before Postgres answered; nothing was migrated");
    }
    tracing::info!("migrations applied");
    Ok(())
}
