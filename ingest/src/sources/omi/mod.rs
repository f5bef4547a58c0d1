//! Omi, the wearable: real-time transcripts, conversations, day summaries, audio, the
//! webhook-server envelope (`/webhook`) and the Thalamus batch (`/omi`).
//!
//! Omi signs nothing and sends no auth header by default, so its key travels in the URL
//! (`?key=K`), or as `X-API-Key` or `Authorization: Bearer`. The user is the `uid` query
//! parameter Omi appends.
//!
//! # Layout
//! - [`transcript`]: `/v1/omi/transcript` and `/omi` (every transcript shape).
//! - [`conversation`]: `/v1/omi/conversation` and `/v1/omi/day-summary`.
//! - [`audio`]: `/v1/omi/audio` and the PCM checks the envelope's `audio_bytes` shares.
//! - [`webhook`]: `/webhook`, the webhook-server envelope.

pub mod audio;
pub mod conversation;
pub mod transcript;
pub mod webhook;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{LenientQuery, check_uid, header};
use crate::error::IngestError;
use crate::routes::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(transcript::transcript))
        .routes(routes!(conversation::conversation))
        .routes(routes!(conversation::day_summary))
        .routes(routes!(audio::audio))
        .routes(routes!(webhook::webhook))
        .routes(routes!(transcript::thalamus))
}

/// The `uid` of the Omi routes.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct UidParam {
    /// The user (at most 256 bytes). Older Omi releases append `?uid=U` to a URL that already
    /// has `?key=K`; that form is read too.
    uid: String,
}

/// An authenticated (and rate-limited) Omi caller, with the query it came with.
pub struct OmiKey {
    pub query: LenientQuery,
}

impl FromRequestParts<AppState> for OmiKey {
    type Rejection = IngestError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, IngestError> {
        let query = LenientQuery::parse(parts.uri.query().unwrap_or(""));
        let presented = query
            .get("key")
            .or_else(|| header(&parts.headers, "x-api-key"))
            .or_else(|| bearer(&parts.headers));
        state.omi_keys.check(presented)?;
        let uid = query.get("uid").unwrap_or("");
        state
            .rate_limiter
            .check(&["omi", presented.unwrap_or(""), uid])?;
        Ok(OmiKey { query })
    }
}

/// An authenticated Omi caller and the user the request is about (`uid`, required).
pub struct OmiCaller {
    pub uid: String,
    pub query: LenientQuery,
}

impl FromRequestParts<AppState> for OmiCaller {
    type Rejection = IngestError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, IngestError> {
        let OmiKey { query } = OmiKey::from_request_parts(parts, state).await?;
        let uid = query
            .get("uid")
            .ok_or_else(|| IngestError::parameter("uid", "query parameter `uid` is required"))?;
        check_uid("uid", "query parameter `uid`", uid)?;
        Ok(OmiCaller {
            uid: uid.to_owned(),
            query,
        })
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = header(headers, "authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}
