//! The storefront load driver: plays a shop's customers against the
//! OrderCloud simulator over real HTTP (and optionally pays through the
//! gateway simulator), so that order-submit, user and payment webhooks fire
//! exactly as a live storefront would make them fire.
//!
//! Per order it: picks a repeat customer or registers a new one (UK, EU or
//! US address; currency GBP, EUR or USD to match), creates the order
//! (`FromUserID`, `Currency`, `xp.Currency`), sets the bill-to address, adds
//! 1–20 lines over the seeded catalogue (a configurable share of lines use
//! products KashFlow does not know), submits it and, for a share of orders,
//! pays it through the gateway and records the OrderCloud payment.
//! Requests that meet 429, 5xx or a dropped connection are retried; creates
//! carry explicit IDs so a retried create that already happened answers 409
//! and counts as done.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What the driver does.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriverConfig {
    /// Orders to place (default 20).
    pub orders: usize,
    /// Orders started per second; 0 or less means as fast as possible (default 5).
    pub rate_per_sec: f64,
    /// Seed of every random choice (default 42).
    pub seed: u64,
    /// Share of orders paid through the gateway, `0.0..=1.0` (default 0.5).
    pub pay_share: f64,
    /// Share of lines that use products KashFlow does not know (default 0.1).
    pub unknown_product_share: f64,
    /// Share of orders placed by a newly registered customer (default 0.4; the
    /// first order always registers one).
    pub new_customer_share: f64,
    /// Most lines on one order (default 20).
    pub max_lines: usize,
    /// Buyer organization the customers belong to (default `BUYER1`).
    pub buyer_id: String,
    /// Product IDs KashFlow knows (default `WID1`..`WID6`); every other
    /// catalogue product counts as unknown.
    pub known_products: Vec<String>,
    /// Prefix of order IDs (default `SO-`); a run tag and a sequence follow.
    pub order_prefix: String,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            orders: 20,
            rate_per_sec: 5.0,
            seed: 42,
            pay_share: 0.5,
            unknown_product_share: 0.1,
            new_customer_share: 0.4,
            max_lines: 20,
            buyer_id: "BUYER1".to_owned(),
            known_products: (1..=6).map(|i| format!("WID{i}")).collect(),
            order_prefix: "SO-".to_owned(),
        }
    }
}

/// Credentials the driver uses.
#[derive(Clone, Serialize, Deserialize)]
pub struct DriverCredentials {
    /// OrderCloud `client_id`.
    pub client_id: String,
    /// OrderCloud `client_secret`.
    pub client_secret: String,
    /// Gateway API key (bearer).
    pub gateway_api_key: String,
}

impl Default for DriverCredentials {
    /// The sandbox defaults: `ledgerbridge-sim-client` / `sim-secret`, `sk_test_sim`.
    fn default() -> Self {
        DriverCredentials {
            client_id: "ledgerbridge-sim-client".to_owned(),
            client_secret: "sim-secret".to_owned(),
            gateway_api_key: "sk_test_sim".to_owned(),
        }
    }
}

impl std::fmt::Debug for DriverCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverCredentials")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// What the driver did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DriverReport {
    /// Orders attempted.
    pub orders_attempted: usize,
    /// Orders submitted (status Open).
    pub orders_submitted: usize,
    /// Orders that could not be completed.
    pub orders_failed: usize,
    /// Line items added.
    pub line_items: usize,
    /// Lines using products KashFlow does not know.
    pub unknown_product_lines: usize,
    /// Customers registered in this run.
    pub new_customers: usize,
    /// Orders placed by a customer who had ordered before.
    pub repeat_orders: usize,
    /// Orders paid through the gateway.
    pub payments: usize,
    /// Submitted orders per currency.
    pub by_currency: BTreeMap<String, usize>,
    /// IDs of submitted orders.
    pub order_ids: Vec<String>,
    /// The first errors met (at most 20).
    pub errors: Vec<String>,
}

