//! `ledgerbridge demo`: the sandbox, the engine on a fresh SQLite file, and
//! a stream of sample orders, with live progress in the terminal; then a
//! stocktake in KashFlow that the inventory sync carries to OrderCloud. Keeps
//! serving until Ctrl-C (or exits when done with `--exit-when-done`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use ledgerbridge_connectors::kashflow::KashFlowConfig;
use ledgerbridge_connectors::ordercloud::{
    OrderCloudClient, OrderCloudConfig, Webhook, WebhookRoute,
};
use ledgerbridge_connectors::xconnect::XConnectConfig;
use ledgerbridge_engine::flows::inventory_sync;
use ledgerbridge_sandbox::driver::{self, DriverConfig, DriverCredentials, DriverReport};
use ledgerbridge_sandbox::RunningSandbox;
use ledgerbridge_server::{GatewaySource, OrderCloudSource};
use ledgerbridge_store::{RunFilter, RunState, Store};
use rust_decimal::Decimal;

use crate::commands::run::{shutdown_signal, App};
use crate::commands::sandbox::{print_urls, sandbox_config};
use crate::config::Config;
use crate::connections::{KASHFLOW_CONNECTION, ORDERCLOUD_CONNECTION};

/// Flags of `ledgerbridge demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Sample orders to place.
    #[arg(long, default_value_t = 50)]
    pub orders: usize,
    /// Orders per second.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Engine listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Sandbox listen address.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub sandbox_listen: SocketAddr,
    /// Fault rules for the sandbox (see `ledgerbridge sandbox --help`).
    #[arg(long = "fault", value_name = "SPEC")]
    pub faults: Vec<String>,
    /// Exit once every order is invoiced (or parked) instead of serving on.
    #[arg(long)]
    pub exit_when_done: bool,
    /// Database file for the demo (recreated at start).
    #[arg(long, default_value = "data/demo.db")]
    pub db_file: String,
}

const DEMO_HASH_KEY: &str = "ledgerbridge-demo-hash-key";
const SUBMIT_ROUTE: &str = "v1/orders/{direction}/{orderID}/submit";
const COMPLETE_ROUTE: &str = "v1/orders/{direction}/{orderID}/complete";

/// Runs the storefront driver against a sandbox and prints its report.
pub async fn drive(
    sandbox: &RunningSandbox,
    orders: usize,
    rate: f64,
) -> anyhow::Result<DriverReport> {
    let config = DriverConfig {
        orders,
        rate_per_sec: rate,
        ..DriverConfig::default()
    };
    let report = driver::run(
        &sandbox.ordercloud_url(),
        Some(&sandbox.gateway_url()),
        &DriverCredentials::default(),
        &config,
    )
    .await
    .context("storefront driver")?;
    println!(
        "driver: {} orders submitted ({} failed), {} lines ({} with products unknown to KashFlow), {} new customers, {} paid through the gateway",
        report.orders_submitted,
        report.orders_failed,
        report.line_items,
        report.unknown_product_lines,
        report.new_customers,
        report.payments
    );
    for error in &report.errors {
        println!("  driver error: {error}");
    }
    Ok(report)
}

fn count(counts: &[(RunState, i64)], state: RunState) -> i64 {
    counts
        .iter()
        .find(|(s, _)| *s == state)
        .map(|c| c.1)
        .unwrap_or(0)
}

/// Runs of the inventory flow: (all, succeeded).
async fn stock_runs(store: &dyn Store) -> anyhow::Result<(i64, i64)> {
    let runs = store
        .list_runs(&RunFilter {
            flow: Some(inventory_sync::NAME.to_owned()),
            limit: 1000,
            ..RunFilter::default()
        })
        .await?;
    let done = runs
        .iter()
        .filter(|r| r.state == RunState::Succeeded)
        .count();
    Ok((runs.len() as i64, done as i64))
}

