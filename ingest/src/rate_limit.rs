//! A rate limit per credential, so one noisy sender (or one user behind a shared key) cannot
//! crowd out the others.
//!
//! Each credential (a SHA-256 digest of its parts, so keys are never kept in the clear) has a
//! GCRA token bucket in `governor`'s keyed store, a sharded `DashMap`: a check is one hash
//! lookup, whatever the number of credentials, and refused requests get 429 with the seconds
//! until a token is back. Credentials come from the senders (every Omi uid is one), so the
//! store is kept bounded: every [`HOUSEKEEPING_EVERY`] checks, once it holds more than
//! [`MAX_CREDENTIALS`], the buckets that have refilled completely are dropped (they carry no
//! information), and if that is not enough the store starts afresh (every credential gets a
//! full burst again). That work is O(n) at most once per [`HOUSEKEEPING_EVERY`] checks, so
//! constant per check on average.

use std::num::NonZeroU32;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::Quota;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use sha2::{Digest, Sha256};

use crate::error::IngestError;

/// The most credentials kept beyond which housekeeping drops buckets (about 100 bytes each).
pub const MAX_CREDENTIALS: usize = 65_536;
/// Housekeeping looks at the store's size once per this many checks.
pub const HOUSEKEEPING_EVERY: u64 = 1_024;
/// The longest a token may take to come back (a tiny `RATE_LIMIT_PER_S` is clamped to it).
const LONGEST_PERIOD: Duration = Duration::from_secs(365 * 24 * 3600);

type Credential = [u8; 32];
type Buckets<C> = governor::RateLimiter<
    Credential,
    DashMapStateStore<Credential>,
    C,
    NoOpMiddleware<<C as Clock>::Instant>,
>;

/// The rate limit of every inbound route; [`RateLimiter::off`] lets everything through.
pub struct RateLimiter<C: Clock = DefaultClock> {
    /// `None` when limiting is off.
    limit: Option<Limit<C>>,
}

struct Limit<C: Clock> {
    quota: Quota,
    clock: C,
    /// Replaced only when housekeeping starts afresh; checks share the read side.
    buckets: RwLock<Buckets<C>>,
    checks: AtomicU64,
}

impl RateLimiter {
    pub fn off() -> Self {
        RateLimiter { limit: None }
    }

