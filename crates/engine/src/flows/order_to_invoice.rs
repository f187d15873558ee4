//! `order-to-invoice`: every submitted OrderCloud order becomes exactly one
//! KashFlow sales invoice, and the order is marked with the invoice number.
//!
//! Steps (each journaled; a resumed run skips the ones done):
//! 1. `get_order` — the order named by the webhook (`RouteParams.orderID`)
//!    and all its line items (every page), fetched side by side;
//! 2. `customer` — find or create the KashFlow customer (code derived from
//!    the OrderCloud user; name = first + last; billing address in lines);
//! 3. `contact` (only with an xConnect connection) — the buyer as an
//!    xConnect contact identified by the OrderCloud user id; a duplicate
//!    (409) is found and linked;
//! 4. `invoice` — create the invoice once (business key = order id, also
//!    sent as `CustomerReference`, which is how an uncertain create is found
//!    again); lines with VAT by tax class and country, nominal codes from
//!    KashFlow's products or the default, the order's currency with its
//!    exchange rate;
//! 5. `mark_order` — the order's status mapped to an invoice state
//!    (`status_map`, default `Completed` → paid; a paid order gets one
//!    payment for the invoice's outstanding amount, recorded once), then
//!    PATCH the order's `xp` with the invoice number and that state.
//!
//! Runs start on `submit` and on `complete` of an order: the second run
//! finds the invoice in the ledger and only settles and marks.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledgerbridge_connectors::kashflow::{
    Address as KfAddress, Contact, Currency, Customer, Invoice, KashFlowClient, LineItem as KfLine,
    PaymentLine, Product,
};
use ledgerbridge_connectors::ordercloud::{Address, Direction, LineItem, Order, OrderCloudClient};
use ledgerbridge_connectors::xconnect::{NewContact, XConnectClient};
use ledgerbridge_core::{BusinessKey, ErrorClass, Failure};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::flow::{Flow, Mode, PlannedRequest, StepCtx, Trigger};
use crate::flows::customer_sync::{self, CustomerRecord};
use crate::flows::mapped_invoice::FlowFileMapping;
use crate::flows::payments::{is_payment_flow_reference, order_status_reference};

/// The flow's name.
pub const NAME: &str = "order-to-invoice";

/// What to do with a line whose product KashFlow does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownProduct {
    /// Use the default nominal code and record a warning.
    DefaultNominal,
    /// Park the run: a human decides.
    Park,
}

/// KashFlow products by upper-cased code, shared between runs.
type ProductIndex = Arc<HashMap<String, Product>>;

/// Settings of the flow (`[flows.order-to-invoice]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrderToInvoiceSettings {
    /// Run this flow when KashFlow and OrderCloud connections are configured.
    pub enabled: bool,
    /// Whose orders we read: `Incoming` for the marketplace owner.
    pub direction: String,
    /// KashFlow customer code = prefix + the OrderCloud user id.
    pub customer_code_prefix: String,
    /// KashFlow's home currency.
    pub home_currency: String,
    /// Units of each foreign currency per one unit of the home currency.
    pub exchange_rates: BTreeMap<String, Decimal>,
    /// VAT percentage per tax class (product `xp.TaxClass`).
    pub tax_classes: BTreeMap<String, Decimal>,
    /// Class used when a product has none.
    pub default_tax_class: String,
    /// Countries (ISO alpha-2) where VAT is charged; sales billed elsewhere
    /// are exports, zero-rated and VAT-exempt.
    pub vat_countries: Vec<String>,
    /// Nominal code for lines whose product has none in KashFlow.
    pub default_nominal_code: i64,
    /// Nominal code of the shipping line.
    pub shipping_nominal_code: i64,
    /// Products unknown to KashFlow.
    pub unknown_product: UnknownProduct,
    /// Days until the invoice is due.
    pub payment_terms_days: i64,
    /// How long KashFlow's product list is cached.
    pub product_cache_secs: u64,
    /// OrderCloud order status → invoice state (`paid` or `unpaid`);
    /// statuses not listed leave the invoice unpaid.
    pub status_map: BTreeMap<String, InvoiceState>,
    /// KashFlow payment method of payments for paid orders.
    pub payment_method_id: Option<i64>,
    /// KashFlow bank account those payments go to.
    pub bank_account_id: Option<i64>,
    /// A flow file whose `order_facts`, `lines` and `invoice_body` map
    /// steps build the invoice instead of the built-in mapping (e.g.
    /// `flows/order-to-invoice.yaml`). Runs then record its version too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapping_file: Option<std::path::PathBuf>,
}

/// The state an order's status maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceState {
    /// Invoiced, payment outstanding.
    Unpaid,
    /// Paid in full: a payment is recorded against the invoice.
    Paid,
}

impl InvoiceState {
    /// The word written to the order's `xp.InvoiceStatus`.
    pub fn xp_status(self) -> &'static str {
        match self {
            InvoiceState::Unpaid => "Invoiced",
            InvoiceState::Paid => "Paid",
        }
    }
}

