//! Matching: one test per kind of difference, a property (a consistent
//! random data set has no difference; one injected fault gives exactly
//! that difference), the renderings and the schedule's arithmetic.

use std::collections::HashMap;

use chrono::{NaiveTime, TimeZone, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::model::*;
use crate::report::{DifferenceKind, Format, CSV_HEADER};
use crate::schedule::{lookback_period, next_run};
use crate::{reconcile, ReconcileConfig};

fn d(text: &str) -> Decimal {
    text.parse().unwrap()
}

fn period() -> Period {
    Period::parse("2026-11-01", "2026-11-30").unwrap()
}

/// One order as the flow leaves it: invoiced (gross = total + 20 % VAT
/// when OrderCloud computed no tax), paid when Completed, and in the ledger.
struct Case {
    id: &'static str,
    total: &'static str,
    tax_cost: &'static str,
    completed: bool,
    gateway: bool,
}

fn inputs(cases: &[Case]) -> Inputs {
    let mut inputs = Inputs {
        period: period(),
        orders: Vec::new(),
        invoices: Vec::new(),
        gateway: Some(GatewayData::default()),
        ledger: LedgerData::default(),
    };
    for (i, case) in cases.iter().enumerate() {
        let number = 1000 + i as i64;
        let total = d(case.total);
        let tax = d(case.tax_cost);
        let net = total - tax;
        let vat = if tax.is_zero() {
            (net * d("0.2")).round_dp(2)
        } else {
            tax
        };
        let paid = case.completed || case.gateway;
        inputs.orders.push(OrderRecord {
            id: case.id.to_owned(),
            status: if case.completed { "Completed" } else { "Open" }.to_owned(),
            total,
            tax_cost: tax,
            currency: "GBP".to_owned(),
            date_submitted: Some(Utc.with_ymd_and_hms(2026, 11, 2, 10, 0, 0).unwrap()),
            invoice_number: Some(number),
            invoice_status: Some(if paid { "Paid" } else { "Invoiced" }.to_owned()),
            in_period: true,
        });
        inputs.invoices.push(InvoiceRecord {
            number,
            customer_reference: Some(case.id.to_owned()),
            net,
            vat,
            gross: net + vat,
            currency: "GBP".to_owned(),
            status: if paid { "Paid" } else { "Unpaid" }.to_owned(),
            total_paid: if paid { net + vat } else { Decimal::ZERO },
            due: if paid { Decimal::ZERO } else { net + vat },
            in_period: true,
        });
        inputs.ledger.invoices.insert(
            case.id.to_owned(),
            LedgerLink {
                run_id: Uuid::nil(),
                external_id: Some(number.to_string()),
            },
        );
        if case.gateway {
            inputs
                .gateway
                .as_mut()
                .unwrap()
                .payments
                .push(GatewayPayment {
                    id: format!("pi_{}", case.id),
                    order_id: Some(case.id.to_owned()),
                    amount: total,
                    currency: "GBP".to_owned(),
                    status: "succeeded".to_owned(),
                    created: Some(Utc.with_ymd_and_hms(2026, 11, 2, 10, 0, 1).unwrap()),
                });
        }
    }
    inputs
}

fn sample() -> Inputs {
    inputs(&[
        Case {
            id: "SO-1",
            total: "100.00",
            tax_cost: "0",
            completed: false,
            gateway: false,
        },
        Case {
            id: "SO-2",
            total: "12.50",
            tax_cost: "0",
            completed: true,
            gateway: false,
        },
        Case {
            id: "SO-3",
            total: "60.00",
            tax_cost: "10.00",
            completed: false,
            gateway: true,
        },
    ])
}

fn kinds(inputs: &Inputs) -> Vec<DifferenceKind> {
    reconcile(inputs)
        .differences
        .iter()
        .map(|d| d.kind)
        .collect()
}

fn invoice_of<'a>(inputs: &'a mut Inputs, order: &str) -> &'a mut InvoiceRecord {
    inputs
        .invoices
        .iter_mut()
        .find(|i| i.customer_reference.as_deref() == Some(order))
        .unwrap()
}

