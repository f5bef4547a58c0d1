//! The frame of ingest's OpenAPI document, around the operations each route declares beside its
//! handler: the title, the credentials each provider sends (an Omi key in the query, `X-API-Key`
//! or `Authorization: Bearer`; Asleep's `x-api-key`; Reflector's `X-Webhook-Signature`), the
//! answers every provider route shares (400, 401, 413, 429 and 503), and the request body
//! examples, which are the provider fixtures in `shared/testdata/fixtures`.

use utoipa::Modify;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "ingest",
        description = "Inbound webhooks from Omi, Asleep and Reflector. Every accepted request is \
            answered 202 `{status, event_id}` only after RabbitMQ confirmed it; a retried or \
            replayed event is acknowledged again and stored once (the dedup key is the \
            `Idempotency-Key` header, else the provider's id, else a hash of the body). Errors \
            are `{error, message}` plus `field` when one parameter or body field is at fault. \
            Unknown JSON fields are accepted and kept."
    ),
    modifiers(&Credentials),
)]
pub struct Frame;

/// The security schemes of the provider routes.
struct Credentials;

impl Modify for Credentials {
    fn modify(&self, document: &mut OpenApi) {
        let components = document.components.get_or_insert_with(Default::default);
        let schemes = [
            ("omi_key", ApiKey::Query(ApiKeyValue::new("key"))),
            ("omi_api_key", ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
            (
                "asleep_api_key",
                ApiKey::Header(ApiKeyValue::new("x-api-key")),
            ),
            (
                "reflector_signature",
                ApiKey::Header(ApiKeyValue::with_description(
                    "X-Webhook-Signature",
                    "`t=<unix>,v1=<hex>`: HMAC-SHA256 over `<t>.<raw body>`, keyed with one of \
                     REFLECTOR_SECRETS; more than 5 minutes off is refused",
                )),
            ),
        ];
        for (name, scheme) in schemes {
            components.add_security_scheme(name, SecurityScheme::ApiKey(scheme));
        }
        components.add_security_scheme("omi_bearer", shared::openapi::bearer());
    }
}

/// Adds the answers every provider route shares (those that answer 202) and the error schema.
pub fn finish(mut document: OpenApi) -> OpenApi {
    shared::openapi::finish(&mut document);
    for item in document.paths.paths.values_mut() {
        let Some(operation) = item.post.as_mut() else {
            continue;
        };
        let responses = &mut operation.responses.responses;
        if !responses.contains_key("202") {
            continue;
        }
        for (status, description) in SHARED_ERRORS {
            responses
                .entry(status.to_owned())
                .or_insert_with(|| shared::openapi::error(description));
        }
    }
    document
}

/// The errors of every provider route.
const SHARED_ERRORS: [(&str, &str); 5] = [
    (
        "400",
        "Malformed or invalid: the message (and `field`) names what",
    ),
    ("401", "Missing or wrong credentials"),
    ("413", "The body is too large"),
    ("429", "Rate limited; `Retry-After` says when to send again"),
    (
        "503",
        "The broker did not confirm in time, the source has no credentials configured (the \
         message names the variable), or too many requests are in flight; `Retry-After`",
    ),
];

/// The request body examples: the provider fixtures.
pub mod examples {
    use serde_json::Value;

    fn parse(json: &str) -> Value {
        serde_json::from_str(json).expect("the fixtures are JSON")
    }

    macro_rules! fixture {
        ($name:ident, $path:literal) => {
            #[doc = concat!("`shared/testdata/fixtures/", $path, "`")]
            pub fn $name() -> Value {
                parse(include_str!(concat!(
                    "../../shared/testdata/fixtures/",
                    $path
                )))
            }
        };
    }

    fixture!(omi_transcript, "omi/realtime_transcript.json");
    fixture!(thalamus_batch, "omi/thalamus_batch.json");
    fixture!(omi_conversation, "omi/conversation_created.json");
    fixture!(omi_day_summary, "omi/day_summary.json");
    fixture!(omi_memory_created, "omi-envelope/memory_created.json");
    fixture!(asleep_inference, "asleep/inference_complete_flat.json");
    fixture!(reflector_transcript, "reflector/transcript_completed.json");
}
