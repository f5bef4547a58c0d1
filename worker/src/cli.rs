//! `worker admin ...`: a command-line client for the common operator tasks, over the same
//! management API every other client uses (nothing here reads the database).
//!
//! It prints the API's JSON answer, pretty, on standard output and exits 0 for a 2xx answer;
//! for any other it prints the status and the API's error message on standard error and exits
//! 1, and it exits 3 when the worker cannot be reached (2 is a usage error, from clap). The
//! worker's address comes from `--api` or `WORKER_API_URL` (default `http://127.0.0.1:8081`),
//! the token from `--token` or `ADMIN_TOKEN` (its first entry when it lists several).

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};

/// Exit code when the API answered, but not with a 2xx.
const API_REFUSED: u8 = 1;
/// Exit code when the worker could not be reached or answered something unreadable.
const UNREACHABLE: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "worker admin",
    about = "Operate a running worker through its management API"
)]
pub struct Admin {
    /// The worker's base URL.
    #[arg(
        long,
        env = "WORKER_API_URL",
        default_value = "http://127.0.0.1:8081",
        global = true
    )]
    api: String,
    /// The admin token (the first of a comma-separated list).
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Outbound endpoints.
    #[command(subcommand)]
    Endpoints(EndpointCommand),
    /// Outbound deliveries.
    #[command(subcommand)]
    Deliveries(DeliveryCommand),
    /// Events that failed DELIVERY_LIMIT times.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(DeadLetterCommand),
    /// Users: erasing one and following the erasure.
    #[command(subcommand)]
    Users(UserCommand),
}

#[derive(Debug, Subcommand)]
enum EndpointCommand {
    /// One page of endpoints, newest first.
    List(Page),
    /// Creates an endpoint; its secret is shown this once.
    Create(NewEndpoint),
    /// One endpoint.
    Show { id: String },
    /// Sends every event of the endpoint's types since a time, including ones it never had.
    Replay {
        id: String,
        /// RFC 3339, e.g. 2026-12-01T00:00:00Z.
        #[arg(long)]
        since: String,
    },
    /// Sends a `test` event now and shows the receiver's answer.
    Test { id: String },
}

#[derive(Debug, Args)]
struct NewEndpoint {
    /// Where deliveries are POSTed.
    #[arg(long)]
    url: String,
    /// Event types to deliver, comma-separated (e.g. transcript.segment,audio.level).
    #[arg(long = "types", value_delimiter = ',', required = true)]
    event_types: Vec<String>,
    /// Deliver only these users' events, comma-separated (default: every user).
    #[arg(long, value_delimiter = ',')]
    uids: Vec<String>,
    /// The signing secret (`whsec_...`); generated when absent.
    #[arg(long)]
    secret: Option<String>,
    #[arg(long)]
    timeout_ms: Option<u32>,
    #[arg(long)]
    rate_limit_per_s: Option<u32>,
}

#[derive(Debug, Subcommand)]
enum DeliveryCommand {
    /// One page of deliveries, newest first.
    List {
        #[arg(long)]
        endpoint_id: Option<String>,
        /// pending, succeeded, failed (or paused).
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        page: Page,
    },
    /// One delivery with every attempt.
    Show { id: String },
    /// Makes another attempt now.
    Retry { id: String },
}

#[derive(Debug, Subcommand)]
enum DeadLetterCommand {
    /// One page of dead letters, newest first.
    List(Page),
    /// Publishes a dead letter back to the events queue.
    Redrive { id: String },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Erases every row of a user (answered at once; follow it with `erasure`).
    Erase { uid: String },
    /// How far a user's erasure has come, with counts per table.
    Erasure { uid: String },
}

/// The list contract's parameters.
#[derive(Debug, Args)]
struct Page {
    /// 1-1000 (the API's default is 100).
    #[arg(long)]
    limit: Option<u32>,
    /// The `next` of the previous page.
    #[arg(long)]
    cursor: Option<String>,
}

/// One call of the management API.
struct Call {
    method: Method,
    path: String,
    query: Vec<(&'static str, String)>,
    body: Option<Value>,
}

impl Call {
    fn new(method: Method, path: String) -> Self {
        Call {
            method,
            path,
            query: Vec::new(),
            body: None,
        }
    }

    fn get(path: String) -> Self {
        Call::new(Method::GET, path)
    }

    fn post(path: String) -> Self {
        Call::new(Method::POST, path)
    }

    fn with(mut self, name: &'static str, value: Option<impl ToString>) -> Self {
        if let Some(value) = value {
            self.query.push((name, value.to_string()));
        }
        self
    }

