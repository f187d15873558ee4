//! KashFlow REST v2: session login and typed operations.
//!
//! Login is two steps (`POST /sessiontoken` with user name and password,
//! then `PUT /sessiontoken` with three requested characters of the
//! memorable word); every other call carries `Authorization: KfToken
//! <token>`. The session is renewed after
//! [`KashFlowConfig::session_renew_after`] or when KashFlow answers 401,
//! and only one login runs at a time: callers that find the session stale
//! while a login is under way wait for it and share its token.

mod config;
pub(crate) mod models;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDate;
use http::{Method, StatusCode};
use ledgerbridge_core::{ErrorClass, Failure, Secret};
use reqwest::Url;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use config::KashFlowConfig;
pub use models::{
    format_date, parse_date, Address, BankAccount, BulkPayment, BulkPaymentItem, Contact, Currency,
    CustomField, Customer, Invoice, LineItem, Nominal, PaymentLine, PaymentMethod, PaymentTerms,
    Product, VatRate,
};

use tokio::time::Instant;

use crate::auth::{Fresh, TokenCache};
use crate::delivery::Target;
use crate::error::ConfigError;
use crate::transport::{revoked_again, with_query, Answer, Body, Transport};
use models::{MemorableWordPosition, Page, SessionToken, TemporaryToken};

const SYSTEM: &str = "kashflow";
const NAME: &str = "KashFlow";
/// Page size asked for when reading whole lists.
const PAGE_SIZE: usize = 100;
/// Upper bound on pages read by one list call (a loop guard).
const MAX_PAGES: usize = 10_000;

/// Filters of [`KashFlowClient::list_invoices`]; `None` means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvoiceFilter {
    /// Only this customer's invoices (`customercode`).
    pub customer_code: Option<String>,
    /// `Paid` or `Unpaid` (`statusfilter`).
    pub status: Option<String>,
    /// Issued on or after (`issuedatefrom`).
    pub issued_from: Option<NaiveDate>,
    /// Issued on or before (`issuedateto`).
    pub issued_to: Option<NaiveDate>,
    /// Free text, matched on the customer reference (`searchtext`).
    pub search_text: Option<String>,
    /// Only this project (`projectnumber`).
    pub project_number: Option<i64>,
}

impl InvoiceFilter {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if let Some(v) = &self.customer_code {
            query.push(("customercode", v.clone()));
        }
        if let Some(v) = &self.status {
            query.push(("statusfilter", v.clone()));
        }
        if let Some(v) = self.issued_from {
            query.push(("issuedatefrom", v.format("%Y-%m-%d").to_string()));
        }
        if let Some(v) = self.issued_to {
            query.push(("issuedateto", v.format("%Y-%m-%d").to_string()));
        }
        if let Some(v) = &self.search_text {
            query.push(("searchtext", v.clone()));
        }
        if let Some(v) = self.project_number {
            query.push(("projectnumber", v.to_string()));
        }
        query
    }
}

/// A client of one KashFlow account. Cheap to clone: clones share the
/// session, the HTTP connection pool and the target's limiter.
#[derive(Clone)]
pub struct KashFlowClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KashFlowClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KashFlowClient")
            .field("target", self.inner.transport.target())
            .field("username", &self.inner.username)
            .finish_non_exhaustive()
    }
}

struct Inner {
    transport: Transport,
    username: String,
    password: Secret,
    memorable_word: Secret,
    renew_after: Duration,
    session: TokenCache,
    /// One lock per invoice whose payments are being changed, so that the
    /// read-modify-write of [`KashFlowClient::pay_invoice`] never interleaves
    /// with another on the same invoice in this process.
    payment_locks: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
}

