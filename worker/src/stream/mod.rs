//! The live stream of outbound events (`GET /v1/stream`, served by [`crate::api`]): every event
//! any worker stores in the outbox reaches the stream clients of every worker, in one order, and
//! a client that reconnects with the last position it saw gets exactly what it missed.
//!
//! # How an event travels
//! 1. A worker commits events ([`crate::WorkerContext::events_committed`]); its [`fan_in`]
//!    task sends `NOTIFY outbox_stream` (no payload) at most once per `STREAM_NOTIFY_MS`, from a
//!    statement of its own: never inside the storing transaction, where a NOTIFY would
//!    serialize the commits of every worker (migration 0006).
//! 2. In every worker with stream clients, one [`fan_in`] task `LISTEN`s and, on each
//!    notification (or every `STREAM_POLL_MS`), reads the outbox after its position once for
//!    all its clients ([`read`]) and broadcasts what it read as one [`Batch`].
//! 3. Each client has a task of its own ([`client`]) that filters the batches (by uid and type,
//!    [`filter`]) into that client's bounded buffer. When the buffer is full the client is
//!    dropped: its stream ends, and nothing upstream ever waits for it.
//!
//! # Positions
//! A [`Position`] is `(transaction id, event id)` of an outbox row, written `<tx>-<uuid>` as
//! the SSE `id:`. Rows are read only once their transaction is below the oldest transaction
//! still running, so no row can later appear before a position already passed (migration 0014
//! says why ids alone cannot give that). A client resumes from its `Last-Event-ID` by reading
//! the outbox after it, then goes live; a batch that does not start where the client is covered
//! (it subscribed late, or lagged) sends it back to the outbox first, so neither the hand-over
//! nor a lag can leave a gap, and positions at or below the covered one are never sent twice.
//! Retention and erasure delete outbox rows: a resume point older than every kept row simply
//! starts at the oldest kept one.

pub mod client;
pub mod fan_in;
pub mod filter;
pub mod read;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use tokio::sync::{Notify, Semaphore, broadcast};
use uuid::Uuid;

pub use fan_in::run;
pub use filter::Filter;

/// Batches a worker's broadcast keeps for a client task that has not taken them yet; a task
/// further behind reads the outbox instead.
const BROADCAST_BATCHES: usize = 256;
/// Outbox reads of client tasks (catching up) one worker runs at once, so that many clients
/// reconnecting together queue here rather than take the pool from the consumer.
const CLIENT_READS: usize = 4;

/// Where an outbox row is in the stream: its transaction's id, then its own id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub tx: u64,
    pub id: Uuid,
}

impl Position {
    /// Before every row.
    pub const START: Position = Position {
        tx: 0,
        id: Uuid::nil(),
    };
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.tx, self.id)
    }
}

impl FromStr for Position {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let wrong = || {
            format!(
                "{text:?} is not a stream position such as 812-{}",
                Uuid::nil()
            )
        };
        let (tx, id) = text.trim().split_once('-').ok_or_else(wrong)?;
        Ok(Position {
            tx: tx.parse().map_err(|_| wrong())?,
            id: id.parse().map_err(|_| wrong())?,
        })
    }
}

/// One outbox event as the stream sends it: `body` is the JSON a webhook delivery of it
/// carries (`{"type","timestamp","data"}`), built once for every client.
#[derive(Debug)]
pub struct StreamEvent {
    pub position: Position,
    pub event_type: String,
    pub uid: Option<String>,
    pub body: String,
}

/// What one read of a worker's [`fan_in`] found: every visible row after `from` up to and
/// including `to`, in position order.
#[derive(Debug)]
pub struct Batch {
    pub from: Position,
    pub to: Position,
    pub events: Vec<Arc<StreamEvent>>,
}

/// What a worker's stream side shares: the broadcast to its clients and the wake-ups of its
/// [`fan_in`] task.
#[derive(Debug)]
pub struct Hub {
    live: broadcast::Sender<Arc<Batch>>,
    /// A client subscribed: the fan-in starts reading if it was idle.
    joined: Notify,
    /// This worker committed outbox events: the fan-in announces them to every worker.
    committed: Notify,
    /// Permits for client tasks' reads of the outbox ([`CLIENT_READS`]).
    client_reads: Semaphore,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            live: broadcast::Sender::new(BROADCAST_BATCHES),
            joined: Notify::new(),
            committed: Notify::new(),
            client_reads: Semaphore::new(CLIENT_READS),
        }
    }
}

impl Hub {
    /// Called after this worker commits outbox events; never waits.
    pub fn committed(&self) {
        self.committed.notify_one();
    }

    /// The batches read from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Batch>> {
        let receiver = self.live.subscribe();
        self.joined.notify_one();
        receiver
    }
}

/// Help text of the stream's metrics, and its counter at 0.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        "stream_clients",
        "Clients of GET /v1/stream connected to this worker"
    );
    describe_counter!(
        "stream_clients_dropped_total",
        "Stream clients whose stream was ended by the worker, by reason (slow: its buffer of STREAM_CLIENT_BUFFER events was full)"
    );
    metrics::counter!("stream_clients_dropped_total", "reason" => "slow").increment(0);
    metrics::gauge!("stream_clients").increment(0.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_reads_back_from_its_text_and_orders_by_transaction_first() {
        let early = Position {
            tx: 9,
            id: Uuid::now_v7(),
        };
        let late = Position {
            tx: 10,
            id: Uuid::nil(),
        };
        assert!(early < late, "the transaction orders before the id");
        assert_eq!(early.to_string().parse::<Position>(), Ok(early));
        assert_eq!(Position::START.to_string().parse(), Ok(Position::START));
        for bad in [
            "",
            "12",
            "x-00000000-0000-0000-0000-000000000000",
            "12-nope",
            "-1-x",
        ] {
            let error = bad.parse::<Position>().unwrap_err();
            assert!(error.contains("stream position"), "{bad}: {error}");
        }
    }
}
