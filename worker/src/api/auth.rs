//! The management API's authentication, as an extractor: a handler that takes [`Admin`] cannot
//! run without a valid `Authorization: Bearer $ADMIN_TOKEN`.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::WorkerContext;

/// Proof that the request carried the admin token.
pub struct Admin;

impl FromRequestParts<Arc<WorkerContext>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        context: &Arc<WorkerContext>,
    ) -> Result<Self, ApiError> {
        let Some(token) = context.settings.admin_token.as_deref() else {
            return Err(ApiError::NotConfigured("ADMIN_TOKEN"));
        };
        let presented = parts
            .headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or(ApiError::Unauthorized)?;
        let expected = Sha256::digest(token.as_bytes());
        let candidate = Sha256::digest(presented.as_bytes());
        if bool::from(expected.as_slice().ct_eq(candidate.as_slice())) {
            Ok(Admin)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}
