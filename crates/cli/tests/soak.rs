//! The chaos soak: a storefront places orders, pays some of them at the
//! gateway and changes customers on both sides, while the simulators inject
//! every transient fault mode at once and the real `ledgerbridge run` is
//! SIGKILLed and restarted at random moments. Then traffic stops, faults
//! clear, the engine drains, and the books must balance: the
//! reconciliation (through the real CLI) finds no difference, every
//! submitted order has exactly one invoice, every gateway payment is on its
//! invoice exactly once, and both systems hold the same customers with no
//! update lost: each field the storefront's people wrote ends with one of
//! the values last written to it on either side.
//!
//! `LEDGERBRIDGE_SOAK_SECS` sets the traffic time per backend (default 25 s,
//! what CI runs); `LEDGERBRIDGE_SOAK_SEED` replays a run's random choices
//! (kill moments, customer changes, fault dice). Each run prints one
//! `soak:` summary line with its figures.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ledgerbridge_connectors::kashflow::Customer;
use ledgerbridge_engine::flows::customer_sync::CustomerRecord;
use ledgerbridge_sandbox::config::SandboxConfig;
use ledgerbridge_sandbox::driver::{self, DriverConfig, DriverCredentials};
use ledgerbridge_sandbox::ordercloud::{WebhookFaults, WebhookSeed};
use ledgerbridge_store::{RunFilter, RunState};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const BUYER: &str = "BUYER1";
const GATEWAY_SECRET: &str = "whsec_sim";

/// Every transient fault mode of the request path, all at once. Left out:
/// `validation_400` (a permanent refusal: parking the run is the right
/// answer, so the books cannot balance by design) and wrong webhook
/// signatures (refused with 401 for good, as they must be).
const FAULTS: &[&str] = &[
    "kashflow:latency=1..20ms",
    "kashflow:error_rate=0.05,status=503",
    "kashflow:rate_limit=1500/min,burst=40",
    "kashflow/invoices:commit_then_drop=0.08,method=POST",
    "kashflow/invoices:commit_then_drop=0.08,method=PUT",
    "kashflow:execution_timeout=0.05",
    "kashflow:expire_sessions=0.01",
    "ordercloud:latency=1..10ms",
    "ordercloud:reset=0.03",
    "ordercloud:error_rate=0.03,status=502",
    "ordercloud:expire_sessions=0.005",
];

fn webhook_faults(seed: u64) -> WebhookFaults {
    WebhookFaults {
        fail_rate: 0.1,
        duplicate_rate: 0.1,
        delay_rate: 0.1,
        max_delay_ms: 800,
        wrong_hash_rate: 0.0,
        seed: Some(seed),
    }
}

