//! Payment reconciliation: what OrderCloud sold, what KashFlow invoiced,
//! what was paid (in KashFlow and at the gateway) and what our own ledger
//! recorded, compared for a period, with every difference listed beside a
//! suggested fix.
//!
//! - [`model`]: the records compared, in plain structs;
//! - [`matching`]: [`reconcile`], a pure function from [`Inputs`] to a [`Report`];
//! - [`report`]: the report and its table, JSON and CSV forms;
//! - [`fetch`]: [`Reconciler`], which reads the systems (concurrently, every
//!   page) and runs the matching;
//! - [`schedule`]: the daily reconciliation inside `ledgerbridge run`.
//!
//! Its own crate because it is a read-only consumer of every system (the
//! connectors and the store) used by both the server and the binary; the
//! engine, which writes, does not need it.

pub mod config;
pub mod fetch;
pub mod matching;
pub mod model;
pub mod report;
pub mod schedule;

#[cfg(test)]
mod tests;

pub use config::ReconcileConfig;
pub use fetch::{Reconcile, ReconcileError, Reconciler};
pub use matching::reconcile;
pub use model::{
    GatewayData, GatewayPayment, GatewayRefund, Inputs, InvoiceRecord, LedgerData, LedgerLink,
    OrderRecord, Period,
};
pub use report::{Difference, DifferenceKind, Format, Report, SystemTimings, Timings, CSV_HEADER};
