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
        check_utf8(path)?;
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

/// A config file that is not UTF-8 is refused with the line and column of
/// its first bad byte (the TOML reader would only say "not UTF-8").
fn check_utf8(path: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("config file {} cannot be read", path.display()))?;
    let Err(err) = std::str::from_utf8(&bytes) else {
        return Ok(());
    };
    let good = &bytes[..err.valid_up_to()];
    let line = good.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = good
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |at| at + 1);
    let column = String::from_utf8_lossy(&good[line_start..]).chars().count() + 1;
    bail!(
        "invalid configuration:\n  {}: line {line}, column {column}: the file is not UTF-8 text (byte 0x{:02x}); save it as UTF-8",
        path.display(),
        bytes[err.valid_up_to()]
    )
}

/// A variable's value as a TOML value (`8080` is a number, `true` a bool,
/// `["a", "b"]` an array), else as text (a date like `2025-01-01` stays
/// text too). Read with the `toml` crate, which bounds nesting, not
/// figment's own value parser: that one overflows the stack on `[[[[…`
/// thousands deep, and panics on a quoted value with a backslash after a
/// non-ASCII character (`"é\n"`).
fn env_value(text: &str) -> figment::value::Value {
    let text_value = || figment::value::Value::from(text.to_owned());
    match <toml::Value as Deserialize>::deserialize(toml::de::ValueDeserializer::new(text)) {
        Ok(toml::Value::Datetime(_)) | Err(_) => text_value(),
        Ok(value) => <figment::value::Value as Deserialize>::deserialize(value)
            .unwrap_or_else(|_| text_value()),
    }
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
        let value = env_value(value);
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

#[cfg(test)]
mod tests {
    //! Hostile configuration (our fuzzing of the config loader, with
    //! proptest): a realistic `ledgerbridge.toml` mangled at random — lines
    //! deleted, repeated and swapped, values of the wrong type, unknown
    //! keys, huge numbers, deep nesting, bytes that are not UTF-8 — and
    //! arbitrary bytes and environment variables. Never a panic; a refused
    //! configuration always says where: the line and column in the file,
    //! or the key and the file or variable it came from.

    use std::path::Path;

    use proptest::prelude::*;
    use proptest::test_runner::{Config as Cases, TestRunner};

    use super::*;

    /// The README's configuration, every section filled in.
    const FULL: &str = r#"
[database]
url = "sqlite://data/ledgerbridge.db"

[server]
listen = "127.0.0.1:8080"
max_body_bytes = 1048576
body_timeout_secs = 10

[engine]
workers = 64
lease_secs = 30

[engine.retry]
base_ms = 500
cap_secs = 900
max_age_hours = 72

[sources.ordercloud.uk-store]
hash_key = "hk"

[sources.gateway.stripe]
signing_secret = "whsec_x"

[connections.kashflow]
base_url = "https://api.kashflow.com/v2"
username = "user"
password = "secret"
memorable_word = "pineapple"

[connections.ordercloud]
base_url = "https://api.ordercloud.io"
client_id = "client"
client_secret = "secret"

[connections.xconnect]
base_url = "https://example.com/xconnect"

[flows]
registry_dir = "data/flows"

[flows.order-to-invoice]
status_map = { Completed = "paid" }
payment_method_id = 1
bank_account_id = 1
unknown_product = "default_nominal"

[flows.payment-to-invoice]
enabled = true
overpayment = "apply"
partial_payment = "apply"

[flows.inventory-sync]
enabled = true
poll_interval_secs = 60
map_same_codes = true
products = { "TEE-S" = "TEE/TEE-S", "GIFT" = "" }
low_stock_alert = true
low_stock_threshold = 3

[flows.customer-sync]
buyer_id = "BUYER1"
poll_interval_secs = 60
initial_poll = "baseline"
owners = { email = "ordercloud" }

[alerts]
webhook_url = ""
repeat_after_secs = 3600

[log]
format = "json"
level = "info"

[reconcile]
daily_at = "02:00"
lookback_days = 1
"#;

    /// Values of every type and size, for `key = VALUE`.
    fn hostile_value() -> impl Strategy<Value = String> {
        let fixed: Vec<String> = [
            "\"\"",
            "\"x\"",
            "0",
            "-1",
            "1.5",
            "-0.0",
            "nan",
            "inf",
            "-inf",
            "1e400",
            "true",
            "[]",
            "[1, \"a\"]",
            "{}",
            "{ a = 1 }",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775809",
            "18446744073709551616",
            "99999999999999999999999999999999",
            "0x7fffffffffffffff",
            "0o777",
            "0b1",
            "1979-05-27T07:32:00Z",
            "07:32:00",
            "\"\\u0000\"",
            "\"\\uD800\"",
            "'''\nmulti\n'''",
            "\"unterminated",
            "= =",
            "",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        prop_oneof![
            6 => prop::sample::select(fixed),
            1 => (1usize..400).prop_map(|n| format!("{}1{}", "[".repeat(n), "]".repeat(n))),
            1 => (1usize..400).prop_map(|n| format!("{}1{}", "{ a = ".repeat(n), " }".repeat(n))),
            1 => "[0-9]{1,80}",
            1 => "\"\\PC{0,20}\"",
        ]
    }

    /// Lines to insert: unknown keys and sections, repeated sections,
    /// deep dotted keys, junk.
    fn hostile_line() -> impl Strategy<Value = String> {
        let fixed: Vec<String> = [
            "unknown = 1",
            "[unknown]",
            "[database]",
            "[[server]]",
            "[engine.retry.deeper]",
            "workers = \"many\"",
            "[sources.ordercloud.\"\"]",
            "[sources.gateway.x]",
            "[connections.gateway]",
            "[flows.nope]",
            "url = 1",
            "=",
            "[",
            "]]",
            "\"key\" = ",
            "a.b = 1",
            "\u{0}",
            "\u{FEFF}",
            "# comment",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        prop_oneof![
            4 => prop::sample::select(fixed),
            1 => (1usize..300).prop_map(|n| format!("{} = 1", vec!["a"; n].join("."))),
            1 => (prop::sample::select(vec!["workers", "listen", "url", "enabled", "products", "level"]), hostile_value())
                .prop_map(|(key, value)| format!("{key} = {value}")),
            1 => "\\PC{0,40}",
        ]
    }

    #[derive(Debug, Clone)]
    enum Edit {
        DeleteLine(usize),
        RepeatLine(usize),
        SwapLines(usize, usize),
        InsertLine(usize, String),
        /// Keeps the key of a `key = value` line and replaces its value.
        ReplaceValue(usize, String),
        /// Raw bytes at a byte offset (need not be UTF-8).
        InsertBytes(usize, Vec<u8>),
        Truncate(usize),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            1 => any::<usize>().prop_map(Edit::DeleteLine),
            1 => any::<usize>().prop_map(Edit::RepeatLine),
            1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
            1 => (any::<usize>(), hostile_line()).prop_map(|(at, line)| Edit::InsertLine(at, line)),
            3 => (any::<usize>(), hostile_value()).prop_map(|(at, v)| Edit::ReplaceValue(at, v)),
            1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..6))
                .prop_map(|(at, bytes)| Edit::InsertBytes(at, bytes)),
            1 => any::<usize>().prop_map(Edit::Truncate),
        ]
    }

    fn apply(text: &str, edits: &[Edit]) -> Vec<u8> {
        let mut lines: Vec<Vec<u8>> = text.lines().map(|l| l.as_bytes().to_vec()).collect();
        let mut tail: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut cut = None;
        for edit in edits {
            let n = lines.len().max(1);
            match edit {
                Edit::DeleteLine(i) if !lines.is_empty() => {
                    lines.remove(i % n);
                }
                Edit::RepeatLine(i) if !lines.is_empty() => {
                    let line = lines[i % n].clone();
                    lines.insert(i % n, line);
                }
                Edit::SwapLines(a, b) if !lines.is_empty() => lines.swap(a % n, b % n),
                Edit::InsertLine(i, line) => {
                    lines.insert(i % (lines.len() + 1), line.clone().into_bytes())
                }
                Edit::ReplaceValue(i, value) => {
                    let with_value: Vec<usize> = (0..lines.len())
                        .filter(|j| lines[*j].contains(&b'='))
                        .collect();
                    if let Some(j) = with_value.get(i % with_value.len().max(1)) {
                        let line = &lines[*j];
                        let eq = line.iter().position(|b| *b == b'=').unwrap_or(0);
                        let mut new = line[..=eq].to_vec();
                        new.push(b' ');
                        new.extend_from_slice(value.as_bytes());
                        lines[*j] = new;
                    }
                }
                Edit::InsertBytes(at, bytes) => tail.push((*at, bytes.clone())),
                Edit::Truncate(at) => cut = Some(*at),
                _ => {}
            }
        }
        let mut out = lines.join(&b'\n');
        out.push(b'\n');
        for (at, bytes) in tail {
            let at = at % (out.len() + 1);
            out.splice(at..at, bytes);
        }
        if let Some(at) = cut {
            out.truncate(at % (out.len() + 1));
        }
        out
    }

    /// Whether an error message says where: a line and column, a key, or
    /// the variable.
    fn says_where(message: &str) -> bool {
        (message.contains("line ") && message.contains("column "))
            || message.contains("key `")
            || message.contains("environment variable")
    }

    /// Loads `bytes` as the config file (and `vars`): a configuration, or
    /// an error that says where. A loaded one also prints (`config
    /// print`) without a panic.
    fn check(dir: &Path, bytes: &[u8], vars: &[(String, String)]) -> Result<(), TestCaseError> {
        let path = dir.join("ledgerbridge.toml");
        std::fs::write(&path, bytes).expect("write the config");
        match load_from(Some(&path), vars) {
            Ok(config) => {
                let _ = toml::to_string_pretty(&config);
                let _ = ledgerbridge_store::StoreUrl::parse(&config.database.url);
            }
            Err(err) => {
                let message = format!("{err:#}");
                prop_assert!(
                    says_where(&message),
                    "the error does not say where:\n{message}\n--- file:\n{}",
                    String::from_utf8_lossy(bytes)
                );
            }
        }
        Ok(())
    }

    fn runner(ci_cases: u32) -> TestRunner {
        TestRunner::new(Cases {
            cases: ledgerbridge_core::fuzz::cases(ci_cases),
            failure_persistence: None,
            ..Cases::default()
        })
    }

    #[test]
    fn the_full_config_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledgerbridge.toml");
        std::fs::write(&path, FULL).unwrap();
        let config = load_from(Some(&path), &[]).unwrap();
        assert_eq!(config.engine.workers, 64);
    }

    #[test]
    fn a_config_file_that_is_not_utf8_is_refused_with_its_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledgerbridge.toml");
        std::fs::write(&path, b"[database]\nurl = \"sqlite://\xff\"\n").unwrap();
        let message = format!("{:#}", load_from(Some(&path), &[]).unwrap_err());
        assert!(
            message.contains("line 2, column 17: the file is not UTF-8 text (byte 0xff)"),
            "{message}"
        );
    }

    #[test]
    fn a_deeply_nested_environment_value_is_an_error_not_a_stack_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
        let vars = [("LEDGERBRIDGE__ENGINE__WORKERS".to_owned(), deep)];
        let message = format!("{:#}", load_from(None, &vars).unwrap_err());
        assert!(
            message.contains("key `engine.workers`")
                && message.contains("environment variable LEDGERBRIDGE__ENGINE__WORKERS"),
            "{message}"
        );
        drop(dir);
        // Shallow values still parse as TOML.
        let vars = [(
            "LEDGERBRIDGE__FLOWS__INVENTORY-SYNC__PRODUCTS".to_owned(),
            "{ A = \"B\" }".to_owned(),
        )];
        let config = load_from(None, &vars).unwrap();
        assert_eq!(config.flows.inventory_sync.products.len(), 1);
        let vars = [(
            "LEDGERBRIDGE__SERVER__LISTEN".to_owned(),
            "0.0.0.0:8080".to_owned(),
        )];
        assert_eq!(
            load_from(None, &vars).unwrap().server.listen,
            "0.0.0.0:8080"
        );
        let vars = [("LEDGERBRIDGE__ENGINE__WORKERS".to_owned(), "8".to_owned())];
        assert_eq!(load_from(None, &vars).unwrap().engine.workers, 8);
        let vars = [(
            "LEDGERBRIDGE__LOG__LEVEL".to_owned(),
            "2025-01-01".to_owned(),
        )];
        assert_eq!(load_from(None, &vars).unwrap().log.level, "2025-01-01");
    }

    #[test]
    fn a_quoted_environment_value_with_an_escape_after_unicode_is_read_not_a_panic() {
        // Found by hostile_environment_variables_load_or_say_where_never_panic.
        let vars = [(
            "LEDGERBRIDGE__ALERTS__WEBHOOK_URL".to_owned(),
            "\"é\\n\"".to_owned(),
        )];
        let config = load_from(None, &vars).unwrap();
        assert_eq!(config.alerts.webhook_url, "é\n");
    }

    #[test]
    fn mangled_configs_load_or_say_where_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        runner(400)
            .run(&prop::collection::vec(edit(), 1..6), |edits| {
                check(dir.path(), &apply(FULL, &edits), &[])
            })
            .unwrap();
    }

    #[test]
    fn arbitrary_config_bytes_load_or_say_where_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            "\\PC{0,300}".prop_map(String::into_bytes),
            prop::collection::vec(hostile_line(), 0..12).prop_map(|l| l.join("\n").into_bytes()),
        ];
        runner(300)
            .run(&bytes, |bytes| check(dir.path(), &bytes, &[]))
            .unwrap();
    }

    #[test]
    fn hostile_environment_variables_load_or_say_where_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let keys = prop::sample::select(vec![
            "LEDGERBRIDGE__ENGINE__WORKERS",
            "LEDGERBRIDGE__SERVER__LISTEN",
            "LEDGERBRIDGE__SERVER__MAX_BODY_BYTES",
            "LEDGERBRIDGE__DATABASE__URL",
            "LEDGERBRIDGE__DATABASE",
            "LEDGERBRIDGE__",
            "LEDGERBRIDGE____",
            "LEDGERBRIDGE__NOPE",
            "LEDGERBRIDGE__SOURCES__ORDERCLOUD__UK-STORE__HASH_KEY",
            "LEDGERBRIDGE__FLOWS__INVENTORY-SYNC__PRODUCTS",
            "LEDGERBRIDGE__ENGINE__RETRY__CAP_SECS",
            "LEDGERBRIDGE__LOG__FORMAT",
        ]);
        let value = prop_oneof![hostile_value(), "\\PC{0,30}"];
        let vars = prop::collection::vec((keys, value), 1..4).prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect::<Vec<_>>()
        });
        runner(300)
            .run(&vars, |vars| check(dir.path(), FULL.as_bytes(), &vars))
            .unwrap();
    }
}
