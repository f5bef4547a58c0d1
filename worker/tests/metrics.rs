//! `/metrics` of ingest and of the worker after some traffic: every metric the alert rules
//! (`deploy/prometheus/alerts.yml`) and the Grafana dashboard
//! (`deploy/grafana/dashboards/webhooks.json`) read is there, every latency is a histogram, and
//! every metric has help text, and every counter has a series for each value of its labels
//! from start (at 0 until it counts).
//!
//! Both processes run in this test binary and share its one recorder, so each scrape holds the
//! other's metrics too; the test still reads each metric from the process that exports it.

mod harness;

use harness::{ADMIN_TOKEN, Receiver, TestPipeline, TestWorker};
use serde_json::json;
use shared::testkit::{sample, scrape};
use std::time::{Duration, Instant};

/// The metrics ingest and the worker export start with one of these (`process_`: CPU, memory
/// and descriptors, which both export).
const OUR_PREFIXES: [&str; 5] = ["ingest_", "worker_", "outbound_", "audio_", "process_"];

/// Metrics from elsewhere that the rules and the dashboard may read: Prometheus's `up` and
/// RabbitMQ's per-object metrics.
const EXTERNAL_PREFIXES: [&str; 1] = ["rabbitmq_"];
const EXTERNAL_NAMES: [&str; 1] = ["up"];

/// PromQL's functions, aggregations and keywords the expressions use; any other word outside
/// label matchers, ranges, strings and grouping lists is a metric name.
const PROMQL_WORDS: [&str; 15] = [
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "rate",
    "increase",
    "delta",
    "histogram_quantile",
    "avg_over_time",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
];

/// Words after which a parenthesised list holds label names, not expressions.
const GROUPING_WORDS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The `expr` of every rule of `alerts.yml`.
fn alert_rule_exprs() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/prometheus/alerts.yml"
    );
    exprs_in_yaml(&std::fs::read_to_string(path).expect("alerts.yml"))
}

/// The `expr` of every target of every panel of the Grafana dashboard.
fn dashboard_exprs() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/dashboards/webhooks.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    let mut found = Vec::new();
    collect_exprs(&dashboard, &mut found);
    found
}

fn collect_exprs(value: &serde_json::Value, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(fields) => {
            for (key, field) in fields {
                match field.as_str() {
                    Some(expr) if key == "expr" => found.push(expr.to_owned()),
                    _ => collect_exprs(field, found),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| collect_exprs(item, found)),
        _ => {}
    }
}

/// The text of every `expr:`, inline or a `|` block (its lines indented deeper than the key).
fn exprs_in_yaml(rules: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((indent, value)) = line.split_once("expr:") else {
            continue;
        };
        let value = value.trim();
        if value != "|" {
            found.push(value.to_owned());
            continue;
        }
        let mut block = String::new();
        while let Some(next) = lines.next_if(|next| {
            next.len() - next.trim_start().len() > indent.len() || next.trim().is_empty()
        }) {
            block.push_str(next);
            block.push('\n');
        }
        found.push(block);
    }
    found
}

