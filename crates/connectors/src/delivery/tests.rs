use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use http::StatusCode;
use ledgerbridge_core::ErrorClass;
use proptest::prelude::*;

use super::*;

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).expect("valid status")
}

#[test]
fn kashflow_validation_message_quotes_the_target() {
    let body = r#"{"Error":"ValidationError","Message":"Customer code SIMC0001 already exists."}"#;
    let failure = classify(status(400), body, None, "kashflow:main");
    assert_eq!(failure.class, ErrorClass::Validation);
    assert_eq!(
        failure.message,
        "KashFlow 400 ValidationError: Customer code SIMC0001 already exists."
    );
    assert!(!failure.outcome_uncertain);
}

#[test]
fn kashflow_sql_timeout_is_transient() {
    let body = r#"{"Error":"-2146232060","Message":"Execution Timeout Expired.  The timeout period elapsed."}"#;
    let failure = classify(status(400), body, None, "kashflow");
    assert_eq!(failure.class, ErrorClass::Transient);
    assert!(failure
        .message
        .starts_with("KashFlow 400 -2146232060: Execution Timeout"));

    let by_message = r#"{"Error":"Other","Message":"Execution Timeout Expired."}"#;
    assert_eq!(
        classify(status(400), by_message, None, "kashflow").class,
        ErrorClass::Transient
    );
    // The same body from another target is just a validation error.
    assert_eq!(
        classify(status(400), body, None, "ordercloud").class,
        ErrorClass::Validation
    );
}

#[test]
fn kashflow_auth_errors() {
    let body = r#"{"Error":"InvalidSessionToken","Message":"Session token provided is invalid."}"#;
    let failure = classify(status(401), body, None, "kashflow");
    assert_eq!(failure.class, ErrorClass::Auth);
    assert_eq!(
        failure.message,
        "KashFlow 401 InvalidSessionToken: Session token provided is invalid."
    );
}

#[test]
fn ordercloud_joins_all_errors() {
    let body = r#"{"Errors":[
        {"ErrorCode":"ValidationFailure","Message":"Quantity must be at least 1.","Data":null},
        {"ErrorCode":"Inventory.Insufficient","Message":"Only 2 left.","Data":{"QuantityAvailable":2}}]}"#;
    let failure = classify(status(400), body, None, "ordercloud:uk");
    assert_eq!(failure.class, ErrorClass::Validation);
    assert_eq!(
        failure.message,
        "OrderCloud 400 ValidationFailure: Quantity must be at least 1.; Inventory.Insufficient: Only 2 left."
    );

    let not_found = r#"{"Errors":[{"ErrorCode":"NotFound","Message":"Order not found: SO-404","Data":{"ObjectType":"Order","ObjectID":"SO-404"}}]}"#;
    let failure = classify(status(404), not_found, None, "ordercloud");
    assert_eq!(failure.class, ErrorClass::NotFound);
    assert_eq!(
        failure.message,
        "OrderCloud 404 NotFound: Order not found: SO-404"
    );
}

#[test]
fn ordercloud_oauth_errors() {
    let body = r#"{"error":"invalid_grant","error_description":"Bad credentials.","Errors":[{"ErrorCode":"Auth.InvalidUsernameOrPassword","Message":"Bad credentials.","Data":null}]}"#;
    let failure = classify(status(400), body, None, "ordercloud");
    assert_eq!(
        failure.message,
        "OrderCloud 400 Auth.InvalidUsernameOrPassword: Bad credentials."
    );
    let bare = r#"{"error":"invalid_client","error_description":"Unknown client."}"#;
    assert_eq!(
        classify(status(400), bare, None, "ordercloud").message,
        "OrderCloud 400 invalid_client: Unknown client."
    );
    let offline = r#"{"Errors":[{"ErrorCode":"Api.Offline","Message":"Maintenance."}]}"#;
    assert_eq!(
        classify(status(400), offline, None, "ordercloud").class,
        ErrorClass::Transient
    );
}

#[test]
fn odata_errors_are_read() {
    let body = r#"{"error":{"code":"AlreadyExists","message":"A contact with identifier ordercloud/u1 already exists: c-1.","existingContactId":"c-1"}}"#;
    let failure = classify(status(409), body, None, "xconnect:main");
    assert_eq!(failure.class, ErrorClass::Conflict);
    assert_eq!(
        failure.message,
        "xConnect 409 AlreadyExists: A contact with identifier ordercloud/u1 already exists: c-1."
    );
}

