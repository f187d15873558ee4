//! What to do after a step fails: the error policy.
//!
//! Transient failures back off exponentially with full jitter until the
//! run has been failing for longer than `max_age`; rate-limited failures
//! wait what the target asked; everything a retry cannot fix is parked.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ledgerbridge_core::{ErrorClass, Failure};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Backoff and give-up settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// First backoff ceiling, in milliseconds.
    pub base_ms: u64,
    /// Largest backoff ceiling, in seconds.
    pub cap_secs: u64,
    /// Give up (park) once a run has been failing this long, in hours.
    pub max_age_hours: u64,
    /// Wait used for a 429 that carried no `Retry-After`, in seconds.
    pub rate_limited_default_secs: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base_ms: 500,
            cap_secs: 15 * 60,
            max_age_hours: 72,
            rate_limited_default_secs: 5,
        }
    }
}

/// The decision for one failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Queue the run again at this instant.
    RetryAt(DateTime<Utc>),
    /// Park the run: it needs a human.
    Park,
}

impl RetryPolicy {
    /// Ceiling of the backoff before the `attempt`-th retry (1-based):
    /// `min(cap, base * 2^(attempt-1))`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let base = Duration::from_millis(self.base_ms.max(1));
        let cap = Duration::from_secs(self.cap_secs.max(1));
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1).min(30))
            .unwrap_or(u32::MAX);
        base.checked_mul(factor).unwrap_or(cap).min(cap)
    }

    /// Full jitter: a uniformly random wait in `[0, ceiling(attempt)]`,
    /// never less than 10 ms so a failing run cannot spin.
    pub fn backoff(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(attempt).as_millis().max(10) as u64;
        Duration::from_millis(rng.gen_range(10..=ceiling))
    }

    /// Decides what happens after `failure` on the `attempt`-th try of a
    /// run whose failures began at `first_failure_at`.
    pub fn decide(
        &self,
        failure: &Failure,
        attempt: u32,
        first_failure_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        rng: &mut impl Rng,
    ) -> Decision {
        let failing_since = first_failure_at.unwrap_or(now);
        // Settings come from the config file: any size must work.
        let max_age = i64::try_from(self.max_age_hours)
            .ok()
            .and_then(chrono::Duration::try_hours)
            .unwrap_or(chrono::Duration::MAX);
        if now.signed_duration_since(failing_since) >= max_age {
            return Decision::Park;
        }
        let wait = match failure.class {
            ErrorClass::Validation
            | ErrorClass::Conflict
            | ErrorClass::NotFound
            | ErrorClass::Auth => return Decision::Park,
            ErrorClass::RateLimited => failure
                .retry_after
                .unwrap_or(Duration::from_secs(self.rate_limited_default_secs)),
            // A transient failure may know when trying again makes sense
            // (503 with Retry-After; a write that may still be in flight).
            ErrorClass::Transient | ErrorClass::Unknown => {
                let backoff = self.backoff(attempt, rng);
                failure
                    .retry_after
                    .map_or(backoff, |wait| wait.max(backoff))
            }
            _ => self.backoff(attempt, rng),
        };
        // A target asking for more than max_age (`Retry-After:
        // 99999999999999`) gets one more try when max_age is over; if that
        // fails the run parks like any other.
        let wait = chrono::Duration::from_std(wait)
            .unwrap_or(chrono::Duration::MAX)
            .min(max_age);
        Decision::RetryAt(
            now.checked_add_signed(wait)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    #[test]
    fn ceilings_double_until_the_cap() {
        let p = RetryPolicy {
            base_ms: 100,
            cap_secs: 1,
            ..RetryPolicy::default()
        };
        assert_eq!(p.ceiling(1), Duration::from_millis(100));
        assert_eq!(p.ceiling(2), Duration::from_millis(200));
        assert_eq!(p.ceiling(4), Duration::from_millis(800));
        assert_eq!(p.ceiling(5), Duration::from_secs(1));
        assert_eq!(p.ceiling(500), Duration::from_secs(1));
    }

    #[test]
    fn validation_parks_at_once_and_rate_limit_honours_retry_after() {
        let p = RetryPolicy::default();
        let now = Utc::now();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(
            p.decide(&Failure::validation("bad line"), 1, None, now, &mut rng),
            Decision::Park
        );
        let limited = Failure::new(ErrorClass::RateLimited, "slow")
            .with_retry_after(Some(Duration::from_secs(7)));
        assert_eq!(
            p.decide(&limited, 3, None, now, &mut rng),
            Decision::RetryAt(now + chrono::Duration::seconds(7))
        );
    }

    #[test]
    fn transient_failures_park_after_max_age() {
        let p = RetryPolicy::default();
        let now = Utc::now();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let old = now - chrono::Duration::hours(73);
        assert_eq!(
            p.decide(&Failure::transient("503"), 9, Some(old), now, &mut rng),
            Decision::Park
        );
        let recent = now - chrono::Duration::hours(71);
        assert!(matches!(
            p.decide(&Failure::transient("503"), 9, Some(recent), now, &mut rng),
            Decision::RetryAt(_)
        ));
    }

    /// Found by `hostile_retry_after_and_settings_decide_never_panic`:
    /// `now + wait` panicked past the end of the calendar.
    #[test]
    fn a_retry_after_beyond_the_calendar_waits_max_age_not_a_panic() {
        let p = RetryPolicy::default();
        let now = Utc::now();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let retry_after =
            ledgerbridge_connectors::delivery::parse_retry_after_at("99999999999999", now);
        let limited = Failure::new(ErrorClass::RateLimited, "429").with_retry_after(retry_after);
        assert_eq!(
            p.decide(&limited, 1, None, now, &mut rng),
            Decision::RetryAt(now + chrono::Duration::hours(72))
        );
    }

    /// Found by the same test: `max_age_hours` from the config file beyond
    /// what a duration holds panicked in `Duration::hours`.
    #[test]
    fn a_max_age_beyond_the_calendar_is_never_reached_not_a_panic() {
        let p = RetryPolicy {
            max_age_hours: u64::MAX,
            ..RetryPolicy::default()
        };
        let now = Utc::now();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let since = now - chrono::Duration::days(365 * 100);
        assert!(matches!(
            p.decide(&Failure::transient("503"), 3, Some(since), now, &mut rng),
            Decision::RetryAt(_)
        ));
    }

    proptest! {
        #[test]
        fn backoff_stays_within_its_ceiling(attempt in 1u32..100, seed: u64, base in 1u64..10_000, cap in 1u64..10_000) {
            let p = RetryPolicy { base_ms: base, cap_secs: cap, ..RetryPolicy::default() };
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let wait = p.backoff(attempt, &mut rng);
            prop_assert!(wait >= Duration::from_millis(10));
            prop_assert!(wait <= p.ceiling(attempt).max(Duration::from_millis(10)));
        }
    }

    /// Hostile `Retry-After` headers (seconds beyond any clock, HTTP dates
    /// far ahead or behind, junk) on a 429, and policy settings of any
    /// size from the config file: a decision, never a panic; a retry is
    /// never in the past.
    #[test]
    fn hostile_retry_after_and_settings_decide_never_panic() {
        use ledgerbridge_connectors::delivery::parse_retry_after_at;
        use proptest::test_runner::{Config, TestRunner};

        let header = prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            Just("18446744073709551616".to_owned()),
            Just("99999999999999".to_owned()),
            Just("9223372036854".to_owned()),
            Just("Fri, 31 Dec 9999 23:59:59 GMT".to_owned()),
            Just("Mon, 01 Jan 0001 00:00:00 GMT".to_owned()),
            Just("Sunday, 06-Nov-94 08:49:37 GMT".to_owned()),
            Just("Sun Nov  6 08:49:37 1994".to_owned()),
            Just("-1".to_owned()),
            Just("1.5".to_owned()),
            Just(String::new()),
            "\\PC{0,40}",
        ];
        let setting = prop_oneof![
            Just(0u64),
            Just(u64::MAX),
            Just(i64::MAX as u64),
            any::<u64>(),
            0u64..100_000
        ];
        let strategy = (
            header,
            setting.clone(),
            setting.clone(),
            setting.clone(),
            setting,
            1u32..u32::MAX,
            any::<u64>(),
            any::<i64>(),
        );
        let mut runner = TestRunner::new(Config {
            cases: ledgerbridge_core::fuzz::cases(2000),
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(
                &strategy,
                |(header, base_ms, cap_secs, max_age_hours, default_secs, attempt, seed, since)| {
                    let p = RetryPolicy {
                        base_ms,
                        cap_secs,
                        max_age_hours,
                        rate_limited_default_secs: default_secs,
                    };
                    let now = Utc::now();
                    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                    let retry_after = parse_retry_after_at(&header, now);
                    let first = DateTime::from_timestamp(since % 20_000_000_000, 0);
                    for failure in [
                        Failure::new(ErrorClass::RateLimited, "429").with_retry_after(retry_after),
                        Failure::transient("503"),
                    ] {
                        if let Decision::RetryAt(at) =
                            p.decide(&failure, attempt, first, now, &mut rng)
                        {
                            prop_assert!(at >= now, "{at} is before {now}");
                            let max_age = i64::try_from(max_age_hours)
                                .ok()
                                .and_then(chrono::Duration::try_hours);
                            if let Some(deadline) =
                                max_age.and_then(|age| now.checked_add_signed(age))
                            {
                                prop_assert!(at <= deadline, "{at} is after max_age ({deadline})");
                            }
                        }
                    }
                    Ok(())
                },
            )
            .unwrap();
    }
}
