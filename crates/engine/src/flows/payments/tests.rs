//! Unit tests of the payment flow's pure parts: event parsing, minor units,
//! and the policies of [`decide`].

use super::*;
use ledgerbridge_connectors::kashflow::Currency;

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn succeeded(id: &str, amount: i64, currency: &str, order: Option<&str>) -> Value {
    let metadata = order.map_or(json!({}), |o| json!({"order_id": o}));
    json!({"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": {
        "id": id, "object": "payment_intent", "amount": amount, "amount_received": amount,
        "currency": currency, "latest_charge": "ch_1", "metadata": metadata, "created": 1_767_225_600
    }}})
}

fn invoice(gross: &str, paid: &[(&str, &str)]) -> Invoice {
    let lines: Vec<PaymentLine> = paid
        .iter()
        .map(|(reference, amount)| PaymentLine {
            reference: Some((*reference).to_owned()),
            amount: Some(dec(amount)),
            ..PaymentLine::default()
        })
        .collect();
    let total: Decimal = lines.iter().filter_map(|l| l.amount).sum();
    Invoice {
        number: Some(7),
        gross_amount: Some(dec(gross)),
        total_paid_amount: Some(total),
        due_amount: Some(dec(gross) - total),
        currency: Some(Currency {
            code: Some("GBP".to_owned()),
            ..Currency::default()
        }),
        payment_lines: Some(lines),
        ..Invoice::default()
    }
}

