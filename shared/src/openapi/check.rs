//! What the tests hold a process's OpenAPI document to, and real answers to it:
//! - [`Document::operations`]: every documented operation, for the tests that probe each one;
//! - [`Document::check`]: an answer's status is documented for its operation and its JSON body
//!   is valid against the documented schema (JSON Schema 2020-12, which OpenAPI 3.1 uses);
//! - [`Document::check_examples`]: every request body example is valid against its schema;
//! - [`Document::check_references`]: every `$ref` resolves;
//! - [`Document::validate_openapi_3_1`]: the whole document is valid OpenAPI 3.1, by
//!   `openapi-spec-validator` (PyPI; `.ci/run` installs it);
//! - [`Document::check_served`] and [`routes_only_with_operations`]: the two halves of "the
//!   router serves exactly the documented routes" (see each).

use std::process::Command;

use serde_json::{Value, json};

/// A served OpenAPI document.
pub struct Document {
    pub json: Value,
}

impl Document {
    /// `GET url`, which must answer 200 with JSON and without credentials.
    pub async fn fetch(client: &reqwest::Client, url: &str) -> Document {
        let response = client.get(url).send().await.expect("GET /openapi.json");
        assert_eq!(response.status(), 200, "GET {url}");
        let kind = response.headers()[reqwest::header::CONTENT_TYPE].clone();
        assert_eq!(kind, "application/json");
        Document {
            json: response.json().await.expect("a JSON document"),
        }
    }

