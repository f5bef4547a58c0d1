//! The worker's OpenAPI document (`GET /openapi.json`, generated from the route table) against
//! the worker that serves it: every documented operation is served and nothing else is, real
//! answers of a representative set of routes (each list, each lookup, the creations, the
//! actions and the errors) are valid against the documented schemas, and the document is valid
//! OpenAPI 3.1.

mod harness;

use harness::{ADMIN_TOKEN, Receiver, TestWorker};
use reqwest::Method;
use serde_json::{Value, json};
use shared::EventKind;
use shared::openapi::check::{Document, fill, routes_only_with_operations};
use shared::testkit::fixture;
use uuid::Uuid;

/// A worker and its served document; each call's answer is checked against the document.
struct Api {
    worker: TestWorker,
    document: Document,
}

impl Api {
    async fn start() -> Self {
        let worker = TestWorker::start().await;
        let document = Document::fetch(&worker.client, &worker.url("/openapi.json")).await;
        Api { worker, document }
    }

    /// `method` on `template` filled with `parameters` (in order) plus `query`, with the token
    /// and `body` as JSON; asserts the status is `expected` and the answer is as documented.
    async fn call(
        &self,
        method: Method,
        template: &str,
        parameters: &[&str],
        query: &str,
        body: Option<Value>,
        expected: u16,
    ) -> Value {
        let request = self.request(method.clone(), template, parameters, query);
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        self.answer(
            request.bearer_auth(ADMIN_TOKEN),
            &method,
            template,
            expected,
        )
        .await
    }

    fn request(
        &self,
        method: Method,
        template: &str,
        parameters: &[&str],
        query: &str,
    ) -> reqwest::RequestBuilder {
        let mut values = parameters.iter();
        let path = fill(template, |_| values.next().expect("a value").to_string());
        let url = self.worker.url(&format!("{path}{query}"));
        self.worker.client.request(method, url)
    }

