//! Ingest against slow and too many clients, with raw TCP clients on 127.0.0.1: a trickled
//! body is cut off with 408, a trickled request head is answered 408 before it is closed,
//! requests beyond `MAX_CONCURRENT_REQUESTS` are 503 at once, connections beyond it that never
//! speak cost no permit and are closed after the header timeout, as is an idle keep-alive
//! connection, a request without credentials is 401 before its body arrives, and meanwhile a
//! healthy sender is still answered. (The body byte budget has a test binary of its own,
//! `body_budget.rs`, because it reads a process-wide gauge.)

mod harness;

use std::time::{Duration, Instant};

use harness::{OMI_KEY, TestIngest, omi_query, transcript_head};
use shared::testkit::fixture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::task::JoinHandle;

/// Generous upper bound for anything that should happen "at once" on a loaded machine.
const PROMPTLY: Duration = Duration::from_secs(5);

async fn start(header_timeout_ms: u64, body_timeout_ms: u64, max_requests: usize) -> TestIngest {
    TestIngest::start_configured(|settings| {
        settings.header_timeout = Duration::from_millis(header_timeout_ms);
        settings.body_timeout = Duration::from_millis(body_timeout_ms);
        settings.max_concurrent_requests = max_requests;
    })
    .await
}

/// A client that sends `head` and then one byte of `trickle` every 100 ms, forever; the
/// reading half and the writer task (stop it by aborting).
async fn trickling(
    ingest: &TestIngest,
    head: String,
    trickle: u8,
) -> (OwnedReadHalf, JoinHandle<()>) {
    let stream = TcpStream::connect(ingest.service.addr).await.unwrap();
    let (reader, mut writer) = stream.into_split();
    writer.write_all(head.as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        while writer.write_all(&[trickle]).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (reader, writer)
}

/// Everything the server sends until it closes the connection (or `within` passes: a panic).
async fn answer(reader: &mut OwnedReadHalf, within: Duration) -> String {
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => answer.extend_from_slice(&buffer[..read]),
            }
            if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                break;
            }
        }
    })
    .await
    .expect("the server answered or closed in time");
    String::from_utf8_lossy(&answer).into_owned()
}

async fn healthy_transcript(ingest: &TestIngest) -> u16 {
    let started = Instant::now();
    let response = ingest
        .post_omi_transcript(
            &omi_query("healthy"),
            fixture("omi/realtime_transcript.json"),
        )
        .await;
    assert!(started.elapsed() < PROMPTLY, "{:?}", started.elapsed());
    response.status().as_u16()
}

#[tokio::test]
async fn a_trickled_body_is_cut_off_with_408_while_a_healthy_sender_is_answered() {
    let ingest = start(10_000, 1_500, 64).await;
    let started = Instant::now();
    let head = transcript_head(&omi_query("slow"), 2 * 1024 * 1024);
    let (mut reader, writer) = trickling(&ingest, head, b' ').await;

    assert_eq!(healthy_transcript(&ingest).await, 202);
    let answer = answer(&mut reader, Duration::from_secs(10)).await;
    writer.abort();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(1_400));
    assert_eq!(healthy_transcript(&ingest).await, 202);
}

#[tokio::test]
async fn a_trickled_request_head_is_answered_408_while_a_healthy_sender_is_answered() {
    let ingest = start(1_500, 30_000, 64).await;
    let started = Instant::now();
    let head = format!("POST /v1/omi/transcript?key={OMI_KEY}&uid=slow HTTP/1.1\r\nX-Pad: ");
    let (mut reader, writer) = trickling(&ingest, head, b'a').await;

    assert_eq!(healthy_transcript(&ingest).await, 202);
    let answer = answer(&mut reader, Duration::from_secs(10)).await;
    writer.abort();
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let error: serde_json::Value = serde_json::from_str(body).expect("a JSON error body");
    assert_eq!(error["error"], "request_timeout", "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(1_400));
    assert_eq!(healthy_transcript(&ingest).await, 202);
}

/// A request line cut short (no header at all yet) is late as well.
#[tokio::test]
async fn a_partial_request_line_is_answered_408() {
    let ingest = start(1_000, 30_000, 64).await;
    let mut stream = TcpStream::connect(ingest.service.addr).await.unwrap();
    stream.write_all(b"POST /v1/omi/tra").await.unwrap();
    let (mut reader, _writer) = stream.into_split();
    let answer = answer(&mut reader, PROMPTLY).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
}

/// More connections than `MAX_CONCURRENT_REQUESTS` that never send a byte hold no request
/// permit, so a healthy sender is answered meanwhile; each is closed after the header timeout,
/// silently (nothing was asked, so nothing is answered).
#[tokio::test]
async fn silent_connections_beyond_the_bound_are_closed_by_the_header_timeout() {
    let ingest = start(1_500, 30_000, 4).await;
    let mut silent = Vec::new();
    for _ in 0..64 {
        silent.push(TcpStream::connect(ingest.service.addr).await.unwrap());
    }
    let opened = Instant::now();
    for _ in 0..3 {
        assert_eq!(healthy_transcript(&ingest).await, 202);
    }
    for stream in silent {
        let (mut reader, _writer) = stream.into_split();
        let answer = answer(&mut reader, Duration::from_secs(10)).await;
        assert_eq!(
            answer, "",
            "a silent connection is closed without an answer"
        );
    }
    let closed_after = opened.elapsed();
    assert!(
        closed_after >= Duration::from_millis(1_400) && closed_after < Duration::from_secs(8),
        "{closed_after:?}"
    );
    assert_eq!(healthy_transcript(&ingest).await, 202);
}

#[tokio::test]
async fn requests_beyond_the_bound_are_503_at_once_and_health_still_answers() {
    let ingest = start(10_000, 2_000, 2).await;
    let mut slow = Vec::new();
    for n in 0..2 {
        let head = transcript_head(&omi_query(&format!("slow-{n}")), 1024 * 1024);
        slow.push(trickling(&ingest, head, b' ').await);
    }
    // Both permits are held once both heads are read; give the server a moment to read them.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let refused = ingest
        .post_omi_transcript(
            &omi_query("healthy"),
            fixture("omi/realtime_transcript.json"),
        )
        .await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let health = ingest
        .client
        .get(ingest.service.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    for (mut reader, writer) in slow {
        let answer = answer(&mut reader, Duration::from_secs(10)).await;
        writer.abort();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    assert_eq!(healthy_transcript(&ingest).await, 202);
}

#[tokio::test]
async fn a_request_without_credentials_is_401_before_its_body_arrives() {
    let ingest = start(10_000, 30_000, 64).await;
    let started = Instant::now();
    let (mut reader, writer) =
        trickling(&ingest, transcript_head("uid=u1", 1024 * 1024), b' ').await;
    let answer = answer(&mut reader, PROMPTLY).await;
    writer.abort();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(started.elapsed() < PROMPTLY);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let ingest = start(1_000, 30_000, 64).await;
    let mut stream = TcpStream::connect(ingest.service.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: ingest\r\n\r\n")
        .await
        .unwrap();
    let (mut reader, _writer) = stream.into_split();
    let mut buffer = [0u8; 4096];
    let read = reader.read(&mut buffer).await.unwrap();
    assert!(buffer[..read].starts_with(b"HTTP/1.1 200"));
    let idle = Instant::now();
    let closed = tokio::time::timeout(PROMPTLY, reader.read(&mut buffer)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    assert!(
        idle.elapsed() >= Duration::from_millis(900),
        "{:?}",
        idle.elapsed()
    );
}
