//! Starting what a benchmark (or a chaos run) drives, each on its own queue prefix and database so runs never
//! see each other's messages or rows, and removing both afterwards.

use std::net::SocketAddr;
use std::path::PathBuf;

use lapin::options::{QueueDeclareOptions, QueuePurgeOptions};
use lapin::types::FieldTable;
use shared::broker::{self, Topology};
use shared::config::BrokerSettings;
use sqlx::Connection;

use crate::process::{Service, binary, free_addr};

pub const OMI_KEY: &str = "bench-omi-key";
pub const ADMIN_TOKEN: &str = "bench-admin-token";
/// The longest one broker operation of [`Stack`] (connect, the work, close) may take.
const BROKER_STEP: std::time::Duration = std::time::Duration::from_secs(15);
/// How many times [`Stack`] makes a broker operation that hung.
const BROKER_ATTEMPTS: u32 = 3;

/// What every benchmark needs: where the binaries and logs are, and how long to measure.
pub struct Stack {
    pub logs: PathBuf,
    pub amqp_url: String,
    pub postgres_url: String,
}

/// A queue prefix (and database name) of one run.
pub struct Isolation {
    pub prefix: String,
}

impl Isolation {
    pub fn new(what: &str) -> Self {
        Isolation {
            prefix: shared::testkit::unique_name(&format!("bench_{what}")),
        }
    }

    pub fn broker(&self, url: &str) -> BrokerSettings {
        let mut settings = BrokerSettings::from_env(&shared::config::Env::new(|_| None))
            .expect("the defaults are valid");
        settings.url = url.to_string();
        settings.prefix = self.prefix.clone();
        settings
    }
}

/// Which server a load is aimed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    HttpFloor,
    IngestFloor,
    Ingest,
}

impl Server {
    pub const ALL: [Server; 3] = [Server::HttpFloor, Server::IngestFloor, Server::Ingest];

    pub fn label(self) -> &'static str {
        match self {
            Server::HttpFloor => "HTTP floor (bare axum, 202)",
            Server::IngestFloor => "ingest floor (publish + confirm, 202)",
            Server::Ingest => "ingest",
        }
    }
}

impl Stack {
    pub fn from_env() -> Self {
        Stack {
            logs: PathBuf::from(
                std::env::var("BENCH_LOGS").unwrap_or_else(|_| "target/bench-logs".into()),
            ),
            amqp_url: BrokerSettings::DEFAULT_URL.to_string(),
            postgres_url: shared::testkit::postgres_server_url(),
        }
    }

    /// Starts `server` publishing (if it does) under `isolation`'s prefix.
    pub async fn start(&self, server: Server, isolation: &Isolation) -> anyhow::Result<Service> {
        let addr = free_addr()?;
        let broker = [
            ("AMQP_URL", self.amqp_url.clone()),
            ("QUEUE_PREFIX", isolation.prefix.clone()),
        ];
        match server {
            Server::HttpFloor | Server::IngestFloor => {
                let kind = if server == Server::HttpFloor {
                    "http"
                } else {
                    "publish"
                };
                let addr_arg = addr.to_string();
                let bench = std::env::current_exe()?;
                let args = ["floor", kind, addr_arg.as_str()];
                Service::start(kind, &bench, &args, &broker, addr, "/healthz", &self.logs).await
            }
            Server::Ingest => self.start_ingest_at(isolation, addr, &[]).await,
        }
    }

