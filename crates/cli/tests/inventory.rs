//! Inventory sync end to end: the real `ledgerbridge run` polls the KashFlow
//! simulator's products over HTTP and sets the OrderCloud simulator's
//! product and variant inventory; products on one side only are reported
//! (`ledgerbridge inventory report`) and left alone; the PATCH meets 5xx,
//! 429 and dropped responses; the engine is SIGKILLed between a stock
//! change and its sync; a low-stock alert is raised once.

mod common;

use std::time::Duration;

use common::{cli, run_counts, wait_until, Engine, EngineSpec, Target};
use ledgerbridge_sandbox::ordercloud::{ProductSeed, VariantSeed};
use ledgerbridge_sandbox::SandboxConfig;
use rust_decimal::Decimal;
use serde_json::{json, Value};

/// The sandbox with a T-shirt tracked per variant in OrderCloud, and its
/// sizes S and M as KashFlow products (L is in OrderCloud only).
async fn target() -> Target {
    let mut config = SandboxConfig::default();
    config.ordercloud.products.push(ProductSeed {
        id: "TEE".to_owned(),
        name: "Widget Tee".to_owned(),
        price: Decimal::new(1500, 2),
        tax_class: "standard".to_owned(),
        inventory_enabled: true,
        quantity_available: 0,
        order_can_exceed: false,
        variant_level_tracking: true,
        variants: ["S", "M", "L"]
            .iter()
            .map(|size| VariantSeed {
                id: format!("TEE-{size}"),
                name: format!("Widget Tee, size {size}"),
                quantity_available: 999,
            })
            .collect(),
    });
    let target = Target::start_with(config).await;
    for (code, stock) in [("TEE-S-KF", 12), ("TEE-M-KF", 30)] {
        target
            .sandbox
            .kashflow
            .add_product(&json!({
                "Code": code, "Name": format!("Tee {code}"), "NominalCode": 4000,
                "Price": 15, "ManageStockLevel": true, "QuantityInStock": stock,
                "StockWarningQuantity": 3
            }))
            .expect("product added");
    }
    target
}

const FLOW_CONFIG: &str = r#"
[flows.customer-sync]
enabled = false

[flows.inventory-sync]
enabled = true
poll_interval_secs = 1
products = { "TEE-S-KF" = "TEE/TEE-S", "TEE-M-KF" = "TEE/TEE-M", "GHOST" = "NOPE" }
"#;

fn spec(dir: &std::path::Path) -> EngineSpec {
    let db = dir.join("lb.db");
    let mut spec = EngineSpec::new(&format!("sqlite://{}", db.display()), dir);
    spec.extra = FLOW_CONFIG.to_owned();
    spec
}

/// OrderCloud's `QuantityAvailable` of a product or `product/variant`.
fn available(target: &Target, id: &str) -> Option<i64> {
    let snapshot = target.sandbox.ordercloud.snapshot();
    match id.split_once('/') {
        Some((product, variant)) => {
            snapshot["Variants"][product][variant]["Inventory"]["QuantityAvailable"].as_i64()
        }
        None => snapshot["Products"]
            .as_array()?
            .iter()
            .find(|p| p["ID"] == id)?["Inventory"]["QuantityAvailable"]
            .as_i64(),
    }
}

/// PATCHes OrderCloud received on products and variants.
fn patches(target: &Target) -> u64 {
    target
        .counts
        .lock()
        .unwrap()
        .iter()
        .filter(|(key, _)| key.starts_with("PATCH /ordercloud/v1/products"))
        .map(|(_, n)| n)
        .sum()
}

fn set_stock(target: &Target, code: &str, quantity: i64) {
    target
        .sandbox
        .kashflow
        .set_stock(code, None, Decimal::from(quantity))
        .expect("stock set");
}

