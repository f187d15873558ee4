//! Sitecore OrderCloud v1: client-credentials token and typed operations.
//!
//! The token comes from `{base}/oauth/token` (form-encoded) and is renewed
//! 30 seconds before it expires, or once when the API answers 401; one
//! renewal at a time (callers that need a new token while one is being
//! fetched wait for it). Lists that the engine needs whole (line items,
//! users, products, payments) are read page by page with `pageSize=100`.

mod config;
pub(crate) mod models;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use ledgerbridge_core::{ErrorClass, Failure, Secret};
use reqwest::Url;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::time::Instant;

pub use config::OrderCloudConfig;
pub use models::{
    Address, Inventory, LineItem, LineItemProduct, LineItemSpec, LineItemVariant, ListPage, Meta,
    Order, Payment, PaymentTransaction, Product, User, Variant, VariantInventory, Webhook,
    WebhookRoute,
};

use crate::auth::{Fresh, TokenCache};
use crate::delivery::Target;
use crate::error::ConfigError;
use crate::transport::{revoked_again, with_query, Answer, Body, Transport};
use models::TokenResponse;

const SYSTEM: &str = "ordercloud";
const NAME: &str = "OrderCloud";
/// The largest page OrderCloud serves.
const PAGE_SIZE: u64 = 100;
/// Upper bound on pages read by one list call (a loop guard).
const MAX_PAGES: u64 = 10_000;
/// Renew this long before the token expires.
const RENEW_MARGIN: Duration = Duration::from_secs(30);
/// Assumed lifetime when the token answer has no `expires_in`.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(600);

/// Whose orders to look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Orders placed with us (the marketplace owner's view).
    Incoming,
    /// Orders we placed (a buyer's view).
    Outgoing,
    /// Every order (marketplace owner).
    All,
}

impl Direction {
    /// The path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Incoming => "Incoming",
            Direction::Outgoing => "Outgoing",
            Direction::All => "All",
        }
    }
}

/// Search, sort, paging and filters of a list call.
///
/// Filters are `(property, expression)` pairs sent as query parameters:
/// `("Status", "Open|Completed")`, `("xp.Invoiced", "!*")`,
/// `("DateSubmitted", ">2025-01-01")`; repeating a property ANDs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Free-text search.
    pub search: Option<String>,
    /// Comma-separated fields to search.
    pub search_on: Option<String>,
    /// Comma-separated sort fields; `!` prefix for descending.
    pub sort_by: Option<String>,
    /// 1-based page (single-page calls only).
    pub page: Option<u64>,
    /// Page size, at most 100 (single-page calls only).
    pub page_size: Option<u64>,
    /// Property filters.
    pub filters: Vec<(String, String)>,
}

impl ListOptions {
    /// Adds a filter, e.g. `.filter("xp.Invoiced", "!*")`.
    pub fn filter(mut self, property: impl Into<String>, expression: impl Into<String>) -> Self {
        self.filters.push((property.into(), expression.into()));
        self
    }

    fn apply(&self, url: &Url) -> Url {
        let mut url = url.clone();
        {
            let mut query = url.query_pairs_mut();
            if let Some(v) = &self.search {
                query.append_pair("search", v);
            }
            if let Some(v) = &self.search_on {
                query.append_pair("searchOn", v);
            }
            if let Some(v) = &self.sort_by {
                query.append_pair("sortBy", v);
            }
            if let Some(v) = self.page {
                query.append_pair("page", &v.to_string());
            }
            if let Some(v) = self.page_size {
                query.append_pair("pageSize", &v.to_string());
            }
            for (property, expression) in &self.filters {
                query.append_pair(property, expression);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        url
    }
}

/// A client of one OrderCloud marketplace. Cheap to clone: clones share
/// the token, the connection pool and the target's limiter.
#[derive(Clone)]
pub struct OrderCloudClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for OrderCloudClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderCloudClient")
            .field("target", self.inner.transport.target())
            .field("client_id", &self.inner.client_id)
            .finish_non_exhaustive()
    }
}

