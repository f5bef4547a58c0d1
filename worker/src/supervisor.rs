//! Supervision of the worker's long-running tasks (the consumer, the sweeper, the delivery
//! loop, retention, the erasure loop and the stream's fan-in): a task that panics, or returns while the worker is not stopping, is logged, counted
//! in `worker_task_restarts_total{task}`, shown as down in `worker_task_up{task}` and in
//! `/readyz`, and started again after a backoff (100 ms doubling to 5 s; back to 100 ms once a
//! run has lasted a minute).

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::watch;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A run this long counts as healthy: the next restart starts from the first backoff again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// The supervised tasks; their names are the `task` label of the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    Consumer,
    Sweeper,
    Deliveries,
    Erasure,
    Retention,
    Stream,
}

impl Task {
    pub const ALL: [Task; 6] = [
        Task::Consumer,
        Task::Sweeper,
        Task::Deliveries,
        Task::Erasure,
        Task::Retention,
        Task::Stream,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Task::Consumer => "consumer",
            Task::Sweeper => "sweeper",
            Task::Deliveries => "deliveries",
            Task::Erasure => "erasure",
            Task::Retention => "retention",
            Task::Stream => "stream",
        }
    }
}

/// Which tasks are running now (all false until the worker has started them).
#[derive(Debug, Default)]
pub struct TaskHealth {
    up: [AtomicBool; Task::ALL.len()],
}

impl TaskHealth {
    pub fn is_up(&self, task: Task) -> bool {
        self.up[task as usize].load(Ordering::SeqCst)
    }

    /// The names of the tasks that are not running.
    pub fn down(&self) -> Vec<&'static str> {
        Task::ALL
            .into_iter()
            .filter(|task| !self.is_up(*task))
            .map(Task::name)
            .collect()
    }

    fn set(&self, task: Task, up: bool) {
        self.up[task as usize].store(up, Ordering::SeqCst);
        metrics::gauge!("worker_task_up", "task" => task.name()).set(if up { 1.0 } else { 0.0 });
    }
}

/// Test-only fault injection: while armed for a task, that task panics (at once if it runs,
/// and each time it is restarted), inside the future the supervisor runs.
#[doc(hidden)]
#[derive(Clone, Debug)]
pub struct Faults {
    armed: Arc<watch::Sender<[bool; Task::ALL.len()]>>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            armed: Arc::new(watch::channel([false; Task::ALL.len()]).0),
        }
    }
}

impl Faults {
    pub fn arm(&self, task: Task, armed: bool) {
        self.armed.send_modify(|tasks| tasks[task as usize] = armed);
    }

    /// Panics once armed for `task`; never resolves otherwise.
    async fn strike(&self, task: Task) {
        let mut armed = self.armed.subscribe();
        if armed.wait_for(|tasks| tasks[task as usize]).await.is_ok() {
            panic!("injected fault: {} panics", task.name());
        }
        std::future::pending::<()>().await
    }
}

/// Runs `start()` as `task` until `stopping` turns true, restarting it whenever it dies.
pub async fn supervise<F, Fut>(
    task: Task,
    health: Arc<TaskHealth>,
    faults: Faults,
    mut stopping: watch::Receiver<bool>,
    start: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        let run = start();
        let started = Instant::now();
        health.set(task, true);
        let outcome = AssertUnwindSafe(async {
            tokio::select! {
                _ = run => {}
                _ = faults.strike(task) => {}
            }
        })
        .catch_unwind()
        .await;
        health.set(task, false);
        if *stopping.borrow() {
            return;
        }
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        let how = match outcome {
            Ok(()) => "returned".to_owned(),
            Err(panic) => format!("panicked: {}", panic_message(&*panic)),
        };
        tracing::error!(
            task = task.name(),
            how,
            restart_in_ms = backoff.as_millis() as u64,
            "a worker task died; restarting it"
        );
        metrics::counter!("worker_task_restarts_total", "task" => task.name()).increment(1);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The text a panic carried, when it carried text.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| text.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}