    /// Starts ingest on `addr` under `isolation`'s prefix with the Omi key, then `extra`
    /// (which overrides).
    pub async fn start_ingest_at(
        &self,
        isolation: &Isolation,
        addr: SocketAddr,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Service> {
        let env = [
            ("AMQP_URL", self.amqp_url.clone()),
            ("QUEUE_PREFIX", isolation.prefix.clone()),
            ("INGEST_ADDR", addr.to_string()),
            ("OMI_KEYS", OMI_KEY.to_string()),
            // A benchmark's stop needs no grace for a load balancer to notice.
            ("SHUTDOWN_GRACE_MS", "0".to_string()),
        ];
        self.start_binary("ingest", addr, &env, extra).await
    }

    /// Starts the workspace binary `name` on `addr` with `env`, then `extra` (which overrides),
    /// and waits until it is ready.
    async fn start_binary(
        &self,
        name: &str,
        addr: SocketAddr,
        env: &[(&str, String)],
        extra: &[(&str, String)],
    ) -> anyhow::Result<Service> {
        let env = [env, extra].concat();
        let program = binary(name)?;
        Service::start(name, &program, &[], &env, addr, "/readyz", &self.logs).await
    }

    /// Starts a worker on `isolation`'s prefix and a database of the same name.
    pub async fn start_worker(&self, isolation: &Isolation) -> anyhow::Result<Service> {
        self.start_worker_at(isolation, free_addr()?, &[]).await
    }

    /// Starts a worker on `addr`, like [`Self::start_worker`], with `extra` (which overrides).
    pub async fn start_worker_at(
        &self,
        isolation: &Isolation,
        addr: SocketAddr,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Service> {
        let env = [
            ("AMQP_URL", self.amqp_url.clone()),
            ("QUEUE_PREFIX", isolation.prefix.clone()),
            ("DATABASE_URL", self.database_url(isolation)),
            ("WORKER_ADDR", addr.to_string()),
            ("ADMIN_TOKEN", ADMIN_TOKEN.to_string()),
            ("ALLOWED_TARGET_CIDRS", "127.0.0.0/8".to_string()),
        ];
        self.start_binary("worker", addr, &env, extra).await
    }

    /// The run's database, without TLS: every process here reaches PostgreSQL over loopback,
    /// where TLS (which `sslmode=prefer` picks when the server offers it) costs both ends CPU
    /// per byte for nothing, and the storage floor, which sends next to no bytes, would not pay
    /// it. The worker alone is also measured with TLS ([`crate::end_to_end`]).
    pub fn database_url(&self, isolation: &Isolation) -> String {
        self.database_url_with(isolation, "disable")
    }

    /// The run's database with libpq's `sslmode` set to `sslmode`.
    pub fn database_url_with(&self, isolation: &Isolation, sslmode: &str) -> String {
        format!(
            "{}/{}?sslmode={sslmode}",
            self.postgres_url, isolation.prefix
        )
    }

    pub async fn database(&self, isolation: &Isolation) -> anyhow::Result<sqlx::PgPool> {
        Ok(sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.database_url(isolation))
            .await?)
    }

    /// Messages waiting in the run's events queue.
    pub async fn queue_depth(&self, isolation: &Isolation) -> anyhow::Result<u32> {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        self.on_channel(isolation, |channel, topology| async move {
            let queue = channel
                .queue_declare(
                    topology.events_queue.as_str().into(),
                    passive,
                    FieldTable::default(),
                )
                .await?;
            Ok(queue.message_count())
        })
        .await
    }

    /// Drops every message waiting in the run's events queue.
    pub async fn purge(&self, isolation: &Isolation) -> anyhow::Result<()> {
        self.on_channel(isolation, |channel, topology| async move {
            let queue = topology.events_queue.as_str().into();
            channel
                .queue_purge(queue, QueuePurgeOptions::default())
                .await?;
            Ok(())
        })
        .await
    }

    /// Runs `work` on a channel of a connection of its own, with the run's topology.
    ///
    /// Each attempt is bounded by [`BROKER_STEP`], and a hung attempt is made again, up to
    /// [`BROKER_ATTEMPTS`] times: a chaos run once waited forever here after its faults (the
    /// process idle, no connection to the broker open, its drain never polled again), so a
    /// bench or chaos run can no longer stall on one of these.
    async fn on_channel<T, F, Fut>(&self, isolation: &Isolation, work: F) -> anyhow::Result<T>
    where
        F: Fn(lapin::Channel, Topology) -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        for attempt in 1..=BROKER_ATTEMPTS {
            let topology = Topology::new(&isolation.broker(&self.amqp_url));
            let once = async {
                let connection = broker::connect(&self.amqp_url, "bench").await?;
                let result = work(connection.create_channel().await?, topology).await;
                anyhow::Ok((connection, result))
            };
            match tokio::time::timeout(BROKER_STEP, once).await {
                Ok(Ok((connection, result))) => {
                    // The answer is in; a close that hangs is not waited for past the step.
                    let closing = connection.close(200, "done".into());
                    let _ = tokio::time::timeout(BROKER_STEP, closing).await;
                    return result;
                }
                Ok(Err(error)) => return Err(error),
                Err(_) => eprintln!(
                    "bench: a broker operation took over {BROKER_STEP:?} (attempt {attempt} of \
                     {BROKER_ATTEMPTS})"
                ),
            }
        }
        anyhow::bail!("the broker did not answer in {BROKER_ATTEMPTS} attempts of {BROKER_STEP:?}")
    }

    /// Deletes the run's queues, exchanges and database, whatever of them exists.
    pub async fn remove(&self, isolation: &Isolation) -> anyhow::Result<()> {
        self.on_channel(isolation, |channel, topology| async move {
            topology.delete(&channel).await;
            Ok(())
        })
        .await?;
        let mut admin =
            sqlx::PgConnection::connect(&format!("{}/postgres", self.postgres_url)).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            isolation.prefix
        ))
        .execute(&mut admin)
        .await?;
        Ok(())
    }
}
