//! The reconciliation report: every difference with what to do about it,
//! counts per kind, what matched; rendered as a table, JSON or CSV.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::model::Period;

/// The kinds of difference, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceKind {
    /// A submitted order has no KashFlow invoice.
    OrderWithoutInvoice,
    /// An invoice names no known order.
    InvoiceWithoutOrder,
    /// One order has more than one invoice.
    DuplicateInvoice,
    /// The invoice's gross differs from the order's (or its currency does).
    AmountMismatch,
    /// The invoice's VAT differs from the tax OrderCloud computed.
    VatMismatch,
    /// The order is paid (Completed, or paid at the gateway); the invoice is not.
    PaidOrderUnpaidInvoice,
    /// A gateway payment whose order has no invoice.
    PaymentWithoutInvoice,
    /// More was paid than the invoice's gross, or the order was paid twice.
    Overpaid,
}

impl DifferenceKind {
    /// All kinds, in report order.
    pub const ALL: [DifferenceKind; 8] = [
        DifferenceKind::OrderWithoutInvoice,
        DifferenceKind::InvoiceWithoutOrder,
        DifferenceKind::DuplicateInvoice,
        DifferenceKind::AmountMismatch,
        DifferenceKind::VatMismatch,
        DifferenceKind::PaidOrderUnpaidInvoice,
        DifferenceKind::PaymentWithoutInvoice,
        DifferenceKind::Overpaid,
    ];

    /// The stable snake_case name (JSON, CSV, audit).
    pub fn as_str(self) -> &'static str {
        match self {
            DifferenceKind::OrderWithoutInvoice => "order_without_invoice",
            DifferenceKind::InvoiceWithoutOrder => "invoice_without_order",
            DifferenceKind::DuplicateInvoice => "duplicate_invoice",
            DifferenceKind::AmountMismatch => "amount_mismatch",
            DifferenceKind::VatMismatch => "vat_mismatch",
            DifferenceKind::PaidOrderUnpaidInvoice => "paid_order_unpaid_invoice",
            DifferenceKind::PaymentWithoutInvoice => "payment_without_invoice",
            DifferenceKind::Overpaid => "overpaid",
        }
    }
}

impl std::fmt::Display for DifferenceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One difference between the systems.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    pub kind: DifferenceKind,
    pub order_id: Option<String>,
    pub invoice_number: Option<i64>,
    pub payment_id: Option<String>,
    /// What the other side says it should be (e.g. `GBP 120.00`).
    pub expected: Option<String>,
    /// What it is.
    pub actual: Option<String>,
    /// What was found, in a sentence.
    pub detail: String,
    /// What to do, in plain words.
    pub fix: String,
}

/// What was read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checked {
    /// Orders submitted in the period.
    pub orders: usize,
    /// Invoices issued in the period.
    pub invoices: usize,
    /// Gateway payment intents (`None`: the gateway was not checked).
    pub payments: Option<usize>,
    /// Gateway refunds.
    pub refunds: Option<usize>,
    /// Ledger entries (invoice and payment intents).
    pub ledger_entries: usize,
}

/// What agreed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matched {
    /// Orders with exactly one invoice and no difference.
    pub orders: usize,
    /// The gross of their invoices, per currency.
    pub gross: BTreeMap<String, Decimal>,
}

/// How long each part took, when measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Reading every system, wall clock (the systems are read side by side).
    pub fetch_ms: f64,
    pub match_ms: f64,
    /// The fetch, system by system (each its own wall clock, so they
    /// overlap and do not add up to `fetch_ms`).
    #[serde(default)]
    pub systems: SystemTimings,
}

/// How long each system took to read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemTimings {
    /// OrderCloud orders submitted in the period.
    pub orders_ms: f64,
    /// KashFlow invoices issued in the period.
    pub invoices_ms: f64,
    /// Gateway payment intents and refunds (0 without a gateway).
    pub gateway_ms: f64,
    /// Our ledger.
    pub ledger_ms: f64,
    /// Unmatched references looked up one by one, after the rest.
    pub lookups_ms: f64,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub period: Period,
    pub generated_at: DateTime<Utc>,
    pub checked: Checked,
    pub matched: Matched,
    /// Differences per kind (every kind present, zeros included).
    pub counts: BTreeMap<DifferenceKind, usize>,
    pub differences: Vec<Difference>,
    /// What was not checked, and why.
    pub notes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub timings: Option<Timings>,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Table,
    Json,
    Csv,
}

