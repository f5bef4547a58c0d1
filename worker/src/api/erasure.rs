//! Erasing a user: `DELETE /v1/users/{uid}` records the job (202, the same job while one is
//! unfinished) and `GET /v1/users/{uid}/erasure` shows the latest one's progress. The work is
//! done by [`crate::lifecycle::erasure`].

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::http::ErrorBody;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::input::PathUid;
use super::{Admin, ApiError};
use crate::WorkerContext;
use crate::lifecycle::erasure;

pub fn routes() -> OpenApiRouter<Arc<WorkerContext>> {
    OpenApiRouter::new()
        .routes(routes!(request))
        .routes(routes!(progress))
}

/// `DELETE /v1/users/{uid}` answer: the job.
#[derive(Serialize, utoipa::ToSchema)]
struct ErasureRequested {
    id: Uuid,
    uid: String,
    /// `pending`, `running` or `done`.
    status: String,
    requested_at: DateTime<Utc>,
}

/// Erase every row of a user: 202 with the job and `Location` of its progress (the same job
/// while one is unfinished).
#[utoipa::path(delete, path = "/v1/users/{uid}", tag = "users", params(("uid" = String, Path, description = "The user (at most 256 bytes)")),
    responses(
        (status = 202, description = "Recorded; `Location` is its progress", body = ErasureRequested,
            headers(("Location" = String, description = "`/v1/users/{uid}/erasure`"))),
        (status = 400, description = "A bad uid", body = ErrorBody)))]
async fn request(
    _: Admin,
    State(context): State<Arc<WorkerContext>>,
    PathUid(uid): PathUid,
) -> Result<Response, ApiError> {
    let job = erasure::request(&context.pool, &uid).await?;
    let location = format!("/v1/users/{}/erasure", encode(&uid));
    let body = ErasureRequested {
        id: job.id,
        uid: job.uid,
        status: job.status,
        requested_at: job.requested_at,
    };
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

/// The latest erasure of a user, with its rows deleted by table.
#[utoipa::path(get, path = "/v1/users/{uid}/erasure", tag = "users", params(("uid" = String, Path, description = "The user (at most 256 bytes)")),
    responses(
        (status = 200, description = "The latest job", body = erasure::Job),
        (status = 400, description = "A bad uid", body = ErrorBody),
        (status = 404, description = "The user was never erased", body = ErrorBody)))]
async fn progress(
    _: Admin,
    State(context): State<Arc<WorkerContext>>,
    PathUid(uid): PathUid,
) -> Result<Json<erasure::Job>, ApiError> {
    erasure::latest(&context.pool, &uid)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("erasure of this uid"))
}

/// A path segment with everything but unreserved characters percent-encoded.
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_segment_keeps_unreserved_characters_and_encodes_the_rest() {
        assert_eq!(encode("user-1_a.b~"), "user-1_a.b~");
        assert_eq!(encode("a/b c?é"), "a%2Fb%20c%3F%C3%A9");
    }
}
