//! A token bucket per credential, so one noisy sender (or one user behind a shared key) cannot
//! crowd out the others.
//!
//! Each bucket holds up to `burst` tokens and refills at `per_second`; a request takes one token
//! or is refused with 429 and the seconds until a token is back. Buckets live in one map behind
//! a mutex, held only for the few arithmetic operations of a check. Full buckets carry no
//! information, so the map is pruned of them once it grows past 10,000 entries.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::error::IngestError;

/// Beyond this many buckets, a check first drops the buckets that have refilled completely.
const PRUNE_ABOVE: usize = 10_000;

/// The rate limit of every inbound route; [`RateLimiter::off`] lets everything through.
pub struct RateLimiter {
    /// Tokens added per second; `None` means no limit.
    per_second: Option<f64>,
    burst: f64,
    /// Concurrent requests check under this lock; it is never held across an await.
    buckets: Mutex<HashMap<[u8; 32], Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub fn off() -> Self {
        Self::new(0.0, 0)
    }

    /// `per_second` tokens a second up to `burst`; `per_second <= 0` turns limiting off, and a
    /// `burst` of 0 means one second's worth (at least 1).
    pub fn new(per_second: f64, burst: u32) -> Self {
        let enabled = per_second.is_finite() && per_second > 0.0;
        let burst = if burst == 0 {
            per_second.ceil().max(1.0)
        } else {
            f64::from(burst)
        };
        RateLimiter {
            per_second: enabled.then_some(per_second),
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token from the bucket of the credential made of `parts` (e.g. source, key, uid).
    pub fn check(&self, parts: &[&str]) -> Result<(), IngestError> {
        self.check_at(parts, Instant::now())
    }

    fn check_at(&self, parts: &[&str], now: Instant) -> Result<(), IngestError> {
        let Some(per_second) = self.per_second else {
            return Ok(());
        };
        let mut buckets = self.buckets.lock().expect("rate limit lock");
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, bucket| refilled(*bucket, now, per_second, self.burst) < self.burst);
        }
        let bucket = buckets.entry(credential(parts)).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        bucket.tokens = refilled(*bucket, now, per_second, self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        metrics::counter!("ingest_rate_limited_total").increment(1);
        let wait = ((1.0 - bucket.tokens) / per_second).ceil().max(1.0);
        Err(IngestError::RateLimited {
            retry_after_s: wait as u64,
        })
    }
}

fn refilled(bucket: Bucket, now: Instant, per_second: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    (bucket.tokens + elapsed * per_second).min(burst)
}

/// The bucket's key: a digest, so keys and secrets are never kept in memory in the clear.
fn credential(parts: &[&str]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn retry_after(result: Result<(), IngestError>) -> u64 {
        match result {
            Err(IngestError::RateLimited { retry_after_s }) => retry_after_s,
            other => panic!("expected 429, got {other:?}"),
        }
    }

    #[test]
    fn a_burst_is_allowed_then_refused_until_a_token_refills() {
        let limiter = RateLimiter::new(0.5, 2);
        let start = Instant::now();
        assert!(limiter.check_at(&["omi", "u1"], start).is_ok());
        assert!(limiter.check_at(&["omi", "u1"], start).is_ok());
        assert_eq!(retry_after(limiter.check_at(&["omi", "u1"], start)), 2);
        let later = start + Duration::from_secs(2);
        assert!(limiter.check_at(&["omi", "u1"], later).is_ok());
        assert!(limiter.check_at(&["omi", "u1"], later).is_err());
    }

    #[test]
    fn each_credential_has_its_own_bucket() {
        let limiter = RateLimiter::new(1.0, 1);
        let now = Instant::now();
        assert!(limiter.check_at(&["omi", "u1"], now).is_ok());
        assert!(limiter.check_at(&["omi", "u2"], now).is_ok());
        assert!(limiter.check_at(&["omi", "u1"], now).is_err());
        assert!(limiter.check_at(&["omiu", "1"], now).is_ok());
    }

    #[test]
    fn off_lets_everything_through() {
        let limiter = RateLimiter::off();
        for _ in 0..1000 {
            assert!(limiter.check(&["omi", "u1"]).is_ok());
        }
    }
}