#[test]
fn a_consistent_period_has_no_difference_and_counts_what_matched() {
    let report = reconcile(&sample());
    assert!(report.differences.is_empty(), "{:#?}", report.differences);
    assert_eq!(report.matched.orders, 3);
    // 120.00 + 15.00 + 60.00
    assert_eq!(report.matched.gross["GBP"], d("195.00"));
    assert_eq!(report.checked.orders, 3);
    assert_eq!(report.checked.payments, Some(1));
    assert!(report.counts.values().all(|n| *n == 0));
    assert_eq!(report.counts.len(), DifferenceKind::ALL.len());
    assert!(report.notes.is_empty());
}

#[test]
fn an_order_without_invoice_names_the_run_to_replay() {
    let mut inputs = sample();
    inputs.invoices.retain(|i| i.number != 1000);
    let run = Uuid::from_u128(7);
    inputs.ledger.invoices.insert(
        "SO-1".to_owned(),
        LedgerLink {
            run_id: run,
            external_id: None,
        },
    );
    let report = reconcile(&inputs);
    assert_eq!(report.differences.len(), 1, "{:#?}", report.differences);
    let diff = &report.differences[0];
    assert_eq!(diff.kind, DifferenceKind::OrderWithoutInvoice);
    assert_eq!(diff.order_id.as_deref(), Some("SO-1"));
    assert_eq!(diff.expected.as_deref(), Some("an invoice of GBP 100.00"));
    assert!(
        diff.fix
            .contains(&format!("ledgerbridge runs replay {run}")),
        "{}",
        diff.fix
    );
    assert_eq!(report.counts[&DifferenceKind::OrderWithoutInvoice], 1);
    assert_eq!(report.matched.orders, 2);

    // Linked in the ledger, gone from KashFlow: says so.
    inputs.ledger.invoices.get_mut("SO-1").unwrap().external_id = Some("1000".to_owned());
    let diff = reconcile(&inputs).differences.remove(0);
    assert!(diff.fix.contains("invoice 1000 is gone"), "{}", diff.fix);
    // Not in the ledger at all: look for a parked run.
    inputs.ledger.invoices.remove("SO-1");
    let diff = reconcile(&inputs).differences.remove(0);
    assert!(
        diff.fix.contains("runs list --state parked"),
        "{}",
        diff.fix
    );
}

#[test]
fn an_invoice_without_order_suggests_a_credit_note() {
    let mut inputs = sample();
    inputs.orders.retain(|o| o.id != "SO-1");
    inputs.ledger.invoices.remove("SO-1");
    let report = reconcile(&inputs);
    assert_eq!(kinds(&inputs), [DifferenceKind::InvoiceWithoutOrder]);
    let diff = &report.differences[0];
    assert_eq!(diff.invoice_number, Some(1000));
    assert_eq!(
        diff.fix,
        "credit note for invoice 1000 if it was raised in error"
    );
    // An order found outside the period matches it.
    let mut outside = sample().orders.remove(0);
    outside.in_period = false;
    inputs.orders.push(outside);
    assert_eq!(kinds(&inputs), []);
}

#[test]
fn amounts_are_compared_to_the_penny() {
    let mut inputs = sample();
    let invoice = invoice_of(&mut inputs, "SO-1");
    invoice.net += d("0.01");
    invoice.gross += d("0.01");
    invoice.due += d("0.01");
    let report = reconcile(&inputs);
    assert_eq!(kinds(&inputs), [DifferenceKind::AmountMismatch]);
    let diff = &report.differences[0];
    assert_eq!(diff.expected.as_deref(), Some("GBP 120.00"));
    assert_eq!(diff.actual.as_deref(), Some("GBP 120.01"));
    assert_eq!(diff.fix, "credit note for invoice 1000 of GBP 0.01");

    let mut inputs = sample();
    let invoice = invoice_of(&mut inputs, "SO-1");
    invoice.net -= d("10");
    invoice.gross -= d("10");
    invoice.due -= d("10");
    let diff = reconcile(&inputs).differences.remove(0);
    assert!(
        diff.fix
            .starts_with("invoice the missing GBP 10.00 for order SO-1"),
        "{}",
        diff.fix
    );

    // A currency that differs is a mismatch whatever the amounts.
    let mut inputs = sample();
    invoice_of(&mut inputs, "SO-1").currency = "EUR".to_owned();
    assert_eq!(kinds(&inputs), [DifferenceKind::AmountMismatch]);
}

