//! The storefront driver against a real sandbox: every order is placed,
//! submitted and announced by a signed webhook.

mod common;

use std::collections::HashSet;

use common::{eventually, start, start_receiver};
use ledgerbridge_sandbox::driver::{run, DriverConfig, DriverCredentials};
use ledgerbridge_sandbox::ordercloud::{oc_hash, WebhookSeed};
use ledgerbridge_sandbox::SandboxConfig;
use serde_json::Value;

#[tokio::test]
async fn driver_places_submits_and_pays_orders() {
    let receiver = start_receiver(0).await;
    let payments = start_receiver(0).await;
    let mut config = SandboxConfig::default();
    config.ordercloud.webhooks = vec![WebhookSeed::integration("engine", &receiver.url, "drv-key")];
    config.gateway.webhook_endpoints = vec![payments.url.clone()];
    let sandbox = start(config).await;
    let cfg = DriverConfig {
        orders: 12,
        rate_per_sec: 0.0,
        seed: 7,
        pay_share: 0.5,
        unknown_product_share: 0.2,
        max_lines: 20,
        ..DriverConfig::default()
    };
    let report = run(
        &sandbox.ordercloud_url(),
        Some(&sandbox.gateway_url()),
        &DriverCredentials::default(),
        &cfg,
    )
    .await
    .expect("driver runs");
    assert_eq!(report.orders_attempted, 12);
    assert_eq!(report.orders_submitted, 12, "{:?}", report.errors);
    assert_eq!(report.orders_failed, 0);
    assert!(report.new_customers >= 1);
    assert_eq!(report.new_customers + report.repeat_orders, 12);
    assert!(report.line_items >= 12);
    assert!(report.payments > 0 && report.payments <= 12);
    assert_eq!(report.by_currency.values().sum::<usize>(), 12);

    let submitted: HashSet<String> = report.order_ids.iter().cloned().collect();
    eventually("every submit hook delivered", || {
        let seen: HashSet<String> = receiver
            .received()
            .iter()
            .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .filter(|e| e["Route"] == "v1/orders/{direction}/{orderID}/submit")
            .filter_map(|e| e["RouteParams"]["orderID"].as_str().map(str::to_owned))
            .collect();
        seen == submitted
    })
    .await;
    for hit in receiver.received() {
        let hash = hit
            .headers
            .get("x-oc-hash")
            .and_then(|v| v.to_str().ok())
            .expect("hash");
        assert_eq!(hash, oc_hash("drv-key", &hit.body));
    }
    let snapshot = sandbox.sandbox().ordercloud.snapshot();
    for order in snapshot["Orders"].as_array().expect("orders") {
        assert_eq!(order["Order"]["Status"], "Open");
        assert!(order["Order"]["Currency"].is_string());
    }
    eventually("payment events delivered", || {
        payments.received().len() == report.payments
    })
    .await;
}

#[tokio::test]
async fn driver_survives_injected_faults() {
    let receiver = start_receiver(0).await;
    let mut config = SandboxConfig::default();
    config.ordercloud.webhooks = vec![WebhookSeed::integration("engine", &receiver.url, "k")];
    config.faults.seed = Some(3);
    config.faults.specs = vec![
        "ordercloud:error_rate=0.1".to_owned(),
        "ordercloud:commit_then_drop=0.1".to_owned(),
    ];
    let sandbox = start(config).await;
    let cfg = DriverConfig {
        orders: 8,
        rate_per_sec: 0.0,
        seed: 11,
        pay_share: 0.0,
        max_lines: 4,
        ..DriverConfig::default()
    };
    let report = run(
        &sandbox.ordercloud_url(),
        None,
        &DriverCredentials::default(),
        &cfg,
    )
    .await
    .expect("driver runs");
    assert_eq!(report.orders_submitted, 8, "{:?}", report.errors);
    let snapshot = sandbox.sandbox().ordercloud.snapshot();
    let open = snapshot["Orders"]
        .as_array()
        .expect("orders")
        .iter()
        .filter(|o| o["Order"]["Status"] == "Open")
        .count();
    assert_eq!(open, 8);
    let counters = &sandbox.sandbox().faults.snapshot()["counters"];
    let injected: u64 = counters
        .as_object()
        .expect("counters")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert!(injected > 0, "faults were injected: {counters}");
}
