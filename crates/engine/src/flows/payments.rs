//! `payment-to-invoice`: money the payment gateway (or OrderCloud) reports
//! for an order becomes a payment line on that order's KashFlow invoice,
//! exactly once.
//!
//! Triggers: gateway `payment_intent.succeeded`, `charge.refunded` and
//! `payout.paid`; OrderCloud `POST v1/orders/{direction}/{orderID}/payments/
//! {paymentID}/transactions`. Steps (each journaled):
//! 1. `event` — what the event says, read from its body alone: the order,
//!    and per payment or refund its business key, amount (minor units →
//!    decimal by the currency's exponent), currency and reference; or a
//!    payout's gross, fee and net; or why the event is ignored;
//! 2. `invoice` — the order's invoice: the ledger's `invoice/order:<ID>`
//!    link, else the invoice whose `CustomerReference` is the order ID. None
//!    yet is a transient failure (the order's invoice may still be in
//!    flight): the runtime backs off and retries, and parks the run with
//!    that message naming the order when it gives up;
//! 3. `apply` — each payment or refund written once
//!    ([`StepCtx::write_once`], keys `payment/gateway:<payment intent>`,
//!    `refund/gateway:<refund>`, `payment/ordercloud:<order>/<payment>/<txn>`),
//!    the amount decided on a fresh read of the invoice under the client's
//!    per-invoice lock ([`decide`]); a payout is recorded in the ledger
//!    and the audit trail with its fee.
//!
//! An OrderCloud transaction on a payment whose `xp.PaymentIntentID` names a
//! gateway payment intent is that gateway payment: it takes the same key,
//! so whichever of the two events comes first pays, and the other links.

use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledgerbridge_connectors::kashflow::{Invoice, KashFlowClient, PaymentLine};
use ledgerbridge_core::{BusinessKey, ErrorClass, Failure};
use ledgerbridge_store::{Link, NewAudit};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::flow::{Flow, Mode, PlannedRequest, StepCtx, Trigger};

/// The flow's name.
pub const NAME: &str = "payment-to-invoice";

/// The gateway events the flow starts on.
pub const GATEWAY_EVENTS: [&str; 3] =
    ["payment_intent.succeeded", "charge.refunded", "payout.paid"];

/// The OrderCloud route of payment transactions.
pub const TRANSACTION_ROUTE: &str =
    "v1/orders/{direction}/{orderID}/payments/{paymentID}/transactions";

/// The `Reference` the order-to-invoice flow gives the payment it makes
/// when an order's status says paid.
pub fn order_status_reference(order_id: &str) -> String {
    format!("ledgerbridge:order:{order_id}")
}

/// Whether a payment line's `Reference` is one this flow wrote (a gateway
/// payment or refund, or an OrderCloud transaction).
pub fn is_payment_flow_reference(reference: &str) -> bool {
    reference.starts_with("gateway:") || reference.starts_with("ordercloud:")
}

/// What to do when a payment is larger than what the invoice still owes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overpayment {
    /// Record the whole amount (the invoice shows a negative amount due)
    /// and warn: the books show the money that was actually received.
    Apply,
    /// Record only what is due and report the excess in a warning.
    Cap,
}

/// What to do when a payment is smaller than what the invoice still owes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartialPayment {
    /// Record it; the invoice stays `Unpaid` with the rest due.
    Apply,
    /// Park the run for a human.
    Park,
}

/// Settings of the flow (`[flows.payment-to-invoice]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentSettings {
    /// Run this flow when a KashFlow connection is configured.
    pub enabled: bool,
    /// KashFlow payment method of the payments (KashFlow's default if unset).
    pub payment_method_id: Option<i64>,
    /// KashFlow bank account the payments go to (KashFlow's default if unset).
    pub bank_account_id: Option<i64>,
    /// A payment larger than the amount due: `apply` (default) or `cap`.
    pub overpayment: Overpayment,
    /// A payment smaller than the amount due: `apply` (default) or `park`.
    pub partial_payment: PartialPayment,
}

impl Default for PaymentSettings {
    fn default() -> Self {
        PaymentSettings {
            enabled: true,
            payment_method_id: None,
            bank_account_id: None,
            overpayment: Overpayment::Apply,
            partial_payment: PartialPayment::Apply,
        }
    }
}

