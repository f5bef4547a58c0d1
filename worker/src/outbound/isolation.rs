//! Keeping endpoints apart, so a failing or slow one never holds up the others: per endpoint, a
//! bound on concurrent attempts, a token-bucket rate limit (`rate_limit_per_s`) and a circuit
//! breaker (after `CIRCUIT_FAILURE_THRESHOLD` consecutive failures, no attempts for
//! `CIRCUIT_COOLDOWN_MS`, then one probe).
//!
//! The state is this worker's own, in memory: the delivery loop claims of each endpoint no more
//! than its [`Room`], and nothing of a blocked one (the claim drops it before reading any of its
//! deliveries), so they stay in Postgres for later (or for another worker) and take no slot of
//! the global concurrency. With several workers the rate limit
//! and concurrency bound apply per worker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::settings::DeliverySettings;

/// One endpoint's state in this worker.
#[derive(Debug)]
struct EndpointState {
    in_flight: usize,
    rate_limit_per_s: Option<f64>,
    tokens: f64,
    refilled_at: Instant,
    consecutive_failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

impl EndpointState {
    fn new(now: Instant) -> Self {
        EndpointState {
            in_flight: 0,
            rate_limit_per_s: None,
            tokens: 1.0,
            refilled_at: now,
            consecutive_failures: 0,
            open_until: None,
            probing: false,
        }
    }

    /// Adds the tokens earned since the last refill; the bucket holds one second's worth.
    fn refill(&mut self, now: Instant) {
        if let Some(rate) = self.rate_limit_per_s {
            let earned = now.duration_since(self.refilled_at).as_secs_f64() * rate;
            self.tokens = (self.tokens + earned).min(rate.max(1.0));
        }
        self.refilled_at = now;
    }

    /// How many attempts may start now: none while the circuit is open (one probe once its
    /// cool-down is over), else the free in-flight slots, and no more than the whole tokens of
    /// a rate limit.
    fn room(&mut self, now: Instant, max_in_flight: usize) -> usize {
        self.refill(now);
        let free = max_in_flight.saturating_sub(self.in_flight);
        let circuit_room = match self.open_until {
            None => free,
            Some(until) if now >= until && !self.probing => free.min(1),
            Some(_) => 0,
        };
        match self.rate_limit_per_s {
            Some(_) => circuit_room.min(self.tokens.max(0.0) as usize),
            None => circuit_room,
        }
    }

    fn is_blocked(&mut self, now: Instant, max_in_flight: usize) -> bool {
        self.room(now, max_in_flight) == 0
    }
}

/// The endpoints this worker limits below its per-endpoint concurrency now, each with how many
/// attempts it may start (zero: blocked); any other endpoint may start the full concurrency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Room {
    pub endpoints: Vec<Uuid>,
    pub attempts: Vec<i64>,
}

impl Room {
    /// The endpoints that may start no attempt now.
    pub fn blocked(&self) -> Vec<Uuid> {
        let attempts = self.attempts.iter();
        let endpoints = self.endpoints.iter().zip(attempts);
        endpoints
            .filter_map(|(endpoint, &attempts)| (attempts == 0).then_some(*endpoint))
            .collect()
    }
}

/// Per-endpoint isolation state, shared by the delivery loop and its attempts.
#[derive(Debug)]
pub struct Isolation {
    endpoints: Mutex<HashMap<Uuid, EndpointState>>,
    max_in_flight: usize,
    failure_threshold: u32,
    cooldown: Duration,
}

/// An attempt's place at its endpoint: holds one in-flight slot until dropped.
#[derive(Debug)]
pub struct Permit {
    isolation: Arc<Isolation>,
    endpoint: Uuid,
    /// This attempt is the half-open circuit's probe.
    probe: bool,
}

impl Isolation {
    pub fn new(settings: &DeliverySettings) -> Self {
        Isolation {
            endpoints: Mutex::new(HashMap::new()),
            max_in_flight: settings.endpoint_concurrency.max(1),
            failure_threshold: settings.circuit_failure_threshold.max(1),
            cooldown: settings.circuit_cooldown,
        }
    }

    /// What each limited endpoint may start now; see [`Room`].
    pub fn room(&self) -> Room {
        let now = Instant::now();
        let mut endpoints = self.endpoints.lock().expect("isolation lock");
        let mut room = Room::default();
        for (id, state) in endpoints.iter_mut() {
            let attempts = state.room(now, self.max_in_flight);
            if attempts < self.max_in_flight {
                room.endpoints.push(*id);
                room.attempts.push(attempts as i64);
            }
        }
        room
    }

