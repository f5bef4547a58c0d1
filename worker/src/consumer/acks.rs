//! Settling the events channel's messages in order, with one `basic.ack` (`multiple`) for every
//! committed message up to the oldest one still being stored.
//!
//! RabbitMQ numbers a channel's deliveries 1, 2, 3, ... and `basic.ack` with `multiple` settles
//! every unsettled message up to a tag in one frame, which the broker turns into one settle
//! command for the quorum queue. Sending one command per message is not only slower: a channel
//! with more than `quorum_commands_soft_limit` (32) commands not yet applied by the queue keeps
//! further settles back in the channel process until the queue catches up, and when the channel
//! closes before then (a worker stopping), those settles are dropped and their committed
//! messages return to the queue (55 in one stop under a loaded machine).
//!
//! So batches, which are stored concurrently and finish in any order, never acknowledge message
//! by message. The [`Ledger`] holds, per channel, the tags not yet settled on the wire, each
//! marked once its batch has committed. When a batch commits, the run of committed tags at the
//! head of the ledger (if any) is taken out and acknowledged with one `multiple` ack on its last
//! tag; a batch that finishes before an older one leaves its tags marked, and the older batch's
//! ack covers them. A nack or reject (one message, rare) takes its tag out only once its frame
//! is sent and then acknowledges the committed run it may have been holding back, so a
//! `multiple` never covers a message still being stored or about to be requeued. One run's ack
//! is written before the next run is taken out, so an ack never names a tag an earlier frame
//! settled (the broker closes the channel on such an unknown tag).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

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

/// Marks every message of `batch` (all of one channel) committed and sends the ack that its
/// commit allows: none when an older message is still being stored (that one's batch will
/// acknowledge these too), else one for the whole committed run ahead of the next message
/// still held. Returns how many of the batch's messages are now acknowledged or left to that
/// older batch's ack; only a lost channel keeps either from reaching the broker, and then
/// every message comes back anyway.
pub async fn ack_all(batch: &[Settle]) -> usize {
    let Some(first) = batch.first() else {
        return 0;
    };
    let ledger = &first.ledger;
    {
        let mut unsettled = ledger.lock();
        batch.iter().for_each(|settle| unsettled.commit(settle.tag));
    }
    ledger.acknowledge_committed().await;
    batch.len()
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