#[test]
fn unparsed_bodies_are_quoted_briefly() {
    let failure = classify(status(502), "<html>bad gateway</html>", None, "xconnect");
    assert_eq!(failure.class, ErrorClass::Transient);
    assert_eq!(failure.message, "xConnect 502: <html>bad gateway</html>");

    let empty = classify(status(503), "", None, "ordercloud");
    assert_eq!(empty.message, "OrderCloud 503 Service Unavailable");

    let long = "x".repeat(5000);
    let failure = classify(status(500), &long, None, "gateway");
    assert!(failure.message.starts_with("gateway 500: xxx"));
    assert!(failure.message.chars().count() < 400);
}

#[test]
fn status_table() {
    let cases = [
        (400, ErrorClass::Validation),
        (422, ErrorClass::Validation),
        (401, ErrorClass::Auth),
        (403, ErrorClass::Auth),
        (404, ErrorClass::NotFound),
        (409, ErrorClass::Conflict),
        (408, ErrorClass::Transient),
        (429, ErrorClass::RateLimited),
        (413, ErrorClass::Validation),
        (500, ErrorClass::Transient),
        (503, ErrorClass::Transient),
        (504, ErrorClass::Transient),
        (302, ErrorClass::Unknown),
    ];
    for (code, class) in cases {
        assert_eq!(
            classify(status(code), "{}", None, "kashflow").class,
            class,
            "{code}"
        );
    }
}

#[test]
fn retry_after_is_kept() {
    let failure = classify(status(429), "", Some(Duration::from_secs(7)), "ordercloud");
    assert_eq!(failure.class, ErrorClass::RateLimited);
    assert_eq!(failure.retry_after, Some(Duration::from_secs(7)));
}

#[test]
fn retry_after_parses_seconds_and_dates() {
    let now = Utc.with_ymd_and_hms(2015, 10, 21, 7, 28, 0).unwrap();
    assert_eq!(
        parse_retry_after_at("120", now),
        Some(Duration::from_secs(120))
    );
    assert_eq!(parse_retry_after_at(" 0 ", now), Some(Duration::ZERO));
    assert_eq!(
        parse_retry_after_at("Wed, 21 Oct 2015 07:28:30 GMT", now),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        parse_retry_after_at("Wednesday, 21-Oct-15 07:29:00 GMT", now),
        Some(Duration::from_secs(60))
    );
    assert_eq!(
        parse_retry_after_at("Wed Oct 21 07:28:10 2015", now),
        Some(Duration::from_secs(10))
    );
    // In the past: no wait.
    assert_eq!(
        parse_retry_after_at("Wed, 21 Oct 2015 07:00:00 GMT", now),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after_at("soon", now), None);
    assert_eq!(parse_retry_after_at("-5", now), None);
    assert_eq!(parse_retry_after_at("", now), None);
}

