//! Tracing logs and the Prometheus metrics recorder, set up the same way in both processes.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogSettings;

mod span_fields;

use span_fields::JsonSpanFields;

/// Installs the global tracing subscriber. Safe to call more than once (tests do): later calls
/// keep the first subscriber.
pub fn init_tracing(settings: &LogSettings) {
    let filter = EnvFilter::try_new(&settings.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = settings
        .json
        .unwrap_or_else(|| !std::io::stdout().is_terminal());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _already_set = if json {
        builder
            .json()
            .flatten_event(true)
            .fmt_fields(JsonSpanFields)
            .try_init()
    } else {
        builder.try_init()
    };
}

/// The buckets, in seconds, of every latency (every metric whose name ends in `_seconds`): from
/// a millisecond (a local confirm) to a minute (an outbound attempt at its timeout, a backlog).
/// Histograms, not summaries, so `histogram_quantile` aggregates them across replicas.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The process-wide Prometheus recorder, installed on first use.
///
/// `metrics` allows one global recorder per process; several apps started by one test binary
/// share it, which only means their counters add up.
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("the latency buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            spawn_upkeep(handle.clone());
            handle
        })
        .clone()
}

/// The `/metrics` text: the process's own CPU time, memory, file descriptors and threads
/// (`process_*`, read from the OS now), then every metric recorded.
pub fn render() -> String {
    let handle = metrics();
    process_collector().collect();
    handle.render()
}

/// The process metrics' collector, its help text given once, after the recorder is installed.
fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(|| {
        let collector = metrics_process::Collector::default();
        collector.describe();
        collector
    })
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// Samples recorded into histograms pile up until an upkeep call folds them into their buckets,
/// which costs time in proportion to the samples (at 15,000 requests a second, a few
/// milliseconds for every second's). So it runs often, on a thread of its own: on a runtime
/// worker it held up every request scheduled there for as long as it took.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start the metrics upkeep thread");
    }
}

/// The `LOG_EVENTS` line: one event and what became of it, in the same fields in both processes.
pub fn log_event(envelope: &crate::Envelope, outcome: &str) {
    tracing::info!(
        event_id = %envelope.event_id,
        source = envelope.source().as_str(),
        kind = envelope.kind.as_str(),
        uid = %envelope.uid,
        bytes = envelope.payload.len(),
        request_id = envelope.request_id.as_deref(),
        outcome,
        "event"
    );
}