fn movement(event: &Value) -> (String, Movement) {
    match parse_event(event).unwrap() {
        PaymentEvent::Apply {
            order_id,
            mut movements,
        } => (order_id, movements.remove(0)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn minor_units_follow_the_currency_exponent() {
    assert_eq!(from_minor_units(1250, "gbp"), dec("12.50"));
    assert_eq!(from_minor_units(1, "EUR"), dec("0.01"));
    assert_eq!(from_minor_units(1250, "jpy"), dec("1250"));
    assert_eq!(from_minor_units(1250, "KWD"), dec("1.250"));
    assert_eq!(from_minor_units(-99, "usd"), dec("-0.99"));
    // Exact beyond what an f64 carries.
    assert_eq!(
        from_minor_units(9_007_199_254_740_993, "GBP").to_string(),
        "90071992547409.93"
    );
}

#[test]
fn a_succeeded_payment_intent_is_one_payment_for_its_order() {
    let (order, m) = movement(&succeeded("pi_1", 1999, "gbp", Some("SO-1")));
    assert_eq!(order, "SO-1");
    assert_eq!(m.kind, MovementKind::Payment);
    assert_eq!(m.key, "gateway:pi_1");
    assert_eq!(m.reference, "gateway:pi_1");
    assert_eq!(m.amount, dec("19.99"));
    assert_eq!(m.currency.as_deref(), Some("GBP"));
    assert!(
        m.note.contains("pi_1") && m.note.contains("SO-1"),
        "{}",
        m.note
    );
    assert_eq!(m.date.as_deref(), Some("2026-01-01 00:00:00"));
    // The step output round-trips through the journal, amounts as text.
    let event = parse_event(&succeeded("pi_1", 1999, "gbp", Some("SO-1"))).unwrap();
    let journaled = serde_json::to_value(&event).unwrap();
    assert_eq!(journaled["movements"][0]["amount"], json!("19.99"));
    assert_eq!(PaymentEvent::deserialize(&journaled).unwrap(), event);
}

#[test]
fn a_payment_without_an_order_parks_and_unknown_events_are_ignored() {
    let err = parse_event(&succeeded("pi_2", 100, "gbp", None)).unwrap_err();
    assert_eq!(err.class, ErrorClass::Validation);
    assert!(err.message.contains("pi_2") && err.message.contains("metadata.order_id"));
    let ignored =
        parse_event(&json!({"type": "customer.created", "data": {"object": {"id": "cus_1"}}}));
    assert!(
        matches!(ignored, Ok(PaymentEvent::Ignored { .. })),
        "{ignored:?}"
    );
}

#[test]
fn a_refunded_charge_gives_one_refund_per_refund_id() {
    let event = json!({"id": "evt_2", "type": "charge.refunded", "data": {"object": {
        "id": "ch_1", "object": "charge", "amount": 5000, "amount_refunded": 3000, "currency": "eur",
        "payment_intent": "pi_9", "metadata": {"order_id": "SO-9"},
        "refunds": {"data": [
            {"id": "re_1", "amount": 1000, "status": "succeeded", "created": 1_767_225_600},
            {"id": "re_2", "amount": 2000, "status": "succeeded"},
            {"id": "re_3", "amount": 500, "status": "failed"}
        ]}
    }}});
    let PaymentEvent::Apply {
        order_id,
        movements,
    } = parse_event(&event).unwrap()
    else {
        panic!()
    };
    assert_eq!(order_id, "SO-9");
    let keys: Vec<(&str, Decimal)> = movements
        .iter()
        .map(|m| (m.key.as_str(), m.amount))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("gateway:re_1", dec("10.00")),
            ("gateway:re_2", dec("20.00"))
        ]
    );
    assert!(movements.iter().all(|m| m.kind == MovementKind::Refund));
}

#[test]
fn a_payout_carries_gross_fee_and_net() {
    let event = json!({"id": "evt_3", "type": "payout.paid", "data": {"object": {
        "id": "po_1", "amount": 9840, "gross_amount": 10000, "fee": 160, "currency": "gbp",
        "payment_intents": ["pi_1", "pi_2"]
    }}});
    let PaymentEvent::Payout(payout) = parse_event(&event).unwrap() else {
        panic!()
    };
    assert_eq!(
        (payout.gross, payout.fee, payout.net),
        (dec("100.00"), dec("1.60"), dec("98.40"))
    );
    assert_eq!(payout.payment_intents, vec!["pi_1", "pi_2"]);
}

fn transaction(body: Value, payment_xp: Value) -> Value {
    json!({
        "Route": TRANSACTION_ROUTE, "Verb": "POST", "LogID": "log-1",
        "RouteParams": {"direction": "Outgoing", "orderID": "SO-5", "paymentID": "PAY-1"},
        "Request": {"Body": body},
        "Response": {"Body": {"ID": "PAY-1", "xp": payment_xp, "Transactions": []}}
    })
}

#[test]
fn ordercloud_transactions_take_the_gateway_key_when_the_payment_names_an_intent() {
    let body = json!({"ID": "T1", "Type": "Capture", "Amount": 12.34, "Succeeded": true});
    let (order, m) = movement(&transaction(
        body.clone(),
        json!({"PaymentIntentID": "pi_7"}),
    ));
    assert_eq!(order, "SO-5");
    assert_eq!(
        m.key, "gateway:pi_7",
        "the same key as the gateway's own event"
    );
    assert_eq!(m.amount, dec("12.34"));
    assert_eq!(m.currency, None);

    let (_, m) = movement(&transaction(body, Value::Null));
    assert_eq!(m.key, "ordercloud:SO-5/PAY-1/T1");
    assert_eq!(m.reference, "ordercloud:SO-5/PAY-1/T1");

    let refund = json!({"ID": "T2", "Type": "Refund", "Amount": 5, "Succeeded": true});
    let (_, m) = movement(&transaction(refund, json!({"PaymentIntentID": "pi_7"})));
    assert_eq!(
        (m.kind, m.key.as_str()),
        (MovementKind::Refund, "ordercloud:SO-5/PAY-1/T2")
    );

    let failed = json!({"ID": "T3", "Amount": 5, "Succeeded": false});
    assert!(matches!(
        parse_event(&transaction(failed, Value::Null)),
        Ok(PaymentEvent::Ignored { .. })
    ));
}

#[test]
fn full_partial_and_repeated_payments() {
    let settings = PaymentSettings::default();
    let (order, m) = movement(&succeeded("pi_1", 12000, "gbp", Some("SO-1")));
    let (line, d) = decide(&settings, &order, &m, &invoice("120.00", &[])).unwrap();
    let line = line.unwrap();
    assert_eq!(line.amount, Some(dec("120.00")));
    assert_eq!(line.reference.as_deref(), Some("gateway:pi_1"));
    assert_eq!(line.is_external_refund, None);
    assert_eq!(d.due_after, Some(Decimal::ZERO));
    assert!(d.warnings.is_empty());

    let (line, d) = decide(&settings, &order, &m, &invoice("200.00", &[])).unwrap();
    assert_eq!(line.unwrap().amount, Some(dec("120.00")));
    assert_eq!(
        d.due_after,
        Some(dec("80.00")),
        "partial: the rest stays due"
    );

    let parked = PaymentSettings {
        partial_payment: PartialPayment::Park,
        ..PaymentSettings::default()
    };
    let err = decide(&parked, &order, &m, &invoice("200.00", &[])).unwrap_err();
    assert_eq!(err.class, ErrorClass::Validation);

    let (line, d) = decide(
        &settings,
        &order,
        &m,
        &invoice("120.00", &[("gateway:pi_1", "120")]),
    )
    .unwrap();
    assert!(line.is_none(), "already on the invoice");
    assert_eq!(d.external_id, "gateway:pi_1");
}

#[test]
fn over_payments_are_applied_with_a_warning_or_capped() {
    let (order, m) = movement(&succeeded("pi_1", 15000, "gbp", Some("SO-1")));
    let (line, d) = decide(
        &PaymentSettings::default(),
        &order,
        &m,
        &invoice("120.00", &[]),
    )
    .unwrap();
    assert_eq!(line.unwrap().amount, Some(dec("150.00")));
    assert_eq!(d.due_after, Some(dec("-30.00")));
    assert!(
        d.warnings[0].contains("over-paid by 30.00 GBP"),
        "{:?}",
        d.warnings
    );

    let cap = PaymentSettings {
        overpayment: Overpayment::Cap,
        ..PaymentSettings::default()
    };
    let (line, d) = decide(&cap, &order, &m, &invoice("120.00", &[])).unwrap();
    assert_eq!(line.unwrap().amount, Some(dec("120.00")));
    assert!(
        d.warnings[0].contains("30.00 GBP not recorded"),
        "{:?}",
        d.warnings
    );
    // Nothing due at all: no zero line (KashFlow refuses those).
    let (line, d) = decide(&cap, &order, &m, &invoice("120.00", &[("x", "120")])).unwrap();
    assert!(line.is_none());
    assert!(d.external_id.ends_with("(nothing due)"));
}

#[test]
fn refunds_are_negative_external_refund_lines() {
    let event = json!({"type": "charge.refunded", "data": {"object": {
        "id": "ch_1", "currency": "gbp", "payment_intent": "pi_1", "metadata": {"order_id": "SO-1"},
        "refunds": {"data": [{"id": "re_1", "amount": 2500, "status": "succeeded"}]}
    }}});
    let (order, m) = movement(&event);
    let (line, d) = decide(
        &PaymentSettings::default(),
        &order,
        &m,
        &invoice("120.00", &[("gateway:pi_1", "120")]),
    )
    .unwrap();
    let line = line.unwrap();
    assert_eq!(line.amount, Some(dec("-25.00")));
    assert_eq!(line.is_external_refund, Some(true));
    assert_eq!(line.reference.as_deref(), Some("gateway:re_1"));
    assert_eq!(d.due_after, Some(dec("25.00")));
}

#[test]
fn an_order_paid_by_status_is_not_paid_again_by_the_gateway() {
    let (order, m) = movement(&succeeded("pi_1", 12000, "gbp", Some("SO-1")));
    let paid = invoice("120.00", &[(&order_status_reference("SO-1"), "120")]);
    let (line, d) = decide(&PaymentSettings::default(), &order, &m, &paid).unwrap();
    assert!(line.is_none());
    assert_eq!(d.external_id, "ledgerbridge:order:SO-1");
    assert!(
        d.warnings[0].contains("already paid when the order was completed"),
        "{:?}",
        d.warnings
    );
}

#[test]
fn a_payment_in_another_currency_parks() {
    let (order, m) = movement(&succeeded("pi_1", 12000, "eur", Some("SO-1")));
    let err = decide(
        &PaymentSettings::default(),
        &order,
        &m,
        &invoice("120.00", &[]),
    )
    .unwrap_err();
    assert_eq!(err.class, ErrorClass::Validation);
    assert!(
        err.message.contains("EUR") && err.message.contains("GBP") && err.message.contains("SO-1"),
        "{}",
        err.message
    );
}

/// Found in review of the fuzzing work: an invoice from KashFlow with no
/// `AmountDue` and amounts near Decimal's limit overflowed `gross - paid`
/// (a panic in a worker). Now the payment parks, saying why.
#[test]
fn an_invoice_with_amounts_beyond_their_limits_parks_the_payment_not_a_panic() {
    let (order, m) = movement(&succeeded("pi_9", 12000, "gbp", Some("SO-9")));
    let mut hostile = invoice("1", &[]);
    hostile.due_amount = None;
    hostile.gross_amount = Some(Decimal::MAX);
    hostile.total_paid_amount = Some(Decimal::MIN);
    let err = decide(&PaymentSettings::default(), &order, &m, &hostile).unwrap_err();
    assert_eq!(err.class, ErrorClass::Validation);
    assert!(err.message.contains("invoice 7"), "{}", err.message);
}
