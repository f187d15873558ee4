//! `ledgerbridge bench reconcile --orders N`: the sandbox seeded in-process
//! (untimed) with N orders over a week, their invoices (most paid), gateway
//! payments for half the paid orders and a known set of differences (every
//! kind), then the full reconciliation over real HTTP, timed: each
//! system's read, fetch, match, total, and the differences found, which
//! must equal those injected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use chrono::{Duration, NaiveDate, TimeZone, Utc};
use clap::Args;
use ledgerbridge_connectors::gateway::{GatewayClient, GatewayConfig};
use ledgerbridge_connectors::kashflow::{KashFlowClient, KashFlowConfig};
use ledgerbridge_connectors::ordercloud::{Direction, OrderCloudClient, OrderCloudConfig};
use ledgerbridge_core::Secret;
use ledgerbridge_reconcile::{DifferenceKind, Period, Reconciler};
use ledgerbridge_sandbox::{Sandbox, SandboxConfig};
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde_json::json;

/// Flags of `bench reconcile`.
#[derive(Debug, Args)]
pub struct ReconcileBenchArgs {
    /// Orders in the period (each with its invoice).
    #[arg(long, default_value_t = 100_000)]
    pub orders: usize,
    /// Differences injected of each kind.
    #[arg(long, default_value_t = 5)]
    pub per_kind: usize,
    /// Timed reconciliations (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

const DAYS: i64 = 7;

/// What was seeded beyond the consistent data.
struct Seeded {
    orders: usize,
    invoices: usize,
    payments: usize,
    injected: usize,
}

/// The order of index `i` has this fault (indices are disjoint per kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    NoInvoice,
    Duplicate,
    Amount,
    Vat,
    Unpaid,
    Overpaid,
}

fn fault_of(i: usize, per_kind: usize) -> Fault {
    let faults = [
        Fault::NoInvoice,
        Fault::Duplicate,
        Fault::Amount,
        Fault::Vat,
        Fault::Unpaid,
        Fault::Overpaid,
    ];
    // Faulty orders are spread: every 97th order, round robin over the kinds.
    if i % 97 != 13 {
        return Fault::None;
    }
    let slot = i / 97;
    if slot >= faults.len() * per_kind {
        return Fault::None;
    }
    faults[slot % faults.len()]
}

fn seed(sandbox: &Sandbox, n: usize, per_kind: usize, start: NaiveDate) -> anyhow::Result<Seeded> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let start = Utc.from_utc_datetime(&start.and_hms_opt(0, 0, 0).unwrap_or_default());
    let span = Duration::days(DAYS).num_seconds();
    let mut orders = Vec::with_capacity(n);
    let mut invoices = Vec::with_capacity(n + 2 * per_kind);
    let mut payments = 0;
    let mut injected = 0;
    let pct = |v: Decimal, p: i64| (v * Decimal::new(p, 2)).round_dp(2);
    for i in 0..n {
        let fault = fault_of(i, per_kind);
        let id = format!("BR-{i:06}");
        let at = start + Duration::seconds(span * i as i64 / n as i64);
        let net = Decimal::new(rng.gen_range(100..50_000), 2);
        let with_tax = fault == Fault::Vat || i % 10 == 0;
        let vat = pct(net, 20);
        let tax_cost = if with_tax { vat } else { Decimal::ZERO };
        let paid = match fault {
            Fault::Unpaid | Fault::Overpaid => true,
            Fault::None => i % 5 != 0,
            _ => false,
        };
        let status = if paid { "Completed" } else { "Open" };
        let total = net + tax_cost;
        let date = at.to_rfc3339();
        orders.push(json!({
            "ID": id, "FromUserID": "bench-buyer", "Status": status, "IsSubmitted": true,
            "DateCreated": date, "DateSubmitted": date, "LastUpdated": date,
            "Subtotal": net, "ShippingCost": 0, "TaxCost": tax_cost, "Gratuity": 0, "Fees": 0,
            "PromotionDiscount": 0, "Total": total, "Currency": "GBP", "LineItemCount": 1,
            "xp": {"Currency": "GBP"},
        }));
        if fault == Fault::NoInvoice {
            injected += 1;
            continue;
        }
        let (rate, vat_amount) = match fault {
            Fault::Amount => (net + Decimal::ONE, pct(net + Decimal::ONE, 20)),
            Fault::Vat => (net, vat + Decimal::new(50, 2)),
            _ => (net, vat),
        };
        let gross = rate + vat_amount;
        let issued = at.format("%Y-%m-%d %H:%M:%S").to_string();
        let payment =
            |reference: &str| json!({"Date": issued, "Amount": gross, "Reference": reference});
        let payment_lines = match fault {
            Fault::Unpaid => vec![],
            Fault::Overpaid => vec![payment("first"), payment("second")],
            _ if paid => vec![payment("ledgerbridge")],
            _ => vec![],
        };
        invoices.push(json!({
            "CustomerCode": "BENCH", "CustomerReference": id, "IssuedDate": issued,
            "Currency": {"Code": "GBP", "ExchangeRate": 1},
            "LineItems": [{"Description": "Goods", "Quantity": 1, "Rate": rate, "VATLevel": 20,
                           "VATAmount": vat_amount, "NominalCode": 4000}],
            "PaymentLines": payment_lines,
        }));
        if fault == Fault::Duplicate {
            let mut copy = invoices[invoices.len() - 1].clone();
            copy["PaymentLines"] = json!([]);
            invoices.push(copy);
        }
        if fault != Fault::None {
            injected += 1;
        }
        if paid && fault == Fault::None && i % 2 == 0 {
            let minor = i64::try_from((total * Decimal::ONE_HUNDRED).round().mantissa())
                .unwrap_or_default();
            sandbox
                .gateway
                .seed_payment_intent(&id, minor, "gbp", at.timestamp() + 1);
            payments += 1;
        }
    }
    let first_day = start.format("%Y-%m-%d 09:00:00").to_string();
    for k in 0..per_kind {
        invoices.push(json!({
            "CustomerCode": "BENCH", "CustomerReference": format!("GHOST-{k}"), "IssuedDate": first_day,
            "Currency": {"Code": "GBP", "ExchangeRate": 1},
            "LineItems": [{"Description": "Goods", "Quantity": 1, "Rate": 10, "VATLevel": 20,
                           "VATAmount": 2, "NominalCode": 4000}],
        }));
        sandbox.gateway.seed_payment_intent(
            &format!("LOST-{k}"),
            999,
            "gbp",
            start.timestamp() + 3600,
        );
        payments += 1;
        injected += 2;
    }
    let count = (orders.len(), invoices.len());
    sandbox.ordercloud.seed_orders(orders);
    sandbox
        .kashflow
        .seed(&[json!({"Code": "BENCH", "Name": "Bench Ltd"})], &invoices)
        .map_err(|err| anyhow::anyhow!("seeding KashFlow: {err}"))?;
    Ok(Seeded {
        orders: count.0,
        invoices: count.1,
        payments,
        injected,
    })
}

