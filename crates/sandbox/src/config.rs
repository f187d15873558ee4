//! Sandbox configuration: one section per simulator plus fault rules,
//! loadable from a TOML file.
//!
//! ```toml
//! [kashflow]
//! session_ttl_secs = 3600
//!
//! [faults]
//! seed = 42
//! specs = ["kashflow:error_rate=0.1", "*:latency=5..20ms",
//!          "ordercloud/webhooks:fail_rate=0.2,duplicate_rate=0.1"]
//!
//! [gateway.webhook_faults]   # the same, as a table
//! delay_rate = 0.5
//! max_delay_ms = 2000
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::faults::FaultsConfig;
use crate::gateway::GatewayConfig;
use crate::kashflow::KashFlowConfig;
use crate::ordercloud::OrderCloudConfig;
use crate::xconnect::XConnectConfig;

/// Configuration of the whole sandbox. Every section and field has a default,
/// so an empty file is a valid configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// KashFlow REST v2 simulator.
    pub kashflow: KashFlowConfig,
    /// OrderCloud v1 simulator.
    pub ordercloud: OrderCloudConfig,
    /// xConnect simulator.
    pub xconnect: XConnectConfig,
    /// Payment gateway simulator.
    pub gateway: GatewayConfig,
    /// Fault rules active from start-up.
    pub faults: FaultsConfig,
}

/// A configuration file that could not be read or understood.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read sandbox config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or names an unknown key or a wrong type.
    #[error("invalid sandbox config{}: {message}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Parse {
        /// The file, when the text came from one.
        path: Option<PathBuf>,
        /// The parser's message (includes line, column and key).
        message: String,
    },
    /// A fault spec string in `[faults] specs` is invalid.
    #[error("invalid fault spec in sandbox config: {0}")]
    FaultSpec(String),
    /// A value is out of range (e.g. a webhook fault rate above 1).
    #[error("invalid sandbox config: {0}")]
    Invalid(String),
}

impl SandboxConfig {
    /// Parses TOML text.
    pub fn from_toml_str(text: &str) -> Result<SandboxConfig, ConfigError> {
        Self::parse(text, None)
    }

    /// Reads and parses a TOML file.
    pub fn load(path: impl AsRef<Path>) -> Result<SandboxConfig, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, Some(path.to_path_buf()))
    }

    fn parse(text: &str, path: Option<PathBuf>) -> Result<SandboxConfig, ConfigError> {
        let config: SandboxConfig = toml::from_str(text).map_err(|err| ConfigError::Parse {
            path,
            message: err.to_string(),
        })?;
        config.faults.all_rules().map_err(ConfigError::FaultSpec)?;
        config
            .faults
            .webhook_specs()
            .map_err(ConfigError::FaultSpec)?;
        for (section, faults) in [
            ("ordercloud", &config.ordercloud.webhook_faults),
            ("gateway", &config.gateway.webhook_faults),
        ] {
            faults
                .validate()
                .map_err(|why| ConfigError::Invalid(format!("[{section}.webhook_faults] {why}")))?;
        }
        Ok(config)
    }

    /// Applies the webhook delivery specs of `[faults] specs`
    /// (`ordercloud/webhooks:...`, `gateway/webhooks:...`) onto the
    /// `webhook_faults` of their service, in order. Invalid specs are skipped
    /// with a warning (loading rejects them earlier).
    pub fn apply_webhook_fault_specs(&mut self) {
        let specs = match self.faults.webhook_specs() {
            Ok(specs) => specs,
            Err(why) => {
                tracing::warn!(%why, "ignoring invalid webhook fault specs");
                return;
            }
        };
        for spec in specs {
            match spec.service.as_str() {
                "ordercloud" => spec.apply_to(&mut self.ordercloud.webhook_faults),
                "gateway" => spec.apply_to(&mut self.gateway.webhook_faults),
                _ => {}
            }
        }
    }
}
