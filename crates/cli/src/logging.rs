//! Structured logs with `tracing`: text for people, JSON for machines.
//! Secrets never reach a log: they are `Secret`s, which print `[redacted]`.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG` overrides `[log] level`.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        // VRL reports its own diagnostics through our error messages; its log
        // lines would only repeat them.
        .or_else(|_| EnvFilter::try_new(format!("{},vrl=error", config.level)))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Err(err) = result {
        eprintln!("warning: logging already initialised: {err}");
    }
}