/// One progress line; returns (runs, runs still to do).
async fn progress_line(store: &dyn Store, started: Instant) -> anyhow::Result<(i64, i64)> {
    let counts = store.count_by_state().await?;
    let invoices = store.ledger(KASHFLOW_CONNECTION, "invoice").await?.len();
    let payments = store.ledger(KASHFLOW_CONNECTION, "payment").await?.len();
    let (_, stock_done) = stock_runs(store).await?;
    let total: i64 = counts.iter().map(|c| c.1).sum();
    let pending = count(&counts, RunState::Queued)
        + count(&counts, RunState::Running)
        + count(&counts, RunState::Retrying);
    println!(
        "[{:>5.1}s] runs {:>4} | queued {:>4} running {:>3} retrying {:>3} parked {:>3} | invoices {:>4} payments {:>4} | stock syncs {:>3}",
        started.elapsed().as_secs_f64(),
        total,
        count(&counts, RunState::Queued),
        count(&counts, RunState::Running),
        count(&counts, RunState::Retrying),
        count(&counts, RunState::Parked),
        invoices,
        payments,
        stock_done
    );
    Ok((total, pending))
}

/// The demo's stock levels: a delivery before the shop opens (so sample
/// orders do not run out), synced by the first poll.
fn stock_delivery(sandbox: &RunningSandbox) -> anyhow::Result<()> {
    for id in 1..=6 {
        sandbox
            .sandbox
            .kashflow
            .set_stock(&format!("WID{id}"), None, Decimal::from(500))
            .map_err(|e| anyhow::anyhow!("setting demo stock: {e:?}"))?;
    }
    Ok(())
}

/// OrderCloud's `QuantityAvailable` of a product, as the simulator holds it.
fn ordercloud_available(sandbox: &RunningSandbox, id: &str) -> Option<i64> {
    let snapshot = sandbox.sandbox.ordercloud.snapshot();
    snapshot["Products"]
        .as_array()?
        .iter()
        .find(|p| p["ID"] == id)?["Inventory"]["QuantityAvailable"]
        .as_i64()
}

