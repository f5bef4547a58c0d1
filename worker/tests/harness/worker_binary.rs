//! The real `worker` binary as a child process: started on a port of its own and waited for,
//! stopped with SIGTERM as an orchestrator does, and (for [`LoggedWorker`]) its JSON log lines
//! collected as it runs, so a test can read what it said it did before it exited.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use shared::config::BrokerSettings;
use shared::testkit::eventually;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Runs the real `worker` binary on `broker`'s queue prefix with Postgres at `database_url`
/// and `env` added, and waits until it is ready.
pub async fn spawn_worker_binary(
    broker: &BrokerSettings,
    database_url: &str,
    env: &[(&str, &str)],
) -> Child {
    start(broker, database_url, env, Stdio::inherit()).await.0
}

/// Sends SIGTERM to `child`, as an orchestrator stopping it does.
pub fn terminate(child: &Child) {
    let pid = child.id().expect("the process runs").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -TERM {pid}: {sent}");
}

/// Waits for `child` to exit, successfully, within `bound`.
pub async fn exits_within(child: &mut Child, bound: Duration) {
    let started = Instant::now();
    let status = tokio::time::timeout(bound, child.wait())
        .await
        .unwrap_or_else(|_| panic!("the worker did not exit within {bound:?}"))
        .expect("wait for the worker");
    assert!(status.success(), "{status} after {:?}", started.elapsed());
}

/// Starts the binary with its stdout going to `stdout`; returns it and its `/readyz` URL once
/// that answers 200.
async fn start(
    broker: &BrokerSettings,
    database_url: &str,
    env: &[(&str, &str)],
    stdout: Stdio,
) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_worker"))
        .env("DATABASE_URL", database_url)
        .env("AMQP_URL", &broker.url)
        .env("QUEUE_PREFIX", &broker.prefix)
        .env("WORKER_ADDR", format!("127.0.0.1:{port}"))
        .env("LOG_LEVEL", "warn")
        .envs(env.iter().copied())
        .stdout(stdout)
        .kill_on_drop(true)
        .spawn()
        .expect("start the worker binary");
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    eventually(15, &readyz, || async {
        let response = reqwest::get(&readyz).await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
    (child, readyz)
}

/// The `worker` binary logging JSON at `info` for its consumer (`warn` elsewhere), every line
/// kept as it comes.
pub struct LoggedWorker {
    pub child: Child,
    readyz: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl LoggedWorker {
    /// Starts it like [`spawn_worker_binary`] and waits until it is ready.
    pub async fn start(broker: &BrokerSettings, database_url: &str, env: &[(&str, &str)]) -> Self {
        let logging = [
            ("LOG_LEVEL", "warn,worker::consumer=info"),
            ("LOG_FORMAT", "json"),
        ];
        let env: Vec<_> = logging.iter().chain(env).copied().collect();
        let (mut child, readyz) = start(broker, database_url, &env, Stdio::piped()).await;
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let kept = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                kept.lock().unwrap().push(line);
            }
        });
        LoggedWorker {
            child,
            readyz,
            lines,
        }
    }

    /// Sends SIGTERM, then waits until `/readyz` answers 503 (it may answer 200 until the
    /// signal is handled); panics if the process stops answering first, or after `within`.
    pub async fn terminate_and_see_not_ready(&self, within: Duration) {
        terminate(&self.child);
        let terminated = Instant::now();
        loop {
            let response = reqwest::get(&self.readyz).await;
            let status = response.map(|r| r.status().as_u16());
            match status {
                Ok(503) => return,
                Ok(_) => {}
                Err(error) => {
                    panic!("the worker stopped answering before /readyz said 503: {error}")
                }
            }
            assert!(
                terminated.elapsed() < within,
                "/readyz still ready {within:?} after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits for the process to exit, successfully, within `bound`.
    pub async fn exits_within(&mut self, bound: Duration) {
        exits_within(&mut self.child, bound).await
    }

    /// The first logged event whose message starts with `message`, parsed, after waiting a
    /// moment for the last lines to be read.
    pub async fn logged(&self, message: &str) -> Value {
        eventually(5, message, || async {
            let lines = self.lines.lock().unwrap();
            lines
                .iter()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find(|event| {
                    event["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with(message))
                })
        })
        .await
    }
}