    /// Every documented (method, path template), such as `(GET, /v1/endpoints/{id})`.
    pub fn operations(&self) -> Vec<(reqwest::Method, String)> {
        let paths = self.json["paths"].as_object().expect("paths");
        let mut operations = Vec::new();
        for (path, item) in paths {
            for method in item.as_object().expect("a path item").keys() {
                let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())
                    .expect("an HTTP method");
                operations.push((method, path.clone()));
            }
        }
        operations
    }

    /// The operation object of `method template`.
    fn operation(&self, method: &reqwest::Method, template: &str) -> &Value {
        let operation = &self.json["paths"][template][method.as_str().to_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {template} is not documented"
        );
        operation
    }

    /// Checks `body`, answered with `status` to `method template`, against the document: the
    /// status must be documented for the operation, and a JSON body valid against its schema.
    pub fn check(&self, method: &reqwest::Method, template: &str, status: u16, body: &Value) {
        let responses = &self.operation(method, template)["responses"];
        let response = &responses[status.to_string()];
        assert!(
            response.is_object(),
            "{method} {template} answered {status}, which is not documented: {body}"
        );
        let schema = &response["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {template} {status} documents no JSON body, answered {body}"
        );
        if let Err(problems) = self.validate(schema, body) {
            panic!("{method} {template} {status}: {problems}\nbody: {body}\nschema: {schema}");
        }
        let mut undocumented = Vec::new();
        self.undocumented(schema, body, "", &mut undocumented);
        assert!(
            undocumented.is_empty(),
            "{method} {template} {status} answers fields its schema does not document: \
             {undocumented:?}\nbody: {body}"
        );
    }

    /// The fields of `body` (by path) that `schema` does not name. JSON Schema lets an object
    /// have any field its schema does not forbid, and utoipa forbids none, so a field added to
    /// an answer without its schema would otherwise pass. Objects whose schema names no fields
    /// (free-form) or allows more (`additionalProperties`, maps) are not held to this.
    fn undocumented(&self, schema: &Value, body: &Value, path: &str, found: &mut Vec<String>) {
        match body {
            Value::Object(object) => {
                let mut fields = serde_json::Map::new();
                let open = self.fields(schema, &mut fields);
                for (name, value) in object {
                    let at = format!("{path}/{name}");
                    match fields.get(name) {
                        Some(field) => self.undocumented(field, value, &at, found),
                        None if !open && !fields.is_empty() => found.push(at),
                        None => {}
                    }
                }
            }
            Value::Array(items) => {
                let mut item = self.resolve(schema)["items"].clone();
                if item.is_null() {
                    item = json!({});
                }
                for (index, value) in items.iter().enumerate() {
                    self.undocumented(&item, value, &format!("{path}/{index}"), found);
                }
            }
            _ => {}
        }
    }

    /// Adds the fields `schema` names (through `$ref`, `allOf`, `oneOf` and `anyOf`) to
    /// `fields`; true when it also allows others.
    fn fields(&self, schema: &Value, fields: &mut serde_json::Map<String, Value>) -> bool {
        let schema = self.resolve(schema);
        let mut open = !matches!(
            schema["additionalProperties"],
            Value::Null | Value::Bool(false)
        );
        if let Some(named) = schema["properties"].as_object() {
            fields.extend(named.clone());
        }
        for composition in ["allOf", "oneOf", "anyOf"] {
            for part in schema[composition].as_array().into_iter().flatten() {
                open |= self.fields(part, fields);
            }
        }
        open
    }

    /// `schema`, its `$ref` followed.
    fn resolve<'a>(&'a self, mut schema: &'a Value) -> &'a Value {
        while let Some(reference) = schema["$ref"].as_str() {
            let pointer = reference.trim_start_matches('#');
            schema = self
                .json
                .pointer(pointer)
                .expect("a reference that resolves");
        }
        schema
    }

    /// `body` against `schema` (whose `$ref`s point into this document's components).
    fn validate(&self, schema: &Value, body: &Value) -> Result<(), String> {
        let mut root = schema.clone();
        let object = root.as_object_mut().expect("a schema object");
        object.insert("components".into(), self.json["components"].clone());
        let validator = jsonschema::draft202012::new(&root)
            .unwrap_or_else(|error| panic!("the schema {schema} does not compile: {error}"));
        let problems: Vec<String> = validator
            .iter_errors(body)
            .map(|error| format!("{} at {}", error, error.instance_path()))
            .collect();
        match problems.is_empty() {
            true => Ok(()),
            false => Err(problems.join("; ")),
        }
    }

    /// Checks that every JSON request body example is valid against its schema; returns how
    /// many were checked.
    pub fn check_examples(&self) -> usize {
        let mut checked = 0;
        for (method, template) in self.operations() {
            let body = &self.operation(&method, &template)["requestBody"]["content"];
            let json = &body["application/json"];
            if json["example"].is_null() {
                continue;
            }
            if let Err(problems) = self.validate(&json["schema"], &json["example"]) {
                panic!("{method} {template}: the example is not valid: {problems}");
            }
            checked += 1;
        }
        checked
    }

    /// Checks that every `$ref` in the document points at something it holds.
    pub fn check_references(&self) {
        let mut found = Vec::new();
        references(&self.json, &mut found);
        assert!(!found.is_empty(), "no references at all");
        for reference in found {
            let pointer = reference.trim_start_matches('#');
            assert!(
                self.json.pointer(pointer).is_some(),
                "{reference} does not resolve"
            );
        }
    }

    /// Runs `openapi-spec-validator` on the document as OpenAPI 3.1; fails, saying how to
    /// install it, when it is missing.
    pub fn validate_openapi_3_1(&self) {
        assert_eq!(self.json["openapi"].as_str().map(|v| &v[..4]), Some("3.1."));
        let file = std::env::temp_dir().join(format!("openapi-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&file, self.json.to_string()).expect("write the document");
        let run = Command::new("python3")
            .args(["-m", "openapi_spec_validator", "--schema", "3.1"])
            .arg(&file)
            .output();
        let _ = std::fs::remove_file(&file);
        let output = run.expect("python3 runs");
        let said = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(
            !said.contains("No module named openapi_spec_validator"),
            "openapi-spec-validator is missing: python3 -m pip install {VALIDATOR}"
        );
        assert!(output.status.success(), "not valid OpenAPI 3.1: {said}");
    }
}

impl Document {
    /// Every documented operation is served by the server at `base`, asked without
    /// credentials (path parameters filled by `fill`): neither 405 nor the router's own 404
    /// (`no such route`). And every method a documented path does not document is 405: the
    /// router serves no other method there.
    pub async fn check_served(
        &self,
        client: &reqwest::Client,
        base: &str,
        fill_parameter: impl Fn(&str) -> String,
    ) {
        use reqwest::Method;
        let operations = self.operations();
        for (method, template) in &operations {
            let path = fill(template, &fill_parameter);
            let (status, body) = probe(client, method.clone(), &format!("{base}{path}")).await;
            assert!(
                status != 405 && !body.contains("no such route"),
                "{method} {template} is documented but not served ({path}: {status} {body})"
            );
        }
        let methods = [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ];
        for (_, template) in &operations {
            let path = fill(template, &fill_parameter);
            let documented = |m: &Method| operations.contains(&(m.clone(), template.clone()));
            for method in methods.iter().filter(|m| !documented(m)) {
                let (status, body) = probe(client, method.clone(), &format!("{base}{path}")).await;
                assert_eq!(
                    status, 405,
                    "{method} {template} is served but not documented: {body}"
                );
            }
        }
    }
}

/// The status and body of `method url`, asked with no credentials and no body.
async fn probe(client: &reqwest::Client, method: reqwest::Method, url: &str) -> (u16, String) {
    let response = client
        .request(method, url)
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// The other half of "the router serves exactly the documented routes": checks that no file
/// under `src` (a crate's sources) adds a route any other way than `routes!`, which registers
/// the handler's route and its operation together: no `Router::new()`, no `.route(`
/// (`OpenApiRouter::route` adds a route without an operation), no `.nest(` or `.route_service(`
/// or `.nest_service(`, and no `axum::routing` (where plain method routers come from).
pub fn routes_only_with_operations(src: &std::path::Path) {
    let files = rust_files(src);
    assert!(!files.is_empty(), "no sources under {}", src.display());
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read a source file");
        for (number, line) in text.lines().enumerate() {
            if let Some(way) = way_around(line) {
                panic!(
                    "{}:{}: `{way}` adds a route the OpenAPI document does not list; register \
                     it with utoipa_axum::routes! and a #[utoipa::path]: {line}",
                    file.display(),
                    number + 1
                );
            }
        }
    }
}

/// The way around `routes!` a line of code takes, if any (comments aside).
fn way_around(line: &str) -> Option<&'static str> {
    const WAYS_AROUND: [&str; 6] = [
        "Router::new()",
        ".route(",
        ".route_service(",
        ".nest(",
        ".nest_service(",
        "routing::",
    ];
    let code = line.trim_start();
    if code.starts_with("//") {
        return None;
    }
    // `OpenApiRouter::new()` is the one way in.
    let code = code.replace("OpenApiRouter::new()", "");
    WAYS_AROUND.into_iter().find(|way| code.contains(way))
}

