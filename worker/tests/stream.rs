//! `GET /v1/stream`: outbound events stored by any worker reach the stream clients of every
//! worker, filtered by uid and type, in one order that a client resumes with `Last-Event-ID`
//! without gaps or repeats; a client that does not read is dropped without holding anyone up.

mod harness;

use std::collections::HashSet;
use std::time::Duration;

use harness::sse::{Frame, SseStream, parse_all};
use harness::{ADMIN_TOKEN, TestWorker, envelope, spawn_unready, wait_ready};
use serde_json::{Value, json};
use shared::EventKind;
use shared::testkit::{TestBroker, eventually};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;
use worker::outbound::outbox::{self, EventType};

const QUIET: Duration = Duration::from_millis(400);

/// Opens `/v1/stream<query>` on `worker` with the token, resuming after `last` when given.
async fn open(worker: &TestWorker, query: &str, last: Option<&str>) -> SseStream {
    let mut request = worker.admin(reqwest::Method::GET, &format!("/v1/stream{query}"));
    if let Some(last) = last {
        request = request.header("last-event-id", last);
    }
    SseStream::open(request).await
}

/// Opens a stream and waits for its first frame (the `id:` a client without a position starts
/// at), so that what is written after this is live for it.
async fn open_live(worker: &TestWorker, query: &str) -> (SseStream, String) {
    let mut stream = open(worker, query, None).await;
    let start = stream.next_frame().await;
    assert!(!start.is_event(), "first the start position: {start:?}");
    (stream, start.id.expect("an id"))
}

/// Writes `count` events of one type and uid in one transaction, as a writer outside the
/// worker does (then `NOTIFY outbound`); returns their ids.
async fn emit(
    pool: &PgPool,
    kind: EventType,
    uid: Option<&str>,
    count: usize,
    data: Value,
) -> Vec<Uuid> {
    let mut tx = pool.begin().await.expect("begin");
    let events = (0..count)
        .map(|_| outbox::NewEvent {
            uid,
            data: data.clone(),
            cause: None,
        })
        .collect();
    let ids = outbox::emit_all(&mut tx, kind, events).await.expect("emit");
    tx.commit().await.expect("commit");
    notify(pool).await;
    ids
}

async fn notify(pool: &PgPool) {
    sqlx::query("SELECT pg_notify('outbound', '')")
        .execute(pool)
        .await
        .expect("notify");
}

fn ids(frames: &[Frame]) -> Vec<Uuid> {
    frames.iter().map(Frame::outbox_id).collect()
}

/// An Omi transcript batch of `uid` with one segment saying `text`.
fn transcript(uid: &str, text: &str) -> shared::Envelope {
    let payload = json!({
        "session_id": format!("session-{uid}"),
        "segments": [{"id": format!("seg-{text}"), "text": text, "speaker": "SPEAKER_00",
                      "speaker_id": 0, "is_user": true, "start": 0.0, "end": 1.0}],
    });
    envelope(EventKind::OmiTranscript, uid, text, payload.to_string())
}

#[tokio::test]
async fn events_stored_by_another_worker_reach_a_client_of_this_one() {
    // No polling within the test's time: only a notification can bring the events.
    let slow_poll = |settings: &mut worker::settings::WorkerSettings| {
        settings.stream.poll_interval = Duration::from_secs(120);
    };
    let here = TestWorker::start_with(slow_poll).await;
    // The other worker shares the database but consumes queues of its own, so it alone
    // stores what is published there.
    let elsewhere_broker = TestBroker::new();
    let mut settings = here.settings.clone();
    settings.broker = elsewhere_broker.settings.clone();
    let elsewhere = spawn_unready(settings).await;
    wait_ready(&elsewhere).await;

    let (mut stream, _) = open_live(&here, "?types=transcript.segment").await;
    elsewhere_broker
        .publish(&transcript("u1", "said-elsewhere"))
        .await;
    let first = stream.events(1).await;
    assert!(
        first[0].data.as_deref().unwrap().contains("said-elsewhere"),
        "{first:?}"
    );
    here.broker.publish(&transcript("u1", "said-here")).await;
    let second = stream.events(1).await;
    assert!(
        second[0].data.as_deref().unwrap().contains("said-here"),
        "{second:?}"
    );
    assert!(first[0].position() < second[0].position());
    let body = second[0].json();
    assert_eq!(second[0].event.as_deref(), Some("transcript.segment"));
    assert_eq!(
        body["type"], "transcript.segment",
        "the body a delivery carries: {body}"
    );
    assert!(
        body["timestamp"].is_string() && body["data"].is_object(),
        "{body}"
    );
    elsewhere.stop().await;
}

