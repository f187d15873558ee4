//! Fault injection over real HTTP: each fault mode is checked by its effect
//! (never by timing), in each service's error format, plus the control API
//! for rules and counters. (Webhook delivery faults: `webhook_faults.rs`.)

mod common;

use common::{
    eventually, kashflow_session, ordercloud_session, start, start_receiver, status_and_json,
    KashFlowSession,
};
use ledgerbridge_sandbox::faults::{parse_fault_spec, FaultsConfig};
use ledgerbridge_sandbox::SandboxConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn put_rules(session: &KashFlowSession, body: Value) -> (StatusCode, Value) {
    let url = format!("{}/faults", session.sandbox.control_url());
    status_and_json(
        session
            .client
            .put(url)
            .json(&body)
            .send()
            .await
            .expect("sent"),
    )
    .await
}

async fn counters(session: &KashFlowSession) -> Value {
    let url = format!("{}/faults", session.sandbox.control_url());
    let (_, body) = status_and_json(session.client.get(url).send().await.expect("sent")).await;
    body["counters"].clone()
}

#[tokio::test]
async fn error_rate_answers_the_status_in_kashflow_format() {
    let session = kashflow_session(SandboxConfig::default()).await;
    let (status, body) = put_rules(&session, json!(["kashflow:error_rate=1,status=503"])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = session.get("/currencies").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body["Error"].is_string() && body["Message"].is_string(),
        "{body}"
    );
    assert_eq!(counters(&session).await["kashflow.error_rate"], 1);
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let session = kashflow_session(SandboxConfig::default()).await;
    put_rules(&session, json!(["kashflow:rate_limit=1/h,burst=2"])).await;
    assert_eq!(session.get("/currencies").await.0, StatusCode::OK);
    assert_eq!(session.get("/currencies").await.0, StatusCode::OK);
    let response = session
        .client
        .get(session.url("/currencies"))
        .header("Authorization", format!("KfToken {}", session.token))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After seconds");
    assert!(retry_after >= 1);
    let (_, body) = status_and_json(response).await;
    assert!(body["Error"].is_string(), "{body}");
}

#[tokio::test]
async fn connection_reset_is_a_client_error_not_a_status() {
    let session = kashflow_session(SandboxConfig::default()).await;
    put_rules(&session, json!(["kashflow:reset=1"])).await;
    let result = session
        .client
        .get(session.url("/currencies"))
        .header("Authorization", format!("KfToken {}", session.token))
        .send()
        .await;
    let err = result.expect_err("the connection must close without a response");
    assert!(!err.is_status());
    assert_eq!(counters(&session).await["kashflow.connection_reset"], 1);
}

#[tokio::test]
async fn commit_then_drop_writes_then_fails_the_client() {
    let session = kashflow_session(SandboxConfig::default()).await;
    put_rules(
        &session,
        json!({"rules": [{"service": "kashflow", "route_prefix": "/customers", "method": "POST",
            "fault": {"kind": "commit_then_drop", "rate": 1.0}}]}),
    )
    .await;
    let result = session
        .client
        .post(session.url("/customers"))
        .header("Authorization", format!("KfToken {}", session.token))
        .json(&json!({"Code": "DROPPED", "Name": "Written anyway"}))
        .send()
        .await;
    let counts = counters(&session).await;
    assert!(
        result.is_err(),
        "the client must not see a response: {:?} {counts}",
        result.map(|r| r.status())
    );
    // The write happened.
    let (status, customer) = session.get("/customers/DROPPED").await;
    assert_eq!(status, StatusCode::OK, "{customer}");
    assert_eq!(customer["Name"], "Written anyway");
}

