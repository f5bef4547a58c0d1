//! Ingest's settings, read once from the environment at start.

use std::net::SocketAddr;
use std::time::Duration;

use shared::config::{BrokerSettings, ConfigError, Env, LogSettings};

#[derive(Clone, Debug)]
pub struct IngestSettings {
    /// `INGEST_ADDR` (default `0.0.0.0:8080`).
    pub addr: SocketAddr,
    /// `INGEST_REUSE_PORT` (default false): bind with `SO_REUSEPORT`, so several ingest
    /// processes on one host share `INGEST_ADDR` and the kernel spreads connections over them.
    pub reuse_port: bool,
    pub broker: BrokerSettings,
    pub logs: LogSettings,
    /// `OMI_KEYS`: keys accepted on the Omi routes; several allow rotation.
    pub omi_keys: Vec<String>,
    /// `ASLEEP_API_KEYS`: `x-api-key` values accepted on the Asleep routes.
    pub asleep_api_keys: Vec<String>,
    /// `REFLECTOR_SECRETS`: secrets tried for `X-Webhook-Signature` on the Reflector route.
    pub reflector_secrets: Vec<String>,
    /// `JSON_BODY_LIMIT_BYTES` (default 2 MiB): the largest JSON body accepted; 413 beyond.
    pub json_body_limit: usize,
    /// `AUDIO_BODY_LIMIT_BYTES` (default 8 MiB): the largest audio body accepted; 413 beyond.
    pub audio_body_limit: usize,
    /// `RATE_LIMIT_PER_S` (default 0, off): requests per second allowed per credential (Omi key
    /// and uid, Asleep key and `x-user-id`, or the Reflector sender), as a token bucket; beyond
    /// it 429 with `Retry-After`. Fractions are allowed (`0.5` is one request every 2 s).
    pub rate_limit_per_s: f64,
    /// `RATE_LIMIT_BURST` (default 0, meaning one second's worth and at least 1): how many
    /// requests a credential may send at once before the per-second rate applies.
    pub rate_limit_burst: u32,
    /// `REQUEST_HEADER_TIMEOUT_MS` (default 10000): a connection that has not sent a whole
    /// request head this long after ingest started waiting for one is answered 408 and closed
    /// (slowloris), or closed silently if it sent nothing of a head. Waiting starts again as
    /// soon as the previous answer is ready, so an idle keep-alive connection is closed after
    /// this long too.
    pub header_timeout: Duration,
    /// `REQUEST_BODY_TIMEOUT_MS` (default 30000): a body not all arrived this long after its
    /// request head is refused with 408.
    pub body_timeout: Duration,
    /// `MAX_CONCURRENT_REQUESTS` (default 512): provider requests one process serves at once;
    /// beyond, 503 with `Retry-After` at once. Health, metrics and OpenAPI are not counted.
    pub max_concurrent_requests: usize,
    /// `MAX_BODY_BYTES_IN_FLIGHT` (default 128 MiB): request body bytes one process holds at
    /// once, counted as they arrive and released when their request is answered; a request whose
    /// body would go past it is answered 503 with `Retry-After` (at once when its
    /// `Content-Length` is already too much). At least the largest body limit.
    pub max_body_bytes_in_flight: usize,
    /// `SHUTDOWN_GRACE_MS` (default 3000): after SIGTERM, how long ingest keeps serving with
    /// `/readyz` at 503, so a load balancer stops sending before the listener closes.
    pub shutdown_grace: Duration,
    /// `SHUTDOWN_TIMEOUT_MS` (default 10000): after the grace, how long the requests in flight
    /// may take to finish (their confirms included) before ingest exits anyway.
    pub shutdown_timeout: Duration,
}

