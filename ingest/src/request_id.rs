//! One id per request, in every log line of it and carried to the worker with its event.
//!
//! [`assign`] keeps the caller's `X-Request-Id` when it is a sane token (printable ASCII
//! without spaces, 1 to [`MAX_LEN`] characters) and otherwise makes one (a UUID v4). It writes
//! the id back into the request's headers, so everything after it (the envelope's
//! `request_id`, published as the AMQP `correlation_id`) reads one sane value. The rest of the
//! request runs inside the `request` [`span`] that carries it (never the query string, where
//! Omi sends `?key=`), and the answer echoes it; both are done by the router's one layer on
//! every request (`routes::observe`).
//!
//! tower-http's `SetRequestId` keeps whatever id the caller sent, so it would still need this
//! check in front of it and its own span layer after; a few lines here do all three.

use axum::extract::Request;
use axum::http::{HeaderValue, Method};
use tracing::Span;

/// The header read, written back and echoed.
pub const HEADER: &str = "x-request-id";
/// The longest caller-given id kept.
pub const MAX_LEN: usize = 128;

/// True when `id` can stand in a log line and a header as it is.
pub fn is_sane(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len()) && id.iter().all(|byte| byte.is_ascii_graphic())
}

/// The request's id, the caller's if sane, else a new one; written into its headers.
pub fn assign(request: &mut Request) -> HeaderValue {
    let given = request
        .headers()
        .get(HEADER)
        .filter(|value| is_sane(value.as_bytes()))
        .cloned();
    let id = given.unwrap_or_else(made);
    request.headers_mut().insert(HEADER, id.clone());
    id
}

/// A new id: a UUID v4, hyphenated, as a header value.
fn made() -> HeaderValue {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(text).expect("a UUID is a header value")
}

/// The span a request runs in: its id, method and matched route.
pub fn span(id: &HeaderValue, method: &Method, route: &str) -> Span {
    tracing::info_span!(
        "request",
        request_id = id.to_str().unwrap_or_default(),
        method = %method,
        route,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_ascii_tokens_up_to_the_limit_are_sane() {
        assert!(is_sane(b"abc-123_X.Y:z"));
        assert!(is_sane(&[b'a'; MAX_LEN]));
    }

    #[test]
    fn empty_long_spaced_control_and_non_ascii_ids_are_not() {
        for id in [
            &b""[..],
            &[b'a'; MAX_LEN + 1],
            b"two words",
            b"tab\there",
            "caf\u{e9}".as_bytes(),
        ] {
            assert!(!is_sane(id), "{id:?}");
        }
    }
}