#[tokio::test]
async fn validation_and_execution_timeout_400s() {
    let session = kashflow_session(SandboxConfig::default()).await;
    put_rules(&session, json!(["kashflow:validation_400=1"])).await;
    let (status, body) = session.post("/customers", &json!({"Name": "x"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["Error"], "ValidationError");

    // The SQL timeout hits GETs only.
    put_rules(&session, json!(["kashflow:execution_timeout=1"])).await;
    let (status, body) = session.get("/currencies").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["Error"], "-2146232060");
    assert!(body["Message"]
        .as_str()
        .is_some_and(|m| m.starts_with("Execution Timeout Expired.")));
    let (status, body) = session.post("/customers", &json!({"Name": "y"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn forced_session_expiry_fault() {
    let session = kashflow_session(SandboxConfig::default()).await;
    put_rules(&session, json!(["kashflow:expire_sessions=1"])).await;
    let (status, body) = session.get("/currencies").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["Error"], "InvalidSessionToken");
}

#[tokio::test]
async fn latency_and_route_prefix_only_touch_matching_requests() {
    let session = kashflow_session(SandboxConfig::default()).await;
    put_rules(
        &session,
        json!([
            "*:latency=1..2ms",
            "kashflow/invoices:error_rate=1,status=502"
        ]),
    )
    .await;
    assert_eq!(session.get("/currencies").await.0, StatusCode::OK);
    assert_eq!(session.get("/invoices").await.0, StatusCode::BAD_GATEWAY);
    let counts = counters(&session).await;
    assert_eq!(counts["kashflow.latency"], 2);
    assert_eq!(counts["kashflow.error_rate"], 1);
    // DELETE removes every rule.
    let url = format!("{}/faults", session.sandbox.control_url());
    let response = session.client.delete(url).send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(session.get("/invoices").await.0, StatusCode::OK);
}

#[tokio::test]
async fn seeded_shares_are_reproducible_over_http() {
    let config = SandboxConfig {
        faults: FaultsConfig {
            seed: Some(42),
            specs: vec!["kashflow:error_rate=0.5".to_owned()],
            ..FaultsConfig::default()
        },
        ..SandboxConfig::default()
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let session = kashflow_session(config.clone()).await;
        // Login itself passes through the fault layer; reset the RNG first.
        put_rules(
            &session,
            json!({"rules": ["kashflow:error_rate=0.5"], "seed": 42}),
        )
        .await;
        let mut statuses = Vec::new();
        for _ in 0..30 {
            statuses.push(session.get("/currencies").await.0.as_u16());
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    assert!(
        runs[0].contains(&200) && runs[0].contains(&500),
        "{:?}",
        runs[0]
    );
}

#[tokio::test]
async fn control_api_validates_and_adds_rules() {
    let session = kashflow_session(SandboxConfig::default()).await;
    let (status, body) = put_rules(&session, json!(["kashflow:error_rate=7"])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.to_string().contains("outside"), "{body}");
    let url = format!("{}/faults/rules", session.sandbox.control_url());
    let (status, body) = status_and_json(
        session
            .client
            .post(&url)
            .json(&json!("ordercloud:rate_limit=60/min"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["rules"][0]["fault"]["kind"], "rate_limit");
    assert_eq!(body["rules"][0]["fault"]["per_minute"], 60);
    assert!(parse_fault_spec("kashflow:latency=5..20ms").is_ok());
}

#[tokio::test]
async fn config_file_loads_fault_specs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sandbox.toml");
    std::fs::write(
        &path,
        "[kashflow]\nsession_ttl_secs = 120\n\n[faults]\nseed = 1\nspecs = [\"kashflow:error_rate=10%\"]\n",
    )
    .expect("write");
    let config = SandboxConfig::load(&path).expect("loads");
    assert_eq!(config.kashflow.session_ttl_secs, 120);
    assert_eq!(config.faults.all_rules().expect("rules").len(), 1);
    std::fs::write(&path, "[kashflow]\nsession_ttl = 1\n").expect("write");
    let err = SandboxConfig::load(&path).expect_err("unknown key");
    assert!(err.to_string().contains("session_ttl"), "{err}");
    std::fs::write(&path, "[faults]\nspecs = [\"kashflow:nonsense=1\"]\n").expect("write");
    assert!(SandboxConfig::load(&path).is_err());
}

// ---- OrderCloud, xConnect and gateway: the same faults in each service's own format ----

async fn put_rules_at(
    client: &reqwest::Client,
    control_url: &str,
    body: Value,
) -> (StatusCode, Value) {
    status_and_json(
        client
            .put(format!("{control_url}/faults"))
            .json(&body)
            .send()
            .await
            .expect("sent"),
    )
    .await
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After seconds")
}

#[tokio::test]
async fn ordercloud_faults_answer_with_errors_bodies() {
    let oc = ordercloud_session(SandboxConfig::default()).await;
    let control = oc.sandbox.control_url();
    let (status, body) = put_rules_at(
        &oc.client,
        &control,
        json!(["ordercloud:rate_limit=1/h,burst=1"]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(oc.get("/products").await.0, StatusCode::OK);
    let response = oc
        .client
        .get(format!("{}/v1/products", oc.base))
        .bearer_auth(&oc.token)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&response) >= 1);
    let (_, body) = status_and_json(response).await;
    assert_eq!(body["Errors"][0]["ErrorCode"], "TooManyRequests", "{body}");
    assert!(body["Errors"][0]["Message"].is_string());

    put_rules_at(
        &oc.client,
        &control,
        json!(["ordercloud/v1/products:error_rate=1,status=500"]),
    )
    .await;
    let (status, body) = oc.get("/products").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        body,
        json!({"Errors": [{"ErrorCode": "ServerError", "Message": "An error has occurred (injected fault).", "Data": null}]})
    );
    assert_eq!(oc.get("/buyers/BUYER1/users").await.0, StatusCode::OK);

    put_rules_at(
        &oc.client,
        &control,
        json!(["ordercloud:validation_400=1,method=PATCH"]),
    )
    .await;
    let (status, body) = oc
        .patch("/buyers/BUYER1/users/buyer01", &json!({"Phone": "1"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["Errors"][0]["ErrorCode"], "ValidationFailure");
    let (_, user) = oc.get("/buyers/BUYER1/users/buyer01").await;
    assert_ne!(user["Phone"], "1", "a rejected write changes nothing");
}

#[tokio::test]
async fn ordercloud_commit_then_drop_submits_and_still_fires_the_hook() {
    let receiver = start_receiver(0).await;
    let oc = ordercloud_session(SandboxConfig::default()).await;
    let hook = json!({"ID": "h", "Name": "h", "Url": receiver.url, "HashKey": "k",
        "WebhookRoutes": [{"Route": "v1/orders/{direction}/{orderID}/submit", "Verb": "POST"}]});
    oc.post("/webhooks", &hook).await;
    oc.order_with_lines("SO-DROP", &[("WID1", 1)]).await;
    put_rules_at(
        &oc.client,
        &oc.sandbox.control_url(),
        json!(["ordercloud/v1/orders/Outgoing/SO-DROP/submit:commit_then_drop=1"]),
    )
    .await;
    let result = oc
        .client
        .post(format!("{}/v1/orders/Outgoing/SO-DROP/submit", oc.base))
        .bearer_auth(&oc.token)
        .send()
        .await;
    assert!(
        result.is_err(),
        "no answer: {:?}",
        result.map(|r| r.status())
    );
    let (_, order) = oc.get("/orders/Outgoing/SO-DROP").await;
    assert_eq!(order["Status"], "Open", "the submit was committed");
    eventually("the post-hook still fires", || {
        receiver.received().len() == 1
    })
    .await;
}

#[tokio::test]
async fn ordercloud_reset_drops_before_the_write() {
    let oc = ordercloud_session(SandboxConfig::default()).await;
    put_rules_at(
        &oc.client,
        &oc.sandbox.control_url(),
        json!(["ordercloud:reset=1,method=POST"]),
    )
    .await;
    let result = oc
        .client
        .post(format!("{}/v1/orders/Outgoing", oc.base))
        .bearer_auth(&oc.token)
        .json(&json!({"ID": "SO-RESET", "FromUserID": "buyer01"}))
        .send()
        .await;
    assert!(result.is_err(), "no answer");
    let (status, body) = oc.get("/orders/Outgoing/SO-RESET").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was written: {body}");
}

#[tokio::test]
async fn ordercloud_forced_token_expiry() {
    let oc = ordercloud_session(SandboxConfig::default()).await;
    let control = oc.sandbox.control_url();
    let (status, body) = status_and_json(
        oc.client
            .post(format!("{control}/ordercloud/expire-tokens"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(
        (status, body["expired"].clone()),
        (StatusCode::OK, json!(1))
    );
    let (status, body) = oc.get("/products").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["Errors"][0]["ErrorCode"], "InvalidToken");

    // As a fault rule: every request first expires the tokens.
    let token = common::ordercloud_token(&oc.client, &oc.base).await;
    assert_eq!(
        status_and_json(
            oc.client
                .get(format!("{}/v1/products", oc.base))
                .bearer_auth(&token)
                .send()
                .await
                .expect("sent")
        )
        .await
        .0,
        StatusCode::OK
    );
    put_rules_at(
        &oc.client,
        &control,
        json!(["ordercloud/v1:expire_sessions=1"]),
    )
    .await;
    let (status, body) = status_and_json(
        oc.client
            .get(format!("{}/v1/products", oc.base))
            .bearer_auth(&token)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["Errors"][0]["ErrorCode"], "InvalidToken");
}

#[tokio::test]
async fn xconnect_and_gateway_faults_use_their_error_formats() {
    let sandbox = start(SandboxConfig::default()).await;
    let client = common::client();
    let control = sandbox.control_url();
    put_rules_at(
        &client,
        &control,
        json!([
            "xconnect:error_rate=1,status=502",
            "gateway:rate_limit=1/h,burst=1"
        ]),
    )
    .await;
    let (status, body) = status_and_json(
        client
            .get(format!("{}/contacts/x", sandbox.xconnect_url()))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        body["error"]["code"].is_string() && body["error"]["message"].is_string(),
        "{body}"
    );
    let events = format!("{}/v1/events", sandbox.gateway_url());
    let first = client
        .get(&events)
        .bearer_auth("sk_test_sim")
        .send()
        .await
        .expect("sent");
    assert_eq!(first.status(), StatusCode::OK);
    let second = client
        .get(&events)
        .bearer_auth("sk_test_sim")
        .send()
        .await
        .expect("sent");
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&second) >= 1);
    let (_, body) = status_and_json(second).await;
    assert_eq!(body["error"]["type"], "api_error", "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    let (_, faults) = status_and_json(
        client
            .get(format!("{control}/faults"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(faults["counters"]["xconnect.error_rate"], 1);
    assert_eq!(faults["counters"]["gateway.rate_limit"], 1);
}
