//! `ledgerbridge bench mapping`: how long the order→invoice mapping of a
//! flow file takes once compiled. The fetched data (order, N lines, the
//! KashFlow product list) is prepared once; each iteration starts from a
//! copy of it, runs the flow's map steps (`customer_body`, `order_facts`,
//! `lines` per line, `invoice_body`) and turns the invoice into JSON, as a
//! run would.

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
const STEPS: &[&str] = &["customer_body", "order_facts", "lines", "invoice_body"];

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
    // Nanoseconds of each part of one mapping: the copy of the fetched
    // data, each step, the invoice's JSON.
    let mut parts = vec![0u64; steps.len() + 2];
    let once = |runner: &mut Runner, parts: &mut [u64]| -> anyhow::Result<Value> {
        let started = Instant::now();
        let mut data = base.clone();
        parts[0] = started.elapsed().as_nanos() as u64;
        for (index, (id, each, program)) in steps.iter().enumerate() {
            let started = Instant::now();
            let value = runner
                .map(*each, program, &mut data)
                .map_err(anyhow::Error::msg)?;
            if let VrlValue::Object(map) = &mut data {
                if let Some(VrlValue::Object(outputs)) = map.get_mut("steps") {
                    outputs.insert((*id).into(), value);
                }
            }
            parts[index + 1] = started.elapsed().as_nanos() as u64;
        }
        let started = Instant::now();
        let invoice = match &mut data {
            VrlValue::Object(map) => match map.get_mut("steps") {
                Some(VrlValue::Object(outputs)) => outputs.remove("invoice_body"),
                _ => None,
            },
            _ => None,
        };
        let json = to_json(invoice.unwrap_or(VrlValue::Null));
        parts[steps.len() + 1] = started.elapsed().as_nanos() as u64;
        Ok(json)
    };
    let invoice = once(&mut runner, &mut parts)?;
    let count = invoice["LineItems"].as_array().map(Vec::len).unwrap_or(0);
    if count < args.lines {
        bail!(
            "the mapping gave {count} invoice lines for {} order lines",
            args.lines
        );
    }
    for _ in 0..args.iterations / 10 {
        once(&mut runner, &mut parts)?;
    }
    let mut micros = Vec::with_capacity(args.iterations);
    let mut part_micros: Vec<Vec<f64>> = vec![Vec::with_capacity(args.iterations); parts.len()];
    for _ in 0..args.iterations {
        let start = Instant::now();
        let body = once(&mut runner, &mut parts)?;
        micros.push(start.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(body);
        for (index, nanos) in parts.iter().enumerate() {
            part_micros[index].push(*nanos as f64 / 1e3);
        }
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
    let mut names = vec!["copy of the fetched data".to_owned()];
    names.extend(steps.iter().map(|(id, _, _)| format!("step {id}")));
    names.push("invoice → JSON".to_owned());
    for (name, mut values) in names.into_iter().zip(part_micros) {
        values.sort_by(f64::total_cmp);
        println!("  {name:<26} median {:>7.1} µs", percentile(&values, 0.5));
    }
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