struct Inner {
    transport: Transport,
    client_id: String,
    client_secret: Secret,
    scope: String,
    token: TokenCache,
}

impl OrderCloudClient {
    /// A client for the connection named `connection` (metrics label).
    pub fn new(connection: &str, config: OrderCloudConfig) -> Result<Self, ConfigError> {
        if config.client_id.trim().is_empty() {
            return Err(ConfigError::Missing("client_id"));
        }
        let transport = Transport::new(SYSTEM, connection, &config.base_url, &config.limits)?;
        Ok(OrderCloudClient {
            inner: Arc::new(Inner {
                transport,
                client_id: config.client_id,
                client_secret: config.client_secret,
                scope: config.scope,
                token: TokenCache::default(),
            }),
        })
    }

    /// The shared limiter of this connection.
    pub fn target(&self) -> &Target {
        self.inner.transport.target()
    }

    /// How many tokens were fetched since the client was built.
    pub fn token_count(&self) -> u64 {
        self.inner.token.fetch_count()
    }

    /// Forgets the current token; the next call fetches a new one.
    pub async fn invalidate_token(&self) {
        self.inner.token.invalidate().await;
    }

    // ----- orders -----

    /// `GET /orders/{direction}/{id}`; `None` if unknown.
    pub async fn get_order(
        &self,
        direction: Direction,
        id: &str,
    ) -> Result<Option<Order>, Failure> {
        self.get_optional(self.url(&["orders", direction.as_str(), id]))
            .await
    }

    /// One page of `GET /orders/{direction}`. Page with `options.page`, or
    /// better (OrderCloud advises against deep pages) sort by `ID` and
    /// filter `ID=>{last id}`. Submitted orders come from a search index
    /// that can lag writes.
    pub async fn list_orders(
        &self,
        direction: Direction,
        options: &ListOptions,
    ) -> Result<ListPage<Order>, Failure> {
        let url = options.apply(&self.url(&["orders", direction.as_str()]));
        self.get_json(url).await
    }

    /// All line items of an order, every page.
    pub async fn list_line_items(
        &self,
        direction: Direction,
        order_id: &str,
    ) -> Result<Vec<LineItem>, Failure> {
        let url = self.url(&["orders", direction.as_str(), order_id, "lineitems"]);
        self.list_all(url).await
    }

    /// `PATCH /orders/{direction}/{id}` with a partial order, e.g.
    /// `{"xp": {"InvoiceNumber": 1042}}` (xp is merged).
    pub async fn patch_order(
        &self,
        direction: Direction,
        id: &str,
        patch: &Value,
    ) -> Result<Order, Failure> {
        let url = self.url(&["orders", direction.as_str(), id]);
        self.send_json(Method::PATCH, url, patch).await
    }

    /// All payments of an order, every page.
    pub async fn list_payments(
        &self,
        direction: Direction,
        order_id: &str,
    ) -> Result<Vec<Payment>, Failure> {
        let url = self.url(&["orders", direction.as_str(), order_id, "payments"]);
        self.list_all(url).await
    }

    // ----- users -----

    /// All users of a buyer matching `options` (its paging is ignored).
    pub async fn list_users(
        &self,
        buyer_id: &str,
        options: &ListOptions,
    ) -> Result<Vec<User>, Failure> {
        let url = options.apply(&self.url(&["buyers", buyer_id, "users"]));
        self.list_all(url).await
    }

    /// `GET /buyers/{buyer}/users/{id}`; `None` if unknown.
    pub async fn get_user(&self, buyer_id: &str, user_id: &str) -> Result<Option<User>, Failure> {
        self.get_optional(self.url(&["buyers", buyer_id, "users", user_id]))
            .await
    }

    /// `POST /buyers/{buyer}/users`. An existing `ID` is a `Conflict`; a
    /// taken user name a validation failure (`User.UsernameMustBeUnique`).
    pub async fn create_user(&self, buyer_id: &str, user: &User) -> Result<User, Failure> {
        let url = self.url(&["buyers", buyer_id, "users"]);
        self.send_json(Method::POST, url, user).await
    }

