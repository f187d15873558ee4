//! One target's shared limiter: token bucket, adaptive concurrency (AIMD),
//! a global pause after a 429, a learned request rate, and a circuit
//! breaker.
//!
//! The circuit breaker spares a target that is down: after
//! [`CIRCUIT_FAILURES`] failed requests in a row (5xx, timeouts, refused
//! connections; a 429 is an answer, not a failure) the circuit opens and
//! every caller waits [`CIRCUIT_COOLDOWN`]; then one request goes as a
//! probe while the others wait for its answer. An answer closes the
//! circuit; a failure opens it again for twice as long, up to
//! [`MAX_CIRCUIT_COOLDOWN`] (never longer than the connection's request
//! timeout, so callers of [`Target::acquire_within`] wait rather than cycle
//! through their backlog). Without it a target that refuses at once got
//! about 2,400 requests a second from a backlog.
//!
//! The learned rate is what keeps a rate-limited target from a 429 storm:
//! after a 429, requests are paced evenly (no burst) at a rate learned from
//! it, and the rate creeps up by [`LEARNED_RATE_GROWTH`] per success until
//! the next 429 pulls it back. The rate a 429 teaches is
//! [`LEARNED_RATE_SHARE`] of what the target accepted over the last
//! [`OBSERVED_SECS`] seconds — it did accept that — and `1/r` for a
//! `Retry-After: r` only when too little was accepted to tell (a first
//! contact). `Retry-After` comes in whole seconds, so `1/r` alone taught
//! every target one request per second: a 600/min limit drained at about
//! 130/min, each 429 pulling the rate back to 60/min. Against a token bucket
//! of N per minute the rate now settles under N per minute with a 429 every
//! few dozen requests.
//!
//! A [`Target`] is created once per connection and cloned into every worker
//! of the process, so all callers of one target share its budget. Nothing
//! here holds a lock across an `.await`: the state sits behind a short
//! `std::sync::Mutex`, and waiters sleep or wait on a [`Notify`].

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ledgerbridge_core::{ErrorClass, Failure};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::config::TargetLimits;

/// Pause applied by [`Target::on_rate_limited`] when the target gave no
/// `Retry-After`.
pub const DEFAULT_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(1);

/// Longest pause one `Retry-After` can impose; longer requests are capped
/// (the engine's own backoff takes over from there).
pub const MAX_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(300);

/// Growth of the learned rate per successful request (0.5 %).
pub const LEARNED_RATE_GROWTH: f64 = 1.005;

/// Share of the recently accepted rate that a 429 teaches.
pub const LEARNED_RATE_SHARE: f64 = 0.9;

/// Seconds of accepted requests a 429 looks back on.
pub const OBSERVED_SECS: usize = 10;

/// Fewest accepted requests in [`OBSERVED_SECS`] that say a rate; with
/// fewer, a 429 teaches `1/Retry-After`.
const MIN_OBSERVED: u32 = 5;

/// A learned rate above this (requests/s) is forgotten: the target has
/// stopped limiting us.
const LEARNED_RATE_CEILING: f64 = 10_000.0;

/// Failed requests in a row that open a target's circuit.
pub const CIRCUIT_FAILURES: u32 = 10;

/// How long an opened circuit holds requests before its first probe.
pub const CIRCUIT_COOLDOWN: Duration = Duration::from_secs(1);

/// Longest hold of an open circuit (each failed probe doubles the hold).
pub const MAX_CIRCUIT_COOLDOWN: Duration = Duration::from_secs(30);

/// How a request that held a [`Permit`] ended, for the limiter and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// 2xx: counts towards growing the concurrency limit.
    Success,
    /// An ordinary 4xx answer (validation, not found, conflict, auth): the
    /// target coped fine, so it counts like a success for the limit.
    Rejected,
    /// 5xx or a timeout: the target is struggling; halve the limit. A
    /// failure for the circuit breaker.
    Overloaded,
    /// 429: the target is limiting us; halve the limit. An answer, not a
    /// failure, for the circuit breaker.
    RateLimited,
    /// A failure that says nothing about load (connection refused, bad
    /// body): the limit is left alone. A failure for the circuit breaker.
    Failed,
}

impl Outcome {
    /// The `outcome` label of `lb_target_requests_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Rejected => "rejected",
            Outcome::Overloaded => "overloaded",
            Outcome::RateLimited => "rate_limited",
            Outcome::Failed => "failed",
        }
    }
}

