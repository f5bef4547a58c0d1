//! The worker's settings, read once from the environment at start.

use std::net::SocketAddr;

use shared::config::{BrokerSettings, ConfigError, Env, LogSettings};

#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// `WORKER_ADDR` (default `0.0.0.0:8081`): management API, `/metrics`, health.
    pub addr: SocketAddr,
    /// `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/webhooks`); created if missing.
    pub database_url: String,
    /// `DATABASE_MAX_CONNECTIONS` (default 16).
    pub database_max_connections: u32,
    pub broker: BrokerSettings,
    pub logs: LogSettings,
    /// `WORKER_PREFETCH` (default 64): unacknowledged messages one worker holds, and processes
    /// concurrently.
    pub prefetch: u16,
    /// `ADMIN_TOKEN`: bearer token of the management API.
    pub admin_token: Option<String>,
}

impl WorkerSettings {
    pub const DEFAULT_DATABASE_URL: &'static str = "postgres://postgres@127.0.0.1:5432/webhooks";

    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        Ok(WorkerSettings {
            addr: env.addr("WORKER_ADDR", "0.0.0.0:8081")?,
            database_url: env.string("DATABASE_URL", Self::DEFAULT_DATABASE_URL),
            database_max_connections: env.parse("DATABASE_MAX_CONNECTIONS", 16)?,
            broker: BrokerSettings::from_env(env)?,
            logs: LogSettings::from_env(env)?,
            prefetch: env.parse("WORKER_PREFETCH", 64)?,
            admin_token: env.optional("ADMIN_TOKEN"),
        })
    }

    /// The defaults, with the given broker and database: for tests, benchmarks and local runs.
    pub fn local(broker: BrokerSettings, database_url: &str) -> Self {
        let mut settings = Self::from_env(&Env::new(|_| None)).expect("defaults are valid");
        settings.broker = broker;
        settings.database_url = database_url.to_owned();
        settings
    }
}
