//! The mapping language end to end: the shipped order-to-invoice flow on
//! random orders (money to the penny against a decimal model), rates from
//! an ECB file, and the errors a user sees at load and at run time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ledgerbridge_mapping::{load_file, load_str, run, RecordingConnector, Response, Status};
use proptest::prelude::*;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{json, Value};

fn shipped_flow() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../flows/order-to-invoice.yaml")
}

fn round(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

fn dec(v: &Value) -> Decimal {
    Decimal::from_str(v.to_string().trim_matches('"')).unwrap()
}

#[derive(Debug, Clone)]
struct Line {
    quantity: i64,
    unit_cents: i64,
    class: &'static str,
}

fn line_strategy() -> impl Strategy<Value = Line> {
    (
        1i64..50,
        1i64..100_000,
        prop::sample::select(vec!["standard", "reduced", "zero"]),
    )
        .prop_map(|(quantity, unit_cents, class)| Line {
            quantity,
            unit_cents,
            class,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every line's VAT is round(qty × price × rate / 100); the invoice's
    /// gross is what a decimal model of the order says, to the penny; and
    /// the home-currency gross is that gross converted once.
    #[test]
    fn invoices_match_a_decimal_model_to_the_penny(
        lines in prop::collection::vec(line_strategy(), 1..8),
        shipping_cents in 0i64..2_000,
        eur in any::<bool>(),
    ) {
        let flow = load_file(&shipped_flow()).unwrap();
        let items: Vec<Value> = lines.iter().enumerate().map(|(i, l)| json!({
            "ID": format!("L{i}"), "ProductID": format!("P{i}"), "Quantity": l.quantity,
            "UnitPrice": Decimal::new(l.unit_cents, 2).to_string().parse::<f64>().unwrap(),
            "Product": {"Name": format!("P{i}"), "xp": {"TaxClass": l.class}}
        })).collect();
        let order = json!({
            "ID": "SO-P", "FromUserID": "u", "Status": "Open", "DateSubmitted": "2025-06-01T12:00:00Z",
            "BillingAddress": {"Street1": "1 A St", "City": "Leeds", "Country": "GB"},
            "Currency": if eur { "EUR" } else { "GBP" },
            "ShippingCost": Decimal::new(shipping_cents, 2).to_string().parse::<f64>().unwrap(),
        });
        let mut connector = RecordingConnector::default();
        connector.responses.insert("get_order".into(), Response { status: 200, body: order });
        connector.responses.insert("get_lines".into(), Response { status: 200, body: json!({"Items": items}) });
        connector.responses.insert("products".into(), Response { status: 200, body: json!({"Data": []}) });
        connector.responses.insert("create_invoice".into(), Response { status: 201, body: json!({"Number": 7}) });
        let outcome = run(&flow, &json!({"RouteParams": {"orderID": "SO-P"}}), &BTreeMap::new(), &mut connector);
        prop_assert_eq!(outcome.status, Status::Completed, "{:?}", outcome.errors);

        let rate = |class: &str| match class { "standard" => Decimal::from(20), "reduced" => Decimal::from(5), _ => Decimal::ZERO };
        let mut model_gross = Decimal::ZERO;
        for l in &lines {
            let net = Decimal::from(l.quantity) * Decimal::new(l.unit_cents, 2);
            model_gross += round(net) + round(net * rate(l.class) / Decimal::ONE_HUNDRED);
        }
        let shipping = Decimal::new(shipping_cents, 2);
        if shipping > Decimal::ZERO {
            model_gross += shipping + round(shipping * Decimal::from(20) / Decimal::ONE_HUNDRED);
        }
        let invoice = outcome.requests.iter().find(|r| r.step == "create_invoice").unwrap().body.clone().unwrap();
        for (item, l) in invoice["LineItems"].as_array().unwrap().iter().zip(&lines) {
            let net = Decimal::from(l.quantity) * Decimal::new(l.unit_cents, 2);
            prop_assert_eq!(dec(&item["VATAmount"]), round(net * rate(l.class) / Decimal::ONE_HUNDRED));
        }
        let totals = &outcome.outputs["totals"];
        prop_assert_eq!(dec(&totals["gross"]), model_gross);
        let expected_home = if eur { round(model_gross / Decimal::from_str("1.17").unwrap()) } else { model_gross };
        prop_assert_eq!(dec(&totals["home_gross"]), expected_home);
    }
}

const ECB: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<gesmes:Envelope xmlns:gesmes="http://www.gesmes.org/xml/2002-08-01" xmlns="http://www.ecb.int/vocabulary/2002-08-01/eurofxref">
<Cube>
<Cube time="2025-01-15"><Cube currency="USD" rate="1.0316"/><Cube currency="GBP" rate="0.8425"/></Cube>
<Cube time="2025-01-14"><Cube currency="USD" rate="1.0245"/><Cube currency="GBP" rate="0.8400"/></Cube>
</Cube>
</gesmes:Envelope>
"#;

const FX_FLOW: &str = r#"version: 1
name: fx
trigger: { kind: manual }
tables:
  fx: { file: eurofxref.xml, max_age_days: 3 }
steps:
  - id: convert
    map:
      program: |
        { "rate": fx_rate!("GBP", "USD", .input.date), "usd": fx_convert!(.input.amount, "GBP", "USD", .input.date) }
"#;

#[test]
fn ecb_rates_from_a_file_convert_and_missing_days_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("eurofxref.xml"), ECB).unwrap();
    let path = dir.path().join("fx.yaml");
    std::fs::write(&path, FX_FLOW).unwrap();
    let flow = load_file(&path).unwrap_or_else(|e| panic!("{e:?}"));
    let go = |date: &str| {
        run(
            &flow,
            &json!({"date": date, "amount": "100.00"}),
            &BTreeMap::new(),
            &mut RecordingConnector::default(),
        )
    };
    let outcome = go("2025-01-15");
    assert_eq!(outcome.status, Status::Completed, "{:?}", outcome.errors);
    // 1.0316 / 0.8425 = 1.224451… USD per GBP.
    assert_eq!(
        outcome.outputs["convert"],
        json!({"rate": "1.224451", "usd": "122.45"})
    );
    // A Saturday uses Friday's rate (within max_age_days)…
    assert_eq!(go("2025-01-17").outputs["convert"]["usd"], json!("122.45"));
    // …but not a rate more than three days old.
    let outcome = go("2025-01-20");
    assert_eq!(outcome.status, Status::Parked);
    let error = &outcome.errors[0];
    assert!(
        error.contains("no GBP rate for 2025-01-20") && error.contains("2025-01-15"),
        "{error}"
    );
}

#[test]
fn runtime_errors_name_the_step_and_the_place_in_the_program() {
    let flow = load_str(
        Path::new("t.yaml"),
        "version: 1\nname: t\ntrigger: { kind: manual }\nsteps:\n  - id: total\n    map:\n      program: |\n        a = money!(.input.a)\n        money_add!(a, .input.b)\n",
    )
    .unwrap();
    let outcome = run(
        &flow,
        &json!({"a": "1.10", "b": "one"}),
        &BTreeMap::new(),
        &mut RecordingConnector::default(),
    );
    assert_eq!(outcome.status, Status::Parked);
    insta::assert_snapshot!(outcome.errors[0], @r#"steps[0].map.program: function call error for "money_add" at line 2, column 1 of the program: money_add: b must be a decimal number, not "one""#);
}

#[test]
fn unknown_value_maps_are_found_at_load_time() {
    let errors = load_str(
        Path::new("t.yaml"),
        "version: 1\nname: t\ntrigger: { kind: manual }\ntables:\n  value_maps: { status: { Completed: Paid } }\nsteps:\n  - id: s\n    map:\n      program: |\n        value_map!(\"statuses\", .input.Status)\n",
    )
    .unwrap_err();
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    insta::assert_snapshot!(text.join("\n"), @r#"
    t.yaml:10:20: steps[0].map.program: value map "statuses" does not exist
      help: add it under tables.value_maps or use one of: status
    "#);
}
