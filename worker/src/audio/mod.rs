//! Audio: levels computed from Omi's PCM stream, and listening status per uid.
//!
//! - [`levels`]: the level meter (pure computation, the hot loop).
//! - [`stream`]: folding stored chunks into windows per uid, in order, and listening status.

pub mod levels;
pub mod stream;
