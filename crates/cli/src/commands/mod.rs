//! One module per subcommand.

pub mod bench;
pub mod bench_mapping;
pub mod bench_memory;
pub mod bench_orders;
pub mod bench_poll;
pub mod bench_reconcile;
pub mod bench_stock;
pub mod config_cmd;
pub mod demo;
pub mod flows;
pub mod inventory;
pub mod reconcile;
pub mod run;
pub mod runs;
pub mod sandbox;
