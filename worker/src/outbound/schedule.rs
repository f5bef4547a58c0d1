//! The retry schedule as pure functions: what one attempt's result means, and when the next
//! attempt is due (INTERFACE.md section 4). No I/O here, so every rule is unit-tested.
//!
//! A receiver's `Retry-After` is input from outside: any number of seconds or any date. It is
//! clamped to the delivery window before it touches a date, and every date sum is checked, so
//! no answer can overflow the arithmetic.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::settings::DeliverySettings;

/// What an attempt got back, as far as the schedule cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The receiver answered with this status (and maybe `Retry-After`).
    Status {
        code: u16,
        retry_after: Option<RetryAfter>,
    },
    /// No answer: timeout, connection error, or a destination the guard refused.
    None,
}

impl Answer {
    /// True when the endpoint looks in trouble (no answer, 5xx, 408, 429): what feeds the
    /// circuit breaker. A 4xx about one payload says nothing about the endpoint's health.
    pub fn is_trouble(self) -> bool {
        match self {
            Answer::None => true,
            Answer::Status { code, .. } => code >= 500 || code == 408 || code == 429,
        }
    }
}

/// A `Retry-After` header: seconds, or an HTTP date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    Seconds(u64),
    At(DateTime<Utc>),
}

impl RetryAfter {
    /// Parses either form; `None` when it is neither. Seconds beyond `u64` are `u64::MAX`.
    pub fn parse(value: &str) -> Option<RetryAfter> {
        let value = value.trim();
        if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()) {
            return Some(RetryAfter::Seconds(value.parse().unwrap_or(u64::MAX)));
        }
        DateTime::parse_from_rfc2822(value)
            .ok()
            .map(|at| RetryAfter::At(at.with_timezone(&Utc)))
    }

    /// How long from `now` the receiver asks us to wait.
    fn delay_from(self, now: DateTime<Utc>) -> Duration {
        match self {
            RetryAfter::Seconds(seconds) => Duration::from_secs(seconds),
            RetryAfter::At(at) => (at - now).to_std().unwrap_or_default(),
        }
    }
}

/// What becomes of the delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Succeeded,
    /// Terminal; `disable` when the receiver said 410 Gone.
    Failed {
        disable: bool,
    },
    /// Try again at this time.
    RetryAt(DateTime<Utc>),
}

/// The schedule's three numbers.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub base: Duration,
    pub max_delay: Duration,
    pub window: Duration,
}

impl Schedule {
    pub fn new(settings: &DeliverySettings) -> Self {
        Schedule {
            base: settings.retry_base,
            max_delay: settings.retry_max_delay,
            window: settings.window,
        }
    }

    /// Decides after an attempt. `attempts` counts the attempts of the current window including
    /// this one; `window_start` is when the window's first attempt started; `jitter` is a
    /// uniform random number in [0, 1).
    pub fn decide(
        &self,
        answer: Answer,
        attempts: u32,
        window_start: DateTime<Utc>,
        now: DateTime<Utc>,
        jitter: f64,
    ) -> Decision {
        let wait_at_least = match answer {
            Answer::Status {
                code: 200..=299, ..
            } => return Decision::Succeeded,
            Answer::Status { code: 410, .. } => return Decision::Failed { disable: true },
            Answer::Status { code, .. } if is_final_client_error(code) => {
                return Decision::Failed { disable: false };
            }
            Answer::Status {
                code: 429 | 503,
                retry_after: Some(retry_after),
            } => retry_after.delay_from(now),
            _ => Duration::ZERO,
        };
        // A wait longer than the window fails the delivery whatever its length, so it is
        // clamped to the window (one step past it) before it becomes a date.
        let delay = self
            .backoff(attempts, jitter)
            .max(wait_at_least)
            .min(self.window.saturating_add(Duration::from_millis(1)));
        let Some(next) = later(now, delay) else {
            return Decision::Failed { disable: false };
        };
        let window_closed = later(window_start, self.window).is_some_and(|closes| next > closes);
        if window_closed {
            Decision::Failed { disable: false }
        } else {
            Decision::RetryAt(next)
        }
    }

    /// The delay after the `attempts`-th attempt: base doubling, capped, with ±20% jitter
    /// (never above the cap).
    pub fn backoff(&self, attempts: u32, jitter: f64) -> Duration {
        let doublings = attempts.saturating_sub(1).min(31);
        let plain = self
            .base
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay);
        plain
            .mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
            .min(self.max_delay)
    }
}

/// `at + delay`, or `None` when that is not a date chrono can hold.
fn later(at: DateTime<Utc>, delay: Duration) -> Option<DateTime<Utc>> {
    at.checked_add_signed(TimeDelta::from_std(delay).ok()?)
}

