//! What reconciliation compares: the orders, invoices, gateway payments and
//! ledger entries of a period, reduced to the fields that matter, in plain
//! structs so that matching is a pure function over them.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The days reconciled, both inclusive (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    /// First day.
    pub from: NaiveDate,
    /// Last day.
    pub to: NaiveDate,
}

impl Period {
    /// A period; `from` after `to` is refused with a message saying so.
    pub fn new(from: NaiveDate, to: NaiveDate) -> Result<Period, String> {
        if from > to {
            return Err(format!(
                "the period starts ({from}) after it ends ({to}); give --from before --to"
            ));
        }
        Ok(Period { from, to })
    }

    /// Parses two `YYYY-MM-DD` dates.
    pub fn parse(from: &str, to: &str) -> Result<Period, String> {
        let day = |name: &str, text: &str| {
            NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").map_err(|_| {
                format!("{name} = {text:?} is not a date; write it as YYYY-MM-DD, e.g. 2026-11-30")
            })
        };
        Period::new(day("from", from)?, day("to", to)?)
    }

    /// The first instant of the period.
    pub fn start(&self) -> DateTime<Utc> {
        self.from.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
    }

    /// The first instant after the period.
    pub fn end(&self) -> DateTime<Utc> {
        self.to
            .succ_opt()
            .unwrap_or(self.to)
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_utc()
    }
}

/// An OrderCloud order as reconciliation sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderRecord {
    /// The order ID (our invoices carry it as `CustomerReference`).
    pub id: String,
    /// `Open`, `Completed`, `Canceled`, …
    pub status: String,
    /// What the order charges, tax included (`Total`).
    pub total: Decimal,
    /// Tax OrderCloud computed (`TaxCost`); zero when tax is left to the invoice.
    pub tax_cost: Decimal,
    /// ISO code, upper case.
    pub currency: String,
    /// When it was submitted.
    pub date_submitted: Option<DateTime<Utc>>,
    /// `xp.KashFlowInvoiceNumber`, as our flow wrote it.
    pub invoice_number: Option<i64>,
    /// `xp.InvoiceStatus` (`Invoiced` or `Paid`).
    pub invoice_status: Option<String>,
    /// Submitted within the period (false: found outside it, to match a
    /// reference; such an order is never reported as missing its invoice).
    pub in_period: bool,
}

impl OrderRecord {
    /// The order's amount before tax.
    pub fn net(&self) -> Decimal {
        self.total.saturating_sub(self.tax_cost)
    }
}

/// A KashFlow invoice as its list summary shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoiceRecord {
    /// The invoice number.
    pub number: i64,
    /// `CustomerReference`: our flow sets it to the order ID.
    pub customer_reference: Option<String>,
    pub net: Decimal,
    pub vat: Decimal,
    pub gross: Decimal,
    /// ISO code, upper case.
    pub currency: String,
    /// `Paid`, `Unpaid`, …
    pub status: String,
    pub total_paid: Decimal,
    pub due: Decimal,
    /// Issued within the period (false: found outside it, to match an order).
    pub in_period: bool,
}

impl InvoiceRecord {
    /// Nothing is left to pay (and there was something to pay).
    pub fn is_paid(&self) -> bool {
        self.due <= Decimal::ZERO
            && (self.total_paid > Decimal::ZERO || self.gross <= Decimal::ZERO)
    }
}

/// A gateway payment intent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayPayment {
    /// `pi_…`
    pub id: String,
    /// `metadata.order_id`.
    pub order_id: Option<String>,
    /// In major units (the gateway's minor units / 100).
    pub amount: Decimal,
    /// ISO code, upper case.
    pub currency: String,
    /// `succeeded`, `canceled`, …
    pub status: String,
    pub created: Option<DateTime<Utc>>,
}

/// A gateway refund.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayRefund {
    /// `re_…`
    pub id: String,
    /// The payment intent refunded.
    pub payment_intent: Option<String>,
    /// In major units.
    pub amount: Decimal,
    pub currency: String,
    pub status: String,
}

/// What the gateway holds for the period.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GatewayData {
    pub payments: Vec<GatewayPayment>,
    pub refunds: Vec<GatewayRefund>,
}

/// One ledger entry: a business key's run and, once the write is known
/// done, the external id it produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerLink {
    /// The run that recorded the intent.
    pub run_id: Uuid,
    /// The invoice number (or payment reference); `None` while pending.
    pub external_id: Option<String>,
}

/// Our own ledger, by order ID.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerData {
    /// `kashflow/invoice/order:{id}` → invoice number.
    pub invoices: HashMap<String, LedgerLink>,
    /// `kashflow/payment/order:{id}` → payment reference.
    pub payments: HashMap<String, LedgerLink>,
}

/// Everything matching needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    pub period: Period,
    pub orders: Vec<OrderRecord>,
    pub invoices: Vec<InvoiceRecord>,
    /// `None`: no gateway connection, payments there were not checked.
    pub gateway: Option<GatewayData>,
    pub ledger: LedgerData,
}
