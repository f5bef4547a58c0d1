//! Settling the events channel's messages, with one `basic.ack` (`multiple`) for every
//! committed message up to the oldest one still being stored whenever that is safe.
//!
//! RabbitMQ numbers a channel's deliveries 1, 2, 3, ... and `basic.ack` with `multiple` settles
//! every unsettled message up to a tag in one frame, which the broker turns into one settle
//! command for the quorum queue. One command a message is not only slower: a channel
//! with more than `quorum_commands_soft_limit` (32) commands not yet applied by the queue keeps
//! further settles back in the channel process until the queue catches up, and when the channel
//! closes before then (a worker stopping), those settles are dropped and their committed
//! messages return to the queue (55 in one stop under a loaded machine).
//!
//! Batches are stored concurrently and finish in any order. The [`Ledger`] holds, per channel,
//! the tags not yet settled on the wire, each marked once its batch has committed:
//! - A batch that starts at the oldest tag held is marked committed, and the run of committed
//!   tags at the head of the ledger is taken out and acknowledged with one `multiple` ack on its
//!   last tag: the usual case, one settle command a batch or fewer.
//! - A batch that commits behind an older one still being stored acknowledges each message at
//!   once (a `multiple` would settle the older ones too), so the broker's prefetch credit comes
//!   back without waiting for the older batch; its tags leave the ledger when those frames are
//!   written, and then any committed run they held back is acknowledged.
//! - While the worker stops, the second kind instead stays marked and the older batch's ack
//!   covers it: no more deliveries are coming, and the close that follows must find as few
//!   settles as possible still in the broker's channel. (If `SHUTDOWN_TIMEOUT_MS` runs out
//!   before the older batch commits, those committed messages go back to the queue with it, and
//!   the next worker counts them as duplicates.)
//!
//! A nack or reject (one message, rare) takes its tag out only once its frame is sent, then
//! acknowledges the committed run it may have been holding back, so a `multiple` never covers a
//! message still being stored or about to be requeued. One run's ack is written before the next
//! run is taken out, so an ack never names a tag an earlier frame settled (the broker closes the
//! channel on such an unknown tag).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::future::join_all;
use lapin::Acker;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};

/// The delivery tags of one channel not yet settled on the wire, with what settles them.
#[derive(Debug, Default)]
pub struct Ledger {
    unsettled: Mutex<Unsettled<Acker>>,
    /// Held from taking a run out until its ack is written.
    send_order: tokio::sync::Mutex<()>,
}

impl Ledger {
    /// Enters a delivery the consumer's stream has just yielded; call it in the stream's order.
    pub fn hold(self: &Arc<Self>, delivery: &Delivery) -> Settle {
        self.lock()
            .hold(delivery.delivery_tag, delivery.acker.clone());
        Settle {
            acker: delivery.acker.clone(),
            tag: delivery.delivery_tag,
            ledger: self.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Unsettled<Acker>> {
        self.unsettled.lock().expect("ledger lock")
    }

    /// Sends one ack for the committed run at the head of the ledger, if there is one, and
    /// logs when it could not be sent.
    async fn acknowledge_committed(&self) {
        // lapin writes each ack from a task of its own, so two acks sent at once may reach the
        // broker in either order: the next run waits until this one's frame is written.
        let _in_order = self.send_order.lock().await;
        let Some(run) = self.lock().take_committed_run() else {
            return;
        };
        match run.acker.ack(BasicAckOptions { multiple: true }).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                messages = run.messages,
                last_tag = run.last_tag,
                "ack not sent, the channel is gone; their redeliveries will be duplicates"
            ),
            Err(error) => tracing::warn!(
                %error,
                messages = run.messages,
                last_tag = run.last_tag,
                "ack failed; their redeliveries will be duplicates"
            ),
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
        self.release().await;
        sent
    }

    pub async fn reject(&self, requeue: bool) -> lapin::Result<bool> {
        let sent = self.acker.reject(BasicRejectOptions { requeue }).await;
        self.release().await;
        sent
    }

    /// Takes this message, settled on its own, out of the ledger, and acknowledges the
    /// committed messages it was the oldest in front of.
    async fn release(&self) {
        self.ledger.lock().release(self.tag);
        self.ledger.acknowledge_committed().await;
    }
}

/// Acknowledges every message of `batch` (all of one channel) after its commit; returns how
/// many of its messages were acknowledged on their own, or went into a run's ack (counted
/// whether or not that frame could be written: a run's failure is logged where it is sent).
///
/// When the batch starts at the oldest message the channel holds, or the worker is stopping,
/// its messages are marked committed and the committed run at the head of the ledger (if any)
/// is acknowledged with one frame; while stopping, a batch behind a message still being stored
/// leaves its ack to that message's batch. Otherwise each message is acknowledged on its own,
/// at once, so that the broker's prefetch credit comes back without waiting for the older
/// batch; its tags stay in the ledger until those frames are written.
pub async fn ack_all(batch: &[Settle], stopping: bool) -> usize {
    let Some(first) = batch.first() else {
        return 0;
    };
    let ledger = &first.ledger;
    let together = {
        let mut unsettled = ledger.lock();
        let together = stopping || unsettled.oldest() == Some(first.tag);
        if together {
            batch.iter().for_each(|settle| unsettled.commit(settle.tag));
        }
        together
    };
    if together {
        ledger.acknowledge_committed().await;
        return batch.len();
    }
    let acks = batch
        .iter()
        .map(|settle| settle.acker.ack(BasicAckOptions::default()));
    let results = join_all(acks).await;
    {
        let mut unsettled = ledger.lock();
        batch
            .iter()
            .for_each(|settle| unsettled.release(settle.tag));
    }
    ledger.acknowledge_committed().await;
    let mut sent = 0;
    for (settle, result) in batch.iter().zip(results) {
        match result {
            Ok(true) => sent += 1,
            Ok(false) => tracing::warn!(
                tag = settle.tag,
                "ack not sent, the channel is gone; the redelivery will be a duplicate"
            ),
            Err(error) => tracing::warn!(
                %error,
                tag = settle.tag,
                "ack failed; the redelivery will be a duplicate"
            ),
        }
    }
    sent
}

/// The bookkeeping behind [`Ledger`], generic over what settles a message so that it can be
/// tested without a channel.
#[derive(Debug)]
struct Unsettled<A> {
    by_tag: BTreeMap<u64, Held<A>>,
}

impl<A> Default for Unsettled<A> {
    fn default() -> Self {
        Unsettled {
            by_tag: BTreeMap::new(),
        }
    }
}

#[derive(Debug)]
struct Held<A> {
    acker: A,
    committed: bool,
}

/// Committed messages taken out of the ledger together, acknowledged by one frame.
#[derive(Debug, PartialEq)]
struct Run<A> {
    /// Settles the run's last message; with `multiple`, all of them.
    acker: A,
    last_tag: u64,
    messages: usize,
}

impl<A> Unsettled<A> {
    fn hold(&mut self, tag: u64, acker: A) {
        let committed = false;
        self.by_tag.insert(tag, Held { acker, committed });
    }

