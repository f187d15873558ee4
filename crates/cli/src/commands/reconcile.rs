//! `ledgerbridge reconcile --from DATE --to DATE [--format table|json|csv]
//! [--output FILE]`: the period's orders, invoices and payments compared;
//! exit code 0 when nothing differs, 1 when something does, 2 on error.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use ledgerbridge_reconcile::{Format, Period};

use crate::config::Config;
use crate::connections;

/// Flags of `ledgerbridge reconcile`.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// First day (UTC), YYYY-MM-DD.
    #[arg(long, value_name = "DATE")]
    pub from: String,
    /// Last day (UTC, inclusive), YYYY-MM-DD.
    #[arg(long, value_name = "DATE")]
    pub to: String,
    /// table (the default on a terminal), json (the default otherwise) or csv.
    #[arg(long)]
    pub format: Option<String>,
    /// Write the report to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Exit code when the report lists differences.
const DIFFERENCES: u8 = 1;
/// Exit code when no report could be made.
const FAILED: u8 = 2;

pub async fn run(config: Config, args: ReconcileArgs) -> ExitCode {
    match reconcile(config, args).await {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(DIFFERENCES),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(FAILED)
        }
    }
}

/// Makes and writes the report; returns the number of differences.
async fn reconcile(config: Config, args: ReconcileArgs) -> anyhow::Result<usize> {
    let period = Period::parse(&args.from, &args.to).map_err(anyhow::Error::msg)?;
    let format = match args.format.as_deref() {
        Some(text) => Format::parse(text).map_err(anyhow::Error::msg)?,
        None if args.output.is_none() && std::io::stdout().is_terminal() => Format::Table,
        None => Format::Json,
    };
    let store = ledgerbridge_store::open(&config.database.url)
        .await
        .with_context(|| {
            format!(
                "opening the database {}",
                crate::commands::run::redact_url(&config.database.url)
            )
        })?;
    let reconciler = connections::build_reconciler(&config, store)?.context(
        "reconciliation needs [connections.kashflow] and [connections.ordercloud] in the configuration",
    )?;
    let report = reconciler.run(period).await?;
    let text = report.render(format);
    match &args.output {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("writing the report to {}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(report.difference_count())
}
