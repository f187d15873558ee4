//! A Stripe-style payment gateway simulator. Amounts are integers in minor
//! units, currencies lower-case ISO codes, bodies JSON or form-encoded
//! (`metadata[order_id]=...`). Every payment, refund and payout emits an
//! event, POSTed to each webhook endpoint with
//! `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
//! through the same retrying, fault-injecting delivery as OrderCloud.
//!
//! | Route | Meaning |
//! |---|---|
//! | `POST /v1/payment_intents` | charge at once (`status: succeeded`); event `payment_intent.succeeded` |
//! | `GET /v1/payment_intents[/{id}]` | list (paged) / one |
//! | `POST /v1/refunds` | `payment_intent` or `charge`, optional `amount`; event `charge.refunded` |
//! | `GET /v1/refunds[/{id}]` | list (paged) / one |
//! | `POST /v1/payouts` | `amount` (gross), optional `fee`; event `payout.paid` |
//! | `GET /v1/payouts[/{id}]` | list (paged) / one |
//! | `GET /v1/events` | every event emitted |
//! | `POST /v1/webhook_endpoints` | add an endpoint `{"url": ...}` at runtime |
//!
//! Lists page as Stripe's do: newest first, `limit` (1–100, default 10),
//! `starting_after` / `ending_before` (an object id), `created` or
//! `created[gt|gte|lt|lte]` (unix seconds); `has_more` says whether more
//! objects follow.
//!
//! Requests need `Authorization: Bearer <api_key>` when `api_key` is set.
//! `Idempotency-Key` replays the first response for a repeated key.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::ordercloud::delivery::{
    Deliverer, DeliveryConfig, DeliveryRecord, Outbound, WebhookFaults,
};

/// Configuration of the payment gateway simulator.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Secret API key callers send as a bearer token (default
    /// `sk_test_sim`); empty disables the check.
    pub api_key: String,
    /// Webhook signing secret (default `whsec_sim`).
    pub webhook_secret: String,
    /// Webhook endpoint URLs at start-up.
    pub webhook_endpoints: Vec<String>,
    /// Payout fee in basis points of the gross amount (default 140 = 1.4%).
    pub payout_fee_bps: i64,
    /// Fixed payout fee in minor units (default 20).
    pub payout_fee_fixed: i64,
    /// Retry policy for webhook deliveries.
    pub delivery: DeliveryConfig,
    /// Delivery fault modes at start-up (changeable at runtime).
    pub webhook_faults: WebhookFaults,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            api_key: "sk_test_sim".to_owned(),
            webhook_secret: "whsec_sim".to_owned(),
            webhook_endpoints: Vec::new(),
            payout_fee_bps: 140,
            payout_fee_fixed: 20,
            delivery: DeliveryConfig::default(),
            webhook_faults: WebhookFaults::default(),
        }
    }
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("api_key", &"<redacted>")
            .field("webhook_secret", &"<redacted>")
            .field("webhook_endpoints", &self.webhook_endpoints)
            .field("payout_fee_bps", &self.payout_fee_bps)
            .field("payout_fee_fixed", &self.payout_fee_fixed)
            .finish_non_exhaustive()
    }
}

/// The `Stripe-Signature` header value for `body` sent at unix time `t`.
pub fn stripe_signature(secret: &str, t: i64, body: &[u8]) -> String {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()) else {
        return format!("t={t},v1=");
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// A gateway error: `{"error":{"type","code","message","param"}}`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct GwError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    message: String,
    param: Option<&'static str>,
}

impl GwError {
    fn invalid(
        code: &'static str,
        param: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        GwError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code,
            message: message.into(),
            param,
        }
    }
    fn missing(id: &str) -> Self {
        GwError {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            code: "resource_missing",
            message: format!("No such object: '{id}'"),
            param: Some("id"),
        }
    }
}

impl IntoResponse for GwError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": { "type": self.kind, "code": self.code, "message": self.message, "param": self.param } })),
        )
            .into_response()
    }
}

/// The payment gateway simulator service.
pub struct Gateway {
    config: GatewayConfig,
    state: Mutex<Ledger>,
    deliverer: Arc<Deliverer>,
}