#[test]
fn vat_is_checked_against_the_tax_ordercloud_computed() {
    let mut inputs = sample();
    let invoice = invoice_of(&mut inputs, "SO-3");
    invoice.vat = d("12.00");
    invoice.gross = invoice.net + invoice.vat;
    invoice.total_paid = invoice.gross;
    let report = reconcile(&inputs);
    assert_eq!(kinds(&inputs), [DifferenceKind::VatMismatch]);
    let diff = &report.differences[0];
    assert_eq!(diff.expected.as_deref(), Some("GBP 10.00"));
    assert_eq!(diff.actual.as_deref(), Some("GBP 12.00"));
}

#[test]
fn a_paid_order_with_an_unpaid_invoice_is_reported_both_ways() {
    // Completed in OrderCloud.
    let mut inputs = sample();
    let invoice = invoice_of(&mut inputs, "SO-2");
    invoice.total_paid = Decimal::ZERO;
    invoice.due = invoice.gross;
    invoice.status = "Unpaid".to_owned();
    let report = reconcile(&inputs);
    assert_eq!(kinds(&inputs), [DifferenceKind::PaidOrderUnpaidInvoice]);
    let diff = &report.differences[0];
    assert_eq!(diff.actual.as_deref(), Some("GBP 15.00 due"));
    assert!(
        diff.fix
            .contains("record a payment of GBP 15.00 on invoice 1001"),
        "{}",
        diff.fix
    );

    // Paid at the gateway.
    let mut inputs = sample();
    let invoice = invoice_of(&mut inputs, "SO-3");
    invoice.total_paid = Decimal::ZERO;
    invoice.due = invoice.gross;
    let diff = reconcile(&inputs).differences.remove(0);
    assert_eq!(diff.kind, DifferenceKind::PaidOrderUnpaidInvoice);
    assert_eq!(diff.payment_id.as_deref(), Some("pi_SO-3"));
    // Refunded in full: not paid any more, nothing to say.
    inputs
        .gateway
        .as_mut()
        .unwrap()
        .refunds
        .push(GatewayRefund {
            id: "re_1".to_owned(),
            payment_intent: Some("pi_SO-3".to_owned()),
            amount: d("60.00"),
            currency: "GBP".to_owned(),
            status: "succeeded".to_owned(),
        });
    assert_eq!(kinds(&inputs), []);
}

#[test]
fn a_payment_without_invoice_is_reported() {
    let mut inputs = sample();
    inputs
        .gateway
        .as_mut()
        .unwrap()
        .payments
        .push(GatewayPayment {
            id: "pi_stray".to_owned(),
            order_id: Some("SO-404".to_owned()),
            amount: d("9.99"),
            currency: "GBP".to_owned(),
            status: "succeeded".to_owned(),
            created: Some(Utc.with_ymd_and_hms(2026, 11, 5, 0, 0, 0).unwrap()),
        });
    let report = reconcile(&inputs);
    assert_eq!(kinds(&inputs), [DifferenceKind::PaymentWithoutInvoice]);
    assert!(report.differences[0].fix.contains("refund GBP 9.99"));
    // Read from the margin before the period: only used for matching.
    inputs
        .gateway
        .as_mut()
        .unwrap()
        .payments
        .last_mut()
        .unwrap()
        .created = Some(Utc.with_ymd_and_hms(2026, 10, 31, 23, 0, 0).unwrap());
    assert_eq!(kinds(&inputs), []);
}

#[test]
fn overpaid_invoices_and_orders_paid_twice_are_reported() {
    let mut inputs = sample();
    invoice_of(&mut inputs, "SO-2").total_paid = d("30.00");
    let report = reconcile(&inputs);
    assert_eq!(kinds(&inputs), [DifferenceKind::Overpaid]);
    assert_eq!(
        report.differences[0].fix,
        "refund GBP 15.00 or keep it as credit; remove the duplicate payment on invoice 1001"
    );

    let mut inputs = sample();
    let mut second = inputs.gateway.as_ref().unwrap().payments[0].clone();
    second.id = "pi_SO-3-again".to_owned();
    inputs.gateway.as_mut().unwrap().payments.push(second);
    let report = reconcile(&inputs);
    assert_eq!(kinds(&inputs), [DifferenceKind::Overpaid]);
    assert_eq!(
        report.differences[0].fix,
        "refund GBP 60.00 (pi_SO-3-again) or keep it as credit"
    );
}

