//! Per-target delivery limits, as written in a connection's configuration.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// How hard Ledgerbridge may push one target (one connection).
///
/// ```toml
/// [connections."kashflow:main".limits]
/// rate_per_sec = 5.0      # token bucket; omit for no rate limit
/// burst = 10              # bucket size
/// max_concurrency = 8     # adaptive limit ceiling (AIMD)
/// min_concurrency = 1     # adaptive limit floor
/// timeout = "30s"         # whole request, connect to last body byte
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetLimits {
    /// Sustained requests per second; `None` means no rate limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_per_sec: Option<f64>,
    /// Token-bucket size: how many requests may go at once after a quiet
    /// period. Ignored without `rate_per_sec`.
    pub burst: u32,
    /// Ceiling of the adaptive concurrency limit (and its starting value).
    pub max_concurrency: usize,
    /// Floor of the adaptive concurrency limit; overload never halves below it.
    pub min_concurrency: usize,
    /// Timeout of one HTTP request, from connect to the last body byte.
    #[serde(with = "crate::serde_util::duration")]
    pub timeout: Duration,
}

impl Default for TargetLimits {
    fn default() -> Self {
        TargetLimits {
            rate_per_sec: None,
            burst: 10,
            max_concurrency: 16,
            min_concurrency: 1,
            timeout: Duration::from_secs(30),
        }
    }
}

impl TargetLimits {
    /// Checks that the limits make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |reason: String| Err(ConfigError::InvalidLimits(reason));
        if let Some(rate) = self.rate_per_sec {
            if !(rate.is_finite() && rate > 0.0) {
                return invalid(format!(
                    "rate_per_sec must be a positive number, got {rate}"
                ));
            }
        }
        if self.burst == 0 {
            return invalid("burst must be at least 1".to_owned());
        }
        if self.min_concurrency == 0 {
            return invalid("min_concurrency must be at least 1".to_owned());
        }
        if self.max_concurrency < self.min_concurrency {
            return invalid(format!(
                "max_concurrency ({}) must not be below min_concurrency ({})",
                self.max_concurrency, self.min_concurrency
            ));
        }
        if self.timeout.is_zero() {
            return invalid("timeout must be above zero".to_owned());
        }
        Ok(())
    }
}
