//! `worker`: consumes accepted events from RabbitMQ and makes them durable in Postgres, exactly
//! once, acknowledging each message only after its transaction commits. Any number of workers
//! can run side by side as competing consumers.
//!
//! # Layout
//! - [`consumer`]: the RabbitMQ consumer: prefetch, ack after commit, retry, reconnect.
//! - [`audio`]: audio levels and listening status.
//! - [`handlers`]: the per-kind handlers and the dedup claim they share.
//! - [`api`]: health, readiness, metrics and the management API.
//! - [`cli`]: `worker admin ...`, the operator's command-line client of that API.
//! - [`dashboard`]: the `/dashboard` web page, embedded in the binary.
//! - [`outbound`]: the outbox and outbound webhook delivery.
//! - [`dead_letters`]: poison messages: recording and redriving them.
//! - [`db`]: connecting (TLS included), database creation, pool and migrations.
//! - [`checkout`]: taking connections from the pool, counting the tasks that wait for one.
//! - [`lifecycle`]: retention: deleting each kind of data once it is older than its setting.
//! - [`gauges`]: gauges sampled every few seconds (queues, database, pool, endpoints).
//! - [`sessions`]: completing transcript sessions, and their Reflector-shaped transcript.
//! - [`sweeper`]: periodic work: folding audio, stopping idle streams.
//! - [`stream`]: the live stream of outbound events (LISTEN/NOTIFY in, Server-Sent Events out).
//! - [`lifecycle`]: the data lifecycle: erasing a user.
//! - [`supervisor`]: restarting a background task that dies, and reporting it.
//! - [`settings`]: configuration from the environment.

pub mod api;
pub mod audio;
pub mod checkout;
pub mod cli;
pub mod consumer;
pub mod dashboard;
pub mod db;
pub mod dead_letters;
pub mod gauges;
pub mod handlers;
pub mod lifecycle;
pub mod outbound;
pub mod sessions;
pub mod settings;
pub mod stream;
pub mod supervisor;
pub mod sweeper;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::settings::WorkerSettings;
use crate::supervisor::{Task, TaskHealth};

/// What the consumer and the HTTP handlers share.
pub struct WorkerContext {
    pub settings: WorkerSettings,
    pub pool: PgPool,
    /// True while the consumer holds a live broker connection (for `/readyz`).
    pub broker_connected: AtomicBool,
    /// A confirm-mode channel on the consumer's connection, for redriving dead letters.
    pub publish_channel: std::sync::RwLock<Option<lapin::Channel>>,
    /// The outbound delivery side: HTTP client, schedule, per-endpoint isolation.
    pub outbound: outbound::Outbound,
    /// The live stream's broadcast to this worker's clients, and its wake-ups.
    pub stream: stream::Hub,
    /// Which background tasks run now (for `/readyz`).
    pub tasks: Arc<TaskHealth>,
    /// Turns true when shutdown begins.
    pub stopping: watch::Receiver<bool>,
}

impl WorkerContext {
    pub fn publish_channel(&self) -> Option<lapin::Channel> {
        self.publish_channel.read().expect("channel lock").clone()
    }

    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Called after this worker commits outbox events: has every worker's stream read them,
    /// and wakes this worker's delivery loop when the commit queued deliveries. Never waits.
    pub fn events_committed(&self, deliveries_queued: bool) {
        if deliveries_queued {
            self.outbound.wake.notify_one();
        }
        self.stream.committed();
    }
}

