//! Endpoints as the delivery side sees them: secrets (generation, validation, which ones sign
//! during a rotation), subscriptions and custom headers. Inputs are checked here once, at the
//! edge, so a stored endpoint is always deliverable.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use reqwest::Url;
use reqwest::header::{HeaderName, HeaderValue};

use super::at_rest::SEALED_PREFIX;
use super::guard::{GuardError, TargetGuard};
use super::outbox::EventType;

/// Random bytes in a generated secret (the contract asks for at least 24).
const SECRET_BYTES: usize = 32;
/// The longest request timeout an endpoint may ask for.
pub const MAX_TIMEOUT_MS: i32 = 60_000;
/// What a masked secret or header value shows in every read: the secret's `whsec_` prefix and
/// nothing of its key, nothing of a header value. A header value equal to it is refused, so an
/// endpoint read and sent back unchanged cannot overwrite the real values with the mask.
pub const MASK: &str = "...";
/// Headers an endpoint may not set: the ones every delivery carries.
const RESERVED_HEADERS: [&str; 7] = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-webhook-signature",
    "x-webhook-event",
    "x-webhook-retry",
    "content-type",
];
/// Headers an endpoint may not set either: hop-by-hop and framing headers, which belong to
/// the HTTP client (a forged `content-length` or `transfer-encoding` could smuggle a request
/// to the receiver's proxy; `host` could reach a virtual host the URL does not name).
const HOP_BY_HOP_HEADERS: [&str; 9] = [
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What is wrong with an endpoint's settings.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("url: not a valid URL")]
    UnparsableUrl,
    #[error("url: {0}")]
    Destination(#[from] GuardError),
    #[error("event_types: {0}")]
    EventTypes(String),
    #[error("secret: must be whsec_ followed by base64 of 24 to 64 bytes")]
    Secret,
    #[error("headers: {0}")]
    Headers(String),
    #[error("timeout_ms: must be between 1 and {MAX_TIMEOUT_MS}")]
    Timeout,
    #[error("rate_limit_per_s: must be positive")]
    RateLimit,
    #[error("uids: {0}")]
    Uids(String),
}

/// A new secret: `whsec_` + base64 of 32 random bytes.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).expect("the OS random source");
    format!("whsec_{}", BASE64.encode(bytes))
}

/// Accepts `whsec_<base64 of 24..=64 bytes>`.
pub fn check_secret(secret: &str) -> Result<(), EndpointError> {
    let encoded = secret.strip_prefix("whsec_").ok_or(EndpointError::Secret)?;
    match BASE64.decode(encoded) {
        Ok(key) if (24..=64).contains(&key.len()) => Ok(()),
        _ => Err(EndpointError::Secret),
    }
}

/// The secrets that sign now: the current one, and the previous one until it expires.
pub fn signing_secrets(
    secret: &str,
    previous: Option<&str>,
    previous_expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<String> {
    let mut secrets = vec![secret.to_owned()];
    if let (Some(previous), Some(expires)) = (previous, previous_expires_at)
        && expires > now
    {
        secrets.push(previous.to_owned());
    }
    secrets
}

/// Parses and guards a destination URL.
pub fn check_url(guard: &TargetGuard, url: &str) -> Result<Url, EndpointError> {
    let parsed = Url::parse(url).map_err(|_| EndpointError::UnparsableUrl)?;
    guard.check_url(&parsed)?;
    Ok(parsed)
}

/// Known event types, or `*` for all; at least one.
pub fn check_event_types(types: &[String]) -> Result<(), EndpointError> {
    if types.is_empty() {
        return Err(EndpointError::EventTypes(
            "name at least one, or \"*\"".into(),
        ));
    }
    match types
        .iter()
        .find(|name| *name != "*" && EventType::parse(name).is_none())
    {
        Some(unknown) => Err(EndpointError::EventTypes(format!(
            "unknown type {unknown:?}"
        ))),
        None => Ok(()),
    }
}

/// True when an endpoint subscribed to `types` receives `event_type`.
pub fn subscribes(types: &[String], event_type: &str) -> bool {
    types.iter().any(|name| name == "*" || name == event_type)
}

/// A JSON object of string values that are valid, non-reserved HTTP headers.
pub fn check_headers(headers: &serde_json::Value) -> Result<(), EndpointError> {
    let object = headers
        .as_object()
        .ok_or_else(|| EndpointError::Headers("must be an object of strings".into()))?;
    for (name, value) in object {
        let bad = |what: &str| EndpointError::Headers(format!("{name:?}: {what}"));
        let parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("invalid name"))?;
        if RESERVED_HEADERS.contains(&parsed.as_str()) {
            return Err(bad("set by every delivery, cannot be overridden"));
        }
        if HOP_BY_HOP_HEADERS.contains(&parsed.as_str()) {
            return Err(bad(
                "a hop-by-hop or framing header, set by the HTTP client only",
            ));
        }
        let value = value
            .as_str()
            .ok_or_else(|| bad("value must be a string"))?;
        HeaderValue::from_str(value).map_err(|_| bad("invalid value"))?;
        if value == MASK {
            return Err(bad(
                "\"...\" is how reads mask a value; send the real value, or leave the header out",
            ));
        }
        if value.starts_with(SEALED_PREFIX) {
            return Err(bad(
                "values starting with enc:v1: are reserved for sealed values",
            ));
        }
    }
    Ok(())
}

