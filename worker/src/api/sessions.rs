//! Transcript sessions: a user's sessions (newest first, by the sender's session id if asked),
//! one session, and its transcript as JSON or WebVTT.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::input::{Params, PathId, PathUid};
use super::{Admin, ApiError, Page};
use crate::WorkerContext;
use crate::sessions::{self, Transcript};

pub fn routes() -> Router<Arc<WorkerContext>> {
    Router::new()
        .route("/v1/sessions/{id}", get(session))
        .route("/v1/sessions/{id}/transcript", get(transcript))
        .route("/v1/users/{uid}/sessions", get(of_user))
}

/// One of a user's sessions, as listed.
#[derive(Serialize, sqlx::FromRow)]
struct Session {
    id: Uuid,
    uid: String,
    /// The sender's own session id.
    external_id: String,
    title: Option<String>,
    status: String,
    started_at: DateTime<Utc>,
    last_segment_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
}

/// `GET /v1/users/{uid}/sessions[?external_id=]`: newest first (by start, then id).
async fn of_user(
    _: Admin,
    State(context): State<Arc<WorkerContext>>,
    PathUid(uid): PathUid,
    mut params: Params,
) -> Result<Json<Page<Session>>, ApiError> {
    let external_id = params.text("external_id")?;
    let page = params.page::<(DateTime<Utc>, Uuid)>("sessions")?;
    params.finish()?;
    let (started_before, id_before) = page.after.unzip();
    let rows: Vec<Session> = sqlx::query_as(
        "SELECT id, uid, external_id, title,
                CASE WHEN completed_at IS NULL THEN 'open' ELSE 'completed' END AS status,
                started_at, last_segment_at, completed_at
         FROM transcript_sessions
         WHERE uid = $1 AND ($2::text IS NULL OR external_id = $2)
           AND ($3::timestamptz IS NULL OR (started_at, id) < ($3, $4))
         ORDER BY started_at DESC, id DESC LIMIT $5",
    )
    .bind(&uid)
    .bind(&external_id)
    .bind(started_before)
    .bind(id_before)
    .bind(page.fetch())
    .fetch_all(&context.pool)
    .await?;
    Ok(Json(
        page.page(rows, |session| (session.started_at, session.id)),
    ))
}

async fn load(context: &WorkerContext, id: Uuid) -> Result<Transcript, ApiError> {
    let mut connection = crate::checkout::connection(&context.pool).await?;
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
