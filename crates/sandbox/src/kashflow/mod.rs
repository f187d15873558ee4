//! KashFlow REST v2 simulator, per the "Simulator contract" (§10) of
//! `reference/kashflow-api.md`: session login with memorable-word positions,
//! `Authorization: KfToken <GUID>` with sliding expiry, customers, invoices
//! (lines, VAT, totals in decimal arithmetic), payments and bulk payments,
//! products with stock, nominals and seeded reference data.
//!
//! Output names are exact PascalCase; input keys are case-insensitive; every
//! error is `{"Error","Message"}`. State lives in memory behind locks that
//! are never held across an `.await`.

mod config;
mod error;
mod input;
mod model;
mod routes;
mod seed;
mod sessions;
mod state;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;

pub use config::KashFlowConfig;
pub use error::{codes, KfError};
pub use input::parse_date;
pub use state::{round2, DEFAULT_SALES_NOMINAL, NEVER_DATE, STATUS_PAID, STATUS_UNPAID};

use error::KfResult;
use state::Data;

/// The KashFlow simulator service.
pub struct KashFlow {
    config: KashFlowConfig,
    data: RwLock<Data>,
    sessions: Mutex<sessions::Sessions>,
    /// Bumped under the write lock every time the data may change, so a
    /// value computed under the read lock at one version is still right
    /// while the version is the same.
    version: AtomicU64,
    /// Invoice lists already filtered and ordered: per query (without its
    /// page), the invoice numbers and their total gross amount, valid for
    /// the data version they were computed at. Pages 2..N of one query slice
    /// the list instead of filtering every invoice again.
    invoice_lists: Mutex<InvoiceListCache>,
}

/// See [`KashFlow::invoice_lists`].
#[derive(Default)]
struct InvoiceListCache {
    version: u64,
    lists: HashMap<String, Arc<InvoiceList>>,
}

/// One query's invoices: numbers in list order and the gross total.
struct InvoiceList {
    numbers: Vec<i64>,
    total_amount: Decimal,
}

/// Lists kept at most (a new one past this forgets the others).
const MAX_CACHED_LISTS: usize = 64;

impl std::fmt::Debug for KashFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KashFlow").finish_non_exhaustive()
    }
}

