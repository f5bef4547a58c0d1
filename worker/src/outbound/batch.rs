//! Splitting one claim into batches: the deliveries one attempt slot sends one after another,
//! then records with a single statement ([`super::deliver::batch`]).
//!
//! A delivery costs a claim, an attempt and a record; a claim and a record are each a statement
//! and a WAL flush, so sending one delivery per claim and per record holds a worker near a
//! thousand deliveries a second, whatever the receivers can take. A batch shares both among up
//! to `DELIVERY_BATCH` deliveries of one endpoint, and the per-endpoint concurrency still bounds
//! the requests in flight: a batch makes one at a time.
//!
//! Every endpoint claimed gets at least one batch (the claim takes no more endpoints than there
//! are free slots); the slots left go to endpoints with more deliveries than one batch holds,
//! up to what each may start at once. An endpoint's deliveries are dealt out in due order, so
//! the oldest go first in every batch.

use std::collections::HashMap;

use uuid::Uuid;

use super::claim::Claimed;
use super::isolation::Room;

/// Deliveries of one endpoint, oldest first, for one attempt slot.
#[derive(Debug)]
pub struct Batch {
    pub endpoint_id: Uuid,
    pub deliveries: Vec<Claimed>,
}

/// How a claim is split: the limits it was made with.
#[derive(Debug, Clone, Copy)]
pub struct Split<'a> {
    /// Free attempt slots: batches in all.
    pub slots: usize,
    /// What limited endpoints may start at once.
    pub room: &'a Room,
    /// What any other endpoint may start at once (`ENDPOINT_CONCURRENCY`).
    pub per_endpoint: usize,
    /// Deliveries a batch holds when slots are plenty (`DELIVERY_BATCH`).
    pub batch: usize,
}

impl Split<'_> {
    /// Splits `claimed` into batches; if there are more endpoints than slots (another claim's
    /// limits), the last endpoints' deliveries come back second, to be released.
    pub fn split(&self, claimed: Vec<Claimed>) -> (Vec<Batch>, Vec<Claimed>) {
        let mut by_endpoint: Vec<(Uuid, Vec<Claimed>)> = Vec::new();
        let mut at: HashMap<Uuid, usize> = HashMap::new();
        for delivery in claimed {
            let index = *at.entry(delivery.endpoint_id).or_insert_with(|| {
                by_endpoint.push((delivery.endpoint_id, Vec::new()));
                by_endpoint.len() - 1
            });
            by_endpoint[index].1.push(delivery);
        }
        let mut left_over = Vec::new();
        if by_endpoint.len() > self.slots {
            for (_, deliveries) in by_endpoint.drain(self.slots..) {
                left_over.extend(deliveries);
            }
        }
        let counts = self.batch_counts(&by_endpoint);
        let mut batches = Vec::new();
        for ((endpoint_id, mut deliveries), count) in by_endpoint.into_iter().zip(counts) {
            deliveries.sort_by_key(|delivery| delivery.due_at);
            batches.extend(deal(endpoint_id, deliveries, count));
        }
        (batches, left_over)
    }
}

impl Split<'_> {
    /// How many batches each endpoint gets: one each, then the spare slots one at a time in
    /// turn to those with more deliveries than their batches hold, up to what each may start.
    fn batch_counts(&self, by_endpoint: &[(Uuid, Vec<Claimed>)]) -> Vec<usize> {
        let caps: Vec<usize> = by_endpoint
            .iter()
            .map(|(endpoint_id, deliveries)| {
                let may_start = self
                    .room
                    .attempts_of(*endpoint_id)
                    .map_or(self.per_endpoint, |attempts| attempts.max(1) as usize);
                deliveries
                    .len()
                    .div_ceil(self.batch.max(1))
                    .min(may_start)
                    .max(1)
            })
            .collect();
        let mut counts = vec![1; caps.len()];
        let mut spare = self.slots.saturating_sub(caps.len());
        while spare > 0 {
            let before = spare;
            for (count, cap) in counts.iter_mut().zip(&caps) {
                if spare > 0 && *count < *cap {
                    *count += 1;
                    spare -= 1;
                }
            }
            if spare == before {
                break;
            }
        }
        counts
    }
}

