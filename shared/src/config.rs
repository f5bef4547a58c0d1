//! Settings read from the environment (INTERFACE.md section 2), with their defaults.
//!
//! Each process reads its settings once at start through [`Env`], which takes any lookup
//! function so that tests build settings without touching the process environment.

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// A failed setting: names the variable and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}: {problem}")]
pub struct ConfigError {
    pub name: &'static str,
    pub problem: String,
}

/// Reads typed settings from a variable lookup (the process environment in production).
pub struct Env<F: Fn(&str) -> Option<String>> {
    lookup: F,
}

impl Env<fn(&str) -> Option<String>> {
    pub fn process() -> Self {
        Env {
            lookup: |name| std::env::var(name).ok(),
        }
    }
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    pub fn new(lookup: F) -> Self {
        Env { lookup }
    }

    /// The variable's value, or `None` when unset or blank.
    pub fn optional(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|value| !value.trim().is_empty())
    }

    pub fn string(&self, name: &str, default: &str) -> String {
        self.optional(name).unwrap_or_else(|| default.to_owned())
    }

    pub fn parse<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.optional(name) {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|error: T::Err| ConfigError {
                name,
                problem: format!("cannot parse {raw:?}: {error}"),
            }),
        }
    }

    pub fn millis(&self, name: &'static str, default_ms: u64) -> Result<Duration, ConfigError> {
        self.parse(name, default_ms).map(Duration::from_millis)
    }

    pub fn addr(&self, name: &'static str, default: &str) -> Result<SocketAddr, ConfigError> {
        self.parse(name, default.parse().expect("default address is valid"))
    }

    /// A comma-separated list; blank items are dropped.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.optional(name)
            .map(|raw| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A file of PEM certificates named by the variable (`AMQP_CA_FILE` and the like), read and
    /// checked now, so a missing file or one without a certificate stops the process at start.
    pub fn ca_file(&self, name: &'static str) -> Result<Option<CaFile>, ConfigError> {
        self.optional(name)
            .map(|path| CaFile::read(path.trim().as_ref()))
            .transpose()
            .map_err(|problem| ConfigError { name, problem })
    }

    pub fn flag(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self
            .optional(name)
            .map(|raw| raw.trim().to_ascii_lowercase())
        {
            None => Ok(default),
            Some(raw) => match raw.as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(ConfigError {
                    name,
                    problem: format!("expected true or false, got {raw:?}"),
                }),
            },
        }
    }
}

/// Certificates to trust besides the built-in roots (a private CA), read from a PEM file at
/// start; shown by its path alone.
#[derive(Clone)]
pub struct CaFile {
    pub path: PathBuf,
    pem: String,
    certificates: usize,
}

impl CaFile {
    /// Reads `path`; fails unless it holds at least one PEM certificate and nothing unreadable.
    pub fn read(path: &Path) -> Result<Self, String> {
        let pem = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| format!("{} is not PEM: {error}", path.display()))?
            .len();
        if certificates == 0 {
            return Err(format!("{} holds no PEM certificate", path.display()));
        }
        Ok(CaFile {
            path: path.to_owned(),
            pem,
            certificates,
        })
    }

    /// The file's text: one or more `-----BEGIN CERTIFICATE-----` blocks.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// How many certificates it holds.
    pub fn certificates(&self) -> usize {
        self.certificates
    }
}

impl std::fmt::Debug for CaFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaFile({})", self.path.display())
    }
}

/// How to reach RabbitMQ and name what we declare there; both processes read it.
#[derive(Clone, Debug)]
pub struct BrokerSettings {
    /// `AMQP_URL`: `amqp://` or, over TLS, `amqps://` (the server's certificate is checked
    /// against the built-in webpki roots and [`Self::ca_file`]).
    pub url: String,
    /// `AMQP_CA_FILE` (default none): PEM certificates of a private CA to trust for `amqps://`,
    /// besides the built-in roots.
    pub ca_file: Option<CaFile>,
    /// `QUEUE_PREFIX` (default `webhooks`): every exchange and queue name starts with it, so
    /// several deployments, or tests, can share one vhost.
    pub prefix: String,
    /// `AMQP_CONFIRM_TIMEOUT_MS` (default 5000): how long ingest waits for the broker's confirm
    /// before answering 503.
    pub confirm_timeout: Duration,
    /// `DELIVERY_LIMIT` (default 5): failures of an event's own processing, counted by the
    /// worker in Postgres, after which the worker dead-letters it. Restarts, kills, consumer
    /// timeouts and database outages never count.
    pub delivery_limit: u32,
}

