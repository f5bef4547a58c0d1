//! The management API's extractors, so every input is parsed at the edge and every bad one is
//! a JSON 400 naming what is wrong (never axum's plain-text rejections):
//! - [`Params`]: the query, taken parameter by parameter; a bad value names its parameter, and
//!   one the route does not know is refused rather than silently ignored;
//! - [`PathId`] and [`PathUid`]: a route's one path parameter as a UUID, or as a uid held to
//!   the bounds ingest holds uids to;
//! - [`JsonBody`]: a JSON body (415 without `Content-Type: application/json`), whose errors
//!   name the field at fault.

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::ApiError;
use super::list::PageRequest;

/// A request's query parameters, not yet taken.
#[derive(Debug)]
pub struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
        Ok(Params(pairs))
    }
}

impl Params {
    /// Takes parameter `name`, if given; given twice is a 400.
    pub fn text(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        let mut values = Vec::new();
        self.0.retain(|(key, value)| {
            let taken = key == name;
            if taken {
                values.push(value.clone());
            }
            !taken
        });
        match values.len() {
            0 | 1 => Ok(values.pop()),
            _ => Err(ApiError::invalid(name, "given more than once")),
        }
    }

    /// Takes parameter `name` as a UUID.
    pub fn uuid(&mut self, name: &str) -> Result<Option<Uuid>, ApiError> {
        self.text(name)?
            .map(|text| {
                Uuid::parse_str(&text)
                    .map_err(|_| ApiError::invalid(name, format!("{text:?} is not a UUID")))
            })
            .transpose()
    }

    /// Takes parameter `name` as an RFC 3339 time.
    pub fn time(&mut self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        self.text(name)?.map(|text| time(name, &text)).transpose()
    }

    /// Takes parameter `name`, which must be one of `allowed`.
    pub fn one_of(&mut self, name: &str, allowed: &[&str]) -> Result<Option<String>, ApiError> {
        match self.text(name)? {
            Some(value) if !allowed.contains(&value.as_str()) => Err(ApiError::invalid(
                name,
                format!("{value:?} is not one of {}", allowed.join(", ")),
            )),
            value => Ok(value),
        }
    }

    /// Takes `limit` and `cursor`: which page of list `list` is asked for.
    pub fn page<K: Serialize + DeserializeOwned>(
        &mut self,
        list: &'static str,
    ) -> Result<PageRequest<K>, ApiError> {
        let limit = self.text("limit")?;
        let cursor = self.text("cursor")?;
        PageRequest::parse(list, limit.as_deref(), cursor.as_deref())
    }

    /// Refuses any parameter not taken: a misspelt or unsupported one is a 400 naming it.
    pub fn finish(self) -> Result<(), ApiError> {
        match self.0.into_iter().next() {
            None => Ok(()),
            Some((name, _)) => Err(ApiError::invalid(name, "not a parameter of this route")),
        }
    }
}

/// `text` as an RFC 3339 time, else a 400 about `field`.
pub fn time(field: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|_| {
            let hint = if text.contains(' ') {
                " (a + in the offset must be sent as %2B)"
            } else {
                ""
            };
            ApiError::invalid(field, format!("{text:?} is not an RFC 3339 time{hint}"))
        })
}

/// A route's one path parameter, with its name.
async fn path_parameter<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<(String, String), ApiError> {
    let Path(mut pairs) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
        .await
        .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    pairs
        .pop()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a route without a path parameter")))
}

/// A route's path parameter (`{id}`, `{event_id}`) as a UUID.
#[derive(Debug, Clone, Copy)]
pub struct PathId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let (name, value) = path_parameter(parts, state).await?;
        Uuid::parse_str(&value)
            .map(PathId)
            .map_err(|_| ApiError::invalid(name, format!("{value:?} is not a UUID")))
    }
}

/// A route's `{uid}`, held to the bounds ingest holds uids to (non-empty, at most 256 bytes,
/// no NUL): a uid ingest could never have stored is a 400.
#[derive(Debug, Clone)]
pub struct PathUid(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathUid {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let (name, uid) = path_parameter(parts, state).await?;
        shared::payload::fields::identifier(&uid)
            .map_err(|problem| ApiError::invalid(name, problem))?;
        Ok(PathUid(uid))
    }
}

/// A JSON body of type `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers().get(CONTENT_TYPE)) {
            return Err(ApiError::UnsupportedMediaType(
                "the body must be JSON, sent with Content-Type: application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| ApiError::Rejected(rejection.status(), rejection.body_text()))?;
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let field = field_at_fault(&error.path().to_string(), &error.inner().to_string());
            ApiError::invalid(field, error.inner())
        })?;
        // Nothing but white space may follow the value.
        deserializer
            .end()
            .map_err(|error| ApiError::invalid("body", error))?;
        Ok(JsonBody(value))
    }
}

/// `application/json`, or any `+json` type, with or without parameters.
fn is_json(content_type: Option<&axum::http::HeaderValue>) -> bool {
    let Some(essence) = content_type
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
    else {
        return false;
    };
    let essence = essence.trim().to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The field a body error is about: its path when it has one, else the field serde names in
/// backticks (a missing or unknown field), else `body` (the JSON itself is broken).
fn field_at_fault(path: &str, problem: &str) -> String {
    // serde_path_to_error writes `.` for the root and `?` where the JSON broke off.
    if !matches!(path, "." | "?" | "") {
        return path.to_owned();
    }
    problem
        .split_once("field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(name, _)| name.to_owned())
        .unwrap_or_else(|| "body".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_error_names_the_field_at_fault() {
        assert_eq!(
            field_at_fault("event_types[0]", "invalid type"),
            "event_types[0]"
        );
        assert_eq!(
            field_at_fault(".", "missing field `url` at line 1 column 2"),
            "url"
        );
        assert_eq!(
            field_at_fault(".", "unknown field `urls`, expected one of `url`"),
            "urls"
        );
        assert_eq!(field_at_fault(".", "EOF while parsing a value"), "body");
        assert_eq!(field_at_fault("?", "EOF while parsing an object"), "body");
    }

    #[test]
    fn json_content_types_are_recognised() {
        let value = |text: &'static str| axum::http::HeaderValue::from_static(text);
        assert!(is_json(Some(&value("application/json"))));
        assert!(is_json(Some(&value("Application/JSON; charset=utf-8"))));
        assert!(is_json(Some(&value("application/merge-patch+json"))));
        assert!(!is_json(Some(&value("text/plain"))));
        assert!(!is_json(None));
    }

    #[test]
    fn every_parameter_is_taken_once_and_the_rest_are_refused() {
        let mut params = Params(vec![
            ("uid".into(), "u1".into()),
            ("since".into(), "2026-01-01T00:00:00Z".into()),
            ("sicne".into(), "x".into()),
        ]);
        assert_eq!(params.text("uid").unwrap().as_deref(), Some("u1"));
        assert!(params.time("since").unwrap().is_some());
        match params.finish() {
            Err(ApiError::Invalid { field, .. }) => assert_eq!(field, "sicne"),
            other => panic!("{other:?}"),
        }
        let mut twice = Params(vec![("uid".into(), "a".into()), ("uid".into(), "b".into())]);
        assert!(twice.text("uid").is_err());
    }
}
