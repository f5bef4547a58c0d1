//! What both processes' OpenAPI 3.1 documents share. Each process builds its document from its
//! route table, an `utoipa_axum::router::OpenApiRouter` where `routes!` registers a handler's
//! route and its `#[utoipa::path]` operation in one step, so nothing is written twice and the
//! router cannot serve a route the document does not list. This module holds:
//! - [`Served`]: the document as `GET /openapi.json` answers it, built once on first request;
//! - [`bearer`], the security scheme of a bearer token, and [`error`], the response every 4xx
//!   and 5xx is ([`crate::http::ErrorBody`]); the operations of the handlers both processes
//!   share (`/healthz`, `/metrics`) are beside them in [`crate::http`];
//! - [`finish`]: what every document gets once its operations are in (the error schema, unique
//!   operation ids), and [`operations`], a path's operations.
//! - `check` (feature `testkit`): what the tests hold a served document and real answers to.

#[cfg(feature = "testkit")]
pub mod check;

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, RefOr, ResponseBuilder};
use utoipa::{PartialSchema, ToSchema};

use crate::http::ErrorBody;

/// A process's document as served: built by `build` on first use, then kept as JSON.
pub struct Served {
    json: OnceLock<String>,
    build: fn() -> OpenApi,
}

impl Served {
    pub const fn new(build: fn() -> OpenApi) -> Self {
        Served {
            json: OnceLock::new(),
            build,
        }
    }

    /// The answer of `GET /openapi.json`.
    pub fn response(&'static self) -> Response {
        let json = self
            .json
            .get_or_init(|| (self.build)().to_json().expect("the document serializes"));
        ([(header::CONTENT_TYPE, "application/json")], json.as_str()).into_response()
    }
}

/// `Authorization: Bearer <token>`.
pub fn bearer() -> SecurityScheme {
    SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build())
}

/// An error answer: `{"error","message"}` plus `"field"`, described as `description`.
pub fn error(description: &str) -> RefOr<utoipa::openapi::Response> {
    let content = ContentBuilder::new()
        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
            ErrorBody::name(),
        ))))
        .build();
    ResponseBuilder::new()
        .description(description)
        .content("application/json", content)
        .build()
        .into()
}

/// What every document gets once its operations are in: the `ErrorBody` schema (so that
/// [`error`]'s reference resolves), and operation ids that are unique: `<tag>_<handler>`
/// (`endpoints_list`), since handlers of different modules share names (`list`, `read`).
pub fn finish(document: &mut OpenApi) {
    let components = document.components.get_or_insert_with(Default::default);
    components
        .schemas
        .insert(ErrorBody::name().into_owned(), ErrorBody::schema());
    for item in document.paths.paths.values_mut() {
        for operation in operations(item) {
            let tag = operation.tags.iter().flatten().next().cloned();
            if let (Some(tag), Some(handler)) = (tag, &operation.operation_id) {
                operation.operation_id = Some(format!("{}_{handler}", tag.replace(' ', "_")));
            }
        }
    }
}

/// The operations of a path.
pub fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.post,
        &mut item.patch,
        &mut item.put,
        &mut item.delete,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}
