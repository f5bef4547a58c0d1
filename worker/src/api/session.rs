//! Sign-in for the dashboard: `POST /v1/auth/session` exchanges the admin token for a session
//! cookie, `GET` says who is signed in, `DELETE` signs out. A browser's `EventSource` cannot send
//! a bearer token, so the cookie is how the dashboard reaches the API; [`super::Admin`] takes
//! either.
//!
//! The cookie is stateless: `v1.<expiry, unix seconds>.<HMAC-SHA256>`, keyed with a key derived
//! from the admin token it was signed with, so every worker accepts it without sharing anything,
//! and dropping a token from `ADMIN_TOKEN` ends every session signed under it. Signing out
//! clears the cookie in the browser; a copy of its value stays valid until it expires
//! (`ADMIN_SESSION_TTL`), as nothing records sessions.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::http::{ErrorBody, error_response};
use shared::signature::hmac;
use subtle::{Choice, ConstantTimeEq};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{is_one_of, same_origin};
use super::{Admin, ApiError};
use crate::WorkerContext;

/// The cookie's name.
pub const COOKIE: &str = "admin_session";
/// What the per-token signing key is derived with.
const KEY_CONTEXT: &[u8] = b"worker admin session v1";
/// Clocks of two workers may differ by this much.
const CLOCK_SLACK: Duration = Duration::from_secs(60);

pub fn routes() -> OpenApiRouter<Arc<WorkerContext>> {
    OpenApiRouter::new().routes(routes!(sign_in, whoami, sign_out))
}

/// `POST /v1/auth/session` body (JSON, or the same field as a form).
#[derive(Deserialize, utoipa::ToSchema)]
struct SignIn {
    /// One of `ADMIN_TOKEN`.
    token: Option<String>,
}

/// How a request is signed in.
#[derive(Serialize, utoipa::ToSchema)]
struct SignedIn {
    signed_in: bool,
    /// `session` or `bearer`; absent in the answer to a sign-in.
    #[serde(skip_serializing_if = "Option::is_none")]
    via: Option<&'static str>,
    /// When the session ends; null for a bearer token.
    expires_at: Option<DateTime<Utc>>,
}

/// Sign in: exchange the admin token for a session cookie (`HttpOnly`, `SameSite=Strict`).
#[utoipa::path(post, path = "/v1/auth/session", tag = "auth", security(()),
    request_body(content((SignIn = "application/json"), (SignIn = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "Signed in; `Set-Cookie` holds the session", body = SignedIn,
            headers(("Set-Cookie" = String, description = "`admin_session=...`"))),
        (status = 400, description = "No token given", body = ErrorBody),
        (status = 401, description = "Not one of `ADMIN_TOKEN`", body = ErrorBody),
        (status = 403, description = "Sent from another site (`Origin`)", body = ErrorBody),
        (status = 415, description = "Neither JSON nor a form", body = ErrorBody),
        (status = 503, description = "`ADMIN_TOKEN` is not set", body = ErrorBody)))]
async fn sign_in(
    State(context): State<Arc<WorkerContext>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tokens = &context.settings.admin_tokens;
    if tokens.is_empty() {
        return ApiError::NotConfigured("ADMIN_TOKEN").into_response();
    }
    if headers.contains_key(header::ORIGIN) && !same_origin(&headers) {
        return cross_origin();
    }
    let token = match presented_token(&headers, &body) {
        Ok(token) => token,
        Err((status, code, message)) => return error_response(status, code, message),
    };
    if !is_one_of(&token, tokens) {
        let message = "that is not the admin token (one of ADMIN_TOKEN); nothing was signed in";
        return error_response(StatusCode::UNAUTHORIZED, "unauthorized", message);
    }
    let ttl = context.settings.admin_session_ttl;
    let expires = Utc::now() + chrono::TimeDelta::seconds(ttl.as_secs() as i64);
    let cookie = set_cookie(&sign(&token, expires.timestamp()), ttl.as_secs(), &headers);
    let body = SignedIn {
        signed_in: true,
        via: None,
        expires_at: Some(expires),
    };
    ([(header::SET_COOKIE, cookie)], Json(body)).into_response()
}

/// Why a sign-in body gave no token: the status, code and message of its answer.
type Refusal = (StatusCode, &'static str, String);

/// The token of a JSON or form body; a missing one, or another kind of body, is a 4xx that says
/// how to send it.
fn presented_token(headers: &HeaderMap, body: &[u8]) -> Result<String, Refusal> {
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let token = if kind.starts_with("application/json") {
        let parsed: SignIn = serde_json::from_slice(body).map_err(|error| {
            let message = format!("the body is not JSON such as {{\"token\": \"...\"}}: {error}");
            (StatusCode::BAD_REQUEST, "bad_request", message)
        })?;
        parsed.token
    } else if kind.starts_with("application/x-www-form-urlencoded") {
        form_urlencoded::parse(body)
            .find(|(name, _)| name == "token")
            .map(|(_, value)| value.into_owned())
    } else {
        let message =
            "send the token as application/json {\"token\": \"...\"} or as the form field token";
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message.into(),
        ));
    };
    token.filter(|token| !token.is_empty()).ok_or_else(|| {
        let message = "token: missing; give the admin token (one of ADMIN_TOKEN)";
        (StatusCode::BAD_REQUEST, "bad_request", message.into())
    })
}

