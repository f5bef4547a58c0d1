//! The load generator: keep-alive HTTP/1.1 connections over loopback, each with one request in
//! flight, recording the latency of every answer.
//!
//! Two paces: [`Pace::Closed`] sends the next request as soon as the previous one is answered
//! (the most a target can take at that many connections), and [`Pace::Rate`] sends on a fixed
//! schedule spread over the connections (a load below saturation, for the time to commit). The
//! same generator drives the floors and our processes, so their figures compare.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// One request to send: the generator adds `Host` and `Content-Length`.
pub struct Request {
    pub path_and_query: String,
    pub content_type: &'static str,
    pub body: Bytes,
    /// Sent as `Idempotency-Key`, so the worker's row can be found again by its dedup key.
    pub idempotency_key: Option<String>,
}

/// Builds request number `n` (numbered from 0 over all connections).
pub type MakeRequest = Arc<dyn Fn(u64) -> Request + Send + Sync>;

#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// Each connection sends again as soon as it has its answer.
    Closed,
    /// This many requests per second in all, on a fixed schedule.
    Rate(f64),
}

#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub connections: usize,
    /// Sent but not counted: connections open and caches warm before measuring.
    pub warm_up: Duration,
    pub measure: Duration,
    pub pace: Pace,
}

/// What one load measured over its measuring window.
#[derive(Debug, Default)]
pub struct Outcome {
    pub accepted: u64,
    /// Answers other than 2xx, by status.
    pub refused: Vec<(StatusCode, u64)>,
    /// Requests that got no answer (connection refused, reset, closed).
    pub failed: u64,
    pub measured: Duration,
    /// Latency of every accepted (2xx) request, in microseconds, sorted.
    pub latencies_us: Vec<u32>,
}

impl Outcome {
    pub fn accepted_per_s(&self) -> f64 {
        self.accepted as f64 / self.measured.as_secs_f64()
    }

    /// The latency at quantile `q` (0.5, 0.99, ...), in milliseconds.
    pub fn latency_ms(&self, q: f64) -> f64 {
        quantile_ms(&self.latencies_us, q)
    }

    pub fn refused_total(&self) -> u64 {
        self.refused.iter().map(|(_, count)| count).sum()
    }
}

/// The value at quantile `q` of sorted microsecond samples, in milliseconds (0 when empty).
pub fn quantile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((sorted_us.len() as f64 * q).ceil() as usize).clamp(1, sorted_us.len());
    sorted_us[rank - 1] as f64 / 1000.0
}

/// Told, as they arrive, the idempotency key of each accepted request and when its answer came.
pub type Accepted = mpsc::UnboundedSender<(String, Instant)>;

/// Runs `load` against `target` and returns what the measuring window saw.
pub async fn run(
    target: SocketAddr,
    load: Load,
    make: MakeRequest,
    accepted: Option<Accepted>,
) -> Outcome {
    let started = Instant::now();
    let window = (
        started + load.warm_up,
        started + load.warm_up + load.measure,
    );
    let next = Arc::new(AtomicU64::new(0));
    let connections: Vec<_> = (0..load.connections)
        .map(|index| {
            let connection = Connection {
                target,
                load,
                index,
                started,
                window,
                next: next.clone(),
                make: make.clone(),
                accepted: accepted.clone(),
            };
            tokio::spawn(connection.drive())
        })
        .collect();
    let mut outcome = Outcome {
        measured: load.measure,
        ..Default::default()
    };
    for connection in connections {
        let seen = connection.await.expect("a load connection panicked");
        outcome.accepted += seen.latencies_us.len() as u64;
        outcome.failed += seen.failed;
        outcome.latencies_us.extend(seen.latencies_us);
        for (status, count) in seen.refused {
            add_refused(&mut outcome.refused, status, count);
        }
    }
    outcome.latencies_us.sort_unstable();
    outcome
}

struct Connection {
    target: SocketAddr,
    load: Load,
    index: usize,
    started: Instant,
    window: (Instant, Instant),
    next: Arc<AtomicU64>,
    make: MakeRequest,
    accepted: Option<Accepted>,
}

#[derive(Default)]
struct Seen {
    latencies_us: Vec<u32>,
    refused: Vec<(StatusCode, u64)>,
    failed: u64,
}

