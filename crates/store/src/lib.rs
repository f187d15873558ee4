//! Durable state of the engine: the inbox of received events, runs and
//! their step journal, the intent/ledger tables behind effectively-once
//! writes, polling cursors and the audit trail.
//!
//! One [`Store`] trait, two backends ([`sqlite`] and [`postgres`]), one
//! conformance suite ([`conformance`]) run against both. Every method is a
//! single atomic unit: when it returns `Ok`, its effect is committed and
//! durable; when it returns `Err`, nothing of it is visible.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledgerbridge_core::{BusinessKey, ErrorClass};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub mod conformance;
pub mod postgres;
pub mod sqlite;

mod open;
pub use open::{open, StoreUrl};

mod chain;
mod common;
pub use chain::{audit_hash, verify_audit_chain, ChainError, GENESIS_HASH};

/// Errors a store reports. `Unavailable` means "try again later" and is
/// what the inbox turns into a 503.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database cannot be reached or cannot write (down, read-only,
    /// disk full, pool exhausted). Nothing was committed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The caller's lease on a run was lost (expired and reclaimed by
    /// another worker, or the run was discarded). The caller must stop
    /// working on the run without writing anything else.
    #[error("lease lost on run {0}")]
    LeaseLost(Uuid),
    /// No such run / event.
    #[error("not found: {0}")]
    NotFound(String),
    /// The operation does not apply in the object's current state
    /// (replaying a run that is not parked, say).
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// A bad URL, a failed migration, corrupt data: not retriable.
    #[error("store error: {0}")]
    Fatal(String),
}

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A received event, exactly as it arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Our id for the event.
    pub id: Uuid,
    /// Which source delivered it, e.g. `ordercloud:uk-store` or `gateway`.
    pub source: String,
    /// The source's own identity of the delivery (OrderCloud `LogID`,
    /// Stripe event id). Unique per source: a repeat is a duplicate.
    pub dedupe_key: String,
    /// When we received it.
    pub received_at: DateTime<Utc>,
    /// Selected request headers (signature headers included) as a JSON object.
    pub headers: Value,
    /// The raw body bytes, byte for byte.
    pub body: Vec<u8>,
}

/// A stored event (see [`NewEvent`]).
pub type StoredEvent = NewEvent;

/// A run to create: one execution of one flow for one input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRun {
    /// Our id for the run.
    pub id: Uuid,
    /// The flow's name, e.g. `order-to-invoice`.
    pub flow: String,
    /// The flow version the run is pinned to (number + content hash).
    pub flow_version: String,
    /// The run's input (usually the parsed event).
    pub input: Value,
    /// Not to be claimed before this instant.
    pub not_before: DateTime<Utc>,
}

/// What `ingest` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IngestOutcome {
    /// The event was new; it and its runs are now committed.
    Accepted { event_id: Uuid, run_ids: Vec<Uuid> },
    /// An event with the same `(source, dedupe_key)` was already stored;
    /// nothing changed. `event_id` is the earlier event's id.
    Duplicate { event_id: Uuid },
}

/// Lifecycle of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting to be claimed (possibly not before `next_attempt_at`).
    Queued,
    /// Claimed by a worker holding a lease.
    Running,
    /// Failed with a retriable error; queued again at `next_attempt_at`.
    Retrying,
    /// Could not succeed without a human: the dead-letter queue.
    Parked,
    /// Done.
    Succeeded,
    /// A human decided to drop it.
    Discarded,
}

impl RunState {
    /// All states, in display order.
    pub const ALL: [RunState; 6] = [
        RunState::Queued,
        RunState::Running,
        RunState::Retrying,
        RunState::Parked,
        RunState::Succeeded,
        RunState::Discarded,
    ];

    /// Stable lower-case name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Retrying => "retrying",
            RunState::Parked => "parked",
            RunState::Succeeded => "succeeded",
            RunState::Discarded => "discarded",
        }
    }

    /// Parses [`RunState::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        RunState::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// Why a run is retrying or parked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunError {
    /// The failure class.
    pub class: ErrorClass,
    /// The reason, in the target's words where possible.
    pub message: String,
    /// The step that failed, if any.
    pub step: Option<String>,
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: Uuid,
    /// The event that started it, if any (schedules have none).
    pub event_id: Option<Uuid>,
    pub flow: String,
    pub flow_version: String,
    pub state: RunState,
    pub input: Value,
    /// How many times the run has been claimed.
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Earliest time the run may be claimed.
    pub next_attempt_at: DateTime<Utc>,
    /// When the current streak of failures began (for the max-age policy).
    pub first_failure_at: Option<DateTime<Utc>>,
    pub last_error: Option<RunError>,
    /// Worker holding the lease, while running.
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
}

/// Proof that a worker holds a run. Every write a worker makes for the run
/// carries it; the store refuses writes whose token is no longer current
/// ([`StoreError::LeaseLost`]), so two workers can never both make progress
/// on one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub run_id: Uuid,
    pub owner: String,
    /// Fencing token, new at every claim.
    pub token: Uuid,
}

