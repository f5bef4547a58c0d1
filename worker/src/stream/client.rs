//! One stream client: a task that catches up from the outbox after the client's position, then
//! follows its worker's broadcast, and writes what the client's filter takes into a bounded
//! buffer that the HTTP response drains. The task only ever waits for the client while catching
//! up (the client's own reads of the outbox, at its pace, up to [`CATCH_UP_PATIENCE`]); live, a
//! full buffer ends the client's stream at once, so a slow client never holds anything up.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc::{self, error::SendTimeoutError, error::TrySendError};

use super::{Filter, Position, StreamEvent, read};
use crate::WorkerContext;

/// Rows one catch-up read takes.
const CATCH_UP_PAGE: usize = 500;
/// How long catching up waits for room in a client's buffer before dropping it as slow.
const CATCH_UP_PATIENCE: Duration = Duration::from_secs(10);

/// What a client's stream carries.
#[derive(Debug)]
pub enum Item {
    Event(Arc<StreamEvent>),
    /// Where a client that asked for no position starts (an SSE `id:` with no event), so that
    /// it can resume from there even if nothing reached it before it reconnects.
    Start(Position),
}

/// Why a client's task ended.
enum End {
    /// The client went away (its response was dropped).
    Gone,
    /// Its buffer stayed full.
    Slow,
    /// The worker is stopping.
    Stopping,
    Failed(sqlx::Error),
}

impl From<sqlx::Error> for End {
    fn from(error: sqlx::Error) -> Self {
        End::Failed(error)
    }
}

/// Starts a client's task: the events `filter` takes after `resume` (or from now), in position
/// order. The receiver ends when the task does.
pub fn start(
    context: Arc<WorkerContext>,
    filter: Filter,
    resume: Option<Position>,
) -> mpsc::Receiver<Item> {
    let (out, items) = mpsc::channel(context.settings.stream.client_buffer);
    tokio::spawn(async move {
        let _connected = Connected::new();
        match follow(&context, &filter, resume, &out).await {
            End::Slow => {
                metrics::counter!("stream_clients_dropped_total", "reason" => "slow").increment(1);
                tracing::info!(?filter, "stream client dropped: its buffer was full");
            }
            End::Failed(error) => {
                tracing::warn!(%error, "stream client ended: reading the outbox failed")
            }
            End::Gone | End::Stopping => {}
        }
    });
    items
}

/// The client's whole life: start, catch up, then follow the broadcast. `covered` is the
/// position up to which every row has been either sent or passed over by the filter.
async fn follow(
    context: &WorkerContext,
    filter: &Filter,
    resume: Option<Position>,
    out: &mpsc::Sender<Item>,
) -> End {
    // Subscribed first: a batch read after this is received, one read before is in the outbox.
    let mut live = context.stream.subscribe();
    let mut stopping = context.stopping.clone();
    let start = match resume {
        Some(position) => resume_from(context, position).await,
        None => start_now(context, out).await,
    };
    let mut covered = match start {
        Ok(position) => position,
        Err(end) => return end,
    };
    if let Err(end) = catch_up(context, filter, &mut covered, out).await {
        return end;
    }
    loop {
        let received = tokio::select! {
            received = live.recv() => received,
            _ = out.closed() => return End::Gone,
            _ = stopping.wait_for(|stop| *stop) => return End::Stopping,
        };
        let batch = match received {
            Ok(batch) => Some(batch),
            // What it missed is in the outbox.
            Err(RecvError::Lagged(_)) => None,
            Err(RecvError::Closed) => return End::Stopping,
        };
        let gap = batch.as_ref().is_none_or(|batch| batch.from > covered);
        if gap && let Err(end) = catch_up(context, filter, &mut covered, out).await {
            return end;
        }
        let Some(batch) = batch else {
            continue;
        };
        for event in batch.events.iter() {
            if event.position > covered
                && filter.matches(event)
                && let Err(end) = offer(out, event)
            {
                return end;
            }
        }
        covered = covered.max(batch.to);
    }
}

/// Where a client that names `position` resumes: there, or at the outbox's tail if that is
/// earlier. A position the client received is never past the tail (unless the newest rows were
/// erased since), so only a position that was never this outbox's is moved, and it would
/// otherwise hold back every event below it.
async fn resume_from(context: &WorkerContext, position: Position) -> Result<Position, End> {
    Ok(position.min(read_tail(context).await?))
}

/// The outbox's tail, sent to the client as where it starts.
async fn start_now(context: &WorkerContext, out: &mpsc::Sender<Item>) -> Result<Position, End> {
    let tail = read_tail(context).await?;
    patiently(out, Item::Start(tail)).await?;
    Ok(tail)
}

/// Sends what `filter` takes of the settled rows after `covered`, page by page at the client's
/// pace; then `covered` is at least the tail the outbox had before the first page (every row up
/// to it was settled when the pages were read, so each was read or passed over).
async fn catch_up(
    context: &WorkerContext,
    filter: &Filter,
    covered: &mut Position,
    out: &mpsc::Sender<Item>,
) -> Result<(), End> {
    let tail = read_tail(context).await?;
    loop {
        if context.is_stopping() {
            return Err(End::Stopping);
        }
        let page = {
            let _permit = context.stream.client_reads.acquire().await;
            read::after(&context.pool, *covered, filter, CATCH_UP_PAGE).await?
        };
        for event in page.events {
            let position = event.position;
            patiently(out, Item::Event(event)).await?;
            *covered = position;
        }
        if page.rest != read::Rest::More {
            break;
        }
    }
    *covered = (*covered).max(tail);
    Ok(())
}

/// The outbox's tail, read under one of the worker's client read permits.
async fn read_tail(context: &WorkerContext) -> Result<Position, End> {
    let _permit = context.stream.client_reads.acquire().await;
    Ok(read::tail(&context.pool).await?)
}

/// Waits up to [`CATCH_UP_PATIENCE`] for room in the client's buffer.
async fn patiently(out: &mpsc::Sender<Item>, item: Item) -> Result<(), End> {
    out.send_timeout(item, CATCH_UP_PATIENCE)
        .await
        .map_err(|error| match error {
            SendTimeoutError::Timeout(_) => End::Slow,
            SendTimeoutError::Closed(_) => End::Gone,
        })
}

/// Puts a live event in the client's buffer without waiting.
fn offer(out: &mpsc::Sender<Item>, event: &Arc<StreamEvent>) -> Result<(), End> {
    out.try_send(Item::Event(event.clone()))
        .map_err(|error| match error {
            TrySendError::Full(_) => End::Slow,
            TrySendError::Closed(_) => End::Gone,
        })
}

/// Counts a client in `stream_clients` while it lives.
struct Connected;

impl Connected {
    fn new() -> Self {
        metrics::gauge!("stream_clients").increment(1.0);
        Connected
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        metrics::gauge!("stream_clients").decrement(1.0);
    }
}