/// A payment into, or a refund out of, one invoice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Movement {
    /// `payment` or `refund`: the business key's kind.
    pub kind: MovementKind,
    /// The business key inside that kind, e.g. `gateway:pi_123`.
    pub key: String,
    /// The payment line's `Reference`, e.g. `gateway:pi_123`.
    pub reference: String,
    /// The amount, positive for refunds too (the sign is the kind's).
    pub amount: Decimal,
    /// ISO currency code (upper case), when the event gives one.
    pub currency: Option<String>,
    /// The payment line's `Note`.
    pub note: String,
    /// When the money moved, in KashFlow's date format.
    pub date: Option<String>,
}

/// Money in or out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MovementKind {
    /// Money from the customer.
    Payment,
    /// Money back to the customer.
    Refund,
}

impl MovementKind {
    fn as_str(self) -> &'static str {
        match self {
            MovementKind::Payment => "payment",
            MovementKind::Refund => "refund",
        }
    }
}

/// A payout from the gateway to the bank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payout {
    /// The gateway's payout id.
    pub id: String,
    /// ISO currency code (upper case).
    pub currency: String,
    /// What the payments in it came to.
    pub gross: Decimal,
    /// What the gateway kept.
    pub fee: Decimal,
    /// What reached the bank.
    pub net: Decimal,
    /// The payment intents it pays out, when listed.
    pub payment_intents: Vec<String>,
}

/// What one event asks of the flow (the `event` step's output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum PaymentEvent {
    /// Payments or refunds for the invoice of an order.
    Apply {
        /// The OrderCloud order ID (= the invoice's `CustomerReference`).
        order_id: String,
        /// One per payment or refund.
        movements: Vec<Movement>,
    },
    /// A payout: recorded, no invoice is paid by it.
    Payout(Payout),
    /// Nothing to do, and why.
    Ignored {
        /// Why.
        reason: String,
    },
}

/// Digits after the decimal point of a currency's minor unit (Stripe's
/// list: most currencies 2, these 0 or 3).
pub fn minor_unit_exponent(currency: &str) -> u32 {
    const ZERO: [&str; 16] = [
        "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV",
        "XAF", "XOF", "XPF",
    ];
    const THREE: [&str; 5] = ["BHD", "JOD", "KWD", "OMR", "TND"];
    let code = currency.to_ascii_uppercase();
    if ZERO.contains(&code.as_str()) {
        0
    } else if THREE.contains(&code.as_str()) {
        3
    } else {
        2
    }
}

/// An amount in minor units as a decimal in major units (`1250` GBP →
/// `12.50`, `1250` JPY → `1250`). Exact: no binary floats involved.
pub fn from_minor_units(minor: i64, currency: &str) -> Decimal {
    Decimal::new(minor, minor_unit_exponent(currency))
}

fn kashflow_date_of(unix: Option<i64>) -> Option<String> {
    unix.and_then(|t| DateTime::<Utc>::from_timestamp(t, 0))
        .map(|at| at.format("%Y-%m-%d %H:%M:%S").to_string())
}

fn text<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn minor(value: &Value, pointer: &str, what: &str) -> Result<i64, Failure> {
    value
        .pointer(pointer)
        .and_then(Value::as_i64)
        .ok_or_else(|| {
            Failure::validation(format!(
                "{what}: {} is not a whole number of minor units",
                pointer.trim_start_matches('/').replace('/', ".")
            ))
        })
}

