//! SIGTERM to the real `ingest` binary, run as a child process: `/readyz` turns 503 at once,
//! ingest keeps serving through `SHUTDOWN_GRACE_MS`, then refuses new connections, finishes
//! the requests in flight (waiting for their confirms) and exits within `SHUTDOWN_TIMEOUT_MS`;
//! every 202 any sender got is on the test's queue. A client trickling a body cannot hold the
//! exit past that bound.

mod harness;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harness::{OMI_KEY, omi_query, transcript_head};
use lapin::options::BasicGetOptions;
use shared::testkit::{ProxyMode, TcpProxy, TestBroker, eventually, fixture};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The `ingest` binary on a port of its own, publishing under the test's prefix.
struct IngestProcess {
    child: tokio::process::Child,
    addr: SocketAddr,
}

impl IngestProcess {
    /// Starts it reaching the broker at `amqp_url`, with `settings`, and waits until ready.
    async fn start(broker: &TestBroker, amqp_url: &str, settings: &[(&str, &str)]) -> Self {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ingest"))
            .env("AMQP_URL", amqp_url)
            .env("QUEUE_PREFIX", &broker.settings.prefix)
            .env("INGEST_ADDR", addr.to_string())
            .env("OMI_KEYS", OMI_KEY)
            .env("LOG_LEVEL", "warn")
            .envs(settings.iter().copied())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start the ingest binary");
        let ingest = IngestProcess { child, addr };
        eventually(15, "ingest ready", || async {
            (ingest.readyz().await == Some(200)).then_some(())
        })
        .await;
        ingest
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `/readyz`'s status, or `None` when nothing answers.
    async fn readyz(&self) -> Option<u16> {
        let response = reqwest::get(self.url("/readyz")).await.ok()?;
        Some(response.status().as_u16())
    }

    fn terminate(&self) {
        let pid = self.child.id().expect("ingest is running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid}: {sent}");
    }

    /// Waits up to `bound` for the process to exit.
    async fn exited_within(&mut self, bound: Duration) -> ExitStatus {
        tokio::time::timeout(bound, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("ingest did not exit within {bound:?}"))
            .expect("wait for ingest")
    }
}

/// One answer a sender got: its `Idempotency-Key`, status, and when it came.
struct Answer {
    key: String,
    status: u16,
    at: Instant,
}

/// Posts transcripts one after another with keys `<name>-<n>` until a request gets no answer
/// (the listener is closed) or `stop` is set.
async fn sender(ingest_url: String, name: String, stop: Arc<AtomicBool>) -> Vec<Answer> {
    let client = reqwest::Client::new();
    let url = format!("{ingest_url}/v1/omi/transcript?{}", omi_query(&name));
    let mut answers = Vec::new();
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let key = format!("{name}-{n}");
        let sent = client
            .post(&url)
            .header("content-type", "application/json")
            .header("idempotency-key", &key)
            .body(fixture("omi/realtime_transcript.json"))
            .send()
            .await;
        let Ok(response) = sent else { break };
        let status = response.status().as_u16();
        let _ = response.bytes().await;
        answers.push(Answer {
            key,
            status,
            at: Instant::now(),
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    answers
}

/// The `Idempotency-Key` of every message on the events queue, taken off it on one channel.
async fn queued_keys(broker: &TestBroker) -> HashSet<String> {
    let connection = shared::broker::connect(&broker.settings.url, "shutdown-test")
        .await
        .expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    let queue = broker.topology().events_queue;
    let mut keys = HashSet::new();
    while let Some(message) = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
    {
        let delivery = message.delivery;
        let envelope =
            shared::Envelope::from_amqp(&delivery.properties, delivery.data).expect("an envelope");
        let key = envelope.dedup_key.strip_prefix("idempotency-key:");
        keys.insert(key.expect("sent with a key").to_owned());
    }
    let _ = connection.close(200, "done".into()).await;
    keys
}

#[tokio::test]
async fn sigterm_under_load_drains_the_confirms_in_flight_and_loses_no_202() {
    const GRACE: Duration = Duration::from_millis(1_000);
    const DRAIN: Duration = Duration::from_secs(5);
    let broker = TestBroker::new();
    let proxy = TcpProxy::start("127.0.0.1:5672").await;
    let settings = [
        ("SHUTDOWN_GRACE_MS", "1000"),
        ("SHUTDOWN_TIMEOUT_MS", "5000"),
        ("AMQP_CONFIRM_TIMEOUT_MS", "20000"),
    ];
    let mut ingest =
        IngestProcess::start(&broker, &TestBroker::url_for(proxy.addr), &settings).await;
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..6)
        .map(|n| tokio::spawn(sender(ingest.url(""), format!("s{n}"), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The broker goes silent, so each sender's request waits for its confirm; then SIGTERM.
    proxy.set_mode(ProxyMode::Stalled);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let terminated = Instant::now();
    ingest.terminate();
    let readiness = eventually(5, "/readyz to turn 503", || async {
        ingest.readyz().await.filter(|status| *status == 503)
    })
    .await;
    assert_eq!(readiness, 503);
    assert!(terminated.elapsed() < GRACE, "{:?}", terminated.elapsed());

    // Past the grace the listener is closed, but the process waits for the confirms.
    tokio::time::sleep(GRACE + Duration::from_millis(500)).await;
    assert_eq!(ingest.readyz().await, None, "new connections are refused");
    assert!(ingest.child.try_wait().unwrap().is_none(), "exited early");
    proxy.set_mode(ProxyMode::Open);
    let status = ingest.exited_within(DRAIN).await;
    let stopped_after = terminated.elapsed();
    assert!(status.success(), "{status}");
    assert!(stopped_after < GRACE + DRAIN, "{stopped_after:?}");

    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for sender in senders {
        answers.extend(sender.await.unwrap());
    }
    let refused: Vec<_> = answers.iter().filter(|a| a.status != 202).collect();
    assert!(
        refused.is_empty(),
        "{:?}",
        refused.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    let drained = answers.iter().filter(|a| a.at > terminated).count();
    assert!(
        drained >= 6,
        "only {drained} answers after SIGTERM: the confirms in flight were not waited for"
    );
    let queued = queued_keys(&broker).await;
    let lost: Vec<_> = answers
        .iter()
        .filter(|answer| !queued.contains(&answer.key))
        .map(|answer| answer.key.as_str())
        .collect();
    assert!(lost.is_empty(), "202 but not queued: {lost:?}");
    assert!(
        answers.len() > 20,
        "only {} requests answered",
        answers.len()
    );
}

#[tokio::test]
async fn a_trickling_client_cannot_hold_the_exit_past_the_shutdown_timeout() {
    let broker = TestBroker::new();
    let settings = [
        ("SHUTDOWN_GRACE_MS", "0"),
        ("SHUTDOWN_TIMEOUT_MS", "1000"),
        ("REQUEST_BODY_TIMEOUT_MS", "30000"),
    ];
    let url = broker.settings.url.clone();
    let mut ingest = IngestProcess::start(&broker, &url, &settings).await;
    let mut slow = TcpStream::connect(ingest.addr).await.unwrap();
    let head = transcript_head(&omi_query("slow"), 100_000);
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(b"{").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let terminated = Instant::now();
    ingest.terminate();
    let status = ingest.exited_within(Duration::from_secs(10)).await;
    let stopped_after = terminated.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        stopped_after >= Duration::from_millis(900) && stopped_after < Duration::from_secs(4),
        "{stopped_after:?}: the drain waits for the trickler up to SHUTDOWN_TIMEOUT_MS only"
    );
}