#[derive(Debug, Default)]
struct Ledger {
    payment_intents: Objects,
    charges: BTreeMap<String, Value>,
    refunds: Objects,
    payouts: Objects,
    events: Vec<Value>,
    endpoints: Vec<String>,
    idempotency: HashMap<String, (u16, Value)>,
}

/// Objects of one kind in creation order, with an index by id, so that
/// lists page newest first from any object in O(page).
#[derive(Debug, Default)]
struct Objects {
    items: Vec<Value>,
    index: HashMap<String, usize>,
}

impl Objects {
    fn get(&self, id: &str) -> Option<&Value> {
        self.index.get(id).map(|&i| &self.items[i])
    }

    /// Adds an object (or replaces the one with the same id).
    fn insert(&mut self, id: String, object: Value) {
        match self.index.get(&id) {
            Some(&i) => self.items[i] = object,
            None => {
                self.index.insert(id, self.items.len());
                self.items.push(object);
            }
        }
    }

    fn values(&self) -> impl Iterator<Item = &Value> {
        self.items.iter()
    }

    fn len(&self) -> usize {
        self.items.len()
    }
}

/// Paging and `created` filters of a list request.
#[derive(Debug, Clone, Default)]
struct ListParams {
    limit: usize,
    starting_after: Option<String>,
    ending_before: Option<String>,
    created_min: Option<i64>,
    created_max: Option<i64>,
}

impl ListParams {
    fn parse(raw: Option<&str>) -> Result<ListParams, GwError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or_default())
            .map_err(|_| GwError::invalid("parameter_invalid", None, "Malformed query string."))?;
        let mut params = ListParams {
            limit: 10,
            ..ListParams::default()
        };
        let int = |name: &'static str, value: &str| {
            value.trim().parse::<i64>().map_err(|_| {
                GwError::invalid(
                    "parameter_invalid_integer",
                    Some(name),
                    format!("Invalid integer: {value}"),
                )
            })
        };
        for (key, value) in pairs {
            match key.as_str() {
                "limit" => {
                    let limit = int("limit", &value)?;
                    if !(1..=100).contains(&limit) {
                        return Err(GwError::invalid(
                            "parameter_invalid_integer",
                            Some("limit"),
                            "This value must be greater than or equal to 1 and less than or equal to 100.",
                        ));
                    }
                    params.limit = usize::try_from(limit).unwrap_or(10);
                }
                "starting_after" => params.starting_after = Some(value),
                "ending_before" => params.ending_before = Some(value),
                "created" => {
                    let at = int("created", &value)?;
                    params.created_min = Some(at);
                    params.created_max = Some(at);
                }
                "created[gte]" => params.created_min = Some(int("created", &value)?),
                "created[gt]" => params.created_min = Some(int("created", &value)? + 1),
                "created[lte]" => params.created_max = Some(int("created", &value)?),
                "created[lt]" => params.created_max = Some(int("created", &value)? - 1),
                _ => {}
            }
        }
        Ok(params)
    }

    fn matches(&self, object: &Value) -> bool {
        let created = object["created"].as_i64().unwrap_or(0);
        self.created_min.is_none_or(|min| created >= min)
            && self.created_max.is_none_or(|max| created <= max)
    }

    /// One page of `objects`, newest first, as a list object.
    fn page(&self, objects: &Objects, url: &str) -> Result<Value, GwError> {
        let position = |id: &str| {
            objects
                .index
                .get(id)
                .copied()
                .ok_or_else(|| GwError::missing(id))
        };
        let mut data = Vec::with_capacity(self.limit);
        let mut has_more = false;
        if let Some(before) = &self.ending_before {
            // Newer than `before`, the ones closest to it.
            let start = position(before)? + 1;
            for object in objects.items[start.min(objects.len())..].iter() {
                if !self.matches(object) {
                    continue;
                }
                if data.len() == self.limit {
                    has_more = true;
                    break;
                }
                data.push(object.clone());
            }
            data.reverse();
        } else {
            let end = match &self.starting_after {
                Some(after) => position(after)?,
                None => objects.len(),
            };
            for object in objects.items[..end].iter().rev() {
                if !self.matches(object) {
                    continue;
                }
                if data.len() == self.limit {
                    has_more = true;
                    break;
                }
                data.push(object.clone());
            }
        }
        Ok(json!({ "object": "list", "url": url, "has_more": has_more, "data": data }))
    }
}