impl Default for OrderToInvoiceSettings {
    fn default() -> Self {
        let dec = |n: i64| Decimal::from(n);
        let eu = [
            "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
            "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
        ];
        OrderToInvoiceSettings {
            enabled: true,
            direction: "Incoming".to_owned(),
            customer_code_prefix: "OC-".to_owned(),
            home_currency: "GBP".to_owned(),
            exchange_rates: BTreeMap::from([
                ("EUR".to_owned(), Decimal::new(117, 2)),
                ("USD".to_owned(), Decimal::new(127, 2)),
            ]),
            tax_classes: BTreeMap::from([
                ("standard".to_owned(), dec(20)),
                ("reduced".to_owned(), dec(5)),
                ("zero".to_owned(), dec(0)),
            ]),
            default_tax_class: "standard".to_owned(),
            vat_countries: std::iter::once("GB").chain(eu).map(str::to_owned).collect(),
            default_nominal_code: 4000,
            shipping_nominal_code: 4010,
            unknown_product: UnknownProduct::DefaultNominal,
            payment_terms_days: 30,
            product_cache_secs: 60,
            status_map: BTreeMap::from([("Completed".to_owned(), InvoiceState::Paid)]),
            payment_method_id: None,
            bank_account_id: None,
            mapping_file: None,
        }
    }
}

impl OrderToInvoiceSettings {
    fn direction(&self) -> Result<Direction, Failure> {
        match self.direction.to_ascii_lowercase().as_str() {
            "incoming" => Ok(Direction::Incoming),
            "outgoing" => Ok(Direction::Outgoing),
            "all" => Ok(Direction::All),
            other => Err(Failure::validation(format!(
                "flow setting direction = {other:?}; use Incoming, Outgoing or All"
            ))),
        }
    }
}

/// The flow, bound to its connections.
pub struct OrderToInvoice {
    settings: OrderToInvoiceSettings,
    kashflow: KashFlowClient,
    kashflow_connection: String,
    kashflow_url: String,
    ordercloud: OrderCloudClient,
    ordercloud_url: String,
    version: String,
    triggers: Vec<Trigger>,
    steps: Vec<&'static str>,
    xconnect: Option<XConnectClient>,
    products: Mutex<Option<(Instant, ProductIndex)>>,
    mapping: Option<FlowFileMapping>,
}

impl OrderToInvoice {
    /// The flow over a KashFlow and an OrderCloud connection.
    pub fn new(
        settings: OrderToInvoiceSettings,
        kashflow: KashFlowClient,
        kashflow_connection: &str,
        kashflow_url: &str,
        ordercloud: OrderCloudClient,
        ordercloud_url: &str,
    ) -> Self {
        let digest = {
            use sha2::Digest;
            let text = serde_json::to_string(&settings).unwrap_or_default();
            let hash = sha2::Sha256::digest(format!("{NAME}:2:{text}").as_bytes());
            hash.iter()
                .take(4)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        OrderToInvoice {
            settings,
            kashflow,
            kashflow_connection: kashflow_connection.to_owned(),
            kashflow_url: kashflow_url.trim_end_matches('/').to_owned(),
            ordercloud,
            ordercloud_url: ordercloud_url.trim_end_matches('/').to_owned(),
            version: format!("2+{digest}"),
            triggers: ["submit", "complete"]
                .into_iter()
                .map(|action| Trigger::OrderCloud {
                    route: format!("v1/orders/{{direction}}/{{orderID}}/{action}"),
                    verb: "POST".to_owned(),
                })
                .collect(),
            steps: vec!["get_order", "customer", "invoice", "mark_order"],
            xconnect: None,
            products: Mutex::new(None),
            mapping: None,
        }
    }

    /// Also keeps the buyer as an xConnect contact (step `contact`).
    pub fn with_xconnect(mut self, xconnect: XConnectClient) -> Self {
        self.xconnect = Some(xconnect);
        self.steps = vec!["get_order", "customer", "contact", "invoice", "mark_order"];
        self.version.push_str("+xc");
        self
    }

    /// The order's status mapped to an invoice state; a paid order gets
    /// one payment for what the invoice still owes, recorded once.
    async fn settle(
        &self,
        ctx: &mut StepCtx<'_>,
        order_id: &str,
        status: &str,
    ) -> Result<Value, Failure> {
        let status = status.to_owned();
        let state = self
            .settings
            .status_map
            .get(&status)
            .copied()
            .unwrap_or(InvoiceState::Unpaid);
        if state == InvoiceState::Unpaid {
            return Ok(json!({"state": state, "status": status}));
        }
        let number: i64 = ctx
            .output("invoice")?
            .get("number")
            .and_then(|n| n.as_str().and_then(|s| s.parse().ok()).or(n.as_i64()))
            .ok_or_else(|| {
                Failure::new(ErrorClass::Unknown, "the invoice step recorded no number")
            })?;
        let reference = order_status_reference(order_id);
        let key = BusinessKey::new(
            &self.kashflow_connection,
            "payment",
            format!("order:{order_id}"),
        );
        let planned = PlannedRequest {
            step: ctx.step.to_owned(),
            method: "PUT".to_owned(),
            url: format!("{}/invoices/{number}", self.kashflow_url),
            body: Some(json!({"PaymentLines": [{"Reference": reference}]})),
        };
        let kashflow = &self.kashflow;
        let settings = &self.settings;
        let reference_ref = &reference;
        let date = Utc::now().format("%Y-%m-%d %H:%M:%S").to_string();
        let note = format!("Order {status} in OrderCloud");
        let warning: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
        let warning_ref = &warning;
        let status_ref = &status;
        let paid = ctx
            .write_once(
                key,
                planned,
                self.kashflow.target().limits().timeout,
                || async move {
                    let invoice = kashflow.get_invoice(number).await?;
                    Ok(invoice.and_then(|i| {
                        i.payment_lines
                            .unwrap_or_default()
                            .iter()
                            .any(|p| p.reference.as_deref() == Some(reference_ref))
                            .then(|| reference_ref.clone())
                    }))
                },
                || async move {
                    // Read, decide and write under the invoice's payment
                    // lock: the payment flow may be paying it right now.
                    kashflow
                        .pay_invoice(number, |invoice| {
                            let lines = invoice.payment_lines.as_deref().unwrap_or_default();
                            if lines
                                .iter()
                                .any(|p| p.reference.as_deref() == Some(reference_ref))
                            {
                                return Ok((None, reference_ref.clone()));
                            }
                            // Money the gateway reported is on the invoice:
                            // the order's status does not pay it again.
                            let gateway: Vec<&str> = lines
                                .iter()
                                .filter_map(|p| p.reference.as_deref())
                                .filter(|r| is_payment_flow_reference(r))
                                .collect();
                            if !gateway.is_empty() {
                                *warning_ref
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                                    Some(format!(
                                        "order {order_id} is {status_ref}, but invoice {number} already has payments \
                                         from the gateway ({}); no payment made for the status, {} still due",
                                        gateway.join(", "),
                                        invoice.due_amount.unwrap_or_default()
                                    ));
                                return Ok((None, format!("{reference_ref} (paid by the gateway)")));
                            }
                            let outstanding = invoice
                                .due_amount
                                .or(invoice.gross_amount)
                                .unwrap_or_default();
                            if outstanding <= Decimal::ZERO {
                                return Ok((None, format!("{reference_ref} (nothing due)")));
                            }
                            let payment = PaymentLine {
                                date: Some(date),
                                amount: Some(outstanding),
                                method: settings.payment_method_id,
                                account_id: settings.bank_account_id,
                                reference: Some(reference_ref.clone()),
                                note: Some(note),
                                ..PaymentLine::default()
                            };
                            Ok((Some(payment), reference_ref.clone()))
                        })
                        .await
                },
            )
            .await?;
        if let Some(warning) = warning
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            ctx.warnings.push(warning);
        }
        Ok(json!({"state": state, "status": status, "payment": paid}))
    }

