//! OrderCloud v1 simulator: OAuth tokens, orders and line items with totals
//! and inventory, buyer users, products, payments, webhooks signed with
//! `X-oc-hash`, and OrderCloud-format errors everywhere; built to the
//! "Simulator contract" of `sitecore-ordercloud-api.md` section 10.
//!
//! State lives in memory behind one mutex; handlers commit synchronously, so
//! a post-hook (sent by the webhook middleware after the handler returned a
//! 2xx) always describes committed state.

pub mod config;
pub mod delivery;
pub mod error;
pub mod list;

mod auth;
mod order_map;
mod orders;
mod users;
mod variants;
mod webhooks;

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::routing::{get, post, put};
use axum::Router;
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};

pub use config::{
    ApiClientConfig, OrderCloudConfig, ProductSeed, UserSeed, VariantSeed, WebhookRouteSeed,
    WebhookSeed,
};
pub use delivery::{DeliveryConfig, DeliveryRecord, WebhookFaults};
pub use error::OcError;
pub use webhooks::{oc_hash, webhook_date};

/// The OrderCloud simulator service.
pub struct OrderCloud {
    config: OrderCloudConfig,
    store: Mutex<Store>,
    deliverer: Arc<delivery::Deliverer>,
}

/// The line items of one order, in the order they were added (lists and
/// invoices keep the shopper's order).
#[derive(Debug, Default, Clone)]
struct LineItems(Vec<Value>);

