//! `[server]` and `[sources]` settings.

use ledgerbridge_core::Secret;
use serde::{Deserialize, Serialize};

/// `[server]`: where the HTTP listener binds and what it accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Listen address, e.g. `127.0.0.1:8080`; port 0 picks a free one.
    pub listen: String,
    /// Largest webhook body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// A webhook body must arrive within this many seconds of its headers;
    /// a slower one gets 408, so trickling senders cannot hold connections.
    pub body_timeout_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".to_owned(),
            max_body_bytes: 1024 * 1024,
            body_timeout_secs: 10,
        }
    }
}

/// `[sources]`: the webhook senders we accept, by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// OrderCloud webhook sources: `POST /webhooks/ordercloud/{name}`.
    pub ordercloud: std::collections::BTreeMap<String, OrderCloudSource>,
    /// Payment-gateway webhook sources: `POST /webhooks/gateway/{name}`.
    pub gateway: std::collections::BTreeMap<String, GatewaySource>,
}

/// One OrderCloud webhook source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderCloudSource {
    /// The webhook's `HashKey`; every delivery must carry a valid `X-oc-hash`.
    pub hash_key: Secret,
}

/// One Stripe-style gateway webhook source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySource {
    /// The endpoint's signing secret (`whsec_…`).
    pub signing_secret: Secret,
    /// Largest accepted age of the signed timestamp, against replays.
    #[serde(default = "default_tolerance")]
    pub tolerance_secs: u64,
}

fn default_tolerance() -> u64 {
    300
}
