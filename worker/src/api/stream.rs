//! `GET /v1/stream?uid=&types=`: the live stream of outbound events as Server-Sent Events
//! ([`crate::stream`] does the work). Each event is `id: <position>`, `event: <type>` and
//! `data: <the JSON a webhook delivery carries>`; a client resumes with `Last-Event-ID` (or
//! `?last_event_id=`, for a page that reloads), and a comment line keeps an idle stream open.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use shared::http::ErrorBody;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::input::Params;
use super::{Admin, ApiError};
use crate::WorkerContext;
use crate::stream::{Filter, Position, client};

pub fn routes() -> OpenApiRouter<Arc<WorkerContext>> {
    OpenApiRouter::new().routes(routes!(stream))
}

/// The live stream of outbound events as Server-Sent Events, from every worker.
///
/// Each event is `id: <position>`, `event: <type>` and `data: <the body a webhook delivery
/// carries>`; resume with `Last-Event-ID`.
#[utoipa::path(get, path = "/v1/stream", tag = "outbound events",
    params(
        ("uid" = Option<String>, Query, description = "Only this user's events"),
        ("types" = Option<String>, Query,
            description = "A comma list of types and prefixes (`sleep.*`), or `*`"),
        ("last_event_id" = Option<String>, Query,
            description = "Where to resume, for a client that cannot send `Last-Event-ID`"),
        ("Last-Event-ID" = Option<String>, Header, description = "Where to resume")),
    responses(
        (status = 200, description = "The stream", body = String, content_type = "text/event-stream"),
        (status = 400, description = "A bad `uid`, `types` or resume point", body = ErrorBody)))]
async fn stream(
    _: Admin,
    State(context): State<Arc<WorkerContext>>,
    mut params: Params,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let (uid, types) = (params.text("uid")?, params.text("types")?);
    let last_event_id = params.text("last_event_id")?;
    params.finish()?;
    let filter = Filter::parse(uid, types.as_deref())
        .map_err(|error| ApiError::invalid(error.field, error.problem))?;
    let resume = resume_point(&headers, last_event_id.as_deref())?;
    let keep_alive = KeepAlive::new().interval(context.settings.stream.keep_alive);
    let mut items = client::start(context, filter, resume);
    let events = futures_util::stream::poll_fn(move |cx| {
        items
            .poll_recv(cx)
            .map(|item| item.map(|item| Ok::<_, Infallible>(sse_event(item))))
    });
    Ok(Sse::new(events).keep_alive(keep_alive))
}

/// `Last-Event-ID`, else `?last_event_id=`; a value that is no position is a 400 naming it.
fn resume_point(headers: &HeaderMap, query: Option<&str>) -> Result<Option<Position>, ApiError> {
    let header = headers
        .get("last-event-id")
        .map(|header| header.to_str().unwrap_or("?"));
    let (field, value) = match (header, query) {
        (Some(header), _) => ("Last-Event-ID", header),
        (None, Some(value)) => ("last_event_id", value),
        (None, None) => return Ok(None),
    };
    if value.trim().is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|problem| ApiError::invalid(field, problem))
}

fn sse_event(item: client::Item) -> Event {
    match item {
        client::Item::Event(event) => Event::default()
            .id(event.position.to_string())
            .event(&event.event_type)
            .data(&event.body),
        client::Item::Start(position) => Event::default().id(position.to_string()),
    }
}