impl LineItems {
    fn values(&self) -> impl Iterator<Item = &Value> {
        self.0.iter()
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut Value> {
        self.0.iter_mut()
    }

    fn position(&self, id: &str) -> Option<usize> {
        self.0.iter().position(|l| l["ID"].as_str() == Some(id))
    }

    fn get(&self, id: &str) -> Option<&Value> {
        self.position(id).map(|i| &self.0[i])
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut Value> {
        self.position(id).map(|i| &mut self.0[i])
    }

    fn contains_key(&self, id: &str) -> bool {
        self.position(id).is_some()
    }

    /// Appends `line` (or replaces the line with the same ID).
    fn insert(&mut self, line: Value) {
        match line["ID"].as_str().and_then(|id| self.position(id)) {
            Some(i) => self.0[i] = line,
            None => self.0.push(line),
        }
    }

    fn remove(&mut self, id: &str) -> Option<Value> {
        self.position(id).map(|i| self.0.remove(i))
    }
}

/// Everything the simulator holds.
#[derive(Debug, Default)]
struct Store {
    tokens: HashMap<String, auth::TokenInfo>,
    refresh_tokens: HashMap<String, auth::TokenInfo>,
    buyers: Vec<String>,
    /// Keyed by user ID (IDs are unique in the marketplace here).
    users: BTreeMap<String, Value>,
    passwords: HashMap<String, String>,
    products: BTreeMap<String, Value>,
    /// Variants per product ID, keyed by variant ID.
    variants: BTreeMap<String, BTreeMap<String, Value>>,
    orders: order_map::Orders,
    /// Line items per order ID, keyed by line item ID.
    line_items: HashMap<String, LineItems>,
    /// Payments per order ID, keyed by payment ID.
    payments: HashMap<String, BTreeMap<String, Value>>,
    /// Shipments keyed by ID, with the order each ships.
    shipments: BTreeMap<String, (String, Value)>,
    /// Full webhook configs (including write-only fields).
    webhooks: BTreeMap<String, Value>,
}

impl OrderCloud {
    /// Builds the service from its configuration (seeding users, products
    /// and webhooks).
    pub fn new(config: &OrderCloudConfig) -> Arc<Self> {
        let deliverer = delivery::Deliverer::new(&config.delivery, &config.webhook_faults);
        Arc::new(OrderCloud {
            config: config.clone(),
            store: Mutex::new(seed_store(config)),
            deliverer,
        })
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The router: `/oauth/token` and `/v1/...` (nest it at `/ordercloud`).
    pub fn router(self: &Arc<Self>) -> Router {
        let v1 = Router::new()
            .route(
                "/orders/{direction}",
                get(orders::list_orders).post(orders::create_order),
            )
            .route(
                "/orders/{direction}/{order_id}",
                get(orders::get_order).patch(orders::patch_order),
            )
            .route(
                "/orders/{direction}/{order_id}/submit",
                post(orders::submit),
            )
            .route(
                "/orders/{direction}/{order_id}/complete",
                post(orders::complete),
            )
            .route(
                "/orders/{direction}/{order_id}/cancel",
                post(orders::cancel),
            )
            .route("/orders/{direction}/{order_id}/ship", post(orders::ship))
            .route(
                "/orders/{direction}/{order_id}/billto",
                put(orders::put_billto).patch(orders::patch_billto),
            )
            .route(
                "/orders/{direction}/{order_id}/shipto",
                put(orders::put_shipto).patch(orders::patch_shipto),
            )
            .route(
                "/orders/{direction}/{order_id}/lineitems",
                get(orders::list_line_items).post(orders::create_line_item),
            )
            .route(
                "/orders/{direction}/{order_id}/lineitems/{line_id}",
                get(orders::get_line_item)
                    .patch(orders::patch_line_item)
                    .delete(orders::delete_line_item),
            )
            .route(
                "/orders/{direction}/{order_id}/lineitems/{line_id}/shipto",
                put(orders::put_line_shipto).patch(orders::patch_line_shipto),
            )
            .route(
                "/orders/{direction}/{order_id}/payments",
                get(orders::list_payments).post(orders::create_payment),
            )
            .route(
                "/orders/{direction}/{order_id}/payments/{payment_id}",
                get(orders::get_payment).patch(orders::patch_payment),
            )
            .route(
                "/orders/{direction}/{order_id}/payments/{payment_id}/transactions",
                post(orders::create_transaction),
            )
            .route(
                "/orders/{direction}/{order_id}/shipments",
                get(orders::list_order_shipments),
            )
            .route("/shipments", get(orders::list_shipments))
            .route("/buyers", get(users::list_buyers))
            .route(
                "/buyers/{buyer_id}/users",
                get(users::list_users).post(users::create_user),
            )
            .route(
                "/buyers/{buyer_id}/users/{user_id}",
                get(users::get_user)
                    .patch(users::patch_user)
                    .put(users::put_user),
            )
            .route("/buyerusers", get(users::list_all_users))
            .route(
                "/products",
                get(users::list_products).post(users::create_product),
            )
            .route(
                "/products/{product_id}",
                get(users::get_product)
                    .patch(users::patch_product)
                    .put(users::put_product),
            )
            .route(
                "/products/{product_id}/variants",
                get(variants::list_variants),
            )
            .route(
                "/products/{product_id}/variants/{variant_id}",
                get(variants::get_variant).patch(variants::patch_variant),
            )
            .route(
                "/webhooks",
                get(webhooks::list_webhooks).post(webhooks::create_webhook),
            )
            .route(
                "/webhooks/{webhook_id}",
                get(webhooks::get_webhook)
                    .put(webhooks::put_webhook)
                    .patch(webhooks::patch_webhook)
                    .delete(webhooks::delete_webhook),
            )
            .fallback(error::route_not_found)
            .method_not_allowed_fallback(error::method_not_allowed)
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(self),
                webhooks::hook_middleware,
            ))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(self),
                auth::bearer_middleware,
            ))
            .with_state(Arc::clone(self));
        Router::new()
            .route("/oauth/token", post(auth::token))
            .with_state(Arc::clone(self))
            .nest("/v1", v1)
            .fallback(error::route_not_found)
            .method_not_allowed_fallback(error::method_not_allowed)
    }

    /// Everything the simulator holds, as JSON: tokens (count only), users,
    /// products, orders with line items and payments, shipments, webhooks
    /// and every webhook delivery with its attempts and responses.
    pub fn snapshot(&self) -> Value {
        let deliveries = serde_json::to_value(self.deliverer.records()).unwrap_or(Value::Null);
        let store = self.store();
        let orders: Vec<Value> = store
            .orders
            .values()
            .map(|order| {
                let id = order["ID"].as_str().unwrap_or_default();
                json!({
                    "Order": order,
                    "LineItems": store.line_items.get(id).map(|m| m.values().cloned().collect::<Vec<_>>()).unwrap_or_default(),
                    "Payments": store.payments.get(id).map(|m| m.values().cloned().collect::<Vec<_>>()).unwrap_or_default(),
                })
            })
            .collect();
        json!({
            "ActiveTokens": store.tokens.len(),
            "Buyers": store.buyers,
            "Users": store.users.values().collect::<Vec<_>>(),
            "Products": store.products.values().collect::<Vec<_>>(),
            "Variants": store.variants,
            "Orders": orders,
            "Shipments": store.shipments.values().map(|(_, s)| s).collect::<Vec<_>>(),
            "Webhooks": store.webhooks.values().map(webhooks::public_view).collect::<Vec<_>>(),
            "WebhookFaults": self.deliverer.faults(),
            "Deliveries": deliveries,
        })
    }

    /// Returns to the configured initial state: seeds restored, tokens,
    /// orders and deliveries forgotten, delivery faults back to the config.
    pub fn reset(&self) {
        *self.store() = seed_store(&self.config);
        self.deliverer.reset(&self.config.webhook_faults);
    }

    /// Puts orders straight into the state, each as the API returns it
    /// (`ID`, `Status`, `IsSubmitted`, `DateSubmitted`, `Total`, …): for
    /// seeding large data sets in-process. An order with an existing ID
    /// replaces it; no webhook is sent.
    pub fn seed_orders(&self, orders: Vec<Value>) {
        let mut store = self.store();
        for order in orders {
            if let Some(id) = order["ID"].as_str().map(str::to_owned) {
                store.orders.insert(id, order);
            }
        }
    }

    /// Replaces the webhook delivery fault modes at runtime.
    pub fn set_webhook_faults(&self, faults: WebhookFaults) {
        self.deliverer.set_faults(faults);
    }

    /// The current webhook delivery fault modes.
    pub fn webhook_faults(&self) -> WebhookFaults {
        self.deliverer.faults()
    }

    /// Every webhook delivery so far (oldest first), with attempts.
    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        self.deliverer.records()
    }

    /// Adds (or replaces) a webhook at runtime, as if configured; an empty
    /// `seed.id` becomes `webhook-<n>`. Returns the webhook's ID.
    pub fn add_webhook(&self, seed: &WebhookSeed) -> String {
        let mut store = self.store();
        let id = if seed.id.is_empty() {
            format!("webhook-{}", store.webhooks.len() + 1)
        } else {
            seed.id.clone()
        };
        store
            .webhooks
            .insert(id.clone(), webhooks::from_seed(&id, seed));
        id
    }

    /// Invalidates every access and refresh token (clients must
    /// re-authenticate); returns how many access tokens were live.
    pub fn expire_tokens(&self) -> usize {
        let mut store = self.store();
        let expired = store.tokens.len();
        store.tokens.clear();
        store.refresh_tokens.clear();
        expired
    }
}

