//! The management API's authentication, as an extractor: a handler that takes [`Admin`] cannot
//! run without a valid `Authorization: Bearer <token>`, where the token is any one of the
//! comma-separated `ADMIN_TOKEN` list (so a token is rotated without downtime).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::ApiError;
use crate::WorkerContext;

/// Proof that the request carried one of the admin tokens.
pub struct Admin;

impl FromRequestParts<Arc<WorkerContext>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        context: &Arc<WorkerContext>,
    ) -> Result<Self, ApiError> {
        let tokens = &context.settings.admin_tokens;
        if tokens.is_empty() {
            return Err(ApiError::NotConfigured("ADMIN_TOKEN"));
        }
        let presented = parts
            .headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or(ApiError::Unauthorized)?;
        if is_one_of(presented, tokens) {
            Ok(Admin)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

/// Whether `presented` is one of `tokens`, comparing SHA-256 digests in constant time and
/// against every token (no early exit that would tell which position matched).
fn is_one_of(presented: &str, tokens: &[String]) -> bool {
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
}
