//! HTTP routes of the KashFlow simulator. Each handler takes the lock, does
//! its work and renders the JSON bytes, then releases the lock (never held
//! across an `.await`).

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{OriginalUri, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use chrono::Utc;
use rust_decimal::Decimal;
use serde::Serialize;

use super::error::{KfError, KfResult};
use super::input::{KfJson, ListQuery};
use super::model::*;
use super::state::{list_customers, list_invoices};
use super::{InvoiceList, KashFlow};

type Kf = State<Arc<KashFlow>>;
type PathOne = Result<Path<String>, PathRejection>;
type PathTwo = Result<Path<(String, String)>, PathRejection>;

/// Every KashFlow route; all but `/sessiontoken` need a session.
pub fn router(kf: Arc<KashFlow>) -> Router {
    let protected = Router::new()
        .route("/customers", get(customers_list).post(customer_create))
        .route(
            "/customers/{code}",
            get(customer_get)
                .put(customer_update)
                .delete(customer_delete),
        )
        .route("/invoices", get(invoices_list).post(invoice_create))
        .route(
            "/invoices/{number}",
            get(invoice_get).put(invoice_update).delete(invoice_delete),
        )
        .route("/invoices/bulk/payments", post(bulk_create))
        .route(
            "/invoices/bulk/payments/{number}",
            get(bulk_get).delete(bulk_delete),
        )
        .route("/products", get(products_list).post(product_create))
        .route("/products/list", get(products_all))
        .route(
            "/products/{nominal}/{code}",
            get(product_get).put(product_update).delete(product_delete),
        )
        .route("/nominals", get(nominals_list).post(nominal_create))
        .route("/nominals/{code}", get(nominal_get))
        .route("/nominals/{code}/products", get(nominal_products))
        .route("/vat/settings/vatrates", get(vat_rates))
        .route("/taxes", get(taxes))
        .route("/countries/vatrates", get(country_vat_rates))
        .route("/currencies", get(currencies))
        .route("/paymentmethods/{kind}", get(payment_methods))
        .route("/bankaccounts", get(bank_accounts))
        .route("/bankaccounts/{id}", get(bank_account))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&kf),
            require_session,
        ));
    Router::new()
        .route(
            "/sessiontoken",
            post(login_begin).put(login_complete).delete(logout_header),
        )
        .route("/sessiontoken/{token}", delete(logout_path))
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(kf)
}

async fn not_found(uri: OriginalUri) -> KfError {
    KfError::not_found(format!(
        "No HTTP resource was found that matches the request URI '{}'.",
        uri.0.path()
    ))
}

async fn method_not_allowed() -> KfError {
    KfError::MethodNotAllowed
}

async fn require_session(State(kf): Kf, request: Request, next: Next) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match kf.authorize(header) {
        Ok(()) => next.run(request).await,
        Err(err) => err.into_response(),
    }
}

// ---------------------------------------------------------------- rendering

fn render<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            let mut response = (status, bytes).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            response
        }
        Err(err) => {
            tracing::error!(%err, "kashflow simulator: cannot render a response");
            crate::faults::error_response(
                "kashflow",
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "An error has occurred.",
            )
        }
    }
}

fn ok<T: Serialize + ?Sized>(value: &T) -> Response {
    render(StatusCode::OK, value)
}

fn created<T: Serialize + ?Sized>(value: &T) -> Response {
    render(StatusCode::CREATED, value)
}

fn now() -> chrono::NaiveDateTime {
    Utc::now().naive_utc()
}

fn path_one(path: PathOne) -> KfResult<String> {
    path.map(|Path(p)| p)
        .map_err(|err| KfError::validation(format!("Invalid path: {err}")))
}

fn path_two(path: PathTwo) -> KfResult<(String, String)> {
    path.map(|Path(p)| p)
        .map_err(|err| KfError::validation(format!("Invalid path: {err}")))
}

fn parse_key(text: &str, what: &str) -> KfResult<i64> {
    text.trim()
        .parse::<i64>()
        .map_err(|_| KfError::not_found(format!("{what} {text} was not found.")))
}

/// A list request: the parsed query and the absolute URL of this path.
struct Page {
    query: ListQuery,
    base_url: String,
}

impl Page {
    fn new(kf: &KashFlow, uri: &OriginalUri, headers: &HeaderMap) -> KfResult<Page> {
        let config = kf.config();
        let query = ListQuery::parse(uri.0.query(), config.default_per_page, config.max_per_page)?;
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1");
        Ok(Page {
            query,
            base_url: format!("http://{host}{}", uri.0.path()),
        })
    }

    fn url(&self, page: usize) -> String {
        format!("{}?{}", self.base_url, self.query.with_page(page))
    }

