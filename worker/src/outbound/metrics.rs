//! The delivery metrics (Prometheus, through the `metrics` facade):
//! - `outbound_attempts_total{result="succeeded|failed|retry"}`: attempts by what they decided;
//! - `outbound_attempt_seconds`: attempt latency, request to end of the answer's excerpt;
//! - `outbound_deliveries_total{outcome="succeeded|failed"}`: deliveries that finished;
//! - `outbound_deliveries_pending`: deliveries still to make, as this worker last counted;
//! - `outbound_events_dispatched_total`: outbox events fanned out.

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

pub fn dispatched(events: u64) {
    metrics::counter!("outbound_events_dispatched_total").increment(events);
}
