//! Keeping endpoints apart, so a failing or slow one never holds up the others: per endpoint, a
//! bound on concurrent attempts, a token-bucket rate limit (`rate_limit_per_s`) and a circuit
//! breaker (after `CIRCUIT_FAILURE_THRESHOLD` consecutive failures, no attempts for
//! `CIRCUIT_COOLDOWN_MS`, then one probe).
//!
//! The state is this worker's own, in memory: the delivery loop claims of each endpoint no more
//! than its [`Room`], and nothing of a blocked one (the claim drops it before reading any of its
//! deliveries), so they stay in Postgres for later (or for another worker) and take no slot of
//! the global concurrency. With several workers the rate limit and concurrency bound apply per
//! worker. `outbound_circuits_open` counts this worker's open (and half-open) circuits.

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

/// The endpoints this worker limits now, each with how many attempts it may start at once
/// (zero: blocked) and how many deliveries a claim may take of it; any other endpoint may
/// start the full per-endpoint concurrency, each attempt slot sending a full batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Room {
    pub endpoints: Vec<Uuid>,
    pub attempts: Vec<i64>,
    /// Deliveries to claim: `attempts` batches, but one for a probe and no more than the whole
    /// tokens of a rate limit.
    pub rows: Vec<i64>,
}

impl Room {
    /// The attempts `endpoint` may start at once, if this worker limits it.
    pub fn attempts_of(&self, endpoint: Uuid) -> Option<i64> {
        let at = self
            .endpoints
            .iter()
            .position(|&limited| limited == endpoint)?;
        Some(self.attempts[at])
    }

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
    /// Deliveries one attempt slot sends one after another (`DELIVERY_BATCH`).
    batch: usize,
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
            batch: settings.batch.max(1),
            failure_threshold: settings.circuit_failure_threshold.max(1),
            cooldown: settings.circuit_cooldown,
        }
    }

    /// What each limited endpoint may start now; see [`Room`].
    pub fn room(&self) -> Room {
        let now = Instant::now();
        let mut endpoints = self.endpoints.lock().expect("isolation lock");
        let mut room = Room::default();
        let full_rows = self.max_in_flight * self.batch;
        for (id, state) in endpoints.iter_mut() {
            let attempts = state.room(now, self.max_in_flight);
            let rows = match (state.open_until, state.rate_limit_per_s) {
                (Some(_), _) => attempts,
                (None, Some(_)) => (attempts * self.batch).min(state.tokens.max(0.0) as usize),
                (None, None) => attempts * self.batch,
            };
            if attempts < self.max_in_flight || rows < full_rows {
                room.endpoints.push(*id);
                room.attempts.push(attempts as i64);
                room.rows.push(rows as i64);
            }
        }
        room
    }

    /// Deliveries a claim may take of an endpoint this worker does not limit.
    pub fn full_rows(&self) -> usize {
        self.max_in_flight * self.batch
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
        let was_open = state.open_until.is_some();
        if healthy {
            state.consecutive_failures = 0;
            state.open_until = None;
        } else {
            state.consecutive_failures += 1;
            if state.probing || state.consecutive_failures >= self.failure_threshold {
                state.open_until = Some(Instant::now() + self.cooldown);
            }
        }
        if was_open != state.open_until.is_some() {
            super::metrics::circuit_changed(!was_open);
        }
    }

    /// The state of `endpoint`'s circuit in this worker: `closed`, `open` (cooling down) or
    /// `half_open` (its cool-down over, the next attempt is the probe).
    pub fn circuit(&self, endpoint: Uuid) -> &'static str {
        let endpoints = self.endpoints.lock().expect("isolation lock");
        match endpoints.get(&endpoint).and_then(|state| state.open_until) {
            None => "closed",
            Some(until) if Instant::now() < until => "open",
            Some(_) => "half_open",
        }
    }
}

impl Permit {
    /// Whether the holder may send the next delivery of its batch: not when the circuit has
    /// opened (or this was the half-open probe, which is one attempt), nor without a token of
    /// the endpoint's rate limit (taken here).
    pub fn may_send_another(&self) -> bool {
        if self.probe {
            return false;
        }
        let now = Instant::now();
        let mut endpoints = self.isolation.endpoints.lock().expect("isolation lock");
        let Some(state) = endpoints.get_mut(&self.endpoint) else {
            return false;
        };
        if state.open_until.is_some() {
            return false;
        }
        state.refill(now);
        match state.rate_limit_per_s {
            Some(_) if state.tokens < 1.0 => false,
            Some(_) => {
                state.tokens -= 1.0;
                true
            }
            None => true,
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
        let batch = isolation.batch as i64;
        assert_eq!(
            (room.endpoints, room.attempts, room.rows),
            (vec![busy], vec![1], vec![batch])
        );
    }

    #[test]
    fn a_batch_goes_on_while_the_circuit_is_closed_and_tokens_last() {
        let isolation = isolation(1000);
        let (plain, limited, failing) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let permit = isolation.try_start(plain, None).unwrap();
        assert!((0..100).all(|_| permit.may_send_another()));

        let permit = isolation.try_start(limited, Some(3)).unwrap();
        assert!(
            !permit.may_send_another(),
            "a new endpoint's bucket holds one token"
        );
        std::thread::sleep(Duration::from_millis(1_100));
        let more = (0..10).filter(|_| permit.may_send_another()).count();
        assert_eq!(more, 3, "a second refills the bucket to one second's worth");
        let room = isolation.room();
        assert_eq!(
            room.rows[room.endpoints.iter().position(|&e| e == limited).unwrap()],
            0
        );

        let permit = isolation.try_start(failing, None).unwrap();
        (0..3).for_each(|_| isolation.record(failing, false));
        assert!(!permit.may_send_another(), "the circuit opened");
    }

    #[test]
    fn a_half_open_probe_claims_and_sends_one_delivery() {
        let isolation = isolation(50);
        let endpoint = Uuid::new_v4();
        drop(isolation.try_start(endpoint, None).unwrap());
        (0..3).for_each(|_| isolation.record(endpoint, false));
        std::thread::sleep(Duration::from_millis(60));
        let room = isolation.room();
        assert_eq!((room.attempts, room.rows), (vec![1], vec![1]));
        let probe = isolation.try_start(endpoint, None).unwrap();
        assert!(!probe.may_send_another());
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
        assert_eq!(isolation.circuit(endpoint), "closed");
        for _ in 0..3 {
            drop(isolation.try_start(endpoint, None).unwrap());
            isolation.record(endpoint, false);
        }
        assert!(isolation.try_start(endpoint, None).is_none(), "open");
        assert_eq!(isolation.circuit(endpoint), "open");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(isolation.circuit(endpoint), "half_open");
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
        assert_eq!(isolation.circuit(endpoint), "closed");
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
