//! Pre-built flows, written in Rust (order→invoice, payments, customer
//! sync, inventory sync); `mapped_invoice` lets the
//! order-to-invoice flow take its invoice mapping from a flow file.

pub mod customer_sync;
pub mod inventory_sync;
pub mod mapped_invoice;
pub mod order_to_invoice;
pub mod payments;
