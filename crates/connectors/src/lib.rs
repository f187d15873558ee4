//! Typed clients for the systems Ledgerbridge talks to (KashFlow REST v2,
//! Sitecore OrderCloud v1, xConnect, the payment gateway) over one delivery stack.
//!
//! Every operation returns `Result<T, Failure>`: connectors classify
//! failures ([`delivery::classify`]) and leave durable retries to the
//! engine. Within one call they only renew credentials once on a 401 and
//! respect the target's shared limiter ([`delivery::Target`]).
//!
//! Build **one client per connection** and clone it into every worker:
//! clones share the session or token, the connection pool and the limiter,
//! so the whole process keeps to the connection's limits.
//!
//! | Module | Target |
//! |---|---|
//! | [`kashflow`] | KashFlow REST v2: customers, invoices, payments, reference data |
//! | [`ordercloud`] | OrderCloud v1: orders, line items, users, products, webhooks |
//! | [`xconnect`] | xConnect: contacts by identifier |
//! | [`gateway`] | a Stripe-style payment gateway: payment intents and refunds (read) |
//! | [`delivery`] | limiter and failure classification shared by all |

mod auth;
pub mod delivery;
pub mod error;
pub mod gateway;
pub mod kashflow;
pub mod ordercloud;
mod serde_util;
mod transport;
pub mod xconnect;

pub use delivery::{Target, TargetLimits};
pub use error::ConfigError;