    /// Takes the invoice body from a flow file's `lines` and `invoice_body`
    /// map steps instead of [`map_invoice`]. The flow's version then names
    /// the file's version too (`2+settings/flow:N+hash`), so runs record
    /// which mapping they ran under.
    pub fn with_flow_file(mut self, mapping: FlowFileMapping) -> Self {
        self.version = format!("{}/flow:{}", self.version, mapping.version());
        self.mapping = Some(mapping);
        self
    }

    async fn products(&self) -> Result<ProductIndex, Failure> {
        let mut cache = self.products.lock().await;
        if let Some((at, products)) = cache.as_ref() {
            if at.elapsed() < Duration::from_secs(self.settings.product_cache_secs) {
                return Ok(products.clone());
            }
        }
        let list = self.kashflow.list_products().await?;
        let map: HashMap<String, Product> = list
            .into_iter()
            .filter_map(|p| p.code.clone().map(|code| (code.to_ascii_uppercase(), p)))
            .collect();
        let map = Arc::new(map);
        *cache = Some((Instant::now(), map.clone()));
        Ok(map)
    }
}

/// The order id a submit webhook names.
pub fn order_id_of(input: &Value) -> Result<String, Failure> {
    let from_params = input
        .pointer("/RouteParams/orderID")
        .and_then(Value::as_str);
    let from_body = input.pointer("/Response/Body/ID").and_then(Value::as_str);
    from_params
        .or(from_body)
        .filter(|id| !id.trim().is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            Failure::validation("the webhook names no order: RouteParams.orderID and Response.Body.ID are both missing")
        })
}