/// KashFlow's `QuantityInStock` of a product, as the simulator holds it.
fn kashflow_in_stock(sandbox: &RunningSandbox, code: &str) -> Option<String> {
    let snapshot = sandbox.sandbox.kashflow.snapshot();
    let product = snapshot["Products"]
        .as_array()?
        .iter()
        .find(|p| p["Code"] == code)?
        .clone();
    Some(match &product["QuantityInStock"] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// A stocktake in KashFlow after the orders: two levels change, and the
/// demo waits for each to reach OrderCloud. WID5 falls to its warning
/// level, so a `stock.low` alert is raised.
async fn stocktake(sandbox: &RunningSandbox) -> anyhow::Result<()> {
    for (code, quantity) in [("WID2", 7), ("WID5", 3)] {
        sandbox
            .sandbox
            .kashflow
            .set_stock(code, None, Decimal::from(quantity))
            .map_err(|e| anyhow::anyhow!("stocktake: {e:?}"))?;
        println!("stocktake: KashFlow {code} set to {quantity}");
    }
    let started = Instant::now();
    let mut pending = vec![("WID2", 7), ("WID5", 3)];
    while !pending.is_empty() && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        pending.retain(|(code, quantity)| {
            let arrived = ordercloud_available(sandbox, code) == Some(*quantity);
            if arrived {
                println!(
                    "stocktake: OrderCloud {code} now {quantity} ({:.1} s after the change)",
                    started.elapsed().as_secs_f64()
                );
            }
            !arrived
        });
    }
    for (code, _) in pending {
        println!(
            "stocktake: OrderCloud {code} not updated after 30 s; see `ledgerbridge runs list`"
        );
    }
    Ok(())
}

/// KashFlow stock against OrderCloud availability for the storefront's
/// products (invoices reduce KashFlow's stock; the poll carries it over).
fn stock_table(sandbox: &RunningSandbox) {
    println!("stock      KashFlow  OrderCloud");
    for id in 1..=6 {
        let code = format!("WID{id}");
        println!(
            "  {code:<8} {:>8}  {:>10}",
            kashflow_in_stock(sandbox, &code).unwrap_or_else(|| "-".to_owned()),
            ordercloud_available(sandbox, &code).map_or("-".to_owned(), |q| q.to_string())
        );
    }
}

pub async fn run(mut config: Config, args: DemoArgs) -> anyhow::Result<()> {
    let sandbox = ledgerbridge_sandbox::serve(
        sandbox_config(None, &args.faults, None)?,
        args.sandbox_listen,
    )
    .await
    .with_context(|| format!("starting the sandbox on {}", args.sandbox_listen))?;
    print_urls(&sandbox);

    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", args.db_file));
    }
    config.database.url = format!("sqlite://{}", args.db_file);
    config.server.listen = args.listen.clone();
    let sim = ledgerbridge_sandbox::config::SandboxConfig::default();
    config.connections.kashflow = Some(KashFlowConfig::new(
        sandbox.kashflow_url(),
        sim.kashflow.username.clone(),
        sim.kashflow.password.as_str().into(),
        sim.kashflow.memorable_word.as_str().into(),
    ));
    let credentials = DriverCredentials::default();
    let oc_config = OrderCloudConfig::new(
        sandbox.ordercloud_url(),
        credentials.client_id.clone(),
        credentials.client_secret.as_str().into(),
        "",
    );
    config.connections.ordercloud = Some(oc_config.clone());
    config.connections.xconnect = Some(XConnectConfig::new(sandbox.xconnect_url()));
    config.sources.ordercloud.insert(
        "demo".to_owned(),
        OrderCloudSource {
            hash_key: DEMO_HASH_KEY.into(),
        },
    );
    // Customers both ways: KashFlow polled every 2 s; KashFlow-only
    // customers get an OrderCloud user in the storefront's buyer.
    config.flows.customer_sync.buyer_id = "BUYER1".to_owned();
    config.flows.customer_sync.poll_interval_secs = 2;
    // Reconciliation reads the gateway's payments too.
    config.connections.gateway = Some(ledgerbridge_connectors::gateway::GatewayConfig::new(
        sandbox.gateway_url(),
        credentials.gateway_api_key.as_str().into(),
    ));
    // Stock levels follow KashFlow (polled every 2 s in the demo).
    config.flows.inventory_sync.enabled = true;
    config.flows.inventory_sync.poll_interval_secs = 2;
    stock_delivery(&sandbox)?;
    config.sources.gateway.insert(
        "demo".to_owned(),
        GatewaySource {
            signing_secret: sim.gateway.webhook_secret.as_str().into(),
            tolerance_secs: 300,
        },
    );
    let app = App::start(&config).await?;
    println!(
        "engine on http://{} (SQLite {}); runs API at /api/runs, metrics at /metrics",
        app.addr, args.db_file
    );
    // The gateway's payments, refunds and payouts go to the engine.
    sandbox
        .sandbox()
        .gateway
        .add_webhook_endpoint(&format!("http://{}/webhooks/gateway/demo", app.addr));

    let ordercloud = OrderCloudClient::new(ORDERCLOUD_CONNECTION, oc_config)?;
    ordercloud
        .create_webhook(&Webhook {
            id: Some("ledgerbridge-demo".to_owned()),
            name: Some("Ledgerbridge: order submitted".to_owned()),
            url: Some(format!("http://{}/webhooks/ordercloud/demo", app.addr)),
            hash_key: Some(DEMO_HASH_KEY.into()),
            webhook_routes: Some(
                [
                    (SUBMIT_ROUTE, "POST"),
                    (COMPLETE_ROUTE, "POST"),
                    ("v1/buyers/{buyerID}/users", "POST"),
                    ("v1/buyers/{buyerID}/users/{userID}", "PATCH"),
                ]
                .into_iter()
                .map(|(route, verb)| WebhookRoute {
                    route: Some(route.to_owned()),
                    verb: Some(verb.to_owned()),
                })
                .collect(),
            ),
            ..Webhook::default()
        })
        .await
        .map_err(|f| anyhow::anyhow!("registering the submit webhook with OrderCloud: {f}"))?;
    println!(
        "placing {} sample orders at {}/s; every submitted order should become one KashFlow invoice, \
         and about half are paid through the gateway: each payment lands on its invoice once",
        args.orders, args.rate
    );

    let started = Instant::now();
    let driving = {
        let ordercloud_url = sandbox.ordercloud_url();
        let gateway_url = sandbox.gateway_url();
        let config = DriverConfig {
            orders: args.orders,
            rate_per_sec: args.rate,
            ..DriverConfig::default()
        };
        tokio::spawn(async move {
            driver::run(&ordercloud_url, Some(&gateway_url), &credentials, &config).await
        })
    };
    let mut report: Option<DriverReport> = None;
    let mut extras_sent = false;
    let mut driving = Some(driving);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let deadline = Duration::from_secs(120 + (args.orders as f64 / args.rate.max(0.1)) as u64);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown_signal() => {
                println!("stopping");
                app.stop().await;
                return Ok(());
            }
        }
        if let Some(task) = driving.as_ref() {
            if task.is_finished() {
                if let Some(task) = driving.take() {
                    let finished = task
                        .await
                        .context("driver task")?
                        .context("storefront driver")?;
                    println!(
                        "driver done: {} orders submitted ({} failed), {} lines, {} with products unknown to KashFlow",
                        finished.orders_submitted, finished.orders_failed, finished.line_items, finished.unknown_product_lines
                    );
                    report = Some(finished);
                }
            }
        }
        let (total, pending) = progress_line(app.store.as_ref(), started).await?;
        if let Some(r) = &report {
            if total >= r.orders_submitted as i64 && pending == 0 {
                if !extras_sent && r.payments > 0 {
                    // A partial refund of the first payment and a payout
                    // with its fee, to show them handled too.
                    extras_sent = true;
                    match refund_and_payout(&sandbox).await {
                        Ok(line) => println!("{line}"),
                        Err(err) => println!("  refund/payout not sent: {err:#}"),
                    }
                    continue;
                }
                break;
            }
        }
        if started.elapsed() > deadline {
            println!(
                "not finished after {} s; see `ledgerbridge runs list`",
                deadline.as_secs()
            );
            break;
        }
    }
    summary(app.store.as_ref(), &sandbox).await?;
    stocktake(&sandbox).await?;
    // One more poll after the last invoices, then the levels side by side.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stock_table(&sandbox);
    customer_changes(&sandbox, &ordercloud).await;
    reconciliation(&config, app.store.clone()).await;
    if args.exit_when_done {
        app.stop().await;
        sandbox.shutdown().await?;
        return Ok(());
    }
    println!(
        "serving; try `curl http://{}/api/runs?state=parked` — Ctrl-C to stop",
        app.addr
    );
    shutdown_signal().await;
    app.stop().await;
    sandbox.shutdown().await?;
    Ok(())
}