    /// `per_second` tokens a second up to `burst`; `per_second <= 0` turns limiting off, and a
    /// `burst` of 0 means one second's worth (at least 1).
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self::with_clock(per_second, burst, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    fn with_clock(per_second: f64, burst: u32, clock: C) -> Self {
        if !(per_second.is_finite() && per_second > 0.0) {
            return RateLimiter { limit: None };
        }
        let burst = match burst {
            0 => per_second.ceil().min(f64::from(u32::MAX)) as u32,
            given => given,
        };
        let period = Duration::try_from_secs_f64(1.0 / per_second)
            .unwrap_or(LONGEST_PERIOD)
            .clamp(Duration::from_nanos(1), LONGEST_PERIOD);
        let quota = Quota::with_period(period)
            .expect("the period is positive")
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        let buckets = RwLock::new(Buckets::dashmap_with_clock(quota, clock.clone()));
        RateLimiter {
            limit: Some(Limit {
                quota,
                clock,
                buckets,
                checks: AtomicU64::new(0),
            }),
        }
    }

    /// Takes a token from the bucket of the credential made of `parts` (e.g. source, key, uid).
    pub fn check(&self, parts: &[&str]) -> Result<(), IngestError> {
        let Some(limit) = &self.limit else {
            return Ok(());
        };
        limit.keep_bounded();
        let buckets = limit.buckets.read().expect("rate limit lock");
        let Err(not_until) = buckets.check_key(&credential(parts)) else {
            return Ok(());
        };
        metrics::counter!("ingest_rate_limited_total").increment(1);
        let wait = not_until.wait_time_from(limit.clock.now());
        Err(IngestError::RateLimited {
            retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
        })
    }

    /// How many credentials have a bucket now.
    pub fn credentials(&self) -> usize {
        self.limit.as_ref().map_or(0, |limit| {
            limit.buckets.read().expect("rate limit lock").len()
        })
    }
}

impl<C: Clock + Clone> Limit<C> {
    /// Once per [`HOUSEKEEPING_EVERY`] checks, if the store holds more than
    /// [`MAX_CREDENTIALS`]: drops the full buckets, then, if still too many, starts afresh.
    fn keep_bounded(&self) {
        let checks = self.checks.fetch_add(1, Ordering::Relaxed);
        if !checks.is_multiple_of(HOUSEKEEPING_EVERY) {
            return;
        }
        let buckets = self.buckets.read().expect("rate limit lock");
        if buckets.len() <= MAX_CREDENTIALS {
            return;
        }
        buckets.retain_recent();
        if buckets.len() <= MAX_CREDENTIALS {
            buckets.shrink_to_fit();
            return;
        }
        drop(buckets);
        *self.buckets.write().expect("rate limit lock") =
            Buckets::dashmap_with_clock(self.quota, self.clock.clone());
    }
}

/// The bucket's key: a digest, so keys and secrets are never kept in memory in the clear.
fn credential(parts: &[&str]) -> Credential {
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
    use governor::clock::FakeRelativeClock;

    fn retry_after(result: Result<(), IngestError>) -> u64 {
        match result {
            Err(IngestError::RateLimited { retry_after_s }) => retry_after_s,
            other => panic!("expected 429, got {other:?}"),
        }
    }

    fn limiter(per_second: f64, burst: u32) -> (RateLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (
            RateLimiter::with_clock(per_second, burst, clock.clone()),
            clock,
        )
    }

    #[test]
    fn a_burst_is_allowed_then_refused_until_a_token_refills() {
        let (limiter, clock) = limiter(0.5, 2);
        assert!(limiter.check(&["omi", "u1"]).is_ok());
        assert!(limiter.check(&["omi", "u1"]).is_ok());
        assert_eq!(retry_after(limiter.check(&["omi", "u1"])), 2);
        clock.advance(Duration::from_secs(2));
        assert!(limiter.check(&["omi", "u1"]).is_ok());
        assert!(limiter.check(&["omi", "u1"]).is_err());
    }

    #[test]
    fn each_credential_has_its_own_bucket() {
        let (limiter, _clock) = limiter(1.0, 1);
        assert!(limiter.check(&["omi", "u1"]).is_ok());
        assert!(limiter.check(&["omi", "u2"]).is_ok());
        assert!(limiter.check(&["omi", "u1"]).is_err());
        assert!(limiter.check(&["omiu", "1"]).is_ok());
    }

    #[test]
    fn off_lets_everything_through() {
        let limiter = RateLimiter::off();
        for _ in 0..1000 {
            assert!(limiter.check(&["omi", "u1"]).is_ok());
        }
        assert_eq!(limiter.credentials(), 0);
    }

    #[test]
    fn extreme_rates_neither_panic_nor_turn_limiting_off() {
        for (per_second, burst) in [
            (1e-300, 0),
            (1e300, 0),
            (f64::MIN_POSITIVE, 1),
            (0.5, u32::MAX),
        ] {
            let (limiter, _clock) = limiter(per_second, burst);
            assert!(
                limiter.check(&["omi", "u1"]).is_ok(),
                "{per_second} {burst}"
            );
        }
        let (slow, _clock) = limiter(1e-300, 1);
        slow.check(&["omi", "u1"]).unwrap();
        assert!(retry_after(slow.check(&["omi", "u1"])) > 1);
    }

    /// 100,000 distinct uids, none of whose buckets refill meanwhile: the store never holds
    /// more than its bound (plus one housekeeping interval), where a plain map held them all.
    #[test]
    fn a_hundred_thousand_distinct_credentials_keep_the_store_bounded() {
        let (limiter, clock) = limiter(1.0, 1);
        let bound = MAX_CREDENTIALS + HOUSEKEEPING_EVERY as usize;
        let mut largest = 0;
        for uid in 0..100_000 {
            assert!(limiter.check(&["omi", "key", &uid.to_string()]).is_ok());
            largest = largest.max(limiter.credentials());
        }
        assert!(largest <= bound, "{largest} credentials kept");
        assert!(
            largest > MAX_CREDENTIALS / 2,
            "{largest}: every bucket was kept until the bound"
        );

        // Once those buckets have refilled, housekeeping drops them rather than starting
        // afresh, so the buckets in use keep their state.
        clock.advance(Duration::from_secs(5));
        let busy = ["omi", "key", "busy"];
        limiter.check(&busy).unwrap();
        let left = limiter.credentials();
        let fresh = MAX_CREDENTIALS - 2 * HOUSEKEEPING_EVERY as usize;
        for uid in 100_000..100_000 + fresh {
            limiter.check(&["omi", "key", &uid.to_string()]).unwrap();
            assert!(limiter.credentials() <= bound);
        }
        assert!(
            limiter.credentials() < left + fresh,
            "the refilled buckets were dropped"
        );
        assert!(
            limiter.check(&busy).is_err(),
            "the busy bucket kept its state"
        );
    }
}
