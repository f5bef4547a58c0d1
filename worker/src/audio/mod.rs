//! Audio: levels computed from Omi's PCM stream, and listening status per uid.

pub mod levels;
