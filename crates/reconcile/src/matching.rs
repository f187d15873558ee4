//! Matching: orders to invoices by `CustomerReference`, invoices to their
//! payments, gateway payments to orders by `metadata.order_id`, with our
//! ledger saying which invoice is ours and which run made it. A pure
//! function of [`Inputs`]; money compared in `rust_decimal`, to the penny.
//! Sums and differences saturate at the largest decimal (about ±7.9 × 10²⁸):
//! only a broken or hostile answer gets there, and it is reported, not a
//! panic.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::Utc;
use rust_decimal::Decimal;

use crate::model::{GatewayPayment, Inputs, InvoiceRecord, LedgerLink, OrderRecord};
use crate::report::{money, Checked, Difference, DifferenceKind, Matched, Report};

/// Order statuses that mean the customer has paid.
const PAID_STATUSES: [&str; 1] = ["Completed"];

/// Compares everything in `inputs` and lists every difference.
pub fn reconcile(inputs: &Inputs) -> Report {
    let mut differences = Vec::new();
    let mut matched = Matched::default();

    let mut invoices_by_order: HashMap<&str, Vec<&InvoiceRecord>> = HashMap::new();
    for invoice in &inputs.invoices {
        let reference = invoice.customer_reference.as_deref().map(str::trim);
        if let Some(reference) = reference.filter(|r| !r.is_empty()) {
            invoices_by_order
                .entry(reference)
                .or_default()
                .push(invoice);
        }
    }
    let orders_by_id: HashMap<&str, &OrderRecord> =
        inputs.orders.iter().map(|o| (o.id.as_str(), o)).collect();
    let paid_at_gateway = gateway_payments_by_order(inputs);
    // Invoices checked with their order (the rest are checked alone).
    let mut chosen: HashSet<i64> = HashSet::new();

    let mut orders: Vec<&OrderRecord> = inputs.orders.iter().collect();
    orders.sort_by(|a, b| a.id.cmp(&b.id));
    for order in orders {
        let invoices = invoices_by_order
            .get(order.id.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        if !order.in_period && invoices.iter().all(|i| !i.in_period) {
            continue;
        }
        let payments = paid_at_gateway
            .get(order.id.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let ledger = inputs.ledger.invoices.get(&order.id);
        let Some(invoice) = chosen_invoice(invoices, ledger) else {
            differences.push(order_without_invoice(order, ledger, payments));
            continue;
        };
        let before = differences.len();
        for other in invoices.iter().filter(|i| i.number != invoice.number) {
            differences.push(duplicate_invoice(order, invoice, other, invoices.len()));
        }
        compare_amounts(order, invoice, &mut differences);
        let payment_link = inputs.ledger.payments.get(&order.id);
        compare_payment_state(order, invoice, payments, payment_link, &mut differences);
        if invoice.total_paid > invoice.gross {
            differences.push(overpaid(invoice));
        }
        if payments.len() > 1 {
            differences.push(paid_twice(order, invoice, payments));
        }
        chosen.insert(invoice.number);
        if differences.len() == before {
            matched.orders += 1;
            let total = matched.gross.entry(invoice.currency.clone()).or_default();
            *total = total.saturating_add(invoice.gross);
        }
    }

    let mut invoices: Vec<&InvoiceRecord> = inputs.invoices.iter().collect();
    invoices.sort_by_key(|i| i.number);
    for invoice in invoices {
        if !invoice.in_period {
            continue;
        }
        let reference = invoice
            .customer_reference
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty());
        if reference.is_none_or(|r| !orders_by_id.contains_key(r)) {
            differences.push(invoice_without_order(invoice));
        }
        if invoice.total_paid > invoice.gross && !chosen.contains(&invoice.number) {
            differences.push(overpaid(invoice));
        }
    }

    if let Some(gateway) = &inputs.gateway {
        for payment in &gateway.payments {
            // Payments read from the margin around the period only serve
            // to match its orders.
            let in_period = payment
                .created
                .is_none_or(|at| at >= inputs.period.start() && at < inputs.period.end());
            if !succeeded(&payment.status) || !in_period {
                continue;
            }
            let order_id = payment.order_id.as_deref().filter(|o| !o.trim().is_empty());
            let has_invoice = order_id.is_some_and(|o| invoices_by_order.contains_key(o));
            let order_known = order_id.is_some_and(|o| orders_by_id.contains_key(o));
            // A known order without an invoice is reported once, as such.
            if !has_invoice && !order_known {
                differences.push(payment_without_invoice(payment));
            }
        }
    }

    differences.sort_by(|a, b| {
        (a.kind, &a.order_id, a.invoice_number, &a.payment_id).cmp(&(
            b.kind,
            &b.order_id,
            b.invoice_number,
            &b.payment_id,
        ))
    });
    let mut counts: BTreeMap<DifferenceKind, usize> =
        DifferenceKind::ALL.iter().map(|k| (*k, 0)).collect();
    for difference in &differences {
        *counts.entry(difference.kind).or_default() += 1;
    }
    let mut notes = Vec::new();
    if inputs.gateway.is_none() {
        notes.push(
            "payments at the gateway were not checked: no [connections.gateway] is configured"
                .to_owned(),
        );
    }
    Report {
        period: inputs.period,
        generated_at: Utc::now(),
        checked: Checked {
            orders: inputs.orders.iter().filter(|o| o.in_period).count(),
            invoices: inputs.invoices.iter().filter(|i| i.in_period).count(),
            payments: inputs.gateway.as_ref().map(|g| g.payments.len()),
            refunds: inputs.gateway.as_ref().map(|g| g.refunds.len()),
            ledger_entries: inputs.ledger.invoices.len() + inputs.ledger.payments.len(),
        },
        matched,
        counts,
        differences,
        notes,
        timings: None,
    }
}

fn succeeded(status: &str) -> bool {
    status.eq_ignore_ascii_case("succeeded")
}

/// A gateway payment that still counts (succeeded, not refunded in full),
/// with what is left of it after refunds.
#[derive(Debug, Clone)]
struct LivePayment<'a> {
    payment: &'a GatewayPayment,
    kept: Decimal,
}

