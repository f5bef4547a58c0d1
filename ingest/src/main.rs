use shared::config::Env;
use shared::http::shutdown_signal;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = ingest::settings::IngestSettings::from_env(&Env::process())?;
    shared::telemetry::init_tracing(&settings.logs);
    let _ = shared::telemetry::metrics();
    let listener = shared::http::listen(settings.addr, settings.reuse_port)?;
    ingest::run(settings, listener, shutdown_signal()).await?;
    tracing::info!("ingest stopped");
    Ok(())
}
