//! One id per request, in every log line of it and carried to the worker with its event.
//!
//! [`assign`] keeps the caller's `X-Request-Id` when it is a sane token (printable ASCII
//! without spaces, 1 to [`MAX_LEN`] characters) and otherwise makes one (a UUID v4). It writes
//! the id back into the request's headers, so everything after it (the envelope's
//! `request_id`, published as the AMQP `correlation_id`) reads one sane value, runs the rest
//! of the request inside a `request` span that carries it (never the query string, where Omi
//! sends `?key=`), and echoes it in the answer.
//!
//! tower-http's `SetRequestId` keeps whatever id the caller sent, so it would still need this
//! check in front of it and its own span layer after; a few lines here do all three.

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The header read, written back and echoed.
pub const HEADER: &str = "x-request-id";
/// The longest caller-given id kept.
pub const MAX_LEN: usize = 128;

/// True when `id` can stand in a log line and a header as it is.
pub fn is_sane(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len()) && id.iter().all(|byte| byte.is_ascii_graphic())
}

/// The middleware: see the module.
pub async fn assign(mut request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(HEADER)
        .filter(|value| is_sane(value.as_bytes()))
        .cloned();
    let id = given.unwrap_or_else(|| {
        HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("a UUID is a header value")
    });
    request.headers_mut().insert(HEADER, id.clone());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let span = tracing::info_span!(
        "request",
        request_id = id.to_str().unwrap_or_default(),
        method = %request.method(),
        route,
    );
    let mut response = next.run(request).instrument(span).await;
    response.headers_mut().insert(HEADER, id);
    response
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
