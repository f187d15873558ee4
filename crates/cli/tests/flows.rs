//! Flow files through the real binary: `validate` errors (snapshots),
//! `test` on the shipped flows, `dry-run`; and the shipped flow files
//! against the built-in Rust flows: the same input must give the same
//! KashFlow invoice body, and the same payment line.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::cli_in;
use ledgerbridge_connectors::kashflow::Product;
use ledgerbridge_connectors::ordercloud::{LineItem, Order};
use ledgerbridge_engine::flows::order_to_invoice::{map_invoice, OrderToInvoiceSettings};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `validate` on a broken flow written to `FLOW.yaml`: its stderr.
fn validate_errors(flow: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("FLOW.yaml"), flow).unwrap();
    let (code, _, err) = cli_in(dir.path(), &["validate", "FLOW.yaml"]);
    assert_eq!(code, 1, "{err}");
    err
}

const GOOD: &str = r#"version: 1
name: tiny
trigger: { kind: manual }
connections:
  kashflow: kashflow:main
steps:
  - id: body
    map:
      program: |
        { "Amount": to_number!(round_money!(money_mul!(.input.qty, .input.price))) }
  - id: send
    action:
      connection: kashflow
      method: POST
      path: '"/invoices"'
      body: .steps.body
"#;

#[test]
fn a_good_flow_validates() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tiny.yaml"), GOOD).unwrap();
    let (code, out, err) = cli_in(dir.path(), &["validate", "tiny.yaml"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("flow tiny version 0+"), "{out}");
}