    fn render<T: Serialize>(&self, items: &[&T], total_amount: Option<Decimal>) -> Response {
        let (start, end) = self.range(items.len());
        self.render_page(items.len(), &items[start..end], total_amount)
    }

    /// The `[start, end)` of this page in a list of `total` items.
    fn range(&self, total: usize) -> (usize, usize) {
        let per_page = self.query.per_page;
        let start = (self.query.page - 1).saturating_mul(per_page).min(total);
        (start, start.saturating_add(per_page).min(total))
    }

    /// The envelope of one page (`page_items`) of a list of `total` items.
    fn render_page<T: Serialize>(
        &self,
        total: usize,
        page_items: &[&T],
        total_amount: Option<Decimal>,
    ) -> Response {
        let per_page = self.query.per_page;
        let last_page = total.div_ceil(per_page).max(1);
        let page = self.query.page;
        let envelope = Envelope {
            data: page_items,
            meta: MetaData {
                total_records: total,
                first_page_url: self.url(1),
                last_page_url: self.url(last_page),
                next_page_url: (page < last_page).then(|| self.url(page + 1)),
                previous_page_url: (page > 1).then(|| self.url((page - 1).min(last_page))),
                total_amount,
            },
        };
        ok(&envelope)
    }
}

#[derive(Serialize)]
struct Envelope<'a, T> {
    #[serde(rename = "Data")]
    data: &'a [&'a T],
    #[serde(rename = "MetaData")]
    meta: MetaData,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct MetaData {
    total_records: usize,
    first_page_url: String,
    last_page_url: String,
    next_page_url: Option<String>,
    previous_page_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_dec")]
    total_amount: Option<Decimal>,
}

// ---------------------------------------------------------------- session token

async fn login_begin(State(kf): Kf, KfJson(input): KfJson<LoginInput>) -> KfResult<Response> {
    let user_name = input
        .user_name
        .ok_or_else(|| KfError::validation("UserName is required."))?;
    let password = input
        .password
        .ok_or_else(|| KfError::validation("Password is required."))?;
    let (token, positions) = kf.sessions().begin(
        kf.config(),
        &user_name,
        &password,
        std::time::Instant::now(),
    )?;
    let list: Vec<serde_json::Value> = positions
        .iter()
        .map(|p| serde_json::json!({ "Position": p, "Value": "" }))
        .collect();
    Ok(created(&serde_json::json!({
        "TemporaryToken": token,
        "MemorableWordList": list,
        "IsAdmin": true,
        "SubscriptionExpired": false,
        "HasTemporaryPassword": false,
        "PackageName": "Business",
        "PartnerId": 0,
        "PartnerBrandingOptOut": false,
    })))
}

async fn login_complete(
    State(kf): Kf,
    KfJson(input): KfJson<MemorableWordInput>,
) -> KfResult<Response> {
    let temporary = input
        .temporary_token
        .ok_or_else(|| KfError::validation("TemporaryToken is required."))?;
    let answers: Vec<(i64, String)> = input
        .memorable_word_list
        .ok_or_else(|| KfError::validation("MemorableWordList is required."))?
        .into_iter()
        .map(|c| (c.position.map_or(0, |p| p.0), c.value.unwrap_or_default()))
        .collect();
    let token =
        kf.sessions()
            .complete(kf.config(), &temporary, &answers, std::time::Instant::now())?;
    let expiry = (Utc::now() + chrono::Duration::days(365)).naive_utc();
    Ok(ok(&serde_json::json!({
        "SessionToken": token,
        "CompanyName": kf.config().company_name,
        "IsAdmin": true,
        "SubscriptionExpired": false,
        "PartnerId": 0,
        "PackageName": "Business",
        "StartPageUrl": "",
        "SubscriptionExpiryDate": expiry.format("%Y-%m-%d %H:%M:%S").to_string(),
        "HasTemporaryPassword": false,
    })))
}

async fn logout_path(State(kf): Kf, path: PathOne) -> KfResult<Response> {
    let token = path_one(path)?;
    kf.sessions().logout(&token);
    Ok(ok(&serde_json::json!({})))
}

async fn logout_header(State(kf): Kf, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(char::is_whitespace))
        .map(|(_, token)| token.to_owned());
    if let Some(token) = token {
        kf.sessions().logout(&token);
    }
    ok(&serde_json::json!({}))
}

// ---------------------------------------------------------------- customers

async fn customers_list(State(kf): Kf, uri: OriginalUri, headers: HeaderMap) -> KfResult<Response> {
    let page = Page::new(&kf, &uri, &headers)?;
    let data = kf.read();
    let customers = list_customers(&data, &page.query)?;
    Ok(page.render(&customers, None))
}

