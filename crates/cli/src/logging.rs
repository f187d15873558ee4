//! Structured logs with `tracing`: text for people, JSON for machines.
//! Secrets never reach a log: they are `Secret`s, which print `[redacted]`.
//!
//! A log that cannot be written (stderr on a full or read-only disk) loses
//! lines, never the process: the subscriber's own fallback for a failed
//! write is `eprintln!`, which panics when stderr fails too, so it is off,
//! and whatever the process prints itself goes through [`say`].

use std::io::Write;

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
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Err(err) = result {
        say_err(format_args!("warning: logging already initialised: {err}"));
    }
}

/// `println!` that cannot panic: a line for stdout, lost if stdout cannot
/// take it.
pub fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// `eprintln!` that cannot panic.
pub fn say_err(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{line}");
}
