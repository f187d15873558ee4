//! Errors raised while building a connector from its configuration.
//!
//! Failures of calls to a target are not errors of this kind: they are
//! classified [`ledgerbridge_core::Failure`]s (see [`crate::delivery::classify`]).

/// A connector could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `base_url` is not an absolute http(s) URL.
    #[error("invalid base_url {url:?}: {reason}")]
    InvalidBaseUrl {
        /// The configured value.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The `limits` section is inconsistent.
    #[error("invalid limits: {0}")]
    InvalidLimits(String),
    /// A required setting is empty.
    #[error("missing setting `{0}`")]
    Missing(&'static str),
    /// The HTTP client could not be created (TLS backend initialisation).
    #[error("cannot create the HTTP client")]
    HttpClient(#[source] reqwest::Error),
}
