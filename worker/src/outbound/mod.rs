//! Outbound webhooks, from the outbox to the receiver.
//!
//! Domain handlers write events into the outbox ([`outbox::emit`]) in their own transaction,
//! and with each event one delivery per subscribed enabled endpoint ([`dispatch`] catches up on
//! rows written without theirs). From there every worker runs one delivery loop ([`poller`]):
//! [`claim`] takes due deliveries endpoint by endpoint, [`batch`] splits them among the free
//! attempt slots, [`send`] signs and POSTs them,
//! [`schedule`] decides what an answer means and when to retry, and [`deliver`] records the
//! outcome. [`isolation`] keeps a
//! failing or slow endpoint from holding up the others, [`guard`] refuses internal destinations,
//! [`at_rest`] keeps endpoint secrets and header values encrypted in Postgres (opened by
//! [`send`] just before signing), [`manual`] serves the management API's test, retry,
//! recover and resume, [`replay`] its replay, and [`erase`] cancels and deletes an erased
//! user's deliveries. [`attempt_stats`] keeps per-endpoint attempt statistics beside the
//! record of each batch, and [`disable`] disables an endpoint that answered 410 or kept
//! failing for `ENDPOINT_DISABLE_AFTER`.
//!
//! # Why a Postgres poller and not RabbitMQ
//! The schedule lives in the `deliveries` table and a loop claims due rows with
//! `FOR UPDATE SKIP LOCKED`, pushing `next_attempt_at` forward by a lease longer than the
//! request timeout. RabbitMQ has no native delayed delivery (retries would need TTL and
//! dead-letter tiers, one per delay), and a queue redelivery shorter than a slow receiver's
//! timeout duplicates deliveries; in Postgres the outbox row, the deliveries and the schedule
//! commit together, a retry is one `UPDATE`, a killed worker's claim simply expires, and the
//! management API reads and requeues the same rows. The loop is prompt without busy polling:
//! a worker wakes its own loop after committing events ([`Outbound::wake`]), other writers
//! send `NOTIFY outbound` (not a trigger: a NOTIFY serializes commits, see migration 0006), the
//! loop sleeps exactly until the next due delivery, and `DELIVERY_POLL_MS` (default 1 s) bounds
//! the sleep when a wake-up is lost.

pub mod at_rest;
pub mod attempt_stats;
pub mod batch;
pub mod claim;
pub mod counts;
pub mod deliver;
pub mod disable;
pub mod dispatch;
pub mod endpoint;
pub mod erase;
pub mod guard;
pub mod isolation;
pub mod manual;
pub mod metrics;
pub mod outbox;
pub mod poller;
pub mod replay;
pub mod schedule;
pub mod send;

use std::sync::Arc;

use tokio::sync::{Notify, Semaphore};

use crate::settings::DeliverySettings;

pub use poller::run;

/// What the delivery side of one worker shares between its loop, its attempts and the API.
#[derive(Debug)]
pub struct Outbound {
    /// The one pooled HTTP client, behind the SSRF guard.
    pub sender: send::Sender,
    pub schedule: schedule::Schedule,
    /// Per-endpoint concurrency, rate limit and circuit breaker.
    pub isolation: Arc<isolation::Isolation>,
    /// Attempts this worker may make at once (`DELIVERY_CONCURRENCY`); a claim takes at most
    /// the free ones.
    pub slots: Arc<Semaphore>,
    pub endpoint_concurrency: usize,
    /// Deliveries one attempt slot sends one after another from a claim (`DELIVERY_BATCH`).
    pub batch: usize,
    /// Wakes this worker's delivery loop: notified after this worker commits outbox events.
    pub wake: Notify,
}

impl Outbound {
    pub fn new(settings: &DeliverySettings) -> anyhow::Result<Self> {
        let guard = guard::TargetGuard::new(settings.allowed_target_cidrs.clone());
        Ok(Outbound {
            sender: send::Sender::new(guard, settings)?,
            schedule: schedule::Schedule::new(settings),
            isolation: Arc::new(isolation::Isolation::new(settings)),
            slots: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            endpoint_concurrency: settings.endpoint_concurrency.max(1),
            batch: settings.batch.max(1),
            wake: Notify::new(),
        })
    }
}
