//! Transcript sessions: a user's sessions (newest first, by the sender's session id if asked),
//! one session, and its transcript as JSON or WebVTT.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::http::ErrorBody;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::input::{Params, PathId, PathUid};
use super::list::PageParams;
use super::{Admin, ApiError, Page};
use crate::WorkerContext;
use crate::sessions::{self, Transcript};

pub fn routes() -> OpenApiRouter<Arc<WorkerContext>> {
    OpenApiRouter::new()
        .routes(routes!(session))
        .routes(routes!(transcript))
        .routes(routes!(of_user))
}

/// One of a user's sessions, as listed.
#[derive(Serialize, sqlx::FromRow, utoipa::ToSchema)]
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

/// A user's transcript sessions, newest first (by start, then id).
#[utoipa::path(get, path = "/v1/users/{uid}/sessions", tag = "sessions",
    params(("uid" = String, Path, description = "The user (at most 256 bytes)"), ("external_id" = Option<String>, Query,
        description = "Only the sessions with this sender's session id"), PageParams),
    responses(
        (status = 200, description = "A page of sessions", body = Page<Session>),
        (status = 400, description = "A bad uid, `limit` or `cursor`, or an unknown parameter",
            body = ErrorBody)))]
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

/// `GET /v1/sessions/{id}` answer: a session without its segments.
#[derive(Serialize, utoipa::ToSchema)]
struct SessionSummary {
    id: Uuid,
    uid: String,
    title: Option<String>,
    /// `open` or `completed`.
    status: &'static str,
    started_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
    /// Seconds from the first segment's start to the last one's end.
    duration: f64,
    segment_count: usize,
    participants: Vec<sessions::Participant>,
}

/// One transcript session, without its segments.
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions", params(("id" = Uuid, Path, description = "The session's id")),
    responses(
        (status = 200, description = "The session", body = SessionSummary),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody)))]
async fn session(
    _: Admin,
    State(context): State<Arc<WorkerContext>>,
    PathId(id): PathId,
) -> Result<Json<SessionSummary>, ApiError> {
    let transcript = load(&context, id).await?;
    Ok(Json(SessionSummary {
        id: transcript.id,
        uid: transcript.uid,
        title: transcript.title,
        status: match transcript.completed_at {
            Some(_) => "completed",
            None => "open",
        },
        started_at: transcript.started_at,
        completed_at: transcript.completed_at,
        duration: transcript.duration,
        segment_count: transcript.segments.len(),
        participants: transcript.participants,
    }))
}

/// A session's transcript, as JSON (Reflector's `transcript.completed` shape) or WebVTT.
#[utoipa::path(get, path = "/v1/sessions/{id}/transcript", tag = "sessions",
    params(("id" = Uuid, Path, description = "The session's id"), ("format" = Option<String>, Query, description = "`json` (the default) or `vtt`")),
    responses(
        (status = 200, description = "The transcript", content(
            (Transcript = "application/json"),
            (String = "text/vtt"))),
        (status = 400, description = "A bad id or `format`", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody)))]
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
