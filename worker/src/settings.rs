//! The worker's settings, read once from the environment at start.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use shared::config::{BrokerSettings, CaFile, ConfigError, Env, LogSettings};

use crate::outbound::at_rest::SecretsKeys;

#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// `WORKER_ADDR` (default `0.0.0.0:8081`): management API, `/metrics`, health.
    pub addr: SocketAddr,
    /// `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/webhooks`); created if missing.
    /// Takes libpq's `sslmode` (`disable`, `prefer` by default, `require`, `verify-ca`,
    /// `verify-full`) and `sslrootcert`.
    pub database_url: String,
    /// `DATABASE_CA_FILE` (default none): PEM certificates of a private CA to trust for
    /// `sslmode=verify-ca|verify-full`, besides the built-in roots; the same as `sslrootcert`
    /// in the URL, and used instead of it when both are set.
    pub database_ca_file: Option<CaFile>,
    /// `DATABASE_MAX_CONNECTIONS` (default 16).
    pub database_max_connections: u32,
    pub broker: BrokerSettings,
    pub logs: LogSettings,
    /// `WORKER_BATCH` (default 16): the most waiting messages stored in one transaction.
    pub batch: usize,
    /// `WORKER_CONCURRENCY` (default 4): batches stored at once, each on its own connection.
    pub batches_in_flight: usize,
    /// `WORKER_PREFETCH` (default `2 x WORKER_BATCH x WORKER_CONCURRENCY`): unacknowledged
    /// messages one worker holds. Twice what the batches in flight hold, so that a full batch
    /// is already waiting whenever one commits; with less, batches start before they fill.
    pub prefetch: u16,
    /// `ADMIN_TOKEN`: comma-separated bearer tokens of the management API; any of them is
    /// accepted, so a token is rotated by listing the new one beside it, then dropping the old.
    pub admin_tokens: Vec<String>,
    /// `ADMIN_SESSION_TTL` (default `12h`, humantime): how long a dashboard session cookie from
    /// `POST /v1/auth/session` is valid.
    pub admin_session_ttl: Duration,
    /// The live stream (`GET /v1/stream`).
    pub stream: StreamSettings,
    pub audio: AudioSettings,
    /// `SESSION_IDLE_MS` (default 120000): quiet after which a transcript session completes.
    pub session_idle: Duration,
    /// Outbound webhook delivery.
    pub delivery: DeliverySettings,
    /// Erasing users (`DELETE /v1/users/{uid}`).
    pub erasure: ErasureSettings,
    /// How long each kind of data is kept.
    pub retention: RetentionSettings,
    /// `SHUTDOWN_TIMEOUT_MS` (default 10000): after SIGTERM, how long the worker lets the
    /// events it holds finish; then it returns the rest to the queue (it closes its broker
    /// connection) and exits, even while Postgres is down.
    pub shutdown_timeout: Duration,
    /// Test-only fault injection; inert unless a test arms it.
    #[doc(hidden)]
    pub faults: crate::supervisor::Faults,
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

/// How the live stream reads the outbox and serves its clients ([`crate::stream`]).
#[derive(Clone, Debug)]
pub struct StreamSettings {
    /// `STREAM_CLIENT_BUFFER` (default 4096, at least 1): events one stream client may have
    /// waiting to be written; a client that lets more pile up is dropped (its stream ends).
    pub client_buffer: usize,
    /// `STREAM_KEEP_ALIVE_MS` (default 15000): a comment line is sent after this long without
    /// an event, so proxies and browsers keep the connection.
    pub keep_alive: Duration,
    /// `STREAM_NOTIFY_MS` (default 50): the least time between two `NOTIFY outbox_stream` a
    /// worker sends after committing events (the first after a quiet spell goes at once).
    pub notify_interval: Duration,
    /// `STREAM_POLL_MS` (default 1000): the longest a worker with stream clients waits before it
    /// reads the outbox without having been notified (a lost notification, or a writer that
    /// sends none).
    pub poll_interval: Duration,
}

