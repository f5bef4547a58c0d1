//! The management API's authentication, as an extractor: a handler that takes [`Admin`] cannot
//! run without either a valid `Authorization: Bearer <token>`, where the token is any one of the
//! comma-separated `ADMIN_TOKEN` list (so a token is rotated without downtime), or a valid
//! session cookie from `POST /v1/auth/session` ([`super::session`]).
//!
//! A cookie is sent by the browser on its own, so a request authenticated by one that changes
//! something (any method but GET, HEAD and OPTIONS) must also come from this origin: the cookie
//! is `SameSite=Strict`, and the request's `Origin` must name the host it was sent to. A bearer
//! token is never sent on its own, so it needs neither.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use shared::http::error_response;
use subtle::{Choice, ConstantTimeEq};

use super::{ApiError, session};
use crate::WorkerContext;

/// Proof that the request carried one of the admin tokens, or a session signed with one.
pub struct Admin {
    /// When the request's session ends; `None` for a bearer token.
    pub session_expires: Option<DateTime<Utc>>,
}

impl FromRequestParts<Arc<WorkerContext>> for Admin {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        context: &Arc<WorkerContext>,
    ) -> Result<Self, Response> {
        let tokens = &context.settings.admin_tokens;
        if tokens.is_empty() {
            return Err(ApiError::NotConfigured("ADMIN_TOKEN").into_response());
        }
        if let Some(authorization) = parts.headers.get(header::AUTHORIZATION) {
            let presented = authorization
                .to_str()
                .ok()
                .and_then(|value| value.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim());
            return match presented {
                Some(token) if is_one_of(token, tokens) => Ok(Admin {
                    session_expires: None,
                }),
                _ => Err(ApiError::Unauthorized.into_response()),
            };
        }
        let Some(cookie) = session::cookie(&parts.headers) else {
            return Err(ApiError::Unauthorized.into_response());
        };
        let ttl = context.settings.admin_session_ttl;
        let Some(expires) = session::verify(cookie, tokens, Utc::now(), ttl) else {
            let message = "the session has expired or is not valid: sign in again";
            return Err(error_response(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                message,
            ));
        };
        if changes_state(&parts.method) && !same_origin(&parts.headers) {
            let message = "a request signed in by the session cookie that changes something must \
                           come from this origin (its Origin header must name this host)";
            return Err(error_response(StatusCode::FORBIDDEN, "forbidden", message));
        }
        Ok(Admin {
            session_expires: Some(expires),
        })
    }
}

fn changes_state(method: &Method) -> bool {
    ![Method::GET, Method::HEAD, Method::OPTIONS].contains(method)
}

/// Whether the request's `Origin` is `http(s)://<its Host>`: the page that sent it is served
/// from here. A request without an `Origin` (browsers send one with every such request) is not.
pub(super) fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|value: &axum::http::HeaderValue| value.to_str().ok())
    };
    let (Some(origin), Some(host)) = (text(header::ORIGIN), text(header::HOST)) else {
        return false;
    };
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|authority| authority.eq_ignore_ascii_case(host.trim()))
}

/// Whether `presented` is one of `tokens`, comparing SHA-256 digests in constant time and
/// against every token (no early exit that would tell which position matched).
pub(super) fn is_one_of(presented: &str, tokens: &[String]) -> bool {
    let candidate = Sha256::digest(presented.as_bytes());
    let matched = tokens.iter().fold(Choice::from(0), |matched, token| {
        matched
            | Sha256::digest(token.as_bytes())
                .as_slice()
                .ct_eq(candidate.as_slice())
    });
    matched.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_listed_token_is_accepted_and_nothing_else() {
        let tokens = vec!["old-token".to_owned(), "new-token".to_owned()];
        assert!(is_one_of("old-token", &tokens));
        assert!(is_one_of("new-token", &tokens));
        assert!(!is_one_of("old-token,new-token", &tokens));
        assert!(!is_one_of("", &tokens));
        assert!(!is_one_of("other", &tokens));
    }

    #[test]
    fn only_an_origin_naming_the_host_is_the_same_origin() {
        let with = |origin: Option<&str>| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, "127.0.0.1:8081".parse().unwrap());
            if let Some(origin) = origin {
                headers.insert(header::ORIGIN, origin.parse().unwrap());
            }
            same_origin(&headers)
        };
        assert!(with(Some("http://127.0.0.1:8081")));
        assert!(with(Some("https://127.0.0.1:8081")));
        assert!(!with(Some("http://127.0.0.1:8082")));
        assert!(!with(Some("http://evil.example")));
        assert!(!with(Some("null")));
        assert!(!with(None));
    }
}
