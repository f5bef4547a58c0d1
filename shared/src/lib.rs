//! What `ingest` and `worker` agree on.
//!
//! Both binaries link this crate so that the message on the queue has exactly one definition and
//! both processes are configured, logged and measured the same way.
//!
//! # Layout
//! - [`envelope`]: the event envelope published by ingest and consumed by the worker, and how it
//!   maps onto an AMQP message.
//! - [`payload`]: the typed bodies an envelope carries, one module per provider.
//! - [`config`]: settings read from the environment (INTERFACE.md section 2).
//! - [`broker`]: connecting to RabbitMQ and declaring the exchanges and queues.
//! - [`telemetry`]: tracing logs and the Prometheus recorder.
//! - [`signature`]: Standard Webhooks and Reflector signatures, signing and verifying.
//! - [`http`]: the small pieces both HTTP servers share (health, metrics, JSON errors, shutdown).
//! - [`openapi`]: what both OpenAPI documents share, and (feature `testkit`) the checks the
//!   tests hold them and real answers to.
//! - `testkit` (feature `testkit`): per-test databases and queue prefixes, and a TCP proxy for
//!   fault injection, used by the crates' integration tests.

pub mod broker;
pub mod config;
pub mod envelope;
pub mod http;
pub mod openapi;
pub mod payload;
pub mod signature;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use envelope::{Envelope, EventKind, Source};