/// A failure that stops the whole run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The token could not be obtained.
    #[error("cannot authenticate with OrderCloud: {0}")]
    Auth(String),
    /// The catalogue could not be read or is empty.
    #[error("cannot read the OrderCloud catalogue: {0}")]
    Catalogue(String),
}

#[derive(Debug, Clone)]
struct Customer {
    id: String,
    address: Value,
    currency: &'static str,
    orders: usize,
}

struct Client {
    http: reqwest::Client,
    oc: String,
    gateway: Option<String>,
    credentials: DriverCredentials,
    token: String,
}

/// One request's outcome: status and JSON body (null when not JSON).
type Outcome = Result<(StatusCode, Value), String>;

impl Client {
    async fn authenticate(&mut self) -> Result<(), String> {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.credentials.client_id.as_str()),
            ("client_secret", self.credentials.client_secret.as_str()),
        ];
        for attempt in 0..5u32 {
            let response = self
                .http
                .post(format!("{}/oauth/token", self.oc))
                .form(&form)
                .send()
                .await;
            match response {
                Ok(r) if r.status().is_success() => {
                    let body: Value = r.json().await.map_err(|e| e.to_string())?;
                    self.token = body["access_token"].as_str().unwrap_or_default().to_owned();
                    return Ok(());
                }
                Ok(r)
                    if r.status().is_client_error()
                        && r.status() != StatusCode::TOO_MANY_REQUESTS =>
                {
                    return Err(format!("token endpoint answered {}", r.status()));
                }
                _ => backoff(attempt).await,
            }
        }
        Err("token endpoint kept failing".to_owned())
    }

    /// Sends an OrderCloud request, re-authenticating on 401 and retrying
    /// 429, 5xx and connection failures.
    async fn oc(&mut self, method: Method, path: &str, body: Option<&Value>) -> Outcome {
        let mut reauthenticated = false;
        let mut last = String::new();
        for attempt in 0..6u32 {
            let mut request = self
                .http
                .request(method.clone(), format!("{}/v1{path}", self.oc))
                .bearer_auth(&self.token);
            if let Some(body) = body {
                request = request.json(body);
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    if status == StatusCode::UNAUTHORIZED && !reauthenticated {
                        reauthenticated = true;
                        self.authenticate().await?;
                        continue;
                    }
                    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                        last = format!("{method} {path}: {status}");
                        backoff(attempt).await;
                        continue;
                    }
                    let json = response.json().await.unwrap_or(Value::Null);
                    return Ok((status, json));
                }
                Err(err) => {
                    last = format!("{method} {path}: {err}");
                    backoff(attempt).await;
                }
            }
        }
        Err(last)
    }

    async fn gateway(&self, path: &str, body: &Value, idempotency_key: &str) -> Outcome {
        let Some(base) = &self.gateway else {
            return Err("no gateway configured".to_owned());
        };
        let mut last = String::new();
        for attempt in 0..6u32 {
            let response = self
                .http
                .post(format!("{base}{path}"))
                .bearer_auth(&self.credentials.gateway_api_key)
                .header("Idempotency-Key", idempotency_key)
                .json(body)
                .send()
                .await;
            match response {
                Ok(r)
                    if r.status() == StatusCode::TOO_MANY_REQUESTS
                        || r.status().is_server_error() =>
                {
                    last = format!("POST {path}: {}", r.status());
                }
                Ok(r) => {
                    let status = r.status();
                    return Ok((status, r.json().await.unwrap_or(Value::Null)));
                }
                Err(err) => last = format!("POST {path}: {err}"),
            }
            backoff(attempt).await;
        }
        Err(last)
    }
}

async fn backoff(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(50u64 << attempt.min(5))).await;
}