impl BrokerSettings {
    pub const DEFAULT_URL: &'static str = "amqp://guest:guest@127.0.0.1:5672/%2f";

    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        Ok(BrokerSettings {
            url: env.string("AMQP_URL", Self::DEFAULT_URL),
            ca_file: env.ca_file("AMQP_CA_FILE")?,
            prefix: env.string("QUEUE_PREFIX", "webhooks"),
            confirm_timeout: env.millis("AMQP_CONFIRM_TIMEOUT_MS", 5_000)?,
            delivery_limit: env.parse("DELIVERY_LIMIT", 5)?,
        })
    }
}

/// Logging settings shared by both processes.
#[derive(Clone, Debug)]
pub struct LogSettings {
    /// `LOG_LEVEL` (default `info`): a tracing filter such as `info,worker=debug`.
    pub level: String,
    /// `LOG_FORMAT`: `pretty` or `json`; default `pretty` on a terminal, else `json`.
    pub json: Option<bool>,
    /// `LOG_EVENTS` (default false): one log line per event with its summary.
    pub events: bool,
}

impl LogSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let json = match env.optional("LOG_FORMAT").as_deref() {
            None => None,
            Some("json") => Some(true),
            Some("pretty") => Some(false),
            Some(other) => {
                return Err(ConfigError {
                    name: "LOG_FORMAT",
                    problem: format!("expected pretty or json, got {other:?}"),
                });
            }
        };
        Ok(LogSettings {
            level: env.string("LOG_LEVEL", "info"),
            json,
            events: env.flag("LOG_EVENTS", false)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::new(move |name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_contract() {
        let broker = BrokerSettings::from_env(&env(&[])).unwrap();
        assert_eq!(broker.url, "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(broker.prefix, "webhooks");
        let logs = LogSettings::from_env(&env(&[])).unwrap();
        assert_eq!(logs.level, "info");
        assert!(!logs.events);
    }

    #[test]
    fn lists_drop_blanks_and_trim() {
        assert_eq!(env(&[("K", " a, ,b ,")]).list("K"), vec!["a", "b"]);
        assert!(env(&[("K", "  ")]).list("K").is_empty());
    }

    #[test]
    fn a_ca_file_is_read_at_start_and_a_bad_one_names_the_variable() {
        let dir = std::env::temp_dir().join(format!("ca-file-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (good, empty) = (dir.join("good.pem"), dir.join("empty.pem"));
        // Any DER in a CERTIFICATE block parses as PEM; the TLS libraries check the rest.
        std::fs::write(
            &good,
            "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let path = |file: &PathBuf| file.to_string_lossy().into_owned();

        let read = env(&[("AMQP_CA_FILE", &path(&good))])
            .ca_file("AMQP_CA_FILE")
            .unwrap();
        assert_eq!(read.expect("set").certificates(), 1);
        assert!(env(&[]).ca_file("AMQP_CA_FILE").unwrap().is_none());
        for bad in [path(&empty), path(&dir.join("missing.pem"))] {
            let error = env(&[("AMQP_CA_FILE", &bad)])
                .ca_file("AMQP_CA_FILE")
                .unwrap_err();
            assert!(error.to_string().contains("AMQP_CA_FILE"), "{error}");
            assert!(error.to_string().contains(&bad), "{error}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_number_names_the_variable() {
        let error = env(&[("DELIVERY_LIMIT", "many")])
            .parse::<u32>("DELIVERY_LIMIT", 5)
            .unwrap_err();
        assert!(error.to_string().contains("DELIVERY_LIMIT"), "{error}");
    }
}
