//! The inbound providers, one module each, and the plumbing they share.
//!
//! Every provider module has the same shape: an extractor that authenticates the caller (so no
//! handler can forget it), parsers that turn the sender's body into a typed payload from
//! `shared::payload` (so bad input is refused here with a 400 naming the field), and the
//! provider's own event id for deduplication. What is left, building the envelope, publishing
//! it and answering 202, is [`accept`], written once.

pub mod asleep;
pub mod omi;
pub mod reflector;

use axum::Json;
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::Utc;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use shared::payload::fields::{self, FieldReader};
use shared::{Envelope, EventKind};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::error::IngestError;
use crate::guards::BodyRefused;
use crate::routes::AppState;

/// Secrets accepted for one source, compared in constant time.
///
/// Keys are kept as SHA-256 digests, so comparing a presented key costs the same whatever its
/// length or how much of it matches.
#[derive(Clone)]
pub struct KeySet {
    digests: Vec<[u8; 32]>,
    /// The variable that configures the keys, named when none are set.
    variable: &'static str,
}

impl KeySet {
    pub fn new(variable: &'static str, keys: &[String]) -> Self {
        KeySet {
            digests: keys.iter().map(|key| digest(key.as_bytes())).collect(),
            variable,
        }
    }

    /// Ok when `presented` is one of the keys; checks every key, never stopping early.
    pub fn check(&self, presented: Option<&str>) -> Result<(), IngestError> {
        if self.digests.is_empty() {
            return Err(IngestError::NotConfigured(self.variable));
        }
        let presented = presented.ok_or(IngestError::Unauthorized("missing credentials"))?;
        let candidate = digest(presented.as_bytes());
        let matched = self
            .digests
            .iter()
            .fold(subtle::Choice::from(0), |found, key| {
                found | key.ct_eq(&candidate)
            });
        if bool::from(matched) {
            Ok(())
        } else {
            Err(IngestError::Unauthorized("wrong credentials"))
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Query parameters, read leniently: `?` is taken as a separator too, because older Omi
/// releases append `?uid=U` to a URL that already has `?key=K`. A name given twice has its last
/// value. Kept as a list: a query holds two or three parameters, fewer than a map's hashing costs.
pub struct LenientQuery(Vec<(String, String)>);

impl LenientQuery {
    pub fn parse(raw: &str) -> Self {
        let normalized = match raw.contains('?') {
            true => std::borrow::Cow::Owned(raw.replace('?', "&")),
            false => std::borrow::Cow::Borrowed(raw),
        };
        LenientQuery(
            form_urlencoded::parse(normalized.as_bytes())
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect(),
        )
    }

    /// The last value of `name`, unless it is empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(given, _)| given == name)
            .map(|(_, value)| value.as_str())
            .filter(|value| !value.is_empty())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for LenientQuery {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(LenientQuery::parse(parts.uri.query().unwrap_or("")))
    }
}

/// The request's headers, moved out of it: axum's `HeaderMap` extractor copies them (a vector
/// of every header, each value's count bumped) on every request.
///
/// Take it after every extractor that reads headers and before the body (extractors run in
/// the handler's order): the request has none left once they are taken. A body extractor that
/// reads headers itself (Reflector's [`reflector::SignedBody`]) needs the copy instead.
pub struct Headers(pub HeaderMap);

impl<S: Send + Sync> FromRequestParts<S> for Headers {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Headers(std::mem::take(&mut parts.headers)))
    }
}

/// Reads the whole body, refusing it with 413 as soon as it grows past `limit`, with 408 when it
/// does not arrive in time and 503 when it does not fit the bytes in flight
/// ([`crate::guards::guard_body`]).
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, IngestError> {
    let limited = http_body_util::Limited::new(body, limit);
    match http_body_util::BodyExt::collect(limited).await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(IngestError::TooLarge { limit })
        }
        Err(error) => match crate::guards::body_refusal(&*error) {
            Some(BodyRefused::Late) => Err(IngestError::BodyTimeout),
            Some(BodyRefused::OverBudget) => Err(IngestError::BodiesInFlight),
            None => Err(IngestError::InvalidRequest(format!(
                "cannot read the body: {error}"
            ))),
        },
    }
}

