//! A Server-Sent Events reader for tests: opens `GET /v1/stream` and hands back its frames one
//! at a time (events, `id:`-only frames and keep-alive comments), reading the response as it
//! arrives.

use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

/// One frame of the stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
    /// A comment line (`:`), as the keep-alive sends.
    pub comment: Option<String>,
}

impl Frame {
    pub fn is_event(&self) -> bool {
        self.event.is_some()
    }

    /// The outbox id in the frame's position (`<tx>-<uuid>`).
    pub fn outbox_id(&self) -> Uuid {
        let id = self.id.as_deref().expect("an id");
        id.split_once('-')
            .expect("<tx>-<uuid>")
            .1
            .parse()
            .expect("a uuid")
    }

    /// The position's transaction, then its id: what the stream orders by.
    pub fn position(&self) -> (u64, Uuid) {
        let id = self.id.as_deref().expect("an id");
        let tx = id
            .split_once('-')
            .expect("<tx>-<uuid>")
            .0
            .parse()
            .expect("a tx");
        (tx, self.outbox_id())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(self.data.as_deref().expect("data")).expect("JSON data")
    }
}

/// What waiting for a frame gave.
#[derive(Debug)]
pub enum Next {
    Frame(Frame),
    /// The server ended the stream.
    Ended,
    /// Nothing came in time.
    Quiet,
}

pub struct SseStream {
    response: reqwest::Response,
    /// Bytes read but not yet a whole frame (kept as bytes: a chunk may end inside a character).
    buffer: Vec<u8>,
}

impl SseStream {
    /// Sends `request`; panics unless it is answered 200 with `text/event-stream`.
    pub async fn open(request: reqwest::RequestBuilder) -> Self {
        let response = request.send().await.expect("stream request");
        assert_eq!(response.status(), 200, "the stream opens");
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        SseStream {
            response,
            buffer: Vec::new(),
        }
    }

    /// The next frame, waiting up to `within`.
    pub async fn next_within(&mut self, within: Duration) -> Next {
        let until = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.windows(2).position(|pair| pair == b"\n\n") {
                let bytes: Vec<u8> = self.buffer.drain(..end + 2).collect();
                return Next::Frame(parse(std::str::from_utf8(&bytes).expect("UTF-8 frames")));
            }
            match tokio::time::timeout_at(until, self.response.chunk()).await {
                Err(_) => return Next::Quiet,
                Ok(Ok(Some(chunk))) => self.buffer.extend_from_slice(&chunk),
                Ok(_) => return Next::Ended,
            }
        }
    }

    /// The next frame, waiting generously; panics if the stream ends or stays quiet.
    pub async fn next_frame(&mut self) -> Frame {
        match self.next_within(Duration::from_secs(20)).await {
            Next::Frame(frame) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// The next `count` events (frames with `event:`), skipping other frames.
    pub async fn events(&mut self, count: usize) -> Vec<Frame> {
        let mut events = Vec::new();
        while events.len() < count {
            let frame = self.next_frame().await;
            if frame.is_event() {
                events.push(frame);
            }
        }
        events
    }

    /// The events that arrive in the next `period`; panics if the stream ends.
    pub async fn events_during(&mut self, period: Duration) -> Vec<Frame> {
        let until = tokio::time::Instant::now() + period;
        let mut events = Vec::new();
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Next::Frame(frame) if frame.is_event() => events.push(frame),
                Next::Frame(_) => {}
                Next::Quiet => return events,
                Next::Ended => panic!("the stream ended"),
            }
        }
    }

    /// Reads until the server ends the stream (waiting generously); the events read on the way.
    pub async fn events_until_end(&mut self) -> Vec<Frame> {
        let mut events = Vec::new();
        loop {
            match self.next_within(Duration::from_secs(20)).await {
                Next::Frame(frame) if frame.is_event() => events.push(frame),
                Next::Frame(_) => {}
                Next::Ended => return events,
                Next::Quiet => panic!("the stream did not end"),
            }
        }
    }
}

/// One frame's text (its lines, then the blank line), per the SSE format.
pub fn parse(text: &str) -> Frame {
    let mut frame = Frame::default();
    for line in text.lines().filter(|line| !line.is_empty()) {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
        match field {
            "" => frame.comment = Some(value),
            "id" => frame.id = Some(value),
            "event" => frame.event = Some(value),
            "data" => match &mut frame.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(&value);
                }
                None => frame.data = Some(value),
            },
            _ => {}
        }
    }
    frame
}

/// Every frame in `text`, the raw bytes of a stream read some other way.
pub fn parse_all(text: &str) -> Vec<Frame> {
    text.split("\n\n")
        .filter(|frame| !frame.trim().is_empty())
        .map(parse)
        .collect()
}