#[test]
fn duplicate_invoices_keep_the_one_in_the_ledger() {
    let mut inputs = sample();
    let mut copy = inputs.invoices[0].clone();
    copy.number = 999;
    inputs.invoices.push(copy);
    let report = reconcile(&inputs);
    assert_eq!(kinds(&inputs), [DifferenceKind::DuplicateInvoice]);
    let diff = &report.differences[0];
    // 999 is lower, but the ledger links 1000: 999 is the duplicate.
    assert_eq!(diff.invoice_number, Some(999));
    assert_eq!(diff.fix, "credit note for invoice 999 (duplicate of 1000)");
}

#[test]
fn without_a_gateway_the_report_says_so() {
    let mut inputs = sample();
    inputs.gateway = None;
    let report = reconcile(&inputs);
    assert_eq!(report.checked.payments, None);
    assert_eq!(report.notes.len(), 1);
    assert!(report.notes[0].contains("not checked"));
    assert!(report.render(Format::Table).contains("gateway not checked"));
}

#[test]
fn renderings() {
    let mut inputs = sample();
    invoice_of(&mut inputs, "SO-2").total_paid = d("30.00");
    let report = reconcile(&inputs);
    let csv = report.render(Format::Csv);
    insta::assert_snapshot!(csv, @r###"
    kind,order_id,invoice_number,payment_id,expected,actual,detail,suggested_fix
    overpaid,SO-2,1001,,paid GBP 15.00,paid GBP 30.00,invoice 1001 was paid GBP 15.00 more than its gross (paid more than once?),refund GBP 15.00 or keep it as credit; remove the duplicate payment on invoice 1001
    "###);
    assert!(csv.starts_with(CSV_HEADER));
    let json: serde_json::Value = serde_json::from_str(&report.render(Format::Json)).unwrap();
    assert_eq!(json["counts"]["overpaid"], 1);
    assert_eq!(json["differences"][0]["kind"], "overpaid");
    assert_eq!(json["matched"]["gross"]["GBP"], "180.00");
    let table = report.render(Format::Table);
    assert!(table.contains("fix: refund GBP 15.00"), "{table}");
    assert!(table.contains("Matched: 2 orders (GBP 180.00)"), "{table}");
    assert_eq!(Format::parse("CSV"), Ok(Format::Csv));
    assert!(Format::parse("xml").is_err());
}

#[test]
fn periods_and_the_schedule() {
    assert!(Period::parse("2026-11-30", "2026-11-01")
        .unwrap_err()
        .contains("after it ends"));
    assert!(Period::parse("30/11/2026", "2026-12-01")
        .unwrap_err()
        .contains("YYYY-MM-DD"));
    let p = period();
    assert_eq!(p.end(), Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());

    let at = NaiveTime::from_hms_opt(2, 0, 0).unwrap();
    let before = Utc.with_ymd_and_hms(2026, 12, 3, 1, 59, 0).unwrap();
    assert_eq!(
        next_run(before, at),
        Utc.with_ymd_and_hms(2026, 12, 3, 2, 0, 0).unwrap()
    );
    let on_time = Utc.with_ymd_and_hms(2026, 12, 3, 2, 0, 0).unwrap();
    assert_eq!(
        next_run(on_time, at),
        Utc.with_ymd_and_hms(2026, 12, 4, 2, 0, 0).unwrap()
    );
    let yesterday = lookback_period(on_time, 1);
    assert_eq!(
        (yesterday.from.to_string(), yesterday.to.to_string()),
        ("2026-12-02".to_owned(), "2026-12-02".to_owned())
    );
    let week = lookback_period(on_time, 7);
    assert_eq!(week.from.to_string(), "2026-11-26");

    let config = ReconcileConfig::default();
    assert_eq!(config.daily_time(), Ok(None));
    let config = ReconcileConfig {
        daily_at: "2am".to_owned(),
        lookback_days: 1,
    };
    assert!(config.daily_time().unwrap_err().contains("HH:MM"));
}

// ---- property: consistent data has no difference; one fault, one difference

#[derive(Debug, Clone)]
struct GenOrder {
    cents: i64,
    tax_cents: i64,
    completed: bool,
    gateway: bool,
}

fn gen_order() -> impl Strategy<Value = GenOrder> {
    (
        1i64..5_000_000,
        prop_oneof![Just(0i64), 1i64..500_000],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(cents, tax_cents, completed, gateway)| GenOrder {
            cents,
            tax_cents: tax_cents.min(cents),
            completed,
            gateway,
        })
}

/// A consistent data set from generated orders.
fn consistent(orders: &[GenOrder]) -> Inputs {
    let ids: Vec<&'static str> = (0..orders.len())
        .map(|i| &*Box::leak(format!("SO-{i:04}").into_boxed_str()))
        .collect();
    let totals: Vec<&'static str> = orders
        .iter()
        .map(|o| &*Box::leak(Decimal::new(o.cents, 2).to_string().into_boxed_str()))
        .collect();
    let taxes: Vec<&'static str> = orders
        .iter()
        .map(|o| &*Box::leak(Decimal::new(o.tax_cents, 2).to_string().into_boxed_str()))
        .collect();
    let cases: Vec<Case> = orders
        .iter()
        .enumerate()
        .map(|(i, o)| Case {
            id: ids[i],
            total: totals[i],
            tax_cost: taxes[i],
            completed: o.completed,
            gateway: o.gateway,
        })
        .collect();
    inputs(&cases)
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    DeleteInvoice,
    OrphanInvoice,
    DuplicateInvoice,
    ChangeAmount,
    ChangeVat,
    UnpayInvoice,
    StrayPayment,
    Overpay,
    PayTwice,
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        Just(Fault::DeleteInvoice),
        Just(Fault::OrphanInvoice),
        Just(Fault::DuplicateInvoice),
        Just(Fault::ChangeAmount),
        Just(Fault::ChangeVat),
        Just(Fault::UnpayInvoice),
        Just(Fault::StrayPayment),
        Just(Fault::Overpay),
        Just(Fault::PayTwice),
    ]
}

