//! The frame of the worker's OpenAPI document, around the operations each route declares beside
//! its handler: the title and what every route shares (one list contract, one error shape),
//! the two ways to sign in (a bearer token, or the dashboard's session cookie), required by
//! every operation that does not say `security(())`, and the answers each such operation
//! shares: 401 without a valid token and 503 while `ADMIN_TOKEN` is unset.

use shared::openapi::operations;
use utoipa::Modify;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};

use super::session::COOKIE;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "worker",
        description = "The management API: endpoints and their deliveries, outbound and inbound \
            events, users and their sessions, audio levels, sleep, dead letters, erasing a user, \
            the live stream of outbound events, and sign-in for the dashboard.\n\n\
            Every list takes `limit` (1-1000, default 100) and `cursor` (the `next` of the \
            previous page, opaque) and answers `{items, next}`, newest first (users by uid). \
            Every error is `{error, message}`, plus `field` when one parameter or body field is \
            at fault; a query parameter a route does not take is a 400 naming it; a known path \
            asked with another method is a 405 with `Allow`."
    ),
    security(("bearer" = []), ("session" = [])),
    modifiers(&SignIn),
)]
pub struct Frame;

/// The security schemes: `Authorization: Bearer $ADMIN_TOKEN`, or the session cookie of
/// `POST /v1/auth/session`.
struct SignIn;

impl Modify for SignIn {
    fn modify(&self, document: &mut OpenApi) {
        let components = document.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", shared::openapi::bearer());
        let cookie = ApiKey::Cookie(ApiKeyValue::new(COOKIE));
        components.add_security_scheme("session", SecurityScheme::ApiKey(cookie));
    }
}

/// Adds the answers of a route behind the token to every operation that inherits the
/// document's security, and the error schema they refer to.
/// OpenAPI has no catch-all parameter, so axum's `{*path}` is written `{path}`.
pub fn finish(mut document: OpenApi) -> OpenApi {
    shared::openapi::finish(&mut document);
    let paths = std::mem::take(&mut document.paths.paths);
    document.paths.paths = paths
        .into_iter()
        .map(|(path, item)| (path.replace("{*", "{"), item))
        .collect();
    for item in document.paths.paths.values_mut() {
        for operation in operations(item).filter(|op| op.security.is_none()) {
            let responses = &mut operation.responses.responses;
            for (status, description) in [
                ("401", "Without a valid bearer token or session cookie"),
                (
                    "503",
                    "`ADMIN_TOKEN` is not set: the management API is disabled",
                ),
            ] {
                responses
                    .entry(status.to_owned())
                    .or_insert_with(|| shared::openapi::error(description));
            }
        }
    }
    document
}
