//! Sandbox configuration: one section per simulator plus fault rules,
//! loadable from a TOML file.
//!
//! ```toml
//! [kashflow]
//! session_ttl_secs = 3600
//!
//! [faults]
//! seed = 42
//! specs = ["kashflow:error_rate=0.1", "*:latency=5..20ms"]
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
        Ok(config)
    }
}
