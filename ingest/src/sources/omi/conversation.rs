//! Omi's conversation ("memory") created and day summary webhooks: JSON objects kept whole.

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use shared::EventKind;
use shared::payload::omi::{Conversation, DaySummary};

use super::{OmiCaller, UidParam};
use crate::error::IngestError;
use crate::openapi::examples;
use crate::routes::AppState;
use crate::sources::{DedupKey, Queued};
use crate::sources::{Headers, Inbound, accept, check_columns, check_id, parse_json, read_body};

/// `POST /v1/omi/conversation?uid=U`: a conversation (memory) was created; deduplicated on its
/// `id`.
#[utoipa::path(post, path = "/v1/omi/conversation", tag = "omi", security(("omi_key" = []), ("omi_api_key" = []), ("omi_bearer" = [])),
    params(UidParam, DedupKey),
    request_body(content = Conversation, description = "The conversation object, kept whole", example = examples::omi_conversation),
    responses((status = 202, description = "Queued", body = Queued)))]
pub async fn conversation(
    State(state): State<AppState>,
    caller: OmiCaller,
    Headers(headers): Headers,
    body: Body,
) -> Result<Response, IngestError> {
    let raw = read_body(body, state.json_body_limit).await?;
    let inbound = conversation_inbound(caller.uid, &raw)?;
    accept(&state, &headers, &raw, inbound).await
}

/// `POST /v1/omi/day-summary?uid=U`: Omi's summary of a day.
#[utoipa::path(post, path = "/v1/omi/day-summary", tag = "omi", security(("omi_key" = []), ("omi_api_key" = []), ("omi_bearer" = [])),
    params(UidParam, DedupKey),
    request_body(content = DaySummary, description = "The day summary", example = examples::omi_day_summary),
    responses((status = 202, description = "Queued", body = Queued)))]
pub async fn day_summary(
    State(state): State<AppState>,
    caller: OmiCaller,
    Headers(headers): Headers,
    body: Body,
) -> Result<Response, IngestError> {
    let raw = read_body(body, state.json_body_limit).await?;
    let inbound = day_summary_inbound(caller.uid, &raw)?;
    accept(&state, &headers, &raw, inbound).await
}

/// The event a conversation body of user `uid` is published as.
pub fn conversation_inbound(uid: String, raw: &[u8]) -> Result<Inbound, IngestError> {
    let conversation = parse_conversation(raw)?;
    let id = Some(conversation.id.clone());
    Ok(Inbound::json(
        EventKind::OmiConversation,
        uid,
        id,
        &conversation,
    ))
}

/// The event a day summary body of user `uid` is published as.
pub fn day_summary_inbound(uid: String, raw: &[u8]) -> Result<Inbound, IngestError> {
    let summary = parse_day_summary(raw)?;
    Ok(Inbound::json(EventKind::OmiDaySummary, uid, None, &summary))
}

/// A conversation object: its `id` an identifier, its times readable.
pub fn parse_conversation(body: &[u8]) -> Result<Conversation, IngestError> {
    let conversation: Conversation = parse_json(body)?;
    check_id("id", &conversation.id)?;
    check_columns(|reader| conversation.columns(reader))?;
    Ok(conversation)
}

/// A day summary: `summary_json` (an object) is required, `summary` stays the text it was.
pub fn parse_day_summary(body: &[u8]) -> Result<DaySummary, IngestError> {
    parse_json(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::testkit::fixture;

    #[test]
    fn a_conversation_keeps_every_field() {
        let conversation = parse_conversation(&fixture("omi/conversation_created.json")).unwrap();
        assert_eq!(conversation.id, "c0a8f6d2-5b7e-4f11-8d4c-2e9b7a1f3c55");
        assert_eq!(conversation.fields["structured"]["emoji"], "🚀");
        assert_eq!(
            conversation.fields["transcript_segments"][1]["speaker_name"],
            "Speaker 1"
        );
    }

    #[test]
    fn a_day_summary_keeps_the_python_repr_as_text() {
        let summary = parse_day_summary(&fixture("omi/day_summary.json")).unwrap();
        assert!(summary.summary.unwrap().starts_with("{'date'"));
        assert_eq!(summary.summary_json["headline"], "Launch prep day");
    }

    #[test]
    fn missing_ids_and_summaries_are_named() {
        let conversation = |body: &[u8]| parse_conversation(body).map(|_| ());
        let summary = |body: &[u8]| parse_day_summary(body).map(|_| ());
        type Parser = fn(&[u8]) -> Result<(), IngestError>;
        let cases: [(Parser, &[u8], &str); 4] = [
            (conversation, br#"{"started_at": "x"}"#, "id"),
            (conversation, br#"{"id": " "}"#, "id"),
            (summary, br#"{"summary": "{'a': 1}"}"#, "summary_json"),
            (summary, br#"{"summary_json": "{}"}"#, "summary_json"),
        ];
        for (parse, body, named) in cases {
            let Err(error) = parse(body) else {
                panic!("{body:?} was accepted");
            };
            assert!(error.is_invalid_body(), "{error:?}");
            let message = error.to_string();
            assert!(message.contains(named), "{message:?} lacks {named:?}");
        }
    }
}
