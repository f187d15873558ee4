//! Shared helpers of the sandbox integration tests: start a sandbox on
//! 127.0.0.1:0 and log into its KashFlow simulator over real HTTP.
//! (Other test files add helpers here; append only.)
#![allow(dead_code)]

use std::net::SocketAddr;

use ledgerbridge_sandbox::{RunningSandbox, Sandbox, SandboxConfig};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Starts a sandbox with `config` on a free loopback port.
pub async fn start(config: SandboxConfig) -> RunningSandbox {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("loopback address");
    Sandbox::new(config)
        .serve(addr)
        .await
        .expect("sandbox starts")
}

/// A plain client that never uses a proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client")
}

/// Runs KashFlow's two-step login against `kashflow_url` with the default
/// credentials of `config` and returns the session token.
pub async fn kashflow_login(
    client: &reqwest::Client,
    kashflow_url: &str,
    config: &SandboxConfig,
) -> String {
    let kf = &config.kashflow;
    let step1 = client
        .post(format!("{kashflow_url}/sessiontoken"))
        .json(&json!({ "UserName": kf.username, "Password": kf.password }))
        .send()
        .await
        .expect("step 1 sent");
    assert_eq!(step1.status(), StatusCode::CREATED);
    let step1: Value = step1.json().await.expect("step 1 json");
    let word: Vec<char> = kf.memorable_word.chars().collect();
    let answers: Vec<Value> = step1["MemorableWordList"]
        .as_array()
        .expect("MemorableWordList")
        .iter()
        .map(|entry| {
            let position = entry["Position"].as_u64().expect("Position") as usize;
            json!({ "Position": position, "Value": word[position - 1].to_string() })
        })
        .collect();
    let step2 = client
        .put(format!("{kashflow_url}/sessiontoken"))
        .json(&json!({ "TemporaryToken": step1["TemporaryToken"], "MemorableWordList": answers }))
        .send()
        .await
        .expect("step 2 sent");
    assert_eq!(step2.status(), StatusCode::OK);
    let step2: Value = step2.json().await.expect("step 2 json");
    step2["SessionToken"]
        .as_str()
        .expect("SessionToken")
        .to_owned()
}

/// A running sandbox with a logged-in KashFlow session.
pub struct KashFlowSession {
    pub sandbox: RunningSandbox,
    pub client: reqwest::Client,
    pub token: String,
    pub base: String,
}

/// Starts a sandbox with `config` and logs into KashFlow.
pub async fn kashflow_session(config: SandboxConfig) -> KashFlowSession {
    let sandbox = start(config.clone()).await;
    let client = client();
    let base = sandbox.kashflow_url();
    let token = kashflow_login(&client, &base, &config).await;
    KashFlowSession {
        sandbox,
        client,
        token,
        base,
    }
}

