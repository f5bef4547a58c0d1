//! The delivery metrics (Prometheus, through the `metrics` facade):
//! - `outbound_attempts_total{result="succeeded|failed|retry",status_class="2xx|..|5xx|none"}`:
//!   attempts by what they decided and the class of the answer (`none`: no answer);
//! - `outbound_attempt_seconds`: attempt latency, request to end of the answer's excerpt;
//! - `outbound_deliveries_total{outcome="succeeded|failed"}`: deliveries that finished;
//! - `outbound_deliveries_pending`: deliveries still to make, from the kept counts
//!   ([`super::counts`]), refreshed every second;
//! - `outbound_events_caught_up_total`: outbox rows written without their deliveries that the
//!   sweeper fanned out (see [`super::dispatch`]);
//! - `outbound_circuits_open`: endpoints whose circuit is open in this worker
//!   ([`super::isolation`]);
//! - `outbound_ssrf_refusals_total{reason}`: destinations the guard refused ([`super::guard`]).

use super::guard::Refusal;
use super::schedule::Decision;
use super::send::Report;

/// What an attempt decided: the `result` label of `outbound_attempts_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    Succeeded,
    Failed,
    Retry,
}

impl AttemptResult {
    pub const ALL: [AttemptResult; 3] = [
        AttemptResult::Succeeded,
        AttemptResult::Failed,
        AttemptResult::Retry,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AttemptResult::Succeeded => "succeeded",
            AttemptResult::Failed => "failed",
            AttemptResult::Retry => "retry",
        }
    }
}

/// The class of an attempt's answer: the `status_class` label (`none`: no answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusClass {
    Success,
    Redirect,
    ClientError,
    ServerError,
    Other,
    None,
}

impl StatusClass {
    pub const ALL: [StatusClass; 6] = [
        StatusClass::Success,
        StatusClass::Redirect,
        StatusClass::ClientError,
        StatusClass::ServerError,
        StatusClass::Other,
        StatusClass::None,
    ];

    fn of(status: Option<u16>) -> StatusClass {
        match status {
            Some(200..=299) => StatusClass::Success,
            Some(300..=399) => StatusClass::Redirect,
            Some(400..=499) => StatusClass::ClientError,
            Some(500..=599) => StatusClass::ServerError,
            Some(_) => StatusClass::Other,
            None => StatusClass::None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StatusClass::Success => "2xx",
            StatusClass::Redirect => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
            StatusClass::Other => "other",
            StatusClass::None => "none",
        }
    }
}

/// How a delivery finished: the `outcome` label of `outbound_deliveries_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finished {
    Succeeded,
    Failed,
}

impl Finished {
    pub const ALL: [Finished; 2] = [Finished::Succeeded, Finished::Failed];

    pub fn name(self) -> &'static str {
        match self {
            Finished::Succeeded => "succeeded",
            Finished::Failed => "failed",
        }
    }
}

/// Counts one attempt, and the delivery when the attempt finished it.
pub fn attempted(report: &Report, decision: Decision) {
    metrics::histogram!("outbound_attempt_seconds").record(report.latency);
    let result = match decision {
        Decision::Succeeded => AttemptResult::Succeeded,
        Decision::Failed { .. } => AttemptResult::Failed,
        Decision::RetryAt(_) => AttemptResult::Retry,
    };
    let status_class = StatusClass::of(report.status);
    metrics::counter!("outbound_attempts_total", "result" => result.name(), "status_class" => status_class.name())
        .increment(1);
    match result {
        AttemptResult::Succeeded => finished(Finished::Succeeded),
        AttemptResult::Failed => finished(Finished::Failed),
        AttemptResult::Retry => {}
    }
}

/// Counts a delivery that reached `succeeded` or `failed`.
pub fn finished(outcome: Finished) {
    metrics::counter!("outbound_deliveries_total", "outcome" => outcome.name()).increment(1);
}

/// The circuit of an endpoint opened (+1) or closed (-1) in this worker: `outbound_circuits_open`.
pub fn circuit_changed(opened: bool) {
    let gauge = metrics::gauge!("outbound_circuits_open");
    if opened {
        gauge.increment(1.0);
    } else {
        gauge.decrement(1.0);
    }
}

/// An outbound destination refused by the SSRF guard, by why: `outbound_ssrf_refusals_total`.
pub fn ssrf_refused(reason: Refusal) {
    metrics::counter!("outbound_ssrf_refusals_total", "reason" => reason.name()).increment(1);
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
    describe_gauge!(
        "outbound_circuits_open",
        "Endpoints whose circuit is open (or half-open) in this worker: no attempts until the \
         cool-down's probe succeeds"
    );
    describe_counter!(
        "outbound_ssrf_refusals_total",
        "Outbound destinations the SSRF guard refused before connecting (an endpoint's URL when \
         it is saved, or an attempt's resolved address), by the kind of address"
    );
    describe_counter!(
        "outbound_events_caught_up_total",
        "Outbox events written without their deliveries that the sweeper fanned out"
    );
}