/// 4xx answers that retrying cannot fix: all but 408 Timeout, 409 Conflict and 429 Too Many.
fn is_final_client_error(code: u16) -> bool {
    (400..500).contains(&code) && !matches!(code, 408 | 409 | 429)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn schedule() -> Schedule {
        Schedule {
            base: Duration::from_secs(60),
            max_delay: Duration::from_secs(3600),
            window: Duration::from_secs(86_400),
        }
    }

    fn status(code: u16) -> Answer {
        Answer::Status {
            code,
            retry_after: None,
        }
    }

    fn decide(answer: Answer, attempts: u32) -> Decision {
        let now = Utc::now();
        schedule().decide(answer, attempts, now, now, 0.5)
    }

    #[test]
    fn success_is_any_2xx() {
        assert_eq!(decide(status(200), 1), Decision::Succeeded);
        assert_eq!(decide(status(204), 3), Decision::Succeeded);
    }

    #[test]
    fn client_errors_fail_at_once_except_408_409_429() {
        for code in [400, 401, 403, 404, 413, 422] {
            assert_eq!(decide(status(code), 1), Decision::Failed { disable: false });
        }
        assert_eq!(decide(status(410), 1), Decision::Failed { disable: true });
        for code in [408, 409, 429, 500, 502, 503, 504, 301] {
            assert!(
                matches!(decide(status(code), 1), Decision::RetryAt(_)),
                "{code}"
            );
        }
        assert!(matches!(decide(Answer::None, 1), Decision::RetryAt(_)));
    }

    #[test]
    fn delays_start_at_the_base_double_and_stop_at_the_cap() {
        let schedule = schedule();
        assert_eq!(schedule.backoff(1, 0.5), 60 * SECOND);
        assert_eq!(schedule.backoff(2, 0.5), 120 * SECOND);
        assert_eq!(schedule.backoff(4, 0.5), 480 * SECOND);
        assert_eq!(schedule.backoff(7, 0.5), 3600 * SECOND);
        assert_eq!(schedule.backoff(60, 0.99), 3600 * SECOND);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let schedule = schedule();
        assert_eq!(schedule.backoff(1, 0.0), 48 * SECOND);
        assert!(schedule.backoff(1, 0.999) < 72 * SECOND);
        assert!(schedule.backoff(1, 0.999) > 71 * SECOND);
    }

    #[test]
    fn no_attempt_is_scheduled_past_the_window() {
        let start = Utc::now();
        let late = start + chrono::Duration::hours(23) + chrono::Duration::minutes(30);
        let decision = schedule().decide(status(500), 20, start, late, 0.5);
        assert_eq!(decision, Decision::Failed { disable: false });
        let early = start + chrono::Duration::hours(1);
        let decision = schedule().decide(status(500), 20, start, early, 0.5);
        assert_eq!(
            decision,
            Decision::RetryAt(early + chrono::Duration::hours(1))
        );
    }

    #[test]
    fn retry_after_is_honoured_on_429_and_503_within_the_window() {
        let now = Utc::now();
        let asks = |code, seconds| Answer::Status {
            code,
            retry_after: Some(RetryAfter::Seconds(seconds)),
        };
        let later = now + chrono::Duration::seconds(600);
        assert_eq!(
            schedule().decide(asks(429, 600), 1, now, now, 0.5),
            Decision::RetryAt(later)
        );
        assert_eq!(
            schedule().decide(asks(503, 600), 1, now, now, 0.5),
            Decision::RetryAt(later)
        );
        let ignored = schedule().decide(asks(500, 600), 1, now, now, 0.5);
        assert_eq!(
            ignored,
            Decision::RetryAt(now + chrono::Duration::seconds(60))
        );
        let beyond = schedule().decide(asks(429, 90_000), 1, now, now, 0.5);
        assert_eq!(beyond, Decision::Failed { disable: false });
    }

    #[test]
    fn a_huge_retry_after_fails_the_delivery_without_overflowing() {
        let now = Utc::now();
        let huge_dates = [
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "Fri, 31 Dec 9999 23:59:59 -2359",
        ];
        let mut asked: Vec<RetryAfter> = ["99999999999999", "18446744073709551615"]
            .into_iter()
            .chain(huge_dates)
            .filter_map(RetryAfter::parse)
            .collect();
        asked.push(RetryAfter::At(DateTime::<Utc>::MAX_UTC));
        assert_eq!(asked.len(), 5, "{asked:?}");
        for retry_after in asked {
            for code in [429, 503] {
                let answer = Answer::Status {
                    code,
                    retry_after: Some(retry_after),
                };
                let decision = schedule().decide(answer, 1, now, now, 0.5);
                assert_eq!(
                    decision,
                    Decision::Failed { disable: false },
                    "{retry_after:?}"
                );
            }
        }
    }

    #[test]
    fn seconds_beyond_u64_saturate() {
        assert_eq!(
            RetryAfter::parse("99999999999999"),
            Some(RetryAfter::Seconds(99_999_999_999_999))
        );
        assert_eq!(
            RetryAfter::parse("999999999999999999999999999"),
            Some(RetryAfter::Seconds(u64::MAX))
        );
        assert_eq!(RetryAfter::parse("-5"), None);
        assert_eq!(RetryAfter::parse(""), None);
    }

    #[test]
    fn a_window_at_the_end_of_time_fails_instead_of_overflowing() {
        let end = DateTime::<Utc>::MAX_UTC - chrono::Duration::seconds(1);
        let decision = schedule().decide(status(500), 1, end, end, 0.5);
        assert_eq!(decision, Decision::Failed { disable: false });
        let forever = Schedule {
            window: Duration::MAX,
            ..schedule()
        };
        let now = Utc::now();
        let decision = forever.decide(status(500), 1, now, now, 0.5);
        assert_eq!(
            decision,
            Decision::RetryAt(now + chrono::Duration::seconds(60))
        );
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        assert_eq!(RetryAfter::parse(" 120 "), Some(RetryAfter::Seconds(120)));
        let parsed = RetryAfter::parse("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let RetryAfter::At(at) = parsed else {
            panic!("{parsed:?}")
        };
        assert_eq!(at.to_rfc3339(), "2015-10-21T07:28:00+00:00");
        assert_eq!(RetryAfter::parse("soon"), None);
        let past = RetryAfter::At(Utc::now() - chrono::Duration::seconds(5));
        assert_eq!(past.delay_from(Utc::now()), Duration::ZERO);
    }
}