/// The shared delivery limiter of one target (one connection). Cheap to
/// clone: clones share all state.
#[derive(Clone)]
pub struct Target {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("Target")
            .field("name", &self.inner.name)
            .field("limit", &state.limit)
            .field("in_flight", &state.in_flight)
            .field("paused_until", &state.paused_until)
            .field("circuit", &state.circuit)
            .finish()
    }
}

struct Inner {
    name: String,
    limits: TargetLimits,
    state: Mutex<State>,
    /// Woken whenever a slot is freed, the limit grows or a pause changes.
    changed: Notify,
}

struct State {
    /// Current adaptive concurrency limit, within `[min, max]`.
    limit: usize,
    in_flight: usize,
    /// Successes since the limit last changed.
    successes: usize,
    /// Bumped on every decrease, so that a burst of failures of requests
    /// sent under the same limit halves it only once.
    epoch: u64,
    tokens: f64,
    refilled_at: Instant,
    paused_until: Option<Instant>,
    /// Requests/s learned from 429s, if the target has limited us.
    learned_rate: Option<f64>,
    /// Requests the target accepted, per second, over the last
    /// [`OBSERVED_SECS`] seconds.
    accepted: Accepted,
    /// Requests that failed in a row (see [`Outcome`]).
    failures: u32,
    circuit: Circuit,
}

/// The circuit breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Circuit {
    /// Requests go.
    Closed,
    /// Requests wait until `until`; then one goes as a probe.
    Open { until: Instant, cooldown: Duration },
    /// The probe is on its way; the others wait for its answer.
    Probing { cooldown: Duration },
}

/// Accepted requests per second over a sliding window of
/// [`OBSERVED_SECS`] one-second slots (constant memory at any rate).
struct Accepted {
    started: Instant,
    slots: [u32; OBSERVED_SECS],
    /// The second (since `started`) the newest slot counts.
    current: u64,
}

impl Accepted {
    fn new(now: Instant) -> Self {
        Accepted {
            started: now,
            slots: [0; OBSERVED_SECS],
            current: 0,
        }
    }

    /// Moves the window to `now`, clearing the seconds it passed.
    fn advance(&mut self, now: Instant) -> usize {
        let second = now.saturating_duration_since(self.started).as_secs();
        if second > self.current {
            let passed = (second - self.current).min(OBSERVED_SECS as u64);
            for back in 0..passed {
                self.slots[((second - back) % OBSERVED_SECS as u64) as usize] = 0;
            }
            self.current = second;
        }
        (self.current % OBSERVED_SECS as u64) as usize
    }

    fn record(&mut self, now: Instant) {
        let slot = self.advance(now);
        self.slots[slot] = self.slots[slot].saturating_add(1);
    }

    /// Requests/s accepted over the window, if enough to tell.
    fn rate(&mut self, now: Instant) -> Option<f64> {
        self.advance(now);
        let total: u32 = self.slots.iter().sum();
        (total >= MIN_OBSERVED).then(|| f64::from(total) / OBSERVED_SECS as f64)
    }
}

enum Step {
    Go {
        epoch: u64,
        probe: bool,
    },
    Paused(Instant),
    /// The circuit is open until then.
    Open(Instant),
    /// The circuit's probe is on its way.
    Probing,
    WaitToken(Duration),
    WaitSlot,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves consistent counters (every
        // update is a single assignment), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish_circuit(&self, open: bool) {
        metrics::gauge!("lb_target_circuit_open", "target" => self.name.clone()).set(if open {
            1.0
        } else {
            0.0
        });
    }

    fn publish_limit(&self, limit: usize) {
        metrics::gauge!("lb_target_concurrency_limit", "target" => self.name.clone())
            .set(limit as f64);
    }

    /// The longest hold of this target's open circuit.
    fn max_cooldown(&self) -> Duration {
        MAX_CIRCUIT_COOLDOWN.min(self.limits.timeout.max(Duration::from_millis(1)))
    }

