//! The request-head timeout of one connection (`REQUEST_HEADER_TIMEOUT_MS`), answered with 408.
//!
//! hyper's own `header_read_timeout` closes the connection without a word, so it is off and the
//! connection's socket is wrapped instead:
//! - [`HeadClock`] knows since when the connection has been waiting for a request head: from
//!   its start, and again from the moment an answer is ready (the next request's turn). The
//!   service marks each head received ([`HeadClock::head_received`]).
//! - [`HeadTimedIo`] ends the reads once the head is late. A connection that had sent part of
//!   a head (a slowloris) is then answered `408 Request Timeout` with `Connection: close` and
//!   ingest's JSON error, its socket shut for writing and drained for a moment, so the answer
//!   is not lost to a reset; one that had sent nothing (a client that connected and never spoke,
//!   or an idle keep-alive connection) is closed silently, as an idle connection should be.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// How long a late head's answer may take to write, and how long its socket is then drained.
const LINGER: Duration = Duration::from_secs(1);

/// Since when one connection has been waiting for a request head, if it is.
#[derive(Clone)]
pub struct HeadClock(Arc<Mutex<ClockState>>);

struct ClockState {
    waiting_since: Option<Instant>,
    /// The connection's task, saved by a read that went pending while no head was waited for:
    /// hyper reads again only when woken, and the next read must arm the deadline.
    reader: Option<Waker>,
}

impl HeadClock {
    /// A clock for a new connection, waiting for its first head from now.
    pub fn start() -> Self {
        HeadClock(Arc::new(Mutex::new(ClockState {
            waiting_since: Some(Instant::now()),
            reader: None,
        })))
    }

    /// The head of a request has been read: the clock stops.
    pub fn head_received(&self) {
        self.state().waiting_since = None;
    }

    /// The answer is ready: the next head is waited for from now.
    pub fn answered(&self) {
        let mut state = self.state();
        state.waiting_since = Some(Instant::now());
        if let Some(reader) = state.reader.take() {
            reader.wake();
        }
    }

    fn waiting_since(&self) -> Option<Instant> {
        self.state().waiting_since
    }

    /// Saves `waker` to be woken when the next head starts being waited for.
    fn wake_on_answer(&self, waker: &Waker) {
        let mut state = self.state();
        if !state
            .reader
            .as_ref()
            .is_some_and(|saved| saved.will_wake(waker))
        {
            state.reader = Some(waker.clone());
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.0.lock().expect("head clock")
    }
}

/// A connection's socket whose reads end when a head is later than `timeout`; see the module.
pub struct HeadTimedIo {
    /// `None` once handed to [`answer_late_head`] (only when dropped).
    stream: Option<TcpStream>,
    clock: HeadClock,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    /// The waiting the deadline was set for.
    armed_for: Option<Instant>,
    /// The waiting during which bytes of a head arrived.
    head_begun: Option<Instant>,
    /// The head was late after part of it arrived: answer 408 when hyper lets go of the socket.
    late_head: bool,
}

impl HeadTimedIo {
    pub fn new(stream: TcpStream, clock: HeadClock, timeout: Duration) -> Self {
        HeadTimedIo {
            stream: Some(stream),
            clock,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            armed_for: None,
            head_begun: None,
            late_head: false,
        }
    }

    fn stream(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        self.stream
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }

    /// Whether the head waited for since `since` is late; arms the deadline first.
    fn poll_late(&mut self, since: Instant, context: &mut Context<'_>) -> bool {
        if self.armed_for != Some(since) {
            self.deadline.as_mut().reset(since + self.timeout);
            self.armed_for = Some(since);
        }
        self.deadline.as_mut().poll(context).is_ready()
    }
}

impl AsyncRead for HeadTimedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(since) = this.clock.waiting_since() else {
            let read = this.stream()?.poll_read(context, buffer);
            if read.is_pending() {
                this.clock.wake_on_answer(context.waker());
            }
            return read;
        };
        let before = buffer.filled().len();
        if let Poll::Ready(read) = this.stream()?.poll_read(context, buffer) {
            if buffer.filled().len() > before {
                this.head_begun = Some(since);
            }
            return Poll::Ready(read);
        }
        if !this.poll_late(since, context) {
            return Poll::Pending;
        }
        if this.head_begun == Some(since) {
            this.late_head = true;
            metrics::counter!("ingest_request_head_timeouts_total").increment(1);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request head did not arrive in time",
            )));
        }
        // Nothing of a head arrived: an idle connection, closed as if the peer had hung up.
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for HeadTimedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().stream()?.poll_write(context, data)
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream()?.poll_flush(context)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream()?.poll_shutdown(context)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().stream()?.poll_write_vectored(context, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }
}

impl Drop for HeadTimedIo {
    fn drop(&mut self) {
        if !self.late_head {
            return;
        }
        let (Some(stream), Ok(runtime)) =
            (self.stream.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(answer_late_head(stream));
    }
}

/// The answer to a late head: 408, `Connection: close`, ingest's JSON error body.
static LATE_HEAD_ANSWER: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let body = serde_json::json!({
        "error": "request_timeout",
        "message": "the request head did not arrive in time",
    })
    .to_string();
    format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// Writes [`LATE_HEAD_ANSWER`], shuts the socket for writing, and reads (and drops) what the
/// client still sends for up to [`LINGER`], so closing does not reset the answer away.
async fn answer_late_head(mut stream: TcpStream) {
    let answered = tokio::time::timeout(LINGER, async {
        stream.write_all(&LATE_HEAD_ANSWER).await?;
        stream.shutdown().await
    })
    .await;
    if !matches!(answered, Ok(Ok(()))) {
        return;
    }
    let mut discard = [0u8; 1024];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(1..) = stream.read(&mut discard).await {}
    })
    .await;
}