async fn wait_available(target: &Target, engine: &Engine, id: &str, want: i64) {
    wait_until(
        30,
        || available(target, id) == Some(want),
        || {
            format!(
                "{id} available {:?}, want {want}\n{}",
                available(target, id),
                engine.log_text()
            )
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_reaches_products_and_variants_and_one_sided_products_are_reported() {
    let target = target().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path());
    let mut engine = Engine::spawn(&spec, &target);
    engine.wait_healthy().await;

    // The first poll syncs every product whose stock KashFlow manages.
    for id in ["WID1", "WID2", "WID6"] {
        wait_available(&target, &engine, id, 100).await;
    }
    wait_available(&target, &engine, "TEE/TEE-S", 12).await;
    wait_available(&target, &engine, "TEE/TEE-M", 30).await;

    // A change in KashFlow reaches OrderCloud.
    set_stock(&target, "WID2", 7);
    set_stock(&target, "TEE-M-KF", 4);
    wait_available(&target, &engine, "WID2", 7).await;
    wait_available(&target, &engine, "TEE/TEE-M", 4).await;

    // One side only: untouched, warned about, reported.
    assert_eq!(available(&target, "OC-GIFT"), Some(1_000_000));
    assert_eq!(available(&target, "OC-SAMPLE"), Some(1_000_000));
    assert_eq!(available(&target, "TEE/TEE-L"), Some(999));
    assert_eq!(available(&target, "TEE"), Some(0));
    let log = engine.log_text();
    assert!(
        log.contains("KashFlow product GAD1 has no OrderCloud product with the same ID"),
        "{log}"
    );
    let config = spec.config_path();
    let config = config.to_str().unwrap();
    let (code, out, err) = cli(&["--config", config, "inventory", "report", "--json"]);
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let ids = |key: &str, field: &str| -> Vec<String> {
        report[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i[field].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids("kashflow_only", "id"), ["GAD1", "BOOK1"], "{out}");
    assert_eq!(
        ids("ordercloud_only", "id"),
        ["OC-GIFT", "OC-SAMPLE", "TEE/TEE-L"],
        "{out}"
    );
    assert_eq!(ids("problems", "code"), ["GHOST"], "{out}");
    assert!(ids("synced", "target").contains(&"TEE/TEE-S".to_owned()));
    let (code, text, _) = cli(&["--config", config, "inventory", "report"]);
    assert_eq!(code, 0);
    assert!(text.contains("KashFlow only"), "{text}");

    engine.sigterm();
    let counts = run_counts(&format!("sqlite://{}", dir.path().join("lb.db").display())).await;
    assert_eq!(
        counts.keys().collect::<Vec<_>>(),
        ["succeeded"],
        "{counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_patches_are_retried_and_a_low_stock_alert_is_raised_once() {
    let target = target().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path());
    let mut engine = Engine::spawn(&spec, &target);
    engine.wait_healthy().await;
    wait_available(&target, &engine, "WID3", 100).await;

    // 5xx on every product PATCH for a while: the run retries.
    target.fault("ordercloud/v1/products:error_rate=1,status=503,method=PATCH");
    set_stock(&target, "WID3", 60);
    wait_until(
        30,
        || target.count("PATCH /ordercloud/v1/products/{id}") >= 8,
        || engine.log_text(),
    )
    .await;
    assert_eq!(available(&target, "WID3"), Some(100));
    target.clear_faults();
    wait_available(&target, &engine, "WID3", 60).await;

    // 429 with Retry-After (one PATCH a second): three changes in one
    // cycle cannot all pass at once; the refused ones are retried.
    target.fault("ordercloud/v1/products:rate_limit=60/min,burst=1,method=PATCH");
    let before = patches(&target);
    set_stock(&target, "WID4", 50);
    set_stock(&target, "WID5", 51);
    set_stock(&target, "TEE-S-KF", 6);
    wait_available(&target, &engine, "WID4", 50).await;
    wait_available(&target, &engine, "WID5", 51).await;
    wait_available(&target, &engine, "TEE/TEE-S", 6).await;
    assert!(
        patches(&target) - before > 3,
        "no PATCH was refused: {} for 3 changes",
        patches(&target) - before
    );
    target.clear_faults();

    // The response to a PATCH OrderCloud committed is lost: the retry finds
    // the stock already right.
    target.fault("ordercloud/v1/products:commit_then_drop=1,method=PATCH");
    let before = patches(&target);
    set_stock(&target, "WID6", 52);
    wait_available(&target, &engine, "WID6", 52).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    target.clear_faults();
    assert!(patches(&target) > before);

    // Low stock (KashFlow's StockWarningQuantity is 5): one alert, not one
    // per change while it stays low.
    set_stock(&target, "WID1", 4);
    wait_available(&target, &engine, "WID1", 4).await;
    set_stock(&target, "WID1", 2);
    wait_available(&target, &engine, "WID1", 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alerts = |log: &str| {
        log.lines()
            .filter(|l| l.contains("ALERT") && l.contains("stock.low") && l.contains("WID1"))
            .count()
    };
    assert_eq!(alerts(&engine.log_text()), 1, "{}", engine.log_text());

    engine.sigterm();
    let counts = run_counts(&format!("sqlite://{}", dir.path().join("lb.db").display())).await;
    assert_eq!(
        counts.keys().collect::<Vec<_>>(),
        ["succeeded"],
        "{counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_survives_sigkill_between_poll_and_sync_and_nothing_is_synced_twice() {
    let target = target().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path());
    let database = spec.database.clone();
    let mut engine = Engine::spawn(&spec, &target);
    engine.wait_healthy().await;
    wait_available(&target, &engine, "WID2", 100).await;
    wait_available(&target, &engine, "TEE/TEE-S", 12).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first_cycle = run_counts(&database).await;

    // The change is polled (its run stored) but OrderCloud refuses the
    // PATCH; the engine dies before the run is done.
    target.fault("ordercloud/v1/products:error_rate=1,status=503,method=PATCH");
    let patches = target.count("PATCH /ordercloud/v1/products/{id}");
    set_stock(&target, "WID2", 9);
    wait_until(
        30,
        || target.count("PATCH /ordercloud/v1/products/{id}") > patches,
        || engine.log_text(),
    )
    .await;
    engine.sigkill();
    target.clear_faults();
    assert_eq!(available(&target, "WID2"), Some(100));

    // A change made while the engine is down is found by the next poll.
    set_stock(&target, "TEE-S-KF", 5);

    let mut engine = Engine::spawn(&spec, &target);
    engine.wait_healthy().await;
    wait_available(&target, &engine, "WID2", 9).await;
    wait_available(&target, &engine, "TEE/TEE-S", 5).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    engine.sigterm();

    // Two changes, two runs more than the first cycle: the restarted poll
    // repeated nothing.
    let before: u64 = first_cycle.values().sum();
    let after = run_counts(&database).await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        ["succeeded"],
        "{after:?}\n{}",
        engine.log_text()
    );
    assert_eq!(
        after["succeeded"],
        before + 2,
        "{first_cycle:?} → {after:?}"
    );
}
