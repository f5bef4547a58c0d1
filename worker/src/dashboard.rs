//! `/dashboard`: the operator's web page, served from files embedded in the binary at build
//! time (`worker/dashboard/`), so running the worker needs nothing else: plain JavaScript
//! modules, no toolchain, nothing from another site. The page calls only the management API
//! and `/metrics`: it signs in at `POST /v1/auth/session` and follows `GET /v1/stream`. No
//! sign-in is needed to load the page itself; every piece of data behind it needs one.

use std::sync::Arc;

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use shared::http::error_response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::WorkerContext;

const HTML: &str = "text/html; charset=utf-8";
const SCRIPT: &str = "text/javascript; charset=utf-8";
const STYLE: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// `(path, content type, content)` of the file `worker/dashboard/<path>`, embedded.
macro_rules! embedded {
    ($path:literal, $content_type:expr) => {
        (
            $path,
            $content_type,
            include_str!(concat!("../dashboard/", $path)),
        )
    };
}

/// Every file the page is made of, by its path under `/dashboard/`, with its content type.
const ASSETS: &[(&str, &str, &str)] = &[
    embedded!("app.css", STYLE),
    embedded!("favicon.svg", SVG),
    embedded!("js/main.js", SCRIPT),
    embedded!("js/api.js", SCRIPT),
    embedded!("js/dom.js", SCRIPT),
    embedded!("js/charts.js", SCRIPT),
    embedded!("js/overview.js", SCRIPT),
    embedded!("js/users.js", SCRIPT),
    embedded!("js/user.js", SCRIPT),
    embedded!("js/transcript.js", SCRIPT),
    embedded!("js/endpoints.js", SCRIPT),
    embedded!("js/dead_letters.js", SCRIPT),
];

const INDEX: &str = include_str!("../dashboard/index.html");

/// Everything from this origin only: no inline script, no other site, never framed.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self'; form-action 'self'; \
                      frame-ancestors 'none'; base-uri 'none'";

pub fn routes() -> OpenApiRouter<Arc<WorkerContext>> {
    OpenApiRouter::new()
        .routes(routes!(index))
        .routes(routes!(slash))
        .routes(routes!(file))
}

/// The dashboard's page; it signs in itself.
#[utoipa::path(get, path = "/dashboard", tag = "dashboard", security(()),
    responses((status = 200, description = "The page", body = String, content_type = "text/html")))]
async fn index() -> Response {
    asset(HTML, INDEX)
}

/// `/dashboard/` is the page too.
#[utoipa::path(get, path = "/dashboard/", tag = "dashboard", security(()),
    responses((status = 308, description = "To `/dashboard`")))]
async fn slash() -> Redirect {
    Redirect::permanent("/dashboard")
}

/// One of the page's files (scripts and style).
#[utoipa::path(get, path = "/dashboard/{*path}", tag = "dashboard", security(()),
    params(("path" = String, Path, description = "The file, such as `js/main.js`")),
    responses(
        (status = 200, description = "The file", body = String, content_type = "text/javascript"),
        (status = 404, description = "No such file", body = shared::http::ErrorBody)))]
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The files under `dir`, as paths relative to `root` with `/` between folders.
    fn files(root: &Path, dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("the dashboard's folder") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                files(root, &path, found);
            } else {
                let relative = path.strip_prefix(root).expect("under the root");
                found.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }

    /// A file added to `worker/dashboard/` but not to [`super::ASSETS`] would be a 404 that
    /// only a browser finds.
    #[test]
    fn every_file_of_the_page_is_embedded() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboard");
        let mut on_disk = Vec::new();
        files(&root, &root, &mut on_disk);
        on_disk.retain(|path| path != "index.html");
        on_disk.sort();
        let mut embedded: Vec<String> = super::ASSETS
            .iter()
            .map(|(path, _, _)| path.to_string())
            .collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
    }
}
