//! `ledgerbridge bench stock`: one poll source (KashFlow product stock)
//! against the sandbox over HTTP, no engine: the time of a cycle and the
//! requests it makes, for a catalogue of N products of which M change
//! between cycles. Prints a table.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use ledgerbridge_connectors::kashflow::{KashFlowClient, KashFlowConfig};
use ledgerbridge_engine::flows::inventory_sync::KashFlowStockPoll;
use ledgerbridge_engine::PollSource;
use ledgerbridge_sandbox::{Sandbox, SandboxConfig};
use rust_decimal::Decimal;
use serde_json::json;

/// Flags of `bench stock`.
#[derive(Debug, Args)]
pub struct StockArgs {
    /// Products in KashFlow (besides the sandbox's own).
    #[arg(long, default_value_t = 5_000)]
    pub products: usize,
    /// Products whose stock changes between cycles.
    #[arg(long, default_value_t = 50)]
    pub changes: usize,
    /// Timed cycles of each kind.
    #[arg(long, default_value_t = 5)]
    pub cycles: usize,
}

pub async fn run(args: StockArgs) -> anyhow::Result<()> {
    let sandbox = Sandbox::new(SandboxConfig::default());
    for n in 0..args.products {
        sandbox
            .kashflow
            .add_product(&json!({
                "Code": format!("BENCH{n:06}"), "Name": format!("Bench product {n}"),
                "NominalCode": 4000, "Price": 1, "ManageStockLevel": true,
                "QuantityInStock": 100, "StockWarningQuantity": 5
            }))
            .map_err(|e| anyhow::anyhow!("adding bench products: {e:?}"))?;
    }
    let requests = Arc::new(AtomicU64::new(0));
    let counter = requests.clone();
    let router = sandbox.router().layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            counter.fetch_add(1, Ordering::Relaxed);
            next.run(req)
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    let sim = SandboxConfig::default();
    let kashflow = KashFlowClient::new(
        "kashflow",
        KashFlowConfig::new(
            format!("http://{addr}/kashflow/v2"),
            sim.kashflow.username.clone(),
            sim.kashflow.password.as_str().into(),
            sim.kashflow.memorable_word.as_str().into(),
        ),
    )
    .context("KashFlow client")?;
    let poll = KashFlowStockPoll::new(kashflow, std::time::Duration::from_secs(60));

    println!(
        "bench stock: {} products (+ the sandbox's own), {} changed between cycles, {} cycles each",
        args.products, args.changes, args.cycles
    );
    println!(
        "{:<22} {:>9} {:>8} {:>9} {:>10}",
        "cycle", "listed", "changes", "requests", "ms"
    );
    let mut cursor = None;
    let mut step = 0i64;
    for kind in ["first (syncs all)", "nothing changed", "changes"] {
        let repeats = if kind.starts_with("first") {
            1
        } else {
            args.cycles
        };
        let mut times = Vec::new();
        let mut last = (0, 0, 0);
        for _ in 0..repeats {
            if kind == "changes" {
                step += 1;
                for n in 0..args.changes.min(args.products) {
                    sandbox
                        .kashflow
                        .set_stock(&format!("BENCH{n:06}"), None, Decimal::from(100 + step))
                        .map_err(|e| anyhow::anyhow!("changing stock: {e:?}"))?;
                }
            }
            let before = requests.load(Ordering::Relaxed);
            let started = Instant::now();
            let batch = poll
                .poll(cursor.clone())
                .await
                .map_err(|f| anyhow::anyhow!("poll: {}", f.message))?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            last = (
                batch.listed,
                batch.changes.len(),
                requests.load(Ordering::Relaxed) - before,
            );
            if batch.cursor.is_some() {
                cursor = batch.cursor;
            }
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{:<22} {:>9} {:>8} {:>9} {:>10.1}",
            kind,
            last.0,
            last.1,
            last.2,
            times[times.len() / 2]
        );
    }
    println!("(ms: median; requests include the KashFlow login on the first cycle)");
    Ok(())
}
