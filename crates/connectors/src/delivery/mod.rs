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
pub use limiter::{
    Outcome, Permit, Target, CIRCUIT_COOLDOWN, CIRCUIT_FAILURES, DEFAULT_RATE_LIMIT_PAUSE,
    MAX_CIRCUIT_COOLDOWN, MAX_RATE_LIMIT_PAUSE,
};

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use ledgerbridge_core::Failure;

/// Asked by the transport just before it sends a write (any method but
/// GET, HEAD, OPTIONS) inside [`with_send_gate`], once the request has its
/// slot: an `Err` means the request must not be sent, and is returned as
/// the request's (certain, nothing-sent) failure.
///
/// The engine uses it to record when a create is really sent, so that the
/// time an earlier attempt may still be in flight counts from its sending,
/// not from the start of a long wait for a paced turn.
pub trait SendGate: Send + Sync {
    fn before_write(&self) -> BoxFuture<'_, Result<(), Failure>>;
}

tokio::task_local! {
    static SEND_GATE: Arc<dyn SendGate>;
}

/// Runs `work` with `gate` asked before each write it sends.
pub async fn with_send_gate<F: Future>(gate: Arc<dyn SendGate>, work: F) -> F::Output {
    SEND_GATE.scope(gate, work).await
}

/// Asks the gate of the current task, if any, whether a write may be
/// sent now. The transport does this for every write; a client that sends
/// by other means must do the same.
pub async fn before_write() -> Result<(), Failure> {
    match SEND_GATE.try_with(Arc::clone) {
        Ok(gate) => gate.before_write().await,
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests;
