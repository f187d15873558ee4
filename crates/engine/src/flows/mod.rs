//! Pre-built flows, written in Rust until the flow-file model lands.

pub mod order_to_invoice;