/// Reads a gateway event (`{"type", "data": {"object"}}`) or an OrderCloud
/// transaction webhook. A payment that names no order parks: nobody else
/// would notice it.
pub fn parse_event(input: &Value) -> Result<PaymentEvent, Failure> {
    if input.get("Route").is_some() {
        return parse_transaction(input);
    }
    let event_type = text(input, "/type").unwrap_or_default();
    let object = input.pointer("/data/object").unwrap_or(&Value::Null);
    let id = text(object, "/id").unwrap_or_default().to_owned();
    match event_type {
        "payment_intent.succeeded" => {
            let what = format!("payment {id}");
            if id.is_empty() {
                return Err(Failure::validation(
                    "payment_intent.succeeded without data.object.id",
                ));
            }
            let currency = text(object, "/currency")
                .ok_or_else(|| Failure::validation(format!("{what}: no currency")))?
                .to_ascii_uppercase();
            let received = object
                .get("amount_received")
                .and_then(Value::as_i64)
                .map_or_else(|| minor(object, "/amount", &what), Ok)?;
            let order_id = text(object, "/metadata/order_id").ok_or_else(|| {
                Failure::validation(format!(
                    "{what} names no order (metadata.order_id); record it in KashFlow by hand"
                ))
            })?;
            let charge = text(object, "/latest_charge").unwrap_or("-");
            Ok(PaymentEvent::Apply {
                order_id: order_id.to_owned(),
                movements: vec![Movement {
                    kind: MovementKind::Payment,
                    key: format!("gateway:{id}"),
                    reference: format!("gateway:{id}"),
                    amount: from_minor_units(received, &currency),
                    currency: Some(currency),
                    note: format!("Gateway payment {id} (charge {charge}) for order {order_id}"),
                    date: kashflow_date_of(object.get("created").and_then(Value::as_i64)),
                }],
            })
        }
        "charge.refunded" => {
            let what = format!("refund of charge {id}");
            let currency = text(object, "/currency")
                .ok_or_else(|| Failure::validation(format!("{what}: no currency")))?
                .to_ascii_uppercase();
            let order_id = text(object, "/metadata/order_id").ok_or_else(|| {
                Failure::validation(format!(
                    "{what} names no order (metadata.order_id); record it in KashFlow by hand"
                ))
            })?;
            let intent = text(object, "/payment_intent").unwrap_or("-");
            let refunds = object
                .pointer("/refunds/data")
                .and_then(Value::as_array)
                .filter(|list| !list.is_empty())
                .ok_or_else(|| {
                    Failure::validation(format!(
                        "{what} lists no refunds (refunds.data); record the refund by hand"
                    ))
                })?;
            let mut movements = Vec::new();
            for refund in refunds {
                if text(refund, "/status").is_some_and(|s| s != "succeeded") {
                    continue;
                }
                let refund_id = text(refund, "/id").ok_or_else(|| {
                    Failure::validation(format!("{what}: a refund without an id"))
                })?;
                let amount = minor(refund, "/amount", &format!("refund {refund_id}"))?;
                movements.push(Movement {
                    kind: MovementKind::Refund,
                    key: format!("gateway:{refund_id}"),
                    reference: format!("gateway:{refund_id}"),
                    amount: from_minor_units(amount, &currency),
                    currency: Some(currency.clone()),
                    note: format!(
                        "Gateway refund {refund_id} of payment {intent} for order {order_id}"
                    ),
                    date: kashflow_date_of(refund.get("created").and_then(Value::as_i64)),
                });
            }
            if movements.is_empty() {
                return Ok(PaymentEvent::Ignored {
                    reason: format!("{what}: no refund has succeeded"),
                });
            }
            Ok(PaymentEvent::Apply {
                order_id: order_id.to_owned(),
                movements,
            })
        }
        "payout.paid" => {
            let what = format!("payout {id}");
            let currency = text(object, "/currency")
                .ok_or_else(|| Failure::validation(format!("{what}: no currency")))?
                .to_ascii_uppercase();
            let net = minor(object, "/amount", &what)?;
            let fee = object.get("fee").and_then(Value::as_i64).unwrap_or(0);
            let gross = object
                .get("gross_amount")
                .and_then(Value::as_i64)
                .unwrap_or(net + fee);
            let payment_intents = object
                .get("payment_intents")
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            Ok(PaymentEvent::Payout(Payout {
                id,
                gross: from_minor_units(gross, &currency),
                fee: from_minor_units(fee, &currency),
                net: from_minor_units(net, &currency),
                currency,
                payment_intents,
            }))
        }
        other => Ok(PaymentEvent::Ignored {
            reason: format!("gateway event type {other:?} is not one this flow handles"),
        }),
    }
}

