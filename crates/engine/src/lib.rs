//! The engine runtime: workers claim runs from the store, execute their
//! flow's steps one by one with every result journaled before the next step
//! starts, classify failures and decide retry, backoff or parking, and make
//! external writes effectively once through the intent ledger.

pub mod alerts;
pub mod flow;
pub mod flows;
pub mod policy;
pub mod poll;
pub mod runtime;

pub use alerts::{Alert, Alerts, AlertsConfig};
pub use flow::{EventKind, Flow, FlowRegistry, Mode, PlannedRequest, StepCtx, Trigger};
pub use policy::RetryPolicy;
pub use poll::{Change, PollBatch, PollSource, Pollers, Snapshot};
pub use runtime::{dry_run, DryRunReport, Engine, EngineConfig, EngineHandle, Execution};
