//! The delivery metrics (Prometheus, through the `metrics` facade):
//! - `outbound_attempts_total{result="succeeded|failed|retry",status_class="2xx|..|5xx|none"}`:
//!   attempts by what they decided and the class of the answer (`none`: no answer);
//! - `outbound_attempt_seconds`: attempt latency, request to end of the answer's excerpt;
//! - `outbound_deliveries_total{outcome="succeeded|failed"}`: deliveries that finished;
//! - `outbound_deliveries_pending`: deliveries still to make, from the kept counts
//!   ([`super::counts`]), refreshed every second;
//! - `outbound_events_caught_up_total`: outbox rows written without their deliveries that the
//!   sweeper fanned out (see [`super::dispatch`]).

use super::schedule::Decision;
use super::send::Report;

/// Counts one attempt, and the delivery when the attempt finished it.
pub fn attempted(report: &Report, decision: Decision) {
    metrics::histogram!("outbound_attempt_seconds").record(report.latency);
    let result = match decision {
        Decision::Succeeded => "succeeded",
        Decision::Failed { .. } => "failed",
        Decision::RetryAt(_) => "retry",
    };
    let status_class = match report.status {
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) => "other",
        None => "none",
    };
    metrics::counter!("outbound_attempts_total", "result" => result, "status_class" => status_class)
        .increment(1);
    if !matches!(decision, Decision::RetryAt(_)) {
        finished(result);
    }
}

/// Counts a delivery that reached `succeeded` or `failed`.
pub fn finished(outcome: &'static str) {
    metrics::counter!("outbound_deliveries_total", "outcome" => outcome).increment(1);
}

pub fn pending(count: i64) {
    metrics::gauge!("outbound_deliveries_pending").set(count as f64);
}

pub fn caught_up(events: u64) {
    metrics::counter!("outbound_events_caught_up_total").increment(events);
}

/// Help text of the delivery metrics.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        "outbound_attempt_seconds",
        Unit::Seconds,
        "Seconds one delivery attempt took, from the request to the end of the answer's excerpt"
    );
    describe_counter!(
        "outbound_attempts_total",
        "Delivery attempts by what they decided (succeeded, failed, retry) and the answer's \
         status class (2xx..5xx, other, none when there was no answer)"
    );
    describe_counter!(
        "outbound_deliveries_total",
        "Deliveries that finished, by outcome (succeeded, failed: out of retries or refused)"
    );
    describe_gauge!(
        "outbound_deliveries_pending",
        "Deliveries still to make, from the kept counts, refreshed every second"
    );
    describe_counter!(
        "outbound_events_caught_up_total",
        "Outbox events written without their deliveries that the sweeper fanned out"
    );
}