/// Succeeded, not fully refunded gateway payments per order.
fn gateway_payments_by_order(inputs: &Inputs) -> HashMap<&str, Vec<LivePayment<'_>>> {
    let mut by_order: HashMap<&str, Vec<LivePayment<'_>>> = HashMap::new();
    let Some(gateway) = &inputs.gateway else {
        return by_order;
    };
    let mut refunded: HashMap<&str, Decimal> = HashMap::new();
    for refund in &gateway.refunds {
        if let Some(intent) = refund.payment_intent.as_deref() {
            if succeeded(&refund.status) {
                let total = refunded.entry(intent).or_default();
                *total = total.saturating_add(refund.amount);
            }
        }
    }
    for payment in &gateway.payments {
        let Some(order_id) = payment.order_id.as_deref() else {
            continue;
        };
        if !succeeded(&payment.status) {
            continue;
        }
        let kept = payment.amount.saturating_sub(
            refunded
                .get(payment.id.as_str())
                .copied()
                .unwrap_or_default(),
        );
        if kept > Decimal::ZERO {
            by_order
                .entry(order_id)
                .or_default()
                .push(LivePayment { payment, kept });
        }
    }
    for payments in by_order.values_mut() {
        payments.sort_by(|a, b| a.payment.id.cmp(&b.payment.id));
    }
    by_order
}

/// The invoice that is the order's: the one our ledger links, else the
/// lowest number.
fn chosen_invoice<'a>(
    invoices: &[&'a InvoiceRecord],
    ledger: Option<&LedgerLink>,
) -> Option<&'a InvoiceRecord> {
    let linked = ledger
        .and_then(|l| l.external_id.as_deref())
        .and_then(|n| n.parse::<i64>().ok());
    linked
        .and_then(|n| invoices.iter().find(|i| i.number == n).copied())
        .or_else(|| invoices.iter().min_by_key(|i| i.number).copied())
}