/// Applies `fault` to order `index` (or the first order it applies to);
/// returns the kind it must produce, or `None` if no order fits.
fn inject(
    inputs: &mut Inputs,
    orders: &[GenOrder],
    fault: Fault,
    index: usize,
    cents: i64,
) -> Option<DifferenceKind> {
    let n = orders.len();
    let pick = |want: &dyn Fn(&GenOrder) -> bool| {
        (0..n).map(|k| (index + k) % n).find(|&k| want(&orders[k]))
    };
    let delta = Decimal::new(cents, 2);
    let id = |k: usize| format!("SO-{k:04}");
    let invoice = |inputs: &mut Inputs, k: usize| -> usize {
        inputs
            .invoices
            .iter()
            .position(|i| i.customer_reference.as_deref() == Some(id(k).as_str()))
            .unwrap()
    };
    match fault {
        Fault::DeleteInvoice => {
            let k = pick(&|_| true)?;
            let at = invoice(inputs, k);
            inputs.invoices.remove(at);
            Some(DifferenceKind::OrderWithoutInvoice)
        }
        Fault::OrphanInvoice => {
            let mut extra = inputs.invoices[0].clone();
            extra.number = 90_000;
            extra.customer_reference = Some("SO-GONE".to_owned());
            extra.total_paid = Decimal::ZERO;
            extra.due = extra.gross;
            inputs.invoices.push(extra);
            Some(DifferenceKind::InvoiceWithoutOrder)
        }
        Fault::DuplicateInvoice => {
            let k = pick(&|_| true)?;
            let at = invoice(inputs, k);
            let mut copy = inputs.invoices[at].clone();
            copy.number = 90_001;
            copy.total_paid = Decimal::ZERO;
            copy.due = copy.gross;
            inputs.invoices.push(copy);
            Some(DifferenceKind::DuplicateInvoice)
        }
        Fault::ChangeAmount => {
            let k = pick(&|_| true)?;
            let at = invoice(inputs, k);
            let inv = &mut inputs.invoices[at];
            inv.net += delta;
            inv.gross += delta;
            if inv.due > Decimal::ZERO {
                inv.due += delta;
            }
            Some(DifferenceKind::AmountMismatch)
        }
        Fault::ChangeVat => {
            let k = pick(&|o| o.tax_cents > 0)?;
            let at = invoice(inputs, k);
            let inv = &mut inputs.invoices[at];
            inv.vat += delta;
            inv.gross += delta;
            if inv.due > Decimal::ZERO {
                inv.due += delta;
            } else {
                inv.total_paid += delta;
            }
            Some(DifferenceKind::VatMismatch)
        }
        Fault::UnpayInvoice => {
            let k = pick(&|o| o.completed || o.gateway)?;
            let at = invoice(inputs, k);
            let inv = &mut inputs.invoices[at];
            inv.total_paid = Decimal::ZERO;
            inv.due = inv.gross;
            inv.status = "Unpaid".to_owned();
            Some(DifferenceKind::PaidOrderUnpaidInvoice)
        }
        Fault::StrayPayment => {
            inputs.gateway.as_mut()?.payments.push(GatewayPayment {
                id: "pi_stray".to_owned(),
                order_id: Some("SO-STRAY".to_owned()),
                amount: delta,
                currency: "GBP".to_owned(),
                status: "succeeded".to_owned(),
                created: Some(Utc.with_ymd_and_hms(2026, 11, 9, 0, 0, 0).unwrap()),
            });
            Some(DifferenceKind::PaymentWithoutInvoice)
        }
        Fault::Overpay => {
            let k = pick(&|o| o.completed || o.gateway)?;
            let at = invoice(inputs, k);
            inputs.invoices[at].total_paid += delta;
            Some(DifferenceKind::Overpaid)
        }
        Fault::PayTwice => {
            let k = pick(&|o| o.gateway)?;
            let gateway = inputs.gateway.as_mut()?;
            let mut again = gateway
                .payments
                .iter()
                .find(|p| p.order_id.as_deref() == Some(id(k).as_str()))?
                .clone();
            again.id.push_str("-again");
            gateway.payments.push(again);
            Some(DifferenceKind::Overpaid)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn consistent_data_has_no_difference(orders in prop::collection::vec(gen_order(), 0..40)) {
        let inputs = consistent(&orders);
        let report = reconcile(&inputs);
        prop_assert!(report.differences.is_empty(), "{:#?}", report.differences);
        prop_assert_eq!(report.matched.orders, orders.len());
        let expected: Decimal = inputs.invoices.iter().map(|i| i.gross).sum();
        let matched: Decimal = report.matched.gross.values().copied().sum();
        prop_assert_eq!(matched, expected);
    }

    #[test]
    fn one_fault_gives_exactly_that_difference(
        orders in prop::collection::vec(gen_order(), 1..40),
        fault in fault(),
        index in 0usize..40,
        cents in 1i64..100_000,
    ) {
        let mut inputs = consistent(&orders);
        let Some(kind) = inject(&mut inputs, &orders, fault, index % orders.len(), cents) else {
            return Ok(());
        };
        let report = reconcile(&inputs);
        let kinds: Vec<DifferenceKind> = report.differences.iter().map(|d| d.kind).collect();
        prop_assert_eq!(kinds, vec![kind], "{:?}: {:#?}", fault, report.differences);
        prop_assert_eq!(report.counts[&kind], 1);
        prop_assert!(!report.differences[0].fix.is_empty());
    }
}

#[test]
fn ledger_links_are_by_order() {
    let ledger: HashMap<String, LedgerLink> = sample().ledger.invoices;
    assert_eq!(ledger["SO-2"].external_id.as_deref(), Some("1001"));
}

/// Amounts no real system sends but a broken or hostile answer can: the
/// largest and smallest decimals, 28 decimal places, negatives.
fn hostile_amount() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        Just(Decimal::MAX),
        Just(Decimal::MIN),
        Just(Decimal::new(1, 28)),
        Just(-Decimal::new(1, 28)),
        Just(Decimal::ZERO),
        Just(d("-0.01")),
        Just(d("39614081257132168796771975168")),
        any::<i64>().prop_map(|n| Decimal::new(n, 2)),
        (any::<i64>(), 0u32..=28).prop_map(|(n, scale)| Decimal::new(n, scale)),
    ]
}

