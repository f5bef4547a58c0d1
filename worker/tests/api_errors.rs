//! One error shape from every route of the management API: a table of bad requests (bad ids,
//! uids, parameters, cursors, times and bodies, a wrong content type, unknown routes and ids,
//! a wrong method), each answered with its status and `{"error","message"}` JSON, plus the
//! `field` at fault where there is one (and named in the message).

mod harness;

use base64::Engine;
use harness::TestWorker;
use reqwest::Method;
use serde_json::Value;

/// A bad request and what it must be answered with.
struct Case {
    method: Method,
    path: String,
    /// The body and its content type, if any.
    body: Option<(&'static str, &'static str)>,
    status: u16,
    field: Option<&'static str>,
}

fn case(method: Method, path: impl Into<String>, status: u16, field: Option<&'static str>) -> Case {
    Case {
        method,
        path: path.into(),
        body: None,
        status,
        field,
    }
}

fn bad(path: impl Into<String>, field: &'static str) -> Case {
    case(Method::GET, path, 400, Some(field))
}

fn body(
    method: Method,
    path: &str,
    content_type: &'static str,
    text: &'static str,
    status: u16,
    field: Option<&'static str>,
) -> Case {
    Case {
        body: Some((content_type, text)),
        ..case(method, path, status, field)
    }
}