fn object_id(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..24]
    )
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Parses a JSON or form body (`metadata[k]=v` nests one level).
fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, GwError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|_| GwError::invalid("parameter_invalid", None, "Malformed form body."))?;
        let mut out = Map::new();
        for (key, value) in pairs {
            if let Some((outer, inner)) = key.split_once('[') {
                let inner = inner.trim_end_matches(']');
                let entry = out.entry(outer.to_owned()).or_insert_with(|| json!({}));
                if let Some(map) = entry.as_object_mut() {
                    map.insert(inner.to_owned(), json!(value));
                }
            } else {
                out.insert(key, json!(value));
            }
        }
        return Ok(out);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(GwError::invalid(
            "parameter_invalid",
            None,
            "The body must be a JSON object.",
        )),
    }
}

fn int_param(body: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, GwError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| {
            GwError::invalid(
                "parameter_invalid_integer",
                Some(name),
                format!("Invalid integer: {n}"),
            )
        }),
        Some(Value::String(s)) => s.trim().parse::<i64>().map(Some).map_err(|_| {
            GwError::invalid(
                "parameter_invalid_integer",
                Some(name),
                format!("Invalid integer: {s}"),
            )
        }),
        Some(_) => Err(GwError::invalid(
            "parameter_invalid_integer",
            Some(name),
            "Invalid integer.",
        )),
    }
}

fn positive_amount(body: &Map<String, Value>) -> Result<i64, GwError> {
    match int_param(body, "amount")? {
        Some(a) if a >= 1 => Ok(a),
        Some(_) => Err(GwError::invalid(
            "amount_too_small",
            Some("amount"),
            "Amount must be at least 1.",
        )),
        None => Err(GwError::invalid(
            "parameter_missing",
            Some("amount"),
            "Missing required param: amount.",
        )),
    }
}

fn currency(body: &Map<String, Value>) -> Result<String, GwError> {
    match body.get("currency").and_then(Value::as_str) {
        Some(c) if c.len() == 3 && c.chars().all(|ch| ch.is_ascii_alphabetic()) => {
            Ok(c.to_ascii_lowercase())
        }
        Some(_) => Err(GwError::invalid(
            "parameter_invalid",
            Some("currency"),
            "Invalid currency.",
        )),
        None => Err(GwError::invalid(
            "parameter_missing",
            Some("currency"),
            "Missing required param: currency.",
        )),
    }
}

fn metadata(body: &Map<String, Value>) -> Result<Value, GwError> {
    match body.get("metadata") {
        None | Some(Value::Null) => Ok(json!({})),
        Some(Value::Object(map)) => Ok(Value::Object(
            map.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map_or_else(|| json!(v.to_string()), |s| json!(s)),
                    )
                })
                .collect(),
        )),
        Some(_) => Err(GwError::invalid(
            "parameter_invalid",
            Some("metadata"),
            "metadata must be an object.",
        )),
    }
}