impl StreamSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        Ok(StreamSettings {
            client_buffer: env.parse::<usize>("STREAM_CLIENT_BUFFER", 4096)?.max(1),
            keep_alive: env
                .millis("STREAM_KEEP_ALIVE_MS", 15_000)?
                .max(Duration::from_millis(10)),
            notify_interval: env.millis("STREAM_NOTIFY_MS", 50)?,
            poll_interval: env
                .millis("STREAM_POLL_MS", 1_000)?
                .max(Duration::from_millis(10)),
        })
    }
}

/// Room for the batches in flight and as many again waiting, within AMQP's 16-bit prefetch.
fn default_prefetch(batch: usize, batches_in_flight: usize) -> u16 {
    let wanted = batch.saturating_mul(batches_in_flight).saturating_mul(2);
    u16::try_from(wanted).unwrap_or(u16::MAX)
}

impl WorkerSettings {
    pub const DEFAULT_DATABASE_URL: &'static str = "postgres://postgres@127.0.0.1:5432/webhooks";

    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let batch = env.parse::<usize>("WORKER_BATCH", 16)?.max(1);
        let batches_in_flight = env.parse::<usize>("WORKER_CONCURRENCY", 4)?.max(1);
        Ok(WorkerSettings {
            addr: env.addr("WORKER_ADDR", "0.0.0.0:8081")?,
            database_url: env.string("DATABASE_URL", Self::DEFAULT_DATABASE_URL),
            database_ca_file: env.ca_file("DATABASE_CA_FILE")?,
            database_max_connections: env.parse("DATABASE_MAX_CONNECTIONS", 16)?,
            broker: BrokerSettings::from_env(env)?,
            logs: LogSettings::from_env(env)?,
            batch,
            batches_in_flight,
            prefetch: env.parse(
                "WORKER_PREFETCH",
                default_prefetch(batch, batches_in_flight),
            )?,
            admin_tokens: env.list("ADMIN_TOKEN"),
            admin_session_ttl: duration(env, "ADMIN_SESSION_TTL", "12h")?
                .max(Duration::from_secs(1)),
            stream: StreamSettings::from_env(env)?,
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
            delivery: DeliverySettings::from_env(env)?,
            erasure: ErasureSettings::from_env(env)?,
            retention: RetentionSettings::from_env(env)?,
            shutdown_timeout: env.millis("SHUTDOWN_TIMEOUT_MS", 10_000)?,
            faults: Default::default(),
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

/// How outbound webhooks are delivered (INTERFACE.md section 4).
#[derive(Clone, Debug)]
pub struct DeliverySettings {
    /// `ALLOWED_TARGET_CIDRS` (default none): comma-separated CIDRs that endpoints may reach
    /// although they are loopback, private, link-local, unspecified or multicast.
    pub allowed_target_cidrs: Vec<IpNet>,
    /// `DELIVERY_RETRY_BASE_MS` (default 60000): delay before the first retry; doubles after.
    pub retry_base: Duration,
    /// `DELIVERY_RETRY_MAX_DELAY_MS` (default 3600000): the largest delay between two attempts.
    pub retry_max_delay: Duration,
    /// `DELIVERY_WINDOW_MS` (default 86400000): no attempt starts later than this after the
    /// first; then the delivery is `failed`.
    pub window: Duration,
    /// `DELIVERY_POLL_MS` (default 1000): the longest the delivery loop sleeps between looks at
    /// the database; new events wake it at once through LISTEN/NOTIFY.
    pub poll_interval: Duration,
    /// `DELIVERY_CONCURRENCY` (default 64): attempts one worker makes at once, over all
    /// endpoints.
    pub concurrency: usize,
    /// `ENDPOINT_CONCURRENCY` (default 4): attempts one worker makes at once to one endpoint.
    pub endpoint_concurrency: usize,
    /// `DELIVERY_BATCH` (default 16): deliveries of one endpoint that one of its attempt slots
    /// sends one after another from a single claim, and records with a single statement.
    pub batch: usize,
    /// `CIRCUIT_FAILURE_THRESHOLD` (default 5): consecutive failed attempts after which one
    /// worker stops attempting an endpoint for the cool-down.
    pub circuit_failure_threshold: u32,
    /// `CIRCUIT_COOLDOWN_MS` (default 30000): how long an open circuit waits before one probe.
    pub circuit_cooldown: Duration,
    /// `SECRETS_KEY` (default none): comma-separated base64 keys of 32 bytes that seal
    /// endpoint secrets and custom header values in Postgres; the first seals, all open (for
    /// rotation). Without one they are stored in plaintext and the worker warns at start.
    pub secrets_keys: SecretsKeys,
    /// `OUTBOUND_CA_FILE` (default none): PEM certificates that outbound HTTPS trusts besides
    /// the built-in webpki roots (receivers behind a private CA).
    pub extra_roots: Option<CaFile>,
    /// `ENDPOINT_DISABLE_AFTER` (default `5d`, humantime; `0`: never, `None`): an endpoint whose
    /// attempts have all failed for this long (no success since its first failure) is disabled
    /// and `endpoint.disabled` is emitted; its pending deliveries wait, paused, until it is
    /// enabled again.
    pub disable_after: Option<Duration>,
}

impl DeliverySettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        Ok(DeliverySettings {
            allowed_target_cidrs: cidrs(env.list("ALLOWED_TARGET_CIDRS"))?,
            retry_base: env.millis("DELIVERY_RETRY_BASE_MS", 60_000)?,
            retry_max_delay: env.millis("DELIVERY_RETRY_MAX_DELAY_MS", 3_600_000)?,
            window: env.millis("DELIVERY_WINDOW_MS", 86_400_000)?,
            poll_interval: env.millis("DELIVERY_POLL_MS", 1_000)?,
            concurrency: env.parse("DELIVERY_CONCURRENCY", 64)?,
            endpoint_concurrency: env.parse("ENDPOINT_CONCURRENCY", 4)?,
            batch: env.parse("DELIVERY_BATCH", 16)?,
            circuit_failure_threshold: env.parse("CIRCUIT_FAILURE_THRESHOLD", 5)?,
            circuit_cooldown: env.millis("CIRCUIT_COOLDOWN_MS", 30_000)?,
            secrets_keys: SecretsKeys::parse(&env.list("SECRETS_KEY"))?,
            extra_roots: env.ca_file("OUTBOUND_CA_FILE")?,
            disable_after: Some(duration(env, "ENDPOINT_DISABLE_AFTER", "5d")?)
                .filter(|after| !after.is_zero()),
        })
    }
}

/// How users are erased ([`crate::lifecycle::erasure`]).
#[derive(Clone, Debug)]
pub struct ErasureSettings {
    /// `ERASURE_POLL_MS` (default 1000): how often a worker looks for erasures to work on.
    pub poll_interval: Duration,
    /// `ERASURE_BATCH` (default 1000, at least 1): the most rows one statement of an erasure
    /// deletes (of outbox events: the most events, each with its deliveries and attempts), each
    /// batch in a transaction of its own.
    pub batch: usize,
}

impl ErasureSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        Ok(ErasureSettings {
            poll_interval: env.millis("ERASURE_POLL_MS", 1_000)?,
            batch: env.parse::<usize>("ERASURE_BATCH", 1_000)?.max(1),
        })
    }
}

