//! What the `bench` and `chaos` binaries share: starting ingest and worker as processes on a
//! queue prefix and database of their own, and a small HTTP client.
//!
//! # Layout
//! - [`process`]: a release binary run as a process, its log, readiness, stop and kill.
//! - [`stack`]: the run's isolation (queue prefix, database) and starting each service on it.
//! - [`load`]: the load generator's HTTP/1.1 client, and one-off requests.

pub mod load;
pub mod process;
pub mod stack;
