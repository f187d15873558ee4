//! The webhook inbox over real HTTP, on a real store: what each kind of
//! delivery is answered and what it leaves behind.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use ledgerbridge_core::Failure;
use ledgerbridge_engine::{Flow, FlowRegistry, StepCtx, Trigger};
use ledgerbridge_server::signature::{ordercloud_hash, stripe_signature};
use ledgerbridge_server::{AppState, GatewaySource, OrderCloudSource, ServerConfig, SourcesConfig};
use ledgerbridge_store::{RunFilter, Store};
use serde_json::{json, Value};

const HASH_KEY: &str = "test-hash-key";
const WHSEC: &str = "whsec_test";

struct TestFlow {
    name: &'static str,
    triggers: Vec<Trigger>,
}

#[async_trait]
impl Flow for TestFlow {
    fn name(&self) -> &str {
        self.name
    }
    fn version(&self) -> &str {
        "1"
    }
    fn triggers(&self) -> &[Trigger] {
        &self.triggers
    }
    fn steps(&self) -> &[&'static str] {
        &["only"]
    }
    async fn run_step(&self, _step: &str, _ctx: &mut StepCtx<'_>) -> Result<Value, Failure> {
        Ok(json!({}))
    }
}

struct Inbox {
    base: String,
    addr: std::net::SocketAddr,
    store: Arc<dyn Store>,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn start_with(store: Arc<dyn Store>, dir: tempfile::TempDir) -> Inbox {
    let mut flows = FlowRegistry::new();
    flows.register(Arc::new(TestFlow {
        name: "on-submit",
        triggers: vec![Trigger::OrderCloud {
            route: "v1/orders/{direction}/{orderID}/submit".to_owned(),
            verb: "POST".to_owned(),
        }],
    }));
    flows.register(Arc::new(TestFlow {
        name: "on-payment",
        triggers: vec![Trigger::Gateway {
            event_types: vec!["payment_intent.succeeded".to_owned()],
        }],
    }));
    let mut sources = SourcesConfig::default();
    sources.ordercloud.insert(
        "shop".to_owned(),
        OrderCloudSource {
            hash_key: HASH_KEY.into(),
        },
    );
    sources.gateway.insert(
        "stripe".to_owned(),
        GatewaySource {
            signing_secret: WHSEC.into(),
            tolerance_secs: 300,
        },
    );
    let state = AppState {
        store: store.clone(),
        flows,
        wake: Arc::new(tokio::sync::Notify::new()),
        sources: Arc::new(sources),
        metrics: None,
        reconciler: None,
    };
    let config = ServerConfig {
        listen: "127.0.0.1:0".to_owned(),
        max_body_bytes: 64 * 1024,
        body_timeout_secs: 1,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        ledgerbridge_server::serve(state, &config, listener, std::future::pending()).await
    });
    Inbox {
        base: format!("http://{addr}"),
        addr,
        store,
        client: reqwest::Client::new(),
        _dir: dir,
    }
}

async fn start() -> Inbox {
    let dir = tempfile::tempdir().unwrap();
    let store = ledgerbridge_store::open(&format!("sqlite://{}/inbox.db", dir.path().display()))
        .await
        .unwrap();
    start_with(store, dir).await
}

fn submit_body(order: &str, log_id: &str) -> String {
    json!({
        "Route": "v1/orders/{direction}/{orderID}/submit",
        "RouteParams": {"direction": "Outgoing", "orderID": order},
        "Verb": "POST",
        "Date": "2025-01-15T10:00:00.0000000+00:00",
        "LogID": log_id,
        "UserToken": "tok",
        "Request": {"Body": null, "Headers": null},
        "Response": {"Body": {"ID": order}, "Headers": null},
        "ConfigData": {}
    })
    .to_string()
}

impl Inbox {
    async fn post_oc(&self, body: &str, hash: Option<String>, content_type: &str) -> (u16, Value) {
        self.post_oc_bytes(body.as_bytes(), hash, content_type)
            .await
    }

    async fn post_oc_bytes(
        &self,
        body: &[u8],
        hash: Option<String>,
        content_type: &str,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .post(format!("{}/webhooks/ordercloud/shop", self.base))
            .header("content-type", content_type)
            .body(body.to_vec());
        if let Some(hash) = hash {
            request = request.header("X-oc-hash", hash);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let json = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, json)
    }

