//! The users the worker knows, and per-user read side: audio levels and listening status.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::http::ErrorBody;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::input::{Params, PathUid};
use super::list::PageParams;
use super::{Admin, ApiError, Page};
use crate::WorkerContext;
use crate::audio::stream::LevelWindow;

pub fn routes() -> OpenApiRouter<Arc<WorkerContext>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(audio_levels))
        .routes(routes!(listening))
}

/// A user with recent activity.
#[derive(Serialize, utoipa::ToSchema)]
struct User {
    uid: String,
    /// When the newest outbound event of the uid was emitted.
    last_event_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    uid: String,
    last_event_id: Option<Uuid>,
}

/// `GET /v1/users[?since=]`: the uids with an outbound event still kept (every stored inbound
/// event emits one; `RETAIN_OUTBOX` bounds how far back), by uid, with the time of the newest;
/// `since` keeps those active since then. Found by a skip scan of `outbox_by_uid`: one index
/// probe per uid listed (and per uid passed over by `since`), never a read of their events.
/// Listed by uid, not by activity: activity changes while a client pages, uids do not.
#[utoipa::path(get, path = "/v1/users", tag = "users",
    params(("since" = Option<DateTime<Utc>>, Query,
        description = "Only users with an outbound event since then (RFC 3339)"), PageParams),
    responses(
        (status = 200, description = "A page of users, by uid", body = Page<User>),
        (status = 400, description = "A bad `since`, `limit` or `cursor`, or an unknown \
            parameter", body = ErrorBody)))]
async fn list(
    _: Admin,
    State(context): State<Arc<WorkerContext>>,
    mut params: Params,
) -> Result<Json<Page<User>>, ApiError> {
    let since = params.time("since")?;
    let page = params.page::<String>("users")?;
    params.finish()?;
    let rows: Vec<UserRow> = sqlx::query_as(
        "WITH RECURSIVE uids (uid) AS (
             (SELECT uid FROM outbox WHERE uid IS NOT NULL AND uid > COALESCE($1, '')
              ORDER BY uid LIMIT 1)
             UNION ALL
             SELECT (SELECT o.uid FROM outbox o WHERE o.uid IS NOT NULL AND o.uid > uids.uid
                     ORDER BY o.uid LIMIT 1)
             FROM uids WHERE uids.uid IS NOT NULL
         ), active AS (
             SELECT uid, (SELECT o.id FROM outbox o WHERE o.uid = uids.uid
                          ORDER BY o.id DESC LIMIT 1) AS last_event_id
             FROM uids WHERE uid IS NOT NULL
         )
         SELECT uid, last_event_id FROM active
         WHERE $2::uuid IS NULL OR last_event_id >= $2
         LIMIT $3",
    )
    .bind(&page.after)
    .bind(since.map(earliest_id_at))
    .bind(page.fetch())
    .fetch_all(&context.pool)
    .await?;
    let users = rows
        .into_iter()
        .map(|row| User {
            last_event_at: row.last_event_id.and_then(time_of),
            uid: row.uid,
        })
        .collect();
    Ok(Json(page.page(users, |user| user.uid.clone())))
}

/// The smallest time-ordered (version 7) UUID of the millisecond `at`: every id made at or
/// after `at` is at least this.
pub fn earliest_id_at(at: DateTime<Utc>) -> Uuid {
    let millis = at.timestamp_millis().max(0) as u64;
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    Uuid::from_bytes(bytes)
}

/// When a time-ordered (version 7) UUID was made.
pub fn time_of(id: Uuid) -> Option<DateTime<Utc>> {
    let (seconds, nanos) = id.get_timestamp()?.to_unix();
    DateTime::from_timestamp(seconds as i64, nanos)
}

/// A user's audio level windows starting in `[from, to)`, newest first.
#[utoipa::path(get, path = "/v1/users/{uid}/audio-levels", tag = "users",
    params(("uid" = String, Path, description = "The user (at most 256 bytes)"),
        ("from" = Option<DateTime<Utc>>, Query, description = "Windows starting at or after"),
        ("to" = Option<DateTime<Utc>>, Query, description = "Windows starting before"),
        PageParams),
    responses(
        (status = 200, description = "A page of windows", body = Page<LevelWindow>),
        (status = 400, description = "A bad uid, time, `limit` or `cursor`, or an unknown \
            parameter", body = ErrorBody)))]
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

/// Whether a user is listening (sending audio) now.
#[derive(Serialize, sqlx::FromRow, utoipa::ToSchema)]
struct Listening {
    uid: String,
    listening: bool,
    session_id: Option<Uuid>,
    sample_rate: Option<i32>,
    last_chunk_at: Option<DateTime<Utc>>,
}

/// Whether a user is listening now, and since which chunk.
#[utoipa::path(get, path = "/v1/users/{uid}/listening", tag = "users", params(("uid" = String, Path, description = "The user (at most 256 bytes)")),
    responses(
        (status = 200, description = "The user's listening status (not listening when \
            unknown)", body = Listening),
        (status = 400, description = "A bad uid", body = ErrorBody)))]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_made_at_a_time_is_no_less_than_the_earliest_id_of_that_time() {
        let id = Uuid::now_v7();
        let at = time_of(id).unwrap();
        assert!(earliest_id_at(at) <= id);
        assert!(earliest_id_at(at + chrono::TimeDelta::milliseconds(1)) > id);
        assert_eq!(time_of(earliest_id_at(at)), None, "not a v7 id itself");
    }
}
