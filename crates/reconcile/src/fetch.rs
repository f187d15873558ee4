//! Reading the systems for a period and running the matching.
//!
//! OrderCloud orders submitted in the period (filter on `DateSubmitted`,
//! keyset paging by `ID` as OrderCloud advises for deep lists, the period
//! cut into slices read side by side), KashFlow invoices issued in it
//! (`issuedatefrom`/`issuedateto`, pages read side by side once the first
//! says how many there are), gateway payment intents and refunds (cursor
//! paging, slices side by side) and our ledger, all at once. References
//! left unmatched are then looked up one by one, so an order and its
//! invoice on either side of the period's edge still match.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};
use ledgerbridge_connectors::gateway::{CreatedRange, GatewayClient, PaymentIntent, Refund};
use ledgerbridge_connectors::kashflow::{parse_date, Invoice, InvoiceFilter, KashFlowClient};
use ledgerbridge_connectors::ordercloud::{Direction, ListOptions, Order, OrderCloudClient};
use ledgerbridge_core::Failure;
use ledgerbridge_store::{IntentState, Store, StoreError};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::matching::reconcile;
use crate::model::{
    GatewayData, GatewayPayment, GatewayRefund, Inputs, InvoiceRecord, LedgerData, LedgerLink,
    OrderRecord, Period,
};
use crate::report::{Report, SystemTimings, Timings};

/// OrderCloud's largest page.
const ORDER_PAGE_SIZE: u64 = 100;
/// Slices of the period read side by side (orders and gateway lists).
const SLICES: i32 = 4;
/// KashFlow pages read side by side.
const INVOICE_PAGE_CONCURRENCY: usize = 4;
/// Unmatched references looked up one by one, at most.
const MAX_LOOKUPS: usize = 500;
/// Lookups in flight.
const LOOKUP_CONCURRENCY: usize = 8;

/// Why a reconciliation could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// A system could not be read.
    #[error("reading {system}: {source}")]
    Fetch {
        system: &'static str,
        #[source]
        source: Failure,
    },
    /// Our ledger could not be read.
    #[error("reading the ledger: {0}")]
    Store(#[from] StoreError),
}

fn fetch_error(system: &'static str) -> impl Fn(Failure) -> ReconcileError {
    move |source| ReconcileError::Fetch { system, source }
}

/// Something that reconciles a period (the server and the scheduler hold
/// one of these; tests give their own).
#[async_trait]
pub trait Reconcile: Send + Sync {
    /// Reads every system and lists the period's differences.
    async fn reconcile(&self, period: Period) -> Result<Report, ReconcileError>;
}

/// Reads OrderCloud, KashFlow, the gateway (optional) and the ledger.
#[derive(Clone)]
pub struct Reconciler {
    ordercloud: OrderCloudClient,
    direction: Direction,
    kashflow: KashFlowClient,
    kashflow_connection: String,
    gateway: Option<GatewayClient>,
    store: Arc<dyn Store>,
    home_currency: String,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("direction", &self.direction)
            .field("kashflow_connection", &self.kashflow_connection)
            .field("gateway", &self.gateway.is_some())
            .finish_non_exhaustive()
    }
}

impl Reconciler {
    /// A reconciler over the connections the order-to-invoice flow uses;
    /// `kashflow_connection` is the business-key namespace of its ledger
    /// entries, `home_currency` the currency of orders that name none.
    pub fn new(
        ordercloud: OrderCloudClient,
        direction: Direction,
        kashflow: KashFlowClient,
        kashflow_connection: &str,
        store: Arc<dyn Store>,
        home_currency: &str,
    ) -> Self {
        Reconciler {
            ordercloud,
            direction,
            kashflow,
            kashflow_connection: kashflow_connection.to_owned(),
            gateway: None,
            store,
            home_currency: home_currency.to_ascii_uppercase(),
        }
    }

    /// Also checks the payments at the gateway.
    pub fn with_gateway(mut self, gateway: GatewayClient) -> Self {
        self.gateway = Some(gateway);
        self
    }

    /// Reads everything the matching needs for `period`.
    pub async fn fetch(&self, period: Period) -> Result<Inputs, ReconcileError> {
        Ok(self.fetch_timed(period).await?.0)
    }

