//! `MAX_BODY_BYTES_IN_FLIGHT` against more trickling clients than it allows: the body bytes the
//! process holds, read from its gauge `ingest_body_bytes_in_flight`, never go past the budget;
//! the clients beyond it are answered 503 with `Retry-After` (one announcing too long a body
//! at once, before sending it); a healthy sender is answered meanwhile; and every byte is given
//! back once the tricklers are gone. The gauge is per process, so this binary runs this one test.

mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use harness::{TestIngest, omi_query, transcript_head};
use shared::testkit::{eventually, fixture, sample};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const KIB: usize = 1024;
const BUDGET: usize = 1024 * KIB;
/// What each trickler announces, and what it sends at once before trickling.
const ANNOUNCED: usize = 200 * KIB;
const SENT_AT_ONCE: usize = 150 * KIB;
/// Tricklers whose first bytes fit in the budget together (6 x 150 KiB = 900 KiB).
const FITTING: usize = BUDGET / SENT_AT_ONCE;

/// The gauge's value now.
async fn in_flight(ingest: &TestIngest) -> u64 {
    let exposition = ingest.service.scrape().await;
    sample(&exposition, "ingest_body_bytes_in_flight").map_or(0, |value| value as u64)
}

/// A client that announced [`ANNOUNCED`] bytes and sent [`SENT_AT_ONCE`]; it trickles the rest.
struct Trickler {
    reader: OwnedReadHalf,
    writer: tokio::task::JoinHandle<OwnedWriteHalf>,
}

async fn trickler(ingest: &TestIngest, n: usize) -> Trickler {
    let stream = TcpStream::connect(ingest.service.addr).await.unwrap();
    let (reader, mut writer) = stream.into_split();
    let head = transcript_head(&omi_query(&format!("trickler-{n}")), ANNOUNCED);
    writer.write_all(head.as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        if writer.write_all(&vec![b' '; SENT_AT_ONCE]).await.is_ok() {
            while writer.write_all(b" ").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        writer
    });
    Trickler { reader, writer }
}

/// What the server has answered so far, waiting up to `within` for an answer to begin.
async fn answered_within(reader: &mut OwnedReadHalf, within: Duration) -> String {
    let mut buffer = vec![0u8; 4096];
    match tokio::time::timeout(within, reader.read(&mut buffer)).await {
        Ok(Ok(read)) => String::from_utf8_lossy(&buffer[..read]).into_owned(),
        _ => String::new(),
    }
}

/// Waits until the gauge reaches `expected` (an empty answer) or the server answers the client.
async fn taken_or_refused(
    ingest: &TestIngest,
    reader: &mut OwnedReadHalf,
    expected: u64,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if in_flight(ingest).await >= expected {
            return String::new();
        }
        let answer = answered_within(reader, Duration::from_millis(50)).await;
        if !answer.is_empty() {
            return answer;
        }
    }
    panic!("neither {expected} bytes taken nor an answer within 10 s");
}

#[tokio::test]
async fn trickling_clients_beyond_the_budget_cannot_hold_more_than_it() {
    let ingest = TestIngest::start_configured(|settings| {
        settings.json_body_limit = 256 * KIB;
        settings.audio_body_limit = 64 * KIB;
        settings.max_body_bytes_in_flight = BUDGET;
        settings.body_timeout = Duration::from_secs(20);
    })
    .await;
    let ingest = Arc::new(ingest);
    let highest = Arc::new(AtomicU64::new(0));
    let watcher = tokio::spawn({
        let (ingest, highest) = (ingest.clone(), highest.clone());
        async move {
            loop {
                highest.fetch_max(in_flight(&ingest).await, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });

    // One after another, so which ones fit is known: the first FITTING hold their bytes.
    let mut held = Vec::new();
    let mut refused = Vec::new();
    for n in 0..FITTING + 4 {
        let mut trickler = trickler(&ingest, n).await;
        let expected = ((held.len() + 1) * SENT_AT_ONCE) as u64;
        let answer = taken_or_refused(&ingest, &mut trickler.reader, expected).await;
        if answer.is_empty() {
            held.push(trickler);
        } else {
            refused.push(answer);
        }
    }
    assert_eq!(held.len(), FITTING, "{refused:?}");
    assert_eq!(refused.len(), 4);
    for answer in &refused {
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("retry-after: 1\r\n"), "{answer}");
        assert!(answer.contains("\"busy\""), "{answer}");
    }

    // A body announced longer than what is left is refused before it is sent.
    let mut announcer = TcpStream::connect(ingest.service.addr).await.unwrap();
    let head = transcript_head(&omi_query("announcer"), ANNOUNCED);
    announcer.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, _writer) = announcer.into_split();
    let answer = answered_within(&mut reader, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");

    // What is left of the budget still serves a healthy sender.
    let healthy = ingest
        .post_omi_transcript(
            &omi_query("healthy"),
            fixture("omi/realtime_transcript.json"),
        )
        .await;
    assert_eq!(healthy.status(), 202);

    let most = highest.load(Ordering::Relaxed);
    assert!(most <= BUDGET as u64, "held {most} bytes, budget {BUDGET}");
    assert!(
        most >= (FITTING * SENT_AT_ONCE) as u64,
        "the gauge saw {most} bytes"
    );

    for trickler in held {
        trickler.writer.abort();
        drop(trickler.reader);
    }
    eventually(10, "every byte given back", || async {
        (in_flight(&ingest).await == 0).then_some(())
    })
    .await;
    watcher.abort();
}