proptest! {
    // Hostile input: `LEDGERBRIDGE_FUZZ_SCALE` scales it (scripts/fuzz-long).
    #![proptest_config(ProptestConfig {
        cases: ledgerbridge_core::fuzz::cases(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn classify_never_panics_and_is_total(code in 100u16..600, body in ".{0,400}", target in "[a-zA-Z:]{0,20}") {
        let failure = classify(status(code), &body, None, &target);
        prop_assert!(!failure.message.is_empty());
        prop_assert!(!failure.outcome_uncertain);
        if (500..600).contains(&code) {
            prop_assert_eq!(failure.class, ErrorClass::Transient);
        }
    }

    #[test]
    fn kashflow_error_bodies_round_trip_into_messages(code in "[A-Za-z]{1,20}", message in "[ -~]{1,80}") {
        let body = serde_json::json!({"Error": code, "Message": message}).to_string();
        let failure = classify(status(400), &body, None, "kashflow");
        prop_assert_eq!(failure.message, format!("KashFlow 400 {code}: {message}"));
    }

    #[test]
    fn retry_after_seconds_round_trip(secs in 0u64..10_000_000) {
        prop_assert_eq!(parse_retry_after(&secs.to_string()), Some(Duration::from_secs(secs)));
    }
}

fn limits(max: usize, min: usize) -> TargetLimits {
    TargetLimits {
        max_concurrency: max,
        min_concurrency: min,
        ..TargetLimits::default()
    }
}

#[test]
fn limits_validate() {
    assert!(TargetLimits::default().validate().is_ok());
    assert!(limits(1, 2).validate().is_err());
    assert!(limits(4, 0).validate().is_err());
    let bad_rate = TargetLimits {
        rate_per_sec: Some(0.0),
        ..TargetLimits::default()
    };
    assert!(bad_rate.validate().is_err());
}

#[test]
fn limits_deserialize_with_units_and_reject_unknown_keys() {
    let parsed: TargetLimits =
        serde_json::from_str(r#"{"rate_per_sec": 5, "timeout": "1500ms", "max_concurrency": 4}"#)
            .unwrap();
    assert_eq!(parsed.rate_per_sec, Some(5.0));
    assert_eq!(parsed.timeout, Duration::from_millis(1500));
    assert_eq!(parsed.max_concurrency, 4);
    assert_eq!(parsed.burst, TargetLimits::default().burst);
    let seconds: TargetLimits = serde_json::from_str(r#"{"timeout": 2.5}"#).unwrap();
    assert_eq!(seconds.timeout, Duration::from_millis(2500));
    let err = serde_json::from_str::<TargetLimits>(r#"{"rate": 5}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn concurrency_is_capped_and_released_on_drop() {
    let target = Target::new("t", limits(2, 1));
    let a = target.acquire().await;
    let b = target.acquire().await;
    assert_eq!(target.in_flight(), 2);
    let waiter = {
        let target = target.clone();
        tokio::spawn(async move { target.acquire().await })
    };
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    drop(a);
    let c = waiter.await.unwrap();
    assert_eq!(target.in_flight(), 2);
    drop(b);
    drop(c);
    assert_eq!(target.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn aimd_halves_once_per_burst_and_grows_after_a_window() {
    let target = Target::new("t", limits(16, 2));
    assert_eq!(target.concurrency_limit(), 16);

    // Eight requests in flight all fail: only one halving.
    let mut permits = Vec::new();
    for _ in 0..8 {
        permits.push(target.acquire().await);
    }
    for permit in permits {
        permit.overloaded();
    }
    assert_eq!(target.concurrency_limit(), 8);

    // Sequential failures each halve, never below min.
    for expected in [4, 2, 2] {
        target.acquire().await.overloaded();
        assert_eq!(target.concurrency_limit(), expected);
    }

    // A window of `limit` successes grows the limit by one.
    target.acquire().await.success();
    assert_eq!(target.concurrency_limit(), 2);
    target.acquire().await.record(Outcome::Rejected);
    assert_eq!(target.concurrency_limit(), 3);
    for _ in 0..3 {
        target.acquire().await.success();
    }
    assert_eq!(target.concurrency_limit(), 4);

    // Neutral outcomes change nothing.
    target.acquire().await.record(Outcome::Failed);
    drop(target.acquire().await);
    assert_eq!(target.concurrency_limit(), 4);

    // Growth stops at max.
    for _ in 0..1000 {
        target.acquire().await.success();
    }
    assert_eq!(target.concurrency_limit(), 16);
}

#[tokio::test(start_paused = true)]
async fn token_bucket_spaces_requests() {
    let target = Target::new(
        "t",
        TargetLimits {
            rate_per_sec: Some(10.0),
            burst: 2,
            ..TargetLimits::default()
        },
    );
    let start = tokio::time::Instant::now();
    for _ in 0..12 {
        target.acquire().await.success();
    }
    // Two from the burst, then ten at 10/s: the virtual clock moved ~1 s.
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(990), "{elapsed:?}");
    assert!(elapsed <= Duration::from_millis(1100), "{elapsed:?}");
}

#[tokio::test(start_paused = true)]
async fn rate_limit_pauses_every_caller() {
    let target = Target::new("t", limits(8, 1));
    target.on_rate_limited(Some(Duration::from_secs(5)));
    assert!(target.paused_for().is_some());

    let started = tokio::time::Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let target = target.clone();
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            target.acquire().await.success();
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::Instant::now()
        }));
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 0);
    for task in tasks {
        let finished = task.await.unwrap();
        assert!(finished.duration_since(started) >= Duration::from_secs(5));
    }
    assert!(target.paused_for().is_none());
}

/// After a 429 with `Retry-After: 2`, callers are paced at one request per
/// two seconds (no burst), and the rate creeps back up with successes.
#[tokio::test(start_paused = true)]
async fn a_429_teaches_the_target_its_rate() {
    let target = Target::new("t", limits(8, 1));
    assert_eq!(target.learned_rate(), None);
    target.on_rate_limited(Some(Duration::from_secs(2)));
    assert_eq!(target.learned_rate(), Some(0.5));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            target.acquire().await.success();
            tokio::time::Instant::now()
        }));
    }
    let mut times: Vec<Duration> = Vec::new();
    for task in tasks {
        times.push(task.await.unwrap().duration_since(start));
    }
    times.sort();
    // The pause (2 s), then one token every ~2 s: the fifth starts ≥ 9.9 s
    // in on the virtual clock, not all five at 2 s.
    assert!(times[0] >= Duration::from_secs(2), "{times:?}");
    assert!(times[4] >= Duration::from_millis(9_900), "{times:?}");
    let learned = target.learned_rate().unwrap();
    assert!(learned > 0.5 && learned < 0.6, "{learned}");
    // A second 429 never raises the learned rate.
    target.on_rate_limited(Some(Duration::from_millis(100)));
    assert!(target.learned_rate().unwrap() <= learned);
}