/// Parses JSON into `T`; errors name the path of the offending field (`segments[0].text`).
///
/// Tracking the path costs about as much as the parse itself, so a body is parsed plainly first
/// and only a body that fails is parsed again, with tracking, to name where it went wrong.
///
/// A body whose strings (or keys) hold NUL is refused too, naming the first such field: neither
/// `jsonb` nor `text` can store it. Finding a `\u0000` escape is a scan of the bytes; only a body
/// that has one is parsed again to name the field.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, IngestError> {
    // A body that is UTF-8 as a whole (any that parses is) is checked once, in one pass, and
    // parsed as text: from bytes, serde_json checks every string's UTF-8 on its own, which cost
    // more than a twentieth of a transcript's instructions. Both read the same JSON the same way.
    let plain = match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    };
    let parsed = match plain {
        Ok(parsed) => parsed,
        Err(_) => {
            let mut deserializer = serde_json::Deserializer::from_slice(body);
            let parsed =
                serde_path_to_error::deserialize(&mut deserializer).map_err(invalid_body)?;
            deserializer
                .end()
                .map_err(|error| IngestError::InvalidBody(format!("malformed JSON: {error}")))?;
            parsed
        }
    };
    if fields::may_hold_nul(body) {
        refuse_nul(body)?;
    }
    Ok(parsed)
}

/// Refuses a JSON body that holds NUL, naming where.
fn refuse_nul(body: &[u8]) -> Result<(), IngestError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|error| IngestError::InvalidBody(format!("malformed JSON: {error}")))?;
    match fields::nul_path(&value) {
        Some(path) => Err(invalid_field(&path, fields::NUL)),
        None => Ok(()),
    }
}

/// A 400 naming `path` (`segments[0].start`, or `.` for the whole body) and what is wrong.
pub fn invalid_field(path: &str, problem: &str) -> IngestError {
    IngestError::field(path, problem)
}

/// Checks an identifier field of the body (see [`fields::identifier`]).
pub fn check_id(path: &str, id: &str) -> Result<(), IngestError> {
    fields::identifier(id).map_err(|problem| invalid_field(path, problem))
}

/// Checks a uid taken from the request: `field` is the parameter or header it came from, and
/// `what` says which it is in the message.
pub fn check_uid(field: &'static str, what: &str, uid: &str) -> Result<(), IngestError> {
    fields::identifier(uid)
        .map_err(|problem| IngestError::parameter(field, format!("{what}: {problem}")))
}

/// Refuses the body when `read` (a payload's typed columns, read by both sides) meets a field
/// the worker could not store in its column.
pub fn check_columns<T>(read: impl FnOnce(&mut FieldReader) -> T) -> Result<(), IngestError> {
    let mut reader = FieldReader::default();
    read(&mut reader);
    match reader.problem() {
        Some((path, problem)) => Err(invalid_field(&path, problem)),
        None => Ok(()),
    }
}

/// Reads an already parsed JSON value into `T`, naming the offending field like [`parse_json`].
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, IngestError> {
    serde_path_to_error::deserialize(value).map_err(invalid_body)
}

fn invalid_body(error: serde_path_to_error::Error<serde_json::Error>) -> IngestError {
    let path = error.path().to_string();
    let inner = error.into_inner();
    match inner.classify() {
        // Not valid JSON is the body's fault, not a field's: the path only says where the
        // parse stopped.
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            let problem = format!("malformed JSON: {inner}");
            match path.as_str() {
                "." => IngestError::InvalidBody(problem),
                _ => IngestError::InvalidBody(format!("{path}: {problem}")),
            }
        }
        _ => IngestError::field(&path, inner.to_string()),
    }
}

/// A header's value, trimmed; `None` when absent, empty or not text.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

/// What a provider module hands to [`accept`]: a validated event, before it has an id.
pub struct Inbound {
    pub kind: EventKind,
    pub uid: String,
    /// The provider's own id for the event, when it has one (second in the dedup order).
    pub provider_id: Option<String>,
    /// Canonical JSON (or raw PCM for audio).
    pub payload: Bytes,
    pub sample_rate: Option<u32>,
}

