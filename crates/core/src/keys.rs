//! Deterministic business keys for effectively-once external writes.
//!
//! A business key names one external object we intend to create, derived
//! only from the source data (never from time or randomness), so that a
//! retry of the same work computes the same key and finds the earlier
//! attempt in the ledger.

use serde::{Deserialize, Serialize};

/// `system/kind/key`, e.g. `kashflow:main/invoice/order:SO-1001`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BusinessKey {
    /// The connection the object lives in, e.g. `kashflow:main`.
    pub connection: String,
    /// The kind of object, e.g. `invoice`, `customer`, `payment`.
    pub kind: String,
    /// The deterministic key inside that kind, e.g. `order:SO-1001`.
    pub key: String,
}

impl BusinessKey {
    /// Builds a key from its three parts.
    pub fn new(
        connection: impl Into<String>,
        kind: impl Into<String>,
        key: impl Into<String>,
    ) -> Self {
        BusinessKey {
            connection: connection.into(),
            kind: kind.into(),
            key: key.into(),
        }
    }
}

impl std::fmt::Display for BusinessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.connection, self.kind, self.key)
    }
}
