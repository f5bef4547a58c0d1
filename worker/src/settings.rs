//! The worker's settings, read once from the environment at start.

use std::net::SocketAddr;
use std::time::Duration;

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
    pub audio: AudioSettings,
    /// `SESSION_IDLE_MS` (default 120000): quiet after which a transcript session completes.
    pub session_idle: Duration,
}

/// How audio is measured and reported.
#[derive(Clone, Debug)]
pub struct AudioSettings {
    /// `AUDIO_WINDOW_MS` (default 100): length of one level window.
    pub window_ms: u32,
    /// `LISTENING_IDLE_MS` (default 10000): silence after which a uid stops listening.
    pub listening_idle: Duration,
    /// `AUDIO_LEVEL_INTERVAL_MS` (default 1000, at least 100): the least time between two
    /// `audio.level` events of one uid.
    pub level_interval: Duration,
    /// `AUDIO_REORDER_MS` (default 300): a chunk is folded into its stream only this long after
    /// ingest accepted it, so chunks handled concurrently are folded in ingest's order.
    pub reorder_delay: Duration,
    /// `SWEEP_INTERVAL_MS` (default 200): how often a worker folds audio and looks for idle
    /// streams and sessions.
    pub sweep_interval: Duration,
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
            session_idle: env.millis("SESSION_IDLE_MS", 120_000)?,
            audio: AudioSettings {
                window_ms: env.parse("AUDIO_WINDOW_MS", 100)?,
                listening_idle: env.millis("LISTENING_IDLE_MS", 10_000)?,
                level_interval: env
                    .millis("AUDIO_LEVEL_INTERVAL_MS", 1_000)?
                    .max(Duration::from_millis(100)),
                reorder_delay: env.millis("AUDIO_REORDER_MS", 300)?,
                sweep_interval: env.millis("SWEEP_INTERVAL_MS", 200)?,
            },
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
