//! Layered configuration: built-in defaults, then `ledgerbridge.toml` (or
//! `--config FILE`), then `LEDGERBRIDGE__SECTION__KEY` environment
//! variables. A variable ending in `_FILE` names a file holding the value
//! (for secrets: `LEDGERBRIDGE__CONNECTIONS__KASHFLOW__PASSWORD_FILE`).
//! Unknown or mistyped keys are errors that name the key and where it came
//! from.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use figment::providers::{Format, Toml};
use figment::Figment;
use ledgerbridge_engine::{AlertsConfig, EngineConfig};
use ledgerbridge_server::{ServerConfig, SourcesConfig};
use serde::{Deserialize, Serialize};

use crate::connections::{ConnectionsConfig, FlowsConfig};

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[database]`
    pub database: DatabaseConfig,
    /// `[server]`
    pub server: ServerConfig,
    /// `[engine]`
    pub engine: EngineConfig,
    /// `[sources.*]`: webhook senders.
    pub sources: SourcesConfig,
    /// `[connections.*]`: the accounts flows talk to.
    pub connections: ConnectionsConfig,
    /// `[flows.*]`: the pre-built flows' switches and settings.
    pub flows: FlowsConfig,
    /// `[alerts]`: where alerts go besides the log, metrics and audit trail.
    pub alerts: AlertsConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[reconcile]`: the daily reconciliation.
    pub reconcile: ledgerbridge_reconcile::ReconcileConfig,
}

/// `[database]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://data/ledgerbridge.db` (default) or `postgres://user@host/db`.
    pub url: String,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://data/ledgerbridge.db".to_owned(),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `ledgerbridge=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

const ENV_PREFIX: &str = "LEDGERBRIDGE__";

/// Loads the configuration. `explicit` is `--config`; without it,
/// `./ledgerbridge.toml` is read if it exists.
pub fn load(explicit: Option<&Path>) -> anyhow::Result<Config> {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    load_from(explicit, &vars)
}

/// [`load`] with the environment given (for tests).
pub fn load_from(explicit: Option<&Path>, vars: &[(String, String)]) -> anyhow::Result<Config> {
    // Every section is `#[serde(default)]`, so an empty figment yields the
    // defaults; secrets are never serialized back in.
    let mut figment = Figment::new();
    let file: Option<PathBuf> = match explicit {
        Some(path) => {
            if !path.exists() {
                bail!("config file {} does not exist", path.display());
            }
            Some(path.to_owned())
        }
        None => Some(PathBuf::from("ledgerbridge.toml")).filter(|p| p.exists()),
    };
    if let Some(path) = &file {
        figment = figment.merge(Toml::file_exact(path));
    }
    for (key, value) in vars
        .iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !k.ends_with("_FILE"))
    {
        figment = figment.merge(EnvVar::new(key, value));
    }
    for (key, path) in vars
        .iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.ends_with("_FILE"))
    {
        let value = std::fs::read_to_string(path)
            .with_context(|| format!("{key} names {path}, which cannot be read"))?;
        let value = value.trim_end_matches(['\n', '\r']).to_owned();
        let mut var = EnvVar::new(key.trim_end_matches("_FILE"), &value);
        var.value = figment::value::Value::from(value);
        var.name = key.clone();
        figment = figment.merge(var);
    }
    figment.extract::<Config>().map_err(|err| {
        let mut lines = Vec::new();
        for e in err {
            lines.push(describe(&e));
        }
        anyhow::anyhow!("invalid configuration:\n  {}", lines.join("\n  "))
    })
}

/// One `LEDGERBRIDGE__A__B=value` variable as a figment provider, named
/// after the variable so errors point at it.
struct EnvVar {
    name: String,
    path: Vec<String>,
    value: figment::value::Value,
}

impl EnvVar {
    fn new(name: &str, value: &str) -> Self {
        let path = name[ENV_PREFIX.len()..]
            .split("__")
            .map(|part| part.to_ascii_lowercase())
            .collect();
        // Values parse like TOML scalars: `8080` is a number, `true` a bool.
        let value = value
            .parse::<figment::value::Value>()
            .unwrap_or_else(|_| figment::value::Value::from(value.to_owned()));
        EnvVar {
            name: name.to_owned(),
            path,
            value,
        }
    }
}

impl figment::Provider for EnvVar {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(format!("environment variable {}", self.name))
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let mut value = self.value.clone();
        for key in self.path.iter().skip(1).rev() {
            let mut dict = figment::value::Dict::new();
            dict.insert(key.clone(), value);
            value = dict.into();
        }
        let mut root = figment::value::Dict::new();
        if let Some(first) = self.path.first() {
            root.insert(first.clone(), value);
        }
        Ok(figment::Profile::Default.collect(root))
    }
}

fn describe(err: &figment::Error) -> String {
    let mut text = err.kind.to_string();
    if !err.path.is_empty() {
        text = format!("key `{}`: {text}", err.path.join("."));
    }
    if let Some(meta) = &err.metadata {
        match &meta.source {
            Some(source) => text.push_str(&format!(" (in {source})")),
            None => text.push_str(&format!(" (in {})", meta.name)),
        }
    }
    text
}