    fn try_take(&self, now: Instant) -> Step {
        let mut state = self.lock();
        let probe = match state.circuit {
            Circuit::Closed => None,
            Circuit::Open { until, .. } if until > now => return Step::Open(until),
            Circuit::Open { cooldown, .. } => Some(cooldown),
            Circuit::Probing { .. } => return Step::Probing,
        };
        if let Some(until) = state.paused_until {
            if until > now {
                return Step::Paused(until);
            }
            state.paused_until = None;
        }
        if state.in_flight >= state.limit {
            return Step::WaitSlot;
        }
        let rate = match (self.limits.rate_per_sec, state.learned_rate) {
            (Some(configured), Some(learned)) => Some(configured.min(learned)),
            (configured, learned) => configured.or(learned),
        };
        if let Some(rate) = rate {
            // Once a target has limited us, no bursts: pace evenly.
            let burst = if state.learned_rate.is_some() {
                1.0
            } else {
                f64::from(self.limits.burst)
            };
            let elapsed = now
                .saturating_duration_since(state.refilled_at)
                .as_secs_f64();
            state.tokens = (state.tokens + elapsed * rate).min(burst);
            state.refilled_at = now;
            if state.tokens < 1.0 {
                let missing = 1.0 - state.tokens;
                let wait = Duration::try_from_secs_f64(missing / rate)
                    .unwrap_or(Duration::from_millis(1))
                    .max(Duration::from_millis(1));
                return Step::WaitToken(wait);
            }
            state.tokens -= 1.0;
        }
        state.in_flight += 1;
        if let Some(cooldown) = probe {
            state.circuit = Circuit::Probing { cooldown };
        }
        Step::Go {
            epoch: state.epoch,
            probe: probe.is_some(),
        }
    }

    /// The circuit breaker's part of releasing a permit: the circuit
    /// before and after, if it changed.
    fn trip(
        &self,
        state: &mut State,
        probe: bool,
        outcome: Option<Outcome>,
    ) -> Option<(Circuit, Circuit)> {
        let before = state.circuit;
        match outcome {
            Some(Outcome::Success | Outcome::Rejected | Outcome::RateLimited) => {
                state.failures = 0;
                state.circuit = Circuit::Closed;
            }
            Some(Outcome::Overloaded | Outcome::Failed) => {
                state.failures = state.failures.saturating_add(1);
                let now = Instant::now();
                match state.circuit {
                    Circuit::Probing { cooldown } if probe => {
                        let cooldown = cooldown.saturating_mul(2).min(self.max_cooldown());
                        state.circuit = Circuit::Open {
                            until: now + cooldown,
                            cooldown,
                        };
                    }
                    Circuit::Closed if state.failures >= CIRCUIT_FAILURES => {
                        let cooldown = CIRCUIT_COOLDOWN.min(self.max_cooldown());
                        state.circuit = Circuit::Open {
                            until: now + cooldown,
                            cooldown,
                        };
                    }
                    _ => {}
                }
            }
            // The probe was dropped unanswered: the next caller probes.
            None => {
                if let (true, Circuit::Probing { cooldown }) = (probe, state.circuit) {
                    state.circuit = Circuit::Open {
                        until: Instant::now(),
                        cooldown,
                    };
                }
            }
        }
        (state.circuit != before).then_some((before, state.circuit))
    }

