//! `ledgerbridge config check|print`.

use anyhow::Context;
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
            // Beyond the shape: every value that must parse does, and every
            // configured connection builds.
            ledgerbridge_store::StoreUrl::parse(&config.database.url)
                .with_context(|| format!("[database] url = {:?}", config.database.url))?;
            std::net::ToSocketAddrs::to_socket_addrs(config.server.listen.as_str()).with_context(
                || {
                    format!(
                        "[server] listen = {:?} is not a host:port like 127.0.0.1:8080",
                        config.server.listen
                    )
                },
            )?;
            let flows = crate::connections::build_flows(&config)?;
            println!("configuration is valid");
            let names = flows.names();
            if names.is_empty() {
                println!("no flows enabled: configure [connections.kashflow] and [connections.ordercloud]");
            } else {
                println!("flows: {}", names.join(", "));
            }
            println!(
                "webhook sources: {} OrderCloud, {} gateway",
                config.sources.ordercloud.len(),
                config.sources.gateway.len()
            );
            Ok(())
        }
        ConfigCommand::Print => {
            let text = toml::to_string_pretty(&config)?;
            println!("{text}");
            Ok(())
        }
    }
}
