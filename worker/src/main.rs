use shared::config::Env;
use shared::http::shutdown_signal;
use worker::settings::WorkerSettings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = WorkerSettings::from_env(&Env::process())?;
    shared::telemetry::init_tracing(&settings.logs);
    let _ = shared::telemetry::metrics();
    match std::env::args().nth(1).as_deref() {
        Some("migrate") => {
            worker::db::migrate(&settings.database_url).await?;
            tracing::info!("migrations applied");
        }
        None | Some("run") => {
            let listener = tokio::net::TcpListener::bind(settings.addr).await?;
            worker::run(settings, listener, shutdown_signal()).await?;
            tracing::info!("worker stopped");
        }
        Some(other) => anyhow::bail!("unknown command {other:?}; expected `migrate` or nothing"),
    }
    Ok(())
}
