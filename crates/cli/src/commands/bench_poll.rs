//! `ledgerbridge bench poll`: one poll cycle of KashFlow customers against
//! the sandbox holding N customers, M of which changed since the last
//! cycle. KashFlow has no "changed since" filter, so every list page must
//! be read; what we control is that unchanged customers are never fetched
//! one by one, and that the cycle stores exactly the M changes (with the
//! runs they start) before it moves the cursor.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::middleware::Next;
use clap::Args;
use ledgerbridge_connectors::kashflow::{KashFlowClient, KashFlowConfig};
use ledgerbridge_connectors::ordercloud::{OrderCloudClient, OrderCloudConfig};
use ledgerbridge_engine::flows::customer_sync::{
    CustomerSync, CustomerSyncSettings, InitialPoll, KashFlowCustomerPoll,
};
use ledgerbridge_engine::poll::poll_once;
use ledgerbridge_engine::FlowRegistry;
use ledgerbridge_sandbox::driver::DriverCredentials;
use ledgerbridge_sandbox::Sandbox;
use rand::seq::SliceRandom;
use serde_json::json;
use tokio::sync::Notify;

use crate::config::Config;

/// Flags of `bench poll`.
#[derive(Debug, Args)]
pub struct PollArgs {
    /// KashFlow customers in the sandbox.
    #[arg(long, default_value_t = 50_000)]
    pub customers: usize,
    /// Customers changed before each measured cycle.
    #[arg(long, default_value_t = 100)]
    pub changes: usize,
    /// Measured cycles (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

fn route_key(method: &str, path: &str) -> String {
    let single = path.starts_with("/kashflow/v2/customers/");
    match (method, path) {
        ("GET", "/kashflow/v2/customers") => "GET /customers (list page)".to_owned(),
        ("GET", _) if single => "GET /customers/{code} (one customer)".to_owned(),
        _ => format!("{method} {}", path.trim_start_matches("/kashflow/v2")),
    }
}

async fn serve_counted(sandbox: &Sandbox, counts: Counts) -> anyhow::Result<SocketAddr> {
    let router = sandbox.router().layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let counts = counts.clone();
            async move {
                let key = route_key(req.method().as_str(), req.uri().path());
                *counts
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .entry(key)
                    .or_default() += 1;
                next.run(req).await
            }
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(addr)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs the benchmark and prints its table.
pub async fn run(config: Config, args: PollArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.changes <= args.customers,
        "--changes must not exceed --customers"
    );
    let sim = ledgerbridge_sandbox::config::SandboxConfig::default();
    let sandbox = Sandbox::new(sim.clone());
    let seeded = Instant::now();
    let bodies: Vec<serde_json::Value> = (0..args.customers)
        .map(|n| {
            json!({
                "Code": format!("BC{n:06}"),
                "Name": format!("Customer {n}"),
                "Contacts": [{"Firstname": "Customer", "LastName": format!("{n}"), "Email": format!("c{n}@example.com")}],
            })
        })
        .collect();
    sandbox
        .kashflow
        .seed_customers(&bodies)
        .map_err(|e| anyhow::anyhow!("seeding customers: {e}"))?;
    println!(
        "seeded {} KashFlow customers in {:.1} s",
        args.customers,
        seeded.elapsed().as_secs_f64()
    );
    let counts: Counts = Arc::default();
    let addr = serve_counted(&sandbox, counts.clone()).await?;
    let base = format!("http://{addr}");
    let kashflow = KashFlowClient::new(
        "kashflow",
        KashFlowConfig::new(
            format!("{base}/kashflow/v2"),
            sim.kashflow.username.clone(),
            sim.kashflow.password.as_str().into(),
            sim.kashflow.memorable_word.as_str().into(),
        ),
    )?;
    let credentials = DriverCredentials::default();
    let ordercloud = OrderCloudClient::new(
        "ordercloud",
        OrderCloudConfig::new(
            format!("{base}/ordercloud"),
            credentials.client_id.clone(),
            credentials.client_secret.as_str().into(),
            "",
        ),
    )?;
    let (store, _scratch) = super::bench::open_store(&config).await?;
    let mut flows = FlowRegistry::new();
    flows.register(Arc::new(CustomerSync::new(
        CustomerSyncSettings::default(),
        kashflow.clone(),
        &format!("{base}/kashflow/v2"),
        ordercloud,
        &format!("{base}/ordercloud"),
        None,
    )));
    let source =
        KashFlowCustomerPoll::new(kashflow, Duration::from_secs(60), InitialPoll::Baseline);
    let wake = Notify::new();

    let started = Instant::now();
    let baseline = poll_once(store.as_ref(), &flows, &wake, &source)
        .await
        .map_err(|f| anyhow::anyhow!("baseline cycle: {}", f.message))?;
    println!(
        "baseline cycle: {} customers listed in {:.2} s, {} changes (a baseline records, it does not sync)",
        baseline.listed,
        started.elapsed().as_secs_f64(),
        baseline.changes
    );

    let codes: Vec<String> = (0..args.customers).map(|n| format!("BC{n:06}")).collect();
    let mut rng = rand::thread_rng();
    let mut cycle_ms = Vec::new();
    let mut quiet_ms = Vec::new();
    let mut last_counts = BTreeMap::new();
    let mut detected = Vec::new();
    for round in 0..args.runs {
        for code in codes.choose_multiple(&mut rng, args.changes) {
            let body = json!({"Contacts": [{"Firstname": "Changed", "LastName": format!("{code} r{round}"), "Email": format!("{code}@example.com")}]});
            sandbox
                .kashflow
                .update_customer_json(code, &body)
                .map_err(|e| anyhow::anyhow!("changing {code}: {e}"))?;
        }
        counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        let started = Instant::now();
        let report = poll_once(store.as_ref(), &flows, &wake, &source)
            .await
            .map_err(|f| anyhow::anyhow!("cycle {round}: {}", f.message))?;
        cycle_ms.push(started.elapsed().as_secs_f64() * 1e3);
        detected.push(report.stored);
        last_counts = counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let started = Instant::now();
        let quiet = poll_once(store.as_ref(), &flows, &wake, &source)
            .await
            .map_err(|f| anyhow::anyhow!("quiet cycle {round}: {}", f.message))?;
        quiet_ms.push(started.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(
            quiet.stored == 0,
            "a cycle with no change stored {} events",
            quiet.stored
        );
    }
    println!();
    println!(
        "poll cycle over {} KashFlow customers, {} changed (runs: {})",
        args.customers, args.changes, args.runs
    );
    println!(
        "  changes detected per cycle   {:?} (each stored as an event + a customer-sync run)",
        detected
    );
    println!(
        "  cycle with changes           median {:>8.1} ms  (all: {})",
        median(&mut cycle_ms.clone()),
        cycle_ms
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  cycle with no change         median {:>8.1} ms",
        median(&mut quiet_ms.clone())
    );
    println!("  requests of the last cycle with changes:");
    for (route, n) in &last_counts {
        println!("    {route:<40} {n:>6}");
    }
    let singles = last_counts
        .get("GET /customers/{code} (one customer)")
        .copied()
        .unwrap_or(0);
    println!(
        "  unchanged customers fetched one by one: {singles} (each changed one is read once by its run, not by the poll)"
    );
    let detected_all = detected.iter().all(|d| *d == args.changes);
    anyhow::ensure!(
        detected_all,
        "expected {} changes per cycle, detected {:?}",
        args.changes,
        detected
    );
    Ok(())
}
