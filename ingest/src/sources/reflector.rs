//! Reflector, the meeting transcriber: `transcript.completed` on `/v1/reflector`.
//!
//! Reflector signs `X-Webhook-Signature: t=<unix>,v1=<hex>` over `<t>.<raw body>`; the
//! [`SignedBody`] extractor refuses a malformed header or a timestamp more than 5 minutes off
//! (Reflector enforces none) before reading the body, then checks the body against every
//! secret in `REFLECTOR_SECRETS` before it is parsed.

use axum::extract::{FromRequest, Request, State};
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use shared::EventKind;
use shared::payload::reflector::ReflectorEvent;
use shared::signature::{ReflectorSignature, SignatureError};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Inbound, accept, check_columns, check_id, header, parse_json, read_body};
use crate::error::IngestError;
use crate::routes::AppState;

const SIGNATURE_HEADER: &str = "x-webhook-signature";
const COMPLETED: &str = "transcript.completed";
/// The uid of a transcript that names no room.
const NO_ROOM: &str = "reflector";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(reflector))
}

/// The raw body of a request whose Reflector signature checked out.
pub struct SignedBody(pub Bytes);

impl FromRequest<AppState> for SignedBody {
    type Rejection = IngestError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, IngestError> {
        if state.reflector_secrets.is_empty() {
            return Err(IngestError::NotConfigured("REFLECTOR_SECRETS"));
        }
        let header_value = header(request.headers(), SIGNATURE_HEADER)
            .ok_or(IngestError::Unauthorized("missing X-Webhook-Signature"))?;
        // The header's shape and timestamp are checked before any of the body is read.
        let signature = ReflectorSignature::parse(header_value).map_err(unauthorized)?;
        signature
            .check_fresh(chrono::Utc::now().timestamp())
            .map_err(unauthorized)?;
        let raw = read_body(request.into_body(), state.json_body_limit).await?;
        signature
            .check_body(&raw, &state.reflector_secrets)
            .map_err(unauthorized)?;
        state.rate_limiter.check(&["reflector"])?;
        Ok(SignedBody(raw))
    }
}

/// The 401 for a signature that does not check out.
fn unauthorized(error: SignatureError) -> IngestError {
    IngestError::Unauthorized(match error {
        SignatureError::Stale => "X-Webhook-Signature: timestamp more than 5 minutes off",
        SignatureError::Malformed => "X-Webhook-Signature: malformed",
        SignatureError::Mismatch | SignatureError::BadSecret => {
            "X-Webhook-Signature: no signature matches"
        }
    })
}

/// `POST /v1/reflector`: Reflector's `transcript.completed`, deduplicated on `transcript.id`
/// (its `event_id` changes on retries).
#[utoipa::path(post, path = "/v1/reflector", tag = "reflector",
    security(("reflector_signature" = [])), params(super::DedupKey),
    request_body(content = ReflectorEvent, example = crate::openapi::examples::reflector_transcript),
    responses((status = 202, description = "Queued", body = super::Queued)))]
async fn reflector(
    State(state): State<AppState>,
    headers: HeaderMap,
    SignedBody(raw): SignedBody,
) -> Result<Response, IngestError> {
    let inbound = reflector_inbound(&raw)?;
    accept(&state, &headers, &raw, inbound).await
}

/// The event a verified Reflector body is published as: its room is the uid.
pub fn reflector_inbound(raw: &[u8]) -> Result<Inbound, IngestError> {
    let event = parse_reflector(raw)?;
    let uid = event.room_id().unwrap_or(NO_ROOM).to_owned();
    let id = Some(event.transcript.id.clone());
    Ok(Inbound::json(
        EventKind::ReflectorTranscript,
        uid,
        id,
        &event,
    ))
}

/// A `transcript.completed` payload with a non-empty `transcript.id`.
pub fn parse_reflector(body: &[u8]) -> Result<ReflectorEvent, IngestError> {
    let event: ReflectorEvent = parse_json(body)?;
    if event.event != COMPLETED {
        return Err(IngestError::field(
            "event",
            format!("expected {COMPLETED:?}, got {:?}", event.event),
        ));
    }
    check_id("transcript.id", &event.transcript.id)?;
    if let Some(room) = event.room_id() {
        check_id("transcript.room_id (or room.id)", room)?;
    }
    check_columns(|reader| event.transcript.duration_s(reader))?;
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::testkit::fixture;

    #[test]
    fn a_completed_transcript_is_kept_whole_with_its_room() {
        let event = parse_reflector(&fixture("reflector/transcript_completed.json")).unwrap();
        assert_eq!(event.transcript.id, "tr_01J8Z6");
        assert_eq!(event.room_id(), Some("room_7"));
        assert_eq!(event.transcript.extra["title"], "Weekly sync");
        assert_eq!(event.extra["event_id"], "5f0c2b6e8f7a4d2c9e1b3a4d5c6e7f80");
    }

    #[test]
    fn the_room_falls_back_to_room_id_then_to_none() {
        let body = br#"{"event":"transcript.completed","transcript":{"id":"t"},"room":{"id":"r"}}"#;
        assert_eq!(parse_reflector(body).unwrap().room_id(), Some("r"));
        let body = br#"{"event":"transcript.completed","transcript":{"id":"t","room_id":null}}"#;
        assert_eq!(parse_reflector(body).unwrap().room_id(), None);
    }

    #[test]
    fn other_events_and_missing_ids_are_refused_naming_the_field() {
        let long_room = format!(
            r#"{{"event":"transcript.completed","transcript":{{"id":"t","room_id":"{}"}}}}"#,
            "r".repeat(257)
        );
        let cases: [(&[u8], &str); 6] = [
            (
                br#"{"event":"transcript.completed","transcript":{"id":"t","duration":"long"}}"#,
                "transcript.duration: expected a number",
            ),
            (long_room.as_bytes(), "transcript.room_id"),
            (
                br#"{"event":"transcript.started","transcript":{"id":"t"}}"#,
                "event",
            ),
            (br#"{"event":"transcript.completed"}"#, "transcript"),
            (
                br#"{"event":"transcript.completed","transcript":{}}"#,
                "transcript: missing field `id`",
            ),
            (
                br#"{"event":"transcript.completed","transcript":{"id":""}}"#,
                "transcript.id",
            ),
        ];
        for (body, named) in cases {
            let Err(error) = parse_reflector(body) else {
                panic!("{body:?} was accepted");
            };
            assert!(error.is_invalid_body(), "{error:?}");
            let message = error.to_string();
            assert!(message.contains(named), "{message:?} lacks {named:?}");
        }
    }
}