fn soak_secs() -> u64 {
    std::env::var("LEDGERBRIDGE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25)
}

fn soak_seed() -> u64 {
    std::env::var("LEDGERBRIDGE_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

/// The KashFlow customer code of an OrderCloud user (the order flow's).
fn customer_code(user: &str) -> String {
    ledgerbridge_engine::flows::order_to_invoice::customer_code("OC-", user)
}

/// The storefront's customers (registered by the driver), by user id.
fn shoppers(target: &Target) -> Vec<String> {
    let snapshot = target.sandbox.ordercloud.snapshot();
    snapshot["Users"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u["ID"].as_str())
        .filter(|id| id.starts_with("drv-"))
        .map(str::to_owned)
        .collect()
}

/// The storefront: batches of orders until `stop`; returns how many were
/// submitted. (The driver's own payments charge the order's `Total`, which
/// is net in the sandbox: [`payer`] pays the invoices' gross instead.)
fn storefront(base: String, seed: u64, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut submitted = 0;
        let mut batch = 0u64;
        while !stop.load(Ordering::SeqCst) {
            batch += 1;
            let config = DriverConfig {
                orders: 6,
                rate_per_sec: 3.0,
                seed: seed.wrapping_add(batch),
                pay_share: 0.0,
                new_customer_share: 0.5,
                max_lines: 6,
                order_prefix: format!("SO-SK{batch}-"),
                ..DriverConfig::default()
            };
            let report = driver::run(
                &format!("{base}/ordercloud"),
                Some(&format!("{base}/gateway")),
                &DriverCredentials::default(),
                &config,
            )
            .await;
            match report {
                Ok(report) => {
                    submitted += report.orders_submitted;
                    if !report.errors.is_empty() {
                        eprintln!("soak: storefront batch {batch}: {:?}", report.errors);
                    }
                }
                Err(err) => eprintln!("soak: storefront batch {batch} failed: {err}"),
            }
        }
        submitted
    })
}

/// The shoppers' card payments: about half of the invoiced orders are paid
/// in full at the gateway (the invoice's gross, VAT included — the sandbox's
/// orders carry no tax, so their `Total` is net) until `stop`. Returns the
/// payments made.
fn payer(target: Arc<Target>, seed: u64, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut rng = StdRng::seed_from_u64(seed ^ 0xCA5E);
        let client = reqwest::Client::new();
        let mut decided = std::collections::BTreeSet::new();
        let mut paid = 0;
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(100..400))).await;
            let snapshot = target.sandbox.kashflow.snapshot();
            for invoice in snapshot["Invoices"].as_array().into_iter().flatten() {
                let order = invoice["CustomerReference"].as_str().unwrap_or_default();
                if !decided.insert(order.to_owned()) || !rng.gen_bool(0.5) {
                    continue;
                }
                let gross: rust_decimal::Decimal = invoice["GrossAmount"]
                    .to_string()
                    .trim_matches('"')
                    .parse()
                    .unwrap();
                let minor =
                    i64::try_from((gross * rust_decimal::Decimal::ONE_HUNDRED).trunc()).unwrap();
                let currency = invoice["Currency"]["Code"]
                    .as_str()
                    .unwrap_or("GBP")
                    .to_ascii_lowercase();
                let response = client
                    .post(format!("{}/gateway/v1/payment_intents", target.base()))
                    .bearer_auth("sk_test_sim")
                    .header("Idempotency-Key", format!("soak-pay-{order}"))
                    .json(&json!({"amount": minor, "currency": currency, "metadata": {"order_id": order}}))
                    .send()
                    .await;
                if response.is_ok_and(|r| r.status().is_success()) {
                    paid += 1;
                }
            }
        }
        paid
    })
}

/// What the storefront's people wrote to each customer, per side: for
/// OrderCloud, each field's last PATCH value (`(user, field)`); for
/// KashFlow, the whole contact of the last PUT (the API replaces contacts,
/// so every field is written, changed or not). A write whose answer failed
/// may have landed, so it is kept beside the last confirmed one.
#[derive(Debug, Default)]
struct Written {
    ordercloud: BTreeMap<(String, &'static str), Vec<(String, bool)>>,
    kashflow: BTreeMap<String, Vec<(CustomerRecord, bool)>>,
}

impl Written {
    fn ordercloud(&mut self, user: &str, field: &'static str, value: &str, confirmed: bool) {
        let values = self.ordercloud.entry((user.to_owned(), field)).or_default();
        if confirmed {
            values.clear();
        }
        values.push((value.to_owned(), confirmed));
    }

    fn kashflow(&mut self, user: &str, record: CustomerRecord, confirmed: bool) {
        let records = self.kashflow.entry(user.to_owned()).or_default();
        if confirmed {
            records.clear();
        }
        records.push((record, confirmed));
    }

    /// The values `field` of `user` may end with if no update was lost:
    /// the last confirmed write on either side, or a later one whose answer
    /// failed. Empty (nothing to check) when the field was never written,
    /// or when a side has only failed writes of it: the value from before
    /// them (not known here) may stand.
    fn candidates(&self, user: &str, field: &'static str) -> Vec<String> {
        let ordercloud = self
            .ordercloud
            .get(&(user.to_owned(), field))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let kashflow = self
            .kashflow
            .get(user)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let unknown_start = |confirmed: Option<bool>| confirmed == Some(false);
        if unknown_start(ordercloud.first().map(|w| w.1))
            || unknown_start(kashflow.first().map(|w| w.1))
        {
            return Vec::new();
        }
        let mut values: Vec<String> = ordercloud.iter().map(|(v, _)| v.clone()).collect();
        for (record, _) in kashflow {
            values.push(field_of(record, field).to_owned());
        }
        values
    }
}

fn field_of<'a>(record: &'a CustomerRecord, field: &str) -> &'a str {
    match field {
        "first_name" => &record.first_name,
        "last_name" => &record.last_name,
        "email" => &record.email,
        _ => &record.phone,
    }
}