/// An OrderCloud `POST …/payments/{paymentID}/transactions` webhook:
/// `Request.Body` is the transaction, `Response.Body` the payment.
fn parse_transaction(input: &Value) -> Result<PaymentEvent, Failure> {
    let order_id = text(input, "/RouteParams/orderID")
        .ok_or_else(|| {
            Failure::validation("the transaction webhook names no order (RouteParams.orderID)")
        })?
        .to_owned();
    let payment_id = text(input, "/RouteParams/paymentID")
        .ok_or_else(|| {
            Failure::validation(format!(
                "the transaction webhook of order {order_id} names no payment (RouteParams.paymentID)"
            ))
        })?
        .to_owned();
    let body = input.pointer("/Request/Body").unwrap_or(&Value::Null);
    let payment = input.pointer("/Response/Body").unwrap_or(&Value::Null);
    let transaction_id = text(body, "/ID")
        .or_else(|| {
            payment
                .get("Transactions")
                .and_then(Value::as_array)
                .and_then(|list| list.last())
                .and_then(|t| text(t, "/ID"))
        })
        .ok_or_else(|| {
            Failure::validation(format!(
                "order {order_id} payment {payment_id}: the transaction has no ID"
            ))
        })?
        .to_owned();
    let what = format!("order {order_id} payment {payment_id} transaction {transaction_id}");
    if body.get("Succeeded").and_then(Value::as_bool) != Some(true) {
        return Ok(PaymentEvent::Ignored {
            reason: format!("{what} did not succeed"),
        });
    }
    let amount = match body.get("Amount") {
        Some(Value::Number(n)) => {
            let written = n.to_string();
            written
                .parse::<Decimal>()
                .or_else(|_| Decimal::from_scientific(&written))
                .map_err(|_| {
                    Failure::validation(format!("{what}: Amount {written} is not an amount"))
                })?
        }
        _ => return Err(Failure::validation(format!("{what}: no Amount"))),
    };
    let refund = amount < Decimal::ZERO
        || text(body, "/Type").is_some_and(|t| t.to_ascii_lowercase().contains("refund"));
    if amount.is_zero() {
        return Ok(PaymentEvent::Ignored {
            reason: format!("{what} is for 0"),
        });
    }
    let intent = text(payment, "/xp/PaymentIntentID");
    let (key, note) = match (intent, refund) {
        // The gateway's own payment, recorded in OrderCloud: one key for both.
        (Some(intent), false) => (
            format!("gateway:{intent}"),
            format!(
                "Gateway payment {intent} for order {order_id} (OrderCloud payment {payment_id})"
            ),
        ),
        _ => (
            format!("ordercloud:{order_id}/{payment_id}/{transaction_id}"),
            format!(
                "OrderCloud {} {transaction_id} of payment {payment_id} for order {order_id}",
                if refund { "refund" } else { "transaction" }
            ),
        ),
    };
    let date = text(body, "/DateExecuted")
        .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
        .map(|d| {
            d.with_timezone(&Utc)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        });
    Ok(PaymentEvent::Apply {
        order_id,
        movements: vec![Movement {
            kind: if refund {
                MovementKind::Refund
            } else {
                MovementKind::Payment
            },
            reference: key.clone(),
            key,
            amount: amount.abs(),
            currency: None,
            note,
            date,
        }],
    })
}

/// What [`decide`] concluded about one movement.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// What the business key is linked to: the payment line's reference
    /// (ours, or the order-status payment's).
    pub external_id: String,
    /// The signed amount written, if a line was written.
    pub applied: Option<Decimal>,
    /// What the invoice owes after it.
    pub due_after: Option<Decimal>,
    /// Things the finance team should know.
    pub warnings: Vec<String>,
}

