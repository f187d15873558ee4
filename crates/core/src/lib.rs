//! Ledgerbridge's shared vocabulary: error classes, business keys, secrets
//! and the canonical types every other crate speaks. No I/O lives here.

pub mod error;
pub mod flow;
pub mod fuzz;
pub mod keys;
pub mod secret;

pub use error::{ErrorClass, Failure};
pub use keys::BusinessKey;
pub use secret::Secret;