/// Customers both ways: a shopper edits their phone in OrderCloud, and
/// the accountant adds a trade customer in KashFlow; each reaches the other
/// system (and xConnect) once, and the echoes of our own writes are dropped.
async fn customer_changes(sandbox: &RunningSandbox, ordercloud: &OrderCloudClient) {
    let started = Instant::now();
    let phone = "0113 496 0999";
    if let Err(f) = ordercloud
        .patch_user("BUYER1", "buyer01", &serde_json::json!({"Phone": phone}))
        .await
    {
        println!("customers: changing buyer01 in OrderCloud failed: {f}");
        return;
    }
    println!("customers: OrderCloud user buyer01 changed their phone to {phone}");
    let body = serde_json::json!({
        "Code": "TRADE1", "Name": "Grace Hopper",
        "Contacts": [{"Firstname": "Grace", "LastName": "Hopper", "Email": "grace@example.com"}],
    });
    if let Err(e) = sandbox.sandbox.kashflow.seed_customers(&[body]) {
        println!("customers: adding TRADE1 in KashFlow failed: {e:?}");
        return;
    }
    println!("customers: KashFlow customer TRADE1 (Grace Hopper) added by the accountant");
    let (mut phone_done, mut user_done) = (false, false);
    while started.elapsed() < Duration::from_secs(30) && !(phone_done && user_done) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let snapshot = sandbox.sandbox.kashflow.snapshot();
        if !phone_done {
            phone_done = snapshot["Customers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| {
                    c["Code"] == "OC-BUYER01"
                        && c["Contacts"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|k| k["Telephone"] == phone)
                });
            if phone_done {
                println!(
                    "customers: KashFlow OC-BUYER01 has the new phone ({:.1} s)",
                    started.elapsed().as_secs_f64()
                );
            }
        }
        if !user_done {
            user_done = matches!(
                ordercloud.get_user("BUYER1", "kf-trade1").await,
                Ok(Some(_))
            );
            if user_done {
                println!(
                    "customers: OrderCloud user kf-trade1 created for TRADE1, xConnect contact too ({:.1} s)",
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
    if !(phone_done && user_done) {
        println!(
            "customers: not synced within 30 s; see `ledgerbridge runs list --flow customer-sync`"
        );
    }
}

/// Today's reconciliation: orders ↔ invoices ↔ payments, differences by kind.
async fn reconciliation(config: &Config, store: Arc<dyn Store>) {
    let reconciler = match crate::connections::build_reconciler(config, store) {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(err) => {
            println!("reconciliation: not available: {err:#}");
            return;
        }
    };
    let today = chrono::Utc::now().date_naive();
    let Ok(period) = ledgerbridge_reconcile::Period::new(today, today) else {
        return;
    };
    use ledgerbridge_reconcile::Reconcile;
    match reconciler.reconcile(period).await {
        Ok(report) => {
            let summary = report.summary();
            let checked = &summary["checked"];
            let kinds: Vec<String> = summary["counts"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
                .map(|(kind, n)| format!("{kind} {n}"))
                .collect();
            println!(
                "reconciliation for {today}: {} orders, {} invoices, {} payments, {} refunds checked; {} differences{}",
                checked["orders"],
                checked["invoices"],
                checked["payments"],
                checked["refunds"],
                report.difference_count(),
                if kinds.is_empty() { String::new() } else { format!(": {}", kinds.join(", ")) }
            );
            println!(
                "  (`ledgerbridge reconcile --from {today} --to {today}` prints each with its fix; \
                 the storefront charges an order's OrderCloud Total, which carries no VAT in the \
                 simulator, so paid orders whose invoice still owes VAT are listed)"
            );
        }
        Err(err) => println!("reconciliation failed: {err}"),
    }
}

async fn summary(store: &dyn Store, sandbox: &RunningSandbox) -> anyhow::Result<()> {
    let invoices = store.ledger(KASHFLOW_CONNECTION, "invoice").await?;
    let customers = store.ledger(KASHFLOW_CONNECTION, "customer").await?;
    println!(
        "done: {} invoices and {} customers created in KashFlow ({})",
        invoices.len(),
        customers.len(),
        sandbox.kashflow_url()
    );
    payments_summary(store, sandbox).await?;
    let parked = store
        .list_runs(&RunFilter {
            state: Some(RunState::Parked),
            limit: 20,
            ..RunFilter::default()
        })
        .await?;
    for run in parked {
        if let Some(error) = run.last_error {
            println!(
                "  parked {}: {} at {}: {}",
                run.id,
                error.class,
                error.step.unwrap_or_default(),
                error.message
            );
        }
    }
    Ok(())
}

/// Refunds part of the first gateway payment and pays out what the gateway
/// took (with its fee); returns what was sent.
async fn refund_and_payout(sandbox: &RunningSandbox) -> anyhow::Result<String> {
    let client = reqwest::Client::new();
    let base = sandbox.gateway_url();
    let key = DriverCredentials::default().gateway_api_key;
    let intents: serde_json::Value = client
        .get(format!("{base}/v1/payment_intents"))
        .bearer_auth(&key)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let list = intents["data"].as_array().cloned().unwrap_or_default();
    let Some(first) = list.first() else {
        anyhow::bail!("the gateway holds no payments");
    };
    let refund_amount = (first["amount"].as_i64().unwrap_or(0) / 4).max(1);
    client
        .post(format!("{base}/v1/refunds"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"payment_intent": first["id"], "amount": refund_amount}))
        .send()
        .await?
        .error_for_status()?;
    let currency = first["currency"].as_str().unwrap_or("gbp").to_owned();
    let same: Vec<&serde_json::Value> = list.iter().filter(|i| i["currency"] == currency).collect();
    let gross: i64 = same.iter().filter_map(|i| i["amount"].as_i64()).sum();
    let ids: Vec<&serde_json::Value> = same.iter().map(|i| &i["id"]).collect();
    client
        .post(format!("{base}/v1/payouts"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"amount": gross, "currency": currency, "payment_intents": ids}))
        .send()
        .await?
        .error_for_status()?;
    Ok(format!(
        "gateway: refunded {refund_amount} minor units of {} ({}) and paid out {} {currency} payments ({gross} minor units gross)",
        first["id"].as_str().unwrap_or_default(),
        first["metadata"]["order_id"].as_str().unwrap_or_default(),
        same.len()
    ))
}

/// What the payment flow did: payments, refunds and payouts in the ledger,
/// and the KashFlow invoices' paid state.
async fn payments_summary(store: &dyn Store, sandbox: &RunningSandbox) -> anyhow::Result<()> {
    let payments = store.ledger(KASHFLOW_CONNECTION, "payment").await?.len();
    let refunds = store.ledger(KASHFLOW_CONNECTION, "refund").await?.len();
    let payouts = store.ledger(KASHFLOW_CONNECTION, "payout").await?.len();
    let snapshot = sandbox.sandbox().kashflow.snapshot();
    let invoices = snapshot["Invoices"].as_array().cloned().unwrap_or_default();
    let paid = invoices.iter().filter(|i| i["Status"] == "Paid").count();
    let part_paid = invoices
        .iter()
        .filter(|i| {
            i["Status"] != "Paid" && i["TotalPaidAmount"].as_f64().is_some_and(|p| p != 0.0)
        })
        .count();
    println!(
        "payments: {payments} gateway payments and {refunds} refunds applied, {payouts} payouts recorded; \
         invoices paid {paid}, part-paid {part_paid}, unpaid {}",
        invoices.len() - paid - part_paid
    );
    println!(
        "  (the storefront driver charges an order's OrderCloud Total, which carries no VAT in the \
         simulator, so a paid order's invoice still owes its VAT)"
    );
    for invoice in invoices
        .iter()
        .filter(|i| i["TotalPaidAmount"].as_f64().is_some_and(|p| p != 0.0))
        .take(5)
    {
        println!(
            "  invoice {} ({}): gross {} {} paid {} due {} — {}",
            invoice["Number"],
            invoice["CustomerReference"].as_str().unwrap_or_default(),
            invoice["GrossAmount"],
            invoice["Currency"]["Code"].as_str().unwrap_or_default(),
            invoice["TotalPaidAmount"],
            invoice["DueAmount"],
            invoice["Status"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}