    /// [`Reconciler::fetch`], with how long each system took.
    async fn fetch_timed(&self, period: Period) -> Result<(Inputs, SystemTimings), ReconcileError> {
        let (
            (orders, orders_ms),
            (invoices, invoices_ms),
            (gateway, gateway_ms),
            (ledger, ledger_ms),
        ) = tokio::try_join!(
            timed(self.fetch_orders(period)),
            timed(self.fetch_invoices(period)),
            timed(self.fetch_gateway(period)),
            timed(self.fetch_ledger()),
        )?;
        let mut inputs = Inputs {
            period,
            orders,
            invoices,
            gateway,
            ledger,
        };
        let ((), lookups_ms) = timed(self.look_up_unmatched(&mut inputs)).await?;
        let timings = SystemTimings {
            orders_ms,
            invoices_ms,
            gateway_ms: if inputs.gateway.is_some() {
                gateway_ms
            } else {
                0.0
            },
            ledger_ms,
            lookups_ms,
        };
        Ok((inputs, timings))
    }

    /// [`Reconciler::fetch`], then the matching, timed.
    pub async fn run(&self, period: Period) -> Result<Report, ReconcileError> {
        let started = Instant::now();
        let (inputs, systems) = self.fetch_timed(period).await?;
        let fetched = Instant::now();
        let mut report = reconcile(&inputs);
        report.timings = Some(Timings {
            fetch_ms: (fetched - started).as_secs_f64() * 1000.0,
            match_ms: fetched.elapsed().as_secs_f64() * 1000.0,
            systems,
        });
        Ok(report)
    }

    async fn fetch_orders(&self, period: Period) -> Result<Vec<OrderRecord>, ReconcileError> {
        let slices = slices(period.start(), period.end(), SLICES);
        let lists: Vec<Vec<Order>> = stream::iter(slices)
            .map(|(start, end)| self.orders_between(start, end))
            .buffer_unordered(SLICES as usize)
            .try_collect()
            .await?;
        Ok(lists
            .into_iter()
            .flatten()
            .map(|o| self.order_record(o, true))
            .collect())
    }

    /// Orders submitted in `[start, end)`, keyset-paged by ID.
    async fn orders_between(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<Order>, ReconcileError> {
        let mut orders = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let mut options = ListOptions {
                sort_by: Some("ID".to_owned()),
                page: Some(1),
                page_size: Some(ORDER_PAGE_SIZE),
                ..ListOptions::default()
            }
            .filter("DateSubmitted", format!("!<{}", start.to_rfc3339()))
            .filter("DateSubmitted", format!("<{}", end.to_rfc3339()));
            if let Some(last) = &last {
                options = options.filter("ID", format!(">{last}"));
            }
            let page = self
                .ordercloud
                .list_orders(self.direction, &options)
                .await
                .map_err(fetch_error("OrderCloud orders"))?;
            let full = page.items.len() as u64 >= ORDER_PAGE_SIZE;
            last = page.items.last().and_then(|o| o.id.clone());
            orders.extend(page.items);
            if !full || last.is_none() {
                return Ok(orders);
            }
        }
    }

    async fn fetch_invoices(&self, period: Period) -> Result<Vec<InvoiceRecord>, ReconcileError> {
        // `issuedateto` may be read as midnight at the start of that day:
        // ask for a day more and keep the period's days here (the rest
        // still serve to match orders).
        let filter = InvoiceFilter {
            issued_from: Some(period.from),
            issued_to: period.to.succ_opt(),
            ..InvoiceFilter::default()
        };
        let invoices = self
            .kashflow
            .list_invoices_concurrently(&filter, INVOICE_PAGE_CONCURRENCY)
            .await
            .map_err(fetch_error("KashFlow invoices"))?;
        Ok(invoices
            .into_iter()
            .filter_map(|i| {
                let day = i
                    .issued_date
                    .as_deref()
                    .and_then(parse_date)
                    .map(|at| at.date());
                let in_period = day.is_none_or(|d| d >= period.from && d <= period.to);
                self.invoice_record(i, in_period)
            })
            .collect())
    }

