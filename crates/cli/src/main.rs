//! `ledgerbridge`: the one binary. Flags and glue only; the work lives in
//! the library crates.

mod commands;
mod config;
mod connections;
mod logging;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Ledgerbridge: Sitecore commerce ↔ KashFlow, in real time, with nothing lost.
#[derive(Debug, Parser)]
#[command(name = "ledgerbridge", version, about, long_about = None)]
struct Cli {
    /// Config file (default: ./ledgerbridge.toml if present).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Database URL: sqlite://path/file.db or postgres://user@host/db
    /// (overrides [database] url).
    #[arg(long, global = true, value_name = "URL")]
    database: Option<String>,
    /// Log format (overrides [log] format).
    #[arg(long, global = true, value_enum)]
    log_format: Option<config::LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the engine and its HTTP server (webhooks, API, metrics).
    Run(commands::run::RunArgs),
    /// Run the sandbox simulators (KashFlow, OrderCloud, xConnect, gateway).
    Sandbox(commands::sandbox::SandboxArgs),
    /// Sandbox + engine on SQLite + a stream of sample orders, live.
    Demo(commands::demo::DemoArgs),
    /// Inspect runs and work the dead-letter queue.
    #[command(subcommand)]
    Runs(commands::runs::RunsCommand),
    /// Compare a period's orders, invoices and payments; list every
    /// difference with a suggested fix (exit 0: none, 1: some, 2: error).
    Reconcile(commands::reconcile::ReconcileArgs),
    /// Benchmarks that print numbers.
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
    /// Stock sync: which products are synced, which are on one side only.
    #[command(subcommand)]
    Inventory(commands::inventory::InventoryCommand),
    /// Check or print the effective configuration (secrets redacted).
    #[command(subcommand)]
    Config(commands::config_cmd::ConfigCommand),
    /// Check flow files: YAML, keys, step graph, VRL programs, tables.
    Validate(commands::flows::FlowsArgs),
    /// Run the flows' own tests offline (no connection is called).
    Test(commands::flows::FlowsArgs),
    /// Print the requests a flow would send for an input (nothing is sent).
    DryRun(commands::flows::DryRunArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let mut config = match config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            logging::say_err(format_args!("error: {err:#}"));
            return std::process::ExitCode::from(2);
        }
    };
    if let Some(url) = cli.database {
        config.database.url = url;
    }
    if let Some(format) = cli.log_format {
        config.log.format = format;
    }
    logging::init(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            logging::say_err(format_args!("error: cannot start the async runtime: {err}"));
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Command::Reconcile(args) = cli.command {
        return runtime.block_on(commands::reconcile::run(config, args));
    }
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Reconcile(_) => Ok(()),
            Command::Run(args) => commands::run::run(config, args).await,
            Command::Sandbox(args) => commands::sandbox::run(args).await,
            Command::Demo(args) => commands::demo::run(config, args).await,
            Command::Runs(cmd) => commands::runs::run(config, cmd).await,
            Command::Bench(cmd) => commands::bench::run(config, cmd).await,
            Command::Inventory(cmd) => commands::inventory::run(config, cmd).await,
            Command::Config(cmd) => commands::config_cmd::run(config, cmd),
            Command::Validate(args) => commands::flows::validate(args),
            Command::Test(args) => commands::flows::test(args),
            Command::DryRun(args) => commands::flows::dry_run(args),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            logging::say_err(format_args!("error: {err:#}"));
            std::process::ExitCode::FAILURE
        }
    }
}