#[tokio::test(start_paused = true)]
async fn shorter_pause_does_not_cut_a_longer_one_and_pauses_are_capped() {
    let target = Target::new("t", limits(8, 1));
    target.on_rate_limited(Some(Duration::from_secs(10)));
    target.on_rate_limited(Some(Duration::from_secs(1)));
    assert!(target.paused_for().unwrap() > Duration::from_secs(9));
    target.on_rate_limited(Some(Duration::from_secs(100_000)));
    assert!(target.paused_for().unwrap() <= MAX_RATE_LIMIT_PAUSE);
}

#[tokio::test(start_paused = true)]
async fn acquire_within_hands_long_pauses_back_to_the_engine() {
    let target = Target::new("kashflow:main", limits(8, 1));
    target.on_rate_limited(Some(Duration::from_secs(60)));
    let failure = target
        .acquire_within(Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(failure.class, ErrorClass::RateLimited);
    assert!(failure.retry_after.unwrap() > Duration::from_secs(55));

    // A pause shorter than the bound is waited out.
    let target = Target::new("t", limits(8, 1));
    target.on_rate_limited(Some(Duration::from_secs(2)));
    let permit = target.acquire_within(Duration::from_secs(5)).await.unwrap();
    permit.success();
}

proptest! {
    #[test]
    fn aimd_limit_stays_within_bounds(
        min in 1usize..8,
        extra in 0usize..32,
        outcomes in proptest::collection::vec(0u8..4, 0..300),
    ) {
        let max = min + extra;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let target = Target::new("p", limits(max, min));
            for o in &outcomes {
                let outcome = match o {
                    0 => Outcome::Success,
                    1 => Outcome::Rejected,
                    2 => Outcome::Overloaded,
                    _ => Outcome::Failed,
                };
                target.acquire().await.record(outcome);
                let limit = target.concurrency_limit();
                assert!(limit >= min && limit <= max, "{limit} not in [{min}, {max}]");
            }
            assert_eq!(target.in_flight(), 0);
        });
    }
}

/// Found by `bench memory`: a backlog drained against a 600/min limit at
/// about 130/min. `Retry-After` is whole seconds, so every 429 taught one
/// request per second, whatever the target had just accepted. Against a
/// token bucket of 600/min (burst 100, `Retry-After` rounded up like the
/// sandbox's), one minute of virtual time must now deliver most of the
/// limit, with few 429s.
#[tokio::test(start_paused = true)]
async fn a_rate_limited_target_is_paced_near_its_limit_not_at_one_per_retry_after() {
    let target = Target::new("t", limits(16, 1));
    let (per_second, capacity) = (10.0_f64, 100.0_f64);
    let mut tokens = capacity;
    let mut refilled = tokio::time::Instant::now();
    let start = refilled;
    let (mut accepted, mut refused) = (0u32, 0u32);
    while start.elapsed() < Duration::from_secs(120) {
        let permit = target.acquire().await;
        let now = tokio::time::Instant::now();
        tokens = (tokens + now.duration_since(refilled).as_secs_f64() * per_second).min(capacity);
        refilled = now;
        if tokens >= 1.0 {
            tokens -= 1.0;
            permit.success();
            // The second minute only: the first holds the burst.
            if start.elapsed() >= Duration::from_secs(60) {
                accepted += 1;
            }
        } else {
            let wait = ((1.0 - tokens) / per_second).ceil().max(1.0);
            target.on_rate_limited(Some(Duration::from_secs_f64(wait)));
            permit.overloaded();
            refused += 1;
        }
    }
    assert!(
        accepted >= 420,
        "{accepted} accepted in the second minute against a limit of 600/min ({refused} refused, learned {:?}/s)",
        target.learned_rate()
    );
    assert!(refused <= 60, "{refused} refused in two minutes");
}

