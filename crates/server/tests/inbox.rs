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

/// Fuzzing the inbox over real HTTP: correctly signed deliveries whose
/// bodies are a valid envelope mangled at random, or arbitrary bytes, are
/// answered 200 or 400 — never a 5xx, never a hang — and a 400 stores
/// nothing; the same bodies with a random signature header get 401. A
/// Stripe-Signature header of random text never panics the verifier.
#[test]
fn fuzzed_deliveries_get_200_or_400_and_never_break_the_inbox() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let inbox = runtime.block_on(start());
    let valid = submit_body("SO-FUZZ", "log-fuzz");
    let mangled = (
        0usize..valid.len(),
        0usize..32,
        prop::collection::vec(any::<u8>(), 0..24),
    )
        .prop_map(move |(at, cut, junk)| {
            let mut body = valid.clone().into_bytes();
            let end = (at + cut).min(body.len());
            body.splice(at..end, junk);
            body
        });
    let bodies = prop_oneof![
        mangled,
        prop::collection::vec(any::<u8>(), 0..600),
        "\\PC{0,300}".prop_map(String::into_bytes),
    ];
    let mut runner = TestRunner::new(Config {
        cases: 200,
        ..Config::default()
    });
    runner
        .run(&(bodies, "\\PC{0,60}"), |(body, header)| {
            runtime.block_on(async {
                let before = inbox.runs().await;
                let hash = ordercloud_hash(HASH_KEY, &body);
                let (status, answer) = inbox
                    .post_oc_bytes(&body, Some(hash), "application/json")
                    .await;
                prop_assert!(status == 200 || status == 400, "{status}: {answer}");
                if status == 400 {
                    prop_assert_eq!(inbox.runs().await, before);
                }
                let (status, _) = inbox
                    .post_oc_bytes(&body, Some(header.clone()), "application/json")
                    .await;
                prop_assert_eq!(status, 401);
                let verdict = ledgerbridge_server::signature::verify_stripe(
                    WHSEC,
                    Some(&header),
                    &body,
                    i64::MAX,
                    300,
                );
                prop_assert!(verdict.is_err());
                Ok(())
            })
        })
        .unwrap();
}
