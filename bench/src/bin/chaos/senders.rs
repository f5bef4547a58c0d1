//! Concurrent senders that behave like the real ones: each takes the next logical event at the
//! run's rate, posts it to one of the ingest processes and, on a 503, 429, 5xx, timeout or
//! connection error, waits (honouring `Retry-After`) and sends it again, to another ingest,
//! until it is answered 202 or its time is up. Some events are sent once more after their 202,
//! as a sender does whose answer was lost, to check deduplication.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::events::{self, Event, Style};
use crate::ledger::{Answered, Ledger};

/// How the senders load the service.
#[derive(Clone, Debug)]
pub struct Load {
    pub ingest: Vec<SocketAddr>,
    /// New logical events per second, over all senders.
    pub rate: f64,
    pub senders: usize,
    /// No new event starts after this.
    pub until: Instant,
    /// How long one event is retried before its sender gives up on it.
    pub patience: Duration,
    pub style: Style,
}

/// Runs the senders until `load.until`; returns when every event they started is settled.
pub async fn run(load: Load, ledger: Arc<Ledger>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..load.senders {
        let (load, ledger, next, client) =
            (load.clone(), ledger.clone(), next.clone(), client.clone());
        senders.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let due = started + Duration::from_secs_f64(n as f64 / load.rate);
                if due >= load.until {
                    return;
                }
                tokio::time::sleep_until(due.into()).await;
                send_one(&client, &load, &ledger, n).await;
            }
        });
    }
    senders.join_all().await;
}

/// Every seventh group of ten events is resent after its 202: one of each kind.
fn resent_on_purpose(n: u64) -> bool {
    (n / 10) % 7 == 3
}

async fn send_one(client: &reqwest::Client, load: &Load, ledger: &Ledger, n: u64) {
    let event = events::event(n, load.style);
    let mut attempt = 0;
    let mut accepted = until_accepted(client, load, &event, n, &mut attempt).await;
    let resent = accepted && resent_on_purpose(n);
    if resent {
        accepted = until_accepted(client, load, &event, n, &mut attempt).await;
    }
    let kind = event.kind;
    ledger.record(
        &event.identity,
        Answered {
            kind,
            accepted,
            resent,
        },
    );
}

/// Sends `event` until an attempt is answered 202 (true), or it is refused or out of time.
async fn until_accepted(
    client: &reqwest::Client,
    load: &Load,
    event: &Event,
    n: u64,
    attempt: &mut u32,
) -> bool {
    let deadline = Instant::now() + load.patience;
    loop {
        let ingest = load.ingest[(n as usize + *attempt as usize) % load.ingest.len()];
        let outcome = post(client, ingest, event, *attempt).await;
        *attempt += 1;
        let wait = match outcome {
            Outcome::Accepted => return true,
            Outcome::Refused(status, body) => {
                eprintln!("chaos: {} refused with {status}: {body}", event.identity);
                return false;
            }
            Outcome::Retry(after) => after.unwrap_or_else(|| backoff(*attempt)),
        };
        if Instant::now() + wait > deadline {
            return false;
        }
        tokio::time::sleep(wait).await;
    }
}

enum Outcome {
    Accepted,
    /// A 4xx the sender does not retry: a defect of this driver or of ingest.
    Refused(u16, String),
    /// Try again, after `Retry-After` when the answer had one.
    Retry(Option<Duration>),
}

async fn post(
    client: &reqwest::Client,
    ingest: SocketAddr,
    event: &Event,
    attempt: u32,
) -> Outcome {
    let request = event.request(attempt);
    let mut builder = client
        .post(format!("http://{ingest}{}", event.path))
        .body(request.body);
    for (name, value) in request.headers {
        builder = builder.header(name, value);
    }
    let Ok(response) = builder.send().await else {
        return Outcome::Retry(None);
    };
    let status = response.status().as_u16();
    match status {
        202 => Outcome::Accepted,
        408 | 429 | 500.. => Outcome::Retry(retry_after(&response)),
        _ => Outcome::Refused(status, response.text().await.unwrap_or_default()),
    }
}

/// `Retry-After` in seconds, at most 2 s (real senders wait longer; this run is short).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let seconds: u64 = response
        .headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(Duration::from_secs(2)))
}

/// 100 ms doubling to 2 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100 << attempt.min(5)).min(Duration::from_secs(2))
}