/// Customer changes on both sides, one every few hundred milliseconds,
/// until `stop`: an OrderCloud user PATCH or a KashFlow customer update,
/// each remembered in `written`.
fn customer_changes(
    target: Arc<Target>,
    seed: u64,
    stop: Arc<AtomicBool>,
    changes: Arc<AtomicU64>,
    written: Arc<std::sync::Mutex<Written>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut rng = StdRng::seed_from_u64(seed ^ 0xC057);
        let (kf, oc) = (target.kashflow_client(), target.ordercloud_client());
        let names = ["Ada", "Bea", "Cyd", "Dot", "Eve", "Fay", "Gus", "Hal"];
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(150..450))).await;
            let users = shoppers(&target);
            if users.is_empty() {
                continue;
            }
            let user = users[rng.gen_range(0..users.len())].clone();
            let name = names[rng.gen_range(0..names.len())];
            let phone = format!("07700 9{:05}", rng.gen_range(0..100_000));
            if rng.gen_bool(0.5) {
                let (patch, field, value) = if rng.gen_bool(0.5) {
                    (json!({"FirstName": name}), "first_name", name.to_owned())
                } else {
                    (json!({"Phone": phone}), "phone", phone.clone())
                };
                let done = oc.patch_user(BUYER, &user, &patch).await.is_ok();
                written
                    .lock()
                    .unwrap()
                    .ordercloud(&user, field, &value, done);
                if done {
                    changes.fetch_add(1, Ordering::SeqCst);
                }
            } else {
                let code = customer_code(&user);
                let Ok(Some(customer)) = kf.get_customer(&code).await else {
                    continue; // not synced to KashFlow yet
                };
                let Some(mut contacts) = customer.contacts.clone().filter(|c| !c.is_empty()) else {
                    continue;
                };
                if rng.gen_bool(0.5) {
                    contacts[0].last_name = Some(format!("{name}son"));
                } else {
                    contacts[0].telephone = Some(phone);
                }
                let update = Customer {
                    contacts: Some(contacts),
                    ..Customer::default()
                };
                let done = kf.update_customer(&code, &update).await.is_ok();
                let sent = CustomerRecord::from_customer(&Customer {
                    name: customer.name.clone(),
                    ..update
                });
                written.lock().unwrap().kashflow(&user, sent, done);
                if done {
                    changes.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    })
}