/// Decides, on a fresh read of the invoice, the payment line for one
/// movement (or none): the policies live here.
///
/// - The movement's reference already on the invoice → nothing (done).
/// - A payment for an order the order-to-invoice flow already settled by
///   status (a line `ledgerbridge:order:<ID>`) → nothing, linked to that
///   payment, with a warning: the money is on the invoice once.
/// - A currency other than the invoice's → validation failure (parks).
/// - Partial payments: recorded (or parked, by setting). Over-payments:
///   recorded whole with a warning, or capped to the amount due with the
///   excess reported (by setting).
/// - Refunds: a negative line with `IsExternalRefund` (the money went back
///   through the gateway, outside KashFlow).
pub fn decide(
    settings: &PaymentSettings,
    order_id: &str,
    movement: &Movement,
    invoice: &Invoice,
) -> Result<(Option<PaymentLine>, Decision), Failure> {
    let number = invoice.number.unwrap_or_default();
    let lines = invoice.payment_lines.as_deref().unwrap_or_default();
    let has = |reference: &str| {
        lines
            .iter()
            .any(|l| l.reference.as_deref() == Some(reference))
    };
    if has(&movement.reference) {
        return Ok((
            None,
            Decision {
                external_id: movement.reference.clone(),
                ..Decision::default()
            },
        ));
    }
    let status_reference = order_status_reference(order_id);
    if movement.kind == MovementKind::Payment && has(&status_reference) {
        return Ok((
            None,
            Decision {
                external_id: status_reference.clone(),
                warnings: vec![format!(
                    "order {order_id}: invoice {number} was already paid when the order was completed \
                     ({status_reference}); {} of {} linked to that payment, not paid again",
                    movement.reference, movement.amount
                )],
                ..Decision::default()
            },
        ));
    }
    let invoice_currency = invoice
        .currency
        .as_ref()
        .and_then(|c| c.code.clone())
        .map(|c| c.to_ascii_uppercase());
    if let (Some(theirs), Some(ours)) = (&movement.currency, &invoice_currency) {
        if theirs != ours {
            return Err(Failure::validation(format!(
                "{} ({} {theirs}) for order {order_id}: the invoice {number} is in {ours}; \
                 a payment in another currency must be recorded by hand",
                movement.reference, movement.amount
            )));
        }
    }
    let currency = invoice_currency.unwrap_or_default();
    let beyond = || {
        Failure::validation(format!(
            "{} of {} for order {order_id}: invoice {number}'s amounts are beyond what an amount \
             can hold (28 significant digits); record it by hand",
            movement.reference, movement.amount
        ))
    };
    let due = match invoice.due_amount {
        Some(due) => due,
        None => invoice
            .gross_amount
            .unwrap_or_default()
            .checked_sub(invoice.total_paid_amount.unwrap_or_default())
            .ok_or_else(beyond)?,
    };
    let mut warnings = Vec::new();
    let signed = match movement.kind {
        MovementKind::Refund => -movement.amount,
        MovementKind::Payment if movement.amount < due => {
            if settings.partial_payment == PartialPayment::Park {
                return Err(Failure::validation(format!(
                    "{} of {} {currency} for order {order_id} is less than the {due} due on invoice {number} \
                     (partial_payment = park)",
                    movement.reference, movement.amount
                )));
            }
            movement.amount
        }
        MovementKind::Payment if movement.amount > due => {
            let excess = movement
                .amount
                .checked_sub(due.max(Decimal::ZERO))
                .ok_or_else(beyond)?;
            match settings.overpayment {
                Overpayment::Apply => {
                    warnings.push(format!(
                        "order {order_id}: invoice {number} over-paid by {excess} {currency} ({} of {}, {due} was due); \
                         refund or credit the customer",
                        movement.reference, movement.amount
                    ));
                    movement.amount
                }
                Overpayment::Cap => {
                    warnings.push(format!(
                        "order {order_id}: {} of {} {currency} capped to the {} due on invoice {number}; \
                         {excess} {currency} not recorded: book it by hand",
                        movement.reference,
                        movement.amount,
                        due.max(Decimal::ZERO)
                    ));
                    due.max(Decimal::ZERO)
                }
            }
        }
        MovementKind::Payment => movement.amount,
    };
    if signed.is_zero() {
        // KashFlow refuses a zero payment line: nothing to write.
        return Ok((
            None,
            Decision {
                external_id: format!("{} (nothing due)", movement.reference),
                applied: None,
                due_after: Some(due),
                warnings,
            },
        ));
    }
    let line = PaymentLine {
        date: Some(
            movement
                .date
                .clone()
                .unwrap_or_else(|| Utc::now().format("%Y-%m-%d %H:%M:%S").to_string()),
        ),
        amount: Some(signed),
        method: settings.payment_method_id,
        account_id: settings.bank_account_id,
        reference: Some(movement.reference.clone()),
        note: Some(movement.note.clone()),
        is_external_refund: (movement.kind == MovementKind::Refund).then_some(true),
        ..PaymentLine::default()
    };
    Ok((
        Some(line),
        Decision {
            external_id: movement.reference.clone(),
            applied: Some(signed),
            due_after: Some(due - signed),
            warnings,
        },
    ))
}

/// The flow, bound to its KashFlow connection.
pub struct PaymentToInvoice {
    settings: PaymentSettings,
    kashflow: KashFlowClient,
    kashflow_connection: String,
    kashflow_url: String,
    version: String,
    triggers: Vec<Trigger>,
}

