//! Configuration of an OrderCloud connection.

use ledgerbridge_core::Secret;
use serde::{Deserialize, Serialize};

use crate::delivery::TargetLimits;

/// How to reach one OrderCloud marketplace with an API client's
/// client-credentials grant.
///
/// ```toml
/// [connections."ordercloud:uk"]
/// base_url = "https://sandboxapi.ordercloud.io"  # token at /oauth/token, API at /v1
/// client_id = "…"
/// client_secret = "…"
/// scope = "OrderAdmin BuyerUserAdmin ProductAdmin WebhookAdmin"
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderCloudConfig {
    /// The host: the token is fetched from `{base_url}/oauth/token` and the
    /// API lives under `{base_url}/v1`.
    pub base_url: String,
    /// API client id.
    pub client_id: String,
    /// API client secret.
    pub client_secret: Secret,
    /// Space-separated roles to ask for; empty means all assigned roles.
    #[serde(default)]
    pub scope: String,
    /// Request limits of this connection.
    #[serde(default)]
    pub limits: TargetLimits,
}

impl OrderCloudConfig {
    /// A configuration with default limits.
    pub fn new(
        base_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: Secret,
        scope: impl Into<String>,
    ) -> Self {
        OrderCloudConfig {
            base_url: base_url.into(),
            client_id: client_id.into(),
            client_secret,
            scope: scope.into(),
            limits: TargetLimits::default(),
        }
    }
}
