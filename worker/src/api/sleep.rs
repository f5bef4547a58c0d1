//! Sleep reports and per-user sleep statistics.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Admin, ApiError, Page};
use crate::WorkerContext;

pub fn routes() -> Router<Arc<WorkerContext>> {
    Router::new()
        .route("/v1/users/{uid}/sleep/reports", get(reports))
        .route("/v1/users/{uid}/sleep/stats", get(stats))
}

const PAGE_LIMIT: i64 = 100;

#[derive(Deserialize)]
struct ReportsQuery {
    /// The cursor of the previous page: the session id it ended with.
    after: Option<String>,
}

#[derive(Serialize, sqlx::FromRow)]
struct Report {
    session_id: String,
    start_time: Option<DateTime<Utc>>,
    end_time: Option<DateTime<Utc>>,
    time_in_sleep_s: Option<i64>,
    sleep_efficiency: Option<f64>,
    session: Option<serde_json::Value>,
    stat: Option<serde_json::Value>,
}

/// `GET /v1/users/{uid}/sleep/reports`: newest session first.
async fn reports(
    _: Admin,
    State(context): State<Arc<WorkerContext>>,
    Path(uid): Path<String>,
    Query(query): Query<ReportsQuery>,
) -> Result<Json<Page<Report>>, ApiError> {
    let items: Vec<Report> = sqlx::query_as(
        "SELECT session_id, start_time, end_time, time_in_sleep_s, sleep_efficiency, session, stat
         FROM sleep_reports WHERE uid = $1
           AND ($2::text IS NULL OR (start_time, session_id) < (SELECT start_time, session_id FROM sleep_reports WHERE uid = $1 AND session_id = $2))
         ORDER BY start_time DESC NULLS LAST, session_id DESC LIMIT $3",
    )
    .bind(&uid)
    .bind(&query.after)
    .bind(PAGE_LIMIT)
    .fetch_all(&context.pool)
    .await?;
    let next = (items.len() as i64 == PAGE_LIMIT)
        .then(|| items.last().map(|report| report.session_id.clone()))
        .flatten();
    Ok(Json(Page { items, next }))
}

#[derive(Serialize, sqlx::FromRow)]
struct Stats {
    total_sessions: i64,
    total_sleep_time_s: i64,
    /// The mean sleep efficiency of the last 30 sessions that have one.
    sleep_efficiency_avg_last_30: Option<f64>,
}

/// `GET /v1/users/{uid}/sleep/stats`
async fn stats(
    _: Admin,
    State(context): State<Arc<WorkerContext>>,
    Path(uid): Path<String>,
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
