//! `/metrics` of ingest and of the worker after some traffic: every metric the alert rules
//! (`deploy/prometheus/alerts.yml`) use is there, every latency is a histogram, and every
//! metric has help text.
//!
//! Both processes run in this test binary and share its one recorder, so each scrape holds the
//! other's metrics too; the test still reads each metric from the process that exports it.

mod harness;

use harness::{ADMIN_TOKEN, Receiver, TestPipeline};
use serde_json::json;
use shared::testkit::eventually;

/// The metric names in the `expr` of every rule of `alerts.yml`, without `up` (Prometheus's).
fn metrics_in_alert_rules() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/prometheus/alerts.yml"
    );
    let rules = std::fs::read_to_string(path).expect("alerts.yml");
    let mut names: Vec<String> = exprs(&rules)
        .iter()
        .flat_map(|expr| expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|word| {
            ["ingest_", "worker_", "outbound_"]
                .iter()
                .any(|p| word.starts_with(p))
        })
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The text of every `expr:`, inline or a `|` block (its lines indented deeper than the key).
fn exprs(rules: &str) -> Vec<String> {
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

/// True when the exposition has a sample of `name` (`name{...} v` or `name v`).
fn has_sample(exposition: &str, name: &str) -> bool {
    exposition.lines().any(|line| {
        line.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    })
}

async fn scrape(pipeline: &TestPipeline, url: String) -> String {
    let response = pipeline.client.get(url).send().await.expect("scrape");
    assert_eq!(response.status(), 200);
    response.text().await.expect("exposition")
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
async fn both_processes_export_every_metric_the_alerts_use_with_histograms_and_help() {
    let pipeline = TestPipeline::start().await;
    let mut receiver = Receiver::ok().await;
    traffic(&pipeline, &mut receiver).await;
    let wanted = metrics_in_alert_rules();
    assert!(
        wanted.len() >= 10,
        "alerts.yml names its metrics: {wanted:?}"
    );

    let (ingest_url, worker_url) = (
        pipeline.ingest.url("/metrics"),
        pipeline.workers[0].url("/metrics"),
    );
    // The sampled gauges and the attempt counters appear within a few seconds.
    let (ingest, worker) = eventually(20, "every alerted metric scraped", || async {
        let ingest = scrape(&pipeline, ingest_url.clone()).await;
        let worker = scrape(&pipeline, worker_url.clone()).await;
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
        missing.is_empty().then_some((ingest, worker))
    })
    .await;

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
}