impl Inbound {
    /// A JSON event: `payload` is published as its canonical JSON.
    pub fn json(
        kind: EventKind,
        uid: String,
        provider_id: Option<String>,
        payload: &impl serde::Serialize,
    ) -> Self {
        let json = serde_json::to_vec(payload).expect("payload types always serialize");
        Self::json_as_sent(kind, uid, provider_id, Bytes::from(json))
    }

    /// A JSON event whose body, as sent, already is its canonical JSON.
    pub fn json_as_sent(
        kind: EventKind,
        uid: String,
        provider_id: Option<String>,
        body: Bytes,
    ) -> Self {
        Inbound {
            kind,
            uid,
            provider_id,
            payload: body,
            sample_rate: None,
        }
    }
}

/// The dedup key, in the contract's order: the `Idempotency-Key` header, the provider's own id,
/// else a SHA-256 of source, uid and the raw body; audio without an `Idempotency-Key` is never
/// merged by content (identical chunks, such as digital silence, are each kept), so its key is
/// the acceptance's own `event_id`. The worker scopes every key by source and uid.
pub fn dedup_key(
    headers: &HeaderMap,
    inbound: &Inbound,
    raw_body: &[u8],
    event_id: Uuid,
) -> Result<String, IngestError> {
    if let Some(key) = header(headers, "idempotency-key") {
        fields::idempotency_key(key).map_err(|problem| {
            IngestError::parameter("Idempotency-Key", format!("Idempotency-Key: {problem}"))
        })?;
        return Ok(format!("idempotency-key:{key}"));
    }
    if inbound.kind == EventKind::OmiAudio {
        return Ok(format!("event:{event_id}"));
    }
    if let Some(id) = &inbound.provider_id {
        return Ok(format!("id:{id}"));
    }
    let mut hasher = Sha256::new();
    for part in [
        inbound.kind.source().as_str().as_bytes(),
        inbound.uid.as_bytes(),
    ] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.update(raw_body);
    let mut key = [0u8; 7 + 64];
    key[..7].copy_from_slice(b"sha256:");
    hex::encode_to_slice(hasher.finalize(), &mut key[7..]).expect("64 hex digits fit");
    Ok(String::from_utf8(key.to_vec()).expect("hex is ASCII"))
}

/// The envelope of an accepted request: a fresh event id, its dedup key, stamped now.
pub fn envelope(
    headers: &HeaderMap,
    raw_body: &[u8],
    inbound: Inbound,
) -> Result<Envelope, IngestError> {
    // Every source checks its uid where it reads it; this guards one that forgets.
    check_uid("uid", "uid", &inbound.uid)?;
    let event_id = Uuid::now_v7();
    Ok(Envelope {
        event_id,
        dedup_key: dedup_key(headers, &inbound, raw_body, event_id)?,
        kind: inbound.kind,
        uid: inbound.uid,
        received_at: Utc::now(),
        sample_rate: inbound.sample_rate,
        payload: inbound.payload,
        // Always there and sane: [`crate::request_id::assign`] wrote it.
        request_id: header(headers, crate::request_id::HEADER).map(str::to_owned),
    })
}