/// Serves HTTP on `listener` at once, waits for Postgres and migrates, then consumes until
/// `shutdown` resolves. Then `/readyz` answers 503, and the events held finish or go back to
/// the queue within `SHUTDOWN_TIMEOUT_MS` before it returns, even while Postgres is down.
pub async fn run(
    settings: WorkerSettings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // The recorder first, so the help text and the first samples are kept.
    let _ = shared::telemetry::metrics();
    describe_metrics();
    zero_metrics();
    let database = db::connect_options(&settings.database_url, settings.database_ca_file.as_ref())?;
    let pool = db::pool(database.clone(), settings.database_max_connections);
    let (stop, stopping) = watch::channel(false);
    let context = Arc::new(WorkerContext {
        outbound: outbound::Outbound::new(&settings.delivery)?,
        stream: stream::Hub::default(),
        settings,
        pool,
        broker_connected: AtomicBool::new(false),
        publish_channel: std::sync::RwLock::new(None),
        tasks: Default::default(),
        stopping: stopping.clone(),
    });
    tracing::info!(addr = %listener.local_addr()?, "worker listening");
    let (server_stop, server_stopping) = watch::channel(false);
    let server = tokio::spawn(serve(listener, context.clone(), server_stopping));
    let sampler = tokio::spawn(gauges::database(context.clone(), stopping.clone()));
    let signal = tokio::spawn(async move {
        shutdown.await;
        stop.send_replace(true);
    });
    let started = db::migrate_when_reachable(&database, stopping.clone()).await;
    if let Ok(true) = started {
        seal_stored_secrets(&context).await;
        let tasks = start_tasks(&context);
        let _ = stopping.clone().wait_for(|stop| *stop).await;
        finish(&context, tasks).await;
    }
    signal.abort();
    sampler.abort();
    server_stop.send_replace(true);
    let _ = server.await;
    context.pool.close().await;
    started.map(drop)
}

/// Warns when secrets are kept in plaintext; else seals every endpoint secret and header value
/// stored in plaintext or with an older key. A failure is logged and the worker starts: the
/// values it left are still used as they are, and the next start seals them.
async fn seal_stored_secrets(context: &WorkerContext) {
    let keys = context.outbound.sender.secrets_keys();
    if !keys.is_set() {
        tracing::warn!(
            "SECRETS_KEY is not set: endpoint secrets and custom header values are stored in \
             plaintext"
        );
        return;
    }
    match outbound::at_rest::seal_stored(&context.pool, keys).await {
        Ok(0) => {}
        Ok(sealed) => tracing::info!(sealed, "sealed endpoint secrets with the first SECRETS_KEY"),
        Err(error) => tracing::warn!(%error, "could not seal the stored endpoint secrets"),
    }
}

/// The HTTP server, until `stopping` turns true (after the background tasks have finished).
async fn serve(
    listener: TcpListener,
    context: Arc<WorkerContext>,
    mut stopping: watch::Receiver<bool>,
) {
    let server = axum::serve(listener, api::router(context)).with_graceful_shutdown(async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    });
    if let Err(error) = server.await {
        tracing::error!(%error, "HTTP server failed");
    }
}

/// Starts the consumer, the sweeper, the delivery loop, retention, the erasure loop and the
/// stream's fan-in, each under supervision.
fn start_tasks(context: &Arc<WorkerContext>) -> Vec<JoinHandle<()>> {
    vec![
        supervised(context, Task::Consumer, consumer::run),
        supervised(context, Task::Sweeper, sweeper::run),
        supervised(context, Task::Deliveries, outbound::run),
        supervised(context, Task::Erasure, lifecycle::erasure::run),
        supervised(context, Task::Retention, lifecycle::retention::run),
        supervised(context, Task::Stream, stream::run),
    ]
}

fn supervised<Fut>(
    context: &Arc<WorkerContext>,
    task: Task,
    run: fn(Arc<WorkerContext>, watch::Receiver<bool>) -> Fut,
) -> JoinHandle<()>
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let context = context.clone();
    tokio::spawn(async move {
        let (health, faults) = (context.tasks.clone(), context.settings.faults.clone());
        let stopping = context.stopping.clone();
        supervisor::supervise(task, health, faults, stopping.clone(), || {
            run(context.clone(), stopping.clone())
        })
        .await
    })
}

/// Waits for the tasks to finish; past `SHUTDOWN_TIMEOUT_MS` (and a second's grace for the
/// consumer to close its connection, which returns what it holds) they are cut short.
async fn finish(context: &WorkerContext, tasks: Vec<JoinHandle<()>>) {
    let bound = context.settings.shutdown_timeout + std::time::Duration::from_secs(1);
    let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
    let joined = futures_util::future::join_all(tasks);
    if tokio::time::timeout(bound, joined).await.is_err() {
        tracing::warn!("background tasks outlived the shutdown timeout; stopping them");
        aborts.iter().for_each(tokio::task::AbortHandle::abort);
    }
}