/// A run handed to a worker by `claim`, with what it already did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimedRun {
    pub run: Run,
    pub lease: Lease,
    /// Completed steps from earlier attempts, in order.
    pub journal: Vec<StepRecord>,
}

/// One completed step in a run's journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's name, unique within the flow.
    pub step: String,
    /// The step's output, reused when the run resumes.
    pub output: Value,
    /// How many attempts the step took (1 = first time).
    pub attempts: i32,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

/// A completed step with what it established elsewhere, committed in one
/// transaction: the journal entry, the ledger links of the external writes
/// the step made, their audit entries and, after the last step, the end of
/// the run. Folding these into one commit is what keeps a durable step
/// cheap; a crash before it leaves the intents pending, and the retry asks
/// the target before writing again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepCommit {
    pub record: StepRecord,
    /// Ledger links made by the step (its external writes are known done).
    pub links: Vec<Link>,
    /// Audit entries for those writes, appended in order.
    pub audits: Vec<NewAudit>,
    /// Ends the run in the same transaction (after its last step).
    pub finish: Option<RunOutcome>,
}

impl StepCommit {
    /// Just the journal entry.
    pub fn record(record: StepRecord) -> Self {
        StepCommit {
            record,
            links: Vec::new(),
            audits: Vec::new(),
            finish: None,
        }
    }

    /// Whether the commit is one statement (no savepoint needed).
    pub fn is_single_write(&self) -> bool {
        self.links.is_empty() && self.audits.is_empty() && self.finish.is_none()
    }
}

/// A business key linked to the external object a write created or found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub key: BusinessKey,
    pub external_id: String,
}

/// How a claimed run ends this attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RunOutcome {
    /// All steps done.
    Succeeded,
    /// Try again at `at` (backoff or `Retry-After`).
    Retry { at: DateTime<Utc>, error: RunError },
    /// Give up until a human replays it.
    Parked { error: RunError },
}

/// A run with its journal, for inspection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunDetail {
    pub run: Run,
    pub journal: Vec<StepRecord>,
}

/// Filter for `list_runs`. Newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunFilter {
    pub state: Option<RunState>,
    pub flow: Option<String>,
    /// Return runs created strictly before this run (keyset paging).
    pub before: Option<Uuid>,
    /// At most this many (the store caps it at 1000; 0 means 100).
    pub limit: u32,
}

/// State of an intent to write one external object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IntentState {
    /// Recorded, outcome unknown: the write may or may not have happened.
    Pending,
    /// The write happened and produced this external id.
    Linked { external_id: String },
}

/// The ledger's row for one business key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub key: BusinessKey,
    /// The run that first recorded it.
    pub run_id: Uuid,
    pub state: IntentState,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What `begin_intent` found or made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BegunIntent {
    /// The intent as stored.
    pub intent: Intent,
    /// `true` if this call recorded it; `false` if it was there before
    /// (an earlier attempt, or another run, may have written the object).
    pub inserted: bool,
    /// Set when the intent is pending and its last attempt began less
    /// than `in_flight_for` ago without reporting its end (its worker died
    /// or lost its lease mid-call): that attempt's request may still reach
    /// the target until this time. Nothing was changed; the caller must
    /// neither ask the target nor write before then.
    pub in_flight_until: Option<DateTime<Utc>>,
}

/// An audit entry to append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAudit {
    pub run_id: Option<Uuid>,
    pub event_id: Option<Uuid>,
    pub flow_version: Option<String>,
    /// What happened, e.g. `kashflow.invoice.create`.
    pub action: String,
    /// Request/response summary (secrets removed by the caller).
    pub detail: Value,
}

/// A stored audit entry. `hash` = SHA-256 over `prev_hash` and this entry's
/// canonical JSON, so any edit or deletion breaks the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub entry: NewAudit,
    pub prev_hash: String,
    pub hash: String,
}

