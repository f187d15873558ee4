//! Customer sync end to end over real HTTP: OrderCloud user webhooks and
//! KashFlow polling running at once, against the sandbox, with faults and
//! a killed engine. What must hold: both systems (and xConnect) end up
//! agreeing, our own writes coming back are dropped (no ping-pong), and a
//! change made while the engine was down is synced once after it restarts.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use ledgerbridge_connectors::kashflow::{Contact, Customer, KashFlowClient};
use ledgerbridge_connectors::ordercloud::{OrderCloudClient, User};
use ledgerbridge_engine::flows::customer_sync::CustomerRecord;
use ledgerbridge_store::{RunFilter, RunState};
use serde_json::{json, Value};

const BUYER: &str = "BUYER1";

fn spec(target: &Target, database: &str, dir: &std::path::Path) -> EngineSpec {
    let mut spec = EngineSpec::new(database, dir);
    spec.extra = format!(
        r#"
[connections.xconnect]
base_url = "{base}/xconnect"

[flows.customer-sync]
buyer_id = "{BUYER}"
poll_interval_secs = 1
"#,
        base = target.base()
    );
    spec
}

/// Points the sandbox's OrderCloud user webhooks at the engine.
async fn register_user_webhook(target: &Target, engine_base: &str) {
    let token = target.ordercloud_token().await;
    let body = json!({
        "ID": "ledgerbridge-users",
        "Name": "Ledgerbridge users",
        "Url": format!("{engine_base}/webhooks/ordercloud/shop"),
        "HashKey": HASH_KEY,
        "ElevatedRoles": [],
        "ApiClientIDs": [],
        "WebhookRoutes": [
            {"Route": "v1/buyers/{buyerID}/users", "Verb": "POST"},
            {"Route": "v1/buyers/{buyerID}/users/{userID}", "Verb": "PATCH"},
        ],
    });
    let response = reqwest::Client::new()
        .post(format!("{}/ordercloud/v1/webhooks", target.base()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "webhook not registered: {}",
        response.text().await.unwrap()
    );
}

/// Waits until the engine's first poll of KashFlow customers has saved its
/// baseline (later KashFlow changes are then changes, not the baseline).
async fn wait_for_baseline(database: &str) {
    let store = ledgerbridge_store::open(database).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.cursor("kashflow:customers").await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "no poll baseline within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn kf_customer(code: &str, first: &str, last: &str, email: &str) -> Customer {
    Customer {
        code: Some(code.to_owned()),
        name: Some(format!("{first} {last}")),
        contacts: Some(vec![Contact {
            first_name: Some(first.to_owned()),
            last_name: Some(last.to_owned()),
            email: Some(email.to_owned()),
            ..Contact::default()
        }]),
        ..Customer::default()
    }
}

fn oc_user(id: &str, first: &str, last: &str, email: &str) -> User {
    User {
        id: Some(id.to_owned()),
        username: Some(id.to_owned()),
        first_name: Some(first.to_owned()),
        last_name: Some(last.to_owned()),
        email: Some(email.to_owned()),
        active: Some(true),
        ..User::default()
    }
}

/// The records both systems hold for (KashFlow code, OrderCloud user).
async fn both(
    kf: &KashFlowClient,
    oc: &OrderCloudClient,
    code: &str,
    user: &str,
) -> (Option<CustomerRecord>, Option<CustomerRecord>) {
    let customer = kf.get_customer(code).await.unwrap();
    let user = oc.get_user(BUYER, user).await.unwrap();
    (
        customer.as_ref().map(CustomerRecord::from_customer),
        user.as_ref().map(CustomerRecord::from_user),
    )
}

/// Waits until KashFlow `code` and OrderCloud `user` both hold `want`.
async fn wait_agree(
    kf: &KashFlowClient,
    oc: &OrderCloudClient,
    code: &str,
    user: &str,
    want: &CustomerRecord,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (k, o) = both(kf, oc, code, user).await;
        if k.as_ref() == Some(want) && o.as_ref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{code} / {user} never agreed on {want:?}: KashFlow {k:?}, OrderCloud {o:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn record(first: &str, last: &str, email: &str, phone: &str) -> CustomerRecord {
    CustomerRecord {
        first_name: first.to_owned(),
        last_name: last.to_owned(),
        email: email.to_owned(),
        phone: phone.to_owned(),
    }
}

/// Writes to customers and users the simulators saw.
fn writes(target: &Target) -> BTreeMap<String, u64> {
    target
        .counts
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| {
            k.starts_with("PUT /kashflow/v2/customers")
                || k.starts_with("POST /kashflow/v2/customers")
                || k.starts_with("PATCH /ordercloud/v1/buyers")
                || k.starts_with("POST /ordercloud/v1/buyers")
                || k.contains("/xconnect/") && (k.starts_with("POST") || k.starts_with("PATCH"))
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// Plans of the finished customer-sync runs: (origin, action).
async fn plans(database: &str) -> Vec<(String, String)> {
    let store = ledgerbridge_store::open(database).await.unwrap();
    let runs = store
        .list_runs(&RunFilter {
            flow: Some("customer-sync".to_owned()),
            limit: 1000,
            ..RunFilter::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    for run in runs {
        if run.state != RunState::Succeeded {
            continue;
        }
        let detail = store.run(run.id).await.unwrap().unwrap();
        if let Some(sync) = detail.journal.iter().find(|s| s.step == "sync") {
            let plan = &sync.output["plan"];
            out.push((
                plan["origin"].as_str().unwrap_or("").to_owned(),
                plan["action"].as_str().unwrap_or("").to_owned(),
            ));
        }
    }
    out
}

fn xconnect_contact(target: &Target, source: &str, identifier: &str) -> Option<Value> {
    let snapshot = target.sandbox.xconnect.snapshot();
    snapshot["contacts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| {
            c["Identifiers"].as_array().into_iter().flatten().any(|i| {
                i["Source"].as_str() == Some(source) && i["Identifier"].as_str() == Some(identifier)
            })
        })
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn customers_sync_both_ways_at_once_and_echoes_are_dropped() {
    let target = Target::start().await;
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("sync.db").display());
    let spec = spec(&target, &database, dir.path());
    let mut engine = Engine::spawn(&spec, &target);
    engine.wait_healthy().await;
    register_user_webhook(&target, &spec.base()).await;
    wait_for_baseline(&database).await;
    let (kf, oc) = (target.kashflow_client(), target.ordercloud_client());

    // A shopper signs up in OrderCloud; a customer is added in KashFlow.
    oc.create_user(
        BUYER,
        &oc_user("u-alice", "Alice", "Lovelace", "alice@example.com"),
    )
    .await
    .unwrap();
    kf.create_customer(&kf_customer("ACME1", "Bob", "Builder", "bob@example.com"))
        .await
        .unwrap();
    let alice = record("Alice", "Lovelace", "alice@example.com", "");
    let bob = record("Bob", "Builder", "bob@example.com", "");
    wait_agree(&kf, &oc, "OC-U-ALICE", "u-alice", &alice).await;
    wait_agree(&kf, &oc, "ACME1", "kf-acme1", &bob).await;

    // Both directions at once, on the same customers, different fields.
    let mut alice_kf = kf.get_customer("OC-U-ALICE").await.unwrap().unwrap();
    alice_kf.contacts.as_mut().unwrap()[0].email = Some("alice@new.example.com".to_owned());
    let mut bob_kf = kf.get_customer("ACME1").await.unwrap().unwrap();
    bob_kf.contacts.as_mut().unwrap()[0].telephone = Some("0200 000 0000".to_owned());
    let alice_patch = json!({"LastName": "King"});
    let bob_patch = json!({"FirstName": "Robert"});
    let alice_update = Customer {
        contacts: alice_kf.contacts.clone(),
        ..Customer::default()
    };
    let bob_update = Customer {
        contacts: bob_kf.contacts.clone(),
        ..Customer::default()
    };
    let (a, b, c, d) = tokio::join!(
        oc.patch_user(BUYER, "u-alice", &alice_patch),
        kf.update_customer("OC-U-ALICE", &alice_update),
        kf.update_customer("ACME1", &bob_update),
        oc.patch_user(BUYER, "kf-acme1", &bob_patch),
    );
    a.unwrap();
    b.unwrap();
    c.unwrap();
    d.unwrap();
    let alice = record("Alice", "King", "alice@new.example.com", "");
    let bob = record("Robert", "Builder", "bob@example.com", "0200 000 0000");
    wait_agree(&kf, &oc, "OC-U-ALICE", "u-alice", &alice).await;
    wait_agree(&kf, &oc, "ACME1", "kf-acme1", &bob).await;

    // Quiet now: several poll cycles and webhook rounds later, nothing is
    // written any more — no ping-pong.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = writes(&target);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        writes(&target),
        settled,
        "writes continued after the systems agreed: a sync loop"
    );
    let plans = plans(&database).await;
    let echoes = plans.iter().filter(|(_, action)| action == "none").count();
    assert!(
        echoes >= 2,
        "our own writes should come back as events and be dropped: {plans:?}"
    );

    // xConnect holds both people as last synced.
    let contact = xconnect_contact(&target, "ordercloud", "u-alice").expect("alice in xConnect");
    assert_eq!(
        contact["PersonalInformation"]["LastName"], "King",
        "{contact}"
    );
    assert_eq!(
        contact["Emails"]["PreferredEmail"]["SmtpAddress"], "alice@new.example.com",
        "{contact}"
    );
    let contact = xconnect_contact(&target, "ordercloud", "kf-acme1").expect("bob in xConnect");
    assert_eq!(
        contact["PersonalInformation"]["FirstName"], "Robert",
        "{contact}"
    );
    engine.sigterm();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kashflow_change_made_while_the_engine_is_down_is_synced_once_after_restart_on_postgres()
{
    let target = Target::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = PgDb::create().await;
    let spec = spec(&target, &db.url, dir.path());
    let mut engine = Engine::spawn(&spec, &target);
    engine.wait_healthy().await;
    wait_for_baseline(&db.url).await;
    let (kf, oc) = (target.kashflow_client(), target.ordercloud_client());
    kf.create_customer(&kf_customer("RST1", "Carol", "Jones", "carol@example.com"))
        .await
        .unwrap();
    wait_agree(
        &kf,
        &oc,
        "RST1",
        "kf-rst1",
        &record("Carol", "Jones", "carol@example.com", ""),
    )
    .await;

    engine.sigkill();
    kf.update_customer(
        "RST1",
        &kf_customer("RST1", "Caroline", "Jones", "carol@example.com"),
    )
    .await
    .unwrap();
    let patches_before = target.count("PATCH /ordercloud/v1/buyers/{id}/users/{id}");
    let mut engine = Engine::spawn(&spec, &target);
    engine.wait_healthy().await;
    wait_agree(
        &kf,
        &oc,
        "RST1",
        "kf-rst1",
        &record("Caroline", "Jones", "carol@example.com", ""),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        target.count("PATCH /ordercloud/v1/buyers/{id}/users/{id}"),
        patches_before + 1,
        "the change is written to OrderCloud exactly once"
    );
    engine.sigterm();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn customer_sync_survives_errors_rate_limits_and_dropped_responses() {
    let target = Target::start().await;
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("faults.db").display());
    let spec = spec(&target, &database, dir.path());
    let mut engine = Engine::spawn(&spec, &target);
    engine.wait_healthy().await;
    register_user_webhook(&target, &spec.base()).await;
    wait_for_baseline(&database).await;
    let (kf, oc) = (target.kashflow_client(), target.ordercloud_client());

    target.fault("kashflow/customers:error_rate=0.3,status=503");
    target.fault("kashflow/customers:commit_then_drop=0.3,method=POST");
    target.fault("ordercloud:rate_limit=600/min,burst=3");
    target.fault("kashflow:execution_timeout=0.2");
    let mut want = Vec::new();
    for n in 0..8 {
        let id = format!("u-f{n}");
        let created = loop {
            // The test's own calls meet the faults too: retry them.
            match oc
                .create_user(
                    BUYER,
                    &oc_user(&id, "Fault", &format!("Tester{n}"), "f@example.com"),
                )
                .await
            {
                Ok(user) => break user,
                Err(f) if f.class.is_retriable() => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(f) if f.class == ledgerbridge_core::ErrorClass::Conflict => {
                    break User::default()
                }
                Err(f) => panic!("creating {id}: {f:?}"),
            }
        };
        let _ = created;
        want.push((
            format!("OC-U-F{n}"),
            id,
            record("Fault", &format!("Tester{n}"), "f@example.com", ""),
        ));
    }
    for (code, user, record) in &want {
        wait_agree_retrying(&kf, &oc, code, user, record).await;
    }
    target.clear_faults();
    let customers = kf.list_customers().await.unwrap();
    for (code, _, _) in &want {
        let n = customers
            .iter()
            .filter(|c| c.code.as_deref() == Some(code))
            .count();
        assert_eq!(n, 1, "{code} must exist exactly once in KashFlow");
    }
    engine.sigterm();
}

/// [`wait_agree`] whose own reads may meet injected faults.
async fn wait_agree_retrying(
    kf: &KashFlowClient,
    oc: &OrderCloudClient,
    code: &str,
    user: &str,
    want: &CustomerRecord,
) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let customer = kf.get_customer(code).await;
        let found = oc.get_user(BUYER, user).await;
        if let (Ok(Some(customer)), Ok(Some(found))) = (&customer, &found) {
            if &CustomerRecord::from_customer(customer) == want
                && &CustomerRecord::from_user(found) == want
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{code} / {user} never agreed on {want:?}: KashFlow {customer:?}, OrderCloud {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Found by the chaos soak: a shopper's first order created their KashFlow
/// customer between the customer-sync run's read and its create, and the
/// run parked on "DuplicateCustomerCode … is already in use". The run now
/// links the customer the other flow created and brings it in line.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_customer_created_meanwhile_by_another_flow_is_linked_not_parked() {
    let target = Target::start().await;
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("sync.db").display());
    let spec = spec(&target, &database, dir.path());
    let mut engine = Engine::spawn(&spec, &target);
    engine.wait_healthy().await;
    register_user_webhook(&target, &spec.base()).await;
    wait_for_baseline(&database).await;
    let (kf, oc) = (target.kashflow_client(), target.ordercloud_client());

    // The engine's create is held up; the customer appears meanwhile.
    target.fault("kashflow/customers:latency=1500ms,method=POST");
    oc.create_user(BUYER, &oc_user("u-race", "Rae", "Race", "rae@example.com"))
        .await
        .unwrap();
    wait_until(
        30,
        || target.count("POST /kashflow/v2/customers") > 0,
        || "the engine never tried to create the customer".to_owned(),
    )
    .await;
    let from_order = kf_customer("OC-U-RACE", "Rae", "Race", "rae@example.com");
    let mut from_order = serde_json::to_value(&from_order).unwrap();
    from_order["Contacts"][0]["Telephone"] = json!("0100 000 0000");
    target
        .sandbox
        .kashflow
        .seed_customers(&[from_order])
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (k, o) = both(&kf, &oc, "OC-U-RACE", "u-race").await;
        let parked = store_parked(&database).await;
        assert!(parked.is_empty(), "parked: {parked:#?}");
        if k.is_some() && k == o {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never agreed: KashFlow {k:?}, OrderCloud {o:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_nothing_parked_then_stop(&database, engine).await;
}

/// No run parked; the engine stops cleanly on SIGTERM.
async fn assert_nothing_parked_then_stop(database: &str, mut engine: Engine) {
    let parked = store_parked(database).await;
    assert!(parked.is_empty(), "parked: {parked:#?}");
    assert!(engine.sigterm().success());
}

async fn store_parked(database: &str) -> Vec<String> {
    let store = ledgerbridge_store::open(database).await.unwrap();
    store
        .list_runs(&RunFilter {
            state: Some(RunState::Parked),
            limit: 100,
            ..RunFilter::default()
        })
        .await
        .unwrap()
        .iter()
        .map(|r| format!("{} {:?}", r.flow, r.last_error))
        .collect()
}

/// The signed OrderCloud webhook of a user created (`POST`) or changed
/// (`PATCH`, `request` its body), as the sandbox would send it.
fn user_envelope(verb: &str, user: &User, request: &Value) -> String {
    let id = user.id.clone().unwrap();
    let (route, params) = if verb == "POST" {
        ("v1/buyers/{buyerID}/users", json!({"buyerID": BUYER}))
    } else {
        (
            "v1/buyers/{buyerID}/users/{userID}",
            json!({"buyerID": BUYER, "userID": id}),
        )
    };
    json!({
        "Route": route,
        "RouteParams": params,
        "Verb": verb,
        "Date": "2026-12-02T10:00:00.0000000+00:00",
        "LogID": uuid::Uuid::new_v4().to_string(),
        "UserToken": "buyer-token",
        "Request": {"Body": request, "Headers": null},
        "Response": {"Body": serde_json::to_value(user).unwrap(), "Headers": null},
        "ConfigData": {}
    })
    .to_string()
}

/// Waits until a customer-sync run from `origin` has finished with a plan
/// (and returns how many have).
async fn wait_for_plan(database: &str, origin: &str, at_least: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = plans(database)
            .await
            .iter()
            .filter(|(o, _)| o == origin)
            .count();
        if done >= at_least {
            return done;
        }
        assert!(
            Instant::now() < deadline,
            "no finished customer-sync run from {origin} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A shopper who has ordered exists on both sides (the user, and the
/// KashFlow customer the order flow made from the order's user), with no
/// sync state: their "user created" webhook is still being retried. Found
/// by reading after the chaos soak: when that delayed webhook was finally
/// processed, its first sync wrote the whole OrderCloud record over the
/// KashFlow customer — reverting a phone changed in KashFlow meanwhile —
/// and the poll then saw KashFlow as it had been and had nothing to report:
/// the change was lost on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delayed_first_sync_does_not_revert_a_newer_kashflow_change() {
    const LIST: &str = "GET /kashflow/v2/customers";
    let target = Target::start().await;
    let (kf, oc) = (target.kashflow_client(), target.ordercloud_client());
    let mut user = oc_user("u-late", "Lena", "Late", "lena@example.com");
    user.phone = Some("0100 000 0001".to_owned());
    oc.create_user(BUYER, &user).await.unwrap();
    let mut customer = kf_customer("OC-U-LATE", "Lena", "Late", "lena@example.com");
    customer.contacts.as_mut().unwrap()[0].telephone = Some("0100 000 0001".to_owned());
    kf.create_customer(&customer).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("sync.db").display());
    let spec = spec(&target, &database, dir.path());
    let mut engine = Engine::spawn(&spec, &target);
    engine.wait_healthy().await;
    wait_for_baseline(&database).await;

    // The engine's next look at KashFlow's customer list waits at the door
    // (the cycle before it has ended); meanwhile the phone changes there.
    target.hold(LIST);
    wait_until(
        30,
        || target.held_waiting() > 0,
        || "the engine never listed KashFlow's customers again".to_owned(),
    )
    .await;
    let mut changed = customer.clone();
    changed.contacts.as_mut().unwrap()[0].telephone = Some("0700 000 0002".to_owned());
    kf.update_customer("OC-U-LATE", &changed).await.unwrap();

    // The delayed "user created" webhook arrives and is processed first.
    let client = reqwest::Client::new();
    let created = user_envelope("POST", &user, &serde_json::to_value(&user).unwrap());
    deliver(&client, &spec.base(), &created).await;
    wait_for_plan(&database, "ordercloud", 1).await;

    // Then the poll sees the KashFlow change: it must reach OrderCloud.
    target.release(LIST);
    let want = record("Lena", "Late", "lena@example.com", "0700 000 0002");
    wait_agree(&kf, &oc, "OC-U-LATE", "u-late", &want).await;
    assert_nothing_parked_then_stop(&database, engine).await;
}

/// The mirror case: a first name changed in OrderCloud (its webhook still
/// on its way) and a last name changed in KashFlow, on a customer that
/// exists on both sides with no sync state. The KashFlow change is synced
/// first; it must not write KashFlow's older first name over OrderCloud's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_first_sync_from_kashflow_does_not_revert_a_newer_ordercloud_change() {
    let target = Target::start().await;
    let (kf, oc) = (target.kashflow_client(), target.ordercloud_client());
    let user = oc_user("u-both", "Ada", "Lovelace", "ada@example.com");
    oc.create_user(BUYER, &user).await.unwrap();
    let customer = kf_customer("OC-U-BOTH", "Ada", "Lovelace", "ada@example.com");
    kf.create_customer(&customer).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("sync.db").display());
    let spec = spec(&target, &database, dir.path());
    let mut engine = Engine::spawn(&spec, &target);
    engine.wait_healthy().await;
    wait_for_baseline(&database).await;

    // OrderCloud: a new first name (no webhook registered: we hold it).
    let patch = json!({"FirstName": "Adeline"});
    let patched = oc.patch_user(BUYER, "u-both", &patch).await.unwrap();
    // KashFlow: a new last name, found by the poll and synced first.
    let mut changed = customer.clone();
    changed.contacts.as_mut().unwrap()[0].last_name = Some("King".to_owned());
    changed.name = Some("Ada King".to_owned());
    kf.update_customer("OC-U-BOTH", &changed).await.unwrap();
    wait_for_plan(&database, "kashflow", 1).await;

    // Now the OrderCloud webhook arrives.
    let client = reqwest::Client::new();
    deliver(
        &client,
        &spec.base(),
        &user_envelope("PATCH", &patched, &patch),
    )
    .await;
    let want = record("Adeline", "King", "ada@example.com", "");
    wait_agree(&kf, &oc, "OC-U-BOTH", "u-both", &want).await;
    assert_nothing_parked_then_stop(&database, engine).await;
}

/// Found by the chaos soak (seed 6070026202691978922): a shopper's first
/// order made their KashFlow customer, KashFlow changed its last name
/// before the poll had ever listed it (so the poll's event was a creation,
/// naming no field), and the delayed "user created" webhook's first sync
/// could not tell which side was newer: the field was left unsettled for
/// good and the two systems disagreed. The order flow now notes what it
/// created the customer with, and the side that moved away from it wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kashflow_change_made_before_the_poll_first_saw_the_customer_is_not_lost() {
    const LIST: &str = "GET /kashflow/v2/customers";
    let target = Target::start().await;
    let (kf, oc) = (target.kashflow_client(), target.ordercloud_client());
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("sync.db").display());
    let spec = spec(&target, &database, dir.path());
    let mut engine = Engine::spawn(&spec, &target);
    engine.wait_healthy().await;
    wait_for_baseline(&database).await;

    // The poll's next look at KashFlow's customers waits at the door.
    target.hold(LIST);
    wait_until(
        30,
        || target.held_waiting() > 0,
        || "the engine never listed KashFlow's customers again".to_owned(),
    )
    .await;
    // A shopper signs up and orders; the order flow creates their customer.
    let orders = target.place_orders(1, "SO-BASE-").await;
    let order = &target.orders()[&orders[0]];
    let user_id = order["FromUserID"].as_str().unwrap().to_owned();
    let code = ledgerbridge_engine::flows::order_to_invoice::customer_code("OC-", &user_id);
    submit_all(&spec.base(), &orders).await;
    wait_until(
        60,
        || target.invoices_by_reference().contains_key(&orders[0]),
        || "the order was never invoiced".to_owned(),
    )
    .await;
    // KashFlow changes the last name before the poll has seen the customer.
    let mut customer = kf.get_customer(&code).await.unwrap().unwrap();
    customer.contacts.as_mut().unwrap()[0].last_name = Some("Cydson".to_owned());
    let update = Customer {
        contacts: customer.contacts.clone(),
        ..Customer::default()
    };
    kf.update_customer(&code, &update).await.unwrap();

    // The delayed "user created" webhook is processed first.
    let user = oc.get_user(BUYER, &user_id).await.unwrap().unwrap();
    let client = reqwest::Client::new();
    let created = user_envelope("POST", &user, &serde_json::to_value(&user).unwrap());
    deliver(&client, &spec.base(), &created).await;
    wait_for_plan(&database, "ordercloud", 1).await;
    target.release(LIST);

    let mut want = CustomerRecord::from_user(&user);
    want.last_name = "Cydson".to_owned();
    wait_agree(&kf, &oc, &code, &user_id, &want).await;
    assert_nothing_parked_then_stop(&database, engine).await;
}

/// Found by the chaos soak (seed 5815460067733499020): a shopper's "user
/// created" webhook made their KashFlow customer (customer sync, before
/// their order did), and the engine was killed after that create and
/// before the run saved the sync state. KashFlow then changed the last
/// name before the poll had ever listed the customer, so the poll's event
/// was a creation naming no field. The repeated run's first sync found the
/// customer on both sides with no noted base (only the order flow noted
/// one, and only when it created the customer itself): the last name was
/// left unsettled, no later event settled it, and KashFlow's "Eveson" never
/// reached OrderCloud — with no parked run. The create now notes the base,
/// whichever flow makes it, and the side that moved away from it wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kashflow_last_name_reaches_ordercloud_after_a_first_sync_killed_before_saving_its_state()
{
    const LIST: &str = "GET /kashflow/v2/customers";
    const CONTACT: &str = "POST /xconnect/contacts";
    let target = Target::start().await;
    let (kf, oc) = (target.kashflow_client(), target.ordercloud_client());
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("sync.db").display());
    let spec = spec(&target, &database, dir.path());
    let mut engine = Engine::spawn(&spec, &target);
    engine.wait_healthy().await;
    wait_for_baseline(&database).await;

    // The poll's next look at KashFlow's customers waits at the door, and
    // so does the xConnect contact the run writes after KashFlow.
    target.hold(LIST);
    wait_until(
        30,
        || target.held_waiting() > 0,
        || "the engine never listed KashFlow's customers again".to_owned(),
    )
    .await;
    target.hold(CONTACT);
    // A shopper signs up; their "user created" webhook makes the KashFlow
    // customer; the run stops at the xConnect write, its state not saved.
    let user = oc_user("drv-kill", "Ada", "Johnson", "ada@example.com");
    oc.create_user(BUYER, &user).await.unwrap();
    let client = reqwest::Client::new();
    let created = user_envelope("POST", &user, &serde_json::to_value(&user).unwrap());
    deliver(&client, &spec.base(), &created).await;
    wait_until(
        60,
        || target.held_waiting() > 1,
        || "the run never reached its xConnect write".to_owned(),
    )
    .await;
    assert!(kf.get_customer("OC-DRV-KILL").await.unwrap().is_some());
    engine.sigkill();
    target.release(CONTACT);

    // KashFlow changes the last name; the poll has not seen the customer.
    let mut customer = kf.get_customer("OC-DRV-KILL").await.unwrap().unwrap();
    customer.contacts.as_mut().unwrap()[0].last_name = Some("Eveson".to_owned());
    let update = Customer {
        contacts: customer.contacts.clone(),
        ..Customer::default()
    };
    kf.update_customer("OC-DRV-KILL", &update).await.unwrap();

    // The restarted engine repeats the run (a first sync), then polls.
    let mut engine = Engine::spawn(&spec, &target);
    engine.wait_healthy().await;
    wait_for_plan(&database, "ordercloud", 1).await;
    target.release(LIST);

    let want = record("Ada", "Eveson", "ada@example.com", "");
    wait_agree(&kf, &oc, "OC-DRV-KILL", "drv-kill", &want).await;
    assert_nothing_parked_then_stop(&database, engine).await;
}

/// A difference nothing can settle — both systems knew the person before
/// the sync was set up, with different last names, and neither changes it
/// again — is not left in silence: the settling pass after the first sync
/// parks a run naming the field and both values.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_difference_no_change_settles_is_reported_by_a_parked_run() {
    let target = Target::start().await;
    let (kf, oc) = (target.kashflow_client(), target.ordercloud_client());
    let user = oc_user("u-old", "Ola", "Older", "ola@example.com");
    oc.create_user(BUYER, &user).await.unwrap();
    let customer = kf_customer("OC-U-OLD", "Ola", "Oldman", "ola@example.com");
    kf.create_customer(&customer).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("sync.db").display());
    let mut spec = spec(&target, &database, dir.path());
    spec.extra.push_str("settle_after_secs = 1\n");
    let mut engine = Engine::spawn(&spec, &target);
    engine.wait_healthy().await;
    wait_for_baseline(&database).await;

    // A phone set in OrderCloud: its webhook is the customer's first sync.
    let patch = json!({"Phone": "0100 000 0003"});
    let patched = oc.patch_user(BUYER, "u-old", &patch).await.unwrap();
    let client = reqwest::Client::new();
    deliver(
        &client,
        &spec.base(),
        &user_envelope("PATCH", &patched, &patch),
    )
    .await;
    wait_for_plan(&database, "ordercloud", 1).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    let parked = loop {
        let parked = store_parked(&database).await;
        if !parked.is_empty() {
            break parked;
        }
        assert!(
            Instant::now() < deadline,
            "the unsettled last name was never reported"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(parked.len(), 1, "parked: {parked:#?}");
    assert!(
        parked[0].contains(r#"last_name (OrderCloud \"Older\", KashFlow \"Oldman\")"#),
        "parked: {parked:#?}"
    );
    // The phone went through; the last names are as they were.
    let (k, o) = both(&kf, &oc, "OC-U-OLD", "u-old").await;
    assert_eq!(k.unwrap().phone, "0100 000 0003");
    assert_eq!(o.unwrap().last_name, "Older");
    assert!(engine.sigterm().success());
}
