//! The typed bodies an [`crate::Envelope`] carries, one module per provider.
//!
//! Ingest parses what a sender posts into these types (validating it at the edge) and publishes
//! them as canonical JSON; the worker reads the same types back and trusts them.

pub mod asleep;
pub mod fields;
pub mod omi;
pub mod reflector;