/// Waits until every webhook delivery of both senders has finished;
/// returns the ones the sender gave up on.
async fn wait_deliveries(target: &Target) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let records: Vec<_> = target
            .sandbox
            .ordercloud
            .deliveries()
            .into_iter()
            .chain(target.sandbox.gateway.deliveries())
            .collect();
        if records.iter().all(|r| r.state != "pending") {
            return records
                .iter()
                .filter(|r| r.state == "failed")
                .map(|r| format!("{} {}: {:?}", r.event_id, r.url, r.attempts.last()))
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "webhook deliveries still pending after 180 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until no run is queued, running or retrying (three polls in a row).
async fn drain(database: &str, engine: &Engine) {
    // The engine falls behind under this much chaos; it catches up after.
    let limit = 240.max(3 * soak_secs());
    let deadline = Instant::now() + Duration::from_secs(limit);
    let mut quiet = 0;
    loop {
        let counts = run_counts(database).await;
        let pending: u64 = ["queued", "running", "retrying"]
            .iter()
            .map(|s| counts.get(*s).copied().unwrap_or(0))
            .sum();
        quiet = if pending == 0 { quiet + 1 } else { 0 };
        if quiet >= 3 {
            return;
        }
        if Instant::now() > deadline {
            let kept = std::env::temp_dir().join("soak-failed-engine.log");
            let _ = std::fs::copy(&engine.log, &kept);
            panic!(
                "runs still pending after {limit} s: {counts:?}\nparked: {:#?}\n(engine log kept in {})",
                parked_runs(database).await,
                kept.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The parked runs: flow, id, input and last error.
async fn parked_runs(database: &str) -> Vec<String> {
    let store = ledgerbridge_store::open(database).await.unwrap();
    let parked = store
        .list_runs(&RunFilter {
            state: Some(RunState::Parked),
            limit: 1000,
            ..RunFilter::default()
        })
        .await
        .unwrap();
    parked
        .iter()
        .map(|r| {
            format!(
                "{} {} {}: {:?}",
                r.flow,
                r.id,
                r.input,
                r.last_error.as_ref().map(|e| &e.message)
            )
        })
        .collect()
}

/// Webhook delivery faults the senders injected, by kind.
fn webhook_fault_counts(target: &Target) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for (service, records) in [
        ("ordercloud", target.sandbox.ordercloud.deliveries()),
        ("gateway", target.sandbox.gateway.deliveries()),
    ] {
        for record in records {
            let mut add = |kind: &str, n: u64| {
                if n > 0 {
                    *counts
                        .entry(format!("{service}.webhook_{kind}"))
                        .or_default() += n;
                }
            };
            add("duplicate", u64::from(record.duplicate));
            add("delay", u64::from(record.delayed_ms > 0));
            let failed_sends = record
                .attempts
                .iter()
                .filter(|a| {
                    a.error
                        .as_deref()
                        .is_some_and(|e| e.contains("fault injection"))
                })
                .count() as u64;
            add("send_failure", failed_sends);
        }
    }
    counts
}

/// Every gateway payment intent is on its order's invoice exactly once, and
/// no payment reference appears twice anywhere. Returns the intents checked.
fn assert_payments_applied_once(target: &Target) -> usize {
    let gateway = target.sandbox.gateway.snapshot();
    let kashflow = target.sandbox.kashflow.snapshot();
    let mut lines_by_reference: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for invoice in kashflow["Invoices"].as_array().unwrap() {
        let order = invoice["CustomerReference"].as_str().unwrap_or_default();
        let number = invoice["Number"].as_i64().unwrap();
        for line in invoice["PaymentLines"].as_array().into_iter().flatten() {
            let reference = line["Reference"].as_str().unwrap_or_default().to_owned();
            lines_by_reference
                .entry(reference)
                .or_default()
                .push((order.to_owned(), number));
        }
    }
    let mut problems = Vec::new();
    let mut intents = 0;
    for intent in gateway["payment_intents"].as_array().unwrap() {
        if intent["status"] != json!("succeeded") {
            continue;
        }
        intents += 1;
        let id = intent["id"].as_str().unwrap();
        let order = intent["metadata"]["order_id"].as_str().unwrap_or_default();
        let reference = format!("gateway:{id}");
        match lines_by_reference.get(&reference).map(Vec::as_slice) {
            Some([(on, _)]) if on == order => {}
            other => problems.push(format!("{reference} for {order}: lines {other:?}")),
        }
    }
    for (reference, lines) in &lines_by_reference {
        if lines.len() > 1 {
            problems.push(format!(
                "{reference} applied {} times: {lines:?}",
                lines.len()
            ));
        }
    }
    assert!(problems.is_empty(), "payments: {problems:#?}");
    intents
}

/// Every shopper's KashFlow customer holds the same record as the
/// OrderCloud user (waiting up to a minute for the last changes to land),
/// and no update was lost: each field the storefront's people wrote ends
/// with one of the values last written to it on either side (the change
/// processed last wins, so either may; an older one means a later change
/// was overwritten, even when both sides agree on it). Returns the
/// customers compared.
async fn assert_customers_agree(target: &Target, database: &str, written: &Written) -> usize {
    let (kf, oc) = (target.kashflow_client(), target.ordercloud_client());
    let deadline = Instant::now() + Duration::from_secs(60);
    let (users, records) = loop {
        let users = shoppers(target);
        let mut problems = Vec::new();
        let mut records = BTreeMap::new();
        for user in &users {
            let code = customer_code(user);
            let customer = kf.get_customer(&code).await.unwrap();
            let found = oc.get_user(BUYER, user).await.unwrap();
            let k = customer.as_ref().map(CustomerRecord::from_customer);
            let o = found.as_ref().map(CustomerRecord::from_user);
            if k.is_none() || k != o {
                problems.push(format!("{user}: KashFlow {k:?}, OrderCloud {o:?}"));
            }
            records.insert(user.clone(), k);
        }
        if problems.is_empty() {
            break (users, records);
        }
        // A parked run explains a customer left behind: show them together.
        assert!(
            Instant::now() < deadline,
            "customers disagree after 60 s: {problems:#?}\nparked runs: {:#?}",
            parked_runs(database).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut lost = Vec::new();
    for (user, record) in &records {
        let Some(record) = record else { continue };
        for field in ["first_name", "last_name", "email", "phone"] {
            let candidates = written.candidates(user, field);
            let value = field_of(record, field);
            if !candidates.is_empty() && !candidates.iter().any(|c| c == value) {
                lost.push(format!(
                    "{user}: {field} is {value:?} on both sides, but the last writes were {candidates:?}"
                ));
            }
        }
    }
    assert!(lost.is_empty(), "lost updates: {lost:#?}");
    users.len()
}

/// The orders OrderCloud holds as submitted.
fn submitted_orders(target: &Target) -> Vec<String> {
    target
        .orders()
        .into_iter()
        .filter(|(_, order)| order["IsSubmitted"] == json!(true))
        .map(|(id, _)| id)
        .collect()
}

async fn soak(backend: &str, database: &str, dir: &Path) {
    let secs = soak_secs();
    let seed = soak_seed();
    eprintln!("soak: {backend}, {secs} s, seed {seed} (LEDGERBRIDGE_SOAK_SEED={seed} replays it)");
    let mut rng = StdRng::seed_from_u64(seed);

    let mut config = SandboxConfig::default();
    config.faults.seed = Some(seed);
    // Both senders retry for minutes, like the real ones: an engine that is
    // down for a while loses nothing.
    for delivery in [
        &mut config.ordercloud.delivery,
        &mut config.gateway.delivery,
    ] {
        delivery.max_attempts = 400;
        delivery.initial_backoff_ms = 50;
        delivery.max_backoff_ms = 500;
        delivery.timeout_ms = 5_000;
    }
    let target = Arc::new(Target::start_with(config).await);
    let mut spec = EngineSpec::new(database, dir);
    spec.extra = format!(
        r#"
[sources.gateway.pay]
signing_secret = "{GATEWAY_SECRET}"

[connections.gateway]
base_url = "{base}/gateway"
api_key = "sk_test_sim"

[flows.customer-sync]
buyer_id = "{BUYER}"
poll_interval_secs = 1
"#,
        base = target.base()
    );
    let mut engine = Engine::spawn(&spec, &target);
    engine.wait_healthy().await;
    let hook = WebhookSeed::integration(
        "engine",
        &format!("{}/webhooks/ordercloud/shop", spec.base()),
        HASH_KEY,
    );
    target.sandbox.ordercloud.add_webhook(&hook);
    target
        .sandbox
        .gateway
        .add_webhook_endpoint(&format!("{}/webhooks/gateway/pay", spec.base()));
    let store = ledgerbridge_store::open(database).await.unwrap();
    let baseline = Instant::now() + Duration::from_secs(60);
    while store.cursor("kashflow:customers").await.unwrap().is_none() {
        assert!(Instant::now() < baseline, "no customer poll baseline");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let from = chrono::Utc::now().date_naive();

    for fault in FAULTS {
        target.fault(fault);
    }
    target
        .sandbox
        .ordercloud
        .set_webhook_faults(webhook_faults(seed));
    target
        .sandbox
        .gateway
        .set_webhook_faults(webhook_faults(seed.wrapping_add(1)));

    let stop = Arc::new(AtomicBool::new(false));
    let changes = Arc::new(AtomicU64::new(0));
    let written = Arc::new(std::sync::Mutex::new(Written::default()));
    let shop = storefront(target.base(), seed, stop.clone());
    let cards = payer(target.clone(), seed, stop.clone());
    let people = customer_changes(
        target.clone(),
        seed,
        stop.clone(),
        changes.clone(),
        written.clone(),
    );

    let started = Instant::now();
    let end = started + Duration::from_secs(secs);
    let mut kills = 0;
    loop {
        let wait = Duration::from_millis(rng.gen_range(1_000..5_000));
        if Instant::now() + wait >= end {
            break;
        }
        tokio::time::sleep(wait).await;
        engine.sigkill();
        kills += 1;
        eprintln!(
            "soak: kill {kills} at {:.1} s, {} orders invoiced so far",
            started.elapsed().as_secs_f64(),
            target.invoices_by_reference().len()
        );
        // Sometimes back at once, sometimes after the leases ran out.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..2_500))).await;
        engine = Engine::spawn(&spec, &target);
        engine.wait_healthy().await;
    }
    tokio::time::sleep_until(end.into()).await;
    stop.store(true, Ordering::SeqCst);
    let driver_submitted = shop.await.unwrap();
    let payments = cards.await.unwrap();
    people.await.unwrap();

    // Faults off; what the simulators injected, counted before they reset.
    let mut injected = target.sandbox.faults.counters();
    injected.remove("kashflow.latency");
    injected.remove("ordercloud.latency");
    target.clear_faults();
    target
        .sandbox
        .ordercloud
        .set_webhook_faults(WebhookFaults::default());
    target
        .sandbox
        .gateway
        .set_webhook_faults(WebhookFaults::default());
    let lost_deliveries = wait_deliveries(&target).await;
    injected.extend(webhook_fault_counts(&target));
    assert!(
        lost_deliveries.is_empty(),
        "webhook deliveries given up: {lost_deliveries:#?}"
    );
    drain(database, &engine).await;
    // A customer change from the last poll cycle may still be on its way.
    let written = std::mem::take(&mut *written.lock().unwrap());
    let customers = assert_customers_agree(&target, database, &written).await;
    drain(database, &engine).await;

    let parked = parked_runs(database).await;

    let to = chrono::Utc::now().date_naive();
    let config_path = spec.config_path();
    let (code, out, err) = cli(&[
        "--config",
        config_path.to_str().unwrap(),
        "reconcile",
        "--from",
        &from.to_string(),
        "--to",
        &to.to_string(),
        "--format",
        "json",
    ]);
    let report: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("reconcile answered no JSON ({e}), exit {code}: {out}\n{err}"));
    let differences = report["differences"].as_array().map_or(0, Vec::len);
    let mut difference_kinds: BTreeMap<String, u64> = BTreeMap::new();
    for difference in report["differences"].as_array().into_iter().flatten() {
        let kind = difference["kind"].as_str().unwrap_or("?").to_owned();
        *difference_kinds.entry(kind).or_default() += 1;
    }

    let orders = submitted_orders(&target);
    let faults_total: u64 = injected.values().sum();
    eprintln!(
        "soak: {backend}, {secs} s, seed {seed}: {} orders ({driver_submitted} reported by the storefront), {payments} gateway payments, {} customer changes, {faults_total} faults injected {injected:?}, {kills} kills survived, {} parked runs, {differences} differences {difference_kinds:?}",
        orders.len(),
        changes.load(Ordering::SeqCst),
        parked.len(),
    );

    assert!(parked.is_empty(), "parked runs: {parked:#?}");
    assert_eq!(
        (code, differences),
        (0, 0),
        "reconciliation found differences: {report:#}\n{err}"
    );
    target.assert_exactly_one_invoice_each(&orders);
    let intents = assert_payments_applied_once(&target);
    assert!(kills > 0 || secs < 2, "the engine was never killed");
    assert!(!orders.is_empty() && intents > 0, "no traffic");
    eprintln!(
        "soak: {backend}: checked {} invoices, {intents} gateway payments, {customers} customers",
        orders.len()
    );
    assert!(engine.sigterm().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak_on_sqlite_balances_the_books() {
    // Kept when the soak fails (engine logs, database); removed when it passes.
    let dir = tempfile::Builder::new()
        .prefix("soak-")
        .tempdir()
        .unwrap()
        .keep();
    eprintln!("soak: engine logs in {}", dir.display());
    let database = format!("sqlite://{}/engine.db", dir.display());
    soak("sqlite", &database, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak_on_postgres_balances_the_books() {
    let dir = tempfile::Builder::new()
        .prefix("soak-")
        .tempdir()
        .unwrap()
        .keep();
    eprintln!("soak: engine logs in {}", dir.display());
    let pg = PgDb::create().await;
    soak("postgres", &pg.url, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
}
