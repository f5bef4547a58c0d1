//! Settling the events channel's messages, with one `basic.ack` for a whole batch when that is
//! safe.
//!
//! RabbitMQ numbers a channel's deliveries 1, 2, 3, ... and `basic.ack` with `multiple` settles
//! every unsettled message up to a tag in one frame, which the broker turns into one settle of
//! the quorum queue instead of one per message. Batches are stored concurrently and finish in
//! any order, so a batch may use it only when none of the channel's messages below its own are
//! still unsettled; otherwise it acknowledges each message.
//!
//! The [`Ledger`] holds, per channel, the tags whose settlement has not been written to the
//! connection yet. A tag enters it when the consumer's stream yields the delivery and leaves it
//! only once its ack, nack or reject frame has been sent, so a later `multiple` can never cover
//! a message that is still being stored or whose nack is yet to go out (the broker would then
//! close the channel on the second, unknown, tag, or acknowledge a message meant to be
//! requeued).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use futures_util::future::join_all;
use lapin::Acker;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};

/// The delivery tags of one channel not yet settled on the wire.
#[derive(Debug, Default)]
pub struct Ledger {
    unsettled: Mutex<BTreeSet<u64>>,
}

impl Ledger {
    /// Enters a delivery the consumer's stream has just yielded; call it in the stream's order.
    pub fn hold(self: &Arc<Self>, delivery: &Delivery) -> Settle {
        self.enter(delivery.delivery_tag);
        Settle {
            acker: delivery.acker.clone(),
            tag: delivery.delivery_tag,
            ledger: self.clone(),
        }
    }

    fn enter(&self, tag: u64) {
        self.lock().insert(tag);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        self.unsettled.lock().expect("ledger lock")
    }

    /// True when `tags` are consecutive and the oldest the channel still holds.
    fn is_oldest_run(&self, tags: &[u64]) -> bool {
        let consecutive = tags.windows(2).all(|pair| pair[1] == pair[0] + 1);
        consecutive && !tags.is_empty() && self.lock().first() == tags.first()
    }

    fn release(&self, tags: impl IntoIterator<Item = u64>) {
        let mut unsettled = self.lock();
        for tag in tags {
            unsettled.remove(&tag);
        }
    }
}

/// The handle that settles one message and keeps its channel's [`Ledger`] up to date.
#[derive(Debug)]
pub struct Settle {
    acker: Acker,
    tag: u64,
    ledger: Arc<Ledger>,
}

impl Settle {
    /// False once settled, or when the channel is gone.
    pub fn usable(&self) -> bool {
        self.acker.usable()
    }

    pub async fn nack(&self, requeue: bool) -> lapin::Result<bool> {
        let options = BasicNackOptions {
            requeue,
            ..Default::default()
        };
        let sent = self.acker.nack(options).await;
        self.ledger.release([self.tag]);
        sent
    }

    pub async fn reject(&self, requeue: bool) -> lapin::Result<bool> {
        let sent = self.acker.reject(BasicRejectOptions { requeue }).await;
        self.ledger.release([self.tag]);
        sent
    }
}

/// Acknowledges every message of `batch` (all of one channel): with one frame when they are
/// the oldest it holds, else one each, all sent at once rather than each waiting for the one
/// before it to pass through the connection's I/O loop. Returns each message's result.
pub async fn ack_all(batch: &[Settle]) -> Vec<lapin::Result<bool>> {
    let Some(last) = batch.last() else {
        return Vec::new();
    };
    let tags: Vec<u64> = batch.iter().map(|settle| settle.tag).collect();
    let results = if batch.len() > 1 && last.ledger.is_oldest_run(&tags) {
        let sent = last.acker.ack(BasicAckOptions { multiple: true }).await;
        vec![sent; batch.len()]
    } else {
        let acks = batch
            .iter()
            .map(|settle| settle.acker.ack(BasicAckOptions::default()));
        join_all(acks).await
    };
    last.ledger.release(tags);
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holding(tags: impl IntoIterator<Item = u64>) -> Ledger {
        let ledger = Ledger::default();
        tags.into_iter().for_each(|tag| ledger.enter(tag));
        ledger
    }

    #[test]
    fn only_the_oldest_consecutive_run_may_be_acknowledged_at_once() {
        let ledger = holding(1..=48);
        assert!(ledger.is_oldest_run(&[1, 2, 3]));
        assert!(!ledger.is_oldest_run(&[17, 18]), "1..=16 are still held");
        assert!(!ledger.is_oldest_run(&[1, 3]), "2 is not in the batch");
        assert!(!ledger.is_oldest_run(&[]));
    }

    #[test]
    fn a_batch_becomes_the_oldest_once_the_ones_below_it_are_sent() {
        let ledger = holding(1..=32);
        let second: Vec<u64> = (17..=32).collect();
        assert!(!ledger.is_oldest_run(&second));
        ledger.release(1..=15);
        assert!(!ledger.is_oldest_run(&second), "16 is still being stored");
        ledger.release([16]);
        assert!(ledger.is_oldest_run(&second));
    }
}