/// How long each kind of data is kept (`RETAIN_*`, humantime durations such as `30d` or `12h`,
/// or `forever`: `None`), and how the retention loop paces its deletes (README "Retention").
#[derive(Clone, Debug)]
pub struct RetentionSettings {
    /// `RETAIN_AUDIO_PCM` (default `0`): raw PCM (`audio_chunks`) after it is folded into level
    /// windows; `0` drops it at the next pass.
    pub audio_pcm: Option<Duration>,
    /// `RETAIN_AUDIO_LEVELS` (default `30d`): level windows (`audio_windows`).
    pub audio_levels: Option<Duration>,
    /// `RETAIN_OUTBOX` (default `7d`): outbox events whose deliveries all succeeded (or that
    /// had none), with those deliveries and their attempts.
    pub outbox: Option<Duration>,
    /// `RETAIN_FAILED_DELIVERIES` (default `30d`, never less than `RETAIN_OUTBOX`): outbox
    /// events with a failed delivery, with all their deliveries and attempts. An event with a
    /// pending delivery is never deleted.
    pub failed_deliveries: Option<Duration>,
    /// `RETAIN_INBOUND_EVENTS` (default `7d`, more than `0`): the dedup records
    /// (`inbound_events`); a sender's retry older than this is stored again.
    pub inbound_events: Option<Duration>,
    /// `RETAIN_DEAD_LETTERS` (default `30d`): dead letters and the processing failures recorded
    /// for them.
    pub dead_letters: Option<Duration>,
    /// `RETAIN_TRANSCRIPTS` (default `forever`): completed transcript sessions (speakers and
    /// segments with them), Reflector transcripts, Omi conversations, memory events and day
    /// summaries.
    pub transcripts: Option<Duration>,
    /// `RETAIN_SLEEP_REPORTS` (default `forever`): Asleep session reports and inferences.
    pub sleep_reports: Option<Duration>,
    /// `RETENTION_INTERVAL` (default `1m`): how often one worker (the one holding the advisory
    /// lock) runs a pass.
    pub interval: Duration,
    /// `RETENTION_BATCH` (default 1000, at least 1): rows one delete touches, each batch its
    /// own short transaction.
    pub batch: i64,
    /// `RETENTION_PAUSE` (default `10ms`): the pause between two batches of a pass.
    pub pause: Duration,
}