impl Connection {
    async fn drive(self) -> Seen {
        let mut seen = Seen::default();
        let mut sender: Option<SendRequest<Full<Bytes>>> = None;
        let mut sent_here = 0u64;
        let end = self.window.1;
        loop {
            if let Pace::Rate(rate) = self.load.pace {
                // Request k of this connection is due at (k * connections + index) / rate.
                let slot = sent_here * self.load.connections as u64 + self.index as u64;
                let due = self.started + Duration::from_secs_f64(slot as f64 / rate);
                if due >= end {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
            } else if Instant::now() >= end {
                break;
            }
            sent_here += 1;
            let request = (self.make)(self.next.fetch_add(1, Ordering::Relaxed));
            let key = request.idempotency_key.clone();
            let began = Instant::now();
            let answer = match sender.as_mut() {
                Some(open) => send(open, request).await,
                None => match connect(self.target).await {
                    Ok(mut open) => {
                        let answer = send(&mut open, request).await;
                        sender = Some(open);
                        answer
                    }
                    Err(error) => Err(error),
                },
            };
            let answered = Instant::now();
            let in_window = answered >= self.window.0 && answered < end;
            match answer {
                Ok(status) if status.is_success() => {
                    if in_window {
                        let micros = answered.duration_since(began).as_micros();
                        seen.latencies_us.push(micros.min(u32::MAX as u128) as u32);
                    }
                    if let (Some(accepted), Some(key)) = (&self.accepted, key) {
                        let _ = accepted.send((key, answered));
                    }
                }
                Ok(status) if in_window => {
                    add_refused(&mut seen.refused, status, 1);
                }
                Ok(_) => {}
                Err(_) => {
                    sender = None;
                    if in_window {
                        seen.failed += 1;
                    }
                    // Do not spin on a refused connection.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        seen
    }
}

/// Adds `count` answers of `status` to a tally by status.
fn add_refused(refused: &mut Vec<(StatusCode, u64)>, status: StatusCode, count: u64) {
    match refused.iter_mut().find(|(known, _)| *known == status) {
        Some((_, total)) => *total += count,
        None => refused.push((status, count)),
    }
}

async fn connect(target: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(target).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends one request and reads the whole answer; the status is what counts.
async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request,
) -> anyhow::Result<StatusCode> {
    sender.ready().await?;
    let mut builder = hyper::Request::post(request.path_and_query)
        .header(header::HOST, "127.0.0.1")
        .header(header::CONTENT_TYPE, request.content_type);
    if let Some(key) = request.idempotency_key {
        builder = builder.header("idempotency-key", key);
    }
    let response = sender
        .send_request(builder.body(Full::new(request.body))?)
        .await?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}

/// `GET path` on a fresh connection; the status, or an error if nothing answered.
pub async fn get(target: SocketAddr, path: &str) -> anyhow::Result<StatusCode> {
    let request = hyper::Request::get(path).body(Full::new(Bytes::new()))?;
    Ok(once(target, request).await?.0)
}

/// `POST path` with a JSON body and a bearer token, on a fresh connection: status and body.
pub async fn post_json(
    target: SocketAddr,
    path: &str,
    bearer: &str,
    body: &serde_json::Value,
) -> anyhow::Result<(StatusCode, serde_json::Value)> {
    let request = hyper::Request::post(path)
        .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
    let (status, body) = once(target, request).await?;
    Ok((status, serde_json::from_slice(&body).unwrap_or_default()))
}

async fn once(
    target: SocketAddr,
    mut request: hyper::Request<Full<Bytes>>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let mut sender = connect(target).await?;
    sender.ready().await?;
    let host = header::HeaderValue::from_static("127.0.0.1");
    request.headers_mut().insert(header::HOST, host);
    let response = sender.send_request(request).await?;
    let status = response.status();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_take_the_sample_at_or_above_the_rank() {
        let samples: Vec<u32> = (1..=1000).map(|ms| ms * 1000).collect();
        assert_eq!(quantile_ms(&samples, 0.5), 500.0);
        assert_eq!(quantile_ms(&samples, 0.99), 990.0);
        assert_eq!(quantile_ms(&samples, 0.999), 999.0);
        assert_eq!(quantile_ms(&samples, 1.0), 1000.0);
        assert_eq!(quantile_ms(&[], 0.99), 0.0);
    }
}