/// A city: name, postcode, state (US only).
type City = (&'static str, &'static str, Option<&'static str>);

/// Regions: (country, currency, cities).
const REGIONS: &[(&str, &str, &[City])] = &[
    (
        "GB",
        "GBP",
        &[
            ("London", "SW1A 1AA", None),
            ("Leeds", "LS1 4AP", None),
            ("Bristol", "BS1 5TR", None),
        ],
    ),
    (
        "DE",
        "EUR",
        &[("Berlin", "10115", None), ("Hamburg", "20095", None)],
    ),
    (
        "FR",
        "EUR",
        &[("Paris", "75001", None), ("Lyon", "69001", None)],
    ),
    ("IE", "EUR", &[("Dublin", "D02 X285", None)]),
    (
        "US",
        "USD",
        &[
            ("Austin", "78701", Some("TX")),
            ("Portland", "97201", Some("OR")),
            ("Boston", "02108", Some("MA")),
        ],
    ),
];
const FIRST_NAMES: &[&str] = &[
    "Ava", "Ben", "Chloe", "Dev", "Elif", "Finn", "Grace", "Hugo", "Isla", "Jonas", "Kai", "Lena",
];
const LAST_NAMES: &[&str] = &[
    "Smith", "Müller", "Dubois", "Murphy", "Johnson", "Okafor", "Rossi", "Nguyen", "Patel",
    "Kowalski",
];

fn record_error(report: &mut DriverReport, message: String) {
    tracing::warn!(%message, "storefront driver");
    if report.errors.len() < 20 {
        report.errors.push(message);
    }
}

/// Places `cfg.orders` orders against the OrderCloud simulator at
/// `ordercloud_base_url` (the prefix under which `/oauth/token` and `/v1`
/// live), paying a share of them through the gateway at `gateway_base_url`.
pub async fn run(
    ordercloud_base_url: &str,
    gateway_base_url: Option<&str>,
    credentials: &DriverCredentials,
    cfg: &DriverConfig,
) -> Result<DriverReport, DriverError> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .map_err(|e| DriverError::Auth(e.to_string()))?;
    let mut client = Client {
        http,
        oc: ordercloud_base_url.trim_end_matches('/').to_owned(),
        gateway: gateway_base_url.map(|g| g.trim_end_matches('/').to_owned()),
        credentials: credentials.clone(),
        token: String::new(),
    };
    client.authenticate().await.map_err(DriverError::Auth)?;
    let (status, products) = client
        .oc(Method::GET, "/products?pageSize=100", None)
        .await
        .map_err(DriverError::Catalogue)?;
    if !status.is_success() {
        return Err(DriverError::Catalogue(format!(
            "GET /products answered {status}"
        )));
    }
    let ids: Vec<String> = products["Items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["ID"].as_str().map(str::to_owned))
        .collect();
    let known: Vec<String> = ids
        .iter()
        .filter(|id| cfg.known_products.contains(id))
        .cloned()
        .collect();
    let unknown: Vec<String> = ids
        .iter()
        .filter(|id| !cfg.known_products.contains(id))
        .cloned()
        .collect();
    if known.is_empty() && unknown.is_empty() {
        return Err(DriverError::Catalogue("the catalogue is empty".to_owned()));
    }

    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let run_tag = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
    let mut customers: Vec<Customer> = Vec::new();
    let mut report = DriverReport::default();
    let start = tokio::time::Instant::now();
    for index in 0..cfg.orders {
        if cfg.rate_per_sec > 0.0 {
            let due = start + Duration::from_secs_f64(index as f64 / cfg.rate_per_sec);
            tokio::time::sleep_until(due).await;
        }
        report.orders_attempted += 1;
        let new_customer =
            customers.is_empty() || rng.gen_bool(cfg.new_customer_share.clamp(0.0, 1.0));
        let customer_index = if new_customer {
            match register_customer(&mut client, &mut rng, cfg, &run_tag, customers.len()).await {
                Ok(customer) => {
                    report.new_customers += 1;
                    customers.push(customer);
                    customers.len() - 1
                }
                Err(err) => {
                    record_error(&mut report, err);
                    report.orders_failed += 1;
                    continue;
                }
            }
        } else {
            rng.gen_range(0..customers.len())
        };
        if customers[customer_index].orders > 0 {
            report.repeat_orders += 1;
        }
        let order_id = format!("{}{run_tag}-{:05}", cfg.order_prefix, index + 1);
        let customer = customers[customer_index].clone();
        match place_order(
            &mut client,
            &mut rng,
            cfg,
            &order_id,
            &customer,
            &known,
            &unknown,
            &mut report,
        )
        .await
        {
            Ok(total) => {
                customers[customer_index].orders += 1;
                report.orders_submitted += 1;
                *report
                    .by_currency
                    .entry(customer.currency.to_owned())
                    .or_default() += 1;
                report.order_ids.push(order_id.clone());
                if client.gateway.is_some() && rng.gen_bool(cfg.pay_share.clamp(0.0, 1.0)) {
                    match pay(&mut client, &order_id, customer.currency, total).await {
                        Ok(()) => report.payments += 1,
                        Err(err) => record_error(&mut report, err),
                    }
                }
            }
            Err(err) => {
                record_error(&mut report, err);
                report.orders_failed += 1;
            }
        }
    }
    Ok(report)
}

async fn register_customer(
    client: &mut Client,
    rng: &mut StdRng,
    cfg: &DriverConfig,
    run_tag: &str,
    number: usize,
) -> Result<Customer, String> {
    let (country, currency, cities) = REGIONS.choose(rng).copied().unwrap_or(REGIONS[0]);
    let (city, zip, state) = cities.choose(rng).copied().unwrap_or(cities[0]);
    let first = FIRST_NAMES.choose(rng).copied().unwrap_or("Ava");
    let last = LAST_NAMES.choose(rng).copied().unwrap_or("Smith");
    let id = format!("drv-{run_tag}-{:04}", number + 1);
    let email = format!(
        "{}.{}.{id}@example.com",
        first.to_lowercase(),
        last.to_lowercase().replace('ü', "ue")
    );
    let address = json!({
        "ID": format!("{id}-home"),
        "FirstName": first,
        "LastName": last,
        "Street1": format!("{} High Street", rng.gen_range(1..200)),
        "City": city,
        "State": state,
        "Zip": zip,
        "Country": country,
        "AddressName": "Home",
    });
    let body = json!({
        "ID": id,
        "Username": id,
        "Password": "drv-Password-1",
        "FirstName": first,
        "LastName": last,
        "Email": email,
        "Active": true,
        "xp": { "Country": country, "Currency": currency, "Address": address },
    });
    let (status, reply) = client
        .oc(
            Method::POST,
            &format!("/buyers/{}/users", cfg.buyer_id),
            Some(&body),
        )
        .await?;
    if !(status.is_success() || status == StatusCode::CONFLICT) {
        return Err(format!("creating user {id} answered {status}: {reply}"));
    }
    Ok(Customer {
        id,
        address,
        currency,
        orders: 0,
    })
}

/// Creates, fills and submits one order; returns its total.
#[allow(clippy::too_many_arguments)]
async fn place_order(
    client: &mut Client,
    rng: &mut StdRng,
    cfg: &DriverConfig,
    order_id: &str,
    customer: &Customer,
    known: &[String],
    unknown: &[String],
    report: &mut DriverReport,
) -> Result<Decimal, String> {
    let body = json!({
        "ID": order_id,
        "FromUserID": customer.id,
        "Currency": customer.currency,
        "ShippingCost": if rng.gen_bool(0.5) { json!(4.95) } else { json!(0) },
        "xp": { "Currency": customer.currency, "Channel": "storefront-driver" },
    });
    let (status, reply) = client
        .oc(Method::POST, "/orders/Outgoing", Some(&body))
        .await?;
    if !(status.is_success() || status == StatusCode::CONFLICT) {
        return Err(format!(
            "creating order {order_id} answered {status}: {reply}"
        ));
    }
    let base = format!("/orders/Outgoing/{order_id}");
    let (status, reply) = client
        .oc(
            Method::PUT,
            &format!("{base}/billto"),
            Some(&customer.address),
        )
        .await?;
    if !status.is_success() {
        return Err(format!("bill-to of {order_id} answered {status}: {reply}"));
    }
    let max_lines = cfg.max_lines.max(1);
    // Skewed towards small baskets: the smaller of two rolls.
    let lines = rng
        .gen_range(1..=max_lines)
        .min(rng.gen_range(1..=max_lines));
    for line in 0..lines {
        let use_unknown = !unknown.is_empty()
            && (known.is_empty() || rng.gen_bool(cfg.unknown_product_share.clamp(0.0, 1.0)));
        let pool = if use_unknown { unknown } else { known };
        let Some(product) = pool.choose(rng) else {
            continue;
        };
        let body = json!({
            "ID": format!("L{}", line + 1),
            "ProductID": product,
            "Quantity": rng.gen_range(1..=5),
            "ShippingAddress": customer.address,
        });
        let (status, reply) = client
            .oc(Method::POST, &format!("{base}/lineitems"), Some(&body))
            .await?;
        if !(status.is_success() || status == StatusCode::CONFLICT) {
            return Err(format!(
                "line {} of {order_id} answered {status}: {reply}",
                line + 1
            ));
        }
        report.line_items += 1;
        if use_unknown {
            report.unknown_product_lines += 1;
        }
    }
    let (status, reply) = client
        .oc(Method::POST, &format!("{base}/submit"), None)
        .await?;
    let order = if status.is_success() {
        reply
    } else {
        // A retried submit that already happened answers CannotSubmitBadStatus.
        let (_, current) = client.oc(Method::GET, &base, None).await?;
        if current["Status"] != json!("Open") {
            return Err(format!("submitting {order_id} answered {status}: {reply}"));
        }
        current
    };
    let total = order["Total"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| order["Total"].to_string());
    total
        .parse::<Decimal>()
        .or_else(|_| Decimal::from_scientific(&total))
        .map_err(|_| format!("order {order_id} has no usable Total: {total}"))
}

/// Pays `total` through the gateway and records the OrderCloud payment.
async fn pay(
    client: &mut Client,
    order_id: &str,
    currency: &str,
    total: Decimal,
) -> Result<(), String> {
    let minor = (total * Decimal::from(100)).round();
    let minor: i64 = minor
        .try_into()
        .map_err(|_| format!("amount of {order_id} out of range"))?;
    let body = json!({
        "amount": minor,
        "currency": currency.to_lowercase(),
        "metadata": { "order_id": order_id },
        "description": format!("Order {order_id}"),
    });
    let (status, intent) = client
        .gateway("/v1/payment_intents", &body, &format!("pay-{order_id}"))
        .await?;
    if !status.is_success() {
        return Err(format!("payment of {order_id} answered {status}: {intent}"));
    }
    let payment = json!({
        "ID": format!("PAY-{order_id}"),
        "Type": "CreditCard",
        "Amount": serde_json::from_str::<Value>(&total.normalize().to_string()).unwrap_or(Value::Null),
        "Accepted": true,
        "Description": "Card payment",
        "xp": { "PaymentIntentID": intent["id"], "ChargeID": intent["latest_charge"] },
    });
    let (status, reply) = client
        .oc(
            Method::POST,
            &format!("/orders/Outgoing/{order_id}/payments"),
            Some(&payment),
        )
        .await?;
    if !(status.is_success() || status == StatusCode::CONFLICT) {
        return Err(format!(
            "recording payment of {order_id} answered {status}: {reply}"
        ));
    }
    Ok(())
}
