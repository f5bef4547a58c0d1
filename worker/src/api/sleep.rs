//! Sleep reports and per-user sleep statistics.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::http::ErrorBody;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::input::{Params, PathUid};
use super::list::PageParams;
use super::{Admin, ApiError, Page};
use crate::WorkerContext;

pub fn routes() -> OpenApiRouter<Arc<WorkerContext>> {
    OpenApiRouter::new()
        .routes(routes!(reports))
        .routes(routes!(stats))
}

/// One sleep session's report, as Asleep sent it, with the columns read from it.
#[derive(Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = SleepReport)]
struct Report {
    session_id: String,
    start_time: Option<DateTime<Utc>>,
    end_time: Option<DateTime<Utc>>,
    time_in_sleep_s: Option<i64>,
    sleep_efficiency: Option<f64>,
    session: Option<serde_json::Value>,
    stat: Option<serde_json::Value>,
}

/// A report's place in the list: its start (reports without one come last) and session id.
type ReportKey = (Option<DateTime<Utc>>, String);

/// A user's sleep reports, newest session first; reports without a start time follow all the
/// others, by session id.
#[utoipa::path(get, path = "/v1/users/{uid}/sleep/reports", tag = "sleep",
    params(("uid" = String, Path, description = "The user (at most 256 bytes)"), PageParams),
    responses(
        (status = 200, description = "A page of reports", body = Page<Report>),
        (status = 400, description = "A bad uid, `limit` or `cursor`, or an unknown parameter",
            body = ErrorBody)))]
async fn reports(
    _: Admin,
    State(context): State<Arc<WorkerContext>>,
    PathUid(uid): PathUid,
    mut params: Params,
) -> Result<Json<Page<Report>>, ApiError> {
    let page = params.page::<ReportKey>("sleep-reports")?;
    params.finish()?;
    let (start_before, session_before) = page.after.clone().unzip();
    let start_before = start_before.flatten();
    // After a report with a start: those with an earlier start (or the same start and a lower
    // id), then every one without a start. After one without a start: those without, lower id.
    let rows: Vec<Report> = sqlx::query_as(
        "SELECT session_id, start_time, end_time, time_in_sleep_s, sleep_efficiency, session, stat
         FROM sleep_reports WHERE uid = $1
           AND ($3::text IS NULL
                OR ($2::timestamptz IS NOT NULL
                    AND (start_time IS NULL OR (start_time, session_id) < ($2, $3)))
                OR ($2::timestamptz IS NULL AND start_time IS NULL AND session_id < $3))
         ORDER BY start_time DESC NULLS LAST, session_id DESC LIMIT $4",
    )
    .bind(&uid)
    .bind(start_before)
    .bind(&session_before)
    .bind(page.fetch())
    .fetch_all(&context.pool)
    .await?;
    Ok(Json(page.page(rows, |report| {
        (report.start_time, report.session_id.clone())
    })))
}

/// A user's sleep over every report.
#[derive(Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = SleepStats)]
struct Stats {
    total_sessions: i64,
    total_sleep_time_s: i64,
    /// The mean sleep efficiency of the last 30 sessions that have one.
    sleep_efficiency_avg_last_30: Option<f64>,
}

/// A user's sleep statistics.
#[utoipa::path(get, path = "/v1/users/{uid}/sleep/stats", tag = "sleep", params(("uid" = String, Path, description = "The user (at most 256 bytes)")),
    responses(
        (status = 200, description = "The statistics", body = Stats),
        (status = 400, description = "A bad uid", body = ErrorBody)))]
async fn stats(
    _: Admin,
    State(context): State<Arc<WorkerContext>>,
    PathUid(uid): PathUid,
) -> Result<Json<Stats>, ApiError> {
    let stats: Stats = sqlx::query_as(
        "SELECT count(*) AS total_sessions,
                COALESCE(sum(time_in_sleep_s), 0)::bigint AS total_sleep_time_s,
                (SELECT avg(sleep_efficiency) FROM (
                    SELECT sleep_efficiency FROM sleep_reports
                    WHERE uid = $1 AND sleep_efficiency IS NOT NULL
                    ORDER BY start_time DESC NULLS LAST LIMIT 30) recent) AS sleep_efficiency_avg_last_30
         FROM sleep_reports WHERE uid = $1",
    )
    .bind(&uid)
    .fetch_one(&context.pool)
    .await?;
    Ok(Json(stats))
}