    /// `PATCH /buyers/{buyer}/users/{id}` with a partial user.
    pub async fn patch_user(
        &self,
        buyer_id: &str,
        user_id: &str,
        patch: &Value,
    ) -> Result<User, Failure> {
        let url = self.url(&["buyers", buyer_id, "users", user_id]);
        self.send_json(Method::PATCH, url, patch).await
    }

    // ----- products -----

    /// All products matching `options` (its paging is ignored).
    pub async fn list_products(&self, options: &ListOptions) -> Result<Vec<Product>, Failure> {
        let url = options.apply(&self.url(&["products"]));
        self.list_all(url).await
    }

    /// `GET /products/{id}`; `None` if unknown.
    pub async fn get_product(&self, id: &str) -> Result<Option<Product>, Failure> {
        self.get_optional(self.url(&["products", id])).await
    }

    /// Sets a product's `Inventory.QuantityAvailable`. Fails with
    /// `Product.InventoryDisabled` (validation) if tracking is off.
    pub async fn patch_product_inventory(
        &self,
        product_id: &str,
        quantity_available: i64,
    ) -> Result<Product, Failure> {
        let url = self.url(&["products", product_id]);
        let patch = json!({"Inventory": {"QuantityAvailable": quantity_available}});
        self.send_json(Method::PATCH, url, &patch).await
    }

    /// Every variant of a product, all pages.
    pub async fn list_variants(&self, product_id: &str) -> Result<Vec<Variant>, Failure> {
        self.list_all(self.url(&["products", product_id, "variants"]))
            .await
    }

    /// `GET /products/{productID}/variants/{variantID}`; `None` if unknown.
    pub async fn get_variant(
        &self,
        product_id: &str,
        variant_id: &str,
    ) -> Result<Option<Variant>, Failure> {
        self.get_optional(self.url(&["products", product_id, "variants", variant_id]))
            .await
    }

    /// Sets a variant's `Inventory.QuantityAvailable`.
    pub async fn patch_variant_inventory(
        &self,
        product_id: &str,
        variant_id: &str,
        quantity_available: i64,
    ) -> Result<Variant, Failure> {
        let url = self.url(&["products", product_id, "variants", variant_id]);
        let patch = json!({"Inventory": {"QuantityAvailable": quantity_available}});
        self.send_json(Method::PATCH, url, &patch).await
    }

    // ----- webhooks -----

    /// `POST /webhooks`. An existing `ID` is a `Conflict`.
    pub async fn create_webhook(&self, webhook: &Webhook) -> Result<Webhook, Failure> {
        self.send_json(Method::POST, self.url(&["webhooks"]), webhook)
            .await
    }

    // ----- plumbing -----

    fn url(&self, segments: &[&str]) -> Url {
        let mut all = Vec::with_capacity(segments.len() + 1);
        all.push("v1");
        all.extend_from_slice(segments);
        self.inner.transport.url(&all)
    }

    async fn get_json<T: DeserializeOwned>(&self, url: Url) -> Result<T, Failure> {
        self.call(Method::GET, url, Body::Empty).await?.json(NAME)
    }

    async fn get_optional<T: DeserializeOwned>(&self, url: Url) -> Result<Option<T>, Failure> {
        match self.call(Method::GET, url, Body::Empty).await {
            Ok(answer) => answer.json(NAME).map(Some),
            Err(failure) if failure.class == ErrorClass::NotFound => Ok(None),
            Err(failure) => Err(failure),
        }
    }