/// How this request is signed in.
#[utoipa::path(get, path = "/v1/auth/session", tag = "auth",
    responses((status = 200, description = "Signed in", body = SignedIn)))]
async fn whoami(admin: Admin) -> Json<SignedIn> {
    let via = match admin.session_expires {
        Some(_) => "session",
        None => "bearer",
    };
    Json(SignedIn {
        signed_in: true,
        via: Some(via),
        expires_at: admin.session_expires,
    })
}

/// Sign out: the cookie is cleared. Needs no sign-in, so an expired session can sign out too.
#[utoipa::path(delete, path = "/v1/auth/session", tag = "auth", security(()),
    responses((status = 204, description = "Signed out; `Set-Cookie` clears the session")))]
async fn sign_out(headers: HeaderMap) -> Response {
    let cleared = set_cookie("", 0, &headers);
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cleared)]).into_response()
}

fn cross_origin() -> Response {
    let message = "this request came from another site (its Origin is not this host); sign in and \
                   change things from the dashboard's own origin";
    error_response(StatusCode::FORBIDDEN, "forbidden", message)
}

/// `Set-Cookie` for `value`: `HttpOnly`, `SameSite=Strict`, `Path=/`, gone after `max_age`
/// seconds; `Secure` when the request came over https as far as the worker can tell (a proxy's
/// `X-Forwarded-Proto`, or the page's `Origin`), since plain-http local runs must work too.
fn set_cookie(value: &str, max_age: u64, headers: &HeaderMap) -> HeaderValue {
    let https = |name: &str| {
        headers
            .get(name)
            .and_then(|value: &HeaderValue| value.to_str().ok())
            .is_some_and(|value| value.trim().to_ascii_lowercase().starts_with("https"))
    };
    let secure = if https("x-forwarded-proto") || https("origin") {
        "; Secure"
    } else {
        ""
    };
    let cookie =
        format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    HeaderValue::from_str(&cookie).expect("the cookie is ASCII")
}

/// The session cookie's value in a request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(name, value)| (name == COOKIE).then_some(value))
}

/// A cookie value valid until `expires` (unix seconds), signed under `token`.
pub fn sign(token: &str, expires: i64) -> String {
    let mac = mac(token, expires);
    format!("v1.{expires}.{}", URL_SAFE_NO_PAD.encode(mac))
}

fn mac(token: &str, expires: i64) -> [u8; 32] {
    let key = hmac(token.as_bytes(), &[KEY_CONTEXT]);
    hmac(&key, &[b"v1.", expires.to_string().as_bytes()])
}

/// When `value` expires, if it was signed under one of `tokens` and is valid at `now`: not
/// expired, and not meant to outlive a session begun now (a TTL since shortened still holds).
/// Every token is tried, in constant time.
pub fn verify(
    value: &str,
    tokens: &[String],
    now: DateTime<Utc>,
    ttl: Duration,
) -> Option<DateTime<Utc>> {
    let mut parts = value.split('.');
    let (Some("v1"), Some(expires), Some(presented), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let expires: i64 = expires.parse().ok()?;
    let presented = URL_SAFE_NO_PAD.decode(presented).ok()?;
    let latest = now.timestamp() + (ttl + CLOCK_SLACK).as_secs() as i64;
    if expires <= now.timestamp() || expires > latest {
        return None;
    }
    let matched = tokens.iter().fold(Choice::from(0), |matched, token| {
        matched | mac(token, expires).as_slice().ct_eq(&presented)
    });
    bool::from(matched)
        .then(|| DateTime::from_timestamp(expires, 0))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn tokens() -> Vec<String> {
        vec!["old".to_owned(), "new".to_owned()]
    }

    #[test]
    fn a_signed_cookie_is_valid_under_any_listed_token_until_it_expires() {
        let now = Utc::now();
        let expires = now.timestamp() + 600;
        let value = sign("new", expires);
        assert_eq!(
            verify(&value, &tokens(), now, HOUR).map(|at| at.timestamp()),
            Some(expires)
        );
        assert_eq!(
            verify(&value, &["other".to_owned()], now, HOUR),
            None,
            "token dropped"
        );
        let later = now + chrono::Duration::seconds(601);
        assert_eq!(verify(&value, &tokens(), later, HOUR), None, "expired");
        let short = Duration::from_secs(60);
        assert_eq!(
            verify(&value, &tokens(), now, short),
            None,
            "longer than the TTL allows"
        );
    }

    #[test]
    fn a_changed_or_malformed_cookie_is_refused() {
        let now = Utc::now();
        let expires = now.timestamp() + 600;
        let value = sign("old", expires);
        let (_, mac) = value.rsplit_once('.').unwrap();
        let moved = format!("v1.{}.{mac}", expires + 1);
        for bad in [
            moved.as_str(),
            "",
            "v1",
            "v1.x.y",
            "v2.1.2",
            &format!("{value}.x"),
        ] {
            assert_eq!(verify(bad, &tokens(), now, HOUR), None, "{bad}");
        }
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; admin_session=v1.2.3; b=4".parse().unwrap(),
        );
        assert_eq!(cookie(&headers), Some("v1.2.3"));
        assert_eq!(cookie(&HeaderMap::new()), None);
    }
}
