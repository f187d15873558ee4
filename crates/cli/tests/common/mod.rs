//! Test harness: the sandbox simulators served in the test process (with a
//! request counter in front), the real `ledgerbridge` binary started,
//! SIGKILLed and restarted as a child process, fresh SQLite files and fresh
//! PostgreSQL databases, and a webhook sender that signs OrderCloud
//! envelopes and retries each one until the engine answers 2xx.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use ledgerbridge_sandbox::driver::{self, DriverConfig, DriverCredentials};
use ledgerbridge_sandbox::faults::parse_fault_spec;
use ledgerbridge_sandbox::Sandbox;
use serde_json::{json, Value};
use sha2::Sha256;
use sqlx::{Connection, Executor, PgConnection};

/// The HashKey of the test webhook source `shop`.
pub const HASH_KEY: &str = "test-hash-key-0123456789";

/// Requests the simulators received, by `METHOD /path-without-ids`.
pub type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

/// The simulators, served on a free loopback port.
pub struct Target {
    pub sandbox: Sandbox,
    pub addr: SocketAddr,
    pub counts: Counts,
    held: Held,
    _task: tokio::task::JoinHandle<()>,
}

/// Requests held at the door (`METHOD /exact/path`), and how many wait there.
#[derive(Clone, Default)]
struct Held {
    routes: Arc<Mutex<std::collections::BTreeSet<String>>>,
    waiting: Arc<std::sync::atomic::AtomicUsize>,
}

fn route_key(method: &str, path: &str) -> String {
    // Collapse ids so that `POST /kashflow/v2/invoices` and
    // `PATCH /ordercloud/v1/orders/Incoming/SO-1` count per route.
    let parts: Vec<&str> = path
        .split('/')
        .map(|p| {
            let version = p.starts_with('v') && p[1..].chars().all(|c| c.is_ascii_digit());
            if !version && p.chars().any(|c| c.is_ascii_digit()) {
                "{id}"
            } else {
                p
            }
        })
        .collect();
    format!("{method} {}", parts.join("/"))
}

impl Target {
    pub async fn start() -> Target {
        Self::start_with(Default::default()).await
    }