    fn page(self, page: Page) -> Self {
        self.with("limit", page.limit).with("cursor", page.cursor)
    }
}

/// A path segment taken from the command line, escaped so it cannot change the route.
fn segment(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

impl Command {
    fn call(self) -> Call {
        match self {
            Command::Endpoints(command) => match command {
                EndpointCommand::List(page) => Call::get("/v1/endpoints".into()).page(page),
                EndpointCommand::Create(endpoint) => Call {
                    body: Some(endpoint.body()),
                    ..Call::post("/v1/endpoints".into())
                },
                EndpointCommand::Show { id } => {
                    Call::get(format!("/v1/endpoints/{}", segment(&id)))
                }
                EndpointCommand::Replay { id, since } => {
                    Call::post(format!("/v1/endpoints/{}/replay", segment(&id)))
                        .with("since", Some(since))
                }
                EndpointCommand::Test { id } => {
                    Call::post(format!("/v1/endpoints/{}/test", segment(&id)))
                }
            },
            Command::Deliveries(command) => match command {
                DeliveryCommand::List {
                    endpoint_id,
                    status,
                    page,
                } => Call::get("/v1/deliveries".into())
                    .with("endpoint_id", endpoint_id)
                    .with("status", status)
                    .page(page),
                DeliveryCommand::Show { id } => {
                    Call::get(format!("/v1/deliveries/{}", segment(&id)))
                }
                DeliveryCommand::Retry { id } => {
                    Call::post(format!("/v1/deliveries/{}/retry", segment(&id)))
                }
            },
            Command::DeadLetters(command) => match command {
                DeadLetterCommand::List(page) => Call::get("/v1/dead-letters".into()).page(page),
                DeadLetterCommand::Redrive { id } => {
                    Call::post(format!("/v1/dead-letters/{}/redrive", segment(&id)))
                }
            },
            Command::Users(command) => match command {
                UserCommand::Erase { uid } => {
                    Call::new(Method::DELETE, format!("/v1/users/{}", segment(&uid)))
                }
                UserCommand::Erasure { uid } => {
                    Call::get(format!("/v1/users/{}/erasure", segment(&uid)))
                }
            },
        }
    }
}

impl NewEndpoint {
    /// The `POST /v1/endpoints` body: only what was given, so the API's defaults apply.
    fn body(self) -> Value {
        let mut body = Map::new();
        body.insert("url".into(), json!(self.url));
        body.insert("event_types".into(), json!(self.event_types));
        if !self.uids.is_empty() {
            body.insert("uids".into(), json!(self.uids));
        }
        let optional = [
            ("secret", self.secret.map(Value::from)),
            ("timeout_ms", self.timeout_ms.map(Value::from)),
            ("rate_limit_per_s", self.rate_limit_per_s.map(Value::from)),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                body.insert(name.into(), value);
            }
        }
        Value::Object(body)
    }
}

/// Runs `worker admin` with `args` (the words after `admin`).
pub async fn run(args: impl IntoIterator<Item = String>) -> ExitCode {
    let admin = match Admin::try_parse_from(std::iter::once("worker admin".to_string()).chain(args))
    {
        Ok(admin) => admin,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(error.exit_code() as u8);
        }
    };
    let token = admin
        .token
        .as_deref()
        .and_then(|tokens| tokens.split(',').map(str::trim).find(|t| !t.is_empty()))
        .map(str::to_owned);
    match send(&admin.api, token.as_deref(), admin.command.call()).await {
        Ok((status, body)) if status.is_success() => {
            println!("{}", pretty(&body));
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            let message = body
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| pretty(&body), str::to_owned);
            eprintln!("error: {status}: {message}");
            ExitCode::from(API_REFUSED)
        }
        Err(error) => {
            eprintln!("error: {}: {error:#}", admin.api);
            ExitCode::from(UNREACHABLE)
        }
    }
}

fn pretty(body: &Value) -> String {
    serde_json::to_string_pretty(body).unwrap_or_else(|_| body.to_string())
}

/// Makes the call and reads its answer as JSON (an empty answer reads as `null`).
async fn send(
    api: &str,
    token: Option<&str>,
    call: Call,
) -> anyhow::Result<(reqwest::StatusCode, Value)> {
    let url = format!("{}{}", api.trim_end_matches('/'), call.path);
    let mut request = reqwest::Client::new()
        .request(call.method, url)
        .query(&call.query);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = call.body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status();
    let text = response.text().await?;
    let body = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call_of(words: &[&str]) -> Call {
        let words = std::iter::once("worker admin").chain(words.iter().copied());
        Admin::try_parse_from(words).unwrap().command.call()
    }

    #[test]
    fn a_path_segment_cannot_leave_its_route() {
        let call = call_of(&["users", "erase", "a/../b c?d"]);
        assert_eq!(call.path, "/v1/users/a%2F..%2Fb%20c%3Fd");
        assert_eq!(call.method, Method::DELETE);
    }

    #[test]
    fn create_sends_only_what_was_given() {
        let call = call_of(&[
            "endpoints",
            "create",
            "--url",
            "https://example.test/hook",
            "--types",
            "audio.level,transcript.segment",
            "--timeout-ms",
            "2000",
        ]);
        assert_eq!(
            call.body.unwrap(),
            json!({"url": "https://example.test/hook",
                   "event_types": ["audio.level", "transcript.segment"], "timeout_ms": 2000})
        );
    }

    #[test]
    fn lists_pass_the_page_and_filters_as_query_parameters() {
        let call = call_of(&[
            "deliveries",
            "list",
            "--status",
            "failed",
            "--limit",
            "5",
            "--cursor",
            "abc",
        ]);
        assert_eq!(call.path, "/v1/deliveries");
        let query: Vec<(&str, &str)> = call.query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            query,
            [("status", "failed"), ("limit", "5"), ("cursor", "abc")]
        );
    }
}