impl Gateway {
    /// Builds the service from its configuration.
    pub fn new(config: &GatewayConfig) -> Arc<Self> {
        Arc::new(Gateway {
            config: config.clone(),
            state: Mutex::new(Ledger {
                endpoints: config.webhook_endpoints.clone(),
                ..Ledger::default()
            }),
            deliverer: Deliverer::new(&config.delivery, &config.webhook_faults),
        })
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The router (`/v1/...`), to be nested at `/gateway`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(
                "/v1/payment_intents",
                post(create_payment_intent).get(list_payment_intents),
            )
            .route("/v1/payment_intents/{id}", get(get_payment_intent))
            .route("/v1/refunds", post(create_refund).get(list_refunds))
            .route("/v1/refunds/{id}", get(get_refund))
            .route("/v1/payouts", post(create_payout).get(list_payouts))
            .route("/v1/payouts/{id}", get(get_payout))
            .route("/v1/events", get(list_events))
            .route(
                "/v1/webhook_endpoints",
                post(add_endpoint).get(list_endpoints),
            )
            .fallback(|| async {
                GwError {
                    status: StatusCode::NOT_FOUND,
                    kind: "invalid_request_error",
                    code: "resource_missing",
                    message: "Unrecognized request URL.".to_owned(),
                    param: None,
                }
            })
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(self),
                api_key_middleware,
            ))
            .with_state(Arc::clone(self))
    }

    /// Everything the gateway holds, including webhook deliveries.
    pub fn snapshot(&self) -> Value {
        let deliveries = serde_json::to_value(self.deliverer.records()).unwrap_or(Value::Null);
        let ledger = self.ledger();
        json!({
            "payment_intents": ledger.payment_intents.values().collect::<Vec<_>>(),
            "charges": ledger.charges.values().collect::<Vec<_>>(),
            "refunds": ledger.refunds.values().collect::<Vec<_>>(),
            "payouts": ledger.payouts.values().collect::<Vec<_>>(),
            "events": ledger.events,
            "webhook_endpoints": ledger.endpoints,
            "webhook_faults": self.deliverer.faults(),
            "deliveries": deliveries,
        })
    }

    /// Returns to the configured initial state.
    pub fn reset(&self) {
        *self.ledger() = Ledger {
            endpoints: self.config.webhook_endpoints.clone(),
            ..Ledger::default()
        };
        self.deliverer.reset(&self.config.webhook_faults);
    }

    /// Replaces the webhook delivery fault modes at runtime.
    pub fn set_webhook_faults(&self, faults: WebhookFaults) {
        self.deliverer.set_faults(faults);
    }

    /// The current webhook delivery fault modes.
    pub fn webhook_faults(&self) -> WebhookFaults {
        self.deliverer.faults()
    }

    /// Adds a webhook endpoint URL at runtime.
    pub fn add_webhook_endpoint(&self, url: &str) {
        let mut ledger = self.ledger();
        if !ledger.endpoints.iter().any(|u| u == url) {
            ledger.endpoints.push(url.to_owned());
        }
    }

    /// Every webhook delivery so far (oldest first), with attempts.
    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        self.deliverer.records()
    }

    /// Puts a succeeded payment intent for `order_id` (and its charge)
    /// straight into the state, as of unix time `created`, without an
    /// event: for seeding large data sets in-process. Returns its id.
    pub fn seed_payment_intent(
        &self,
        order_id: &str,
        amount: i64,
        currency: &str,
        created: i64,
    ) -> String {
        let intent_id = object_id("pi");
        let charge_id = object_id("ch");
        let currency = currency.to_ascii_lowercase();
        let metadata = json!({ "order_id": order_id });
        let charge = json!({
            "id": charge_id, "object": "charge", "amount": amount, "amount_captured": amount,
            "amount_refunded": 0, "refunded": false, "captured": true, "paid": true, "status": "succeeded",
            "currency": currency, "payment_intent": intent_id, "metadata": metadata, "created": created,
            "description": format!("Order {order_id}"), "refunds": { "object": "list", "data": [], "has_more": false },
        });
        let intent = json!({
            "id": intent_id, "object": "payment_intent", "amount": amount, "amount_received": amount,
            "currency": currency, "status": "succeeded", "latest_charge": charge_id, "metadata": metadata,
            "created": created, "description": format!("Order {order_id}"), "livemode": false,
            "payment_method": "pm_card_visa",
        });
        let mut ledger = self.ledger();
        ledger.charges.insert(charge_id, charge);
        ledger.payment_intents.insert(intent_id.clone(), intent);
        intent_id
    }

    /// Puts a succeeded refund of `amount` of a seeded payment intent into
    /// the state, without an event. `None` if the intent is unknown.
    pub fn seed_refund(&self, payment_intent: &str, amount: i64, created: i64) -> Option<String> {
        let mut ledger = self.ledger();
        let intent = ledger.payment_intents.get(payment_intent)?.clone();
        let charge_id = intent["latest_charge"].as_str()?.to_owned();
        let refund_id = object_id("re");
        let refund = json!({
            "id": refund_id, "object": "refund", "amount": amount, "charge": charge_id,
            "payment_intent": payment_intent, "currency": intent["currency"], "status": "succeeded",
            "reason": null, "metadata": {}, "created": created,
        });
        if let Some(charge) = ledger.charges.get_mut(&charge_id) {
            let refunded = charge["amount_refunded"].as_i64().unwrap_or(0) + amount;
            charge["amount_refunded"] = json!(refunded);
            charge["refunded"] = json!(refunded >= charge["amount"].as_i64().unwrap_or(0));
        }
        ledger.refunds.insert(refund_id.clone(), refund);
        Some(refund_id)
    }

    /// Records an event and sends it to every endpoint.
    fn emit(&self, ledger: &mut Ledger, kind: &str, object: &Value) {
        let created = unix_now();
        let event = json!({
            "id": object_id("evt"),
            "object": "event",
            "type": kind,
            "created": created,
            "livemode": false,
            "data": { "object": object },
        });
        ledger.events.push(event.clone());
        let body = bytes::Bytes::from(serde_json::to_vec(&event).unwrap_or_default());
        let event_id = event["id"].as_str().unwrap_or_default().to_owned();
        for url in &ledger.endpoints {
            let signature = stripe_signature(&self.config.webhook_secret, created, &body);
            self.deliverer.enqueue(Outbound {
                subscription: url.clone(),
                event_id: event_id.clone(),
                url: url.clone(),
                headers: vec![("Stripe-Signature".to_owned(), signature)],
                signature_header: Some("Stripe-Signature".to_owned()),
                body: body.clone(),
            });
        }
    }
}

