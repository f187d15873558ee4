//! Typed clients for the systems Ledgerbridge talks to (KashFlow REST v2,
//! Sitecore OrderCloud v1, xConnect) over one delivery stack.
//!
//! Every operation returns `Result<T, Failure>`: connectors classify
//! failures ([`delivery::classify`]) and leave durable retries to the
//! engine. Within one call they only renew credentials once on a 401 and
//! respect the target's shared limiter ([`delivery::Target`]).

pub mod delivery;
mod auth;
pub mod error;
pub mod kashflow;
pub mod ordercloud;
pub mod xconnect;
#[macro_use]
mod serde_util;
mod transport;

pub use error::ConfigError;
