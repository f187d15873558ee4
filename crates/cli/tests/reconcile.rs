//! Reconciliation end to end: orders run through the real engine against
//! the sandbox reconcile with no difference; then damage made in the
//! sandbox (an invoice deleted, an amount changed, a second payment) shows
//! up with its kind and fix — in the CLI's exit code, JSON and CSV, and
//! over the REST API of the running engine.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

async fn wait_done(database: &str, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let counts = run_counts(database).await;
        let done = counts.get("succeeded").copied().unwrap_or(0)
            + counts.get("parked").copied().unwrap_or(0);
        if done >= n {
            assert_eq!(counts.get("parked"), None, "{counts:?}");
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{counts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A KashFlow session token of the sandbox (the two-step login).
async fn kf_token(client: &reqwest::Client, kf: &str) -> String {
    let step1: Value = client
        .post(format!("{kf}/sessiontoken"))
        .json(&json!({"UserName": "sim", "Password": "sim-password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let word: Vec<char> = "pineapple".chars().collect();
    let answers: Vec<Value> = step1["MemorableWordList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let position = p["Position"].as_u64().unwrap() as usize;
            json!({"Position": position, "Value": word[position - 1].to_string()})
        })
        .collect();
    let step2: Value = client
        .put(format!("{kf}/sessiontoken"))
        .json(&json!({"TemporaryToken": step1["TemporaryToken"], "MemorableWordList": answers}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    step2["SessionToken"].as_str().unwrap().to_owned()
}

fn reconcile_cli(config: &std::path::Path, day: &str, format: &str) -> (i32, String, String) {
    cli(&[
        "--config",
        config.to_str().unwrap(),
        "reconcile",
        "--from",
        day,
        "--to",
        day,
        "--format",
        format,
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_period_then_damage_made_in_the_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/engine.db", dir.path().display());
    let target = Target::start().await;
    let orders = target.place_orders(4, "SO-REC").await;
    let client = reqwest::Client::new();

    // Orders 1 and 2 are completed (paid); order 2 was also paid at the gateway.
    let bearer = target.ordercloud_token().await;
    for order in &orders[1..3] {
        let done = client
            .post(format!(
                "{}/ordercloud/v1/orders/Incoming/{order}/complete",
                target.base()
            ))
            .bearer_auth(&bearer)
            .send()
            .await
            .unwrap();
        assert!(done.status().is_success());
    }
    let total = target.orders()[&orders[2]]["Total"].as_f64().unwrap();
    let paid = client
        .post(format!("{}/gateway/v1/payment_intents", target.base()))
        .bearer_auth("sk_test_sim")
        .json(&json!({"amount": (total * 100.0).round() as i64, "currency": "gbp", "metadata": {"order_id": orders[2]}}))
        .send()
        .await
        .unwrap();
    assert!(paid.status().is_success());

    let mut spec = EngineSpec::new(&database, dir.path());
    spec.extra = format!(
        "[connections.gateway]\nbase_url = \"{}/gateway\"\napi_key = \"sk_test_sim\"\n",
        target.base()
    );
    let mut engine = Engine::spawn(&spec, &target);
    engine.wait_healthy().await;
    submit_all(&spec.base(), &orders).await;
    wait_done(&database, 4).await;
    for order in &orders[1..3] {
        let body =
            submit_envelope(order, &format!("complete-{order}")).replace("/submit", "/complete");
        deliver(&client, &spec.base(), &body).await;
    }
    wait_done(&database, 6).await;
    target.assert_exactly_one_invoice_each(&orders);

    let config = spec.config_path();
    let today = chrono::Utc::now().date_naive().to_string();
    let (code, out, err) = reconcile_cli(&config, &today, "json");
    assert_eq!(code, 0, "{out}\n{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["differences"], json!([]), "{report:#}");
    assert_eq!(report["matched"]["orders"], 4);
    assert_eq!(report["checked"]["payments"], 1);

    // Damage: invoice of order 0 deleted, order 3's invoice changed by
    // 5.00, a second payment typed on order 1's invoice.
    let kf = format!("{}/kashflow/v2", target.base());
    let token = format!("KfToken {}", kf_token(&client, &kf).await);
    let invoices = target.invoices_by_reference();
    let number = |order: &str| invoices[order][0];
    let deleted = client
        .delete(format!("{kf}/invoices/{}", number(&orders[0])))
        .header("Authorization", &token)
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());
    let get = |n: i64| {
        let (client, kf, token) = (client.clone(), kf.clone(), token.clone());
        async move {
            client
                .get(format!("{kf}/invoices/{n}"))
                .header("Authorization", &token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let mut changed = get(number(&orders[3])).await;
    let lines = changed["LineItems"].as_array().unwrap().clone();
    let rate = lines[0]["Rate"].as_f64().unwrap();
    // The invoice grows by 5.00 a unit (VAT as it was): the extra, in its currency.
    let extra = format!(
        "{} {:.2}",
        changed["Currency"]["Code"].as_str().unwrap(),
        5.0 * lines[0]["Quantity"].as_f64().unwrap()
    );
    let lines = changed["LineItems"].as_array_mut().unwrap();
    lines[0]["Rate"] = json!(((rate + 5.0) * 100.0).round() / 100.0);
    let put = client
        .put(format!("{kf}/invoices/{}", number(&orders[3])))
        .header("Authorization", &token)
        .json(&json!({"LineItems": changed["LineItems"]}))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.text().await.unwrap());
    let paid_invoice = get(number(&orders[1])).await;
    let mut payments = paid_invoice["PaymentLines"].as_array().unwrap().clone();
    payments.push(json!({"Amount": paid_invoice["GrossAmount"], "Reference": "typed again"}));
    let put = client
        .put(format!("{kf}/invoices/{}", number(&orders[1])))
        .header("Authorization", &token)
        .json(&json!({"PaymentLines": payments}))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.text().await.unwrap());

    let (code, out, err) = reconcile_cli(&config, &today, "json");
    assert_eq!(code, 1, "{out}\n{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let differences = report["differences"].as_array().unwrap();
    let found: Vec<(&str, &str)> = differences
        .iter()
        .map(|d| (d["kind"].as_str().unwrap(), d["order_id"].as_str().unwrap()))
        .collect();
    assert_eq!(
        found,
        [
            ("order_without_invoice", orders[0].as_str()),
            ("amount_mismatch", orders[3].as_str()),
            ("overpaid", orders[1].as_str()),
        ],
        "{report:#}"
    );
    let fix = |i: usize| {
        differences[i]["suggested_fix"]
            .as_str()
            .or(differences[i]["fix"].as_str())
            .unwrap()
            .to_owned()
    };
    assert!(
        fix(0).contains(&format!(
            "invoice {} is gone from KashFlow",
            number(&orders[0])
        )),
        "{}",
        fix(0)
    );
    assert_eq!(
        fix(1),
        format!("credit note for invoice {} of {extra}", number(&orders[3]))
    );
    assert!(fix(2).starts_with("refund "), "{}", fix(2));
    assert_eq!(report["counts"]["overpaid"], 1);
    assert_eq!(report["matched"]["orders"], 1);

    // CSV to a file.
    let csv_path = dir.path().join("report.csv");
    let (code, _, err) = cli(&[
        "--config",
        config.to_str().unwrap(),
        "reconcile",
        "--from",
        &today,
        "--to",
        &today,
        "--format",
        "csv",
        "--output",
        csv_path.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 4, "{csv}");
    let amount_row = rows[2]
        .replace(&orders[3], "ORDER")
        .replace(&format!("invoice {}", number(&orders[3])), "invoice N")
        .replace(&extra, "AMOUNT");
    let amount_row = amount_row
        .split(',')
        .enumerate()
        .map(|(i, f)| if matches!(i, 2 | 4 | 5 | 6) { "…" } else { f })
        .collect::<Vec<_>>()
        .join(",");
    insta::assert_snapshot!(format!("{}\n{amount_row}", rows[0]), @r###"
    kind,order_id,invoice_number,payment_id,expected,actual,detail,suggested_fix
    amount_mismatch,ORDER,…,,…,…,…,credit note for invoice N of AMOUNT
    "###);

    // A bad date is an error: exit code 2.
    let (code, _, err) = cli(&[
        "--config",
        config.to_str().unwrap(),
        "reconcile",
        "--from",
        "2026-13-01",
        "--to",
        &today,
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("YYYY-MM-DD"), "{err}");

    // The same over the REST API of the running engine.
    let answer = client
        .get(format!(
            "{}/api/reconcile?from={today}&to={today}&format=csv",
            spec.base()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let body = answer.text().await.unwrap();
    assert_eq!(body.lines().count(), 4, "{body}");
    let answer = client
        .get(format!(
            "{}/api/reconcile?from=yesterday&to={today}",
            spec.base()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    engine.sigterm();
}