/// Checks the bearer API key and replays `Idempotency-Key` responses.
async fn api_key_middleware(
    State(gw): State<Arc<Gateway>>,
    request: Request,
    next: Next,
) -> Response {
    if !gw.config.api_key.is_empty() {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if given.as_bytes() != gw.config.api_key.as_bytes() {
            return GwError {
                status: StatusCode::UNAUTHORIZED,
                kind: "invalid_request_error",
                code: "api_key_invalid",
                message: "Invalid API Key provided.".to_owned(),
                param: None,
            }
            .into_response();
        }
    }
    let key = (request.method() == axum::http::Method::POST)
        .then(|| {
            request
                .headers()
                .get("Idempotency-Key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .flatten()
        .map(|k| format!("{} {k}", request.uri().path()));
    let Some(key) = key else {
        return next.run(request).await;
    };
    if let Some((status, body)) = gw.ledger().idempotency.get(&key).cloned() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        let mut response = (status, Json(body)).into_response();
        response.headers_mut().insert(
            "Idempotent-Replayed",
            header::HeaderValue::from_static("true"),
        );
        return response;
    }
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_success() || status.is_client_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 * 1024 * 1024).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if let Ok(json) = serde_json::from_slice::<Value>(&bytes) {
        gw.ledger().idempotency.insert(key, (status.as_u16(), json));
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

async fn create_payment_intent(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Result<Response, GwError> {
    let body = parse_body(&headers, &body)?;
    let amount = positive_amount(&body)?;
    let currency = currency(&body)?;
    let metadata = metadata(&body)?;
    let created = unix_now();
    let intent_id = object_id("pi");
    let charge_id = object_id("ch");
    let description = body.get("description").cloned().unwrap_or(Value::Null);
    let charge = json!({
        "id": charge_id, "object": "charge", "amount": amount, "amount_captured": amount,
        "amount_refunded": 0, "refunded": false, "captured": true, "paid": true, "status": "succeeded",
        "currency": currency, "payment_intent": intent_id, "metadata": metadata, "created": created,
        "description": description, "refunds": { "object": "list", "data": [], "has_more": false },
    });
    let intent = json!({
        "id": intent_id, "object": "payment_intent", "amount": amount, "amount_received": amount,
        "currency": currency, "status": "succeeded", "latest_charge": charge_id, "metadata": metadata,
        "created": created, "description": description, "livemode": false,
        "payment_method": body.get("payment_method").cloned().unwrap_or(json!("pm_card_visa")),
    });
    let mut ledger = gw.ledger();
    ledger.charges.insert(charge_id, charge);
    ledger.payment_intents.insert(intent_id, intent.clone());
    gw.emit(&mut ledger, "payment_intent.succeeded", &intent);
    Ok((StatusCode::OK, Json(intent)).into_response())
}

async fn create_refund(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Result<Json<Value>, GwError> {
    let body = parse_body(&headers, &body)?;
    let requested = int_param(&body, "amount")?;
    let metadata = metadata(&body)?;
    let mut ledger = gw.ledger();
    let charge_id = if let Some(pi) = body.get("payment_intent").and_then(Value::as_str) {
        let intent = ledger
            .payment_intents
            .get(pi)
            .ok_or_else(|| GwError::missing(pi))?;
        intent["latest_charge"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    } else if let Some(ch) = body.get("charge").and_then(Value::as_str) {
        ch.to_owned()
    } else {
        return Err(GwError::invalid(
            "parameter_missing",
            Some("payment_intent"),
            "Give payment_intent or charge.",
        ));
    };
    let charge = ledger
        .charges
        .get(&charge_id)
        .ok_or_else(|| GwError::missing(&charge_id))?
        .clone();
    let total = charge["amount"].as_i64().unwrap_or(0);
    let refunded = charge["amount_refunded"].as_i64().unwrap_or(0);
    let remaining = total - refunded;
    if remaining <= 0 {
        return Err(GwError::invalid(
            "charge_already_refunded",
            None,
            format!("Charge {charge_id} has already been refunded."),
        ));
    }
    let amount = requested.unwrap_or(remaining);
    if amount < 1 || amount > remaining {
        return Err(GwError::invalid(
            "amount_too_large",
            Some("amount"),
            format!("Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining})."),
        ));
    }
    let refund = json!({
        "id": object_id("re"), "object": "refund", "amount": amount, "charge": charge_id,
        "payment_intent": charge["payment_intent"], "currency": charge["currency"], "status": "succeeded",
        "reason": body.get("reason").cloned().unwrap_or(Value::Null), "metadata": metadata, "created": unix_now(),
    });
    let mut charge = charge;
    charge["amount_refunded"] = json!(refunded + amount);
    charge["refunded"] = json!(refunded + amount == total);
    if let Some(list) = charge["refunds"]["data"].as_array_mut() {
        list.push(refund.clone());
    }
    ledger.charges.insert(charge_id, charge.clone());
    ledger.refunds.insert(
        refund["id"].as_str().unwrap_or_default().to_owned(),
        refund.clone(),
    );
    gw.emit(&mut ledger, "charge.refunded", &charge);
    Ok(Json(refund))
}

async fn create_payout(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Result<Json<Value>, GwError> {
    let body = parse_body(&headers, &body)?;
    let gross = positive_amount(&body)?;
    let currency = currency(&body)?;
    let metadata = metadata(&body)?;
    let fee = match int_param(&body, "fee")? {
        Some(f) if f >= 0 => f,
        Some(_) => {
            return Err(GwError::invalid(
                "parameter_invalid_integer",
                Some("fee"),
                "fee may not be negative.",
            ))
        }
        None => gross * gw.config.payout_fee_bps / 10_000 + gw.config.payout_fee_fixed,
    };
    if fee >= gross {
        return Err(GwError::invalid(
            "amount_too_small",
            Some("amount"),
            "The payout does not cover its fee.",
        ));
    }
    let created = unix_now();
    let payout = json!({
        "id": object_id("po"), "object": "payout", "amount": gross - fee, "gross_amount": gross, "fee": fee,
        "currency": currency, "status": "paid", "method": "standard", "type": "bank_account",
        "arrival_date": created, "created": created, "metadata": metadata,
        "description": body.get("description").cloned().unwrap_or(Value::Null),
        "payment_intents": body.get("payment_intents").cloned().unwrap_or(json!([])),
    });
    let mut ledger = gw.ledger();
    ledger.payouts.insert(
        payout["id"].as_str().unwrap_or_default().to_owned(),
        payout.clone(),
    );
    gw.emit(&mut ledger, "payout.paid", &payout);
    Ok(Json(payout))
}

fn list(items: Vec<Value>, url: &str) -> Json<Value> {
    Json(json!({ "object": "list", "url": url, "has_more": false, "data": items }))
}

async fn list_payment_intents(
    State(gw): State<Arc<Gateway>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, GwError> {
    let params = ListParams::parse(raw.as_deref())?;
    Ok(Json(params.page(
        &gw.ledger().payment_intents,
        "/v1/payment_intents",
    )?))
}

async fn list_refunds(
    State(gw): State<Arc<Gateway>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, GwError> {
    let params = ListParams::parse(raw.as_deref())?;
    Ok(Json(params.page(&gw.ledger().refunds, "/v1/refunds")?))
}

async fn list_payouts(
    State(gw): State<Arc<Gateway>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, GwError> {
    let params = ListParams::parse(raw.as_deref())?;
    Ok(Json(params.page(&gw.ledger().payouts, "/v1/payouts")?))
}

async fn list_events(State(gw): State<Arc<Gateway>>) -> Json<Value> {
    list(gw.ledger().events.clone(), "/v1/events")
}

async fn list_endpoints(State(gw): State<Arc<Gateway>>) -> Json<Value> {
    let items = gw
        .ledger()
        .endpoints
        .iter()
        .map(|u| json!({ "object": "webhook_endpoint", "url": u, "status": "enabled" }))
        .collect();
    list(items, "/v1/webhook_endpoints")
}

async fn add_endpoint(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Result<Json<Value>, GwError> {
    let body = parse_body(&headers, &body)?;
    let Some(url) = body
        .get("url")
        .and_then(Value::as_str)
        .filter(|u| reqwest::Url::parse(u).is_ok())
    else {
        return Err(GwError::invalid(
            "url_invalid",
            Some("url"),
            "Give an absolute url.",
        ));
    };
    gw.add_webhook_endpoint(url);
    Ok(Json(
        json!({ "object": "webhook_endpoint", "url": url, "status": "enabled" }),
    ))
}

/// The object ID from the path; an ID that is not UTF-8 names no object.
fn path_id(path: Result<Path<String>, PathRejection>) -> Result<String, GwError> {
    path.map(|Path(id)| id)
        .map_err(|_| GwError::missing("<not UTF-8>"))
}

fn find(map: &Objects, id: &str) -> Result<Json<Value>, GwError> {
    map.get(id)
        .map(|v| Json(v.clone()))
        .ok_or_else(|| GwError::missing(id))
}

async fn get_payment_intent(
    State(gw): State<Arc<Gateway>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, GwError> {
    find(&gw.ledger().payment_intents, &path_id(path)?)
}

async fn get_refund(
    State(gw): State<Arc<Gateway>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, GwError> {
    find(&gw.ledger().refunds, &path_id(path)?)
}

async fn get_payout(
    State(gw): State<Arc<Gateway>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, GwError> {
    find(&gw.ledger().payouts, &path_id(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hex_hmac_of_timestamp_dot_body() {
        // Checked with: printf '1700000000.{"id":"evt_1"}' | openssl dgst -sha256 -hmac whsec_sim
        let header = stripe_signature("whsec_sim", 1_700_000_000, br#"{"id":"evt_1"}"#);
        assert_eq!(
            header,
            "t=1700000000,v1=816036cf539f3288ccd19a12919d6aab6c2bf49ad6c5467a48db62bca2682772"
        );
    }

    #[test]
    fn form_bodies_nest_metadata() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().expect("valid"),
        );
        let body = parse_body(
            &headers,
            b"amount=1250&currency=GBP&metadata[order_id]=SO-1",
        )
        .expect("form");
        assert_eq!(int_param(&body, "amount").expect("int"), Some(1250));
        assert_eq!(body["metadata"]["order_id"], json!("SO-1"));
    }
}