    /// Sends `request`; its status must be `expected`, and a JSON answer valid against the
    /// document's schema for `method template` and that status.
    async fn answer(
        &self,
        request: reqwest::RequestBuilder,
        method: &Method,
        template: &str,
        expected: u16,
    ) -> Value {
        let response = request.send().await.expect("the worker answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, expected, "{method} {template}: {text}");
        if text.is_empty() {
            let documented = &self.document.json["paths"][template][method.as_str().to_lowercase()]
                ["responses"][status.to_string()];
            assert!(documented.is_object(), "{method} {template} {status}");
            return Value::Null;
        }
        let body: Value = serde_json::from_str(&text).expect("a JSON answer");
        self.document.check(method, template, status, &body);
        body
    }
}

fn text(value: &Value, field: &str) -> String {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {value}"))
        .to_owned()
}

/// Stores a transcript batch of `u1` as a worker does once it took it off the queue: an inbound
/// event, a session and the outbound events they caused.
async fn store_transcript(worker: &TestWorker) -> Uuid {
    let batch = fixture("omi/thalamus_batch.json");
    let envelope = harness::envelope(EventKind::OmiTranscript, "u1", "k1", batch);
    worker::handlers::handle_all(&worker.pool, std::slice::from_ref(&envelope))
        .await
        .expect("stored");
    envelope.event_id
}

#[tokio::test]
async fn endpoints_and_deliveries_answer_as_documented() {
    use Method as M;
    let api = Api::start().await;
    let receiver = Receiver::ok().await;
    store_transcript(&api.worker).await;
    let new = json!({"url": receiver.url(), "event_types": ["*"], "headers": {"X-Key": "k"}});
    let endpoint = api
        .call(M::POST, "/v1/endpoints", &[], "", Some(new), 201)
        .await;
    let id = text(&endpoint, "id");
    let one = &[id.as_str()];
    api.call(M::GET, "/v1/endpoints", &[], "?limit=1", None, 200)
        .await;
    api.call(M::GET, "/v1/endpoints/{id}", one, "", None, 200)
        .await;
    let patch = json!({"timeout_ms": 5000, "rate_limit_per_s": null});
    api.call(M::PATCH, "/v1/endpoints/{id}", one, "", Some(patch), 200)
        .await;
    let tested = api
        .call(M::POST, "/v1/endpoints/{id}/test", one, "", None, 200)
        .await;
    assert_eq!(tested["succeeded"], true, "{tested}");
    api.call(
        M::POST,
        "/v1/endpoints/{id}/rotate-secret",
        one,
        "",
        None,
        200,
    )
    .await;
    let since = "?since=2020-01-01T00:00:00Z";
    api.call(M::POST, "/v1/endpoints/{id}/recover", one, since, None, 202)
        .await;
    api.call(M::POST, "/v1/endpoints/{id}/replay", one, since, None, 202)
        .await;
    api.call(
        M::GET,
        "/v1/endpoints/{id}/stats",
        one,
        "?window=1h",
        None,
        200,
    )
    .await;

    let delivery = text(&tested, "delivery_id");
    let delivery = &[delivery.as_str()];
    api.call(
        M::GET,
        "/v1/deliveries",
        &[],
        "?status=succeeded",
        None,
        200,
    )
    .await;
    api.call(M::GET, "/v1/deliveries/{id}", delivery, "", None, 200)
        .await;
    // Requeued, then pending already.
    for status in [202, 409] {
        let retry = "/v1/deliveries/{id}/retry";
        api.call(M::POST, retry, delivery, "", None, status).await;
    }
    api.call(M::DELETE, "/v1/endpoints/{id}", one, "", None, 204)
        .await;
    api.call(M::GET, "/v1/endpoints/{id}", one, "", None, 404)
        .await;
}

#[tokio::test]
async fn lookups_answer_as_documented() {
    use Method as M;
    let api = Api::start().await;
    let event_id = store_transcript(&api.worker).await.to_string();
    let fate = api
        .call(M::GET, "/v1/events/{event_id}", &[&event_id], "", None, 200)
        .await;
    assert_eq!(fate["status"], "stored", "{fate}");
    let events = api
        .call(M::GET, "/v1/outbound-events", &[], "?uid=u1", None, 200)
        .await;
    let outbound = text(&events["items"][0], "id");
    api.call(
        M::GET,
        "/v1/outbound-events/{id}",
        &[&outbound],
        "",
        None,
        200,
    )
    .await;
    api.call(M::GET, "/v1/users", &[], "", None, 200).await;
    let sessions = api
        .call(M::GET, "/v1/users/{uid}/sessions", &["u1"], "", None, 200)
        .await;
    let session = text(&sessions["items"][0], "id");
    let session = &[session.as_str()];
    api.call(M::GET, "/v1/sessions/{id}", session, "", None, 200)
        .await;
    api.call(
        M::GET,
        "/v1/sessions/{id}/transcript",
        session,
        "",
        None,
        200,
    )
    .await;
    for template in [
        "/v1/users/{uid}/audio-levels",
        "/v1/users/{uid}/listening",
        "/v1/users/{uid}/sleep/reports",
        "/v1/users/{uid}/sleep/stats",
    ] {
        api.call(M::GET, template, &["u1"], "", None, 200).await;
    }
    api.call(M::GET, "/v1/dead-letters", &[], "", None, 200)
        .await;
    api.call(M::DELETE, "/v1/users/{uid}", &["u2"], "", None, 202)
        .await;
    api.call(M::GET, "/v1/users/{uid}/erasure", &["u2"], "", None, 200)
        .await;
    api.call(M::GET, "/v1/auth/session", &[], "", None, 200)
        .await;
    let sign_in = json!({"token": ADMIN_TOKEN});
    api.call(M::POST, "/v1/auth/session", &[], "", Some(sign_in), 200)
        .await;
}

#[tokio::test]
async fn errors_answer_as_documented() {
    use Method as M;
    let api = Api::start().await;
    let unknown = Uuid::now_v7().to_string();
    api.call(M::GET, "/v1/endpoints", &[], "?limit=0", None, 400)
        .await;
    api.call(M::GET, "/v1/deliveries", &[], "?colour=red", None, 400)
        .await;
    api.call(M::GET, "/v1/events/{event_id}", &["x"], "", None, 400)
        .await;
    api.call(M::GET, "/v1/deliveries/{id}", &[&unknown], "", None, 404)
        .await;
    api.call(M::POST, "/v1/endpoints", &[], "", Some(json!({})), 400)
        .await;
    let plain = api
        .request(M::POST, "/v1/endpoints", &[], "")
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "text/plain")
        .body("{}");
    api.answer(plain, &M::POST, "/v1/endpoints", 415).await;
    let anonymous = api.request(M::GET, "/v1/endpoints", &[], "");
    api.answer(anonymous, &M::GET, "/v1/endpoints", 401).await;
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1_and_lists_exactly_what_is_served() {
    let api = Api::start().await;
    api.document.validate_openapi_3_1();
    api.document.check_references();
    let parameter = |name: &str| match name {
        "uid" => "u1".to_owned(),
        "path" => "app.css".to_owned(),
        _ => Uuid::now_v7().to_string(),
    };
    let base = api.worker.url("");
    api.document
        .check_served(&api.worker.client, &base, parameter)
        .await;
    routes_only_with_operations(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(api.document.operations().len() >= 38);
}