#[tokio::test]
async fn clients_get_only_their_uid_and_types() {
    let worker = TestWorker::start().await;
    let (mut by_uid, _) = open_live(&worker, "?uid=u1").await;
    let (mut sleep, _) = open_live(&worker, "?types=sleep.*").await;
    let (mut levels_of_u2, _) =
        open_live(&worker, "?uid=u2&types=audio.level,endpoint.disabled").await;
    let (mut disabled, _) = open_live(&worker, "?types=endpoint.disabled").await;

    let pool = &worker.pool;
    let level = json!({"level": 40});
    let u1_levels = emit(pool, EventType::AudioLevel, Some("u1"), 2, level.clone()).await;
    let u2_level = emit(pool, EventType::AudioLevel, Some("u2"), 1, level).await;
    let u1_sleep = emit(pool, EventType::SleepInference, Some("u1"), 1, json!({})).await;
    let u2_sleep = emit(
        pool,
        EventType::SleepSessionCompleted,
        Some("u2"),
        1,
        json!({}),
    )
    .await;
    let endpoint = emit(pool, EventType::EndpointDisabled, None, 1, json!({})).await;
    let u1_memory = emit(
        pool,
        EventType::MemoryCreated,
        Some("u1"),
        1,
        json!({"id": 1}),
    )
    .await;

    let expected = [u1_levels.clone(), u1_sleep.clone(), u1_memory].concat();
    let got = by_uid.events(expected.len()).await;
    assert_eq!(ids(&got), expected);
    assert_eq!(got[0].event.as_deref(), Some("audio.level"));
    assert_eq!(got[0].json()["data"], json!({"level": 40}));
    assert_eq!(ids(&sleep.events(2).await), [u1_sleep, u2_sleep].concat());
    assert_eq!(ids(&levels_of_u2.events(1).await), u2_level);
    assert_eq!(ids(&disabled.events(1).await), endpoint);
    for stream in [&mut by_uid, &mut sleep, &mut levels_of_u2, &mut disabled] {
        assert_eq!(stream.events_during(QUIET).await, vec![], "nothing else");
    }
}

#[tokio::test]
async fn a_client_that_reconnects_with_last_event_id_gets_exactly_what_it_missed() {
    let worker = TestWorker::start().await;
    let pool = &worker.pool;
    let (mut stream, start) = open_live(&worker, "").await;
    let seen = emit(pool, EventType::AudioLevel, Some("u1"), 3, json!({})).await;
    let got = stream.events(3).await;
    assert_eq!(ids(&got), seen);
    drop(stream);

    let missed = emit(pool, EventType::ListeningStatus, Some("u1"), 4, json!({})).await;
    let last = got[2].id.clone().unwrap();
    let mut resumed = open(&worker, "", Some(&last)).await;
    assert_eq!(ids(&resumed.events(4).await), missed);
    assert_eq!(resumed.events_during(QUIET).await, vec![], "no repeats");
    let live = emit(pool, EventType::AudioLevel, Some("u1"), 1, json!({})).await;
    assert_eq!(ids(&resumed.events(1).await), live, "then live");

    // From where the first connection started: everything since.
    let mut from_start = open(&worker, "", Some(&start)).await;
    assert_eq!(
        ids(&from_start.events(8).await),
        [seen, missed.clone(), live].concat()
    );
    // The query parameter does the same for a page that reloads.
    let query = format!("?last_event_id={last}&types=listening.status");
    let mut by_query = open(&worker, &query, None).await;
    assert_eq!(ids(&by_query.events(4).await), missed);
}

