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

#[cfg(test)]
mod tests;
