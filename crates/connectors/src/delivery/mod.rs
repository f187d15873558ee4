//! The delivery stack every connector's requests go through.
//!
//! - [`Target`]: one per connection, shared by every worker of the process:
//!   token bucket ([`TargetLimits::rate_per_sec`]), adaptive concurrency
//!   (AIMD between [`TargetLimits::min_concurrency`] and
//!   [`TargetLimits::max_concurrency`]) and a global pause after a 429.
//! - [`classify`] / [`classify_transport_error`]: one table that turns a
//!   target's answer into a [`ledgerbridge_core::Failure`].
//!
//! Connectors do not retry durably: a failed call returns its classified
//! failure and the engine requeues the run with backoff. Within one call a
//! connector only renews credentials once on a 401 and waits for the
//! target's limiter.
//!
//! Metrics: `lb_target_requests_total{target,outcome}`,
//! `lb_rate_limit_waits_total{target}`, `lb_target_concurrency_limit{target}`.

mod classify;
mod config;
mod limiter;

pub use classify::{classify, classify_transport_error, parse_retry_after, parse_retry_after_at};
pub use config::TargetLimits;
pub use limiter::{Outcome, Permit, Target, DEFAULT_RATE_LIMIT_PAUSE, MAX_RATE_LIMIT_PAUSE};

tokio::task_local! {
    static WRITE_DEADLINE: tokio::time::Instant;
}

/// Runs `work` with every request it sends bounded by `deadline`: a
/// request that has not got its slot by then is not sent at all (a certain,
/// transient failure), and one that is sent is answered or abandoned by
/// then. So whatever `work` writes can no longer reach its target after
/// `deadline`, save for the time the target itself goes on working on a
/// request it received.
pub async fn within_deadline<F: std::future::Future>(
    deadline: tokio::time::Instant,
    work: F,
) -> F::Output {
    WRITE_DEADLINE.scope(deadline, work).await
}

/// The deadline set by [`within_deadline`] around the current task, if any.
pub(crate) fn write_deadline() -> Option<tokio::time::Instant> {
    WRITE_DEADLINE.try_with(|deadline| *deadline).ok()
}

#[cfg(test)]
mod tests;