/// Deals `deliveries` (oldest first) round into `count` batches.
fn deal(endpoint_id: Uuid, deliveries: Vec<Claimed>, count: usize) -> Vec<Batch> {
    let mut batches: Vec<Batch> = (0..count)
        .map(|_| Batch {
            endpoint_id,
            deliveries: Vec::new(),
        })
        .collect();
    for (index, delivery) in deliveries.into_iter().enumerate() {
        batches[index % count].deliveries.push(delivery);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::claim::tests::claimed_of;

    /// `counts[i]` deliveries of endpoint `i + 1`, due one second apart, each endpoint's given
    /// newest first.
    fn claimed(counts: &[usize]) -> Vec<Claimed> {
        let start = chrono::Utc::now();
        let mut claimed = Vec::new();
        for (endpoint, &count) in counts.iter().enumerate() {
            for n in (0..count).rev() {
                let mut delivery = claimed_of(endpoint as u128 + 1);
                delivery.due_at = start + chrono::Duration::seconds(n as i64);
                claimed.push(delivery);
            }
        }
        claimed
    }

    fn sizes(batches: &[Batch]) -> Vec<(u128, usize)> {
        batches
            .iter()
            .map(|batch| (batch.endpoint_id.as_u128(), batch.deliveries.len()))
            .collect()
    }

    fn split(slots: usize, room: &Room, claimed: Vec<Claimed>) -> (Vec<Batch>, Vec<Claimed>) {
        let split = Split {
            slots,
            room,
            per_endpoint: 4,
            batch: 16,
        };
        split.split(claimed)
    }

    #[test]
    fn one_endpoints_deliveries_fill_its_concurrency_in_batches_oldest_first() {
        let input = claimed(&[64]);
        let mut due: Vec<_> = input.iter().map(|delivery| delivery.due_at).collect();
        due.sort();
        let (batches, left) = split(64, &Room::default(), input);
        assert!(left.is_empty());
        assert_eq!(sizes(&batches), vec![(1, 16); 4]);
        for batch in &batches {
            let due: Vec<_> = batch.deliveries.iter().map(|d| d.due_at).collect();
            assert!(due.is_sorted(), "oldest first within a batch");
        }
        let heads: Vec<_> = batches.iter().map(|b| b.deliveries[0].due_at).collect();
        assert_eq!(heads, due[..4], "the four oldest go first, side by side");
    }

    #[test]
    fn a_few_deliveries_take_one_slot_and_leave_the_rest_free() {
        let (batches, _) = split(64, &Room::default(), claimed(&[5]));
        assert_eq!(sizes(&batches), vec![(1, 5)]);
    }

    #[test]
    fn every_endpoint_gets_a_slot_before_any_gets_a_second() {
        let (batches, left) = split(3, &Room::default(), claimed(&[40, 40, 40]));
        assert!(left.is_empty());
        assert_eq!(sizes(&batches), vec![(1, 40), (2, 40), (3, 40)]);
        let (batches, _) = split(5, &Room::default(), claimed(&[40, 40, 40]));
        assert_eq!(
            sizes(&batches),
            vec![(1, 20), (1, 20), (2, 20), (2, 20), (3, 40)],
            "the spare slots go round"
        );
    }

    #[test]
    fn a_limited_endpoint_starts_no_more_batches_than_its_room() {
        let room = Room {
            endpoints: vec![Uuid::from_u128(1)],
            attempts: vec![1],
            rows: vec![16],
        };
        let (batches, _) = split(64, &room, claimed(&[16, 32]));
        assert_eq!(sizes(&batches), vec![(1, 16), (2, 16), (2, 16)]);
    }

    #[test]
    fn endpoints_beyond_the_free_slots_come_back_to_be_released() {
        let (batches, left) = split(2, &Room::default(), claimed(&[1, 1, 1]));
        assert_eq!(batches.len(), 2);
        assert_eq!(left.len(), 1);
    }
}
