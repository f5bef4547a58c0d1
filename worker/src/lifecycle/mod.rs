//! The data lifecycle: what the worker deletes, and when. Each part is a background loop that
//! one worker at a time runs, chosen by a Postgres advisory lock of its own, and that deletes in
//! small batches, each its own short transaction, so the hot path never waits on it.
//!
//! - [`retention`]: every kind of data once it is older than its `RETAIN_*` setting.
//! - [`erasure`]: every row of one user, on request (`DELETE /v1/users/{uid}`).

pub mod erasure;
pub mod retention;

/// The advisory lock keys of the lifecycle loops, one each, in one place so they never collide.
pub mod locks {
    /// Held by the worker running a retention pass ("retentio" in ASCII).
    pub const RETENTION: i64 = 0x7265_7465_6e74_696f;
    /// Held by the worker working through erasure jobs ("erasure" in ASCII).
    pub const ERASURE: i64 = 0x0065_7261_7375_7265;
}