/// KashFlow customer code for an OrderCloud user: prefix + the user id,
/// upper-cased, characters outside `A-Z 0-9 - _` replaced by `-`.
pub fn customer_code(prefix: &str, user_id: &str) -> String {
    let cleaned: String = user_id
        .chars()
        .map(|c| {
            let c = c.to_ascii_uppercase();
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{prefix}{cleaned}")
}

/// Splits an OrderCloud address into KashFlow's four lines: street 1,
/// street 2, city, state (empty ones dropped, order kept).
pub fn address_lines(address: &Address) -> KfAddress {
    let mut lines: Vec<String> = [
        &address.street1,
        &address.street2,
        &address.city,
        &address.state,
    ]
    .into_iter()
    .filter_map(|part| {
        part.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    })
    .collect();
    lines.resize(4, String::new());
    let some = |s: &String| (!s.is_empty()).then(|| s.clone());
    KfAddress {
        line1: some(&lines[0]),
        line2: some(&lines[1]),
        line3: some(&lines[2]),
        line4: some(&lines[3]),
        post_code: address.zip.clone(),
        country_code: address.country.as_ref().map(|c| c.to_ascii_uppercase()),
        ..KfAddress::default()
    }
}

/// Money rounding: 2 dp, half away from zero.
pub fn round_money(value: Decimal) -> Decimal {
    value.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// `YYYY-MM-DD HH:mm:ss`, KashFlow's date format.
pub fn kashflow_date(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// The customer to create for an order.
pub fn map_customer(order: &Order, code: &str) -> Customer {
    let user = order.from_user.as_ref();
    let billing = order.billing_address.as_ref();
    let first = user
        .and_then(|u| u.first_name.clone())
        .or_else(|| billing.and_then(|a| a.first_name.clone()));
    let last = user
        .and_then(|u| u.last_name.clone())
        .or_else(|| billing.and_then(|a| a.last_name.clone()));
    let name = [first.as_deref(), last.as_deref()]
        .into_iter()
        .flatten()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let name = if name.is_empty() {
        code.to_owned()
    } else {
        name
    };
    Customer {
        code: Some(code.to_owned()),
        name: Some(name.clone()),
        contacts: Some(vec![Contact {
            name: Some(name),
            first_name: first,
            last_name: last,
            email: user.and_then(|u| u.email.clone()),
            telephone: user
                .and_then(|u| u.phone.clone())
                .or_else(|| billing.and_then(|a| a.phone.clone())),
            ..Contact::default()
        }]),
        addresses: billing.map(|a| vec![address_lines(a)]),
        ..Customer::default()
    }
}

/// What the mapping decided beyond the invoice itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapped {
    /// The invoice to create.
    pub invoice: Invoice,
    /// Things a human should know (e.g. a default nominal code was used).
    pub warnings: Vec<String>,
}

/// Maps an order and its lines to a KashFlow invoice.
pub fn map_invoice(
    settings: &OrderToInvoiceSettings,
    order: &Order,
    lines: &[LineItem],
    products: &HashMap<String, Product>,
    customer_code: &str,
) -> Result<Mapped, Failure> {
    let order_id = order.id.clone().unwrap_or_default();
    let country = order
        .billing_address
        .as_ref()
        .and_then(|a| a.country.clone())
        .unwrap_or_else(|| "GB".to_owned())
        .to_ascii_uppercase();
    let charges_vat = settings
        .vat_countries
        .iter()
        .any(|c| c.eq_ignore_ascii_case(&country));
    let rate_of = |class: &str| -> Result<Decimal, Failure> {
        settings.tax_classes.get(class).copied().ok_or_else(|| {
            Failure::validation(format!(
                "order {order_id}: tax class {class:?} has no rate; known classes: {}",
                settings
                    .tax_classes
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    };
    let too_big = |what: &str| {
        Failure::validation(format!(
            "order {order_id} {what}: the amounts are beyond what an amount can hold (28 significant digits)"
        ))
    };
    let mut warnings = Vec::new();
    let mut kf_lines = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let line_no = index + 1;
        let product_id = line.product_id.clone().unwrap_or_default();
        let quantity = Decimal::from(line.quantity.unwrap_or(0));
        if quantity <= Decimal::ZERO {
            return Err(Failure::validation(format!(
                "order {order_id} line {line_no} ({product_id}): quantity must be at least 1"
            )));
        }
        let unit = line.unit_price.ok_or_else(|| {
            Failure::validation(format!(
                "order {order_id} line {line_no} ({product_id}): no UnitPrice"
            ))
        })?;
        let product_xp = line.product.as_ref().and_then(|p| p.xp.as_ref());
        let class = product_xp
            .and_then(|xp| xp.get("TaxClass"))
            .and_then(Value::as_str)
            .unwrap_or(&settings.default_tax_class)
            .to_ascii_lowercase();
        let vat_level = if charges_vat {
            rate_of(&class)?
        } else {
            Decimal::ZERO
        };
        let known = products.get(&product_id.to_ascii_uppercase());
        let nominal = match known.and_then(|p| p.nominal_code) {
            Some(code) => code,
            None => match settings.unknown_product {
                UnknownProduct::DefaultNominal => {
                    warnings.push(format!(
                        "order {order_id} line {line_no}: product {product_id} is unknown to KashFlow; nominal code {} used",
                        settings.default_nominal_code
                    ));
                    settings.default_nominal_code
                }
                UnknownProduct::Park => {
                    return Err(Failure::validation(format!(
                        "order {order_id} line {line_no}: product {product_id} is unknown to KashFlow (policy: park)"
                    )))
                }
            },
        };
        let mut description = line
            .product
            .as_ref()
            .and_then(|p| p.name.clone())
            .unwrap_or_else(|| product_id.clone());
        if let Some(variant) = line.variant.as_ref().and_then(|v| v.name.clone()) {
            description = format!("{description} — {variant}");
        }
        kf_lines.push(
            kf_line(
                description,
                quantity,
                unit,
                vat_level,
                !charges_vat,
                nominal,
                known.map(|_| product_id.clone()),
            )
            .ok_or_else(|| too_big(&format!("line {line_no} ({product_id})")))?,
        );
        let discount = line.promotion_discount.unwrap_or_default();
        if discount > Decimal::ZERO {
            kf_lines.push(
                kf_line(
                    format!("Discount: {product_id}"),
                    Decimal::ONE,
                    -discount,
                    vat_level,
                    !charges_vat,
                    nominal,
                    None,
                )
                .ok_or_else(|| too_big(&format!("line {line_no} ({product_id}) discount")))?,
            );
        }
    }
    let shipping = order.shipping_cost.unwrap_or_default();
    if shipping > Decimal::ZERO {
        let vat_level = if charges_vat {
            rate_of(&settings.default_tax_class)?
        } else {
            Decimal::ZERO
        };
        kf_lines.push(
            kf_line(
                "Shipping".to_owned(),
                Decimal::ONE,
                shipping,
                vat_level,
                !charges_vat,
                settings.shipping_nominal_code,
                None,
            )
            .ok_or_else(|| too_big("shipping"))?,
        );
    }
    let line_discounts = lines
        .iter()
        .filter_map(|l| l.promotion_discount)
        .try_fold(Decimal::ZERO, Decimal::checked_add)
        .ok_or_else(|| too_big("line discounts"))?;
    let order_discount = order
        .promotion_discount
        .unwrap_or_default()
        .checked_sub(line_discounts)
        .ok_or_else(|| too_big("order discount"))?;
    if order_discount > Decimal::ZERO {
        let vat_level = if charges_vat {
            rate_of(&settings.default_tax_class)?
        } else {
            Decimal::ZERO
        };
        kf_lines.push(
            kf_line(
                "Order discount".to_owned(),
                Decimal::ONE,
                -order_discount,
                vat_level,
                !charges_vat,
                settings.default_nominal_code,
                None,
            )
            .ok_or_else(|| too_big("order discount"))?,
        );
    }
    let currency_code = order
        .currency
        .clone()
        .or_else(|| {
            order
                .xp
                .as_ref()
                .and_then(|xp| xp.get("Currency"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| settings.home_currency.clone())
        .to_ascii_uppercase();
    let exchange_rate = if currency_code == settings.home_currency {
        Decimal::ONE
    } else {
        *settings.exchange_rates.get(&currency_code).ok_or_else(|| {
            Failure::validation(format!(
                "order {order_id} is in {currency_code}, which has no exchange rate to {} configured",
                settings.home_currency
            ))
        })?
    };
    let issued = order
        .date_submitted
        .or(order.date_created)
        .unwrap_or_else(Utc::now);
    let due = chrono::Duration::try_days(settings.payment_terms_days)
        .and_then(|terms| issued.checked_add_signed(terms))
        .ok_or_else(|| {
            Failure::validation(format!(
                "order {order_id}: issued {issued} plus payment_terms_days = {} is beyond the calendar",
                settings.payment_terms_days
            ))
        })?;
    let invoice = Invoice {
        customer_code: Some(customer_code.to_owned()),
        customer_reference: Some(order_id.clone()),
        issued_date: Some(kashflow_date(issued)),
        due_date: Some(kashflow_date(due)),
        currency: Some(Currency {
            code: Some(currency_code),
            exchange_rate: Some(exchange_rate),
            ..Currency::default()
        }),
        address: order.billing_address.as_ref().map(address_lines),
        line_items: Some(kf_lines),
        ..Invoice::default()
    };
    Ok(Mapped { invoice, warnings })
}

/// A KashFlow line; `None` when its VAT is beyond what an amount can hold
/// (hostile or broken order data: 28 significant digits at most).
fn kf_line(
    description: String,
    quantity: Decimal,
    rate: Decimal,
    vat_level: Decimal,
    exempt: bool,
    nominal: i64,
    product_code: Option<String>,
) -> Option<KfLine> {
    let vat = quantity
        .checked_mul(rate)?
        .checked_mul(vat_level)?
        .checked_div(Decimal::ONE_HUNDRED)?;
    Some(KfLine {
        description: Some(description),
        quantity: Some(quantity),
        rate: Some(rate),
        vat_level: Some(vat_level),
        vat_amount: Some(round_money(vat)),
        vat_exempt: Some(exempt),
        nominal_code: Some(nominal),
        product_code,
        project_number: Some(0),
        ..KfLine::default()
    })
}

/// Who placed an order: the only fields the customer and contact steps
/// read, decoded without the rest of the journaled order.
#[derive(Deserialize)]
struct Party {
    #[serde(rename = "FromUserID", default)]
    from_user_id: Option<String>,
    #[serde(rename = "FromUser", default)]
    from_user: Option<ledgerbridge_connectors::ordercloud::User>,
    #[serde(rename = "BillingAddress", default)]
    billing_address: Option<Address>,
}

/// The journaled order, with only who placed it.
fn party_of(value: &Value) -> Result<Order, Failure> {
    let party: Party = decode(value, "order")?;
    Ok(Order {
        from_user_id: party.from_user_id,
        from_user: party.from_user,
        billing_address: party.billing_address,
        ..Order::default()
    })
}

fn decode<T: serde::de::DeserializeOwned>(value: &Value, what: &str) -> Result<T, Failure> {
    T::deserialize(value).map_err(|e| {
        Failure::new(
            ErrorClass::Unknown,
            format!("journaled {what} cannot be read: {e}"),
        )
    })
}

fn encode<T: Serialize>(value: &T) -> Result<Value, Failure> {
    serde_json::to_value(value).map_err(|e| {
        Failure::new(
            ErrorClass::Unknown,
            format!("cannot encode step output: {e}"),
        )
    })
}

#[async_trait]
impl Flow for OrderToInvoice {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> &str {
        &self.version
    }

    fn triggers(&self) -> &[Trigger] {
        &self.triggers
    }

    fn steps(&self) -> &[&'static str] {
        &self.steps
    }

    async fn run_step(&self, step: &str, ctx: &mut StepCtx<'_>) -> Result<Value, Failure> {
        let direction = self.settings.direction()?;
        match step {
            "get_order" => {
                // The order and all its lines, fetched side by side.
                let id = order_id_of(ctx.input())?;
                let (order, lines) = tokio::join!(
                    self.ordercloud.get_order(direction, &id),
                    self.ordercloud.list_line_items(direction, &id),
                );
                let order = order?.ok_or_else(|| {
                    Failure::new(
                        ErrorClass::NotFound,
                        format!("OrderCloud has no order {id}"),
                    )
                })?;
                let lines = lines?;
                if lines.is_empty() {
                    return Err(Failure::validation(format!("order {id} has no line items")));
                }
                Ok(json!({ "order": encode(&order)?, "lines": encode(&lines)? }))
            }
            "customer" => {
                let order = party_of(&ctx.output("get_order")?["order"])?;
                let user_id = order
                    .from_user_id
                    .clone()
                    .or_else(|| order.from_user.as_ref().and_then(|u| u.id.clone()))
                    .ok_or_else(|| Failure::validation("the order has no FromUserID"))?;
                let code = customer_code(&self.settings.customer_code_prefix, &user_id);
                let customer = map_customer(&order, &code);
                let key = BusinessKey::new(&self.kashflow_connection, "customer", &code);
                let planned = PlannedRequest {
                    step: step.to_owned(),
                    method: "POST".to_owned(),
                    url: format!("{}/customers", self.kashflow_url),
                    body: Some(encode(&customer)?),
                };
                let kashflow = &self.kashflow;
                let code_ref = &code;
                // What KashFlow gets is what OrderCloud held when the order was
                // placed: customer sync's common ancestor of the two records,
                // noted by whichever run creates the customer, just before its
                // POST (see `customer_sync::save_base`).
                let store = ctx.store();
                let base = CustomerRecord::from_customer(&customer);
                let linked = ctx
                    .write_once(
                        key,
                        planned,
                        self.kashflow.target().limits().timeout,
                        || async move {
                            Ok(kashflow.get_customer(code_ref).await?.and_then(|c| c.code))
                        },
                        || async move {
                            customer_sync::save_base(store, code_ref, &base).await?;
                            match kashflow.create_customer(&customer).await {
                                Ok(created) => Ok(created.code.unwrap_or_else(|| code_ref.clone())),
                                // Created meanwhile by someone else: link it.
                                Err(f)
                                    if f.class == ErrorClass::Validation
                                        && kashflow.get_customer(code_ref).await?.is_some() =>
                                {
                                    Ok(code_ref.clone())
                                }
                                Err(f) => Err(f),
                            }
                        },
                    )
                    .await?;
                Ok(json!({ "code": linked }))
            }
            "contact" => {
                let Some(xconnect) = &self.xconnect else {
                    return Ok(json!({"skipped": "no xConnect connection"}));
                };
                let order = party_of(&ctx.output("get_order")?["order"])?;
                let user = order.from_user.clone().unwrap_or_default();
                let user_id = order
                    .from_user_id
                    .clone()
                    .or(user.id.clone())
                    .ok_or_else(|| Failure::validation("the order has no FromUserID"))?;
                let contact = NewContact {
                    source: "ordercloud",
                    identifier: &user_id,
                    first_name: user.first_name.as_deref().unwrap_or_default(),
                    last_name: user.last_name.as_deref().unwrap_or_default(),
                    email: user.email.as_deref(),
                };
                if ctx.mode == Mode::DryRun {
                    if let Some(found) = xconnect.find_contact("ordercloud", &user_id).await? {
                        return Ok(json!({"contact": found, "linked": true}));
                    }
                    ctx.plan(
                        "POST",
                        "xconnect:/contacts",
                        Some(json!({"identifier": user_id})),
                    );
                    return Ok(json!({"contact": null}));
                }
                // Idempotent by itself: a repeat (or a duplicate made by
                // someone else) answers 409 and is found and linked.
                let (id, how) = xconnect.create_or_link_contact(contact).await?;
                Ok(
                    json!({"contact": id, "linked": how == ledgerbridge_connectors::xconnect::ContactLink::Linked}),
                )
            }
            "invoice" => {
                let order: Order = decode(&ctx.output("get_order")?["order"], "order")?;
                let lines: Vec<LineItem> =
                    decode(&ctx.output("get_order")?["lines"], "line items")?;
                let code = ctx
                    .output("customer")?
                    .get("code")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let products = self.products().await?;
                let mapped = match &self.mapping {
                    Some(file) => Mapped {
                        invoice: file.invoice(&order, &lines, &products, &code)?,
                        warnings: Vec::new(),
                    },
                    None => map_invoice(&self.settings, &order, &lines, &products, &code)?,
                };
                ctx.warnings.extend(mapped.warnings.iter().cloned());
                let order_id = order.id.clone().unwrap_or_default();
                let key = BusinessKey::new(
                    &self.kashflow_connection,
                    "invoice",
                    format!("order:{order_id}"),
                );
                let planned = PlannedRequest {
                    step: step.to_owned(),
                    method: "POST".to_owned(),
                    url: format!("{}/invoices", self.kashflow_url),
                    body: Some(encode(&mapped.invoice)?),
                };
                let kashflow = &self.kashflow;
                let reference = &order_id;
                let invoice = mapped.invoice;
                let number = ctx
                    .write_once(
                        key,
                        planned,
                        self.kashflow.target().limits().timeout,
                        || async move {
                            let found = kashflow.find_invoices_by_reference(reference).await?;
                            Ok(found
                                .iter()
                                .filter_map(|i| i.number)
                                .min()
                                .map(|n| n.to_string()))
                        },
                        || async move {
                            let created = kashflow.create_invoice(&invoice).await?;
                            created.number.map(|n| n.to_string()).ok_or_else(|| {
                                Failure::new(
                                    ErrorClass::Unknown,
                                    "KashFlow created the invoice but returned no Number",
                                )
                                .uncertain()
                            })
                        },
                    )
                    .await?;
                Ok(json!({ "number": number, "warnings": mapped.warnings }))
            }
            "mark_order" => {
                // Only the id and status are needed: read them, not the order.
                let fetched = &ctx.output("get_order")?["order"];
                let order_id = fetched["ID"].as_str().unwrap_or_default().to_owned();
                let status = fetched["Status"].as_str().unwrap_or_default().to_owned();
                let number = ctx
                    .output("invoice")?
                    .get("number")
                    .cloned()
                    .unwrap_or(Value::Null);
                // KashFlow invoice numbers are integers: keep them so in xp.
                let number = match number.as_str().map(str::parse::<i64>) {
                    Some(Ok(n)) => Value::from(n),
                    _ => number,
                };
                // Settle first: a payment made here is linked even if the
                // patch below fails, so the retry only patches.
                let settled = self.settle(ctx, &order_id, &status).await?;
                let state: InvoiceState = settled
                    .get("state")
                    .cloned()
                    .and_then(|v| serde_json::from_value(v).ok())
                    .unwrap_or(InvoiceState::Unpaid);
                let patch = json!({"xp": {
                    "KashFlowInvoiceNumber": number,
                    "InvoiceStatus": state.xp_status(),
                    "LedgerbridgeRunID": ctx.run.id.to_string(),
                }});
                if ctx.mode == Mode::DryRun {
                    ctx.plan(
                        "PATCH",
                        &format!(
                            "{}/v1/orders/{}/{order_id}",
                            self.ordercloud_url,
                            direction.as_str()
                        ),
                        Some(patch),
                    );
                    return Ok(json!({"patched": false, "settled": settled}));
                }
                self.ordercloud
                    .patch_order(direction, &order_id, &patch)
                    .await?;
                Ok(json!({"patched": true, "settled": settled}))
            }
            other => Err(Failure::new(
                ErrorClass::Unknown,
                format!("{NAME} has no step {other:?}"),
            )),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn order(json: Value) -> Order {
        serde_json::from_value(json).unwrap()
    }

    fn line(product: &str, qty: i64, price: &str, class: Option<&str>) -> LineItem {
        serde_json::from_value(json!({
            "ID": format!("L-{product}"), "ProductID": product, "Quantity": qty,
            "UnitPrice": price.parse::<f64>().unwrap(),
            "Product": {"ID": product, "Name": format!("Name {product}"), "xp": class.map(|c| json!({"TaxClass": c}))}
        }))
        .unwrap()
    }

    /// KashFlow knows one product, WID1, on nominal 4000.
    pub(crate) fn known_products() -> HashMap<String, Product> {
        HashMap::from([(
            "WID1".to_owned(),
            Product {
                code: Some("WID1".to_owned()),
                nominal_code: Some(4000),
                ..Product::default()
            },
        )])
    }

    #[test]
    fn codes_addresses_and_rounding() {
        assert_eq!(customer_code("OC-", "buyer01"), "OC-BUYER01");
        assert_eq!(customer_code("OC-", "jo@x.com"), "OC-JO-X-COM");
        let a: Address = serde_json::from_value(json!({
            "Street1": "1 High St", "Street2": "", "City": "Leeds", "Zip": "LS1 1AA", "Country": "gb"
        }))
        .unwrap();
        let kf = address_lines(&a);
        assert_eq!(kf.line1.as_deref(), Some("1 High St"));
        assert_eq!(kf.line2.as_deref(), Some("Leeds"));
        assert_eq!(kf.line3, None);
        assert_eq!(kf.country_code.as_deref(), Some("GB"));
        assert_eq!(
            round_money("2.345".parse().unwrap()),
            "2.35".parse::<Decimal>().unwrap()
        );
        assert_eq!(
            round_money("-2.345".parse().unwrap()),
            "-2.35".parse::<Decimal>().unwrap()
        );
    }

    #[test]
    fn maps_lines_vat_nominals_shipping_and_currency() {
        let settings = OrderToInvoiceSettings::default();
        let o = order(json!({
            "ID": "SO-1", "FromUserID": "u1", "Currency": "EUR", "ShippingCost": 5.0,
            "DateSubmitted": "2025-01-15T10:00:00+00:00",
            "BillingAddress": {"Street1": "1 Rue", "City": "Paris", "Country": "FR"}
        }));
        let lines = vec![
            line("WID1", 2, "12.50", None),
            line("MYSTERY", 1, "3.33", Some("reduced")),
        ];
        let mapped = map_invoice(&settings, &o, &lines, &known_products(), "OC-U1").unwrap();
        let inv = mapped.invoice;
        assert_eq!(inv.customer_reference.as_deref(), Some("SO-1"));
        assert_eq!(inv.issued_date.as_deref(), Some("2025-01-15 10:00:00"));
        assert_eq!(inv.due_date.as_deref(), Some("2025-02-14 10:00:00"));
        let currency = inv.currency.unwrap();
        assert_eq!(currency.code.as_deref(), Some("EUR"));
        assert_eq!(currency.exchange_rate, Some(Decimal::new(117, 2)));
        let items = inv.line_items.unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].nominal_code, Some(4000));
        assert_eq!(items[0].product_code.as_deref(), Some("WID1"));
        assert_eq!(items[0].vat_amount, Some("5.00".parse().unwrap()));
        assert_eq!(
            items[1].nominal_code,
            Some(4000),
            "unknown product → default nominal"
        );
        assert_eq!(items[1].product_code, None);
        assert_eq!(items[1].vat_level, Some(Decimal::from(5)));
        assert_eq!(
            items[1].vat_amount,
            Some("0.17".parse().unwrap()),
            "3.33 × 5% = 0.1665 → 0.17"
        );
        assert_eq!(items[2].description.as_deref(), Some("Shipping"));
        assert_eq!(items[2].nominal_code, Some(4010));
        assert_eq!(mapped.warnings.len(), 1);
        assert!(mapped.warnings[0].contains("MYSTERY"));
    }

    #[test]
    fn exports_are_zero_rated_and_unknown_products_can_park() {
        let mut settings = OrderToInvoiceSettings::default();
        let o = order(
            json!({"ID": "SO-2", "BillingAddress": {"Street1": "1 Main", "City": "NYC", "Country": "US"}, "Currency": "USD"}),
        );
        let mapped = map_invoice(
            &settings,
            &o,
            &[line("WID1", 1, "10", None)],
            &known_products(),
            "C",
        )
        .unwrap();
        let items = mapped.invoice.line_items.unwrap();
        assert_eq!(items[0].vat_level, Some(Decimal::ZERO));
        assert_eq!(items[0].vat_exempt, Some(true));

        settings.unknown_product = UnknownProduct::Park;
        let err = map_invoice(
            &settings,
            &o,
            &[line("NOPE", 1, "10", None)],
            &known_products(),
            "C",
        )
        .unwrap_err();
        assert_eq!(err.class, ErrorClass::Validation);
        assert!(
            err.message.contains("line 1") && err.message.contains("NOPE"),
            "{}",
            err.message
        );

        let o = order(json!({"ID": "SO-3", "Currency": "JPY"}));
        let err = map_invoice(
            &settings,
            &o,
            &[line("WID1", 1, "10", None)],
            &known_products(),
            "C",
        )
        .unwrap_err();
        assert!(err.message.contains("JPY"));
    }

    /// Found in review of the fuzzing work: OrderCloud amounts near
    /// Decimal's limit (28 digits) overflowed `quantity × rate × VAT` and
    /// the discount sums, and a huge `payment_terms_days` overflowed the due
    /// date — each a panic in a worker. Now each is a validation failure
    /// (the run parks with the line named).
    #[test]
    fn amounts_and_terms_beyond_their_limits_are_refused_not_a_panic() {
        let settings = OrderToInvoiceSettings::default();
        let o = order(json!({"ID": "SO-HUGE", "BillingAddress": {"Country": "GB"}}));
        let mut huge = line("WID1", 1_000, "1", None);
        huge.unit_price = Some(Decimal::MAX);
        let err = map_invoice(&settings, &o, &[huge], &known_products(), "C").unwrap_err();
        assert_eq!(err.class, ErrorClass::Validation);
        assert!(err.message.contains("line 1 (WID1)"), "{}", err.message);

        let mut a = line("WID1", 1, "1", None);
        let mut b = line("WID1", 1, "1", None);
        a.promotion_discount = Some(Decimal::MAX);
        b.promotion_discount = Some(Decimal::MAX);
        let err = map_invoice(&settings, &o, &[a, b], &known_products(), "C").unwrap_err();
        assert_eq!(err.class, ErrorClass::Validation);
        assert!(err.message.contains("discount"), "{}", err.message);

        let mut o = o;
        o.promotion_discount = Some(Decimal::MIN);
        let mut c = line("WID1", 1, "1", None);
        c.promotion_discount = Some(Decimal::ONE);
        let err = map_invoice(&settings, &o, &[c], &known_products(), "C").unwrap_err();
        assert!(err.message.contains("order discount"), "{}", err.message);

        let far = OrderToInvoiceSettings {
            payment_terms_days: i64::MAX,
            ..OrderToInvoiceSettings::default()
        };
        let o = order(json!({"ID": "SO-LATE", "BillingAddress": {"Country": "GB"}}));
        let err = map_invoice(
            &far,
            &o,
            &[line("WID1", 1, "1", None)],
            &known_products(),
            "C",
        )
        .unwrap_err();
        assert!(
            err.message.contains("payment_terms_days"),
            "{}",
            err.message
        );
    }

    #[test]
    fn order_ids_come_from_the_webhook() {
        assert_eq!(
            order_id_of(&json!({"RouteParams": {"orderID": "SO-9"}})).unwrap(),
            "SO-9"
        );
        assert_eq!(
            order_id_of(&json!({"Response": {"Body": {"ID": "SO-8"}}})).unwrap(),
            "SO-8"
        );
        assert_eq!(
            order_id_of(&json!({})).unwrap_err().class,
            ErrorClass::Validation
        );
    }
}