impl KashFlow {
    /// Builds the simulator with seeded reference data.
    pub fn new(config: &KashFlowConfig) -> Arc<Self> {
        Arc::new(KashFlow {
            config: config.clone(),
            data: RwLock::new(Data::new(config)),
            sessions: Mutex::new(sessions::Sessions::default()),
            version: AtomicU64::new(0),
            invoice_lists: Mutex::new(InvoiceListCache::default()),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &KashFlowConfig {
        &self.config
    }

    /// The router (`/sessiontoken`, `/customers`, `/invoices`, ...), to be
    /// nested at `/kashflow/v2`.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        routes::router(Arc::clone(self))
    }

    // A panic under a lock cannot leave half-written data behind (writes
    // validate first, then apply), so poisoning is ignored.
    fn read(&self) -> RwLockReadGuard<'_, Data> {
        self.data.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Data> {
        let guard = self.data.write().unwrap_or_else(|p| p.into_inner());
        // Under the write lock: a reader sees either the old data with the
        // old version or the new data with the new one.
        self.version.fetch_add(1, Ordering::SeqCst);
        guard
    }

    /// The data version (read it under a data lock).
    fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// The list cached for `key` at `version`, or `compute`d and kept.
    fn invoice_list(
        &self,
        key: String,
        version: u64,
        compute: impl FnOnce() -> KfResult<InvoiceList>,
    ) -> KfResult<Arc<InvoiceList>> {
        {
            let cache = self.invoice_lists.lock().unwrap_or_else(|p| p.into_inner());
            if cache.version == version {
                if let Some(list) = cache.lists.get(&key) {
                    return Ok(Arc::clone(list));
                }
            }
        }
        let list = Arc::new(compute()?);
        let mut cache = self.invoice_lists.lock().unwrap_or_else(|p| p.into_inner());
        if version < cache.version {
            // Computed from data older than what is cached: not kept.
            return Ok(list);
        }
        if version > cache.version || cache.lists.len() >= MAX_CACHED_LISTS {
            cache.lists.clear();
            cache.version = version;
        }
        cache.lists.insert(key, Arc::clone(&list));
        Ok(list)
    }

    fn sessions(&self) -> MutexGuard<'_, sessions::Sessions> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.config.session_ttl_secs)
    }

    /// Checks an `Authorization` header value (`KfToken <GUID>`) and slides
    /// the session's expiry.
    pub fn authorize(&self, header: Option<&str>) -> Result<(), KfError> {
        let token = header
            .and_then(|value| {
                let value = value.trim();
                let (scheme, token) = value.split_once(char::is_whitespace)?;
                scheme.eq_ignore_ascii_case("KfToken").then_some(token)
            })
            .ok_or(KfError::InvalidSession)?;
        self.sessions()
            .touch(token, self.session_ttl(), Instant::now())
    }

    /// Everything the simulator holds, as JSON.
    pub fn snapshot(&self) -> serde_json::Value {
        let sessions = self.sessions().snapshot();
        let data = self.read();
        let invoices: Vec<serde_json::Value> = data
            .invoices
            .keys()
            .filter_map(|n| data.invoice_detail(*n).ok())
            .filter_map(|detail| serde_json::to_value(detail).ok())
            .collect();
        let customers: Vec<&model::Customer> = data.customers.values().collect();
        let products: Vec<&model::Product> = data.products.values().collect();
        let nominals: Vec<&model::Nominal> = data.nominals.values().collect();
        let bulk: Vec<&model::BulkPayment> = data.bulk_payments.values().collect();
        serde_json::json!({
            "Sessions": sessions,
            "Customers": customers,
            "Invoices": invoices,
            "BulkPayments": bulk,
            "Products": products,
            "Nominals": nominals,
        })
    }

    /// Back to the configured initial state: data reseeded, every session gone.
    pub fn reset(&self) {
        *self.write() = Data::new(&self.config);
        *self.sessions() = sessions::Sessions::default();
    }

    /// Creates customers and invoices straight in the state, each body
    /// exactly as `POST /customers` and `POST /invoices` take it (invoices
    /// may carry `PaymentLines`): for seeding large data sets in-process.
    /// Returns the invoice numbers; stops at the first refused body.
    pub fn seed(
        &self,
        customers: &[serde_json::Value],
        invoices: &[serde_json::Value],
    ) -> Result<Vec<i64>, KfError> {
        let now = chrono::Utc::now().naive_utc();
        let mut data = self.write();
        for customer in customers {
            let input: model::CustomerInput =
                input::from_value(input::normalize_keys(customer.clone()))?;
            data.create_customer(input, now)?;
        }
        let mut numbers = Vec::with_capacity(invoices.len());
        for invoice in invoices {
            let input: model::InvoiceInput =
                input::from_value(input::normalize_keys(invoice.clone()))?;
            numbers.push(data.create_invoice(input, now)?);
        }
        Ok(numbers)
    }

    /// Expires every session (and pending login); returns how many sessions ended.
    pub fn expire_sessions(&self) -> usize {
        self.sessions().expire_all()
    }

    /// Creates customers in-process, as `POST /customers` would (bodies in
    /// its JSON shape), for benchmarks that need tens of thousands of them.
    /// Returns how many were created; the first invalid body stops it.
    pub fn seed_customers(&self, bodies: &[serde_json::Value]) -> Result<usize, KfError> {
        let now = chrono::Utc::now().naive_utc();
        let mut data = self.write();
        for (n, body) in bodies.iter().enumerate() {
            let bytes = serde_json::to_vec(body)
                .map_err(|e| KfError::validation(format!("seed customer {n}: {e}")))?;
            let input = input::parse_body::<model::CustomerInput>(&bytes)?;
            data.create_customer(input, now)?;
        }
        Ok(bodies.len())
    }

    /// Changes a customer in-process, as `PUT /customers/{code}` would.
    pub fn update_customer_json(
        &self,
        code: &str,
        body: &serde_json::Value,
    ) -> Result<(), KfError> {
        let now = chrono::Utc::now().naive_utc();
        let bytes = serde_json::to_vec(body)
            .map_err(|e| KfError::validation(format!("customer {code}: {e}")))?;
        let input = input::parse_body::<model::CustomerInput>(&bytes)?;
        self.write().update_customer(code, input, now)?;
        Ok(())
    }

    /// Sets a product's `QuantityInStock` (the first product with `code`
    /// when `nominal_code` is `None`). Returns the product as JSON.
    pub fn set_stock(
        &self,
        code: &str,
        nominal_code: Option<i64>,
        quantity: Decimal,
    ) -> Result<serde_json::Value, KfError> {
        let mut data = self.write();
        let product = data.set_stock(code, nominal_code, quantity)?;
        serde_json::to_value(product)
            .map_err(|err| KfError::validation(format!("cannot render product: {err}")))
    }

    /// Adds a product as `POST /products` would (its body: `Code`, `Name`,
    /// `NominalCode`, `ManageStockLevel`, `QuantityInStock`, …), without a
    /// session: for tests and the demo. Returns the product as JSON.
    pub fn add_product(&self, body: &serde_json::Value) -> Result<serde_json::Value, KfError> {
        let input: model::ProductInput = serde_json::from_value(body.clone())
            .map_err(|err| KfError::validation(format!("invalid product: {err}")))?;
        let mut data = self.write();
        let product = data.create_product(input)?;
        serde_json::to_value(product)
            .map_err(|err| KfError::validation(format!("cannot render product: {err}")))
    }

    /// The control route `POST /_sandbox/kashflow/stock`
    /// (`{"Code","QuantityInStock"[,"NominalCode"]}`), answered in KashFlow's format.
    pub fn set_stock_from_json(&self, body: &[u8]) -> Response {
        let result = input::parse_body::<model::StockInput>(body).and_then(|input| {
            let code = input
                .code
                .filter(|c| !c.trim().is_empty())
                .ok_or_else(|| KfError::validation("Code is required."))?;
            let quantity = input
                .quantity_in_stock
                .ok_or_else(|| KfError::validation("QuantityInStock is required."))?;
            self.set_stock(&code, input.nominal_code.map(|n| n.0), quantity)
        });
        match result {
            Ok(product) => (StatusCode::OK, axum::Json(product)).into_response(),
            Err(err) => err.into_response(),
        }
    }
}
