//! One attempt: build the body, sign it with every valid secret in both schemes, POST it with
//! the endpoint's timeout through the one shared, pooled HTTP client, and report what came back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use shared::signature;
use uuid::Uuid;

use super::at_rest::{OpenError, SecretsKeys};
use super::guard::{GuardedResolver, TargetGuard};
use super::schedule::{Answer, RetryAfter};
use crate::settings::DeliverySettings;

/// The most of a receiver's answer that is kept.
pub const EXCERPT_BYTES: usize = 1024;

/// Where and how one endpoint is reached.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    /// The secrets that sign now (two during a rotation), as stored: sealed, or plaintext from
    /// before `SECRETS_KEY` was set; [`Sender`] opens them just before signing.
    pub secrets: Vec<String>,
    /// The endpoint's own headers, a JSON object of strings, their values as stored.
    pub headers: serde_json::Value,
    pub timeout: Duration,
}

/// What is sent: the delivery id (`webhook-id`), the event type, the body and the retry number.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: Uuid,
    pub event_type: String,
    pub body: Vec<u8>,
    pub retry: i32,
}

/// What one attempt got.
#[derive(Debug, Clone)]
pub struct Report {
    pub attempted_at: DateTime<Utc>,
    pub status: Option<u16>,
    pub retry_after: Option<RetryAfter>,
    pub latency: Duration,
    pub excerpt: Option<String>,
    pub error: Option<String>,
}

impl Report {
    /// The report as the schedule reads it.
    pub fn answer(&self) -> Answer {
        match self.status {
            Some(code) => Answer::Status {
                code,
                retry_after: self.retry_after,
            },
            None => Answer::None,
        }
    }
}

/// `{"type", "timestamp" (RFC 3339), "data"}`: the Standard Webhooks body.
pub fn body(event_type: &str, timestamp: DateTime<Utc>, data: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "type": event_type,
        "timestamp": timestamp.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": data,
    }))
    .expect("JSON values serialize")
}

/// The HTTP client every attempt shares (pooled; redirects never followed; no proxy), the
/// guard it checks destinations with, and the keys that open stored secrets and header values.
#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
    guard: Arc<TargetGuard>,
    secrets_keys: SecretsKeys,
}

impl Sender {
    /// The client trusts the built-in webpki roots and `OUTBOUND_CA_FILE`'s certificates.
    pub fn new(guard: TargetGuard, settings: &DeliverySettings) -> anyhow::Result<Self> {
        let guard = Arc::new(guard);
        let mut client = reqwest::Client::builder();
        if let Some(extra_roots) = &settings.extra_roots {
            for certificate in reqwest::Certificate::from_pem_bundle(extra_roots.pem().as_bytes())?
            {
                client = client.add_root_certificate(certificate);
            }
        }
        let client = client
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                guard: guard.clone(),
            }))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("webhooks-worker/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Sender {
            client,
            guard,
            secrets_keys: settings.secrets_keys.clone(),
        })
    }

    pub fn guard(&self) -> &TargetGuard {
        &self.guard
    }

    pub fn secrets_keys(&self) -> &SecretsKeys {
        &self.secrets_keys
    }

    /// The target as stored (secrets and header values sealed, or plaintext from before a key
    /// was set) with them opened for signing and sending.
    fn opened(&self, target: &Target) -> Result<Target, OpenError> {
        let keys = &self.secrets_keys;
        Ok(Target {
            url: target.url.clone(),
            secrets: (target.secrets.iter())
                .map(|secret| keys.open(secret))
                .collect::<Result<_, _>>()?,
            headers: keys.open_headers(&target.headers)?,
            timeout: target.timeout,
        })
    }

    /// Makes the attempt; never fails, every problem is in the report.
    pub async fn send(&self, target: &Target, message: &Message) -> Report {
        let attempted_at = Utc::now();
        let started = Instant::now();
        let mut report = Report {
            attempted_at,
            status: None,
            retry_after: None,
            latency: Duration::ZERO,
            excerpt: None,
            error: None,
        };
        match self.request(target, message, attempted_at).await {
            Ok(response) => read_answer(response, &mut report).await,
            Err(error) => report.error = Some(error),
        }
        report.latency = started.elapsed();
        report
    }

    async fn request(
        &self,
        target: &Target,
        message: &Message,
        now: DateTime<Utc>,
    ) -> Result<reqwest::Response, String> {
        let url =
            super::endpoint::check_url(&self.guard, &target.url).map_err(|e| e.to_string())?;
        let target = self.opened(target).map_err(|e| e.to_string())?;
        let headers =
            signed_headers(&target, message, now.timestamp()).map_err(|e| e.to_string())?;
        self.client
            .post(url)
            .headers(headers)
            .timeout(target.timeout)
            .body(message.body.clone())
            .send()
            .await
            .map_err(|error| error_chain(&error))
    }
}