impl RetentionSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let outbox = retain(env, "RETAIN_OUTBOX", "7d")?;
        let failed_deliveries = retain(env, "RETAIN_FAILED_DELIVERIES", "30d")?;
        let inbound_events = retain(env, "RETAIN_INBOUND_EVENTS", "7d")?;
        if inbound_events == Some(Duration::ZERO) {
            return Err(ConfigError {
                name: "RETAIN_INBOUND_EVENTS",
                problem: "0 would forget every event at once, so a redelivery would be stored \
                          twice; give a duration such as 7d, or forever"
                    .into(),
            });
        }
        Ok(RetentionSettings {
            audio_pcm: retain(env, "RETAIN_AUDIO_PCM", "0")?,
            audio_levels: retain(env, "RETAIN_AUDIO_LEVELS", "30d")?,
            // Kept at least as long as the succeeded ones.
            failed_deliveries: longest(failed_deliveries, outbox),
            outbox,
            inbound_events,
            dead_letters: retain(env, "RETAIN_DEAD_LETTERS", "30d")?,
            transcripts: retain(env, "RETAIN_TRANSCRIPTS", "forever")?,
            sleep_reports: retain(env, "RETAIN_SLEEP_REPORTS", "forever")?,
            interval: duration(env, "RETENTION_INTERVAL", "1m")?.max(Duration::from_millis(10)),
            batch: env.parse::<i64>("RETENTION_BATCH", 1000)?.max(1),
            pause: duration(env, "RETENTION_PAUSE", "10ms")?,
        })
    }
}

/// The longer of two retentions (`None`, forever, is the longest).
fn longest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    a.zip(b).map(|(a, b)| a.max(b))
}

/// A `RETAIN_*` variable: a humantime duration (`0` included), or `forever` (`None`).
fn retain<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    name: &'static str,
    default: &str,
) -> Result<Option<Duration>, ConfigError> {
    let raw = env.string(name, default);
    if raw.trim().eq_ignore_ascii_case("forever") {
        return Ok(None);
    }
    duration(env, name, default).map(Some)
}

/// A humantime duration (`500ms`, `12h`, `30d`, `0`).
fn duration<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    name: &'static str,
    default: &str,
) -> Result<Duration, ConfigError> {
    let raw = env.string(name, default);
    humantime::parse_duration(raw.trim()).map_err(|error| ConfigError {
        name,
        problem: format!("{raw:?} is not a duration such as 30d, 12h or 500ms: {error}"),
    })
}