/// The metric names `exprs` read, sorted and deduplicated: every identifier outside label
/// matchers (`{...}`), ranges (`[...]`), strings, numbers, Grafana variables and grouping
/// lists (`by (...)`), that is not a PromQL function or keyword.
fn metric_names(exprs: &[String]) -> Vec<String> {
    let mut names = Vec::new();
    for expr in exprs {
        let mut chars = expr.chars().peekable();
        let mut grouping_list_next = false;
        while let Some(c) = chars.next() {
            match c {
                '{' => skip_past(&mut chars, '}'),
                '[' => skip_past(&mut chars, ']'),
                '"' | '\'' | '`' => skip_past(&mut chars, c),
                '(' if grouping_list_next => {
                    skip_past(&mut chars, ')');
                    grouping_list_next = false;
                }
                '$' => drop(take_word(&mut chars, String::new())),
                c if c.is_ascii_digit() => drop(take_word(&mut chars, c.to_string())),
                c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                    let word = take_word(&mut chars, c.to_string());
                    if GROUPING_WORDS.contains(&word.as_str()) {
                        grouping_list_next = true;
                    } else if !PROMQL_WORDS.contains(&word.as_str()) {
                        names.push(word);
                    }
                }
                _ => {}
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Consumes up to and including `end`, skipping over quoted strings (and their escapes).
fn skip_past(chars: &mut std::iter::Peekable<std::str::Chars>, end: char) {
    let quoted = matches!(end, '"' | '\'' | '`');
    while let Some(c) = chars.next() {
        if c == end {
            return;
        }
        if quoted && c == '\\' {
            chars.next();
        } else if !quoted && matches!(c, '"' | '\'' | '`') {
            skip_past(chars, c);
        }
    }
}

/// `first` and the identifier characters after it (letters, digits, `_`, `:`, `.`).
fn take_word(chars: &mut std::iter::Peekable<std::str::Chars>, first: String) -> String {
    let mut word = first;
    while let Some(c) = chars.next_if(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '.'))
    {
        word.push(c);
    }
    word
}

/// Splits the names `exprs` read into ours (to be found in the scrapes) and those from
/// elsewhere; a name that is neither (a typo, an unknown function) fails the test.
fn our_metric_names(source: &str, exprs: &[String]) -> Vec<String> {
    let names = metric_names(exprs);
    let is_ours = |name: &String| OUR_PREFIXES.iter().any(|p| name.starts_with(p));
    let is_external = |name: &String| {
        EXTERNAL_NAMES.contains(&name.as_str())
            || EXTERNAL_PREFIXES.iter().any(|p| name.starts_with(p))
    };
    let unknown: Vec<_> = names
        .iter()
        .filter(|name| !is_ours(name) && !is_external(name))
        .collect();
    assert!(
        unknown.is_empty(),
        "{source} reads names that are neither ours nor known: {unknown:?}"
    );
    names.into_iter().filter(is_ours).collect()
}

#[test]
fn metric_names_skip_labels_ranges_strings_and_grouping_lists() {
    let exprs = [
        r#"histogram_quantile(0.99, sum by (le, route) (rate(a_seconds_bucket{route=~"x|y", q="}"}[$__rate_interval])))"#,
        "max(b_gauge) > max(b_gauge offset 30m) and on (instance) c_total == 0",
        "sum(increase(d_total[15m])) / ignoring(kind) group_left(kind) e_total > 1e3",
    ]
    .map(String::from);
    assert_eq!(
        metric_names(&exprs),
        [
            "a_seconds_bucket",
            "b_gauge",
            "c_total",
            "d_total",
            "e_total"
        ]
    );
}

#[test]
#[should_panic(expected = "neither ours nor known: [\"ingst_requests_total\"]")]
fn a_misspelt_metric_name_fails() {
    our_metric_names("test", &["sum(rate(ingst_requests_total[5m]))".to_owned()]);
}

/// True when the exposition has a sample of `name` (`name{...} v` or `name v`).
fn has_sample(exposition: &str, name: &str) -> bool {
    exposition.lines().any(|line| {
        line.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    })
}

/// Posts transcripts to ingest and lets the worker store them and deliver their events.
async fn traffic(pipeline: &TestPipeline, receiver: &mut Receiver) {
    let endpoint = pipeline
        .client
        .post(pipeline.workers[0].url("/v1/endpoints"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"url": receiver.url(), "event_types": ["*"]}))
        .send()
        .await
        .expect("create endpoint");
    assert_eq!(endpoint.status(), 201);
    for uid in ["u1", "u2", "u3"] {
        pipeline
            .post_omi("/v1/omi/transcript", uid, "omi/realtime_transcript.json")
            .await;
    }
    pipeline
        .wait_for_count("SELECT count(*) FROM inbound_events", 3)
        .await;
    receiver.next().await;
}

#[tokio::test]
async fn both_processes_export_every_metric_the_alerts_and_the_dashboard_use() {
    let pipeline = TestPipeline::start().await;
    let mut receiver = Receiver::ok().await;
    traffic(&pipeline, &mut receiver).await;
    let from_rules = our_metric_names("alerts.yml", &alert_rule_exprs());
    let from_dashboard = our_metric_names("the dashboard", &dashboard_exprs());
    assert!(
        from_rules.len() >= 10,
        "alerts.yml names its metrics: {from_rules:?}"
    );
    assert!(
        from_dashboard.len() >= 25,
        "the dashboard names its metrics: {from_dashboard:?}"
    );
    let mut wanted = [from_rules, from_dashboard].concat();
    wanted.sort();
    wanted.dedup();

    let (ingest_url, worker_url) = (
        pipeline.ingest.url("/metrics"),
        pipeline.workers[0].url("/metrics"),
    );
    // The sampled gauges and the attempt counters appear within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (ingest, worker) = loop {
        let ingest = scrape(&ingest_url).await;
        let worker = scrape(&worker_url).await;
        let missing: Vec<_> = wanted
            .iter()
            .filter(|name| {
                let from = if name.starts_with("ingest_") {
                    &ingest
                } else {
                    &worker
                };
                !has_sample(from, name)
            })
            .collect();
        if missing.is_empty() {
            break (ingest, worker);
        }
        assert!(
            Instant::now() < deadline,
            "not scraped within 20 s: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    for exposition in [&ingest, &worker] {
        assert!(
            !exposition.contains(" summary\n"),
            "no summaries:\n{exposition}"
        );
        for line in exposition.lines() {
            let Some(declared) = line.strip_prefix("# TYPE ") else {
                continue;
            };
            let (name, kind) = declared.split_once(' ').expect("# TYPE name kind");
            assert!(
                exposition.contains(&format!("# HELP {name} ")),
                "{name} has help text"
            );
            // A `_seconds` gauge is an age (the oldest due delivery), not a latency.
            if name.ends_with("_seconds") {
                assert!(["histogram", "gauge"].contains(&kind), "{name} is a {kind}");
            }
            if kind == "histogram" {
                assert!(has_sample(exposition, &format!("{name}_bucket")), "{name}");
            }
        }
    }
    for latency in [
        "ingest_request_duration_seconds",
        "ingest_publish_confirm_seconds",
        "worker_ingest_to_commit_seconds",
        "outbound_attempt_seconds",
    ] {
        let exposition = if latency.starts_with("ingest_") {
            &ingest
        } else {
            &worker
        };
        assert!(
            exposition.contains(&format!("# TYPE {latency} histogram")),
            "{latency} is a histogram"
        );
        assert!(
            exposition.contains(&format!("{latency}_bucket{{"))
                && exposition.contains("le=\"0.005\""),
            "{latency} has the explicit buckets"
        );
    }
    assert!(has_sample(&ingest, "ingest_publish_total"));
    every_label_value_has_a_series(&ingest, &worker);
}

/// The counters are registered at 0 for every value of their labels at start-up, so a failure
/// that has not happened has a series (`rate()` sees its first count; alerts can read it).
fn every_label_value_has_a_series(ingest: &str, worker: &str) {
    use ingest::error::UnavailableReason;
    use ingest::publisher::PublishOutcome;
    use worker::outbound::guard::Refusal;
    use worker::outbound::metrics::{AttemptResult, Finished, StatusClass};
    use worker::supervisor::Task;
    let series = |name: &str, label: &str, value: &str| format!("{name}{{{label}=\"{value}\"}}");
    let mut wanted: Vec<(&str, String)> = Vec::new();
    for outcome in PublishOutcome::ALL {
        wanted.push((
            ingest,
            series("ingest_publish_total", "outcome", outcome.name()),
        ));
    }
    for reason in UnavailableReason::ALL {
        wanted.push((
            ingest,
            series("ingest_unavailable_total", "reason", reason.name()),
        ));
    }
    for name in ["ingest_requests_shed_total", "ingest_rate_limited_total"] {
        wanted.push((ingest, name.to_owned()));
    }
    for kind in shared::EventKind::ALL {
        let failed = series("worker_events_failed_total", "kind", kind.as_str());
        wanted.push((worker, failed));
    }
    for task in Task::ALL {
        let restarts = series("worker_task_restarts_total", "task", task.name());
        wanted.push((worker, restarts));
    }
    for step in worker::sweeper::Step::ALL {
        let failures = series("worker_sweep_step_failures_total", "step", step.name());
        wanted.push((worker, failures));
    }
    for reason in Refusal::ALL {
        let refusals = series("outbound_ssrf_refusals_total", "reason", reason.name());
        wanted.push((worker, refusals));
    }
    for outcome in Finished::ALL {
        let finished = series("outbound_deliveries_total", "outcome", outcome.name());
        wanted.push((worker, finished));
    }
    for result in AttemptResult::ALL {
        for class in StatusClass::ALL {
            let attempts = format!(
                "outbound_attempts_total{{result=\"{}\",status_class=\"{}\"}}",
                result.name(),
                class.name()
            );
            wanted.push((worker, attempts));
        }
    }
    for name in [
        "worker_transient_failures_total",
        "worker_dead_letters_put_back_total",
        "outbound_events_caught_up_total",
        "outbound_circuits_open",
        "stream_clients",
        "stream_clients_dropped_total{reason=\"slow\"}",
        "worker_db_pool_waiting",
    ] {
        wanted.push((worker, name.to_owned()));
    }
    let missing: Vec<_> = wanted
        .iter()
        .filter(|(exposition, series)| sample(exposition, series).is_none())
        .map(|(_, series)| series)
        .collect();
    assert!(missing.is_empty(), "no series from start: {missing:?}");
}

/// `worker_db_pool_waiting` counts a task while it waits for a pooled connection: the test
/// holds the only connection of a pool of one, a transaction begun through `checkout` waits
/// for it, and the worker's scrape shows the waiter (this binary's processes share one
/// recorder); once the connection is back the transaction begins and the waiter is gone.
#[tokio::test]
async fn a_task_waiting_for_a_pool_connection_is_counted() {
    let worker = TestWorker::start().await;
    let options = worker::db::connect_options(&worker.database.url, None).unwrap();
    let pool = worker::db::pool(options, 1);
    let held = pool.acquire().await.expect("the pool's one connection");
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { worker::checkout::begin(&pool).await.map(drop) }
    });
    shared::testkit::eventually(10, "a waiter in the scrape", || async {
        let waiting = worker.metric("worker_db_pool_waiting").await?;
        (waiting >= 1.0).then_some(())
    })
    .await;
    drop(held);
    waiter
        .await
        .unwrap()
        .expect("the transaction begins once the connection is back");
}
