//! Erasing a user: `DELETE /v1/users/{uid}` records the job (202, the same job while one is
//! unfinished) and `GET /v1/users/{uid}/erasure` shows the latest one's progress. The work is
//! done by [`crate::lifecycle::erasure`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::json;

use super::input::PathUid;
use super::{Admin, ApiError};
use crate::WorkerContext;
use crate::lifecycle::erasure;

pub fn routes() -> Router<Arc<WorkerContext>> {
    Router::new()
        .route("/v1/users/{uid}", delete(request))
        .route("/v1/users/{uid}/erasure", get(progress))
}

/// `DELETE /v1/users/{uid}`: 202 with the job and `Location` of its progress.
async fn request(
    _: Admin,
    State(context): State<Arc<WorkerContext>>,
    PathUid(uid): PathUid,
) -> Result<Response, ApiError> {
    let job = erasure::request(&context.pool, &uid).await?;
    let location = format!("/v1/users/{}/erasure", encode(&uid));
    let body = json!({
        "id": job.id,
        "uid": job.uid,
        "status": job.status,
        "requested_at": job.requested_at,
    });
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

/// `GET /v1/users/{uid}/erasure`: the latest job, with its rows deleted by table.
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