impl IngestSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        IngestSettings {
            addr: env.addr("INGEST_ADDR", "0.0.0.0:8080")?,
            reuse_port: env.parse("INGEST_REUSE_PORT", false)?,
            broker: BrokerSettings::from_env(env)?,
            logs: LogSettings::from_env(env)?,
            omi_keys: env.list("OMI_KEYS"),
            asleep_api_keys: env.list("ASLEEP_API_KEYS"),
            reflector_secrets: env.list("REFLECTOR_SECRETS"),
            json_body_limit: env.parse("JSON_BODY_LIMIT_BYTES", 2 * 1024 * 1024)?,
            audio_body_limit: env.parse("AUDIO_BODY_LIMIT_BYTES", 8 * 1024 * 1024)?,
            rate_limit_per_s: env.parse("RATE_LIMIT_PER_S", 0.0)?,
            rate_limit_burst: env.parse("RATE_LIMIT_BURST", 0)?,
            header_timeout: env.millis("REQUEST_HEADER_TIMEOUT_MS", 10_000)?,
            body_timeout: env.millis("REQUEST_BODY_TIMEOUT_MS", 30_000)?,
            max_concurrent_requests: env.parse("MAX_CONCURRENT_REQUESTS", 512)?,
            max_body_bytes_in_flight: env.parse("MAX_BODY_BYTES_IN_FLIGHT", 128 * 1024 * 1024)?,
            shutdown_grace: env.millis("SHUTDOWN_GRACE_MS", 3_000)?,
            shutdown_timeout: env.millis("SHUTDOWN_TIMEOUT_MS", 10_000)?,
        }
        .checked()
    }

    /// The largest body any route accepts (`/webhook`'s, see [`webhook_body_limit`]).
    pub fn largest_body_limit(&self) -> usize {
        webhook_body_limit(self.json_body_limit, self.audio_body_limit)
    }

    /// Refuses a body budget smaller than the largest body, which could never be accepted.
    fn checked(self) -> Result<Self, ConfigError> {
        if self.max_body_bytes_in_flight < self.largest_body_limit() {
            return Err(ConfigError {
                name: "MAX_BODY_BYTES_IN_FLIGHT",
                problem: format!(
                    "{} is less than the largest body a route accepts ({} bytes: the larger of \
                     JSON_BODY_LIMIT_BYTES and twice AUDIO_BODY_LIMIT_BYTES)",
                    self.max_body_bytes_in_flight,
                    self.largest_body_limit()
                ),
            });
        }
        Ok(self)
    }

    /// The defaults, with the given broker and Omi keys and no shutdown grace (no load
    /// balancer waits on it): for tests, benchmarks and local runs.
    pub fn local(broker: BrokerSettings, omi_keys: &[&str]) -> Self {
        let mut settings = Self::from_env(&Env::new(|_| None)).expect("defaults are valid");
        settings.broker = broker;
        settings.shutdown_grace = Duration::ZERO;
        settings.omi_keys = strings(omi_keys);
        settings
    }

    /// These settings with the given Asleep keys and Reflector secrets.
    pub fn with_partner_credentials(mut self, asleep_keys: &[&str], reflector: &[&str]) -> Self {
        self.asleep_api_keys = strings(asleep_keys);
        self.reflector_secrets = strings(reflector);
        self
    }
}

/// `/webhook`'s body limit: JSON, or hex audio at two characters a byte.
pub fn webhook_body_limit(json_body_limit: usize, audio_body_limit: usize) -> usize {
    json_body_limit.max(2 * audio_body_limit)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| item.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<IngestSettings, ConfigError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        IngestSettings::from_env(&Env::new(move |name| {
            pairs
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        }))
    }

    #[test]
    fn rate_limiting_is_off_by_default_and_takes_fractions() {
        let defaults = settings(&[]).unwrap();
        assert_eq!(defaults.rate_limit_per_s, 0.0);
        assert_eq!(defaults.rate_limit_burst, 0);
        let set = settings(&[("RATE_LIMIT_PER_S", "0.5"), ("RATE_LIMIT_BURST", "3")]).unwrap();
        assert_eq!((set.rate_limit_per_s, set.rate_limit_burst), (0.5, 3));
        let error = settings(&[("RATE_LIMIT_BURST", "-1")]).unwrap_err();
        assert!(error.to_string().contains("RATE_LIMIT_BURST"), "{error}");
    }

    #[test]
    fn a_body_budget_below_the_largest_body_is_refused() {
        let defaults = settings(&[]).unwrap();
        assert_eq!(defaults.max_body_bytes_in_flight, 128 * 1024 * 1024);
        let error = settings(&[("MAX_BODY_BYTES_IN_FLIGHT", "1000000")]).unwrap_err();
        assert!(error.to_string().contains("16777216"), "{error}");
        let small = [
            ("MAX_BODY_BYTES_IN_FLIGHT", "1000000"),
            ("AUDIO_BODY_LIMIT_BYTES", "100000"),
            ("JSON_BODY_LIMIT_BYTES", "1000000"),
        ];
        assert_eq!(
            settings(&small).unwrap().max_body_bytes_in_flight,
            1_000_000
        );
    }

    #[test]
    fn partner_credentials_are_lists() {
        let set = settings(&[("ASLEEP_API_KEYS", "a, b"), ("REFLECTOR_SECRETS", "s")]).unwrap();
        assert_eq!(set.asleep_api_keys, ["a", "b"]);
        assert_eq!(set.reflector_secrets, ["s"]);
    }
}
