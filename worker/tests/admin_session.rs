//! Signing in to the dashboard: the admin token is exchanged for a session cookie that the
//! whole management API (the stream included) and every worker accept; a wrong token is a clear
//! 401; a cookie-authenticated change must come from the same origin; sign-out clears it, and
//! an expired or revoked session is refused. The bearer token keeps working throughout.

mod harness;

use std::time::Duration;

use harness::sse::SseStream;
use harness::{ADMIN_TOKEN, TestWorker};
use reqwest::Method;
use serde_json::{Value, json};

/// Signs in with a JSON body; returns the `Set-Cookie` header.
async fn sign_in(worker: &TestWorker) -> String {
    let response = worker
        .client
        .post(worker.url("/v1/auth/session"))
        .json(&json!({"token": ADMIN_TOKEN}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    set_cookie(&response)
}

fn set_cookie(response: &reqwest::Response) -> String {
    response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// `name=value` of a `Set-Cookie` header, as a browser sends it back.
fn cookie_of(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

/// A request with the session cookie and no token.
fn with_cookie(
    worker: &TestWorker,
    method: Method,
    path: &str,
    cookie: &str,
) -> reqwest::RequestBuilder {
    worker
        .client
        .request(method, worker.url(path))
        .header("cookie", cookie)
}

async fn status_and_json(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_token_becomes_a_session_cookie_that_the_api_the_stream_and_every_worker_accept() {
    let worker = TestWorker::start().await;
    let header = sign_in(&worker).await;
    for attribute in [
        "admin_session=v1.",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=43200",
    ] {
        assert!(header.contains(attribute), "{attribute} in {header}");
    }
    assert!(!header.contains("Secure"), "plain http: {header}");
    let cookie = cookie_of(&header);

    let (status, _) =
        status_and_json(with_cookie(&worker, Method::GET, "/v1/endpoints", &cookie)).await;
    assert_eq!(status, 200);
    let (_, whoami) = status_and_json(with_cookie(
        &worker,
        Method::GET,
        "/v1/auth/session",
        &cookie,
    ))
    .await;
    assert_eq!(whoami["via"], "session");
    assert!(whoami["expires_at"].is_string(), "{whoami}");
    let (_, bearer) = status_and_json(worker.admin(Method::GET, "/v1/auth/session")).await;
    assert_eq!(bearer["via"], "bearer", "the bearer token keeps working");
    SseStream::open(with_cookie(&worker, Method::GET, "/v1/stream", &cookie)).await;

    let other = worker.another().await;
    let elsewhere = worker
        .client
        .get(other.url("/v1/endpoints"))
        .header("cookie", &cookie);
    assert_eq!(
        elsewhere.send().await.unwrap().status(),
        200,
        "no shared state needed"
    );
    other.stop().await;

    // A form works as well, and behind https the cookie is Secure.
    let form = worker
        .client
        .post(worker.url("/v1/auth/session"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-forwarded-proto", "https")
        .body(format!("token={ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    assert!(
        set_cookie(&form).contains("; Secure"),
        "{}",
        set_cookie(&form)
    );
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_refused_with_a_clear_message() {
    let worker = TestWorker::start().await;
    let sign_in = |body: Value| {
        worker
            .client
            .post(worker.url("/v1/auth/session"))
            .json(&body)
            .send()
    };
    let wrong = sign_in(json!({"token": "guess"})).await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not the admin token"),
        "{body}"
    );

    let missing = sign_in(json!({})).await.unwrap();
    assert_eq!(missing.status(), 400);
    let body: Value = missing.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().starts_with("token: "),
        "{body}"
    );

    let text = worker
        .client
        .post(worker.url("/v1/auth/session"))
        .body(ADMIN_TOKEN);
    assert_eq!(text.send().await.unwrap().status(), 415);

    for cookie in [
        "admin_session=v1.99999999999.AAAA",
        "admin_session=nonsense",
    ] {
        let (status, body) =
            status_and_json(with_cookie(&worker, Method::GET, "/v1/endpoints", cookie)).await;
        assert_eq!(status, 401, "{cookie}");
        assert!(
            body["message"].as_str().unwrap().contains("sign in again"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_change_made_with_the_cookie_must_come_from_this_origin() {
    let worker = TestWorker::start().await;
    let cookie = cookie_of(&sign_in(&worker).await);
    let endpoint = json!({"url": "http://127.0.0.1:9/hook", "event_types": ["*"]});
    let create = |origin: Option<&str>| {
        let request = with_cookie(&worker, Method::POST, "/v1/endpoints", &cookie).json(&endpoint);
        match origin {
            Some(origin) => request.header("origin", origin),
            None => request,
        }
    };
    let (status, body) = status_and_json(create(None)).await;
    assert_eq!(status, 403, "no Origin: {body}");
    assert_eq!(body["error"], "forbidden");
    let (status, _) = status_and_json(create(Some("http://evil.example"))).await;
    assert_eq!(status, 403, "another site");
    let this_origin = worker.url("");
    let (status, _) = status_and_json(create(Some(&this_origin))).await;
    assert_eq!(status, 201, "this origin");

    let (status, _) =
        status_and_json(worker.admin(Method::POST, "/v1/endpoints").json(&endpoint)).await;
    assert_eq!(status, 201, "the bearer token needs no Origin");
    let (status, _) =
        status_and_json(with_cookie(&worker, Method::GET, "/v1/endpoints", &cookie)).await;
    assert_eq!(status, 200, "reading needs no Origin");
    let signed_in_elsewhere = worker
        .client
        .post(worker.url("/v1/auth/session"))
        .header("origin", "http://evil.example")
        .json(&json!({"token": ADMIN_TOKEN}));
    assert_eq!(signed_in_elsewhere.send().await.unwrap().status(), 403);
}

#[tokio::test]
async fn signing_out_clears_the_cookie_and_expired_or_revoked_sessions_are_refused() {
    let mut worker = TestWorker::start_with(|settings| {
        settings.admin_session_ttl = Duration::from_secs(2);
    })
    .await;
    let signed_out = worker
        .client
        .delete(worker.url("/v1/auth/session"))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), 204);
    let cleared = set_cookie(&signed_out);
    assert!(
        cleared.starts_with("admin_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );

    let cookie = cookie_of(&sign_in(&worker).await);
    let endpoints =
        |cookie: String| with_cookie(&worker, Method::GET, "/v1/endpoints", &cookie).send();
    assert_eq!(endpoints(cookie.clone()).await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(endpoints(cookie).await.unwrap().status(), 401, "expired");

    // Dropping the token it was signed under from ADMIN_TOKEN ends a session.
    let cookie = cookie_of(&sign_in(&worker).await);
    worker.settings.admin_tokens = vec!["the-next-token".to_owned()];
    worker.restart().await;
    let (status, _) =
        status_and_json(with_cookie(&worker, Method::GET, "/v1/endpoints", &cookie)).await;
    assert_eq!(status, 401, "revoked");
}

#[tokio::test]
async fn the_dashboard_page_and_its_assets_come_from_the_binary_with_a_strict_policy() {
    let worker = TestWorker::start().await;
    for (path, kind, text) in [
        ("/dashboard", "text/html", "/dashboard/js/main.js"),
        (
            "/dashboard/js/main.js",
            "text/javascript",
            "/v1/auth/session",
        ),
        ("/dashboard/js/user.js", "text/javascript", "/v1/stream"),
        (
            "/dashboard/js/transcript.js",
            "text/javascript",
            "/v1/sessions/",
        ),
        ("/dashboard/favicon.svg", "image/svg+xml", "<svg"),
        ("/dashboard/app.css", "text/css", "meter"),
    ] {
        let response = worker.client.get(worker.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"));
        assert!(response.text().await.unwrap().contains(text), "{path}");
    }
    let missing = worker
        .client
        .get(worker.url("/dashboard/js/nothing.js"))
        .send()
        .await;
    assert_eq!(missing.unwrap().status(), 404);
}