fn seed_store(config: &OrderCloudConfig) -> Store {
    let mut store = Store {
        buyers: config.buyers.clone(),
        ..Store::default()
    };
    let now = now_text();
    for seed in &config.users {
        if !store.buyers.contains(&seed.buyer_id) {
            store.buyers.push(seed.buyer_id.clone());
        }
        let user = json!({
            "ID": seed.id,
            "CompanyID": seed.buyer_id,
            "Username": seed.username,
            "Password": null,
            "FirstName": seed.first_name,
            "LastName": seed.last_name,
            "Email": seed.email,
            "Phone": null,
            "TermsAccepted": null,
            "Active": true,
            "xp": null,
            "AvailableRoles": null,
            "Locale": null,
            "DateCreated": now,
            "LastActive": null,
            "PasswordLastSetDate": now,
        });
        store
            .passwords
            .insert(seed.id.clone(), seed.password.clone());
        store
            .users
            .insert(seed.id.clone(), users::normalize_user(user));
    }
    for seed in &config.products {
        let product = users::product_from_seed(seed, &now);
        store.products.insert(seed.id.clone(), product);
        if !seed.variants.is_empty() {
            let variants = seed
                .variants
                .iter()
                .map(|v| (v.id.clone(), variants::variant_from_seed(v, &now)))
                .collect();
            store.variants.insert(seed.id.clone(), variants);
        }
    }
    for (i, seed) in config.webhooks.iter().enumerate() {
        let id = if seed.id.is_empty() {
            format!("webhook-{}", i + 1)
        } else {
            seed.id.clone()
        };
        store
            .webhooks
            .insert(id.clone(), webhooks::from_seed(&id, seed));
    }
    store
}

/// Now as OrderCloud writes dates: `2021-02-23T20:39:03.173+00:00`.
fn now_text() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3f+00:00")
        .to_string()
}

/// A new 22-character ID like OrderCloud's generated ones.
fn generated_id() -> String {
    use base64::Engine as _;
    let bytes = uuid::Uuid::new_v4().into_bytes();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(bytes)
        .replace(['-', '_'], "x")
}

/// Validates a client-supplied ID (`A-Z a-z 0-9 - _`, at most 100).
fn check_id(object_type: &str, id: &str) -> Result<(), OcError> {
    let ok = !id.is_empty()
        && id.len() <= 100
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(OcError::validation(
            "ID",
            format!(
                "{object_type} ID '{id}' may only contain A-Z, a-z, 0-9, '-' and '_' (max 100)."
            ),
        ))
    }
}

