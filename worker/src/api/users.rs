//! Per-user read side: audio levels and listening status.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Admin, ApiError, Page};
use crate::WorkerContext;
use crate::audio::stream::LevelWindow;

pub fn routes() -> Router<Arc<WorkerContext>> {
    Router::new()
        .route("/v1/users/{uid}/audio-levels", get(audio_levels))
        .route("/v1/users/{uid}/listening", get(listening))
}

/// The most windows one page holds.
const PAGE_LIMIT: i64 = 1000;

#[derive(Deserialize)]
struct LevelsQuery {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    /// The cursor from the previous page: the start of its last window.
    after: Option<DateTime<Utc>>,
}

/// `GET /v1/users/{uid}/audio-levels?from=&to=`: windows by start time, oldest first.
async fn audio_levels(
    _: Admin,
    State(context): State<Arc<WorkerContext>>,
    Path(uid): Path<String>,
    Query(query): Query<LevelsQuery>,
) -> Result<Json<Page<LevelWindow>>, ApiError> {
    let windows: Vec<LevelWindow> = sqlx::query_as(
        "SELECT start_at AS start, end_at AS end, rms_dbfs, peak_dbfs, level FROM audio_windows
         WHERE uid = $1
           AND ($2::timestamptz IS NULL OR start_at >= $2) AND ($3::timestamptz IS NULL OR start_at > $3)
           AND ($4::timestamptz IS NULL OR start_at < $4)
         ORDER BY start_at LIMIT $5",
    )
    .bind(&uid)
    .bind(query.from)
    .bind(query.after)
    .bind(query.to)
    .bind(PAGE_LIMIT)
    .fetch_all(&context.pool)
    .await?;
    let next = (windows.len() as i64 == PAGE_LIMIT)
        .then(|| windows.last().map(|window| window.start.to_rfc3339()))
        .flatten();
    Ok(Json(Page {
        items: windows,
        next,
    }))
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
    Path(uid): Path<String>,
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
