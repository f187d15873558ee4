//! Configuration of the OrderCloud simulator, with seeded defaults so an
//! empty section gives a usable marketplace:
//!
//! - API client `ledgerbridge-sim-client`, secret `sim-secret` (default
//!   context user `buyer01`); a public storefront client
//!   `ledgerbridge-storefront` without a secret.
//! - Buyer `BUYER1` with user `buyer01` (username `buyer01`, password
//!   `sim-password`).
//! - Products `WID1`..`WID6` (codes the KashFlow simulator also knows) and
//!   `OC-GIFT`, `OC-SAMPLE` (unknown to KashFlow), each with `xp.TaxClass`
//!   `standard`, `reduced` or `zero` and a price.
//! - No webhooks (add them under `webhooks`, or through `POST /v1/webhooks`).

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use super::delivery::{DeliveryConfig, WebhookFaults};

/// Configuration of the OrderCloud simulator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrderCloudConfig {
    /// API clients that may obtain tokens.
    pub clients: Vec<ApiClientConfig>,
    /// `expires_in` of access tokens, in seconds (default 35999, as for a
    /// 600-minute `AccessTokenDuration`). Small values test expiry.
    pub access_token_seconds: u64,
    /// Lifetime of refresh tokens in seconds; 0 (default) issues none.
    pub refresh_token_seconds: u64,
    /// Buyer organizations (IDs).
    pub buyers: Vec<String>,
    /// Buyer users present at start-up.
    pub users: Vec<UserSeed>,
    /// Products present at start-up.
    pub products: Vec<ProductSeed>,
    /// Webhooks present at start-up (e.g. the order-submit hook pointing at the engine).
    pub webhooks: Vec<WebhookSeed>,
    /// Accept `http://` webhook URLs (default true; real OrderCloud demands https).
    pub allow_http_webhooks: bool,
    /// Retry policy for webhook deliveries.
    pub delivery: DeliveryConfig,
    /// Delivery fault modes at start-up (changeable at runtime).
    pub webhook_faults: WebhookFaults,
}

impl Default for OrderCloudConfig {
    fn default() -> Self {
        OrderCloudConfig {
            clients: vec![
                ApiClientConfig {
                    id: "ledgerbridge-sim-client".to_owned(),
                    secret: Some("sim-secret".to_owned()),
                    default_context_username: Some("buyer01".to_owned()),
                },
                ApiClientConfig {
                    id: "ledgerbridge-storefront".to_owned(),
                    secret: None,
                    default_context_username: None,
                },
            ],
            access_token_seconds: 35_999,
            refresh_token_seconds: 0,
            buyers: vec!["BUYER1".to_owned()],
            users: vec![UserSeed::default()],
            products: default_products(),
            webhooks: Vec::new(),
            allow_http_webhooks: true,
            delivery: DeliveryConfig::default(),
            webhook_faults: WebhookFaults::default(),
        }
    }
}

/// One API client.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiClientConfig {
    /// `client_id`.
    pub id: String,
    /// `client_secret`; required by `client_credentials`, and checked on
    /// other grants when present.
    #[serde(default)]
    pub secret: Option<String>,
    /// Username a `client_credentials` token acts as.
    #[serde(default)]
    pub default_context_username: Option<String>,
}

impl fmt::Debug for ApiClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClientConfig")
            .field("id", &self.id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("default_context_username", &self.default_context_username)
            .finish()
    }
}

/// A buyer user present at start-up.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserSeed {
    /// Buyer ID.
    pub buyer_id: String,
    /// User ID.
    pub id: String,
    /// Username (unique in the marketplace).
    pub username: String,
    /// Password for the `password` grant.
    pub password: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Email.
    pub email: String,
}

impl Default for UserSeed {
    fn default() -> Self {
        UserSeed {
            buyer_id: "BUYER1".to_owned(),
            id: "buyer01".to_owned(),
            username: "buyer01".to_owned(),
            password: "sim-password".to_owned(),
            first_name: "Bea".to_owned(),
            last_name: "Buyer".to_owned(),
            email: "buyer01@example.com".to_owned(),
        }
    }
}

impl fmt::Debug for UserSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserSeed")
            .field("buyer_id", &self.buyer_id)
            .field("id", &self.id)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A product present at start-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductSeed {
    /// Product ID (the KashFlow product code for products KashFlow knows).
    pub id: String,
    /// Name.
    pub name: String,
    /// Unit price (used when a line item gives no `UnitPrice`).
    pub price: Decimal,
    /// `xp.TaxClass`: `standard`, `reduced` or `zero`.
    #[serde(default = "standard")]
    pub tax_class: String,
    /// `Inventory.Enabled`.
    #[serde(default = "yes")]
    pub inventory_enabled: bool,
    /// `Inventory.QuantityAvailable`.
    #[serde(default = "plenty")]
    pub quantity_available: i64,
    /// `Inventory.OrderCanExceed`.
    #[serde(default)]
    pub order_can_exceed: bool,
    /// `Inventory.VariantLevelTracking`: stock is kept per variant.
    #[serde(default)]
    pub variant_level_tracking: bool,
    /// Variants (`GET /products/{id}/variants`); real OrderCloud generates
    /// them from specs, the simulator takes them as given.
    #[serde(default)]
    pub variants: Vec<VariantSeed>,
}