/// Builds the envelope, publishes it and answers 202 once the broker has confirmed it.
pub async fn accept(
    state: &AppState,
    headers: &HeaderMap,
    raw_body: &[u8],
    inbound: Inbound,
) -> Result<Response, IngestError> {
    let envelope = envelope(headers, raw_body, inbound)?;
    state.publisher.publish(&envelope).await?;
    state.accepted.count(envelope.kind);
    if state.log_events {
        shared::telemetry::log_event(&envelope, "queued");
    }
    let body = Queued {
        status: "queued",
        event_id: envelope.event_id,
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// The 202 body: `{"status": "queued", "event_id": ...}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Queued {
    /// `queued`.
    status: &'static str,
    /// The event's id: what `GET /v1/events/{event_id}` on the worker looks up.
    event_id: Uuid,
}

/// The `Idempotency-Key` header every provider route reads first for the dedup key.
#[derive(utoipa::IntoParams)]
#[into_params(names("Idempotency-Key"), parameter_in = Header)]
#[allow(dead_code)]
pub struct DedupKey(
    /// The sender's id of this delivery (at most 255 bytes): a retry with the same one is
    /// acknowledged and stored once.
    Option<String>,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broken_omi_query_form_is_read() {
        let query = LenientQuery::parse("key=K?uid=U");
        assert_eq!(query.get("key"), Some("K"));
        assert_eq!(query.get("uid"), Some("U"));
        let repeated = LenientQuery::parse("uid=A&uid=B&key=K&key=");
        assert_eq!(
            repeated.get("uid"),
            Some("B"),
            "the last value of a name counts"
        );
        assert_eq!(repeated.get("key"), None, "an empty last value is none");
    }

    #[test]
    fn keys_are_checked_against_every_configured_key() {
        let keys = KeySet::new("OMI_KEYS", &["old".into(), "new".into()]);
        assert!(keys.check(Some("old")).is_ok());
        assert!(keys.check(Some("new")).is_ok());
        assert!(matches!(
            keys.check(Some("ne")),
            Err(IngestError::Unauthorized(_))
        ));
        assert!(matches!(
            keys.check(None),
            Err(IngestError::Unauthorized(_))
        ));
    }

    #[test]
    fn a_source_without_keys_names_its_variable() {
        let error = KeySet::new("OMI_KEYS", &[]).check(Some("x")).unwrap_err();
        assert!(error.to_string().contains("OMI_KEYS"));
    }

    fn inbound(provider_id: Option<&str>) -> Inbound {
        Inbound {
            kind: EventKind::OmiTranscript,
            uid: "u1".into(),
            provider_id: provider_id.map(str::to_owned),
            payload: Bytes::new(),
            sample_rate: None,
        }
    }

    fn key(headers: &HeaderMap, inbound: &Inbound, body: &[u8]) -> String {
        dedup_key(headers, inbound, body, Uuid::nil()).unwrap()
    }

    #[test]
    fn dedup_key_prefers_the_idempotency_key_then_the_provider_id_then_a_hash() {
        let mut headers = HeaderMap::new();
        assert!(key(&headers, &inbound(None), b"{}").starts_with("sha256:"));
        assert_eq!(key(&headers, &inbound(Some("c1")), b"{}"), "id:c1");
        headers.insert("idempotency-key", "k1".parse().unwrap());
        assert_eq!(
            key(&headers, &inbound(Some("c1")), b"{}"),
            "idempotency-key:k1"
        );
    }

    #[test]
    fn the_body_hash_depends_on_uid_and_body() {
        let headers = HeaderMap::new();
        let a = key(&headers, &inbound(None), b"{}");
        let mut other_uid = inbound(None);
        other_uid.uid = "u2".into();
        assert_ne!(a, key(&headers, &other_uid, b"{}"));
        assert_ne!(a, key(&headers, &inbound(None), b"{ }"));
        assert_eq!(a, key(&headers, &inbound(None), b"{}"));
        let mut hasher = Sha256::new();
        for part in [&b"omi"[..], b"u1"] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        hasher.update(b"{}");
        assert_eq!(a, format!("sha256:{}", hex::encode(hasher.finalize())));
    }

    #[test]
    fn audio_is_never_merged_by_content_but_keeps_its_idempotency_key() {
        let mut audio = inbound(None);
        audio.kind = EventKind::OmiAudio;
        let mut headers = HeaderMap::new();
        let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
        let key_of = |headers: &HeaderMap, id| dedup_key(headers, &audio, b"\0\0", id).unwrap();
        assert_ne!(key_of(&headers, first), key_of(&headers, second));
        headers.insert("idempotency-key", "chunk-1".parse().unwrap());
        assert_eq!(key_of(&headers, first), key_of(&headers, second));
    }

    #[test]
    fn an_over_long_idempotency_key_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert("idempotency-key", "k".repeat(256).parse().unwrap());
        let error = dedup_key(&headers, &inbound(None), b"{}", Uuid::nil()).unwrap_err();
        assert!(error.to_string().contains("Idempotency-Key"), "{error}");
    }
}
