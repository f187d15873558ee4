//! Ledgerbridge's mapping language: flow files loaded and checked, VRL
//! programs compiled once with our finance functions, and an offline
//! interpreter for flow tests, dry runs and benchmarks. Pure: no I/O beyond
//! reading the flow file and its rates file.

pub mod functions;
pub mod load;
pub mod money;
pub mod registry;
pub mod run;
pub mod tables;

pub use load::{load_file, load_str, FlowError, FlowVersion, LoadedFlow};
pub use run::{
    run, run_test, Connector, Outcome, RecordingConnector, Request, Response, Status, TestResult,
};