/// A product variant present at start-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantSeed {
    /// Variant ID.
    pub id: String,
    /// Name.
    pub name: String,
    /// `Inventory.QuantityAvailable` of the variant.
    #[serde(default)]
    pub quantity_available: i64,
}

fn standard() -> String {
    "standard".to_owned()
}
fn yes() -> bool {
    true
}
fn plenty() -> i64 {
    1_000_000
}

/// The default catalogue: `WID1`..`WID6` (known to KashFlow) and `OC-GIFT`,
/// `OC-SAMPLE` (unknown to KashFlow).
pub fn default_products() -> Vec<ProductSeed> {
    let rows: [(&str, &str, i64, &str); 8] = [
        ("WID1", "Widget One", 1000, "standard"),
        ("WID2", "Widget Two", 2550, "standard"),
        ("WID3", "Children's Widget", 799, "zero"),
        ("WID4", "Widget Book", 1250, "zero"),
        ("WID5", "Energy-Saving Widget", 4999, "reduced"),
        ("WID6", "Widget Deluxe", 12000, "standard"),
        ("OC-GIFT", "Gift Wrapping", 350, "standard"),
        ("OC-SAMPLE", "Free-ish Sample", 100, "reduced"),
    ];
    rows.iter()
        .map(|(id, name, pence, class)| ProductSeed {
            id: (*id).to_owned(),
            name: (*name).to_owned(),
            price: Decimal::new(*pence, 2),
            tax_class: (*class).to_owned(),
            inventory_enabled: true,
            quantity_available: plenty(),
            order_can_exceed: false,
            variant_level_tracking: false,
            variants: Vec::new(),
        })
        .collect()
}

/// A webhook present at start-up (the API's Webhook model, snake_case).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSeed {
    /// ID (generated when empty).
    pub id: String,
    /// Name.
    pub name: String,
    /// Target URL.
    pub url: String,
    /// `HashKey` for `X-oc-hash` (none: unsigned).
    pub hash_key: Option<String>,
    /// `WebhookRoutes`: route template and verb.
    pub routes: Vec<WebhookRouteSeed>,
    /// `ConfigData` copied into every payload.
    pub config_data: Value,
    /// `ApiClientIDs`; empty means every client (a simulator leniency).
    pub api_client_ids: Vec<String>,
    /// `CustomAuthHeaderName`.
    pub custom_auth_header_name: Option<String>,
    /// `CustomAuthHeaderValue`.
    pub custom_auth_header_value: Option<String>,
}

impl Default for WebhookSeed {
    fn default() -> Self {
        WebhookSeed {
            id: String::new(),
            name: "webhook".to_owned(),
            url: String::new(),
            hash_key: None,
            routes: Vec::new(),
            config_data: Value::Null,
            api_client_ids: Vec::new(),
            custom_auth_header_name: None,
            custom_auth_header_value: None,
        }
    }
}

impl WebhookSeed {
    /// The usual integration hook: order submit and complete, buyer-user
    /// saves, payment creation and payment transactions, posted to `url` and signed with `hash_key`.
    pub fn integration(id: &str, url: &str, hash_key: &str) -> WebhookSeed {
        let route = |route: &str, verb: &str| WebhookRouteSeed {
            route: route.to_owned(),
            verb: verb.to_owned(),
        };
        WebhookSeed {
            id: id.to_owned(),
            name: "Ledgerbridge".to_owned(),
            url: url.to_owned(),
            hash_key: Some(hash_key.to_owned()),
            routes: vec![
                route("v1/orders/{direction}/{orderID}/submit", "POST"),
                route("v1/orders/{direction}/{orderID}/complete", "POST"),
                route("v1/buyers/{buyerID}/users", "POST"),
                route("v1/buyers/{buyerID}/users/{userID}", "PATCH"),
                route("v1/buyers/{buyerID}/users/{userID}", "PUT"),
                route("v1/orders/{direction}/{orderID}/payments", "POST"),
                route(
                    "v1/orders/{direction}/{orderID}/payments/{paymentID}",
                    "PATCH",
                ),
                route(
                    "v1/orders/{direction}/{orderID}/payments/{paymentID}/transactions",
                    "POST",
                ),
            ],
            ..WebhookSeed::default()
        }
    }
}

impl fmt::Debug for WebhookSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSeed")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("routes", &self.routes)
            .field("hash_key", &self.hash_key.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// One `WebhookRoutes` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookRouteSeed {
    /// Route template, e.g. `v1/orders/{direction}/{orderID}/submit`.
    pub route: String,
    /// Verb, e.g. `POST`.
    pub verb: String,
}
