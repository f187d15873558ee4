//! Configuration of an xConnect connection.

use serde::{Deserialize, Serialize};

use crate::delivery::TargetLimits;

/// How to reach one xConnect collection service.
///
/// Real xConnect authenticates clients with a **client certificate**; that
/// is out of scope for now (the local sandbox needs none). Adding it means
/// a `certificate` setting here (PKCS#12 path + password as a `Secret`)
/// and `reqwest::Identity` on the HTTP client.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XConnectConfig {
    /// Base URL of the service; contacts live at `{base_url}/contacts`.
    pub base_url: String,
    /// Request limits of this connection.
    #[serde(default)]
    pub limits: TargetLimits,
}

impl XConnectConfig {
    /// A configuration with default limits.
    pub fn new(base_url: impl Into<String>) -> Self {
        XConnectConfig {
            base_url: base_url.into(),
            limits: TargetLimits::default(),
        }
    }
}
