//! Asleep, the sleep tracker: `INFERENCE_COMPLETE` and `SESSION_COMPLETE`, on `/v1/asleep` and
//! its alias `/asleep-webhook`.
//!
//! Asleep signs nothing; it echoes our API key in `x-api-key` and names the user in
//! `x-user-id`. Its docs nest the fields under `data`, other material shows them flat: both are
//! read into one flat [`AsleepEvent`].

use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::Response;
use serde_json::{Map, Value};
use shared::EventKind;
use shared::payload::asleep::{AsleepEvent, AsleepEventName};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{
    Headers, Inbound, accept, check_columns, check_id, check_uid, from_value, header, parse_json,
    read_body,
};
use crate::error::IngestError;
use crate::openapi::examples;
use crate::routes::AppState;
use crate::sources::{DedupKey, Queued};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(asleep))
        .routes(routes!(asleep_alias))
}

/// The headers of the Asleep routes besides the key.
#[derive(utoipa::IntoParams)]
#[into_params(names("x-user-id"), parameter_in = Header)]
#[allow(dead_code)]
struct UserHeader(
    /// The user (at most 256 bytes); required.
    String,
);

/// An authenticated (and rate-limited) Asleep caller and the user from `x-user-id`.
pub struct AsleepCaller {
    pub uid: String,
}

impl FromRequestParts<AppState> for AsleepCaller {
    type Rejection = IngestError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, IngestError> {
        let presented = header(&parts.headers, "x-api-key");
        state.asleep_api_keys.check(presented)?;
        let uid = header(&parts.headers, "x-user-id")
            .ok_or_else(|| IngestError::parameter("x-user-id", "header `x-user-id` is required"))?;
        check_uid("x-user-id", "header `x-user-id`", uid)?;
        state
            .rate_limiter
            .check(&["asleep", presented.unwrap_or(""), uid])?;
        Ok(AsleepCaller {
            uid: uid.to_owned(),
        })
    }
}

/// `POST /v1/asleep`: `INFERENCE_COMPLETE` or `SESSION_COMPLETE`, its fields nested under
/// `data` or flat.
#[utoipa::path(post, path = "/v1/asleep", tag = "asleep", security(("asleep_api_key" = [])),
    params(UserHeader, DedupKey),
    request_body(content = AsleepEvent, description = "Flat as shown, or the same fields \
        nested under `data`", example = examples::asleep_inference),
    responses((status = 202, description = "Queued", body = Queued)))]
async fn asleep(
    State(state): State<AppState>,
    caller: AsleepCaller,
    Headers(headers): Headers,
    body: Body,
) -> Result<Response, IngestError> {
    let raw = read_body(body, state.json_body_limit).await?;
    let inbound = asleep_inbound(caller.uid, &raw)?;
    accept(&state, &headers, &raw, inbound).await
}

/// `POST /asleep-webhook`: the same as `POST /v1/asleep`.
#[utoipa::path(post, path = "/asleep-webhook", tag = "asleep",
    security(("asleep_api_key" = [])), params(UserHeader, DedupKey),
    request_body(content = AsleepEvent, example = examples::asleep_inference),
    responses((status = 202, description = "Queued", body = Queued)))]
async fn asleep_alias(
    state: State<AppState>,
    caller: AsleepCaller,
    headers: Headers,
    body: Body,
) -> Result<Response, IngestError> {
    asleep(state, caller, headers, body).await
}

/// The event an Asleep body about user `uid` is published as.
pub fn asleep_inbound(uid: String, raw: &[u8]) -> Result<Inbound, IngestError> {
    let event = parse_asleep(raw)?;
    let (kind, id) = match event.event {
        AsleepEventName::InferenceComplete => (
            EventKind::AsleepInference,
            format!("{}:{}", event.session_id, event.seq_num.unwrap_or_default()),
        ),
        AsleepEventName::SessionComplete => {
            (EventKind::AsleepSessionComplete, event.session_id.clone())
        }
    };
    Ok(Inbound::json(kind, uid, Some(id), &event))
}