async fn customer_create(
    State(kf): Kf,
    KfJson(input): KfJson<CustomerInput>,
) -> KfResult<Response> {
    let mut data = kf.write();
    let customer = data.create_customer(input, now())?;
    Ok(created(customer))
}

async fn customer_get(State(kf): Kf, path: PathOne) -> KfResult<Response> {
    let code = path_one(path)?;
    let data = kf.read();
    Ok(ok(data.customer(&code)?))
}

async fn customer_update(
    State(kf): Kf,
    path: PathOne,
    KfJson(input): KfJson<CustomerInput>,
) -> KfResult<Response> {
    let code = path_one(path)?;
    let mut data = kf.write();
    let (customer, code_changed) = data.update_customer(&code, input, now())?;
    Ok(if code_changed {
        created(customer)
    } else {
        ok(customer)
    })
}

async fn customer_delete(State(kf): Kf, path: PathOne) -> KfResult<StatusCode> {
    let code = path_one(path)?;
    kf.write().delete_customer(&code)?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- invoices

async fn invoices_list(State(kf): Kf, uri: OriginalUri, headers: HeaderMap) -> KfResult<Response> {
    let page = Page::new(&kf, &uri, &headers)?;
    let data = kf.read();
    let list = kf.invoice_list(page.query.key_without_page(), kf.version(), || {
        let invoices = list_invoices(&data, &page.query)?;
        Ok(InvoiceList {
            total_amount: invoices.iter().map(|h| h.gross_amount).sum(),
            numbers: invoices.iter().map(|h| h.number).collect(),
        })
    })?;
    let (start, end) = page.range(list.numbers.len());
    let items: Vec<&InvoiceHeader> = list.numbers[start..end]
        .iter()
        .filter_map(|number| data.invoices.get(number).map(|i| &i.header))
        .collect();
    Ok(page.render_page(list.numbers.len(), &items, Some(list.total_amount)))
}

async fn invoice_create(State(kf): Kf, KfJson(input): KfJson<InvoiceInput>) -> KfResult<Response> {
    let mut data = kf.write();
    let number = data.create_invoice(input, now())?;
    Ok(created(&data.invoice_detail(number)?))
}

async fn invoice_get(State(kf): Kf, path: PathOne) -> KfResult<Response> {
    let number = parse_key(&path_one(path)?, "Invoice")?;
    let data = kf.read();
    Ok(ok(&data.invoice_detail(number)?))
}

async fn invoice_update(
    State(kf): Kf,
    path: PathOne,
    KfJson(input): KfJson<InvoiceInput>,
) -> KfResult<Response> {
    let number = parse_key(&path_one(path)?, "Invoice")?;
    let mut data = kf.write();
    let (number, changed) = data.update_invoice(number, input, now())?;
    let detail = data.invoice_detail(number)?;
    Ok(if changed {
        created(&detail)
    } else {
        ok(&detail)
    })
}

async fn invoice_delete(State(kf): Kf, path: PathOne) -> KfResult<StatusCode> {
    let number = parse_key(&path_one(path)?, "Invoice")?;
    kf.write().delete_invoice(number)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn bulk_create(State(kf): Kf, KfJson(input): KfJson<BulkPaymentInput>) -> KfResult<Response> {
    let mut data = kf.write();
    let bulk = data.create_bulk_payment(input, now())?;
    Ok(created(bulk))
}

async fn bulk_get(State(kf): Kf, path: PathOne) -> KfResult<Response> {
    let number = parse_key(&path_one(path)?, "Bulk payment")?;
    let data = kf.read();
    Ok(ok(data.bulk_payment(number)?))
}

async fn bulk_delete(State(kf): Kf, path: PathOne) -> KfResult<StatusCode> {
    let number = parse_key(&path_one(path)?, "Bulk payment")?;
    kf.write().delete_bulk_payment(number, now())?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- products and nominals

async fn products_list(State(kf): Kf, uri: OriginalUri, headers: HeaderMap) -> KfResult<Response> {
    let page = Page::new(&kf, &uri, &headers)?;
    let data = kf.read();
    let products: Vec<&Product> = data.products.values().collect();
    Ok(page.render(&products, None))
}

async fn products_all(State(kf): Kf) -> Response {
    let data = kf.read();
    let products: Vec<&Product> = data.products.values().collect();
    ok(&products)
}

async fn product_create(State(kf): Kf, KfJson(input): KfJson<ProductInput>) -> KfResult<Response> {
    let mut data = kf.write();
    Ok(created(data.create_product(input)?))
}

async fn product_get(State(kf): Kf, path: PathTwo) -> KfResult<Response> {
    let (nominal, code) = path_two(path)?;
    let nominal = parse_key(&nominal, "Nominal code")?;
    let data = kf.read();
    Ok(ok(data.product(nominal, &code)?))
}

async fn product_update(
    State(kf): Kf,
    path: PathTwo,
    KfJson(input): KfJson<ProductInput>,
) -> KfResult<Response> {
    let (nominal, code) = path_two(path)?;
    let nominal = parse_key(&nominal, "Nominal code")?;
    let mut data = kf.write();
    let before = (nominal, code.to_ascii_lowercase());
    let product = data.update_product(nominal, &code, input)?;
    let key_changed = (product.nominal_code, product.code.to_ascii_lowercase()) != before;
    Ok(if key_changed {
        created(product)
    } else {
        ok(product)
    })
}

async fn product_delete(State(kf): Kf, path: PathTwo) -> KfResult<StatusCode> {
    let (nominal, code) = path_two(path)?;
    let nominal = parse_key(&nominal, "Nominal code")?;
    kf.write().delete_product(nominal, &code)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn nominals_list(State(kf): Kf, uri: OriginalUri) -> KfResult<Response> {
    let query = ListQuery::parse(uri.0.query(), usize::MAX, usize::MAX)?;
    let kind = query.filter("type").map(str::to_lowercase);
    let search = query.filter("searchtext").map(str::to_lowercase);
    let data = kf.read();
    let nominals: Vec<&Nominal> = data
        .nominals
        .values()
        .filter(|n| kind.as_deref().is_none_or(|k| n.kind.to_lowercase() == k))
        .filter(|n| {
            search
                .as_deref()
                .is_none_or(|s| n.name.to_lowercase().contains(s) || n.code.to_string().contains(s))
        })
        .collect();
    Ok(ok(&nominals))
}

async fn nominal_get(State(kf): Kf, path: PathOne) -> KfResult<Response> {
    let code = parse_key(&path_one(path)?, "Nominal code")?;
    let data = kf.read();
    Ok(ok(data.nominal_by_code(code)?))
}

async fn nominal_create(State(kf): Kf, KfJson(input): KfJson<NominalInput>) -> KfResult<Response> {
    let mut data = kf.write();
    let (nominal, was_created) = data.create_nominal(input)?;
    Ok(if was_created {
        created(nominal)
    } else {
        ok(nominal)
    })
}

async fn nominal_products(State(kf): Kf, path: PathOne) -> KfResult<Response> {
    let code = parse_key(&path_one(path)?, "Nominal code")?;
    let data = kf.read();
    data.nominal_by_code(code)?;
    let products: Vec<&Product> = data
        .products
        .values()
        .filter(|p| p.nominal_code == code)
        .collect();
    Ok(ok(&products))
}

// ---------------------------------------------------------------- reference data

async fn vat_rates(State(kf): Kf) -> Response {
    ok(&kf.read().vat_rates)
}

async fn taxes(State(kf): Kf, uri: OriginalUri) -> KfResult<Response> {
    let query = ListQuery::parse(uri.0.query(), usize::MAX, usize::MAX)?;
    let kind = match query.filter("type").map(str::to_ascii_lowercase).as_deref() {
        None => None,
        Some("supply") => Some("supply"),
        Some("purchase") => Some("purchase"),
        Some(other) => {
            return Err(KfError::validation(format!(
                "type `{other}` is not supply or purchase."
            )))
        }
    };
    let data = kf.read();
    let taxes: Vec<&Tax> = data
        .taxes
        .iter()
        .filter(|t| kind.is_none_or(|k| t.kind == k))
        .collect();
    Ok(ok(&serde_json::json!({ "Tax": taxes })))
}

async fn country_vat_rates() -> Response {
    // Observed live: an empty object.
    ok(&serde_json::json!({}))
}

async fn currencies(State(kf): Kf) -> Response {
    ok(&kf.read().currencies)
}

async fn payment_methods(State(kf): Kf, path: PathOne) -> KfResult<Response> {
    let kind = path_one(path)?;
    if !kind.eq_ignore_ascii_case("invoice") && !kind.eq_ignore_ascii_case("purchase") {
        return Err(KfError::not_found(format!(
            "Payment method type {kind} was not found (use invoice or purchase)."
        )));
    }
    Ok(ok(&kf.read().payment_methods))
}

async fn bank_accounts(State(kf): Kf) -> Response {
    ok(&kf.read().bank_accounts)
}

async fn bank_account(State(kf): Kf, path: PathOne) -> KfResult<Response> {
    let id = parse_key(&path_one(path)?, "Bank account")?;
    let data = kf.read();
    let account = data
        .bank_accounts
        .iter()
        .find(|a| a.id == id)
        .ok_or_else(|| KfError::not_found(format!("Bank account {id} was not found.")))?;
    Ok(ok(account))
}
