//! `ledgerbridge bench mapping`: how long the order→invoice mapping of a
//! flow file takes once compiled. The fetched data (order, N lines, the
//! KashFlow product list) is prepared once; each iteration starts from a
//! copy of it, runs the flow's map steps (`customer_body`, `lines` per
//! line, `invoice_body`) and turns the invoice into JSON, as a run would.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use ledgerbridge_mapping::load::CompiledKind;
use ledgerbridge_mapping::run::vrl_value::{ObjectMap, Value as VrlValue};
use ledgerbridge_mapping::run::{initial_data, to_json, Runner};
use ledgerbridge_mapping::{load_file, LoadedFlow};
use serde_json::{json, Value};

use crate::commands::bench::percentile;

/// Flags of `bench mapping`.
#[derive(Debug, Args)]
pub struct MappingArgs {
    /// The flow file.
    #[arg(long, default_value = "flows/order-to-invoice.yaml")]
    pub flow: PathBuf,
    /// Lines per order.
    #[arg(long, default_value_t = 10)]
    pub lines: usize,
    /// Timed mappings (after 10% as many untimed warm-up ones).
    #[arg(long, default_value_t = 20_000)]
    pub iterations: usize,
}

/// The map steps that turn an order into the invoice, in order.
const STEPS: &[&str] = &["customer_body", "lines", "invoice_body"];

fn sample(lines: usize) -> (Value, Value, Value) {
    let classes = ["standard", "reduced", "zero", "standard", "Standard"];
    let order = json!({
        "ID": "SO-BENCH", "FromUserID": "buyer01",
        "FromUser": {"ID": "buyer01", "FirstName": "Ada", "LastName": "Lovelace", "Email": "ada@example.com"},
        "BillingAddress": {"Street1": "1 High St", "City": "Leeds", "State": "West Yorkshire", "Zip": "LS1 1AA", "Country": "GB"},
        "Currency": "GBP", "Status": "Open", "DateSubmitted": "2025-01-15T10:00:00+00:00",
        "ShippingCost": 4.99, "PromotionDiscount": 2.5
    });
    let items: Vec<Value> = (0..lines)
        .map(|i| json!({
            "ID": format!("L{i}"), "ProductID": format!("P{i}"), "Quantity": 1 + i % 4,
            "UnitPrice": 3.33 + i as f64, "PromotionDiscount": if i == 0 { json!(1.0) } else { Value::Null },
            "Product": {"ID": format!("P{i}"), "Name": format!("Product {i}"), "xp": {"TaxClass": classes[i % classes.len()]}}
        }))
        .collect();
    // One product in ten is unknown to KashFlow: the default nominal code.
    let products: Vec<Value> = (0..lines)
        .filter(|i| i % 10 != 9)
        .map(|i| json!({"Code": format!("P{i}"), "NominalCode": 4000 + i}))
        .collect();
    (order, json!({"Items": items}), json!({"Data": products}))
}

pub fn run(args: MappingArgs) -> anyhow::Result<()> {
    let loaded = load_file(&args.flow).map_err(|errors| {
        anyhow::anyhow!(
            "{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    let steps = map_steps(&loaded)?;
    let (order, lines, products) = sample(args.lines);
    let mut base = initial_data(
        &loaded,
        &json!({"RouteParams": {"orderID": "SO-BENCH"}}),
        &Default::default(),
    );
    if let VrlValue::Object(map) = &mut base {
        let mut fetched = ObjectMap::new();
        fetched.insert("get_order".into(), VrlValue::from(order));
        fetched.insert("get_lines".into(), VrlValue::from(lines));
        fetched.insert("products".into(), VrlValue::from(products));
        map.insert("steps".into(), VrlValue::Object(fetched));
    }
    let mut runner = Runner::new();
    let once = |runner: &mut Runner| -> anyhow::Result<Value> {
        let mut data = base.clone();
        let mut invoice = VrlValue::Null;
        for (id, each, program) in &steps {
            let value = runner
                .map(*each, program, &mut data)
                .map_err(anyhow::Error::msg)?;
            if let VrlValue::Object(map) = &mut data {
                if let Some(VrlValue::Object(outputs)) = map.get_mut("steps") {
                    outputs.insert((*id).into(), value.clone());
                }
            }
            invoice = value;
        }
        Ok(to_json(invoice))
    };
    let invoice = once(&mut runner)?;
    let count = invoice["LineItems"].as_array().map(Vec::len).unwrap_or(0);
    if count < args.lines {
        bail!(
            "the mapping gave {count} invoice lines for {} order lines",
            args.lines
        );
    }
    for _ in 0..args.iterations / 10 {
        once(&mut runner)?;
    }
    let mut micros = Vec::with_capacity(args.iterations);
    for _ in 0..args.iterations {
        let start = Instant::now();
        let body = once(&mut runner)?;
        micros.push(start.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(body);
    }
    micros.sort_by(f64::total_cmp);
    println!(
        "flow {} version {}: order of {} lines → customer + invoice ({} invoice lines), compiled once, one thread",
        loaded.flow.name, loaded.version, args.lines, count
    );
    println!(
        "{} mappings: median {:.1} µs, p99 {:.1} µs, min {:.1} µs",
        args.iterations,
        percentile(&micros, 0.5),
        percentile(&micros, 0.99),
        micros.first().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}

type MapStep<'a> = (
    &'a str,
    Option<&'a ledgerbridge_mapping::load::Compiled>,
    &'a ledgerbridge_mapping::load::Compiled,
);

fn map_steps(flow: &LoadedFlow) -> anyhow::Result<Vec<MapStep<'_>>> {
    let mut out = Vec::new();
    for id in STEPS {
        let step = flow
            .steps
            .iter()
            .find(|s| s.id == *id)
            .with_context(|| format!("{} has no step {id}", flow.file.display()))?;
        let CompiledKind::Map { each, program } = &step.kind else {
            bail!("step {id} of {} is not a map step", flow.file.display());
        };
        out.push((*id, each.as_ref(), program));
    }
    Ok(out)
}