    fn release(&self, epoch: u64, probe: bool, outcome: Option<Outcome>) {
        let (new_limit, circuit, failures) = {
            let mut state = self.lock();
            let circuit = self.trip(&mut state, probe, outcome);
            state.in_flight = state.in_flight.saturating_sub(1);
            let before = state.limit;
            match outcome {
                Some(Outcome::Success | Outcome::Rejected) if epoch == state.epoch => {
                    state.accepted.record(Instant::now());
                    if let Some(rate) = state.learned_rate {
                        let grown = rate * LEARNED_RATE_GROWTH;
                        state.learned_rate = (grown < LEARNED_RATE_CEILING).then_some(grown);
                    }
                    state.successes += 1;
                    if state.successes >= state.limit {
                        state.successes = 0;
                        state.limit = (state.limit + 1).min(self.limits.max_concurrency);
                    }
                }
                Some(Outcome::Overloaded | Outcome::RateLimited) if epoch == state.epoch => {
                    state.successes = 0;
                    state.epoch += 1;
                    state.limit = (state.limit / 2).max(self.limits.min_concurrency);
                }
                _ => {}
            }
            (
                (state.limit != before).then_some(state.limit),
                circuit,
                state.failures,
            )
        };
        if let Some(limit) = new_limit {
            tracing::debug!(target_name = %self.name, limit, "concurrency limit changed");
            self.publish_limit(limit);
        }
        match (circuit, outcome) {
            (Some((Circuit::Closed, Circuit::Open { cooldown, .. })), _) => {
                tracing::warn!(
                    target_name = %self.name,
                    failures,
                    hold_ms = cooldown.as_millis() as u64,
                    "target failing: circuit open; its requests wait, then one probe goes"
                );
                self.publish_circuit(true);
            }
            (Some((Circuit::Probing { .. }, Circuit::Open { cooldown, .. })), Some(_)) => {
                tracing::warn!(
                    target_name = %self.name,
                    failures,
                    hold_ms = cooldown.as_millis() as u64,
                    "the probe of a failing target failed; holding its requests longer"
                );
            }
            (Some((_, Circuit::Closed)), _) => {
                tracing::info!(target_name = %self.name, "target answers again: circuit closed");
                self.publish_circuit(false);
            }
            _ => {}
        }
        let label = outcome.map_or("cancelled", Outcome::as_str);
        metrics::counter!(
            "lb_target_requests_total",
            "target" => self.name.clone(),
            "outcome" => label
        )
        .increment(1);
        self.changed.notify_waiters();
    }
}

impl Target {
    /// A limiter for the target `name` (the connection name, used as the
    /// `target` metrics label). `limits` should be validated first
    /// ([`TargetLimits::validate`]); out-of-range values are clamped.
    pub fn new(name: impl Into<String>, limits: TargetLimits) -> Self {
        let mut limits = limits;
        limits.min_concurrency = limits.min_concurrency.max(1);
        limits.max_concurrency = limits.max_concurrency.max(limits.min_concurrency);
        limits.burst = limits.burst.max(1);
        let inner = Inner {
            name: name.into(),
            state: Mutex::new(State {
                limit: limits.max_concurrency,
                in_flight: 0,
                successes: 0,
                epoch: 0,
                tokens: f64::from(limits.burst),
                refilled_at: Instant::now(),
                paused_until: None,
                learned_rate: None,
                accepted: Accepted::new(Instant::now()),
                failures: 0,
                circuit: Circuit::Closed,
            }),
            limits,
            changed: Notify::new(),
        };
        inner.publish_limit(inner.limits.max_concurrency);
        Target {
            inner: Arc::new(inner),
        }
    }

    /// The target's name (metrics label).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The limits this target was built with.
    pub fn limits(&self) -> &TargetLimits {
        &self.inner.limits
    }

    /// The current adaptive concurrency limit.
    pub fn concurrency_limit(&self) -> usize {
        self.inner.lock().limit
    }

    /// How many permits are held right now.
    pub fn in_flight(&self) -> usize {
        self.inner.lock().in_flight
    }

    /// The request rate (per second) learned from the target's 429s, if any.
    pub fn learned_rate(&self) -> Option<f64> {
        self.inner.lock().learned_rate
    }

    /// Whether the circuit breaker holds this target's requests (open, or
    /// waiting for its probe's answer).
    pub fn circuit_open(&self) -> bool {
        self.inner.lock().circuit != Circuit::Closed
    }

