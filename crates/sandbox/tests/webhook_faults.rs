//! Webhook delivery faults over real HTTP: set through `/_sandbox`, through
//! fault spec strings (control API, config file) and seen in the deliveries
//! a real receiver gets: failed sends are retried until delivered, and a
//! duplicated message arrives twice with the same `LogID` and the same bytes.

mod common;

use common::{eventually, ordercloud_session, start, start_receiver, status_and_json};
use ledgerbridge_sandbox::faults::{parse_spec, FaultSpec};
use ledgerbridge_sandbox::ordercloud::oc_hash;
use ledgerbridge_sandbox::SandboxConfig;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Fast retries, and enough attempts that a delivery outlives a test step.
fn patient_config() -> SandboxConfig {
    let mut config = SandboxConfig::default();
    config.ordercloud.delivery.initial_backoff_ms = 10;
    config.ordercloud.delivery.max_backoff_ms = 20;
    config.ordercloud.delivery.max_attempts = 500;
    config
}

async fn control(
    client: &reqwest::Client,
    control_url: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = client.request(method, format!("{control_url}{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    status_and_json(request.send().await.expect("control request sent")).await
}

fn submit_hook(url: &str) -> Value {
    json!({
        "ID": "hook1", "Name": "Ledgerbridge", "Url": url, "HashKey": "sim-hash-key-123",
        "WebhookRoutes": [{"Route": "v1/orders/{direction}/{orderID}/submit", "Verb": "POST"}]
    })
}

/// The deliveries as the control API reports them.
async fn deliveries(client: &reqwest::Client, control_url: &str) -> Vec<Value> {
    let (status, snapshot) = control(client, control_url, Method::GET, "/ordercloud", None).await;
    assert_eq!(status, StatusCode::OK);
    snapshot["Deliveries"]
        .as_array()
        .cloned()
        .expect("Deliveries array")
}

#[tokio::test]
async fn failed_sends_are_retried_and_duplicates_share_the_log_id() {
    let receiver = start_receiver(0).await;
    let oc = ordercloud_session(patient_config()).await;
    let control_url = oc.sandbox.control_url();
    let client = &oc.client;

    // Every send fails and every message is duplicated, set by a spec string.
    let (status, body) = control(
        client,
        &control_url,
        Method::POST,
        "/faults/rules",
        Some(json!("ordercloud/webhooks:fail_rate=1,duplicate_rate=100%")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["webhooks"]["ordercloud"]["fail_rate"], 1.0);
    assert_eq!(body["webhooks"]["ordercloud"]["duplicate_rate"], 1.0);
    assert_eq!(body["webhooks"]["gateway"]["fail_rate"], 0.0);
    assert_eq!(body["rules"], json!([]), "no request rule was added");

    oc.post("/webhooks", &submit_hook(&receiver.url)).await;
    oc.order_with_lines("SO-WF", &[("WID1", 2)]).await;
    let (status, order) = oc.post("/orders/Outgoing/SO-WF/submit", &Value::Null).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");

    // Both copies fail at least twice, so they are being retried...
    let mut failing = Vec::new();
    for _ in 0..600 {
        failing = deliveries(client, &control_url).await;
        let retrying = failing.len() == 2
            && failing.iter().all(|d| {
                d["state"] == "pending" && d["attempts"].as_array().is_some_and(|a| a.len() >= 2)
            });
        if retrying {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(failing.len(), 2, "{failing:?}");
    assert!(
        receiver.received().is_empty(),
        "a failed send sends nothing"
    );

    // ...and once sends stop failing, the retries deliver them.
    let (status, now) = control(
        client,
        &control_url,
        Method::PATCH,
        "/ordercloud/webhook-faults",
        Some(json!({"fail_rate": 0})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{now}");
    assert_eq!(now["fail_rate"], 0.0);
    assert_eq!(now["duplicate_rate"], 1.0, "PATCH keeps the other modes");
    eventually("both copies delivered", || receiver.received().len() == 2).await;

    let mut delivered = Vec::new();
    for _ in 0..600 {
        delivered = deliveries(client, &control_url).await;
        if delivered.iter().all(|d| d["state"] == "delivered") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(delivered.len(), 2);
    for delivery in &delivered {
        assert_eq!(delivery["state"], "delivered", "{delivery}");
        let attempts = delivery["attempts"].as_array().expect("attempts");
        assert!(attempts.len() >= 3, "{delivery}");
        let (last, failed) = attempts.split_last().expect("an attempt");
        assert_eq!(last["status"], 200);
        assert!(failed.iter().all(|a| a["status"].is_null()
            && a["error"]
                .as_str()
                .is_some_and(|e| e.contains("simulated send failure"))));
    }
    assert_eq!(
        delivered.iter().filter(|d| d["duplicate"] == true).count(),
        1
    );

    let received = receiver.received();
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[0].body, received[1].body,
        "a duplicate is the same bytes"
    );
    let mut log_ids = Vec::new();
    for hit in &received {
        let hash = hit
            .headers
            .get("x-oc-hash")
            .and_then(|v| v.to_str().ok())
            .expect("X-oc-hash");
        assert_eq!(hash, oc_hash("sim-hash-key-123", &hit.body));
        let envelope: Value = serde_json::from_slice(&hit.body).expect("JSON");
        assert_eq!(envelope["RouteParams"]["orderID"], "SO-WF");
        log_ids.push(envelope["LogID"].as_str().expect("LogID").to_owned());
    }
    assert_eq!(log_ids[0], log_ids[1], "duplicates carry the same LogID");
    assert_eq!(delivered[0]["event_id"], json!(log_ids[0]));
    assert_eq!(delivered[1]["event_id"], json!(log_ids[0]));

    // A second message gets a new LogID (still duplicated).
    oc.order_with_lines("SO-WF2", &[("WID2", 1)]).await;
    oc.post("/orders/Outgoing/SO-WF2/submit", &Value::Null)
        .await;
    eventually("second message twice", || receiver.received().len() == 4).await;
    let later: Vec<String> = receiver.received()[2..]
        .iter()
        .map(|hit| {
            let envelope: Value = serde_json::from_slice(&hit.body).expect("JSON");
            envelope["LogID"].as_str().expect("LogID").to_owned()
        })
        .collect();
    assert_eq!(later[0], later[1]);
    assert_ne!(later[0], log_ids[0]);
}

#[tokio::test]
async fn webhook_faults_control_routes_validate_and_replace() {
    let sandbox = start(SandboxConfig::default()).await;
    let client = common::client();
    let control_url = sandbox.control_url();

    let (status, body) = control(
        &client,
        &control_url,
        Method::GET,
        "/ordercloud/webhook-faults",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"fail_rate": 0.0, "duplicate_rate": 0.0, "delay_rate": 0.0, "max_delay_ms": 0,
               "wrong_hash_rate": 0.0, "seed": null})
    );

    // PUT replaces (omitted modes become 0); the gateway has its own.
    let (status, body) = control(
        &client,
        &control_url,
        Method::PUT,
        "/gateway/webhook-faults",
        Some(json!({"duplicate_rate": 0.5, "seed": 9})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["duplicate_rate"], 0.5);
    assert_eq!(body["seed"], 9);
    assert_eq!(
        sandbox.sandbox().gateway.webhook_faults().duplicate_rate,
        0.5
    );
    assert_eq!(
        sandbox.sandbox().ordercloud.webhook_faults().duplicate_rate,
        0.0
    );

    // Bad input: 400 with a reason, nothing changes.
    for (method, path, body, expected) in [
        (
            Method::PUT,
            "/gateway/webhook-faults",
            json!({"fail_rate": 2}),
            "outside",
        ),
        (
            Method::PUT,
            "/gateway/webhook-faults",
            json!({"fail": 0.1}),
            "unknown field",
        ),
        (
            Method::PATCH,
            "/gateway/webhook-faults",
            json!({"fail_rate": "lots"}),
            "fail_rate",
        ),
        (
            Method::PATCH,
            "/gateway/webhook-faults",
            json!([1]),
            "object",
        ),
        (
            Method::POST,
            "/faults/rules",
            json!("kashflow/webhooks:fail_rate=0.1"),
            "sends no webhooks",
        ),
        (
            Method::POST,
            "/faults/rules",
            json!("ordercloud:fail_rate=0.1"),
            "ordercloud/webhooks:fail_rate",
        ),
        (
            Method::POST,
            "/faults/rules",
            json!("ordercloud/webhooks:fail_rate=0.1,explode=1"),
            "unknown webhook fault",
        ),
        (
            Method::PUT,
            "/faults",
            json!({"webhooks": {"xconnect": {"fail_rate": 0.1}}}),
            "sends no webhooks",
        ),
    ] {
        let (status, reply) = control(&client, &control_url, method, path, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {reply}");
        assert!(
            reply.to_string().contains(expected),
            "{path}: expected `{expected}` in {reply}"
        );
    }
    assert_eq!(
        sandbox.sandbox().gateway.webhook_faults().duplicate_rate,
        0.5
    );
    let (status, body) = control(
        &client,
        &control_url,
        Method::GET,
        "/kashflow/webhook-faults",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = control(
        &client,
        &control_url,
        Method::PUT,
        "/gateway/webhook-faults",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an empty body is not JSON");

    // PUT /faults replaces the whole picture, webhook faults included.
    let (status, body) = control(
        &client,
        &control_url,
        Method::PUT,
        "/faults",
        Some(json!({
            "rules": ["kashflow:latency=1ms", "ordercloud/webhooks:wrong_hash_rate=0.25"],
            "webhooks": {"ordercloud": {"fail_rate": 0.1}}
        })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rules"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["webhooks"]["ordercloud"]["fail_rate"], 0.1);
    assert_eq!(body["webhooks"]["ordercloud"]["wrong_hash_rate"], 0.25);
    assert_eq!(
        body["webhooks"]["gateway"]["duplicate_rate"], 0.0,
        "not given, so none"
    );

    // DELETE /faults removes webhook faults too.
    let (status, _) = control(&client, &control_url, Method::DELETE, "/faults", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        sandbox.sandbox().ordercloud.webhook_faults(),
        Default::default()
    );
    let (status, body) = control(
        &client,
        &control_url,
        Method::DELETE,
        "/ordercloud/webhook-faults",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["fail_rate"], 0.0);
}

#[tokio::test]
async fn webhook_fault_specs_from_a_config_file_survive_reset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sandbox.toml");
    std::fs::write(
        &path,
        r#"
[faults]
specs = ["kashflow:latency=1ms", "ordercloud/webhooks:fail_rate=0.2,duplicate_rate=0.1",
         "gateway/webhooks:delay_rate=50%,max_delay=2s,seed=7"]

[ordercloud.webhook_faults]
wrong_hash_rate = 0.05
"#,
    )
    .expect("write");
    let config = SandboxConfig::load(&path).expect("loads");
    assert_eq!(config.faults.all_rules().expect("rules").len(), 1);
    assert_eq!(config.faults.webhook_specs().expect("specs").len(), 2);

    let sandbox = start(config).await;
    let client = common::client();
    let control_url = sandbox.control_url();
    let (_, faults) = control(&client, &control_url, Method::GET, "/faults", None).await;
    let expected_ordercloud = json!({"fail_rate": 0.2, "duplicate_rate": 0.1, "delay_rate": 0.0,
        "max_delay_ms": 0, "wrong_hash_rate": 0.05, "seed": null});
    assert_eq!(faults["webhooks"]["ordercloud"], expected_ordercloud);
    assert_eq!(faults["webhooks"]["gateway"]["delay_rate"], 0.5);
    assert_eq!(faults["webhooks"]["gateway"]["max_delay_ms"], 2000);
    assert_eq!(faults["webhooks"]["gateway"]["seed"], 7);

    control(
        &client,
        &control_url,
        Method::DELETE,
        "/ordercloud/webhook-faults",
        None,
    )
    .await;
    let (status, _) = control(&client, &control_url, Method::POST, "/reset", None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, now) = control(
        &client,
        &control_url,
        Method::GET,
        "/ordercloud/webhook-faults",
        None,
    )
    .await;
    assert_eq!(
        now, expected_ordercloud,
        "reset returns to the configuration"
    );

    std::fs::write(
        &path,
        "[faults]\nspecs = [\"ordercloud/webhooks:fail_rate=3\"]\n",
    )
    .expect("write");
    let err = SandboxConfig::load(&path).expect_err("rate above 1");
    assert!(err.to_string().contains("outside"), "{err}");
    std::fs::write(&path, "[gateway.webhook_faults]\nfail_rate = 1.5\n").expect("write");
    let err = SandboxConfig::load(&path).expect_err("rate above 1");
    assert!(err.to_string().contains("gateway.webhook_faults"), "{err}");
}

#[test]
fn specs_tell_request_rules_from_webhook_faults() {
    let Ok(FaultSpec::Webhooks(spec)) =
        parse_spec("OrderCloud/Webhooks:fail_rate=0.2,duplicate_rate=10%,max_delay=500ms")
    else {
        panic!("a webhook spec");
    };
    assert_eq!(spec.service, "ordercloud");
    assert_eq!(spec.fail_rate, Some(0.2));
    assert_eq!(spec.duplicate_rate, Some(0.1));
    assert_eq!(spec.max_delay_ms, Some(500));
    assert_eq!(spec.delay_rate, None);
    // A request rule on the gateway's webhook endpoint route stays a rule.
    assert!(matches!(
        parse_spec("gateway/v1/webhook_endpoints:error_rate=0.5"),
        Ok(FaultSpec::Rule(_))
    ));
    assert!(matches!(
        parse_spec("kashflow:error_rate=0.5"),
        Ok(FaultSpec::Rule(_))
    ));
    let err = ledgerbridge_sandbox::faults::parse_fault_spec("ordercloud/webhooks:fail_rate=0.2")
        .expect_err("not a request rule");
    assert!(err.contains("webhook delivery spec"), "{err}");
}