    /// Takes a slot, a token and (when the circuit is half-open) the probe; `None` when the
    /// endpoint is blocked, and the caller puts the delivery back.
    pub fn try_start(
        self: &Arc<Self>,
        endpoint: Uuid,
        rate_limit_per_s: Option<i32>,
    ) -> Option<Permit> {
        let now = Instant::now();
        let mut endpoints = self.endpoints.lock().expect("isolation lock");
        let state = endpoints
            .entry(endpoint)
            .or_insert_with(|| EndpointState::new(now));
        state.rate_limit_per_s = rate_limit_per_s.filter(|r| *r > 0).map(f64::from);
        if state.is_blocked(now, self.max_in_flight) {
            return None;
        }
        let probe = state.open_until.is_some();
        state.probing |= probe;
        if state.rate_limit_per_s.is_some() {
            state.tokens -= 1.0;
        }
        state.in_flight += 1;
        Some(Permit {
            isolation: self.clone(),
            endpoint,
            probe,
        })
    }

    /// Feeds the circuit breaker with an attempt's result (before its permit is dropped): `healthy` false for failures worth
    /// a retry (timeouts, connection errors, 5xx, 429).
    pub fn record(&self, endpoint: Uuid, healthy: bool) {
        let mut endpoints = self.endpoints.lock().expect("isolation lock");
        let Some(state) = endpoints.get_mut(&endpoint) else {
            return;
        };
        if healthy {
            state.consecutive_failures = 0;
            state.open_until = None;
        } else {
            state.consecutive_failures += 1;
            if state.probing || state.consecutive_failures >= self.failure_threshold {
                state.open_until = Some(Instant::now() + self.cooldown);
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut endpoints = self.isolation.endpoints.lock().expect("isolation lock");
        if let Some(state) = endpoints.get_mut(&self.endpoint) {
            state.in_flight = state.in_flight.saturating_sub(1);
            if self.probe {
                state.probing = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::config::Env;

    fn isolation(cooldown_ms: u64) -> Arc<Isolation> {
        let mut settings = DeliverySettings::from_env(&Env::new(|_| None)).unwrap();
        settings.endpoint_concurrency = 2;
        settings.circuit_failure_threshold = 3;
        settings.circuit_cooldown = Duration::from_millis(cooldown_ms);
        Arc::new(Isolation::new(&settings))
    }

    #[test]
    fn concurrency_per_endpoint_is_bounded_and_released_on_drop() {
        let isolation = isolation(1000);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let first = isolation.try_start(a, None).unwrap();
        let _second = isolation.try_start(a, None).unwrap();
        assert!(isolation.try_start(a, None).is_none());
        assert_eq!(isolation.room().blocked(), vec![a]);
        assert!(
            isolation.try_start(b, None).is_some(),
            "others are not held up"
        );
        drop(first);
        assert!(isolation.try_start(a, None).is_some());
    }

    #[test]
    fn room_lists_the_endpoints_below_full_concurrency_with_what_they_may_start() {
        let isolation = isolation(1000);
        let (busy, idle) = (Uuid::new_v4(), Uuid::new_v4());
        let _one = isolation.try_start(busy, None).unwrap();
        drop(isolation.try_start(idle, None).unwrap());
        let room = isolation.room();
        assert_eq!((room.endpoints, room.attempts), (vec![busy], vec![1]));
    }

    #[test]
    fn the_rate_limit_hands_out_one_second_of_tokens() {
        let isolation = isolation(1000);
        let endpoint = Uuid::new_v4();
        drop(isolation.try_start(endpoint, Some(1)).unwrap());
        assert!(isolation.try_start(endpoint, Some(1)).is_none());
        assert_eq!(isolation.room().blocked(), vec![endpoint]);
    }

    #[test]
    fn the_circuit_opens_after_consecutive_failures_then_lets_one_probe() {
        let isolation = isolation(50);
        let endpoint = Uuid::new_v4();
        for _ in 0..3 {
            drop(isolation.try_start(endpoint, None).unwrap());
            isolation.record(endpoint, false);
        }
        assert!(isolation.try_start(endpoint, None).is_none(), "open");
        std::thread::sleep(Duration::from_millis(60));
        let probe = isolation
            .try_start(endpoint, None)
            .expect("half-open probe");
        assert!(
            isolation.try_start(endpoint, None).is_none(),
            "one probe only"
        );
        drop(probe);
        isolation.record(endpoint, true);
        assert!(
            isolation.try_start(endpoint, None).is_some(),
            "closed again"
        );
    }

    #[test]
    fn a_failed_probe_opens_the_circuit_again() {
        let isolation = isolation(50);
        let endpoint = Uuid::new_v4();
        for _ in 0..3 {
            drop(isolation.try_start(endpoint, None).unwrap());
            isolation.record(endpoint, false);
        }
        std::thread::sleep(Duration::from_millis(60));
        drop(isolation.try_start(endpoint, None).unwrap());
        isolation.record(endpoint, false);
        assert!(isolation.try_start(endpoint, None).is_none());
    }
}
