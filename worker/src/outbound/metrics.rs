//! The delivery metrics (Prometheus, through the `metrics` facade):
//! - `outbound_attempts_total{result="succeeded|failed|retry"}`: attempts by what they decided;
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
    metrics::counter!("outbound_attempts_total", "result" => result).increment(1);
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