    /// How long the global pause still lasts, if one is active.
    pub fn paused_for(&self) -> Option<Duration> {
        let until = self.inner.lock().paused_until?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Waits for the pause to end, a token and a concurrency slot, however
    /// long that takes. Dropping the returned permit frees the slot.
    pub async fn acquire(&self) -> Permit {
        loop {
            if let Ok(permit) = self.acquire_inner(None).await {
                return permit;
            }
        }
    }

    /// Like [`Target::acquire`], but if the target is paused for longer than
    /// `max_pause` returns at once with a [`ErrorClass::RateLimited`] failure
    /// carrying the remaining pause, so the engine can requeue the work
    /// instead of holding a worker.
    pub async fn acquire_within(&self, max_pause: Duration) -> Result<Permit, Failure> {
        self.acquire_inner(Some(max_pause)).await
    }

    async fn acquire_inner(&self, max_pause: Option<Duration>) -> Result<Permit, Failure> {
        let mut waited = false;
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            match self.inner.try_take(now) {
                Step::Go { epoch, probe } => {
                    return Ok(Permit {
                        inner: Arc::clone(&self.inner),
                        epoch,
                        probe,
                        outcome: None,
                    });
                }
                Step::Open(until) => {
                    let left = until.saturating_duration_since(now);
                    if max_pause.is_some_and(|max| left > max) {
                        return Err(Failure::transient(format!(
                            "{} is failing (circuit open); not sent, next try in {} ms",
                            self.inner.name,
                            left.as_millis()
                        ))
                        .with_retry_after(Some(left)));
                    }
                    self.count_wait(&mut waited);
                    tokio::time::sleep_until(until).await;
                }
                Step::Probing => notified.await,
                Step::Paused(until) => {
                    let left = until.saturating_duration_since(now);
                    if max_pause.is_some_and(|max| left > max) {
                        return Err(Failure::new(
                            ErrorClass::RateLimited,
                            format!(
                                "{} asked us to slow down; paused for another {} ms",
                                self.inner.name,
                                left.as_millis()
                            ),
                        )
                        .with_retry_after(Some(left)));
                    }
                    self.count_wait(&mut waited);
                    tokio::time::sleep_until(until).await;
                }
                Step::WaitToken(wait) => {
                    self.count_wait(&mut waited);
                    tokio::time::sleep(wait).await;
                }
                Step::WaitSlot => notified.await,
            }
        }
    }

    fn count_wait(&self, waited: &mut bool) {
        if !*waited {
            *waited = true;
            metrics::counter!("lb_rate_limit_waits_total", "target" => self.inner.name.clone())
                .increment(1);
        }
    }

    /// The target answered 429 (or otherwise asked us to back off): every
    /// later [`Target::acquire`] of every caller waits until the pause ends.
    /// Without `retry_after` the pause is [`DEFAULT_RATE_LIMIT_PAUSE`]; it is
    /// capped at [`MAX_RATE_LIMIT_PAUSE`]. A shorter pause never cuts a
    /// longer one already in force. From then on requests are paced at the
    /// learned rate (see the module docs), never raised by a 429.
    pub fn on_rate_limited(&self, retry_after: Option<Duration>) {
        let pause = retry_after
            .unwrap_or(DEFAULT_RATE_LIMIT_PAUSE)
            .min(MAX_RATE_LIMIT_PAUSE);
        let until = Instant::now() + pause;
        let learned = {
            let mut state = self.inner.lock();
            if state.paused_until.is_none_or(|current| current < until) {
                state.paused_until = Some(until);
            }
            // What the target accepted lately, a little less; "one request
            // per `pause`" only when it accepted too little to tell. Never
            // faster than already learned.
            let now = Instant::now();
            let taught = match state.accepted.rate(now) {
                Some(accepted) => accepted * LEARNED_RATE_SHARE,
                None => 1.0 / pause.as_secs_f64().max(0.001),
            };
            let learned = state.learned_rate.map_or(taught, |r| r.min(taught));
            state.learned_rate = Some(learned);
            // The bucket restarts empty at the end of the pause.
            state.tokens = 0.0;
            state.refilled_at = state.paused_until.unwrap_or(until);
            learned
        };
        tracing::info!(
            target_name = %self.inner.name,
            pause_ms = pause.as_millis() as u64,
            learned_rate_per_min = learned * 60.0,
            "target rate limited us; pausing, then pacing"
        );
        self.inner.changed.notify_waiters();
    }
}

/// A concurrency slot on a [`Target`]. Dropping it frees the slot; record
/// how the request ended first with [`Permit::success`],
/// [`Permit::overloaded`] or [`Permit::record`].
#[must_use = "a permit frees its slot when dropped"]
pub struct Permit {
    inner: Arc<Inner>,
    epoch: u64,
    /// The probe of a half-open circuit.
    probe: bool,
    outcome: Option<Outcome>,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("target", &self.inner.name)
            .field("outcome", &self.outcome)
            .finish()
    }
}

impl Permit {
    /// The request succeeded (2xx).
    pub fn success(self) {
        self.record(Outcome::Success);
    }

    /// The target is overloaded (5xx, timeout): halve the limit.
    pub fn overloaded(self) {
        self.record(Outcome::Overloaded);
    }

    /// Records how the request ended and frees the slot.
    pub fn record(mut self, outcome: Outcome) {
        self.outcome = Some(outcome);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.inner.release(self.epoch, self.probe, self.outcome);
    }
}
