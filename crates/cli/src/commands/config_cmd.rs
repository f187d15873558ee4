//! `ledgerbridge config check|print`.

use clap::Subcommand;

use crate::config::Config;

/// Config subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate the configuration; exit non-zero on any error.
    Check,
    /// Print the effective configuration as TOML, secrets redacted.
    Print,
}

pub fn run(config: Config, cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Check => {
            println!("configuration is valid");
            Ok(())
        }
        ConfigCommand::Print => {
            let text = toml::to_string_pretty(&config)?;
            println!("{text}");
            Ok(())
        }
    }
}