/// The endpoint's headers, then ours: ids, timestamps, both signature schemes, event, retry.
fn signed_headers(
    target: &Target,
    message: &Message,
    timestamp: i64,
) -> Result<HeaderMap, Box<dyn std::error::Error>> {
    let mut headers = HeaderMap::new();
    if let Some(custom) = target.headers.as_object() {
        for (name, value) in custom {
            let value = value.as_str().unwrap_or_default();
            headers.insert(HeaderName::from_bytes(name.as_bytes())?, value.parse()?);
        }
    }
    let id = message.id.to_string();
    let standard = target
        .secrets
        .iter()
        .map(|secret| signature::standard_sign(secret, &id, timestamp, &message.body))
        .collect::<Result<Vec<_>, _>>()?
        .join(" ");
    let secrets: Vec<&str> = target.secrets.iter().map(String::as_str).collect();
    let reflector = signature::reflector_header(&secrets, timestamp, &message.body);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("webhook-id", id.parse()?);
    headers.insert("webhook-timestamp", timestamp.into());
    headers.insert("webhook-signature", standard.parse()?);
    headers.insert("x-webhook-signature", reflector.parse()?);
    headers.insert("x-webhook-event", message.event_type.parse()?);
    headers.insert("x-webhook-retry", message.retry.into());
    Ok(headers)
}

/// Status, `Retry-After`, and at most [`EXCERPT_BYTES`] of the body.
async fn read_answer(mut response: reqwest::Response, report: &mut Report) {
    report.status = Some(response.status().as_u16());
    report.retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(RetryAfter::parse);
    let mut excerpt = Vec::new();
    while excerpt.len() < EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => excerpt.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(error) => {
                report.error = Some(error_chain(&error));
                break;
            }
        }
    }
    excerpt.truncate(EXCERPT_BYTES);
    report.excerpt = Some(String::from_utf8_lossy(&excerpt).into_owned());
}

/// An error with its causes, `outer: inner: root`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_has_type_timestamp_and_data() {
        let at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .to_utc();
        let body = body("memory.created", at, &serde_json::json!({"id": 1}));
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["type"], "memory.created");
        assert_eq!(value["timestamp"], "2026-01-02T03:04:05.000Z");
        assert_eq!(value["data"]["id"], 1);
    }

    #[test]
    fn every_valid_secret_signs_in_both_schemes() {
        let target = Target {
            url: "http://example.com/".into(),
            secrets: vec![
                super::super::endpoint::generate_secret(),
                super::super::endpoint::generate_secret(),
            ],
            headers: serde_json::json!({"X-Tenant": "t1"}),
            timeout: Duration::from_secs(1),
        };
        let message = Message {
            id: Uuid::now_v7(),
            event_type: "test".into(),
            body: b"{}".to_vec(),
            retry: 2,
        };
        let headers = signed_headers(&target, &message, 1_700_000_000).unwrap();
        let standard = headers["webhook-signature"].to_str().unwrap();
        assert_eq!(
            standard.split(' ').filter(|s| s.starts_with("v1,")).count(),
            2
        );
        let reflector = headers["x-webhook-signature"].to_str().unwrap();
        assert!(reflector.starts_with("t=1700000000,v1="));
        assert_eq!(reflector.matches("v1=").count(), 2);
        assert_eq!(headers["x-webhook-retry"], "2");
        assert_eq!(headers["x-tenant"], "t1");
        assert_eq!(headers["content-type"], "application/json");
    }
}
