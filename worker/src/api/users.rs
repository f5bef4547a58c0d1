//! Per-user read side: audio levels and listening status.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::input::{Params, PathUid};
use super::{Admin, ApiError, Page};
use crate::WorkerContext;
use crate::audio::stream::LevelWindow;

pub fn routes() -> Router<Arc<WorkerContext>> {
    Router::new()
        .route("/v1/users/{uid}/audio-levels", get(audio_levels))
        .route("/v1/users/{uid}/listening", get(listening))
}

/// `GET /v1/users/{uid}/audio-levels?from=&to=`: windows starting in `[from, to)`, newest
/// first.
async fn audio_levels(
    _: Admin,
    State(context): State<Arc<WorkerContext>>,
    PathUid(uid): PathUid,
    mut params: Params,
) -> Result<Json<Page<LevelWindow>>, ApiError> {
    let (from, to) = (params.time("from")?, params.time("to")?);
    let page = params.page::<DateTime<Utc>>("audio-levels")?;
    params.finish()?;
    let windows: Vec<LevelWindow> = sqlx::query_as(
        "SELECT start_at AS start, end_at AS end, rms_dbfs, peak_dbfs, level FROM audio_windows
         WHERE uid = $1 AND start_at >= COALESCE($2, '-infinity')
           AND start_at < LEAST(COALESCE($3, 'infinity'), COALESCE($4, 'infinity'))
         ORDER BY start_at DESC LIMIT $5",
    )
    .bind(&uid)
    .bind(from)
    .bind(to)
    .bind(page.after)
    .bind(page.fetch())
    .fetch_all(&context.pool)
    .await?;
    Ok(Json(page.page(windows, |window| window.start)))
}

#[derive(Serialize, sqlx::FromRow)]
struct Listening {
    uid: String,
    listening: bool,
    session_id: Option<Uuid>,
    sample_rate: Option<i32>,
    last_chunk_at: Option<DateTime<Utc>>,
}

/// `GET /v1/users/{uid}/listening`
async fn listening(
    _: Admin,
    State(context): State<Arc<WorkerContext>>,
    PathUid(uid): PathUid,
) -> Result<Json<Listening>, ApiError> {
    let found: Option<Listening> = sqlx::query_as(
        "SELECT uid, listening, session_id, sample_rate, last_chunk_at FROM audio_streams WHERE uid = $1",
    )
    .bind(&uid)
    .fetch_optional(&context.pool)
    .await?;
    Ok(Json(found.unwrap_or(Listening {
        uid,
        listening: false,
        session_id: None,
        sample_rate: None,
        last_chunk_at: None,
    })))
}