    /// [`Target::start`] with a sandbox configuration of the test's own.
    pub async fn start_with(config: ledgerbridge_sandbox::config::SandboxConfig) -> Target {
        let sandbox = Sandbox::new(config);
        let counts: Counts = Arc::default();
        let counter = counts.clone();
        let held = Held::default();
        let door = held.clone();
        let router = sandbox.router().layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let counter = counter.clone();
                let door = door.clone();
                async move {
                    let exact = format!("{} {}", req.method(), req.uri().path());
                    if door.routes.lock().unwrap().contains(&exact) {
                        door.waiting
                            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        while door.routes.lock().unwrap().contains(&exact) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        door.waiting
                            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    let key = route_key(req.method().as_str(), req.uri().path());
                    *counter.lock().unwrap().entry(key).or_default() += 1;
                    let response: Response = next.run(req).await;
                    response
                }
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Target {
            sandbox,
            addr,
            counts,
            held,
            _task: task,
        }
    }

    /// Holds every request to `route` (`METHOD /exact/path`, no query) at
    /// the door until [`Target::release`]: a system that is slow to answer
    /// one kind of request, so a test can order what the engine sees.
    pub fn hold(&self, route: &str) {
        self.held.routes.lock().unwrap().insert(route.to_owned());
    }

    /// Lets the requests held for `route` through.
    pub fn release(&self, route: &str) {
        self.held.routes.lock().unwrap().remove(route);
    }

    /// Requests waiting at the door now.
    pub fn held_waiting(&self) -> usize {
        self.held.waiting.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn fault(&self, spec: &str) {
        let rule = parse_fault_spec(spec).expect("valid fault spec");
        self.sandbox.faults.add(rule).expect("fault accepted");
    }

    pub fn clear_faults(&self) {
        self.sandbox.faults.reset();
    }

    pub fn count(&self, key: &str) -> u64 {
        self.counts.lock().unwrap().get(key).copied().unwrap_or(0)
    }

    /// Places and submits `n` orders in the OrderCloud simulator (no webhook
    /// is registered, so nothing is delivered); returns their ids.
    pub async fn place_orders(&self, n: usize, prefix: &str) -> Vec<String> {
        let config = DriverConfig {
            orders: n,
            rate_per_sec: 10_000.0,
            order_prefix: prefix.to_owned(),
            ..DriverConfig::default()
        };
        let report = driver::run(
            &format!("{}/ordercloud", self.base()),
            None,
            &DriverCredentials::default(),
            &config,
        )
        .await
        .expect("driver places orders");
        assert_eq!(report.orders_submitted, n, "{report:?}");
        report.order_ids
    }

    /// A KashFlow client of the sandbox's account (the test's own calls).
    pub fn kashflow_client(&self) -> ledgerbridge_connectors::kashflow::KashFlowClient {
        ledgerbridge_connectors::kashflow::KashFlowClient::new(
            "test-kashflow",
            ledgerbridge_connectors::kashflow::KashFlowConfig::new(
                format!("{}/kashflow/v2", self.base()),
                "sim",
                "sim-password".into(),
                "pineapple".into(),
            ),
        )
        .unwrap()
    }

    /// An OrderCloud client of the sandbox's integration client.
    pub fn ordercloud_client(&self) -> ledgerbridge_connectors::ordercloud::OrderCloudClient {
        ledgerbridge_connectors::ordercloud::OrderCloudClient::new(
            "test-ordercloud",
            ledgerbridge_connectors::ordercloud::OrderCloudConfig::new(
                format!("{}/ordercloud", self.base()),
                "ledgerbridge-sim-client",
                "sim-secret".into(),
                "",
            ),
        )
        .unwrap()
    }

    /// An OrderCloud access token of the sandbox's integration client.
    pub async fn ordercloud_token(&self) -> String {
        let token: Value = reqwest::Client::new()
            .post(format!("{}/ordercloud/oauth/token", self.base()))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "ledgerbridge-sim-client"),
                ("client_secret", "sim-secret"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        token["access_token"].as_str().unwrap().to_owned()
    }

    /// KashFlow invoices by CustomerReference (the order id).
    pub fn invoices_by_reference(&self) -> BTreeMap<String, Vec<i64>> {
        let snapshot = self.sandbox.kashflow.snapshot();
        let mut map: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for invoice in snapshot["Invoices"].as_array().unwrap() {
            let reference = invoice["CustomerReference"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let number = invoice["Number"].as_i64().unwrap();
            map.entry(reference).or_default().push(number);
        }
        map
    }

    /// OrderCloud orders by id, as the simulator holds them.
    pub fn orders(&self) -> BTreeMap<String, Value> {
        let snapshot = self.sandbox.ordercloud.snapshot();
        let mut map = BTreeMap::new();
        for entry in snapshot["Orders"].as_array().expect("Orders in snapshot") {
            let order = &entry["Order"];
            map.insert(order["ID"].as_str().unwrap().to_owned(), order.clone());
        }
        map
    }

    /// Asserts the finance team's invariant for `orders`: each has exactly
    /// one KashFlow invoice, and the order carries that invoice's number.
    pub fn assert_exactly_one_invoice_each(&self, orders: &[String]) {
        let invoices = self.invoices_by_reference();
        let oc = self.orders();
        let mut problems = Vec::new();
        for id in orders {
            match invoices.get(id).map(Vec::as_slice) {
                Some([number]) => {
                    let marked = oc
                        .get(id)
                        .and_then(|o| o["xp"]["KashFlowInvoiceNumber"].as_i64());
                    if marked != Some(*number) {
                        problems.push(format!(
                            "{id}: invoice {number} but order marked {marked:?}: {}",
                            oc.get(id).map(|o| o["xp"].to_string()).unwrap_or_default()
                        ));
                    }
                }
                Some(many) => problems.push(format!("{id}: {} invoices {many:?}", many.len())),
                None => problems.push(format!("{id}: no invoice")),
            }
        }
        let extra: Vec<&String> = invoices.keys().filter(|r| !orders.contains(r)).collect();
        assert!(
            problems.is_empty() && extra.is_empty(),
            "{} problems: {problems:#?}\ninvoices for unknown references: {extra:?}",
            problems.len()
        );
    }
}

/// A free loopback port for an engine process to bind later.
///
/// Chosen below the kernel's ephemeral range (32768–60999 here), so the
/// outbound connections and `:0` listeners of tests running alongside can
/// never take it between this check and the engine's bind; each process
/// walks its own stride of the range (by pid) so parallel test binaries do
/// not hand out the same port either.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let base = (std::process::id() * 997) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (base + n * 7) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN);
}

/// A fresh PostgreSQL database; dropped when the value is.
pub struct PgDb {
    pub url: String,
    server: String,
    name: String,
}

pub fn pg_server() -> String {
    std::env::var("LEDGERBRIDGE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

impl PgDb {
    pub async fn create() -> PgDb {
        let server = pg_server();
        let name = format!("lb_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&format!("{server}/postgres"))
            .await
            .unwrap_or_else(|e| {
                panic!("these tests need PostgreSQL at {server} (LEDGERBRIDGE_TEST_PG): {e}")
            });
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create database");
        let _ = admin.close().await;
        PgDb {
            url: format!("{server}/{name}"),
            server,
            name,
        }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let server = self.server.clone();
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee: use a thread of our own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&format!("{server}/postgres")).await {
                    let _ = admin
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                }
            });
        })
        .join();
    }
}

