//! Payment gateway simulator over real HTTP: payment intents, refunds,
//! payouts, Stripe-style signed events delivered to a receiver.

mod common;

use common::{eventually, start, start_receiver, status_and_json};
use ledgerbridge_sandbox::gateway::stripe_signature;
use ledgerbridge_sandbox::SandboxConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn verify_event(received: &common::Received) -> Value {
    let header = received
        .headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .expect("Stripe-Signature");
    let t: i64 = header
        .split(',')
        .find_map(|p| p.strip_prefix("t="))
        .and_then(|t| t.parse().ok())
        .expect("t=");
    assert_eq!(header, stripe_signature("whsec_sim", t, &received.body));
    let event: Value = serde_json::from_slice(&received.body).expect("JSON");
    assert_eq!(event["created"], json!(t));
    assert!(event["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("evt_")));
    event
}

#[tokio::test]
async fn payments_refunds_payouts_and_signed_events() {
    let receiver = start_receiver(1).await;
    let mut config = SandboxConfig::default();
    config.gateway.webhook_endpoints = vec![receiver.url.clone()];
    config.gateway.delivery.initial_backoff_ms = 10;
    let sandbox = start(config).await;
    let client = common::client();
    let base = sandbox.gateway_url();
    let post = |path: &str, body: Value| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth("sk_test_sim")
            .json(&body)
            .send()
    };

    let (status, body) = status_and_json(
        client
            .post(format!("{base}/v1/payment_intents"))
            .json(&json!({}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "api_key_invalid");

    let (status, intent) = status_and_json(
        post(
            "/v1/payment_intents",
            json!({"amount": 5250, "currency": "GBP", "metadata": {"order_id": "SO-1"}}),
        )
        .await
        .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{intent}");
    assert_eq!(intent["status"], "succeeded");
    assert_eq!(intent["currency"], "gbp");
    assert_eq!(intent["metadata"]["order_id"], "SO-1");
    let intent_id = intent["id"].as_str().expect("id").to_owned();

    let (status, body) = status_and_json(
        post("/v1/payment_intents", json!({"currency": "gbp"}))
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["param"], "amount");

    let (status, refund) = status_and_json(
        post(
            "/v1/refunds",
            json!({"payment_intent": intent_id, "amount": 250}),
        )
        .await
        .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{refund}");
    assert_eq!(refund["amount"], 250);
    let (status, body) = status_and_json(
        post(
            "/v1/refunds",
            json!({"payment_intent": intent_id, "amount": 6000}),
        )
        .await
        .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "amount_too_large");

    let (status, payout) = status_and_json(
        post("/v1/payouts", json!({"amount": 10000, "currency": "gbp"}))
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{payout}");
    assert_eq!(payout["fee"], 160);
    assert_eq!(payout["amount"], 9840);
    assert_eq!(payout["status"], "paid");

    // Idempotency-Key replays the first answer.
    let mut replies = Vec::new();
    for _ in 0..2 {
        let response = client
            .post(format!("{base}/v1/payment_intents"))
            .bearer_auth("sk_test_sim")
            .header("Idempotency-Key", "k-1")
            .json(&json!({"amount": 100, "currency": "eur"}))
            .send()
            .await
            .expect("sent");
        replies.push(status_and_json(response).await.1);
    }
    assert_eq!(replies[0]["id"], replies[1]["id"]);

    // Four events (the idempotent replay emits none); the first delivery
    // failed once and was retried.
    eventually("events delivered", || {
        let deliveries = sandbox.sandbox().gateway.deliveries();
        deliveries.len() == 4 && deliveries.iter().all(|d| d.state == "delivered")
    })
    .await;
    let mut kinds: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| {
            verify_event(r)["type"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        ["charge.refunded", "payment_intent.succeeded", "payout.paid"]
    );
    let refunded = receiver
        .received()
        .iter()
        .map(verify_event)
        .find(|e| e["type"] == "charge.refunded")
        .expect("refund event");
    assert_eq!(refunded["data"]["object"]["amount_refunded"], 250);
    assert_eq!(receiver.received().len(), 5, "one retry");

    let (status, got) = status_and_json(
        client
            .get(format!("{base}/v1/payment_intents/{intent_id}"))
            .bearer_auth("sk_test_sim")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["id"], json!(intent_id));
}