/// Which amount of which record a hostile value lands in.
#[derive(Debug, Clone)]
struct HostileAmount {
    record: usize,
    field: u8,
    amount: Decimal,
}

fn hostile_amounts() -> impl Strategy<Value = Vec<HostileAmount>> {
    prop::collection::vec(
        (any::<usize>(), any::<u8>(), hostile_amount()).prop_map(|(record, field, amount)| {
            HostileAmount {
                record,
                field,
                amount,
            }
        }),
        1..8,
    )
}

fn put(inputs: &mut Inputs, hostile: &HostileAmount) {
    let amount = hostile.amount;
    let slot = hostile.field % 9;
    let (orders, invoices) = (inputs.orders.len(), inputs.invoices.len());
    match slot {
        0 | 1 if orders > 0 => {
            let order = &mut inputs.orders[hostile.record % orders];
            match slot {
                0 => order.total = amount,
                _ => order.tax_cost = amount,
            }
        }
        2..=6 if invoices > 0 => {
            let invoice = &mut inputs.invoices[hostile.record % invoices];
            match slot {
                2 => invoice.net = amount,
                3 => invoice.vat = amount,
                4 => invoice.gross = amount,
                5 => invoice.total_paid = amount,
                _ => invoice.due = amount,
            }
        }
        7 => {
            if let Some(gateway) = inputs.gateway.as_mut() {
                if !gateway.payments.is_empty() {
                    let n = gateway.payments.len();
                    gateway.payments[hostile.record % n].amount = amount;
                    // Paid twice, the second time with the hostile amount.
                    let again = gateway.payments[hostile.record % n].clone();
                    gateway.payments.push(GatewayPayment {
                        id: format!("{}-again", again.id),
                        ..again
                    });
                }
            }
        }
        _ => {
            if let Some(gateway) = inputs.gateway.as_mut() {
                if let Some(payment) = gateway.payments.first().cloned() {
                    for id in ["re_1", "re_2"] {
                        gateway.refunds.push(GatewayRefund {
                            id: id.to_owned(),
                            payment_intent: Some(payment.id.clone()),
                            amount,
                            currency: payment.currency.clone(),
                            status: "succeeded".to_owned(),
                        });
                    }
                }
            }
        }
    }
}