/// Settings of one engine process.
pub struct EngineSpec {
    pub database: String,
    pub port: u16,
    pub dir: PathBuf,
    /// Extra TOML appended to the generated config.
    pub extra: String,
    /// `[engine] lease_secs`: short (2) so a killed engine's runs come back
    /// fast; tests that kill nobody may lengthen it, so a starved machine
    /// cannot expire a live lease.
    pub lease_secs: u64,
    /// Request timeout of the KashFlow and OrderCloud connections. A write
    /// whose worker died mid-call blocks its retry for twice this (it may
    /// still land), so tests that kill engines keep it short.
    pub request_timeout: &'static str,
    /// The engine's `RUST_LOG`.
    pub log_filter: &'static str,
}

impl EngineSpec {
    pub fn new(database: &str, dir: &Path) -> EngineSpec {
        EngineSpec {
            database: database.to_owned(),
            port: free_port(),
            dir: dir.to_owned(),
            extra: String::new(),
            lease_secs: 2,
            request_timeout: "5s",
            log_filter: "info",
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join(format!("engine-{}.toml", self.port))
    }

    /// Writes the config file for this engine against `target`.
    pub fn write_config(&self, target: &Target) -> PathBuf {
        let path = self.config_path();
        let text = format!(
            r#"
[database]
url = "{database}"

[server]
listen = "127.0.0.1:{port}"

[engine]
lease_secs = {lease_secs}
reap_every_secs = 1
idle_poll_ms = 100
shutdown_grace_secs = 10

[engine.retry]
base_ms = 50
cap_secs = 1

[sources.ordercloud.shop]
hash_key = "{HASH_KEY}"

[connections.kashflow]
base_url = "{base}/kashflow/v2"
username = "sim"
password = "sim-password"
memorable_word = "pineapple"
limits = {{ timeout = "{timeout}" }}

[connections.ordercloud]
base_url = "{base}/ordercloud"
client_id = "ledgerbridge-sim-client"
client_secret = "sim-secret"
limits = {{ timeout = "{timeout}" }}

{extra}
"#,
            database = self.database,
            port = self.port,
            lease_secs = self.lease_secs,
            timeout = self.request_timeout,
            base = target.base(),
            extra = self.extra,
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// The `ledgerbridge` binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_ledgerbridge")
}

/// Runs `ledgerbridge ARGS` to completion; returns (status, stdout, stderr).
pub fn cli(args: &[&str]) -> (i32, String, String) {
    cli_in(Path::new("."), args)
}

/// [`cli`] with `dir` as the working directory.
pub fn cli_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary())
        .current_dir(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run ledgerbridge");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One `ledgerbridge run` child process.
pub struct Engine {
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
}

impl Engine {
    /// Starts `ledgerbridge run` with `spec`'s config; logs go to a file in
    /// the spec's directory (appended across restarts).
    pub fn spawn(spec: &EngineSpec, target: &Target) -> Engine {
        let config = spec.write_config(target);
        let log = spec.dir.join(format!("engine-{}.log", spec.port));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(binary())
            .arg("--config")
            .arg(&config)
            .arg("run")
            .env("RUST_LOG", spec.log_filter)
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn ledgerbridge run");
        Engine {
            child,
            base: spec.base(),
            log,
        }
    }

    /// Waits until `/healthz` answers (or panics with the log).
    pub async fn wait_healthy(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("engine exited early with {status}:\n{}", self.log_text());
            }
            if let Ok(r) = client.get(format!("{}/healthz", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("engine not healthy after 30 s:\n{}", self.log_text());
    }

    pub fn sigkill(&mut self) {
        let _ = self.child.kill(); // SIGKILL on unix
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill(1)");
        assert!(sent.success(), "kill -TERM {pid}");
        self.child.wait().unwrap()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A signed OrderCloud "order submitted" webhook body for `order`.
pub fn submit_envelope(order: &str, log_id: &str) -> String {
    json!({
        "Route": "v1/orders/{direction}/{orderID}/submit",
        "RouteParams": {"direction": "Outgoing", "orderID": order},
        "Verb": "POST",
        "Date": "2026-11-28T10:00:00.0000000+00:00",
        "LogID": log_id,
        "UserToken": "buyer-token",
        "Request": {"Body": null, "Headers": null},
        "Response": {"Body": {"ID": order, "Status": "Open"}, "Headers": null},
        "ConfigData": {}
    })
    .to_string()
}

pub fn oc_hash(body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(HASH_KEY.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Delivers `body` to `base`'s `shop` source, retrying (connection refused
/// while an engine restarts, 5xx) until a 2xx: what OrderCloud does.
/// Returns the number of attempts.
pub async fn deliver(client: &reqwest::Client, base: &str, body: &str) -> u32 {
    let hash = oc_hash(body);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = client
            .post(format!("{base}/webhooks/ordercloud/shop"))
            .header("content-type", "application/json")
            .header("X-oc-hash", &hash)
            .body(body.to_owned())
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        match result {
            Ok(r) if r.status().is_success() => return attempts,
            Ok(r) if r.status().is_client_error() => {
                panic!("webhook refused with {}: {:?}", r.status(), r.text().await)
            }
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "webhook not accepted within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Run counts by state, read straight from the store.
pub async fn run_counts(database: &str) -> BTreeMap<String, u64> {
    let store = ledgerbridge_store::open(database)
        .await
        .expect("open store");
    let counts = store.count_by_state().await.expect("counts");
    counts
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| (s.as_str().to_owned(), n as u64))
        .collect()
}

/// Waits until no run is queued, running or retrying, `quiet` polls in a
/// row (events still on their way may start new runs in between), calling
/// `poll` at each (to check that the engine is alive, say); panics after
/// `secs` with the counts and `context()`. The counts at the end.
pub async fn wait_settled(
    database: &str,
    secs: u64,
    quiet: u32,
    mut poll: impl FnMut(),
    context: impl Fn() -> String,
) -> BTreeMap<String, u64> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut quiet_polls = 0;
    loop {
        poll();
        let counts = run_counts(database).await;
        let pending: u64 = ["queued", "running", "retrying"]
            .iter()
            .map(|s| counts.get(*s).copied().unwrap_or(0))
            .sum();
        quiet_polls = if pending == 0 { quiet_polls + 1 } else { 0 };
        if quiet_polls >= quiet {
            return counts;
        }
        assert!(
            Instant::now() < deadline,
            "runs still pending after {secs} s: {counts:?}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls until `done()` or panics after `secs` with `context()`.
pub async fn wait_until<F, C>(secs: u64, mut done: F, context: C)
where
    F: FnMut() -> bool,
    C: Fn() -> String,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s: {}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TCP proxy in front of a real server (PostgreSQL), for outages: `cut`
/// drops every open connection and refuses new ones until `restore`.
pub struct TcpProxy {
    pub addr: SocketAddr,
    down: Arc<std::sync::atomic::AtomicBool>,
    live: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let live: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (down_flag, live_list) = (down.clone(), live.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if down_flag.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(inbound); // refused: closed at once
                    continue;
                }
                let copy = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                live_list.lock().unwrap().push(copy.abort_handle());
            }
        });
        TcpProxy {
            addr,
            down,
            live,
            _task: task,
        }
    }

    /// The server goes away: open connections are dropped, new ones closed.
    pub fn cut(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for handle in self.live.lock().unwrap().drain(..) {
            handle.abort();
        }
    }

    /// The server is back.
    pub fn restore(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// One signed delivery attempt; its status (0 if no answer).
pub async fn deliver_once(client: &reqwest::Client, base: &str, body: &str) -> u16 {
    client
        .post(format!("{base}/webhooks/ordercloud/shop"))
        .header("content-type", "application/json")
        .header("X-oc-hash", oc_hash(body))
        .body(body.to_owned())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// Delivers one submit webhook per order (each with a fresh LogID) to the
/// engine at `base`, retrying each until accepted.
pub async fn submit_all(base: &str, orders: &[String]) {
    let client = reqwest::Client::new();
    for order in orders {
        let body = submit_envelope(order, &uuid::Uuid::new_v4().to_string());
        deliver(&client, base, &body).await;
    }
}