/// A cursor of another list, well formed.
fn cursor_of(list: &str) -> String {
    let json = serde_json::json!([list, uuid::Uuid::now_v7()]).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn cases() -> Vec<Case> {
    let id = uuid::Uuid::now_v7();
    let long_uid = "u".repeat(300);
    let mut cases = Vec::new();
    // A path id that is not a UUID, on every route that takes one.
    for (method, path) in [
        (Method::GET, "/v1/endpoints/x"),
        (Method::DELETE, "/v1/endpoints/x"),
        (Method::POST, "/v1/endpoints/x/test"),
        (Method::POST, "/v1/endpoints/x/rotate-secret"),
        (
            Method::POST,
            "/v1/endpoints/x/recover?since=2026-01-01T00:00:00Z",
        ),
        (Method::GET, "/v1/endpoints/x/stats"),
        (
            Method::POST,
            "/v1/endpoints/x/replay?since=2026-01-01T00:00:00Z",
        ),
        (Method::GET, "/v1/deliveries/x"),
        (Method::POST, "/v1/deliveries/x/retry"),
        (Method::GET, "/v1/sessions/x"),
        (Method::GET, "/v1/sessions/x/transcript"),
        (Method::POST, "/v1/dead-letters/x/redrive"),
        (Method::GET, "/v1/outbound-events/x"),
    ] {
        cases.push(case(method, path, 400, Some("id")));
    }
    cases.push(body(
        Method::PATCH,
        "/v1/endpoints/x",
        "application/json",
        "{}",
        400,
        Some("id"),
    ));
    cases.push(bad("/v1/events/not-an-id", "event_id"));
    // A uid ingest could never have stored (too long, or holding NUL), on every route with one.
    for uid in [long_uid.as_str(), "a%00b"] {
        for (method, route) in [
            (Method::GET, "audio-levels"),
            (Method::GET, "listening"),
            (Method::GET, "sleep/reports"),
            (Method::GET, "sleep/stats"),
            (Method::GET, "sessions"),
            (Method::GET, "erasure"),
        ] {
            cases.push(case(
                method,
                format!("/v1/users/{uid}/{route}"),
                400,
                Some("uid"),
            ));
        }
        cases.push(case(
            Method::DELETE,
            format!("/v1/users/{uid}"),
            400,
            Some("uid"),
        ));
    }
    // Page parameters, on every list.
    for list in [
        "/v1/endpoints",
        "/v1/deliveries",
        "/v1/dead-letters",
        "/v1/users/u1/audio-levels",
        "/v1/users/u1/sleep/reports",
        "/v1/users/u1/sessions",
        "/v1/outbound-events",
        "/v1/users",
    ] {
        for limit in ["0", "1001", "-5", "ten"] {
            cases.push(bad(format!("{list}?limit={limit}"), "limit"));
        }
        cases.push(bad(format!("{list}?cursor=garbage"), "cursor"));
        cases.push(bad(
            format!("{list}?cursor={}", cursor_of("no-such-list")),
            "cursor",
        ));
        cases.push(bad(format!("{list}?after=x"), "after"));
        cases.push(bad(format!("{list}?limit=5&limit=6"), "limit"));
    }
    // A cursor of one list is not one of another.
    cases.push(bad(
        format!("/v1/endpoints?cursor={}", cursor_of("deliveries")),
        "cursor",
    ));
    // Filters.
    for (path, field) in [
        ("/v1/deliveries?status=lost", "status"),
        ("/v1/deliveries?endpoint_id=x", "endpoint_id"),
        ("/v1/deliveries?event_type=memory.deleted", "event_type"),
        ("/v1/deliveries?since=yesterday", "since"),
        ("/v1/deliveries?until=2026-13-01T00:00:00Z", "until"),
        ("/v1/users/u1/audio-levels?from=x", "from"),
        ("/v1/users/u1/audio-levels?to=1700000000", "to"),
        ("/v1/outbound-events?type=nope", "type"),
        ("/v1/outbound-events?since=x", "since"),
        ("/v1/users?since=x", "since"),
        ("/v1/users/u1/sessions?external=x", "external"),
    ] {
        cases.push(bad(path, field));
    }
    cases.push(bad(
        format!("/v1/sessions/{id}/transcript?format=pdf"),
        "format",
    ));
    cases.push(case(
        Method::POST,
        format!("/v1/endpoints/{id}/recover"),
        400,
        Some("since"),
    ));
    // An unencoded + in the offset arrives as a space.
    let unencoded = format!("/v1/endpoints/{id}/recover?since=2026-01-01T00:00:00+00:00");
    cases.push(case(Method::POST, unencoded, 400, Some("since")));
    // Bodies.
    let json = "application/json";
    let endpoints = "/v1/endpoints";
    let create =
        |text: &'static str, field| body(Method::POST, endpoints, json, text, 400, Some(field));
    cases.extend([
        body(
            Method::POST,
            endpoints,
            "text/plain",
            r#"{"url":"x"}"#,
            415,
            None,
        ),
        create("{", "body"),
        create(r#"{"event_types":["*"]}"#, "url"),
        create(r#"{"url":5,"event_types":["*"]}"#, "url"),
        create(
            r#"{"url":"http://127.0.0.1:9/","event_types":["*"],"colour":1}"#,
            "colour",
        ),
        create(
            r#"{"url":"http://127.0.0.1:9/","event_types":["memory.deleted"]}"#,
            "event_types",
        ),
        create(
            r#"{"url":"http://127.0.0.1:9/","event_types":["*"],"timeout_ms":0}"#,
            "timeout_ms",
        ),
        create(
            r#"{"url":"http://127.0.0.1:9/","event_types":["*"]} trailing"#,
            "body",
        ),
    ]);
    let patch = format!("/v1/endpoints/{id}");
    cases.push(body(
        Method::PATCH,
        &patch,
        json,
        r#"{"timeout_ms":"x"}"#,
        400,
        Some("timeout_ms"),
    ));
    let mut without_type = body(Method::POST, endpoints, json, "{}", 415, None);
    without_type.body = Some(("", "{}"));
    cases.push(without_type);
    // Unknown routes and ids.
    cases.push(case(Method::GET, "/v1/nothing", 404, None));
    for path in [
        format!("/v1/endpoints/{id}"),
        format!("/v1/deliveries/{id}"),
        format!("/v1/sessions/{id}"),
        format!("/v1/outbound-events/{id}"),
        format!("/v1/events/{id}"),
    ] {
        cases.push(case(Method::GET, path, 404, None));
    }
    cases.push(case(
        Method::POST,
        format!("/v1/dead-letters/{id}/redrive"),
        404,
        None,
    ));
    cases
}

#[tokio::test]
async fn every_bad_request_is_answered_with_one_json_error_shape_naming_the_field() {
    let worker = TestWorker::start().await;
    for case in cases() {
        let what = format!("{} {}", case.method, case.path);
        let mut request = worker.admin(case.method.clone(), &case.path);
        if let Some((content_type, text)) = case.body {
            if !content_type.is_empty() {
                request = request.header("content-type", content_type);
            }
            request = request.body(text);
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status().as_u16(), case.status, "{what}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(content_type, "application/json", "{what}");
        let error: Value = response.json().await.expect("a JSON error");
        assert!(error["error"].is_string(), "{what}: {error}");
        let message = error["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: {error}"));
        match case.field {
            Some(field) => {
                assert_eq!(error["field"], field, "{what}: {error}");
                assert!(message.contains(field), "{what}: {message}");
            }
            None => assert!(error.get("field").is_none(), "{what}: {error}"),
        }
    }
}

#[tokio::test]
async fn a_known_path_asked_with_a_wrong_method_is_a_405_with_allow() {
    let worker = TestWorker::start().await;
    for (method, path, allowed) in [
        (Method::PUT, "/v1/endpoints", vec!["GET", "POST"]),
        (Method::DELETE, "/v1/deliveries", vec!["GET"]),
        (Method::POST, "/v1/users", vec!["GET"]),
        (Method::GET, "/v1/dead-letters/x/redrive", vec!["POST"]),
    ] {
        let response = worker.admin(method.clone(), path).send().await.unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        let allow = response.headers()["allow"].to_str().unwrap().to_owned();
        for name in allowed {
            assert!(allow.contains(name), "{method} {path}: Allow: {allow}");
        }
        let error: Value = response.json().await.expect("a JSON error");
        assert_eq!(error["error"], "method_not_allowed", "{method} {path}");
    }
}