impl PaymentToInvoice {
    /// The flow over a KashFlow connection. Give it a clone of the client
    /// the order-to-invoice flow uses, so that their payments to one
    /// invoice are serialised ([`KashFlowClient::pay_invoice`]).
    pub fn new(
        settings: PaymentSettings,
        kashflow: KashFlowClient,
        kashflow_connection: &str,
        kashflow_url: &str,
    ) -> Self {
        let digest = {
            use sha2::Digest;
            let text = serde_json::to_string(&settings).unwrap_or_default();
            let hash = sha2::Sha256::digest(format!("{NAME}:1:{text}").as_bytes());
            hash.iter()
                .take(4)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        PaymentToInvoice {
            settings,
            kashflow,
            kashflow_connection: kashflow_connection.to_owned(),
            kashflow_url: kashflow_url.trim_end_matches('/').to_owned(),
            version: format!("1+{digest}"),
            triggers: vec![
                Trigger::Gateway {
                    event_types: GATEWAY_EVENTS.iter().map(|t| (*t).to_owned()).collect(),
                },
                Trigger::OrderCloud {
                    route: TRANSACTION_ROUTE.to_owned(),
                    verb: "POST".to_owned(),
                },
            ],
        }
    }

    /// The order's invoice number: the ledger first, then KashFlow by
    /// `CustomerReference`; `None` if there is none yet.
    async fn find_invoice(
        &self,
        ctx: &StepCtx<'_>,
        order_id: &str,
    ) -> Result<Option<i64>, Failure> {
        let key = BusinessKey::new(
            &self.kashflow_connection,
            "invoice",
            format!("order:{order_id}"),
        );
        if let Some(linked) = ctx.linked(&key).await? {
            if let Ok(number) = linked.parse::<i64>() {
                return Ok(Some(number));
            }
        }
        let found = self.kashflow.find_invoices_by_reference(order_id).await?;
        Ok(found.iter().filter_map(|i| i.number).min())
    }

    async fn apply(
        &self,
        ctx: &mut StepCtx<'_>,
        order_id: &str,
        number: i64,
        movement: &Movement,
    ) -> Result<Value, Failure> {
        let key = BusinessKey::new(
            &self.kashflow_connection,
            movement.kind.as_str(),
            &movement.key,
        );
        let signed = match movement.kind {
            MovementKind::Payment => movement.amount,
            MovementKind::Refund => -movement.amount,
        };
        let planned = PlannedRequest {
            step: ctx.step.to_owned(),
            method: "PUT".to_owned(),
            url: format!("{}/invoices/{number}", self.kashflow_url),
            body: Some(json!({"PaymentLines": [{
                "Reference": movement.reference, "Amount": signed.to_string(), "Note": movement.note,
            }]})),
        };
        let decided: Mutex<Option<Decision>> = Mutex::new(None);
        let kashflow = &self.kashflow;
        let settings = &self.settings;
        let decided_ref = &decided;
        let status_reference = order_status_reference(order_id);
        let linked = ctx
            .write_once(
                key.clone(),
                planned,
                self.kashflow.target().limits().timeout,
                || async move {
                    // An earlier attempt's outcome is unknown: is its line there?
                    let invoice = kashflow.get_invoice(number).await?;
                    let lines = invoice.and_then(|i| i.payment_lines).unwrap_or_default();
                    let has = |r: &str| lines.iter().any(|l| l.reference.as_deref() == Some(r));
                    if has(&movement.reference) {
                        return Ok(Some(movement.reference.clone()));
                    }
                    Ok(None)
                },
                || async move {
                    let decision = kashflow
                        .pay_invoice(number, |invoice| {
                            let (line, decision) = decide(settings, order_id, movement, invoice)?;
                            Ok((line, decision))
                        })
                        .await?;
                    let id = decision.external_id.clone();
                    *decided_ref
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(decision);
                    Ok(id)
                },
            )
            .await?;
        let decision = decided
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let outcome = match &decision {
            Some(d) if d.applied.is_some() => "applied",
            Some(d) if d.external_id == status_reference => "linked_to_order_payment",
            Some(_) => "nothing_applied",
            None => "already_recorded",
        };
        let decision = decision.unwrap_or_default();
        ctx.warnings.extend(decision.warnings.iter().cloned());
        Ok(json!({
            "key": key.to_string(),
            "linked": linked,
            "outcome": outcome,
            "amount": signed.to_string(),
            "applied": decision.applied.map(|a| a.to_string()),
            "due_after": decision.due_after.map(|a| a.to_string()),
            "warnings": decision.warnings,
        }))
    }

    /// A payout pays no invoice: it is recorded in the ledger
    /// (`payout/gateway:<id>` → the payout id) and the audit trail with
    /// its gross, fee and net, and the fee is reported for booking (KashFlow's
    /// API as we use it has no route for a bank charge).
    async fn record_payout(
        &self,
        ctx: &mut StepCtx<'_>,
        payout: &Payout,
    ) -> Result<Value, Failure> {
        let key = BusinessKey::new(
            &self.kashflow_connection,
            "payout",
            format!("gateway:{}", payout.id),
        );
        let detail = json!({
            "key": key.to_string(),
            "payout": payout.id,
            "currency": payout.currency,
            "gross": payout.gross.to_string(),
            "fee": payout.fee.to_string(),
            "net": payout.net.to_string(),
            "payment_intents": payout.payment_intents,
        });
        let recorded_before = ctx.linked(&key).await?.is_some();
        if !recorded_before && ctx.mode == Mode::Live {
            ctx.links.push(Link {
                key: key.clone(),
                external_id: payout.id.clone(),
            });
            ctx.audits.push(NewAudit {
                run_id: Some(ctx.run.id),
                event_id: ctx.run.event_id,
                flow_version: Some(ctx.run.flow_version.clone()),
                action: "payout.recorded".to_owned(),
                detail: detail.clone(),
            });
        }
        if !payout.fee.is_zero() {
            ctx.warnings.push(format!(
                "payout {}: gross {} {cur}, fee {} {cur}, net {} {cur} to the bank; \
                 book the fee as a bank charge in KashFlow",
                payout.id,
                payout.gross,
                payout.fee,
                payout.net,
                cur = payout.currency
            ));
        }
        let mut output = detail;
        output["recorded_before"] = json!(recorded_before);
        Ok(output)
    }
}

fn decode_event(ctx: &StepCtx<'_>) -> Result<PaymentEvent, Failure> {
    PaymentEvent::deserialize(ctx.output("event")?).map_err(|e| {
        Failure::new(
            ErrorClass::Unknown,
            format!("journaled event cannot be read: {e}"),
        )
    })
}

#[async_trait]
impl Flow for PaymentToInvoice {
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
        &["event", "invoice", "apply"]
    }

