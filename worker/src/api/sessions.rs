//! Transcript sessions: the session, and its transcript as JSON or WebVTT.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use uuid::Uuid;

use super::input::{Params, PathId};
use super::{Admin, ApiError};
use crate::WorkerContext;
use crate::sessions::{self, Transcript};

pub fn routes() -> Router<Arc<WorkerContext>> {
    Router::new()
        .route("/v1/sessions/{id}", get(session))
        .route("/v1/sessions/{id}/transcript", get(transcript))
}

async fn load(context: &WorkerContext, id: Uuid) -> Result<Transcript, ApiError> {
    let mut connection = context.pool.acquire().await?;
    sessions::load(&mut connection, id)
        .await?
        .ok_or(ApiError::NotFound("session"))
}

/// `GET /v1/sessions/{id}`: the session without its segments.
async fn session(
    _: Admin,
    State(context): State<Arc<WorkerContext>>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let transcript = load(&context, id).await?;
    Ok(Json(json!({
        "id": transcript.id,
        "uid": transcript.uid,
        "title": transcript.title,
        "status": if transcript.completed_at.is_some() { "completed" } else { "open" },
        "started_at": transcript.started_at,
        "completed_at": transcript.completed_at,
        "duration": transcript.duration,
        "segment_count": transcript.segments.len(),
        "participants": transcript.participants,
    }))
    .into_response())
}

/// `GET /v1/sessions/{id}/transcript[?format=vtt]`
async fn transcript(
    _: Admin,
    State(context): State<Arc<WorkerContext>>,
    PathId(id): PathId,
    mut params: Params,
) -> Result<Response, ApiError> {
    let format = params.one_of("format", &["json", "vtt"])?;
    params.finish()?;
    let transcript = load(&context, id).await?;
    match format.as_deref() {
        Some("vtt") => Ok((
            [(header::CONTENT_TYPE, "text/vtt; charset=utf-8")],
            transcript.webvtt,
        )
            .into_response()),
        _ => Ok(Json(transcript).into_response()),
    }
}
