//! `ledgerbridge inventory report`: which KashFlow products feed which
//! OrderCloud products or variants, and which are on one side only (see
//! `ledgerbridge_engine::flows::inventory_sync`). Reads only.

use anyhow::Context;
use clap::Subcommand;
use ledgerbridge_connectors::kashflow::KashFlowClient;
use ledgerbridge_connectors::ordercloud::OrderCloudClient;
use ledgerbridge_engine::flows::inventory_sync::inventory_report;

use crate::config::Config;
use crate::connections::{KASHFLOW_CONNECTION, ORDERCLOUD_CONNECTION};

/// Inventory subcommands.
#[derive(Debug, Subcommand)]
pub enum InventoryCommand {
    /// List synced products, products on one side only and mappings that
    /// cannot work, under [flows.inventory-sync].
    Report {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: Config, cmd: InventoryCommand) -> anyhow::Result<()> {
    match cmd {
        InventoryCommand::Report { json } => {
            let settings = &config.flows.inventory_sync;
            settings.validate().map_err(anyhow::Error::msg)?;
            let (Some(kf), Some(oc)) =
                (&config.connections.kashflow, &config.connections.ordercloud)
            else {
                anyhow::bail!(
                    "the inventory report needs [connections.kashflow] and [connections.ordercloud]"
                );
            };
            let kashflow = KashFlowClient::new(KASHFLOW_CONNECTION, kf.clone())
                .context("[connections.kashflow]")?;
            let ordercloud = OrderCloudClient::new(ORDERCLOUD_CONNECTION, oc.clone())
                .context("[connections.ordercloud]")?;
            let report = inventory_report(settings, &kashflow, &ordercloud)
                .await
                .map_err(|f| anyhow::anyhow!("{}", f.message))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            Ok(())
        }
    }
}