    async fn fetch_gateway(&self, period: Period) -> Result<Option<GatewayData>, ReconcileError> {
        let Some(gateway) = &self.gateway else {
            return Ok(None);
        };
        // A payment may come a little before its order is submitted, a
        // refund any time after: a day's margin either side for payments,
        // refunds up to now.
        let payments_from = period.start() - Duration::days(1);
        let payments_to = period.end() + Duration::days(1);
        let slices_of = |start: DateTime<Utc>, end: DateTime<Utc>| {
            slices(start, end, SLICES)
                .into_iter()
                .map(|(s, e)| CreatedRange {
                    gte: Some(s.timestamp()),
                    lt: Some(e.timestamp()),
                })
                .collect::<Vec<_>>()
        };
        let payments = async {
            let lists: Vec<Vec<PaymentIntent>> =
                stream::iter(slices_of(payments_from, payments_to))
                    .map(|range| gateway.list_payment_intents(range))
                    .buffer_unordered(SLICES as usize)
                    .try_collect()
                    .await?;
            Ok::<_, Failure>(lists.into_iter().flatten().collect::<Vec<_>>())
        };
        let refunds = gateway.list_refunds(CreatedRange {
            gte: Some(payments_from.timestamp()),
            lt: None,
        });
        let (payments, refunds) =
            tokio::try_join!(payments, refunds).map_err(fetch_error("gateway payments"))?;
        Ok(Some(GatewayData {
            payments: payments.into_iter().map(payment_record).collect(),
            refunds: refunds.into_iter().map(refund_record).collect(),
        }))
    }

    async fn fetch_ledger(&self) -> Result<LedgerData, ReconcileError> {
        let (invoices, payments) = tokio::try_join!(
            self.store.ledger(&self.kashflow_connection, "invoice"),
            self.store.ledger(&self.kashflow_connection, "payment"),
        )?;
        let by_order = |intents: Vec<ledgerbridge_store::Intent>| {
            intents
                .into_iter()
                .filter_map(|intent| {
                    let order = intent.key.key.strip_prefix("order:")?.to_owned();
                    let external_id = match intent.state {
                        IntentState::Linked { external_id } => Some(external_id),
                        IntentState::Pending => None,
                    };
                    Some((
                        order,
                        LedgerLink {
                            run_id: intent.run_id,
                            external_id,
                        },
                    ))
                })
                .collect()
        };
        Ok(LedgerData {
            invoices: by_order(invoices),
            payments: by_order(payments),
        })
    }

    /// Looks up, one by one, the invoices of orders that have none in the
    /// period and the orders of invoices and payments that name an order
    /// outside it; what is found joins the inputs, marked outside the
    /// period.
    async fn look_up_unmatched(&self, inputs: &mut Inputs) -> Result<(), ReconcileError> {
        use std::collections::HashSet;
        let references: HashSet<&str> = inputs
            .invoices
            .iter()
            .filter_map(|i| i.customer_reference.as_deref())
            .collect();
        let order_ids: HashSet<&str> = inputs.orders.iter().map(|o| o.id.as_str()).collect();
        let mut want_invoices: Vec<String> = inputs
            .orders
            .iter()
            .filter(|o| !references.contains(o.id.as_str()))
            .map(|o| o.id.clone())
            .collect();
        let mut want_orders: Vec<String> = references
            .iter()
            .filter(|r| !r.trim().is_empty() && !order_ids.contains(*r))
            .map(|r| (*r).to_owned())
            .collect();
        if let Some(gateway) = &inputs.gateway {
            let period = inputs.period;
            let in_period = |p: &GatewayPayment| {
                p.created
                    .is_none_or(|at| at >= period.start() && at < period.end())
            };
            for payment in gateway.payments.iter().filter(|p| in_period(p)) {
                if let Some(order) = payment.order_id.as_deref() {
                    if !order_ids.contains(order) && !references.contains(order) {
                        want_invoices.push(order.to_owned());
                        want_orders.push(order.to_owned());
                    }
                }
            }
        }
        want_invoices.sort();
        want_invoices.dedup();
        want_orders.sort();
        want_orders.dedup();
        want_invoices.truncate(MAX_LOOKUPS);
        want_orders.truncate(MAX_LOOKUPS);

        let kashflow = &self.kashflow;
        let found_invoices: Vec<Vec<Invoice>> = stream::iter(want_invoices)
            .map(|order| async move { kashflow.find_invoices_by_reference(&order).await })
            .buffer_unordered(LOOKUP_CONCURRENCY)
            .try_collect()
            .await
            .map_err(fetch_error("KashFlow invoices"))?;
        let ordercloud = &self.ordercloud;
        let direction = self.direction;
        let found_orders: Vec<Option<Order>> = stream::iter(want_orders)
            .map(|id| async move { ordercloud.get_order(direction, &id).await })
            .buffer_unordered(LOOKUP_CONCURRENCY)
            .try_collect()
            .await
            .map_err(fetch_error("OrderCloud orders"))?;

        let known_numbers: HashSet<i64> = inputs.invoices.iter().map(|i| i.number).collect();
        let extra_invoices: Vec<InvoiceRecord> = found_invoices
            .into_iter()
            .flatten()
            .filter_map(|i| self.invoice_record(i, false))
            .filter(|i| !known_numbers.contains(&i.number))
            .collect();
        inputs.invoices.extend(extra_invoices);
        let extra_orders: Vec<OrderRecord> = found_orders
            .into_iter()
            .flatten()
            .filter(|o| o.is_submitted.unwrap_or(true))
            .map(|o| self.order_record(o, false))
            .collect();
        inputs.orders.extend(extra_orders);
        Ok(())
    }

