//! Configuration of a payment gateway connection (Stripe-style API).

use ledgerbridge_core::Secret;
use serde::{Deserialize, Serialize};

use crate::delivery::TargetLimits;

/// How to reach the payment gateway's API, for reading payments.
///
/// ```toml
/// [connections.gateway]
/// base_url = "https://api.stripe.com"
/// api_key = "rk_live_…"      # a restricted, read-only key is enough
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Base URL; the API lives at `{base_url}/v1/...`.
    pub base_url: String,
    /// Secret API key sent as a bearer token.
    pub api_key: Secret,
    /// Request limits of this connection.
    #[serde(default)]
    pub limits: TargetLimits,
}

impl GatewayConfig {
    /// A configuration with default limits.
    pub fn new(base_url: impl Into<String>, api_key: Secret) -> Self {
        GatewayConfig {
            base_url: base_url.into(),
            api_key,
            limits: TargetLimits::default(),
        }
    }
}