impl KashFlowClient {
    /// A client for the connection named `connection` (metrics label).
    pub fn new(connection: &str, config: KashFlowConfig) -> Result<Self, ConfigError> {
        if config.username.trim().is_empty() {
            return Err(ConfigError::Missing("username"));
        }
        if config.password.is_empty() {
            return Err(ConfigError::Missing("password"));
        }
        if config.memorable_word.is_empty() {
            return Err(ConfigError::Missing("memorable_word"));
        }
        let transport = Transport::new(SYSTEM, connection, &config.base_url, &config.limits)?;
        Ok(KashFlowClient {
            inner: Arc::new(Inner {
                transport,
                username: config.username,
                password: config.password,
                memorable_word: config.memorable_word,
                renew_after: config.session_renew_after,
                session: TokenCache::default(),
                payment_locks: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The shared limiter of this connection.
    pub fn target(&self) -> &Target {
        self.inner.transport.target()
    }

    /// How many logins succeeded since the client was built.
    pub fn login_count(&self) -> u64 {
        self.inner.session.fetch_count()
    }

    /// Forgets the current session; the next call logs in again.
    pub async fn invalidate_session(&self) {
        self.inner.session.invalidate().await;
    }

    // ----- customers -----

    /// `GET /customers/{code}`; `None` if KashFlow does not know the code.
    pub async fn get_customer(&self, code: &str) -> Result<Option<Customer>, Failure> {
        self.get_optional(self.url(&["customers", code])).await
    }

    /// Customers whose fields match `text` (`searchtext`), all pages.
    pub async fn search_customers(&self, text: &str) -> Result<Vec<Customer>, Failure> {
        let url = with_query(
            &self.url(&["customers"]),
            &[("searchtext", text.to_owned())],
        );
        self.list_all(url).await
    }

    /// Every customer, all pages.
    pub async fn list_customers(&self) -> Result<Vec<Customer>, Failure> {
        self.list_all(self.url(&["customers"])).await
    }

    /// `POST /customers`. A duplicate `Code` is a validation failure unless
    /// `CreateCustomerCodeIfDuplicate` is set (which creates a second
    /// customer under a new code).
    pub async fn create_customer(&self, customer: &Customer) -> Result<Customer, Failure> {
        self.send_json(Method::POST, self.url(&["customers"]), customer)
            .await
    }

    /// `PUT /customers/{code}`: the fields set in `customer` replace
    /// KashFlow's. Changing `Code` moves the customer to the new code.
    pub async fn update_customer(
        &self,
        code: &str,
        customer: &Customer,
    ) -> Result<Customer, Failure> {
        self.send_json(Method::PUT, self.url(&["customers", code]), customer)
            .await
    }

    // ----- invoices -----

    /// `POST /invoices`. Not idempotent: KashFlow has no idempotency key,
    /// so before retrying an uncertain create, look for the invoice with
    /// [`KashFlowClient::find_invoices_by_reference`] or
    /// [`KashFlowClient::get_invoice`].
    pub async fn create_invoice(&self, invoice: &Invoice) -> Result<Invoice, Failure> {
        self.send_json(Method::POST, self.url(&["invoices"]), invoice)
            .await
    }

    /// `GET /invoices/{number}` with lines and payments; `None` if unknown.
    pub async fn get_invoice(&self, number: i64) -> Result<Option<Invoice>, Failure> {
        self.get_optional(self.url(&["invoices", &number.to_string()]))
            .await
    }

    /// Invoices whose `CustomerReference` is exactly `reference`: a
    /// `searchtext` query, then an exact, case-sensitive match here (the
    /// search also matches substrings). List items carry no lines.
    pub async fn find_invoices_by_reference(
        &self,
        reference: &str,
    ) -> Result<Vec<Invoice>, Failure> {
        let filter = InvoiceFilter {
            search_text: Some(reference.to_owned()),
            ..InvoiceFilter::default()
        };
        let mut invoices = self.list_invoices(&filter).await?;
        invoices.retain(|invoice| invoice.customer_reference.as_deref() == Some(reference));
        Ok(invoices)
    }

    /// Every invoice matching `filter`, all pages. List items are summaries
    /// (no `LineItems` or `PaymentLines`).
    pub async fn list_invoices(&self, filter: &InvoiceFilter) -> Result<Vec<Invoice>, Failure> {
        let query = filter.query();
        let pairs: Vec<(&str, String)> = query.iter().map(|(k, v)| (*k, v.clone())).collect();
        let url = with_query(&self.url(&["invoices"]), &pairs);
        self.list_all(url).await
    }

    /// [`KashFlowClient::list_invoices`] with up to `concurrency` pages in
    /// flight: the first page says how many records there are, the rest
    /// are asked for by page number side by side and joined in page order.
    pub async fn list_invoices_concurrently(
        &self,
        filter: &InvoiceFilter,
        concurrency: usize,
    ) -> Result<Vec<Invoice>, Failure> {
        use futures::stream::{self, StreamExt, TryStreamExt};
        let query = filter.query();
        let pairs: Vec<(&str, String)> = query.iter().map(|(k, v)| (*k, v.clone())).collect();
        let url = with_query(&self.url(&["invoices"]), &pairs);
        let page_url = |page: usize| {
            with_query(
                &url,
                &[
                    ("page", page.to_string()),
                    ("perpage", PAGE_SIZE.to_string()),
                ],
            )
        };
        let first: Page<Invoice> = self
            .call(Method::GET, page_url(1), Body::Empty)
            .await?
            .json(NAME)?;
        let total = first
            .meta
            .as_ref()
            .and_then(|m| m.total_records)
            .unwrap_or(0);
        let pages = usize::try_from(total)
            .unwrap_or(usize::MAX)
            .div_ceil(PAGE_SIZE)
            .clamp(1, MAX_PAGES);
        let mut invoices = first.data;
        if pages == 1 || invoices.is_empty() {
            return Ok(invoices);
        }
        let rest: Vec<Vec<Invoice>> = stream::iter(2..=pages)
            .map(|page| async move {
                let page: Page<Invoice> = self
                    .call(Method::GET, page_url(page), Body::Empty)
                    .await?
                    .json(NAME)?;
                Ok::<_, Failure>(page.data)
            })
            .buffered(concurrency.max(1))
            .try_collect()
            .await?;
        invoices.extend(rest.into_iter().flatten());
        Ok(invoices)
    }

    /// `PUT /invoices/{number}`: the fields set replace KashFlow's;
    /// `LineItems` replaces all lines and `PaymentLines` all payments.
    pub async fn update_invoice(&self, number: i64, invoice: &Invoice) -> Result<Invoice, Failure> {
        self.send_json(
            Method::PUT,
            self.url(&["invoices", &number.to_string()]),
            invoice,
        )
        .await
    }

    /// Records a payment on an invoice.
    ///
    /// KashFlow has no single-payment route, so this is a
    /// **read-modify-write**: `GET` the invoice, append `payment` to its
    /// `PaymentLines`, `PUT` the whole list back. Two concurrent calls for
    /// the same invoice can lose one payment: callers must serialise
    /// payments per invoice. If `payment.Reference` is set and the invoice
    /// already has a payment with that reference, nothing is sent and the
    /// invoice is returned as is, which makes a retry after an uncertain
    /// outcome safe. An unknown invoice is a `NotFound` failure.
    pub async fn add_payment(
        &self,
        invoice_number: i64,
        payment: PaymentLine,
    ) -> Result<Invoice, Failure> {
        let Some(invoice) = self.get_invoice(invoice_number).await? else {
            return Err(Failure::new(
                ErrorClass::NotFound,
                format!("{NAME}: invoice {invoice_number} not found"),
            ));
        };
        self.add_payment_to(invoice, payment).await
    }

    /// [`KashFlowClient::add_payment`] on an invoice the caller has just
    /// read (to size the payment, say), saving the second `GET`.
    pub async fn add_payment_to(
        &self,
        invoice: Invoice,
        payment: PaymentLine,
    ) -> Result<Invoice, Failure> {
        let invoice_number = invoice.number.ok_or_else(|| {
            Failure::new(
                ErrorClass::Unknown,
                format!("{NAME}: an invoice without a Number cannot take a payment"),
            )
        })?;
        let mut lines = invoice.payment_lines.clone().unwrap_or_default();
        if let Some(reference) = payment.reference.as_deref().filter(|r| !r.is_empty()) {
            if lines
                .iter()
                .any(|line| line.reference.as_deref() == Some(reference))
            {
                tracing::info!(invoice_number, reference, "payment already recorded");
                return Ok(invoice);
            }
        }
        lines.push(payment);
        let update = Invoice {
            payment_lines: Some(lines),
            ..Invoice::default()
        };
        self.update_invoice(invoice_number, &update).await
    }

    /// Reads invoice `number` and lets `decide` choose, on that fresh read,
    /// the payment to add (or none), then adds it with
    /// [`KashFlowClient::add_payment_to`]. Returns what `decide` returned
    /// besides the payment.
    ///
    /// KashFlow has no single-payment route, so adding a payment rewrites
    /// the invoice's whole `PaymentLines`. Calls for the same invoice through
    /// this client or its clones are serialised here (read, decide and write
    /// under one lock), so two flows paying one invoice cannot lose each
    /// other's payment. An unknown invoice is a `NotFound` failure.
    pub async fn pay_invoice<T, F>(&self, number: i64, decide: F) -> Result<T, Failure>
    where
        F: FnOnce(&Invoice) -> Result<(Option<PaymentLine>, T), Failure>,
    {
        let lock = self.payment_lock(number);
        let _held = lock.lock().await;
        let Some(invoice) = self.get_invoice(number).await? else {
            return Err(Failure::new(
                ErrorClass::NotFound,
                format!("{NAME}: invoice {number} not found"),
            ));
        };
        let (payment, outcome) = decide(&invoice)?;
        if let Some(payment) = payment {
            self.add_payment_to(invoice, payment).await?;
        }
        Ok(outcome)
    }

    /// The payment lock of one invoice; locks nobody holds are dropped.
    fn payment_lock(&self, number: i64) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .inner
            .payment_locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(number).or_default().clone()
    }

    /// `POST /invoices/bulk/payments`: one payment spread over invoices.
    pub async fn create_bulk_payment(&self, payment: &BulkPayment) -> Result<BulkPayment, Failure> {
        self.send_json(
            Method::POST,
            self.url(&["invoices", "bulk", "payments"]),
            payment,
        )
        .await
    }

    // ----- reference data -----

    /// Every product, all pages.
    pub async fn list_products(&self) -> Result<Vec<Product>, Failure> {
        self.list_all(self.url(&["products"])).await
    }

    /// `GET /products/{nominal_code}/{code}`; `None` if unknown.
    pub async fn get_product(
        &self,
        nominal_code: i64,
        code: &str,
    ) -> Result<Option<Product>, Failure> {
        self.get_optional(self.url(&["products", &nominal_code.to_string(), code]))
            .await
    }

    /// `GET /nominals` (a bare array).
    pub async fn list_nominals(&self) -> Result<Vec<Nominal>, Failure> {
        self.get_json(self.url(&["nominals"])).await
    }

    /// `GET /vat/settings/vatrates`: the VAT rates configured.
    pub async fn vat_rates(&self) -> Result<Vec<VatRate>, Failure> {
        self.get_json(self.url(&["vat", "settings", "vatrates"]))
            .await
    }

    /// `GET /currencies`.
    pub async fn currencies(&self) -> Result<Vec<Currency>, Failure> {
        self.get_json(self.url(&["currencies"])).await
    }

    /// `GET /bankaccounts`.
    pub async fn bank_accounts(&self) -> Result<Vec<BankAccount>, Failure> {
        self.get_json(self.url(&["bankaccounts"])).await
    }

    /// `GET /paymentmethods/invoice`: methods usable on invoice payments.
    pub async fn payment_methods(&self) -> Result<Vec<PaymentMethod>, Failure> {
        self.get_json(self.url(&["paymentmethods", "invoice"]))
            .await
    }

    // ----- plumbing -----

    fn url(&self, segments: &[&str]) -> Url {
        self.inner.transport.url(segments)
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

    async fn send_json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: &B,
    ) -> Result<T, Failure> {
        self.call(method, url, Body::json(body)?).await?.json(NAME)
    }

    /// Reads every page of a `{"Data", "MetaData"}` list, following
    /// `NextPageUrl`, or page numbers when only `TotalRecords` is given.
    async fn list_all<T: DeserializeOwned>(&self, url: Url) -> Result<Vec<T>, Failure> {
        let mut page_number = 1usize;
        let mut url = with_query(
            &url,
            &[("page", "1".to_owned()), ("perpage", PAGE_SIZE.to_string())],
        );
        let mut items = Vec::new();
        for _ in 0..MAX_PAGES {
            let page: Page<T> = self
                .call(Method::GET, url.clone(), Body::Empty)
                .await?
                .json(NAME)?;
            let count = page.data.len();
            items.extend(page.data);
            let meta = page.meta.unwrap_or_default();
            match meta.next_page_url.as_deref().map(str::trim) {
                Some(next) if !next.is_empty() => {
                    let next = self.inner.transport.follow(next)?;
                    if next == url {
                        return Err(Failure::new(
                            ErrorClass::Unknown,
                            format!("{NAME}: NextPageUrl points at the same page {}", url.path()),
                        ));
                    }
                    url = next;
                }
                _ => {
                    let more = meta
                        .total_records
                        .is_some_and(|total| (items.len() as u64) < total);
                    if count == 0 || !more || meta.next_page_url.is_some() {
                        return Ok(items);
                    }
                    page_number += 1;
                    url = with_query(&url, &[("page", page_number.to_string())]);
                }
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

    /// One authenticated call; on a 401 (other than a locked account)
    /// renews the session once and sends the request again.
    async fn call(&self, method: Method, url: Url, body: Body) -> Result<Answer, Failure> {
        let (token, generation) = self.session(None).await?;
        let answer = self.send(&method, &url, &body, &token).await?;
        if answer.status != StatusCode::UNAUTHORIZED || is_account_locked(&answer.body) {
            return answer.ok(SYSTEM);
        }
        tracing::info!(target_name = %self.target().name(), "KashFlow session refused; logging in again");
        let (token, _) = self.session(Some(generation)).await?;
        let answer = self.send(&method, &url, &body, &token).await?;
        if answer.status == StatusCode::UNAUTHORIZED && !is_account_locked(&answer.body) {
            // The login has just succeeded (bad credentials fail there, as
            // `Auth`), so this session was ended again in between: retry
            // later rather than park the run.
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
        let header = format!("KfToken {}", token.expose());
        self.inner
            .transport
            .send(method.clone(), url, body, Some(&header))
            .await
    }

    /// The current session token and its generation, logging in first if
    /// there is none, it is older than `renew_after`, or it is the one the
    /// caller just saw refused (`stale`). One login at a time.
    async fn session(&self, stale: Option<u64>) -> Result<(Secret, u64), Failure> {
        let credential = self
            .inner
            .session
            .get(stale, || async {
                let token = self.login().await?;
                metrics::counter!("lb_auth_renewals_total", "target" => self.target().name().to_owned())
                    .increment(1);
                Ok(Fresh {
                    token,
                    renew_at: Instant::now() + self.inner.renew_after,
                })
            })
            .await?;
        Ok((credential.token, credential.generation))
    }

    /// The two-step login. A refusal is an `Auth` failure whatever status
    /// KashFlow used for it.
    async fn login(&self) -> Result<Secret, Failure> {
        let transport = &self.inner.transport;
        let url = self.url(&["sessiontoken"]);
        let step1 = Body::json(&serde_json::json!({
            "UserName": self.inner.username,
            "Password": self.inner.password.expose(),
        }))?;
        let temporary: TemporaryToken = transport
            .send(Method::POST, &url, &step1, None)
            .await?
            .ok(SYSTEM)
            .map_err(login_failure)?
            .json(NAME)?;

        let word: Vec<char> = self.inner.memorable_word.expose().chars().collect();
        let mut characters = Vec::with_capacity(temporary.memorable_word_list.len());
        for requested in &temporary.memorable_word_list {
            let Some(c) = requested
                .position
                .checked_sub(1)
                .and_then(|index| word.get(index))
            else {
                return Err(Failure::new(
                    ErrorClass::Auth,
                    format!(
                        "{NAME} login: asked for character {} of the memorable word, which has {}",
                        requested.position,
                        word.len()
                    ),
                ));
            };
            characters.push(MemorableWordPosition {
                position: requested.position,
                value: c.to_string(),
            });
        }
        let step2 = Body::json(&serde_json::json!({
            "TemporaryToken": temporary.temporary_token,
            "MemorableWordList": characters,
        }))?;
        let session: SessionToken = transport
            .send(Method::PUT, &url, &step2, None)
            .await?
            .ok(SYSTEM)
            .map_err(login_failure)?
            .json(NAME)?;
        if session.session_token.trim().is_empty() {
            return Err(Failure::new(
                ErrorClass::Auth,
                format!("{NAME} login: empty SessionToken"),
            ));
        }
        tracing::info!(target_name = %self.target().name(), "logged in to KashFlow");
        Ok(Secret::new(session.session_token))
    }
}

/// Login refusals (400 `InvalidCredentials`, wrong characters) become
/// `Auth`; transient failures stay transient. So does an expired temporary
/// token (`InvalidTemporaryToken`: the first step's token was ended before
/// the second step — the credentials were accepted): log in again later.
fn login_failure(failure: Failure) -> Failure {
    let class = match failure.class {
        _ if failure.message.contains("InvalidTemporaryToken") => ErrorClass::Transient,
        ErrorClass::Validation | ErrorClass::NotFound | ErrorClass::Conflict => ErrorClass::Auth,
        other => other,
    };
    Failure {
        class,
        message: format!("{} (while logging in)", failure.message),
        ..failure
    }
}

fn is_account_locked(body: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("Error")
                .and_then(|e| e.as_str())
                .map(|e| e == "AccountLocked")
        })
        .unwrap_or(false)
}
