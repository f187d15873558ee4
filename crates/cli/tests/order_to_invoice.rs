//! The order→invoice flow end to end through the real binary and the
//! simulators: every invoice matches its order to the penny — net equals
//! the order's total, VAT per line by tax class and country, the order's
//! currency — and failure cases end as configured.

mod common;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use common::*;
use ledgerbridge_engine::flows::order_to_invoice::OrderToInvoiceSettings;
use ledgerbridge_store::{RunFilter, RunState};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::Value;

fn dec(v: &Value) -> Decimal {
    match v {
        Value::Number(n) => Decimal::from_str(&n.to_string()).unwrap(),
        Value::String(s) => Decimal::from_str(s).unwrap(),
        Value::Null => Decimal::ZERO,
        other => panic!("not a number: {other}"),
    }
}

fn round(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

async fn wait_done(database: &str, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let counts = run_counts(database).await;
        let done = counts.get("succeeded").copied().unwrap_or(0)
            + counts.get("parked").copied().unwrap_or(0);
        if done >= n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{counts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoices_match_orders_to_the_penny_across_currencies_and_tax_classes() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/engine.db", dir.path().display());
    let target = Target::start().await;
    let n = 60;
    let orders = target.place_orders(n, "SO-M").await;
    let spec = EngineSpec::new(&database, dir.path());
    let mut engine = Engine::spawn(&spec, &target);
    engine.wait_healthy().await;
    let client = reqwest::Client::new();
    for order in &orders {
        let body = submit_envelope(order, &uuid::Uuid::new_v4().to_string());
        deliver(&client, &spec.base(), &body).await;
    }
    wait_done(&database, n as u64).await;
    target.assert_exactly_one_invoice_each(&orders);

    let settings = OrderToInvoiceSettings::default();
    let snapshot = target.sandbox.ordercloud.snapshot();
    let kf = target.sandbox.kashflow.snapshot();
    let invoices: BTreeMap<String, &Value> = kf["Invoices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["CustomerReference"].as_str().unwrap().to_owned(), i))
        .collect();
    let mut currencies = BTreeMap::<String, usize>::new();
    let mut classes = BTreeMap::<String, usize>::new();
    let mut exports = 0;
    for entry in snapshot["Orders"].as_array().unwrap() {
        let order = &entry["Order"];
        let id = order["ID"].as_str().unwrap();
        let invoice = invoices[id];
        let country = order["BillingAddress"]["Country"]
            .as_str()
            .unwrap_or("GB")
            .to_ascii_uppercase();
        let charges_vat = settings
            .vat_countries
            .iter()
            .any(|c| c.eq_ignore_ascii_case(&country));
        if !charges_vat {
            exports += 1;
        }
        let mut vat = Decimal::ZERO;
        for line in entry["LineItems"].as_array().unwrap() {
            let class = line["Product"]["xp"]["TaxClass"]
                .as_str()
                .unwrap_or(&settings.default_tax_class)
                .to_ascii_lowercase();
            *classes.entry(class.clone()).or_default() += 1;
            let level = if charges_vat {
                settings.tax_classes[&class]
            } else {
                Decimal::ZERO
            };
            let qty = dec(&line["Quantity"]);
            vat += round(qty * dec(&line["UnitPrice"]) * level / Decimal::ONE_HUNDRED);
            let discount = dec(&line["PromotionDiscount"]);
            if discount > Decimal::ZERO {
                vat += round(-discount * level / Decimal::ONE_HUNDRED);
            }
        }
        let shipping = dec(&order["ShippingCost"]);
        if shipping > Decimal::ZERO && charges_vat {
            let level = settings.tax_classes[&settings.default_tax_class];
            vat += round(shipping * level / Decimal::ONE_HUNDRED);
        }
        let net = dec(&invoice["NetAmount"]);
        let total = dec(&order["Total"]);
        assert_eq!(net, total, "{id}: invoice net {net} vs order total {total}");
        assert_eq!(
            dec(&invoice["VATAmount"]),
            vat,
            "{id} ({country}): VAT\n{invoice:#}"
        );
        assert_eq!(
            dec(&invoice["GrossAmount"]),
            net + vat,
            "{id}: gross = net + VAT"
        );
        let currency = order["xp"]["Currency"].as_str().unwrap_or("GBP");
        assert_eq!(
            invoice["Currency"]["Code"].as_str(),
            Some(currency),
            "{id}: currency"
        );
        *currencies.entry(currency.to_owned()).or_default() += 1;
    }
    // The sample covered what it must.
    assert!(currencies.len() >= 3, "{currencies:?}");
    assert!(classes.len() >= 2, "{classes:?}");
    assert!(exports > 0, "no zero-rated export in the sample");
    assert!(engine.sigterm().success());
}

/// Products unknown to KashFlow under the `park` policy: the run parks
/// with the order, line and product named, and no invoice is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_products_park_when_configured_to() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/engine.db", dir.path().display());
    let target = Target::start().await;
    // Enough orders that some carry a product KashFlow does not know.
    let orders = target.place_orders(20, "SO-U").await;
    let mut spec = EngineSpec::new(&database, dir.path());
    spec.extra = "[flows.order-to-invoice]\nunknown_product = \"park\"\n".to_owned();
    let mut engine = Engine::spawn(&spec, &target);
    engine.wait_healthy().await;
    let client = reqwest::Client::new();
    for order in &orders {
        let body = submit_envelope(order, &uuid::Uuid::new_v4().to_string());
        deliver(&client, &spec.base(), &body).await;
    }
    wait_done(&database, orders.len() as u64).await;
    let store = ledgerbridge_store::open(&database).await.unwrap();
    let parked = store
        .list_runs(&RunFilter {
            state: Some(RunState::Parked),
            limit: 100,
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert!(!parked.is_empty(), "the sample had no unknown product");
    let invoices = target.invoices_by_reference();
    for run in &parked {
        let error = run.last_error.as_ref().unwrap();
        assert_eq!(error.class.as_str(), "validation");
        assert!(error.message.contains("unknown to KashFlow"), "{error:?}");
        assert!(
            error.message.contains(" line "),
            "names the line: {error:?}"
        );
        let order = run.input.to_string();
        assert!(
            !invoices.keys().any(|r| order.contains(r.as_str())),
            "a parked order got an invoice"
        );
    }
    assert_eq!(invoices.len() + parked.len(), orders.len());
    assert!(engine.sigterm().success());
}