pub async fn run(args: ReconcileBenchArgs) -> anyhow::Result<()> {
    let sandbox = Sandbox::new(SandboxConfig::default());
    let start = NaiveDate::from_ymd_opt(2026, 11, 2).context("date")?;
    let seeding = Instant::now();
    let seeded = seed(&sandbox, args.orders, args.per_kind, start)?;
    let seed_secs = seeding.elapsed().as_secs_f64();
    let running = sandbox
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .context("starting the sandbox")?;
    let store = ledgerbridge_store::open("sqlite::memory:").await?;
    let kashflow = KashFlowClient::new(
        "kashflow",
        KashFlowConfig::new(
            running.kashflow_url(),
            "sim",
            Secret::new("sim-password"),
            Secret::new("pineapple"),
        ),
    )?;
    let ordercloud = OrderCloudClient::new(
        "ordercloud",
        OrderCloudConfig::new(
            running.ordercloud_url(),
            "ledgerbridge-sim-client",
            Secret::new("sim-secret"),
            "",
        ),
    )?;
    let gateway = GatewayClient::new(
        "gateway",
        GatewayConfig::new(running.gateway_url(), Secret::new("sk_test_sim")),
    )?;
    let reconciler = Arc::new(
        Reconciler::new(
            ordercloud,
            Direction::Incoming,
            kashflow,
            "kashflow",
            store,
            "GBP",
        )
        .with_gateway(gateway),
    );
    let period =
        Period::new(start, start + Duration::days(DAYS - 1)).map_err(anyhow::Error::msg)?;
    println!(
        "seeded in-process in {seed_secs:.1} s: {} orders, {} invoices, {} gateway payments, {} injected differences; period {} – {}",
        seeded.orders, seeded.invoices, seeded.payments, seeded.injected, period.from, period.to
    );
    println!();
    println!(
        "{:>6}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}  {:>11}",
        "run",
        "orders s",
        "invoices s",
        "gateway s",
        "ledger s",
        "lookups s",
        "fetch s",
        "match s",
        "total s",
        "differences"
    );
    let mut columns: [Vec<f64>; 8] = Default::default();
    let mut last = None;
    for run in 1..=args.runs.max(1) {
        let started = Instant::now();
        let report = reconciler.run(period).await?;
        let total = started.elapsed().as_secs_f64();
        let timings = report.timings.clone().unwrap_or_default();
        let systems = &timings.systems;
        let row = [
            systems.orders_ms / 1000.0,
            systems.invoices_ms / 1000.0,
            systems.gateway_ms / 1000.0,
            systems.ledger_ms / 1000.0,
            systems.lookups_ms / 1000.0,
            timings.fetch_ms / 1000.0,
            timings.match_ms / 1000.0,
            total,
        ];
        println!(
            "{run:>6}  {}  {:>11}",
            format_row(&row),
            report.difference_count()
        );
        for (column, value) in columns.iter_mut().zip(row) {
            column.push(value);
        }
        last = Some(report);
    }
    let report = last.context("no run")?;
    let medians = columns.map(|mut column| median(&mut column));
    println!("median  {}", format_row(&medians));
    println!(
        "(each system's time is its own wall clock: they are read side by side, then the lookups)"
    );
    println!();
    println!(
        "checked {} orders, {} invoices, {} payments; matched {} orders",
        report.checked.orders,
        report.checked.invoices,
        report.checked.payments.unwrap_or(0),
        report.matched.orders
    );
    for kind in DifferenceKind::ALL {
        println!(
            "  {:<28}{}",
            kind.as_str(),
            report.counts.get(&kind).copied().unwrap_or(0)
        );
    }
    let found = report.difference_count();
    if found != seeded.injected {
        bail!(
            "found {found} differences, injected {}: {:#?}",
            seeded.injected,
            report.differences
        );
    }
    println!("differences found = injected = {found}");
    running.shutdown().await?;
    Ok(())
}

/// Seconds, aligned under the headers (match with milliseconds).
fn format_row(row: &[f64; 8]) -> String {
    row.iter()
        .enumerate()
        .map(|(i, v)| {
            if i == 6 {
                format!("{v:>9.3}")
            } else {
                format!("{v:>9.2}")
            }
        })
        .collect::<Vec<_>>()
        .join("  ")
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}