    async fn run_step(&self, step: &str, ctx: &mut StepCtx<'_>) -> Result<Value, Failure> {
        match step {
            "event" => serde_json::to_value(parse_event(ctx.input())?).map_err(|e| {
                Failure::new(ErrorClass::Unknown, format!("cannot encode the event: {e}"))
            }),
            "invoice" => {
                let PaymentEvent::Apply { order_id, .. } = decode_event(ctx)? else {
                    return Ok(json!({"number": null}));
                };
                match self.find_invoice(ctx, &order_id).await? {
                    Some(number) => Ok(json!({"number": number})),
                    None => Err(Failure::transient(format!(
                        "order {order_id} has no KashFlow invoice yet (its invoice may still be \
                         in flight); the payment waits for it"
                    ))),
                }
            }
            "apply" => match decode_event(ctx)? {
                PaymentEvent::Ignored { reason } => Ok(json!({"ignored": reason})),
                PaymentEvent::Payout(payout) => self.record_payout(ctx, &payout).await,
                PaymentEvent::Apply {
                    order_id,
                    movements,
                } => {
                    let number = ctx
                        .output("invoice")?
                        .get("number")
                        .and_then(Value::as_i64)
                        .ok_or_else(|| {
                            Failure::new(ErrorClass::Unknown, "the invoice step recorded no number")
                        })?;
                    let mut applied = Vec::new();
                    for movement in &movements {
                        applied.push(self.apply(ctx, &order_id, number, movement).await?);
                    }
                    Ok(json!({"order": order_id, "invoice": number, "movements": applied}))
                }
            },
            other => Err(Failure::new(
                ErrorClass::Unknown,
                format!("{NAME} has no step {other:?}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests;
