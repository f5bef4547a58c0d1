//! The handles of the metrics every request records, looked up once and kept.
//!
//! `metrics::counter!(name, labels...)` builds its key (allocating the labels it is given as
//! strings), hashes it and looks it up in the recorder's registry on every call; for the
//! series each request touches that was a measurable share of ingest's time per request. The
//! handles here are the same series, found once: per route and status for
//! `ingest_requests_total` and `ingest_request_duration_seconds`, per kind for
//! `ingest_events_accepted_total`.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use axum::http::StatusCode;
use metrics::{Counter, Histogram};
use shared::EventKind;

/// `ingest_requests_total{route, status}` and `ingest_request_duration_seconds{route}`.
///
/// Routes are the route table's patterns (and `unmatched`), statuses the ones ingest answers
/// with, so the handles kept are bounded by the route table.
#[derive(Default)]
pub struct RequestMetrics {
    routes: RwLock<HashMap<String, RouteMetrics>>,
}

struct RouteMetrics {
    duration: Histogram,
    /// By status code; a handful per route.
    answered: Vec<(u16, Counter)>,
}

impl RequestMetrics {
    /// Counts one answer of `status` on `route` that took `elapsed`.
    pub fn record(&self, route: &str, status: StatusCode, elapsed: Duration) {
        let status = status.as_u16();
        {
            let routes = self.routes.read().expect("request metrics lock");
            if let Some(metrics) = routes.get(route)
                && let Some((_, answered)) = metrics.answered.iter().find(|(s, _)| *s == status)
            {
                answered.increment(1);
                metrics.duration.record(elapsed);
                return;
            }
        }
        let mut routes = self.routes.write().expect("request metrics lock");
        let metrics = routes
            .entry(route.to_owned())
            .or_insert_with(|| RouteMetrics {
                duration: metrics::histogram!(
                    "ingest_request_duration_seconds",
                    "route" => route.to_owned()
                ),
                answered: Vec::new(),
            });
        if !metrics.answered.iter().any(|(s, _)| *s == status) {
            let counter = metrics::counter!(
                "ingest_requests_total",
                "route" => route.to_owned(),
                "status" => status.to_string()
            );
            metrics.answered.push((status, counter));
        }
        let (_, answered) = metrics
            .answered
            .iter()
            .find(|(s, _)| *s == status)
            .expect("just added");
        answered.increment(1);
        metrics.duration.record(elapsed);
    }
}

/// `ingest_events_accepted_total{kind}`, one handle per [`EventKind`].
pub struct AcceptedByKind([Counter; EventKind::ALL.len()]);

impl AcceptedByKind {
    /// The handles; make them after the recorder is installed (before, they record nothing).
    pub fn new() -> Self {
        AcceptedByKind(
            EventKind::ALL.map(
                |kind| metrics::counter!("ingest_events_accepted_total", "kind" => kind.as_str()),
            ),
        )
    }

    pub fn count(&self, kind: EventKind) {
        let index = EventKind::ALL
            .iter()
            .position(|known| *known == kind)
            .expect("every kind is in EventKind::ALL");
        self.0[index].increment(1);
    }
}

impl Default for AcceptedByKind {
    fn default() -> Self {
        Self::new()
    }
}