    fn oldest(&self) -> Option<u64> {
        self.by_tag.keys().next().copied()
    }

    fn commit(&mut self, tag: u64) {
        if let Some(held) = self.by_tag.get_mut(&tag) {
            held.committed = true;
        }
    }

    fn release(&mut self, tag: u64) {
        self.by_tag.remove(&tag);
    }

    /// Takes out the committed messages in front of the oldest one still held uncommitted.
    fn take_committed_run(&mut self) -> Option<Run<A>> {
        let mut run = None;
        let mut messages = 0;
        while let Some(oldest) = self.by_tag.first_entry() {
            if !oldest.get().committed {
                break;
            }
            let (last_tag, held) = oldest.remove_entry();
            messages += 1;
            run = Some((last_tag, held.acker));
        }
        run.map(|(last_tag, acker)| Run {
            acker,
            last_tag,
            messages,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holding(tags: impl IntoIterator<Item = u64>) -> Unsettled<u64> {
        let mut unsettled = Unsettled::default();
        tags.into_iter().for_each(|tag| unsettled.hold(tag, tag));
        unsettled
    }

    fn commit(unsettled: &mut Unsettled<u64>, tags: impl IntoIterator<Item = u64>) {
        tags.into_iter().for_each(|tag| unsettled.commit(tag));
    }

    fn run(last_tag: u64, messages: usize) -> Option<Run<u64>> {
        Some(Run {
            acker: last_tag,
            last_tag,
            messages,
        })
    }

    #[test]
    fn a_batch_committed_before_an_older_one_is_acknowledged_with_it() {
        let mut unsettled = holding(1..=48);
        commit(&mut unsettled, 17..=32);
        assert_eq!(unsettled.oldest(), Some(1));
        assert_eq!(
            unsettled.take_committed_run(),
            None,
            "1..=16 are being stored"
        );
        commit(&mut unsettled, 1..=16);
        assert_eq!(unsettled.take_committed_run(), run(32, 32));
        assert_eq!(unsettled.take_committed_run(), None, "taken out once");
        commit(&mut unsettled, 33..=48);
        assert_eq!(unsettled.take_committed_run(), run(48, 16));
    }

    #[test]
    fn a_run_stops_at_the_oldest_message_still_being_stored() {
        let mut unsettled = holding(1..=48);
        commit(&mut unsettled, (1..=15).chain(17..=48));
        assert_eq!(unsettled.take_committed_run(), run(15, 15));
        assert_eq!(unsettled.take_committed_run(), None, "16 is still held");
    }

    #[test]
    fn a_message_settled_on_its_own_lets_the_run_behind_it_go() {
        let mut unsettled = holding(1..=32);
        commit(&mut unsettled, (1..=7).chain(9..=32));
        assert_eq!(unsettled.take_committed_run(), run(7, 7));
        unsettled.release(8);
        assert_eq!(unsettled.take_committed_run(), run(32, 24));
    }

    #[test]
    fn a_tag_no_longer_held_is_not_committed_again() {
        let mut unsettled = holding(1..=2);
        unsettled.release(1);
        unsettled.commit(1);
        assert_eq!(unsettled.take_committed_run(), None);
        unsettled.commit(2);
        assert_eq!(unsettled.take_committed_run(), run(2, 1));
    }
}
