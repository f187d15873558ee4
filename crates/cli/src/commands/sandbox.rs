//! `ledgerbridge sandbox`: the simulators on one loopback listener, until
//! Ctrl-C; optionally with a storefront driver placing orders.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use ledgerbridge_sandbox::config::SandboxConfig;
use ledgerbridge_sandbox::faults::parse_spec;
use ledgerbridge_sandbox::RunningSandbox;

use crate::commands::run::shutdown_signal;

/// Flags of `ledgerbridge sandbox`.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Listen address; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8090", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Sandbox configuration file (TOML: [kashflow], [ordercloud], [xconnect], [gateway], [faults]).
    #[arg(long, value_name = "FILE")]
    pub sandbox_config: Option<PathBuf>,
    /// A fault rule, e.g. `kashflow:error_rate=0.1`, `kashflow:rate_limit=60/min`,
    /// `*:latency=5..20ms`, `ordercloud/v1/orders:commit_then_drop=0.05`, or webhook
    /// delivery faults, e.g. `ordercloud/webhooks:fail_rate=0.2,duplicate_rate=0.1`. Repeatable.
    #[arg(long = "fault", value_name = "SPEC")]
    pub faults: Vec<String>,
    /// Seed for fault injection (same seed, same faults).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Place this many orders through the storefront driver, then keep serving.
    #[arg(long)]
    pub orders: Option<usize>,
    /// Orders per second for the driver.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
}

/// Builds the sandbox configuration from a file and flags.
pub fn sandbox_config(
    file: Option<&PathBuf>,
    faults: &[String],
    seed: Option<u64>,
) -> anyhow::Result<SandboxConfig> {
    let mut config = match file {
        Some(path) => SandboxConfig::load(path)?,
        None => SandboxConfig::default(),
    };
    for spec in faults {
        parse_spec(spec).map_err(|e| anyhow::anyhow!("--fault: {e}"))?;
        config.faults.specs.push(spec.clone());
    }
    if seed.is_some() {
        config.faults.seed = seed;
    }
    Ok(config)
}

/// Prints where each simulator lives.
pub fn print_urls(sandbox: &RunningSandbox) {
    println!("Ledgerbridge sandbox on {}", sandbox.base_url());
    println!("  KashFlow REST v2   {}", sandbox.kashflow_url());
    println!(
        "  OrderCloud v1      {}/v1   (token: {}/oauth/token)",
        sandbox.ordercloud_url(),
        sandbox.ordercloud_url()
    );
    println!("  xConnect           {}", sandbox.xconnect_url());
    println!("  payment gateway    {}", sandbox.gateway_url());
    println!("  control            {}/state", sandbox.control_url());
}

pub async fn run(args: SandboxArgs) -> anyhow::Result<()> {
    let config = sandbox_config(args.sandbox_config.as_ref(), &args.faults, args.seed)?;
    let sandbox = ledgerbridge_sandbox::serve(config, args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    print_urls(&sandbox);
    if let Some(orders) = args.orders {
        crate::commands::demo::drive(&sandbox, orders, args.rate).await?;
    }
    println!("serving; Ctrl-C to stop");
    shutdown_signal().await;
    sandbox.shutdown().await?;
    Ok(())
}