/// Commits that land in another order than their ids, while a client keeps disconnecting and
/// resuming: it gets every event exactly once, in increasing positions.
#[tokio::test]
async fn resuming_under_concurrent_writers_loses_and_repeats_nothing() {
    let worker = TestWorker::start().await;
    let (_, start) = open_live(&worker, "").await;
    let writers: Vec<_> = (0..4u64)
        .map(|writer| {
            let pool = worker.pool.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for n in 0..40u64 {
                    let mut tx = pool.begin().await.unwrap();
                    let data = json!({"writer": writer, "n": n});
                    ids.push(
                        outbox::emit(&mut tx, EventType::AudioLevel, Some("u1"), data)
                            .await
                            .unwrap(),
                    );
                    // Held open a little, so later ids often commit first.
                    let hold = (writer * 7 + n * 3) % 20;
                    sqlx::query("SELECT pg_sleep($1)")
                        .bind(hold as f64 / 1000.0)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                    notify(&pool).await;
                }
                ids
            })
        })
        .collect();

    let mut received: Vec<Frame> = Vec::new();
    let mut last = start;
    let wanted = 160;
    for round in 0.. {
        assert!(
            round < 400,
            "only {} of {wanted} events arrived",
            received.len()
        );
        let mut stream = open(&worker, "", Some(&last)).await;
        let got = stream
            .events_during(Duration::from_millis(30 + (round % 5) * 20))
            .await;
        if let Some(frame) = got.last() {
            last = frame.id.clone().unwrap();
        }
        received.extend(got);
        if received.len() >= wanted {
            break;
        }
    }
    let mut written = HashSet::new();
    for writer in writers {
        written.extend(writer.await.unwrap());
    }
    let got: Vec<Uuid> = ids(&received);
    assert_eq!(got.len(), wanted, "no event twice");
    assert_eq!(
        got.iter().copied().collect::<HashSet<_>>(),
        written,
        "every event"
    );
    let positions: Vec<_> = received.iter().map(Frame::position).collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "increasing positions"
    );
}

/// A transaction that began writing earlier but commits later comes first, and nothing after
/// it is sent while it is open: a client past it could never be given it.
#[tokio::test]
async fn an_event_is_held_back_until_every_transaction_before_it_has_ended() {
    let worker = TestWorker::start().await;
    let (mut stream, _) = open_live(&worker, "").await;
    let mut early = worker.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *early)
        .await
        .unwrap();
    let later = emit(
        &worker.pool,
        EventType::AudioLevel,
        Some("u1"),
        1,
        json!({}),
    )
    .await;
    assert_eq!(
        stream.events_during(Duration::from_millis(600)).await,
        vec![],
        "held back"
    );

    let first = outbox::emit(&mut early, EventType::AudioLevel, Some("u1"), json!({}))
        .await
        .unwrap();
    assert!(first > later[0], "the id is younger, the transaction older");
    early.commit().await.unwrap();
    notify(&worker.pool).await;
    let got = stream.events(2).await;
    assert_eq!(
        ids(&got),
        vec![first, later[0]],
        "in the order of their transactions"
    );
    let mut resumed = open(&worker, "", got[0].id.as_deref()).await;
    assert_eq!(ids(&resumed.events(1).await), later);
}

#[tokio::test]
async fn a_resume_point_older_than_what_is_kept_starts_at_the_oldest_kept() {
    let worker = TestWorker::start().await;
    let (mut stream, _) = open_live(&worker, "").await;
    let written = emit(
        &worker.pool,
        EventType::AudioLevel,
        Some("u1"),
        5,
        json!({}),
    )
    .await;
    let frames = stream.events(5).await;
    // What retention does to an old event.
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
        .bind(&written[..3])
        .execute(&worker.pool)
        .await
        .unwrap();
    let mut resumed = open(&worker, "", frames[0].id.as_deref()).await;
    assert_eq!(ids(&resumed.events(2).await), written[3..]);
    assert_eq!(resumed.events_during(QUIET).await, vec![]);
}

