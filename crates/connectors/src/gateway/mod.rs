//! A Stripe-style payment gateway, read side: payment intents and refunds,
//! every page (`limit` = 100, `starting_after` = the last id of the page
//! before, until `has_more` is false), optionally within a `created` range.

mod config;

use std::collections::BTreeMap;
use std::sync::Arc;

use http::Method;
use ledgerbridge_core::{ErrorClass, Failure};
use reqwest::Url;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use config::GatewayConfig;

use crate::delivery::Target;
use crate::error::ConfigError;
use crate::transport::{with_query, Body, Transport};

const SYSTEM: &str = "gateway";
const NAME: &str = "Gateway";
/// The largest page the API serves.
const PAGE_SIZE: u32 = 100;
/// Upper bound on pages read by one list call (a loop guard).
const MAX_PAGES: usize = 100_000;

/// A payment intent (amounts in minor units).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PaymentIntent {
    pub id: String,
    #[serde(default)]
    pub amount: i64,
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Unix seconds.
    #[serde(default)]
    pub created: i64,
}

/// A refund (amounts in minor units).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Refund {
    pub id: String,
    #[serde(default)]
    pub amount: i64,
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub payment_intent: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub created: i64,
}

/// `created[gte]` / `created[lt]` of a list call (unix seconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CreatedRange {
    pub gte: Option<i64>,
    pub lt: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct ListPage<T> {
    data: Vec<T>,
    #[serde(default)]
    has_more: bool,
}

/// A client of one gateway account. Cheap to clone.
#[derive(Clone)]
pub struct GatewayClient {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport,
    authorization: String,
}

impl std::fmt::Debug for GatewayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayClient")
            .field("target", self.inner.transport.target())
            .finish_non_exhaustive()
    }
}

impl GatewayClient {
    /// A client for the connection named `connection` (metrics label).
    pub fn new(connection: &str, config: GatewayConfig) -> Result<Self, ConfigError> {
        if config.api_key.is_empty() {
            return Err(ConfigError::Missing("api_key"));
        }
        let transport = Transport::new(SYSTEM, connection, &config.base_url, &config.limits)?;
        Ok(GatewayClient {
            inner: Arc::new(Inner {
                transport,
                authorization: format!("Bearer {}", config.api_key.expose()),
            }),
        })
    }

    /// The shared limiter of this connection.
    pub fn target(&self) -> &Target {
        self.inner.transport.target()
    }

    /// Every payment intent created within `created`, newest first.
    pub async fn list_payment_intents(
        &self,
        created: CreatedRange,
    ) -> Result<Vec<PaymentIntent>, Failure> {
        self.list_all(&["v1", "payment_intents"], created, |p: &PaymentIntent| {
            p.id.clone()
        })
        .await
    }

    /// Every refund created within `created`, newest first.
    pub async fn list_refunds(&self, created: CreatedRange) -> Result<Vec<Refund>, Failure> {
        self.list_all(&["v1", "refunds"], created, |r: &Refund| r.id.clone())
            .await
    }

    async fn list_all<T: DeserializeOwned>(
        &self,
        path: &[&str],
        created: CreatedRange,
        id_of: impl Fn(&T) -> String,
    ) -> Result<Vec<T>, Failure> {
        let mut base = vec![("limit", PAGE_SIZE.to_string())];
        if let Some(gte) = created.gte {
            base.push(("created[gte]", gte.to_string()));
        }
        if let Some(lt) = created.lt {
            base.push(("created[lt]", lt.to_string()));
        }
        let first = with_query(&self.inner.transport.url(path), &base);
        let mut items: Vec<T> = Vec::new();
        let mut url: Url = first.clone();
        for _ in 0..MAX_PAGES {
            let answer = self
                .inner
                .transport
                .send(
                    Method::GET,
                    &url,
                    &Body::Empty,
                    Some(&self.inner.authorization),
                )
                .await?
                .ok(SYSTEM)?;
            let page: ListPage<T> = answer.json(NAME)?;
            let last = page.data.last().map(&id_of);
            items.extend(page.data);
            match last {
                Some(last) if page.has_more => {
                    url = with_query(&first, &[("starting_after", last)]);
                }
                _ => return Ok(items),
            }
        }
        Err(Failure::new(
            ErrorClass::Unknown,
            format!(
                "{NAME}: list {} has more than {MAX_PAGES} pages",
                first.path()
            ),
        ))
    }
}