    async fn send_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: &B,
    ) -> Result<T, Failure> {
        self.call(method, url, Body::json(body)?).await?.json(NAME)
    }

    /// Every page of a list, `pageSize=100`, until `Meta.TotalPages`.
    async fn list_all<T: DeserializeOwned>(&self, url: Url) -> Result<Vec<T>, Failure> {
        let mut items = Vec::new();
        for page_number in 1..=MAX_PAGES {
            let page_url = with_query(
                &url,
                &[
                    ("page", page_number.to_string()),
                    ("pageSize", PAGE_SIZE.to_string()),
                ],
            );
            let page: ListPage<T> = self.get_json(page_url).await?;
            let count = page.items.len();
            items.extend(page.items);
            let total_pages = page.meta.total_pages.unwrap_or(0);
            if count == 0 || page_number >= total_pages {
                return Ok(items);
            }
        }
        Err(Failure::new(
            ErrorClass::Unknown,
            format!(
                "{NAME}: list {} has more than {MAX_PAGES} pages",
                url.path()
            ),
        ))
    }

    /// One authenticated call; on a 401 renews the token once and sends
    /// the request again.
    async fn call(&self, method: Method, url: Url, body: Body) -> Result<Answer, Failure> {
        let (token, generation) = self.token(None).await?;
        let answer = self.send(&method, &url, &body, &token).await?;
        if answer.status != StatusCode::UNAUTHORIZED {
            return answer.ok(SYSTEM);
        }
        tracing::info!(target_name = %self.target().name(), "OrderCloud token refused; fetching a new one");
        let (token, _) = self.token(Some(generation)).await?;
        let answer = self.send(&method, &url, &body, &token).await?;
        if answer.status == StatusCode::UNAUTHORIZED {
            // The token endpoint has just accepted our credentials (bad ones
            // fail there, as `Auth`), so this token was revoked again in
            // between: retry later rather than park the run.
            return Err(revoked_again(answer.failure(SYSTEM)));
        }
        answer.ok(SYSTEM)
    }

    async fn send(
        &self,
        method: &Method,
        url: &Url,
        body: &Body,
        token: &Secret,
    ) -> Result<Answer, Failure> {
        let header = format!("Bearer {}", token.expose());
        self.inner
            .transport
            .send(method.clone(), url, body, Some(&header))
            .await
    }

    async fn token(&self, stale: Option<u64>) -> Result<(Secret, u64), Failure> {
        let credential = self
            .inner
            .token
            .get(stale, || async {
                let started = Instant::now();
                let answer = self.fetch_token().await?;
                let lifetime = answer
                    .expires_in
                    .map(Duration::from_secs)
                    .unwrap_or(DEFAULT_TOKEN_LIFETIME);
                metrics::counter!("lb_auth_renewals_total", "target" => self.target().name().to_owned())
                    .increment(1);
                Ok(Fresh {
                    token: Secret::new(answer.access_token),
                    renew_at: started + lifetime.saturating_sub(RENEW_MARGIN),
                })
            })
            .await?;
        Ok((credential.token, credential.generation))
    }

    /// `POST {base}/oauth/token` with the client-credentials grant.
    async fn fetch_token(&self) -> Result<TokenResponse, Failure> {
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", self.inner.client_id.as_str()),
            ("client_secret", self.inner.client_secret.expose()),
        ];
        if !self.inner.scope.trim().is_empty() {
            form.push(("scope", self.inner.scope.as_str()));
        }
        let body = serde_urlencoded::to_string(&form).map_err(|err| {
            Failure::new(
                ErrorClass::Unknown,
                format!("{NAME}: cannot encode the token request: {err}"),
            )
        })?;
        let url = self.inner.transport.url(&["oauth", "token"]);
        let answer = self
            .inner
            .transport
            .send(Method::POST, &url, &Body::Form(body), None)
            .await?;
        let answer = answer.ok(SYSTEM).map_err(|failure| {
            // A refused grant is a credentials problem whatever its status.
            let class = match failure.class {
                ErrorClass::Validation | ErrorClass::NotFound | ErrorClass::Conflict => {
                    ErrorClass::Auth
                }
                other => other,
            };
            Failure {
                class,
                message: format!("{} (while fetching a token)", failure.message),
                ..failure
            }
        })?;
        let token: TokenResponse = answer.json(NAME)?;
        if token.access_token.trim().is_empty() {
            return Err(Failure::new(
                ErrorClass::Auth,
                format!("{NAME}: empty access_token"),
            ));
        }
        Ok(token)
    }
}