/// A raw connection that asks for the stream, reads its head and first frame (so the worker
/// serves it), then reads nothing more, with a tiny receive window so that the worker's writes
/// back up at once. Returns the connection and what it read.
async fn never_reading_client(worker: &TestWorker) -> (tokio::net::TcpStream, Vec<u8>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = worker.service.as_ref().unwrap().addr;
    let mut connection = socket.connect(addr).await.unwrap();
    let request = format!(
        "GET /v1/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Connection: close\r\n\r\n"
    );
    connection.write_all(request.as_bytes()).await.unwrap();
    let mut read = Vec::new();
    while !String::from_utf8_lossy(&read).contains("\n\n") {
        let mut chunk = [0u8; 512];
        let n = connection.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "the stream closed: {}",
            String::from_utf8_lossy(&read)
        );
        read.extend_from_slice(&chunk[..n]);
    }
    (connection, read)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped_while_another_keeps_receiving() {
    let worker = TestWorker::start_with(|settings| settings.stream.client_buffer = 256).await;
    let dropped = "stream_clients_dropped_total{reason=\"slow\"}";
    let before = worker.metric(dropped).await.expect("exported from 0");
    let (mut stalled, mut bytes) = never_reading_client(&worker).await;
    let (mut reader, _) = open_live(&worker, "").await;

    // 1000 events of 16 KB: far more than the stalled client's buffers hold.
    let padding = "x".repeat(16 * 1024);
    let writer = {
        let pool = worker.pool.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..100 {
                let data = json!({"padding": padding});
                ids.extend(emit(&pool, EventType::AudioLevel, Some("u1"), 10, data).await);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            ids
        })
    };
    let got = reader.events(1000).await;
    assert_eq!(
        ids(&got),
        writer.await.unwrap(),
        "the reading client gets every event"
    );
    eventually(10, "the stalled client counted as dropped", || async {
        (worker.metric(dropped).await? > before).then_some(())
    })
    .await;

    // The stalled client's stream was ended: reading it now gets what was buffered, then the end.
    tokio::time::timeout(Duration::from_secs(20), stalled.read_to_end(&mut bytes))
        .await
        .expect("the worker closed the stalled stream")
        .unwrap();
    let text = String::from_utf8_lossy(&bytes);
    let events = parse_all(&text)
        .iter()
        .filter(|frame| frame.is_event())
        .count();
    assert!(
        events < 1000,
        "it was dropped before the end ({events} events)"
    );
}

#[tokio::test]
async fn the_stream_needs_the_token_and_names_a_bad_parameter() {
    let worker = TestWorker::start_with(|settings| {
        settings.stream.keep_alive = Duration::from_millis(100);
    })
    .await;
    let anonymous = worker
        .client
        .get(worker.url("/v1/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");

    let cases = [
        ("?types=audio.level,bogus", None, "types: "),
        ("?types=", None, "types: "),
        ("?types=sleep", None, "types: "),
        ("?uid=", None, "uid: "),
        ("", Some("not-a-position"), "Last-Event-ID: "),
        ("?last_event_id=12", None, "last_event_id: "),
    ];
    for (query, last, field) in cases {
        let mut request = worker.admin(reqwest::Method::GET, &format!("/v1/stream{query}"));
        if let Some(last) = last {
            request = request.header("last-event-id", last);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 400, "{query} {last:?}");
        let body: Value = response.json().await.unwrap();
        let message = body["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{query}: {message}");
    }

    // An idle stream gets keep-alive comments.
    let (mut idle, _) = open_live(&worker, "").await;
    let frame = idle.next_frame().await;
    assert!(frame.comment.is_some() && !frame.is_event(), "{frame:?}");
}

#[tokio::test]
async fn a_stopping_worker_ends_its_streams_instead_of_waiting_for_them() {
    let mut worker = TestWorker::start().await;
    let (mut stream, _) = open_live(&worker, "").await;
    tokio::time::timeout(Duration::from_secs(20), worker.stop())
        .await
        .expect("the worker stops with a client connected");
    assert_eq!(stream.events_until_end().await, vec![]);
}