/// Found by `hostile_amounts_give_a_report_never_a_panic`: an invoice whose
/// net and VAT add up beyond the largest decimal panicked the matching.
#[test]
fn an_invoice_beyond_the_largest_decimal_gives_a_difference_not_a_panic() {
    let mut inputs = sample();
    inputs.invoices[0].net = Decimal::MAX;
    inputs.invoices[0].vat = Decimal::MAX;
    inputs.invoices[0].gross = Decimal::MAX;
    let report = reconcile(&inputs);
    assert!(
        report
            .differences
            .iter()
            .any(|d| d.kind == DifferenceKind::AmountMismatch),
        "{:#?}",
        report.differences
    );
}

proptest! {
    // Hostile input: `LEDGERBRIDGE_FUZZ_SCALE` scales it (scripts/fuzz-long).
    #![proptest_config(ProptestConfig {
        cases: ledgerbridge_core::fuzz::cases(256),
        ..ProptestConfig::default()
    })]

    /// Amounts at the ends of what a decimal holds, in any order, invoice
    /// or payment (as a broken or hostile answer of OrderCloud, KashFlow or
    /// the gateway would carry them): a report with every rendering, never
    /// a panic.
    #[test]
    fn hostile_amounts_give_a_report_never_a_panic(
        orders in prop::collection::vec(gen_order(), 1..12),
        amounts in hostile_amounts(),
    ) {
        let mut inputs = consistent(&orders);
        for hostile in &amounts {
            put(&mut inputs, hostile);
        }
        let report = reconcile(&inputs);
        for format in [Format::Table, Format::Json, Format::Csv] {
            prop_assert!(!report.render(format).is_empty());
        }
    }
}
