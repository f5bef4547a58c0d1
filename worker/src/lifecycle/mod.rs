//! The data lifecycle: retention and erasure, each a loop with one advisory lock.
//!
//! - [`erasure`]: erasing every row of one user (`DELETE /v1/users/{uid}`), in bounded batches.

pub mod erasure;
