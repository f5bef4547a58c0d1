//! Outbound webhooks: the outbox the domain handlers write to, and (later) fan-out to endpoints,
//! signing, delivery and the retry schedule.

pub mod outbox;
