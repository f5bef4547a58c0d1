//! Tracing logs and the Prometheus metrics recorder, set up the same way in both processes.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogSettings;

/// Installs the global tracing subscriber. Safe to call more than once (tests do): later calls
/// keep the first subscriber.
pub fn init_tracing(settings: &LogSettings) {
    let filter = EnvFilter::try_new(&settings.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = settings
        .json
        .unwrap_or_else(|| !std::io::stdout().is_terminal());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _already_set = if json {
        builder.json().flatten_event(true).try_init()
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

/// Samples recorded into histograms are folded into their buckets by an upkeep call (else they
/// pile up between scrapes); run it in the background.
fn spawn_upkeep(handle: PrometheusHandle) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                every.tick().await;
                handle.run_upkeep();
            }
        });
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