fn amount(currency: &str, value: Decimal) -> String {
    format!("{currency} {}", money(value))
}

fn order_without_invoice(
    order: &OrderRecord,
    ledger: Option<&LedgerLink>,
    payments: &[LivePayment<'_>],
) -> Difference {
    let paid = payments.first();
    let mut detail = format!(
        "order {} ({}, {}) has no KashFlow invoice",
        order.id,
        order.status,
        amount(&order.currency, order.total)
    );
    if let Some(p) = paid {
        detail.push_str(&format!(
            "; it was paid at the gateway ({}, {})",
            p.payment.id,
            amount(&p.payment.currency, p.kept)
        ));
    }
    let fix = match ledger {
        Some(LedgerLink {
            run_id,
            external_id: Some(number),
        }) => {
            detail.push_str(&format!(
                "; our ledger links it to invoice {number} (run {run_id})"
            ));
            format!(
                "invoice {number} is gone from KashFlow (deleted, or issued outside the period): \
                 check it in KashFlow; if it was deleted, re-create it with CustomerReference {}, \
                 then reconcile again",
                order.id
            )
        }
        Some(LedgerLink {
            run_id,
            external_id: None,
        }) => format!(
            "run {run_id} did not finish creating the invoice: \
             `ledgerbridge runs show {run_id}`, then `ledgerbridge runs replay {run_id}`"
        ),
        None => format!(
            "no run invoiced order {}: look for it with `ledgerbridge runs list --state parked` \
             and `ledgerbridge runs replay <run>`, or resend the order's submit webhook",
            order.id
        ),
    };
    Difference {
        kind: DifferenceKind::OrderWithoutInvoice,
        order_id: Some(order.id.clone()),
        invoice_number: order.invoice_number,
        payment_id: paid.map(|p| p.payment.id.clone()),
        expected: Some(format!(
            "an invoice of {}",
            amount(&order.currency, order.total)
        )),
        actual: Some("no invoice".to_owned()),
        detail,
        fix,
    }
}

fn duplicate_invoice(
    order: &OrderRecord,
    kept: &InvoiceRecord,
    other: &InvoiceRecord,
    count: usize,
) -> Difference {
    Difference {
        kind: DifferenceKind::DuplicateInvoice,
        order_id: Some(order.id.clone()),
        invoice_number: Some(other.number),
        payment_id: None,
        expected: Some(format!("1 invoice ({})", kept.number)),
        actual: Some(format!("{count} invoices")),
        detail: format!(
            "order {} has invoice {} and also invoice {} ({})",
            order.id,
            kept.number,
            other.number,
            amount(&other.currency, other.gross)
        ),
        fix: if other.total_paid > Decimal::ZERO {
            format!(
                "credit note for invoice {} (duplicate of {}); refund {} or keep it as credit",
                other.number,
                kept.number,
                amount(&other.currency, other.total_paid)
            )
        } else {
            format!(
                "credit note for invoice {} (duplicate of {})",
                other.number, kept.number
            )
        },
    }
}

/// Gross (and currency), then VAT against the tax OrderCloud computed.
fn compare_amounts(order: &OrderRecord, invoice: &InvoiceRecord, out: &mut Vec<Difference>) {
    let base = |kind| Difference {
        kind,
        order_id: Some(order.id.clone()),
        invoice_number: Some(invoice.number),
        payment_id: None,
        expected: None,
        actual: None,
        detail: String::new(),
        fix: String::new(),
    };
    if !order.currency.eq_ignore_ascii_case(&invoice.currency) {
        out.push(Difference {
            expected: Some(amount(&order.currency, order.total)),
            actual: Some(amount(&invoice.currency, invoice.gross)),
            detail: format!(
                "order {} is in {}, invoice {} in {}",
                order.id, order.currency, invoice.number, invoice.currency
            ),
            fix: format!(
                "credit note for invoice {} and re-invoice order {} in {}",
                invoice.number, order.id, order.currency
            ),
            ..base(DifferenceKind::AmountMismatch)
        });
        return;
    }
    let currency = &invoice.currency;
    // VAT the invoice should carry: OrderCloud's tax when it computed one,
    // else the invoice's own (the flow works VAT out per line).
    let expected_vat = if order.tax_cost.is_zero() {
        invoice.vat
    } else {
        order.tax_cost
    };
    let expected_gross = order.net().saturating_add(expected_vat);
    if invoice.net != order.net() || invoice.gross != invoice.net.saturating_add(invoice.vat) {
        let difference = invoice.gross.saturating_sub(expected_gross);
        let fix = if difference > Decimal::ZERO {
            format!(
                "credit note for invoice {} of {}",
                invoice.number,
                amount(currency, difference)
            )
        } else {
            format!(
                "invoice the missing {} for order {} (or a credit note for invoice {} in full and re-invoice)",
                amount(currency, -difference),
                order.id,
                invoice.number
            )
        };
        out.push(Difference {
            expected: Some(amount(currency, expected_gross)),
            actual: Some(amount(currency, invoice.gross)),
            detail: format!(
                "invoice {} is {} gross ({} net + {} VAT); order {} is {} before tax",
                invoice.number,
                amount(currency, invoice.gross),
                money(invoice.net),
                money(invoice.vat),
                order.id,
                amount(currency, order.net())
            ),
            fix,
            ..base(DifferenceKind::AmountMismatch)
        });
        return;
    }
    if invoice.vat != expected_vat {
        out.push(Difference {
            expected: Some(amount(currency, expected_vat)),
            actual: Some(amount(currency, invoice.vat)),
            detail: format!(
                "invoice {} has {} VAT; OrderCloud computed {} tax on order {}",
                invoice.number,
                amount(currency, invoice.vat),
                amount(currency, order.tax_cost),
                order.id
            ),
            fix: format!(
                "check the tax class and billing country of order {}; credit note for invoice {} and re-invoice with the right VAT",
                order.id, invoice.number
            ),
            ..base(DifferenceKind::VatMismatch)
        });
    }
}

fn compare_payment_state(
    order: &OrderRecord,
    invoice: &InvoiceRecord,
    payments: &[LivePayment<'_>],
    payment_link: Option<&LedgerLink>,
    out: &mut Vec<Difference>,
) {
    let completed = PAID_STATUSES.contains(&order.status.as_str());
    let paid_at_gateway = payments.first();
    if !(completed || paid_at_gateway.is_some()) || invoice.is_paid() {
        return;
    }
    let why = match paid_at_gateway {
        Some(p) if !completed => format!(
            "paid at the gateway ({}, {})",
            p.payment.id,
            amount(&p.payment.currency, p.kept)
        ),
        _ => format!("{} in OrderCloud", order.status),
    };
    let due = amount(&invoice.currency, invoice.due);
    let fix = match payment_link {
        Some(LedgerLink {
            run_id,
            external_id: None,
        }) => format!(
            "run {run_id} did not finish recording the payment: `ledgerbridge runs replay {run_id}`"
        ),
        _ => format!(
            "record a payment of {due} on invoice {} (reference ledgerbridge:order:{}), \
             or resend the order's complete webhook so Ledgerbridge settles it",
            invoice.number, order.id
        ),
    };
    out.push(Difference {
        kind: DifferenceKind::PaidOrderUnpaidInvoice,
        order_id: Some(order.id.clone()),
        invoice_number: Some(invoice.number),
        payment_id: paid_at_gateway.map(|p| p.payment.id.clone()),
        expected: Some("paid".to_owned()),
        actual: Some(format!("{} due", due)),
        detail: format!(
            "order {} is {why}; invoice {} still has {due} due",
            order.id, invoice.number
        ),
        fix,
    });
}

fn paid_twice(
    order: &OrderRecord,
    invoice: &InvoiceRecord,
    payments: &[LivePayment<'_>],
) -> Difference {
    let ids: Vec<&str> = payments.iter().map(|p| p.payment.id.as_str()).collect();
    let extra = payments
        .iter()
        .skip(1)
        .fold(Decimal::ZERO, |total, p| total.saturating_add(p.kept));
    let currency = &payments[0].payment.currency;
    Difference {
        kind: DifferenceKind::Overpaid,
        order_id: Some(order.id.clone()),
        invoice_number: Some(invoice.number),
        payment_id: payments.get(1).map(|p| p.payment.id.clone()),
        expected: Some("1 gateway payment".to_owned()),
        actual: Some(format!("{} gateway payments", payments.len())),
        detail: format!(
            "order {} was paid {} times at the gateway ({})",
            order.id,
            payments.len(),
            ids.join(", ")
        ),
        fix: format!(
            "refund {} ({}) or keep it as credit",
            amount(currency, extra),
            ids[1..].join(", ")
        ),
    }
}

fn invoice_without_order(invoice: &InvoiceRecord) -> Difference {
    let reference = invoice.customer_reference.clone().unwrap_or_default();
    Difference {
        kind: DifferenceKind::InvoiceWithoutOrder,
        order_id: Some(reference.clone()).filter(|r| !r.is_empty()),
        invoice_number: Some(invoice.number),
        payment_id: None,
        expected: Some(if reference.is_empty() {
            "a CustomerReference naming an order".to_owned()
        } else {
            format!("OrderCloud order {reference}")
        }),
        actual: Some("no such order".to_owned()),
        detail: format!(
            "invoice {} ({}, reference {:?}) names no OrderCloud order",
            invoice.number,
            amount(&invoice.currency, invoice.gross),
            reference
        ),
        fix: if invoice.total_paid > Decimal::ZERO {
            format!(
                "credit note for invoice {}; refund {} or keep it as credit",
                invoice.number,
                amount(&invoice.currency, invoice.total_paid)
            )
        } else {
            format!(
                "credit note for invoice {} if it was raised in error",
                invoice.number
            )
        },
    }
}

fn overpaid(invoice: &InvoiceRecord) -> Difference {
    let extra = invoice.total_paid.saturating_sub(invoice.gross);
    Difference {
        kind: DifferenceKind::Overpaid,
        order_id: invoice.customer_reference.clone(),
        invoice_number: Some(invoice.number),
        payment_id: None,
        expected: Some(format!("paid {}", amount(&invoice.currency, invoice.gross))),
        actual: Some(format!(
            "paid {}",
            amount(&invoice.currency, invoice.total_paid)
        )),
        detail: format!(
            "invoice {} was paid {} more than its gross (paid more than once?)",
            invoice.number,
            amount(&invoice.currency, extra)
        ),
        fix: format!(
            "refund {} or keep it as credit; remove the duplicate payment on invoice {}",
            amount(&invoice.currency, extra),
            invoice.number
        ),
    }
}

fn payment_without_invoice(payment: &GatewayPayment) -> Difference {
    let order = payment.order_id.clone().filter(|o| !o.trim().is_empty());
    Difference {
        kind: DifferenceKind::PaymentWithoutInvoice,
        order_id: order.clone(),
        invoice_number: None,
        payment_id: Some(payment.id.clone()),
        expected: Some(match &order {
            Some(o) => format!("an invoice for order {o}"),
            None => "metadata.order_id naming an order".to_owned(),
        }),
        actual: Some("no invoice".to_owned()),
        detail: format!(
            "gateway payment {} ({}) {}",
            payment.id,
            amount(&payment.currency, payment.amount),
            match &order {
                Some(o) => format!(
                    "is for order {o}, which has no invoice and is not in the period's orders"
                ),
                None => "names no order".to_owned(),
            }
        ),
        fix: match &order {
            Some(o) => format!(
                "find order {o} in OrderCloud and invoice it (replay its run), or refund {}",
                amount(&payment.currency, payment.amount)
            ),
            None => format!(
                "find whose payment {} is; refund {} if nobody's",
                payment.id,
                amount(&payment.currency, payment.amount)
            ),
        },
    }
}