/// Every counter the worker exports, at 0 for each of its label values, and the open circuits
/// at 0: `rate()` and `increase()` see the first count, and alerts can read a failure that has
/// not happened yet.
fn zero_metrics() {
    use metrics::counter;
    use outbound::metrics::{AttemptResult, Finished, StatusClass};
    for kind in shared::EventKind::ALL {
        for outcome in handlers::Outcome::ALL {
            counter!("worker_events_total", "kind" => kind.as_str(), "outcome" => outcome.name())
                .increment(0);
        }
        counter!("worker_events_failed_total", "kind" => kind.as_str()).increment(0);
    }
    for task in Task::ALL {
        counter!("worker_task_restarts_total", "task" => task.name()).increment(0);
    }
    for step in sweeper::Step::ALL {
        counter!("worker_sweep_step_failures_total", "step" => step.name()).increment(0);
    }
    for result in AttemptResult::ALL {
        for class in StatusClass::ALL {
            counter!("outbound_attempts_total", "result" => result.name(), "status_class" => class.name())
                .increment(0);
        }
    }
    for outcome in Finished::ALL {
        counter!("outbound_deliveries_total", "outcome" => outcome.name()).increment(0);
    }
    for reason in outbound::guard::Refusal::ALL {
        counter!("outbound_ssrf_refusals_total", "reason" => reason.name()).increment(0);
    }
    for name in [
        "worker_transient_failures_total",
        "worker_dead_letters_total",
        "worker_dead_letters_put_back_total",
        "audio_chunks_late_total",
        "outbound_events_caught_up_total",
    ] {
        counter!(name).increment(0);
    }
    // Incremented and decremented as circuits open and close; one worker per process but
    // tests, which run several and so see their sum.
    metrics::gauge!("outbound_circuits_open").increment(0.0);
}

/// Help text of the metrics of supervision, sweeping and dead-lettering (the recorder shows it
/// once a metric is set).
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    gauges::describe_metrics();
    checkout::describe_metrics();
    outbound::metrics::describe_metrics();
    lifecycle::retention::describe_metrics();
    stream::describe_metrics();
    describe_counter!(
        "worker_events_total",
        "Events the consumer stored and acknowledged, by kind and outcome (stored, duplicate, erased: dropped because their uid was erased after ingest received them)"
    );
    lifecycle::erasure::describe_metrics();
    describe_histogram!(
        "worker_event_seconds",
        Unit::Seconds,
        "Seconds from the consumer taking an event's batch to its commit"
    );
    describe_histogram!(
        "worker_ingest_to_commit_seconds",
        Unit::Seconds,
        "Seconds from ingest accepting an event (its received-at) to the worker's commit of it"
    );
    describe_counter!(
        "worker_transient_failures_total",
        "Batches retried in place because Postgres was unreachable (never counted against an event)"
    );
    describe_counter!(
        "audio_chunks_late_total",
        "Audio chunks folded out of order (received before the stream's last folded chunk)"
    );
    describe_gauge!(
        "worker_task_up",
        "1 while the background task named by `task` runs, 0 while it is down or restarting"
    );
    describe_counter!(
        "worker_task_restarts_total",
        "Times a background task died (panicked, or returned while not stopping) and was restarted"
    );
    describe_counter!(
        "worker_sweep_step_failures_total",
        "Sweep steps that failed, by step; the other steps of the pass still ran"
    );
    describe_counter!(
        "worker_dead_letters_total",
        "Poison messages recorded in dead_letters"
    );
    describe_counter!(
        "worker_dead_letters_put_back_total",
        "Messages the broker dead-lettered for its own delivery limit before the worker's count said poison, published back to the events exchange"
    );
    describe_counter!(
        "worker_events_failed_total",
        "Failures of an event's own processing, counted toward DELIVERY_LIMIT, by kind"
    );
}
