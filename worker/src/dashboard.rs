//! `/dashboard`: the operator's web page, served from files embedded in the binary at build
//! time (`worker/dashboard/`), so running the worker needs nothing else: plain JavaScript
//! modules, no toolchain, nothing from another site. The page calls only the management API
//! and `/metrics`: it signs in at `POST /v1/auth/session` and follows `GET /v1/stream`. No
//! sign-in is needed to load the page itself; every piece of data behind it needs one.

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use shared::http::error_response;

use crate::WorkerContext;

const HTML: &str = "text/html; charset=utf-8";
const SCRIPT: &str = "text/javascript; charset=utf-8";
const STYLE: &str = "text/css; charset=utf-8";

/// Every file the page is made of, by its path under `/dashboard/`, with its content type.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.css", STYLE, include_str!("../dashboard/app.css")),
    (
        "js/main.js",
        SCRIPT,
        include_str!("../dashboard/js/main.js"),
    ),
    ("js/api.js", SCRIPT, include_str!("../dashboard/js/api.js")),
    ("js/dom.js", SCRIPT, include_str!("../dashboard/js/dom.js")),
    (
        "js/charts.js",
        SCRIPT,
        include_str!("../dashboard/js/charts.js"),
    ),
    (
        "js/overview.js",
        SCRIPT,
        include_str!("../dashboard/js/overview.js"),
    ),
    (
        "js/users.js",
        SCRIPT,
        include_str!("../dashboard/js/users.js"),
    ),
    (
        "js/user.js",
        SCRIPT,
        include_str!("../dashboard/js/user.js"),
    ),
    (
        "js/endpoints.js",
        SCRIPT,
        include_str!("../dashboard/js/endpoints.js"),
    ),
    (
        "js/dead_letters.js",
        SCRIPT,
        include_str!("../dashboard/js/dead_letters.js"),
    ),
];

const INDEX: &str = include_str!("../dashboard/index.html");

/// Everything from this origin only: no inline script, no other site, never framed.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self'; form-action 'self'; \
                      frame-ancestors 'none'; base-uri 'none'";

pub fn routes() -> Router<Arc<WorkerContext>> {
    Router::new()
        .route("/dashboard", get(|| async { asset(HTML, INDEX) }))
        .route(
            "/dashboard/",
            get(|| async { Redirect::permanent("/dashboard") }),
        )
        .route("/dashboard/{*path}", get(file))
}

/// `GET /dashboard/<path>`: one of [`ASSETS`], or 404.
async fn file(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == path) {
        Some((_, content_type, body)) => asset(content_type, body),
        None => error_response(StatusCode::NOT_FOUND, "not_found", "no such dashboard file"),
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    (headers, body).into_response()
}