/// The most uids one endpoint may name.
pub const MAX_UIDS: usize = 1000;

/// At most [`MAX_UIDS`] uids, each as ingest holds uids (non-empty, at most 256 bytes, no
/// NUL); none means every user's events.
pub fn check_uids(uids: &[String]) -> Result<(), EndpointError> {
    if uids.len() > MAX_UIDS {
        return Err(EndpointError::Uids(format!(
            "at most {MAX_UIDS} (leave it empty for every user)"
        )));
    }
    for (index, uid) in uids.iter().enumerate() {
        shared::payload::fields::identifier(uid)
            .map_err(|problem| EndpointError::Uids(format!("[{index}] {problem}")))?;
    }
    Ok(())
}

/// `uids` without repeats, in the order first given.
pub fn distinct_uids(uids: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    uids.into_iter()
        .filter(|uid| seen.insert(uid.clone()))
        .collect()
}

/// Request timeouts between 1 ms and [`MAX_TIMEOUT_MS`].
pub fn check_timeout(timeout_ms: i32) -> Result<(), EndpointError> {
    if (1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
        Ok(())
    } else {
        Err(EndpointError::Timeout)
    }
}

/// A rate limit, when set, is positive.
pub fn check_rate_limit(rate_limit_per_s: Option<i32>) -> Result<(), EndpointError> {
    match rate_limit_per_s {
        Some(rate) if rate <= 0 => Err(EndpointError::RateLimit),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn generated_secrets_are_valid_and_distinct() {
        let (a, b) = (generate_secret(), generate_secret());
        assert!(a.starts_with("whsec_"));
        check_secret(&a).unwrap();
        assert_ne!(a, b);
        assert_eq!(shared::signature::standard_key(&a).unwrap().len(), 32);
    }

    #[test]
    fn secrets_need_the_prefix_and_enough_bytes() {
        assert!(check_secret("whsec_c2hvcnQ=").is_err());
        assert!(check_secret("plain").is_err());
        assert!(check_secret(&format!("whsec_{}", BASE64.encode([7u8; 24]))).is_ok());
    }

    #[test]
    fn the_previous_secret_signs_until_it_expires() {
        let now = Utc::now();
        let later = now + chrono::Duration::hours(1);
        let both = signing_secrets("new", Some("old"), Some(later), now);
        assert_eq!(both, vec!["new", "old"]);
        let expired = signing_secrets("new", Some("old"), Some(now), later);
        assert_eq!(expired, vec!["new"]);
    }

    #[test]
    fn event_types_are_known_names_or_the_wildcard() {
        assert!(check_event_types(&["*".into()]).is_ok());
        assert!(check_event_types(&["memory.created".into()]).is_ok());
        assert!(check_event_types(&[]).is_err());
        assert!(check_event_types(&["memory.deleted".into()]).is_err());
        assert!(subscribes(&["*".into()], "audio.level"));
        assert!(!subscribes(&["memory.created".into()], "audio.level"));
    }

    #[test]
    fn custom_headers_are_strings_and_cannot_replace_ours() {
        assert!(check_headers(&json!({"X-Tenant": "a"})).is_ok());
        assert!(check_headers(&json!({"Webhook-Signature": "x"})).is_err());
        for name in HOP_BY_HOP_HEADERS.iter().chain(&["Content-Length", "HOST"]) {
            let error = check_headers(&json!({ *name: "1" }))
                .unwrap_err()
                .to_string();
            assert!(error.contains(&format!("{name:?}")), "{error}");
        }
        assert!(check_headers(&json!({"X-Number": 5})).is_err());
        assert!(check_headers(&json!({"X-Key": "enc:v1:abc"})).is_err());
        assert!(
            check_headers(&json!({"X-Key": MASK})).is_err(),
            "a masked read sent back"
        );
        assert!(check_headers(&json!({"bad name": "x"})).is_err());
        assert!(check_headers(&json!(["x"])).is_err());
    }

    #[test]
    fn uids_are_bounded_like_ingest_uids_and_named_once() {
        assert!(check_uids(&[]).is_ok());
        assert!(check_uids(&["u1".into(), "u2".into()]).is_ok());
        for bad in ["", " ", "a\0b", &"x".repeat(257)] {
            let error = check_uids(&["ok".into(), bad.into()]).unwrap_err();
            assert!(error.to_string().starts_with("uids: [1]"), "{error}");
        }
        let many: Vec<String> = (0..=MAX_UIDS).map(|n| n.to_string()).collect();
        assert!(check_uids(&many).is_err());
        let given = vec!["b".into(), "a".into(), "b".into()];
        assert_eq!(distinct_uids(given), vec!["b".to_string(), "a".into()]);
    }

    #[test]
    fn timeouts_and_rate_limits_are_bounded() {
        assert!(check_timeout(15_000).is_ok());
        assert!(check_timeout(0).is_err());
        assert!(check_timeout(MAX_TIMEOUT_MS + 1).is_err());
        assert!(check_rate_limit(None).is_ok());
        assert!(check_rate_limit(Some(0)).is_err());
    }
}