    async fn post_gateway(&self, body: &str, signature: Option<String>) -> (u16, Value) {
        let mut request = self
            .client
            .post(format!("{}/webhooks/gateway/stripe", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(sig) = signature {
            request = request.header("Stripe-Signature", sig);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json::<Value>().await.unwrap_or(Value::Null),
        )
    }

    async fn runs(&self) -> usize {
        self.store
            .list_runs(&RunFilter {
                limit: 1000,
                ..RunFilter::default()
            })
            .await
            .unwrap()
            .len()
    }
}

#[tokio::test]
async fn signed_delivery_is_stored_with_its_runs_and_a_repeat_changes_nothing() {
    let inbox = start().await;
    let body = submit_body("SO-1", "log-1");
    let (status, answer) = inbox
        .post_oc(
            &body,
            Some(ordercloud_hash(HASH_KEY, body.as_bytes())),
            "application/json",
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "accepted");
    assert_eq!(answer["runs"].as_array().unwrap().len(), 1);
    let event_id: uuid::Uuid = answer["event_id"].as_str().unwrap().parse().unwrap();
    let stored = inbox.store.event(event_id).await.unwrap().unwrap();
    assert_eq!(stored.body, body.as_bytes(), "raw body kept byte for byte");
    assert_eq!(stored.dedupe_key, "log-1");

    let (status, answer) = inbox
        .post_oc(
            &body,
            Some(ordercloud_hash(HASH_KEY, body.as_bytes())),
            "application/json",
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["status"], "duplicate");
    assert_eq!(inbox.runs().await, 1, "a repeat delivery starts no run");
}

#[tokio::test]
async fn an_event_no_flow_listens_to_is_stored_without_runs() {
    let inbox = start().await;
    let body =
        json!({"Route": "v1/products/{productID}", "Verb": "PATCH", "LogID": "log-p"}).to_string();
    let (status, answer) = inbox
        .post_oc(
            &body,
            Some(ordercloud_hash(HASH_KEY, body.as_bytes())),
            "application/json",
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["runs"], json!([]));
}

#[tokio::test]
async fn bad_or_missing_signatures_are_refused_and_nothing_is_stored() {
    let inbox = start().await;
    let body = submit_body("SO-2", "log-2");
    let (status, _) = inbox.post_oc(&body, None, "application/json").await;
    assert_eq!(status, 401);
    let (status, _) = inbox
        .post_oc(
            &body,
            Some(ordercloud_hash("wrong-key", body.as_bytes())),
            "application/json",
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = inbox
        .post_oc(&body, Some("%%%".to_owned()), "application/json")
        .await;
    assert_eq!(status, 401);
    // Signed for a different body.
    let other = submit_body("SO-3", "log-2");
    let (status, _) = inbox
        .post_oc(
            &body,
            Some(ordercloud_hash(HASH_KEY, other.as_bytes())),
            "application/json",
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(inbox.runs().await, 0);
}

#[tokio::test]
async fn malformed_bodies_get_400_with_the_reason() {
    let inbox = start().await;
    let body = "{not json";
    let (status, answer) = inbox
        .post_oc(
            body,
            Some(ordercloud_hash(HASH_KEY, body.as_bytes())),
            "application/json",
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{answer}"
    );

    let body = json!({"Route": "v1/x", "Verb": "POST"}).to_string();
    let (status, answer) = inbox
        .post_oc(
            &body,
            Some(ordercloud_hash(HASH_KEY, body.as_bytes())),
            "application/json",
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        answer["message"].as_str().unwrap().contains("LogID"),
        "{answer}"
    );

    let body = json!({"Route": 5, "Verb": "POST", "LogID": "x"}).to_string();
    let (status, answer) = inbox
        .post_oc(
            &body,
            Some(ordercloud_hash(HASH_KEY, body.as_bytes())),
            "application/json",
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        answer["message"].as_str().unwrap().contains("Route"),
        "{answer}"
    );
    assert_eq!(inbox.runs().await, 0);
}

#[tokio::test]
async fn wrong_content_type_oversize_and_unknown_source_are_refused() {
    let inbox = start().await;
    let body = submit_body("SO-4", "log-4");
    let (status, _) = inbox
        .post_oc(
            &body,
            Some(ordercloud_hash(HASH_KEY, body.as_bytes())),
            "text/plain",
        )
        .await;
    assert_eq!(status, 415);

    let huge = format!(
        "{{\"LogID\":\"big\",\"Pad\":\"{}\"}}",
        "x".repeat(100 * 1024)
    );
    let (status, _) = inbox
        .post_oc(
            &huge,
            Some(ordercloud_hash(HASH_KEY, huge.as_bytes())),
            "application/json",
        )
        .await;
    assert_eq!(status, 413);

    let response = inbox
        .client
        .post(format!("{}/webhooks/ordercloud/nope", inbox.base))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(inbox.runs().await, 0);
}

#[tokio::test]
async fn gateway_signatures_timestamps_and_repeats() {
    let inbox = start().await;
    let body = json!({"id": "evt_1", "type": "payment_intent.succeeded", "created": 1, "data": {"object": {}}}).to_string();
    let now = Utc::now().timestamp();

    let (status, answer) = inbox
        .post_gateway(&body, Some(stripe_signature(WHSEC, now, body.as_bytes())))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "accepted");
    assert_eq!(answer["runs"].as_array().unwrap().len(), 1);

    // The same event again, freshly signed: acknowledged, nothing new.
    let (status, answer) = inbox
        .post_gateway(&body, Some(stripe_signature(WHSEC, now, body.as_bytes())))
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["status"], "duplicate");

    // A replay of a captured delivery ten minutes later: stale.
    let other = json!({"id": "evt_2", "type": "payment_intent.succeeded"}).to_string();
    let (status, _) = inbox
        .post_gateway(
            &other,
            Some(stripe_signature(WHSEC, now - 600, other.as_bytes())),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = inbox
        .post_gateway(
            &other,
            Some(stripe_signature("whsec_x", now, other.as_bytes())),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = inbox.post_gateway(&other, None).await;
    assert_eq!(status, 401);
    assert_eq!(inbox.runs().await, 1);
}

#[tokio::test]
async fn health_and_readiness() {
    let inbox = start().await;
    let health = inbox
        .client
        .get(format!("{}/healthz", inbox.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let ready = inbox
        .client
        .get(format!("{}/readyz", inbox.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let missing = inbox
        .client
        .get(format!("{}/nope", inbox.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
}

/// A PostgreSQL store whose database stops accepting connections: the
/// inbox answers 503 (so the sender retries) instead of acknowledging what
/// it cannot keep, and accepts again once the database is back.
#[tokio::test]
async fn store_unavailable_answers_503_then_recovers() {
    let (store, admin, name) = postgres_store().await;
    let inbox = start_with(store, tempfile::tempdir().unwrap()).await;

    let body = submit_body("SO-5", "log-5");
    let hash = ordercloud_hash(HASH_KEY, body.as_bytes());
    let (status, _) = inbox
        .post_oc(&body, Some(hash.clone()), "application/json")
        .await;
    assert_eq!(status, 200);

    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&admin)
        .await
        .unwrap();
    let body2 = submit_body("SO-6", "log-6");
    let hash2 = ordercloud_hash(HASH_KEY, body2.as_bytes());
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (status, answer) = inbox
            .post_oc(&body2, Some(hash2.clone()), "application/json")
            .await;
        assert_ne!(status, 200, "must not acknowledge what it cannot store");
        statuses.push((status, answer));
    }
    assert!(
        statuses.iter().all(|(status, _)| *status == 503),
        "the inbox answers 503 while the store is down: {statuses:?}"
    );

    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .execute(&admin)
        .await
        .unwrap();
    let mut accepted = false;
    for _ in 0..50 {
        let (status, _) = inbox
            .post_oc(&body2, Some(hash2.clone()), "application/json")
            .await;
        if status == 200 {
            accepted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        accepted,
        "the inbox accepts again once the database is back"
    );
    assert_eq!(inbox.runs().await, 2);
    drop(inbox);
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await;
}

/// A sender that trickles its body (slowloris) is cut off with 408 once
/// the body deadline passes; nothing is stored, and the same delivery
/// sent properly afterwards is accepted.
#[tokio::test]
async fn slow_bodies_get_408_and_nothing_is_stored() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let inbox = start().await;
    let body = submit_body("SO-SLOW", "log-slow");
    let hash = ordercloud_hash(HASH_KEY, body.as_bytes());
    let mut stream = tokio::net::TcpStream::connect(inbox.addr).await.unwrap();
    let head = format!(
        "POST /webhooks/ordercloud/shop HTTP/1.1\r\nHost: inbox\r\n\
         Content-Type: application/json\r\nX-oc-hash: {hash}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..10]).await.unwrap();
    // Keep trickling a byte every 300 ms, well past the 1 s deadline.
    for byte in &body.as_bytes()[10..16] {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut answer),
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 1 s"), "{answer}");
    assert_eq!(inbox.runs().await, 0);

    let (status, _) = inbox.post_oc(&body, Some(hash), "application/json").await;
    assert_eq!(status, 200);
    assert_eq!(inbox.runs().await, 1);
}

/// A flood of concurrent copies of one delivery stores one event and one
/// run; every copy is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_floods_store_one_event() {
    let inbox = Arc::new(start().await);
    let body = submit_body("SO-FLOOD", "log-flood");
    let hash = ordercloud_hash(HASH_KEY, body.as_bytes());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let inbox = inbox.clone();
        let body = body.clone();
        let hash = hash.clone();
        tasks.spawn(async move { inbox.post_oc(&body, Some(hash), "application/json").await.0 });
    }
    let mut statuses = std::collections::BTreeMap::new();
    while let Some(status) = tasks.join_next().await {
        *statuses.entry(status.unwrap()).or_insert(0) += 1;
    }
    assert!(
        statuses.keys().all(|s| (200..300).contains(s)),
        "{statuses:?}"
    );
    assert_eq!(inbox.runs().await, 1);
}

/// Correctly signed but hostile bodies — invalid UTF-8, nesting deeper
/// than any envelope, truncated JSON, wrong types, numbers out of range —
/// are refused with 400 and a reason; nothing is stored.
#[tokio::test]
async fn hostile_signed_bodies_get_400_and_nothing_is_stored() {
    let inbox = start().await;
    let valid = submit_body("SO-H", "log-h");
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let mut invalid_utf8 = valid.clone().into_bytes();
    invalid_utf8[20] = 0xff;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("invalid utf-8", invalid_utf8),
        ("deep nesting", deep.into_bytes()),
        ("truncated", valid.as_bytes()[..valid.len() / 2].to_vec()),
        (
            "LogID of the wrong type",
            valid.replace("\"log-h\"", "{\"a\": 1}").into_bytes(),
        ),
        (
            "number out of range",
            valid.replace("\"log-h\"", "1e999999").into_bytes(),
        ),
        ("not an object", b"\"just a string\"".to_vec()),
        ("empty", Vec::new()),
    ];
    for (what, body) in cases {
        let hash = ordercloud_hash(HASH_KEY, &body);
        let (status, answer) = inbox
            .post_oc_bytes(&body, Some(hash), "application/json")
            .await;
        assert_eq!(status, 400, "{what}: {answer}");
        assert!(
            answer["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {answer}"
        );
    }
    assert_eq!(inbox.runs().await, 0);
}

/// A fresh PostgreSQL database at `LEDGERBRIDGE_TEST_PG` for one test:
/// the store, the admin pool and the database's name (to drop it).
async fn postgres_store() -> (Arc<dyn Store>, sqlx::PgPool, String) {
    let admin_url = std::env::var("LEDGERBRIDGE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    let name = format!("lb_inbox_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(&format!("{admin_url}/postgres"))
        .await
        .expect("PostgreSQL must answer at LEDGERBRIDGE_TEST_PG (run scripts/ensure-postgres)");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    let store = ledgerbridge_store::open(&format!("{admin_url}/{name}"))
        .await
        .unwrap();
    (store, admin, name)
}

/// Found by `fuzzed_deliveries_on_postgres_…`: a signed body with a NUL
/// character in a string was answered 500 on PostgreSQL (its `jsonb` has
/// no NUL), so the sender would retry it forever; so was a number beyond
/// PostgreSQL's `numeric`. Both are 400 with the path now, on both backends.
#[tokio::test]
async fn signed_bodies_with_a_nul_character_or_1e999999_get_400_on_postgres_not_500() {
    let (store, admin, name) = postgres_store().await;
    let on_postgres = start_with(store, tempfile::tempdir().unwrap()).await;
    let on_sqlite = start().await;
    let cases = [
        (
            false,
            r#"{"Route":"v1/x","Verb":"POST","LogID":"log-nul","Extra":"a\u0000b"}"#,
            "Extra",
        ),
        (
            false,
            r#"{"Route":"v1/x","Verb":"POST","LogID":"log-key","Extra":{"\u0000":1}}"#,
            "Extra.",
        ),
        (
            false,
            r#"{"Route":"v1/x","Verb":"POST","LogID":"log-big","Extra":[1, 1e999999]}"#,
            "Extra[1]",
        ),
        (
            true,
            r#"{"id":"evt_nul","type":"x","data":{"object":{"amount":0e-999999}}}"#,
            "data.object.amount",
        ),
    ];
    for inbox in [&on_postgres, &on_sqlite] {
        for (gateway, body, path) in cases {
            let signature = if gateway {
                stripe_signature(WHSEC, Utc::now().timestamp(), body.as_bytes())
            } else {
                ordercloud_hash(HASH_KEY, body.as_bytes())
            };
            let (status, answer) = inbox.post(gateway, body.as_bytes(), Some(signature)).await;
            assert_eq!(status, 400, "{body}: {answer}");
            let message = answer["message"].as_str().unwrap_or_default();
            assert!(
                message.contains(&format!("at `{path}")),
                "{body}: {message}"
            );
        }
        assert_eq!(inbox.runs().await, 0);
    }
    // What PostgreSQL can keep still goes in: 1e400, 60 digits.
    let body = r#"{"Route":"v1/x","Verb":"POST","LogID":"log-ok","Extra":[1e400, 123456789012345678901234567890123456789012345678901234567890]}"#;
    let (status, answer) = on_postgres
        .post(
            false,
            body.as_bytes(),
            Some(ordercloud_hash(HASH_KEY, body.as_bytes())),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    drop(on_postgres);
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await;
}

/// JSON that parses but that a store may not be able to keep, or that
/// strains a parser: NUL characters, numbers beyond any float, deep
/// nesting, lone surrogates, odd unicode.
const HOSTILE_JSON: &[&str] = &[
    r#""\u0000""#,
    r#""a\u0000b""#,
    r#"{"\u0000": 1}"#,
    "1e999999",
    "-1e999999",
    "1e-999999",
    "1.7976931348623157e309",
    "123456789012345678901234567890123456789012345678901234567890",
    "0.000000000000000000000000000000000000000000000000000000000001",
    "-0",
    "-0.0e-0",
    r#""\ud800""#,
    r#""\udc00\ud800""#,
    r#""\ud83d\ude00""#,
    r#""\u{1F600}""#,
    "\"\u{FEFF}\u{200B}\u{10FFFF}\"",
    r#""\\""#,
    "null",
    "true",
    "[]",
    "{}",
];

/// Whether a fuzzed delivery goes to the gateway (odd) or to OrderCloud.
fn is_gateway(kind: u8) -> bool {
    kind & 1 == 1
}

/// A signed envelope with a hostile value in it: in a field of its own,
/// or in place of a field we read.
fn hostile_envelope(kind: u8, id: u64, value: &str, field: u8) -> Vec<u8> {
    let log_id = format!("\"log-fuzz-{id}\"");
    let (route, log_id) = match field % 4 {
        0 => (
            r#""v1/orders/{direction}/{orderID}/submit""#.to_owned(),
            log_id,
        ),
        1 => (value.to_owned(), log_id),
        2 => (
            r#""v1/orders/{direction}/{orderID}/submit""#.to_owned(),
            value.to_owned(),
        ),
        _ => (
            r#""v1/orders/{direction}/{orderID}/submit""#.to_owned(),
            log_id,
        ),
    };
    let text = if !is_gateway(kind) {
        format!(
            r#"{{"Route":{route},"Verb":"POST","LogID":{log_id},"RouteParams":{{"orderID":"SO-F"}},"Request":{{"Body":{value}}},"Extra":{value}}}"#
        )
    } else {
        format!(
            r#"{{"id":{log_id},"type":"payment_intent.succeeded","data":{{"object":{{"amount":{value},"metadata":{{"order_id":{value}}}}}}}}}"#
        )
    };
    text.into_bytes()
}

/// Nesting as deep as `depth` inside an otherwise valid envelope.
fn deep_envelope(kind: u8, id: u64, depth: usize) -> Vec<u8> {
    let deep = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    hostile_envelope(kind, id, &deep, 0)
}

/// One fuzzed delivery: to the OrderCloud source (kind even) or the
/// gateway (kind odd).
#[derive(Debug, Clone)]
struct Delivery {
    kind: u8,
    body: Vec<u8>,
    /// A header of random text, sent instead of a correct signature in a
    /// second delivery of the same body.
    forged: String,
}

fn delivery_strategy() -> impl proptest::strategy::Strategy<Value = Delivery> {
    use proptest::prelude::*;

    let oc_valid = submit_body("SO-FUZZ", "log-fuzz");
    let gw_valid = json!({"id": "evt_fuzz", "type": "payment_intent.succeeded", "created": 1,
        "data": {"object": {"id": "pi_1", "amount": 1200, "metadata": {"order_id": "SO-1"}}}})
    .to_string();
    let mangled = (
        any::<u8>(),
        any::<usize>(),
        0usize..32,
        prop::collection::vec(any::<u8>(), 0..24),
    )
        .prop_map(move |(kind, at, cut, junk)| {
            let valid = if !is_gateway(kind) {
                &oc_valid
            } else {
                &gw_valid
            };
            let mut body = valid.clone().into_bytes();
            let at = at % (body.len() + 1);
            let end = (at + cut).min(body.len());
            body.splice(at..end, junk);
            (kind, body)
        });
    let bodies = prop_oneof![
        3 => mangled,
        2 => (any::<u8>(), any::<u64>(), prop::sample::select(HOSTILE_JSON), any::<u8>())
            .prop_map(|(kind, id, value, field)| (kind, hostile_envelope(kind, id, value, field))),
        1 => (any::<u8>(), any::<u64>(), 1usize..200)
            .prop_map(|(kind, id, depth)| (kind, deep_envelope(kind, id, depth))),
        1 => (any::<u8>(), prop::collection::vec(any::<u8>(), 0..600)),
        1 => (any::<u8>(), "\\PC{0,300}".prop_map(String::into_bytes)),
    ];
    (bodies, "\\PC{0,60}").prop_map(|((kind, body), forged)| Delivery { kind, body, forged })
}

/// Fuzzing the inbox over real HTTP: correctly signed deliveries to both
/// sources whose bodies are a valid envelope mangled at random, a valid
/// envelope carrying hostile JSON (NUL characters, numbers beyond any
/// float, deep nesting, lone surrogates) or arbitrary bytes are answered
/// 200 or 400 — never a 5xx, never a hang — and a 400 stores nothing; the
/// same bodies with a forged signature header get 401.
fn fuzz_inbox(runtime: &tokio::runtime::Runtime, inbox: &Inbox, ci_cases: u32) {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let mut runner = TestRunner::new(Config {
        cases: ledgerbridge_core::fuzz::cases(ci_cases),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&delivery_strategy(), |delivery| {
            runtime.block_on(async {
                let before = inbox.runs().await;
                let gateway = is_gateway(delivery.kind);
                let signed = if gateway {
                    stripe_signature(WHSEC, Utc::now().timestamp(), &delivery.body)
                } else {
                    ordercloud_hash(HASH_KEY, &delivery.body)
                };
                let (status, answer) = inbox.post(gateway, &delivery.body, Some(signed)).await;
                prop_assert!(status == 200 || status == 400, "{status}: {answer}");
                if status == 400 {
                    prop_assert!(
                        answer["message"].as_str().is_some_and(|m| !m.is_empty()),
                        "{answer}"
                    );
                    prop_assert_eq!(inbox.runs().await, before);
                }
                let (status, _) = inbox
                    .post(gateway, &delivery.body, Some(delivery.forged.clone()))
                    .await;
                prop_assert_eq!(status, 401);
                Ok(())
            })
        })
        .unwrap();
}

impl Inbox {
    /// POSTs `body` to the OrderCloud source or the gateway with
    /// `signature` in the source's header.
    async fn post(&self, gateway: bool, body: &[u8], signature: Option<String>) -> (u16, Value) {
        let (path, header) = if gateway {
            ("gateway/stripe", "Stripe-Signature")
        } else {
            ("ordercloud/shop", "X-oc-hash")
        };
        let mut request = self
            .client
            .post(format!("{}/webhooks/{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header(header, signature);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json::<Value>().await.unwrap_or(Value::Null),
        )
    }
}

fn fuzz_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn fuzzed_deliveries_get_200_or_400_and_never_break_the_inbox() {
    let runtime = fuzz_runtime();
    let inbox = runtime.block_on(start());
    fuzz_inbox(&runtime, &inbox, 200);
}

/// The same on PostgreSQL, whose `jsonb` refuses some JSON that parses
/// (a NUL character, numbers beyond its `numeric`).
#[test]
fn fuzzed_deliveries_on_postgres_get_200_or_400_and_never_break_the_inbox() {
    let runtime = fuzz_runtime();
    let (store, admin, name) = runtime.block_on(postgres_store());
    let inbox = runtime.block_on(start_with(store, tempfile::tempdir().unwrap()));
    fuzz_inbox(&runtime, &inbox, 100);
    drop(inbox);
    runtime.block_on(async {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&admin)
            .await;
    });
}

/// `Stripe-Signature` headers built from its own parts — timestamps
/// beyond any clock, repeated and empty parts, non-hex and odd-length
/// signatures, other schemes, whitespace — and arbitrary text never panic
/// the verifier; only the correct signature within the tolerance passes.
#[test]
fn fuzzed_stripe_signature_headers_are_refused_never_a_panic() {
    use ledgerbridge_server::signature::{verify_ordercloud, verify_stripe};
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let body = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
    let now = 1_700_000_000_i64;
    let part = prop_oneof![
        prop_oneof![
            Just(now),
            Just(i64::MAX),
            Just(i64::MIN),
            Just(0),
            Just(-1),
            any::<i64>()
        ]
        .prop_map(|t| format!("t={t}")),
        prop_oneof![
            Just("t=".to_owned()),
            Just("t=99999999999999999999".to_owned()),
            Just("t=+1".to_owned()),
            Just("t= 1".to_owned()),
            Just("v1=".to_owned()),
            Just("v1=0".to_owned()),
            Just("v1=zz".to_owned()),
            Just(format!("v1={}", "0".repeat(64))),
            Just(format!("v1={}", "a".repeat(100_000))),
            Just("v0=abc".to_owned()),
            Just("=".to_owned()),
            Just("".to_owned()),
            Just(" , ".to_owned()),
            Just("t=1=2".to_owned()),
            Just("é=ü".to_owned()),
        ],
        "[0-9a-f]{0,70}".prop_map(|hex| format!("v1={hex}")),
        "\\PC{0,20}",
    ];
    let header = prop_oneof![
        4 => prop::collection::vec(part, 0..8).prop_map(|parts| parts.join(",")),
        1 => "\\PC{0,200}",
    ];
    let mut runner = TestRunner::new(Config {
        cases: ledgerbridge_core::fuzz::cases(2000),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(header, any::<i64>(), any::<u64>()),
            |(header, clock, tolerance)| {
                for now in [now, clock] {
                    let verdict = verify_stripe(WHSEC, Some(&header), body, now, tolerance);
                    prop_assert!(verdict.is_err(), "{header:?} passed");
                }
                prop_assert!(verify_ordercloud(HASH_KEY, Some(&header), body).is_err());
                // The right signature still passes next to the junk, and
                // fails when stale.
                let good = stripe_signature(WHSEC, now, body);
                let both = format!("{header},{good}");
                let verdict = verify_stripe(WHSEC, Some(&both), body, now, 300);
                if verdict.is_ok() {
                    prop_assert!(verify_stripe(
                        WHSEC,
                        Some(&both),
                        body,
                        now.saturating_add(10_000),
                        300
                    )
                    .is_err());
                }
                Ok(())
            },
        )
        .unwrap();
}