/// The engine's durable state. See the crate docs for the guarantees.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Cheap round trip proving the store can read and write (readiness).
    async fn ping(&self) -> Result<()>;

    // ---- inbox ----

    /// Stores the event and its runs in one transaction, or reports a
    /// duplicate `(source, dedupe_key)` and changes nothing.
    async fn ingest(&self, event: NewEvent, runs: Vec<NewRun>) -> Result<IngestOutcome>;

    /// Queues a run without an event (schedules, polls, replays of others).
    async fn enqueue(&self, run: NewRun) -> Result<()>;

    /// The stored event, if any.
    async fn event(&self, id: Uuid) -> Result<Option<StoredEvent>>;

    // ---- runs ----

    /// Atomically claims up to `limit` runs that are queued/retrying with
    /// `next_attempt_at <= now`, oldest first; sets them `Running` with a
    /// fresh lease of `lease_for`, and increments `attempts`.
    async fn claim(&self, owner: &str, lease_for: Duration, limit: u32) -> Result<Vec<ClaimedRun>>;

    /// Extends the leases still held; returns the run ids whose lease was lost.
    async fn heartbeat(&self, leases: &[Lease], lease_for: Duration) -> Result<Vec<Uuid>>;

    /// Commits one completed step. `LeaseLost` if the lease is not current.
    async fn record_step(&self, lease: &Lease, step: &StepRecord) -> Result<()> {
        self.commit_step(lease, StepCommit::record(step.clone()))
            .await
            .map(drop)
    }

    /// Commits a step with its links, audit entries and (optionally) the
    /// end of the run, all or nothing. `LeaseLost` if the lease is not
    /// current; `InvalidState` if a key is linked to another object.
    /// Gives the step's output back, so the caller keeps it for the next
    /// steps without copying it.
    async fn commit_step(&self, lease: &Lease, commit: StepCommit) -> Result<Value>;

    /// Ends this attempt. `LeaseLost` if the lease is not current.
    /// `Retry` keeps `first_failure_at` if set, else sets it to now;
    /// `Succeeded` clears it.
    async fn finish(&self, lease: &Lease, outcome: RunOutcome) -> Result<()>;

    /// Gives a run back unfinished (graceful shutdown): `Queued`, claimable
    /// at once, attempts not counted against it.
    async fn release(&self, lease: &Lease) -> Result<()>;

    /// Returns runs whose lease expired to `Queued`. Returns how many.
    async fn reap_expired(&self) -> Result<u64>;

    /// One run with its journal.
    async fn run(&self, id: Uuid) -> Result<Option<RunDetail>>;

    /// Runs matching the filter, newest first.
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>>;

    /// Number of runs in each state (every state present, zeros included).
    async fn count_by_state(&self) -> Result<Vec<(RunState, i64)>>;

    /// Sends a `Parked` (or `Retrying`) run back to `Queued` now, with
    /// attempts and `first_failure_at` reset. With `new_input`, the input
    /// is replaced and the journal cleared (the ledger still guards writes).
    async fn replay(&self, id: Uuid, new_input: Option<Value>) -> Result<()>;

    /// Marks a parked/retrying/queued run `Discarded` with a reason.
    async fn discard(&self, id: Uuid, reason: &str) -> Result<()>;

    // ---- effectively-once writes ----

    /// Records the intent to create the object named by `key`, unless one
    /// exists, and starts an attempt on it. Returns the intent as stored
    /// (possibly an earlier one, maybe from another run, maybe already
    /// `Linked`).
    ///
    /// A pending intent starts a new attempt (its `updated_at` becomes
    /// now) if its last attempt is settled ([`Store::settle_intent`]) or
    /// began at least `in_flight_for` ago; otherwise the earlier attempt
    /// may still be in flight and `in_flight_until` says until when.
    async fn begin_intent(
        &self,
        key: &BusinessKey,
        run_id: Uuid,
        in_flight_for: Duration,
    ) -> Result<BegunIntent>;

    /// Marks the last attempt on a pending intent as ended without a link:
    /// its write was answered with an error, or never sent. The next
    /// attempt may then ask the target at once. No-op on a linked intent.
    async fn settle_intent(&self, key: &BusinessKey) -> Result<()>;

    /// Moves the start of the current attempt on a pending intent to now,
    /// just before its request is sent after a long wait (a paced turn at a
    /// rate-limited target): the in-flight window then counts from the
    /// sending. Only if the attempt is still the one that began at `began`
    /// (its `updated_at`) and is unsettled: returns the new start, or
    /// `None` if another attempt began meanwhile, the attempt was settled
    /// or the key was linked, and then nothing may be sent.
    async fn restamp_intent(
        &self,
        key: &BusinessKey,
        began: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>>;

    /// Links the key to the external object's id (the write is known done).
    /// Idempotent for the same id; `InvalidState` if linked to another id.
    async fn link_intent(&self, key: &BusinessKey, external_id: &str) -> Result<()>;

    /// The ledger entry for a key.
    async fn intent(&self, key: &BusinessKey) -> Result<Option<Intent>>;

    /// Ledger entries of one connection and kind (for reconciliation).
    async fn ledger(&self, connection: &str, kind: &str) -> Result<Vec<Intent>>;

    // ---- cursors (polling sources) ----

    /// The saved cursor of a polling source.
    async fn cursor(&self, name: &str) -> Result<Option<String>>;

    /// Saves the cursor of a polling source.
    async fn set_cursor(&self, name: &str, value: &str) -> Result<()>;

    // ---- audit ----

    /// Appends to the hash-chained audit trail.
    async fn audit(&self, entry: NewAudit) -> Result<AuditRecord>;

    /// Audit entries with `seq > after`, oldest first, at most `limit`.
    async fn audit_since(&self, after: i64, limit: u32) -> Result<Vec<AuditRecord>>;
}