#[test]
fn the_mapping_benchmark_floor_flow_validates() {
    let (code, out, err) = cli_in(&repo(), &["validate", "flows/bench/mapping-floor.yaml"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("flow mapping-floor version 0+"), "{out}");
}

#[test]
fn validate_names_an_unknown_key_with_its_path_and_position() {
    let flow = GOOD.replace("      method: POST", "      methd: POST");
    insta::assert_snapshot!("unknown_key", validate_errors(&flow));
}

#[test]
fn validate_shows_the_vrl_error_with_its_span() {
    let flow = GOOD.replace(
        "money_mul!(.input.qty, .input.price)",
        "money_mul!(.input.qty .input.price)",
    );
    insta::assert_snapshot!("bad_vrl", validate_errors(&flow));
}

#[test]
fn validate_names_a_missing_step() {
    let flow = GOOD.replace("  - id: send\n", "  - id: send\n    next: notify\n");
    insta::assert_snapshot!("missing_step", validate_errors(&flow));
}

#[test]
fn validate_reports_yaml_syntax_with_line_and_column() {
    let flow = GOOD.replace(
        "      path: '\"/invoices\"'",
        "      path: '\"/invoices\"\n      body: x",
    );
    insta::assert_snapshot!("yaml_syntax", validate_errors(&flow));
}

#[test]
fn validate_finds_loops_and_undeclared_connections() {
    let flow = GOOD
        .replace("  - id: send\n", "  - id: send\n    next: body\n")
        .replace("connection: kashflow\n", "connection: kashflw\n");
    insta::assert_snapshot!("loop_and_connection", validate_errors(&flow));
    let flow = GOOD.replace("  - id: send\n", "  - id: send\n    next: body\n");
    insta::assert_snapshot!("loop", validate_errors(&flow));
}

#[test]
fn the_shipped_flows_pass_their_own_tests() {
    let (code, out, err) = cli_in(&repo(), &["test"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("order-to-invoice"), "{out}");
    assert!(out.contains("payment-to-invoice"), "{out}");
    assert!(out.contains("inventory-sync"), "{out}");
    assert!(out.contains(" 0 failed"), "{out}");
}

#[test]
fn a_failing_flow_test_exits_non_zero_and_says_why() {
    let text = std::fs::read_to_string(repo().join("flows/order-to-invoice.yaml")).unwrap();
    let broken = text.replacen("\"VATAmount\": 5,", "\"VATAmount\": 5.01,", 1);
    assert_ne!(broken, text);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("o2i.yaml"), broken).unwrap();
    let (code, out, _) = cli_in(dir.path(), &["test", "o2i.yaml"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED"), "{out}");
    assert!(
        out.contains("body.LineItems[0].VATAmount: expected 5.01, got 5"),
        "{out}"
    );
}

#[test]
fn dry_run_prints_the_requests_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("input.json"),
        r#"{"qty": 3, "price": "3.335"}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("tiny.yaml"), GOOD).unwrap();
    let (code, out, err) = cli_in(
        dir.path(),
        &["dry-run", "tiny.yaml", "--input", "input.json"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("POST kashflow /invoices"), "{out}");
    assert!(
        out.contains("\"Amount\": 10.01"),
        "3 × 3.335 = 10.005 → 10.01: {out}"
    );
    assert!(out.contains("Completed"), "{out}");
}

/// The built-in Rust mapping and the flow file agree on every invoice the
/// flow's tests create.
#[test]
fn the_flow_file_maps_invoices_exactly_like_the_built_in_flow() {
    let path = repo().join("flows/order-to-invoice.yaml");
    let flow = ledgerbridge_mapping::load_file(&path).unwrap_or_else(|e| panic!("{e:?}"));
    let settings = OrderToInvoiceSettings::default();
    let mut compared = 0;
    for case in &flow.flow.tests {
        if case.vars.contains_key("unknown_product") {
            continue;
        }
        let result = ledgerbridge_mapping::run_test(&flow, case);
        let Some(request) = result
            .outcome
            .requests
            .iter()
            .find(|r| r.step == "create_invoice")
        else {
            continue;
        };
        let order: Order =
            serde_json::from_value(case.responses["get_order"].body.clone()).unwrap();
        let lines: Vec<LineItem> =
            serde_json::from_value(case.responses["get_lines"].body["Items"].clone()).unwrap();
        let products: HashMap<String, Product> =
            serde_json::from_value::<Vec<Product>>(case.responses["products"].body["Data"].clone())
                .unwrap()
                .into_iter()
                .map(|p| (p.code.clone().unwrap().to_ascii_uppercase(), p))
                .collect();
        let code = request.body.as_ref().unwrap()["CustomerCode"]
            .as_str()
            .unwrap()
            .to_owned();
        let rust = map_invoice(&settings, &order, &lines, &products, &code)
            .unwrap_or_else(|f| panic!("{}: {}", case.name, f.message));
        let rust_body: Value = serde_json::to_value(&rust.invoice).unwrap();
        let mut differences = Vec::new();
        ledgerbridge_mapping::run::diff_json(
            "invoice",
            &rust_body,
            request.body.as_ref().unwrap(),
            &mut differences,
        );
        assert!(differences.is_empty(), "{}: {differences:#?}", case.name);
        compared += 1;
    }
    assert!(compared >= 5, "only {compared} invoices compared");
}

#[test]
fn dry_run_of_the_shipped_flow_with_sample_files() {
    let (code, out, err) = cli_in(
        &repo(),
        &[
            "dry-run",
            "flows/order-to-invoice.yaml",
            "--input",
            "flows/samples/order-submitted.json",
            "--responses",
            "flows/samples/responses.json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("POST kashflow /invoices  (step create_invoice)"),
        "{out}"
    );
    assert!(out.contains("business key: invoice:order:SO-1002"), "{out}");
    assert!(out.contains("\"ExchangeRate\": 1.17"), "{out}");
    assert!(out.contains("run: Completed"), "{out}");
}

/// The payment flow file and the built-in Rust flow write the same payment
/// line (amount, reference, note, refund flag) for every payment its tests
/// send, and read the same amount from the event.
#[test]
fn the_payment_flow_file_pays_exactly_like_the_built_in_flow() {
    use ledgerbridge_connectors::kashflow::Invoice;
    use ledgerbridge_engine::flows::payments::{
        decide, parse_event, Overpayment, PaymentEvent, PaymentSettings,
    };
    use rust_decimal::Decimal;
    use std::str::FromStr;

    let path = repo().join("flows/payment-to-invoice.yaml");
    let flow = ledgerbridge_mapping::load_file(&path).unwrap_or_else(|e| panic!("{e:?}"));
    let mut compared = 0;
    for case in &flow.flow.tests {
        let result = ledgerbridge_mapping::run_test(&flow, case);
        let Some(request) = result.outcome.requests.iter().find(|r| r.step == "pay") else {
            continue;
        };
        let PaymentEvent::Apply {
            order_id,
            movements,
        } = parse_event(&case.input).unwrap_or_else(|f| panic!("{}: {}", case.name, f.message))
        else {
            panic!("{}: not a payment", case.name);
        };
        let movement = movements.last().unwrap();
        let file_amount = result.outcome.outputs["payment"]["amount"]
            .as_str()
            .unwrap();
        assert_eq!(
            Decimal::from_str(file_amount).unwrap(),
            movement.amount,
            "{}",
            case.name
        );
        let settings = PaymentSettings {
            overpayment: match case.vars.get("overpayment").and_then(Value::as_str) {
                Some("cap") => Overpayment::Cap,
                _ => Overpayment::Apply,
            },
            ..PaymentSettings::default()
        };
        let invoice: Invoice =
            serde_json::from_value(case.responses["get_invoice"].body.clone()).unwrap();
        let (line, _) = decide(&settings, &order_id, movement, &invoice)
            .unwrap_or_else(|f| panic!("{}: {}", case.name, f.message));
        let line = line.unwrap_or_else(|| panic!("{}: Rust writes nothing", case.name));
        let body = request.body.as_ref().unwrap();
        let sent = body["PaymentLines"].as_array().unwrap().last().unwrap();
        assert_eq!(
            Decimal::from_str(&sent["Amount"].to_string()).unwrap(),
            line.amount.unwrap(),
            "{}",
            case.name
        );
        assert_eq!(
            sent["Reference"].as_str(),
            line.reference.as_deref(),
            "{}",
            case.name
        );
        assert_eq!(sent["Note"].as_str(), line.note.as_deref(), "{}", case.name);
        assert_eq!(
            sent["IsExternalRefund"].as_bool(),
            line.is_external_refund,
            "{}",
            case.name
        );
        compared += 1;
    }
    assert!(compared >= 5, "only {compared} payments compared");
}