    fn order_record(&self, order: Order, in_period: bool) -> OrderRecord {
        let xp = order.xp.as_ref();
        let currency = order
            .currency
            .clone()
            .or_else(|| {
                xp.and_then(|x| x.get("Currency"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| self.home_currency.clone())
            .to_ascii_uppercase();
        let invoice_number = xp
            .and_then(|x| x.get("KashFlowInvoiceNumber"))
            .and_then(|n| {
                n.as_i64()
                    .or_else(|| n.as_str().and_then(|s| s.trim().parse().ok()))
            });
        OrderRecord {
            id: order.id.unwrap_or_default(),
            status: order.status.unwrap_or_default(),
            total: order.total.unwrap_or_default(),
            tax_cost: order.tax_cost.unwrap_or_default(),
            currency,
            date_submitted: order.date_submitted,
            invoice_number,
            invoice_status: xp
                .and_then(|x| x.get("InvoiceStatus"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            in_period,
        }
    }

    fn invoice_record(&self, invoice: Invoice, in_period: bool) -> Option<InvoiceRecord> {
        let gross = invoice.gross_amount.unwrap_or_default();
        let total_paid = invoice.total_paid_amount.unwrap_or_default();
        Some(InvoiceRecord {
            number: invoice.number?,
            customer_reference: invoice.customer_reference,
            net: invoice.net_amount.unwrap_or_default(),
            vat: invoice.vat_amount.unwrap_or_default(),
            gross,
            currency: invoice
                .currency
                .and_then(|c| c.code)
                .unwrap_or_else(|| self.home_currency.clone())
                .to_ascii_uppercase(),
            status: invoice.status.unwrap_or_default(),
            total_paid,
            due: invoice
                .due_amount
                .unwrap_or(gross.saturating_sub(total_paid)),
            in_period,
        })
    }
}

#[async_trait]
impl Reconcile for Reconciler {
    async fn reconcile(&self, period: Period) -> Result<Report, ReconcileError> {
        self.run(period).await
    }
}

/// Awaits `work`, with its wall-clock time in milliseconds.
async fn timed<T, E>(work: impl std::future::Future<Output = Result<T, E>>) -> Result<(T, f64), E> {
    let started = Instant::now();
    let value = work.await?;
    Ok((value, started.elapsed().as_secs_f64() * 1000.0))
}

/// `[start, end)` cut into `n` slices of (nearly) equal length.
fn slices(start: DateTime<Utc>, end: DateTime<Utc>, n: i32) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let n = n.max(1);
    let step = (end - start) / n;
    (0..n)
        .map(|i| {
            let from = start + step * i;
            let to = if i == n - 1 {
                end
            } else {
                start + step * (i + 1)
            };
            (from, to)
        })
        .collect()
}

/// Gateway amounts are in minor units (two-decimal currencies).
fn minor(amount: i64) -> Decimal {
    Decimal::new(amount, 2)
}

fn payment_record(payment: PaymentIntent) -> GatewayPayment {
    GatewayPayment {
        order_id: payment.metadata.get("order_id").cloned(),
        amount: minor(payment.amount),
        currency: payment.currency.to_ascii_uppercase(),
        status: payment.status,
        created: DateTime::from_timestamp(payment.created, 0),
        id: payment.id,
    }
}

fn refund_record(refund: Refund) -> GatewayRefund {
    GatewayRefund {
        id: refund.id,
        payment_intent: refund.payment_intent,
        amount: minor(refund.amount),
        currency: refund.currency.to_ascii_uppercase(),
        status: refund.status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_the_period_without_gaps() {
        let period = Period::parse("2026-11-01", "2026-11-03").unwrap();
        let parts = slices(period.start(), period.end(), 4);
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0].0, period.start());
        assert_eq!(parts[3].1, period.end());
        for pair in parts.windows(2) {
            assert_eq!(pair[0].1, pair[1].0);
        }
        assert_eq!(minor(1250), Decimal::new(1250, 2));
    }
}