/// Reads either shape into the flat one. `session_id` may come from `session.id`;
/// `INFERENCE_COMPLETE` needs `seq_num`.
pub fn parse_asleep(body: &[u8]) -> Result<AsleepEvent, IngestError> {
    let mut object: Map<String, Value> = parse_json(body)?;
    check_event_name(object.get("event"))?;
    if let Some(data) = object.remove("data") {
        let Value::Object(data) = data else {
            return Err(IngestError::field("data", "expected an object"));
        };
        for (name, value) in data {
            object.entry(name).or_insert(value);
        }
    }
    if !object.contains_key("session_id") {
        let from_session = object.get("session").and_then(|session| session.get("id"));
        if let Some(id) = from_session.cloned() {
            object.insert("session_id".into(), id);
        }
    }
    let event: AsleepEvent = from_value(Value::Object(object))?;
    check_id("session_id", &event.session_id)?;
    check_columns(|reader| event.report_columns(reader))?;
    if event.event == AsleepEventName::InferenceComplete && event.seq_num.is_none() {
        return Err(IngestError::field(
            "seq_num",
            "required for INFERENCE_COMPLETE",
        ));
    }
    Ok(event)
}

/// Refuses an unknown or missing `event`, naming the ones accepted.
fn check_event_name(event: Option<&Value>) -> Result<(), IngestError> {
    let known = AsleepEventName::ALL.map(AsleepEventName::as_str);
    match event.and_then(Value::as_str) {
        Some(name) if known.contains(&name) => Ok(()),
        other => Err(IngestError::field(
            "event",
            format!(
                "expected one of {}, got {}",
                known.join(", "),
                other.map_or("nothing".to_owned(), |name| format!("{name:?}"))
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::testkit::fixture;

    #[test]
    fn nested_and_flat_shapes_read_the_same() {
        for kind in ["inference_complete", "session_complete"] {
            let flat = parse_asleep(&fixture(&format!("asleep/{kind}_flat.json"))).unwrap();
            let nested = parse_asleep(&fixture(&format!("asleep/{kind}_nested.json"))).unwrap();
            assert_eq!(flat.event, nested.event);
            assert_eq!(flat.session_id, "asleep_sess_9001");
            assert_eq!(nested.session_id, "asleep_sess_9001");
            assert_eq!(flat.seq_num, nested.seq_num);
            assert_eq!(flat.stat, nested.stat);
        }
    }

    #[test]
    fn a_null_stat_is_kept_as_none_and_unknown_fields_are_kept() {
        let event = parse_asleep(&fixture("asleep/session_complete_null_stat.json")).unwrap();
        assert_eq!(event.session_id, "asleep_sess_9002");
        assert_eq!(event.stat, None);
        assert_eq!(event.extra["peculiarities"][0], "TOO_SHORT_FOR_ANALYSIS");
    }

    #[test]
    fn bad_events_are_refused_naming_the_field() {
        let cases: [(&[u8], &str); 6] = [
            (&fixture("bad/asleep_unknown_event.json"), "SOMETHING_ELSE"),
            (br#"{"data": {}}"#, "event"),
            (br#"{"event": "SESSION_COMPLETE", "data": 3}"#, "data"),
            (
                br#"{"event": "SESSION_COMPLETE", "data": {}}"#,
                "session_id",
            ),
            (
                br#"{"event": "INFERENCE_COMPLETE", "session_id": "s"}"#,
                "seq_num",
            ),
            (
                br#"{"event": "INFERENCE_COMPLETE", "session_id": "s", "seq_num": "x"}"#,
                "seq_num",
            ),
        ];
        for (body, named) in cases {
            let Err(error) = parse_asleep(body) else {
                panic!("{body:?} was accepted");
            };
            assert!(error.is_invalid_body(), "{error:?}");
            let message = error.to_string();
            assert!(message.contains(named), "{message:?} lacks {named:?}");
        }
    }
}