/// The ID from a create body, or a generated one.
fn id_from_body(object_type: &str, body: &Value) -> Result<String, OcError> {
    match body.get("ID") {
        None | Some(Value::Null) => Ok(generated_id()),
        Some(Value::String(id)) => {
            check_id(object_type, id)?;
            Ok(id.clone())
        }
        Some(_) => Err(OcError::validation("ID", "ID must be a string.")),
    }
}

/// Decimal value of a JSON number (or numeric string); `None` for null.
fn decimal_of(value: &Value) -> Option<Decimal> {
    match value {
        Value::Number(n) => {
            let text = n.to_string();
            Decimal::from_str(&text)
                .ok()
                .or_else(|| Decimal::from_scientific(&text).ok())
        }
        Value::String(s) => Decimal::from_str(s.trim()).ok(),
        _ => None,
    }
}

/// A decimal as a JSON number, exactly (`10.50` → `10.5`).
fn decimal_value(d: Decimal) -> Value {
    serde_json::from_str(&d.normalize().to_string()).unwrap_or(Value::Null)
}

/// The largest money amount accepted in a request, so that quantity ×
/// price and order totals always fit a decimal (OrderCloud's own limit is
/// undocumented).
const MAX_MONEY: i64 = 1_000_000_000_000_000;

/// The largest `Quantity` / `QuantityAvailable`: OrderCloud's SDKs type them
/// as 32-bit integers.
const MAX_QUANTITY: i64 = i32::MAX as i64;

/// Reads a money field: absent/null → `None`, number → value, else a 400.
fn money_field(body: &Value, field: &str) -> Result<Option<Decimal>, OcError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(_)) => match decimal_of(v) {
            Some(amount) if amount.abs() <= Decimal::from(MAX_MONEY) => Ok(Some(amount)),
            Some(_) => Err(OcError::validation(
                field,
                format!("{field} is out of range (at most {MAX_MONEY} either way)."),
            )),
            None => Err(OcError::validation(
                field,
                format!("{field} is not a valid number."),
            )),
        },
        Some(_) => Err(OcError::validation(
            field,
            format!("{field} must be a number."),
        )),
    }
}

/// Deep-merges `patch` into `target` (objects merge recursively; anything
/// else replaces).
fn deep_merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        deep_merge(existing, v)
                    }
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// Requires a JSON object body.
fn object_body(body: &Value) -> Result<&Map<String, Value>, OcError> {
    body.as_object()
        .ok_or_else(|| OcError::invalid_body("Request body must be a JSON object."))
}

/// Validates an `xp` value (object or null, at most 8000 bytes).
fn check_xp(xp: &Value) -> Result<(), OcError> {
    if !(xp.is_object() || xp.is_null()) {
        return Err(OcError::validation("xp", "xp must be an object."));
    }
    if xp.to_string().len() > 8000 {
        return Err(OcError::validation("xp", "xp may not exceed 8000 bytes."));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_merge_keeps_unsent_keys() {
        let mut target = json!({"a": {"b": 1, "c": {"d": 2}}, "e": 3});
        deep_merge(&mut target, &json!({"a": {"c": {"f": 4}}, "e": null}));
        assert_eq!(
            target,
            json!({"a": {"b": 1, "c": {"d": 2, "f": 4}}, "e": null})
        );
    }

    #[test]
    fn decimals_round_trip_exactly() {
        let d = decimal_of(&json!(0.1)).expect("number") + decimal_of(&json!(0.2)).expect("number");
        assert_eq!(decimal_value(d).to_string(), "0.3");
        assert_eq!(decimal_value(Decimal::new(1050, 2)).to_string(), "10.5");
        assert_eq!(decimal_value(Decimal::ZERO).to_string(), "0");
        assert_eq!(decimal_of(&json!("2.25")), Some(Decimal::new(225, 2)));
        assert_eq!(decimal_of(&Value::Null), None);
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_id("Order", "SO-1_a").is_ok());
        assert!(check_id("Order", "bad id").is_err());
        assert!(check_id("Order", &"x".repeat(101)).is_err());
        let generated = generated_id();
        assert_eq!(generated.len(), 22);
        assert!(check_id("Order", &generated).is_ok());
    }

    #[test]
    fn default_config_seeds_catalogue_and_user() {
        let store = seed_store(&OrderCloudConfig::default());
        assert!(store.products.contains_key("WID1"));
        assert!(store.products.contains_key("OC-GIFT"));
        assert_eq!(store.products["WID3"]["xp"]["TaxClass"], "zero");
        assert_eq!(store.users["buyer01"]["Password"], Value::Null);
        assert_eq!(store.passwords["buyer01"], "sim-password");
    }
}