/// Status and JSON body (`Value::Null` when the body is empty).
pub async fn status_and_json(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = response.bytes().await.expect("response body");
    if bytes.is_empty() {
        return (status, Value::Null);
    }
    let value = serde_json::from_slice(&bytes).unwrap_or_else(|err| {
        panic!(
            "body is not JSON ({err}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, value)
}

/// A JSON number as f64 (numbers are exact decimals on the wire).
pub fn num(value: &Value) -> f64 {
    value
        .as_f64()
        .or_else(|| value.to_string().parse().ok())
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

impl KashFlowSession {
    /// Absolute URL of a KashFlow path such as `/customers`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.header("Authorization", format!("KfToken {}", self.token))
    }

    /// Authenticated GET.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .auth(self.client.get(self.url(path)))
            .send()
            .await
            .expect("GET sent");
        status_and_json(response).await
    }

    /// Authenticated POST of a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .auth(self.client.post(self.url(path)))
            .json(body)
            .send()
            .await
            .expect("POST sent");
        status_and_json(response).await
    }

    /// Authenticated PUT of a JSON body.
    pub async fn put(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .auth(self.client.put(self.url(path)))
            .json(body)
            .send()
            .await
            .expect("PUT sent");
        status_and_json(response).await
    }

    /// Authenticated DELETE.
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .auth(self.client.delete(self.url(path)))
            .send()
            .await
            .expect("DELETE sent");
        status_and_json(response).await
    }

    /// Authenticated POST of raw bytes as JSON.
    pub async fn post_raw(&self, path: &str, body: &'static str) -> (StatusCode, Value) {
        let response = self
            .auth(self.client.post(self.url(path)))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST sent");
        status_and_json(response).await
    }

    /// Creates a customer and returns its body.
    pub async fn create_customer(&self, body: Value) -> Value {
        let (status, customer) = self.post("/customers", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{customer}");
        customer
    }

    /// Creates an invoice and returns its body.
    pub async fn create_invoice(&self, body: Value) -> Value {
        let (status, invoice) = self.post("/invoices", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{invoice}");
        invoice
    }
}

// ---- OrderCloud / gateway / webhook helpers (appended by the OrderCloud tests) ----

/// Obtains an OrderCloud token with the default client credentials.
pub async fn ordercloud_token(client: &reqwest::Client, ordercloud_url: &str) -> String {
    let response = client
        .post(format!("{ordercloud_url}/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "ledgerbridge-sim-client"),
            ("client_secret", "sim-secret"),
        ])
        .send()
        .await
        .expect("token request sent");
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// A running sandbox with an OrderCloud bearer token.
pub struct OcSession {
    pub sandbox: RunningSandbox,
    pub client: reqwest::Client,
    pub token: String,
    pub base: String,
}

/// Starts a sandbox with `config` and obtains an OrderCloud token.
pub async fn ordercloud_session(config: SandboxConfig) -> OcSession {
    let sandbox = start(config).await;
    let client = client();
    let base = sandbox.ordercloud_url();
    let token = ordercloud_token(&client, &base).await;
    OcSession {
        sandbox,
        client,
        token,
        base,
    }
}

impl OcSession {
    /// Sends `method` to `/v1{path}` with the bearer token and an optional JSON body.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, format!("{}/v1{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        status_and_json(request.send().await.expect("request sent")).await
    }

    /// GET `/v1{path}`.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// POST `/v1{path}`.
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// PATCH `/v1{path}`.
    pub async fn patch(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PATCH, path, Some(body)).await
    }

    /// PUT `/v1{path}`.
    pub async fn put(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    /// DELETE `/v1{path}`.
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    /// Creates order `id` for `buyer01` with `lines` of `(product, quantity)`.
    pub async fn order_with_lines(&self, id: &str, lines: &[(&str, i64)]) -> Value {
        let (status, order) = self
            .post(
                "/orders/Outgoing",
                &json!({ "ID": id, "FromUserID": "buyer01" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        for (product, quantity) in lines {
            let (status, line) = self
                .post(
                    &format!("/orders/Outgoing/{id}/lineitems"),
                    &json!({ "ProductID": product, "Quantity": quantity }),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{line}");
        }
        let (_, order) = self.get(&format!("/orders/Outgoing/{id}")).await;
        order
    }
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes::Bytes,
}

/// A tiny webhook receiver on 127.0.0.1:0 that records every request and
/// answers 500 to the first `fail_first` requests, 200 afterwards.
pub struct Receiver {
    pub url: String,
    pub hits: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    _task: tokio::task::JoinHandle<()>,
}

/// Starts a [`Receiver`].
pub async fn start_receiver(fail_first: usize) -> Receiver {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let hits: Arc<Mutex<Vec<Received>>> = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(AtomicUsize::new(fail_first));
    let recorded = Arc::clone(&hits);
    let app =
        axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
            let recorded = Arc::clone(&recorded);
            let failures = Arc::clone(&failures);
            async move {
                let mut converted = reqwest::header::HeaderMap::new();
                for (name, value) in &headers {
                    if let (Ok(n), Ok(v)) = (
                        reqwest::header::HeaderName::from_bytes(name.as_str().as_bytes()),
                        reqwest::header::HeaderValue::from_bytes(value.as_bytes()),
                    ) {
                        converted.append(n, v);
                    }
                }
                recorded.lock().expect("lock").push(Received {
                    headers: converted,
                    body,
                });
                let fail = failures
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if fail {
                    (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "try again")
                } else {
                    (axum::http::StatusCode::OK, "ok")
                }
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("receiver binds");
    let addr = listener.local_addr().expect("receiver addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver {
        url: format!("http://{addr}/hook"),
        hits,
        _task: task,
    }
}

impl Receiver {
    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.hits.lock().expect("lock").clone()
    }
}

/// Polls `check` until it returns true; panics after a generous deadline
/// (a liveness bound, not a timing assertion).
pub async fn eventually<F: FnMut() -> bool>(what: &str, mut check: F) {
    for _ in 0..600 {
        if check() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}