/// Every `.rs` file under `directory`.
fn rust_files(directory: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![directory.to_path_buf()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read the sources") {
                pending.push(entry.expect("a directory entry").path());
            }
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
    found
}

/// Every `$ref` in `value`.
fn references(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            for (key, value) in object {
                match (key.as_str(), value.as_str()) {
                    ("$ref", Some(reference)) => found.push(reference.to_owned()),
                    _ => references(value, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| references(item, found)),
        _ => {}
    }
}

/// The validator `.ci/run` installs.
pub const VALIDATOR: &str = "openapi-spec-validator==0.9.0";

/// `template` with each `{parameter}` replaced by `fill(parameter)`.
pub fn fill(template: &str, mut fill: impl FnMut(&str) -> String) -> String {
    template
        .split('/')
        .map(
            |part| match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) => fill(name),
                None => part.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_checked_against_its_operations_schema() {
        let document = Document {
            json: json!({
                "paths": {"/things/{id}": {"get": {"responses": {"200": {"content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}}}}}},
                "components": {"schemas": {"Thing": {
                    "type": "object", "required": ["id"],
                    "properties": {"id": {"type": "string"}}}}}
            }),
        };
        let get = reqwest::Method::GET;
        document.check(&get, "/things/{id}", 200, &json!({"id": "a"}));
        let wrong = std::panic::catch_unwind(|| {
            document.check(&get, "/things/{id}", 200, &json!({"id": 1}))
        });
        assert!(wrong.is_err(), "a number where a string is documented");
        let undocumented =
            std::panic::catch_unwind(|| document.check(&get, "/things/{id}", 404, &json!({})));
        assert!(undocumented.is_err(), "a status not documented");
        let extra = json!({"id": "a", "colour": "red"});
        let unnamed =
            std::panic::catch_unwind(|| document.check(&get, "/things/{id}", 200, &extra));
        assert!(unnamed.is_err(), "a field its schema does not name");
        assert_eq!(
            fill("/things/{id}/x", |name| format!("<{name}>")),
            "/things/<id>/x"
        );
    }

    #[test]
    fn a_route_added_around_routes_is_found() {
        let src = std::env::temp_dir().join(format!("routes-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(src.join("api")).unwrap();
        let file = src.join("api/mod.rs");
        let documented = "OpenApiRouter::new().routes(routes!(list))\n// not .route(\n";
        std::fs::write(&file, documented).unwrap();
        routes_only_with_operations(&src);
        for around in [
            ".route(\"/x\", get(x))",
            "Router::new()",
            "axum::routing::get",
        ] {
            std::fs::write(&file, format!("{documented}let r = {around};\n")).unwrap();
            let found = std::panic::catch_unwind(|| routes_only_with_operations(&src));
            assert!(found.is_err(), "{around}");
        }
        std::fs::remove_dir_all(&src).unwrap();
    }
}