/// Lets spawned tasks run; returns how many of `tasks` have finished.
async fn finished(tasks: &[tokio::task::JoinHandle<Permit>]) -> usize {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    tasks.iter().filter(|t| t.is_finished()).count()
}

/// A target that fails every request (down, refusing at once) is not
/// hammered: after `CIRCUIT_FAILURES` failures in a row its requests wait;
/// then one probe goes while the others wait for its answer; a failed probe
/// doubles the hold, an answer lets everyone through.
#[tokio::test(start_paused = true)]
async fn a_failing_target_opens_its_circuit_and_probes_once_per_hold() {
    let target = Target::new("kashflow:main", limits(8, 1));
    for _ in 0..CIRCUIT_FAILURES - 1 {
        target.acquire().await.record(Outcome::Failed);
    }
    assert!(!target.circuit_open(), "one failure short: still closed");
    target.acquire().await.overloaded();
    assert!(target.circuit_open());

    // A caller that may not wait that long is told so, nothing sent.
    let refused = target
        .acquire_within(Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(refused.class, ErrorClass::Transient);
    assert!(refused.message.contains("circuit open"), "{refused}");
    assert!(refused.retry_after.unwrap() > Duration::from_millis(900));

    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move { target.acquire().await })
        })
        .collect();
    tokio::time::sleep(CIRCUIT_COOLDOWN - Duration::from_millis(10)).await;
    assert_eq!(finished(&waiters).await, 0, "all wait out the hold");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(finished(&waiters).await, 1, "one probe, the others wait");

    // The probe fails: held again, twice as long.
    let (done, waiting): (Vec<_>, Vec<_>) = waiters.into_iter().partition(|t| t.is_finished());
    let probe = done.into_iter().next().unwrap().await.unwrap();
    probe.record(Outcome::Failed);
    tokio::time::sleep(CIRCUIT_COOLDOWN * 2 - Duration::from_millis(10)).await;
    assert_eq!(
        finished(&waiting).await,
        0,
        "held twice as long after a failed probe"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(finished(&waiting).await, 1, "the second probe");

    // It is answered: the circuit closes and the last caller goes at once.
    let (done, waiting): (Vec<_>, Vec<_>) = waiting.into_iter().partition(|t| t.is_finished());
    done.into_iter().next().unwrap().await.unwrap().success();
    assert!(!target.circuit_open());
    assert_eq!(finished(&waiting).await, 1);
}

/// 429s are answers: however many, they pause and pace the target but do
/// not open its circuit. The hold never exceeds the request timeout, and a
/// probe dropped unanswered lets the next caller probe.
#[tokio::test(start_paused = true)]
async fn rate_limits_do_not_open_the_circuit_and_holds_stay_within_the_timeout() {
    let target = Target::new("t", limits(8, 1));
    for _ in 0..CIRCUIT_FAILURES * 3 {
        target.acquire().await.record(Outcome::RateLimited);
    }
    assert!(!target.circuit_open());

    let short = TargetLimits {
        timeout: Duration::from_millis(300),
        ..limits(8, 1)
    };
    let target = Target::new("t", short);
    for _ in 0..CIRCUIT_FAILURES {
        target.acquire().await.record(Outcome::Failed);
    }
    let start = tokio::time::Instant::now();
    let probe = target.acquire().await;
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(300),
        "held for the timeout"
    );
    drop(probe); // unanswered: the next caller probes at once
    let probe = target.acquire().await;
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    probe.record(Outcome::Failed);
    let again = target.acquire().await;
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(600),
        "a failed probe doubles the hold, capped at the timeout"
    );
    again.success();
    assert!(!target.circuit_open());
}