/// Parses CIDRs; a bare address is taken as a single-address network.
fn cidrs(items: Vec<String>) -> Result<Vec<IpNet>, ConfigError> {
    items
        .iter()
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| ConfigError {
                    name: "ALLOWED_TARGET_CIDRS",
                    problem: format!("{item:?} is not a CIDR such as 127.0.0.0/8"),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_defaults_match_the_contract() {
        let settings = DeliverySettings::from_env(&Env::new(|_| None)).unwrap();
        assert!(settings.allowed_target_cidrs.is_empty());
        assert_eq!(settings.retry_base, Duration::from_secs(60));
        assert_eq!(settings.retry_max_delay, Duration::from_secs(3600));
        assert_eq!(settings.window, Duration::from_secs(86_400));
        assert_eq!(
            settings.disable_after,
            Some(Duration::from_secs(5 * 86_400))
        );
    }

    #[test]
    fn endpoints_are_never_disabled_for_failing_when_the_setting_is_zero() {
        let with = |value: &'static str| {
            DeliverySettings::from_env(&Env::new(move |name| {
                (name == "ENDPOINT_DISABLE_AFTER").then(|| value.to_string())
            }))
        };
        assert_eq!(with("0").unwrap().disable_after, None);
        assert_eq!(
            with("90s").unwrap().disable_after,
            Some(Duration::from_secs(90))
        );
        let error = with("five days").unwrap_err();
        assert_eq!(error.name, "ENDPOINT_DISABLE_AFTER");
    }

    #[test]
    fn the_prefetch_holds_the_batches_in_flight_and_as_many_waiting() {
        let settings = WorkerSettings::from_env(&Env::new(|_| None)).unwrap();
        assert_eq!((settings.batch, settings.batches_in_flight), (16, 4));
        assert_eq!(settings.prefetch, 128);
        let env = |name: &str| match name {
            "WORKER_BATCH" => Some("1000".to_string()),
            "WORKER_CONCURRENCY" => Some("64".to_string()),
            _ => None,
        };
        let settings = WorkerSettings::from_env(&Env::new(env)).unwrap();
        assert_eq!(settings.prefetch, u16::MAX);
        let set = |name: &str| (name == "WORKER_PREFETCH").then(|| "10".to_string());
        assert_eq!(
            WorkerSettings::from_env(&Env::new(set)).unwrap().prefetch,
            10
        );
    }

    fn retention_with(pairs: &[(&str, &str)]) -> Result<RetentionSettings, ConfigError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        RetentionSettings::from_env(&Env::new(move |name| {
            pairs
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        }))
    }

    #[test]
    fn retention_defaults_keep_what_a_wearable_company_expects() {
        let settings = retention_with(&[]).unwrap();
        let days = |n: u64| Some(Duration::from_secs(n * 86_400));
        assert_eq!(settings.audio_pcm, Some(Duration::ZERO));
        assert_eq!(settings.audio_levels, days(30));
        assert_eq!(settings.outbox, days(7));
        assert_eq!(settings.failed_deliveries, days(30));
        assert_eq!(settings.inbound_events, days(7));
        assert_eq!(settings.dead_letters, days(30));
        assert_eq!(settings.transcripts, None);
        assert_eq!(settings.sleep_reports, None);
        assert_eq!(settings.interval, Duration::from_secs(60));
        assert_eq!(settings.batch, 1000);
        assert_eq!(settings.pause, Duration::from_millis(10));
    }

    #[test]
    fn retentions_read_humantime_zero_and_forever() {
        let settings = retention_with(&[
            ("RETAIN_AUDIO_PCM", "12h"),
            ("RETAIN_AUDIO_LEVELS", "forever"),
            ("RETAIN_OUTBOX", "0"),
            ("RETAIN_TRANSCRIPTS", " 1y "),
            ("RETENTION_INTERVAL", "200ms"),
            ("RETENTION_BATCH", "0"),
        ])
        .unwrap();
        assert_eq!(settings.audio_pcm, Some(Duration::from_secs(12 * 3600)));
        assert_eq!(settings.audio_levels, None);
        assert_eq!(settings.outbox, Some(Duration::ZERO));
        assert_eq!(settings.transcripts, Some(Duration::from_secs(31_557_600)));
        assert_eq!(settings.interval, Duration::from_millis(200));
        assert_eq!(settings.batch, 1, "a batch deletes at least one row");
    }

    #[test]
    fn failed_deliveries_are_kept_at_least_as_long_as_succeeded_ones() {
        let settings =
            retention_with(&[("RETAIN_OUTBOX", "60d"), ("RETAIN_FAILED_DELIVERIES", "1d")])
                .unwrap();
        assert_eq!(settings.failed_deliveries, settings.outbox);
        let settings = retention_with(&[("RETAIN_OUTBOX", "forever")]).unwrap();
        assert_eq!(settings.failed_deliveries, None);
    }

    #[test]
    fn a_bad_retention_names_its_variable() {
        let error = retention_with(&[("RETAIN_DEAD_LETTERS", "a month")]).unwrap_err();
        assert_eq!(error.name, "RETAIN_DEAD_LETTERS");
        assert!(error.to_string().contains("30d"), "{error}");
        let error = retention_with(&[("RETAIN_INBOUND_EVENTS", "0")]).unwrap_err();
        assert_eq!(error.name, "RETAIN_INBOUND_EVENTS");
        let error = retention_with(&[("RETENTION_PAUSE", "-1s")]).unwrap_err();
        assert_eq!(error.name, "RETENTION_PAUSE");
    }

    #[test]
    fn stream_and_session_settings_default_and_parse() {
        let defaults = WorkerSettings::from_env(&Env::new(|_| None)).unwrap();
        assert_eq!(defaults.admin_session_ttl, Duration::from_secs(12 * 3600));
        assert_eq!(defaults.stream.client_buffer, 4096);
        assert_eq!(defaults.stream.keep_alive, Duration::from_secs(15));
        let env = |name: &str| match name {
            "ADMIN_SESSION_TTL" => Some("30m".to_string()),
            "STREAM_CLIENT_BUFFER" => Some("0".to_string()),
            _ => None,
        };
        let set = WorkerSettings::from_env(&Env::new(env)).unwrap();
        assert_eq!(set.admin_session_ttl, Duration::from_secs(1800));
        assert_eq!(
            set.stream.client_buffer, 1,
            "a client holds at least one event"
        );
        let bad = |name: &str| (name == "ADMIN_SESSION_TTL").then(|| "a day".to_string());
        let error = WorkerSettings::from_env(&Env::new(bad)).unwrap_err();
        assert_eq!(error.name, "ADMIN_SESSION_TTL");
    }

    #[test]
    fn erasure_settings_default_and_parse() {
        let defaults = ErasureSettings::from_env(&Env::new(|_| None)).unwrap();
        assert_eq!(defaults.poll_interval, Duration::from_secs(1));
        assert_eq!(defaults.batch, 1000);
        let env = |name: &str| match name {
            "ERASURE_POLL_MS" => Some("50".to_string()),
            "ERASURE_BATCH" => Some("0".to_string()),
            _ => None,
        };
        let set = ErasureSettings::from_env(&Env::new(env)).unwrap();
        assert_eq!(set.poll_interval, Duration::from_millis(50));
        assert_eq!(set.batch, 1, "a batch deletes at least one row");
        let bad = |name: &str| (name == "ERASURE_BATCH").then(|| "many".to_string());
        let error = ErasureSettings::from_env(&Env::new(bad)).unwrap_err();
        assert!(error.to_string().contains("ERASURE_BATCH"), "{error}");
    }

    #[test]
    fn allowed_cidrs_parse_and_a_bad_one_names_the_variable() {
        let cidrs = cidrs(vec!["127.0.0.0/8".into(), "::1".into()]).unwrap();
        assert_eq!(cidrs.len(), 2);
        let error = super::cidrs(vec!["10.0.0.0/33".into()]).unwrap_err();
        assert!(error.to_string().contains("ALLOWED_TARGET_CIDRS"));
    }
}