impl Format {
    /// `table`, `json` or `csv`.
    pub fn parse(text: &str) -> Result<Format, String> {
        match text.to_ascii_lowercase().as_str() {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            other => Err(format!("unknown format {other:?}; use table, json or csv")),
        }
    }
}

/// The CSV columns, in order.
pub const CSV_HEADER: &str =
    "kind,order_id,invoice_number,payment_id,expected,actual,detail,suggested_fix";

impl Report {
    /// How many differences there are.
    pub fn difference_count(&self) -> usize {
        self.differences.len()
    }

    /// Counts as a JSON object (for the audit trail and alerts).
    pub fn summary(&self) -> serde_json::Value {
        let counts: serde_json::Map<String, serde_json::Value> = self
            .counts
            .iter()
            .map(|(k, n)| (k.as_str().to_owned(), serde_json::json!(n)))
            .collect();
        serde_json::json!({
            "from": self.period.from.to_string(),
            "to": self.period.to.to_string(),
            "differences": self.differences.len(),
            "counts": counts,
            "checked": self.checked,
            "matched": self.matched,
            "notes": self.notes,
        })
    }

    /// Renders the report.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json => {
                let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
                text.push('\n');
                text
            }
            Format::Csv => self.to_csv(),
            Format::Table => self.to_table(),
        }
    }

    /// One line per difference under [`CSV_HEADER`] (RFC 4180 quoting).
    pub fn to_csv(&self) -> String {
        let mut out = String::with_capacity(64 + self.differences.len() * 160);
        out.push_str(CSV_HEADER);
        out.push_str("\r\n");
        for d in &self.differences {
            let fields = [
                d.kind.as_str().to_owned(),
                d.order_id.clone().unwrap_or_default(),
                d.invoice_number.map(|n| n.to_string()).unwrap_or_default(),
                d.payment_id.clone().unwrap_or_default(),
                d.expected.clone().unwrap_or_default(),
                d.actual.clone().unwrap_or_default(),
                d.detail.clone(),
                d.fix.clone(),
            ];
            let quoted: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
            out.push_str(&quoted.join(","));
            out.push_str("\r\n");
        }
        out
    }

    /// A human-readable table, then counts and totals.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Reconciliation {} – {}: {} orders, {} invoices, {}",
            self.period.from,
            self.period.to,
            self.checked.orders,
            self.checked.invoices,
            match (self.checked.payments, self.checked.refunds) {
                (Some(p), Some(r)) => format!("{p} gateway payments, {r} refunds"),
                _ => "gateway not checked".to_owned(),
            }
        );
        if !self.differences.is_empty() {
            let headers = ["kind", "order", "invoice", "payment", "expected", "actual"];
            let rows: Vec<[String; 6]> = self
                .differences
                .iter()
                .map(|d| {
                    [
                        d.kind.as_str().to_owned(),
                        d.order_id.clone().unwrap_or_else(|| "-".to_owned()),
                        d.invoice_number
                            .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                        d.payment_id.clone().unwrap_or_else(|| "-".to_owned()),
                        d.expected.clone().unwrap_or_else(|| "-".to_owned()),
                        d.actual.clone().unwrap_or_else(|| "-".to_owned()),
                    ]
                })
                .collect();
            let mut widths = headers.map(str::len);
            for row in &rows {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            let line = |cells: &[String]| {
                cells
                    .iter()
                    .zip(widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
            };
            out.push('\n');
            let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
            let _ = writeln!(out, "{}", line(&header).trim_end());
            for (row, d) in rows.iter().zip(&self.differences) {
                let _ = writeln!(out, "{}", line(row).trim_end());
                let _ = writeln!(out, "    {}", d.detail);
                let _ = writeln!(out, "    fix: {}", d.fix);
            }
        }
        out.push('\n');
        let _ = writeln!(out, "Differences: {}", self.differences.len());
        for (kind, n) in &self.counts {
            if *n > 0 {
                let _ = writeln!(out, "  {:<28}{n}", kind.as_str());
            }
        }
        let gross: Vec<String> = self
            .matched
            .gross
            .iter()
            .map(|(c, a)| format!("{c} {}", money(*a)))
            .collect();
        let _ = writeln!(
            out,
            "Matched: {} orders{}",
            self.matched.orders,
            if gross.is_empty() {
                String::new()
            } else {
                format!(" ({})", gross.join(", "))
            }
        );
        for note in &self.notes {
            let _ = writeln!(out, "Note: {note}");
        }
        out
    }
}

/// An amount with two decimals.
pub fn money(amount: Decimal) -> String {
    let mut rounded = amount.round_dp(2);
    rounded.rescale(2);
    rounded.to_string()
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}
