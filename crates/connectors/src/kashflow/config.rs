//! Configuration of a KashFlow connection.

use std::time::Duration;

use ledgerbridge_core::Secret;
use serde::{Deserialize, Serialize};

use crate::delivery::TargetLimits;

/// How to reach and log in to one KashFlow account.
///
/// ```toml
/// [connections."kashflow:main"]
/// base_url = "https://api.kashflow.com/v2"
/// username = "accounts@example.com"
/// password = "…"            # better from the environment
/// memorable_word = "…"
/// session_renew_after = "45m"
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KashFlowConfig {
    /// API base including the version, e.g. `https://api.kashflow.com/v2`.
    pub base_url: String,
    /// Login user name.
    pub username: String,
    /// Login password.
    pub password: Secret,
    /// The memorable word; KashFlow asks for three of its characters.
    pub memorable_word: Secret,
    /// Request limits of this connection.
    #[serde(default)]
    pub limits: TargetLimits,
    /// Log in again after this long, before KashFlow's 60-minute idle
    /// expiry can bite.
    #[serde(
        default = "default_session_renew_after",
        with = "crate::serde_util::duration"
    )]
    pub session_renew_after: Duration,
}

fn default_session_renew_after() -> Duration {
    Duration::from_secs(45 * 60)
}

impl KashFlowConfig {
    /// A configuration with default limits and session lifetime.
    pub fn new(
        base_url: impl Into<String>,
        username: impl Into<String>,
        password: Secret,
        memorable_word: Secret,
    ) -> Self {
        KashFlowConfig {
            base_url: base_url.into(),
            username: username.into(),
            password,
            memorable_word,
            limits: TargetLimits::default(),
            session_renew_after: default_session_renew_after(),
        }
    }
}
