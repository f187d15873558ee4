//! The conformance suite every backend must pass.
//!
//! Each case is a `pub async fn(Arc<dyn Store>)` that panics on failure.
//! [`conformance_suite!`](crate::conformance_suite) expands to one
//! `#[tokio::test]` per case; the caller supplies an expression producing
//! a future of a fresh [`Fixture`] (a new, migrated, empty database) for
//! every test:
//!
//! ```ignore
//! ledgerbridge_store::conformance_suite!(fresh_sqlite());
//! ```

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::future::{join_all, BoxFuture};
use futures::FutureExt;
use ledgerbridge_core::{BusinessKey, ErrorClass};
use serde_json::json;
use uuid::Uuid;

use crate::common::truncate_micros;
use crate::{
    verify_audit_chain, ClaimedRun, IngestOutcome, IntentState, Lease, Link, NewAudit, NewEvent,
    NewRun, RunError, RunFilter, RunOutcome, RunState, StepCommit, StepRecord, Store, StoreError,
    GENESIS_HASH,
};

/// A fresh store for one test, plus what to clean up afterwards.
pub struct Fixture {
    /// The store under test.
    pub store: Arc<dyn Store>,
    guard: Option<Box<dyn Any + Send>>,
    cleanup: Option<BoxFuture<'static, ()>>,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("backend", &self.store.backend())
            .finish_non_exhaustive()
    }
}

impl Fixture {
    /// A fixture with nothing to clean up.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Fixture {
            store,
            guard: None,
            cleanup: None,
        }
    }

    /// Keeps `guard` (a temporary directory, say) alive until the test ends.
    pub fn with_guard(mut self, guard: impl Any + Send) -> Self {
        self.guard = Some(Box::new(guard));
        self
    }

    /// Runs `cleanup` after the test, even if it failed (drop a database).
    pub fn with_cleanup(mut self, cleanup: impl Future<Output = ()> + Send + 'static) -> Self {
        self.cleanup = Some(Box::pin(cleanup));
        self
    }
}

/// Runs one case on the fixture's store, then cleans up, then re-raises
/// the case's panic if it failed.
pub async fn run_case<F, Fut>(fixture: Fixture, case: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let Fixture {
        store,
        guard,
        cleanup,
    } = fixture;
    let outcome = AssertUnwindSafe(case(store)).catch_unwind().await;
    if let Some(cleanup) = cleanup {
        cleanup.await;
    }
    drop(guard);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Expands to one `#[tokio::test]` per conformance case. The argument is
/// an expression evaluating to a future of a fresh [`Fixture`].
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::conformance_suite!(@cases ($make)
            backend_and_ping,
            ingest_stores_event_and_runs,
            ingest_duplicate_changes_nothing,
            ingest_without_runs_and_missing_rows,
            ingest_with_reused_ids_stores_nothing,
            enqueue_queues_run_without_event,
            claim_leases_runs_and_counts_attempts,
            claim_takes_oldest_first_up_to_limit,
            claim_skips_runs_not_yet_due,
            record_step_builds_journal_in_order,
            commit_step_writes_step_links_audit_and_finish_together,
            commit_step_is_all_or_nothing,
            release_requeues_without_counting_attempt,
            finish_succeeded_ends_the_lease,
            finish_retry_tracks_first_failure,
            finish_parked_keeps_the_error,
            heartbeat_extends_and_reports_lost,
            reap_returns_expired_runs_and_fences_old_holder,
            list_runs_filters_and_pages,
            count_by_state_lists_every_state,
            replay_from_parked_keeps_journal,
            replay_with_new_input_clears_journal,
            replay_rejects_other_states,
            discard_rules,
            begin_intent_is_insert_if_absent,
            an_unsettled_attempt_blocks_another_until_it_cannot_be_in_flight,
            a_restamped_attempt_blocks_from_its_sending,
            link_intent_rules,
            ledger_lists_one_connection_and_kind,
            cursors_round_trip,
            audit_chain_links_and_verifies,
            concurrent_claims_never_hand_out_a_run_twice,
            concurrent_duplicate_ingests_accept_exactly_one,
            ingest_burst_accepts_one_delivery_per_key,
            ingest_burst_keeps_a_refused_event_to_itself,
            concurrent_audit_appends_form_one_chain,
            failed_write_does_not_disturb_concurrent_writes,
        );
    };
    (@cases ($make:expr) $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                $crate::conformance::run_case(($make).await, $crate::conformance::$case).await;
            }
        )+
    };
}

// ---- helpers ----

const LEASE: Duration = Duration::from_secs(60);

fn now() -> DateTime<Utc> {
    truncate_micros(Utc::now())
}

fn seconds(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

fn new_event(source: &str, dedupe_key: &str) -> NewEvent {
    NewEvent {
        id: Uuid::new_v4(),
        source: source.to_owned(),
        dedupe_key: dedupe_key.to_owned(),
        received_at: now(),
        headers: json!({"content-type": "application/json", "x-oc-hash": "abc="}),
        body: br#"{"LogID":"1"}"#.to_vec(),
    }
}

fn new_run(flow: &str) -> NewRun {
    due_run(flow, now() - seconds(1))
}

fn due_run(flow: &str, not_before: DateTime<Utc>) -> NewRun {
    NewRun {
        id: Uuid::new_v4(),
        flow: flow.to_owned(),
        flow_version: "1#abcdef".to_owned(),
        input: json!({"order": {"ID": "SO-1", "Total": 12.5, "Lines": [1, 2]}}),
        not_before,
    }
}

fn step(name: &str, output: serde_json::Value) -> StepRecord {
    let finished = now();
    StepRecord {
        step: name.to_owned(),
        output,
        attempts: 1,
        started_at: finished - seconds(1),
        finished_at: finished,
    }
}

fn run_error(message: &str) -> RunError {
    RunError {
        class: ErrorClass::Transient,
        message: message.to_owned(),
        step: Some("create-invoice".to_owned()),
    }
}

fn stale(lease: &Lease) -> Lease {
    Lease {
        token: Uuid::new_v4(),
        ..lease.clone()
    }
}

async fn enqueue(store: &Arc<dyn Store>, run: NewRun) -> Uuid {
    let id = run.id;
    store.enqueue(run).await.expect("enqueue");
    id
}

async fn claim_one(store: &Arc<dyn Store>, lease_for: Duration) -> ClaimedRun {
    let mut claimed = store.claim("worker-1", lease_for, 1).await.expect("claim");
    assert_eq!(claimed.len(), 1, "expected one claimable run");
    claimed.remove(0)
}

async fn state_of(store: &Arc<dyn Store>, id: Uuid) -> RunState {
    store
        .run(id)
        .await
        .expect("run")
        .expect("run exists")
        .run
        .state
}

async fn count(store: &Arc<dyn Store>, state: RunState) -> i64 {
    store
        .count_by_state()
        .await
        .expect("count_by_state")
        .into_iter()
        .find(|(s, _)| *s == state)
        .map_or(0, |(_, n)| n)
}

fn assert_lease_lost<T: std::fmt::Debug>(result: Result<T, StoreError>, run_id: Uuid) {
    match result {
        Err(StoreError::LeaseLost(id)) => assert_eq!(id, run_id),
        other => panic!("expected LeaseLost({run_id}), got {other:?}"),
    }
}

fn assert_invalid_state<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    assert!(
        matches!(result, Err(StoreError::InvalidState(_))),
        "expected InvalidState, got {result:?}"
    );
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    assert!(
        matches!(result, Err(StoreError::NotFound(_))),
        "expected NotFound, got {result:?}"
    );
}

/// Claims, then ends the attempt with `outcome`; returns the run id.
async fn run_to(store: &Arc<dyn Store>, outcome: RunOutcome) -> Uuid {
    let id = enqueue(store, new_run("flow")).await;
    let claimed = claim_one(store, LEASE).await;
    assert_eq!(claimed.run.id, id);
    store.finish(&claimed.lease, outcome).await.expect("finish");
    id
}

// ---- cases ----

/// `backend` names the backend; `ping` succeeds on a healthy store.
pub async fn backend_and_ping(store: Arc<dyn Store>) {
    assert!(["sqlite", "postgres"].contains(&store.backend()));
    store.ping().await.expect("first ping");
    store.ping().await.expect("second ping");
}

/// A new event and its runs are stored exactly as given.
pub async fn ingest_stores_event_and_runs(store: Arc<dyn Store>) {
    let mut event = new_event("ordercloud:uk-store", "log-1");
    event.body = (0..=255u8).collect();
    let runs = vec![new_run("order-to-invoice"), new_run("customer-sync")];
    let outcome = store
        .ingest(event.clone(), runs.clone())
        .await
        .expect("ingest");
    assert_eq!(
        outcome,
        IngestOutcome::Accepted {
            event_id: event.id,
            run_ids: vec![runs[0].id, runs[1].id],
        }
    );
    let stored = store.event(event.id).await.expect("event").expect("stored");
    assert_eq!(stored, event, "event must round-trip byte for byte");

    for new in &runs {
        let detail = store.run(new.id).await.expect("run").expect("run stored");
        let run = detail.run;
        assert_eq!(run.id, new.id);
        assert_eq!(run.event_id, Some(event.id));
        assert_eq!(run.flow, new.flow);
        assert_eq!(run.flow_version, new.flow_version);
        assert_eq!(run.input, new.input);
        assert_eq!(run.state, RunState::Queued);
        assert_eq!(run.attempts, 0);
        assert_eq!(run.next_attempt_at, new.not_before);
        assert_eq!(run.first_failure_at, None);
        assert_eq!(run.last_error, None);
        assert_eq!(run.lease_owner, None);
        assert_eq!(run.lease_expires_at, None);
        assert!(detail.journal.is_empty());
    }
    assert_eq!(count(&store, RunState::Queued).await, 2);
}

/// A repeat delivery reports the first event and changes nothing.
pub async fn ingest_duplicate_changes_nothing(store: Arc<dyn Store>) {
    let first = new_event("gateway", "evt_1");
    let first_run = new_run("payment");
    store
        .ingest(first.clone(), vec![first_run.clone()])
        .await
        .expect("first ingest");

    let repeat = new_event("gateway", "evt_1");
    let repeat_run = new_run("payment");
    let outcome = store
        .ingest(repeat.clone(), vec![repeat_run.clone()])
        .await
        .expect("repeat ingest");
    assert_eq!(outcome, IngestOutcome::Duplicate { event_id: first.id });
    assert_eq!(store.event(repeat.id).await.expect("event"), None);
    assert!(store.run(repeat_run.id).await.expect("run").is_none());
    assert_eq!(count(&store, RunState::Queued).await, 1);

    // The same key from another source is another event.
    let other_source = new_event("ordercloud:uk-store", "evt_1");
    let outcome = store
        .ingest(other_source.clone(), vec![])
        .await
        .expect("other source");
    assert!(
        matches!(outcome, IngestOutcome::Accepted { event_id, .. } if event_id == other_source.id)
    );
}

/// An event may start no runs; unknown ids read as `None`.
pub async fn ingest_without_runs_and_missing_rows(store: Arc<dyn Store>) {
    let event = new_event("kashflow:main", "poll-1");
    let outcome = store.ingest(event.clone(), vec![]).await.expect("ingest");
    assert_eq!(
        outcome,
        IngestOutcome::Accepted {
            event_id: event.id,
            run_ids: vec![],
        }
    );
    assert!(store.event(event.id).await.expect("event").is_some());
    assert!(store.event(Uuid::new_v4()).await.expect("event").is_none());
    assert!(store.run(Uuid::new_v4()).await.expect("run").is_none());
}

/// An ingest whose event id or run id is already taken fails as a whole:
/// neither the event nor any of its runs is stored.
pub async fn ingest_with_reused_ids_stores_nothing(store: Arc<dyn Store>) {
    let taken_run = enqueue(&store, new_run("flow")).await;
    let event = new_event("gateway", "evt_reuse");
    let fresh_run = new_run("flow");
    let mut reused = new_run("flow");
    reused.id = taken_run;
    let result = store
        .ingest(event.clone(), vec![fresh_run.clone(), reused])
        .await;
    assert!(
        matches!(result, Err(StoreError::Fatal(_))),
        "expected Fatal, got {result:?}"
    );
    assert_eq!(store.event(event.id).await.expect("event"), None);
    assert!(store.run(fresh_run.id).await.expect("run").is_none());

    let stored = new_event("gateway", "evt_first");
    store.ingest(stored.clone(), vec![]).await.expect("ingest");
    let mut same_id = new_event("gateway", "evt_other");
    same_id.id = stored.id;
    let run = new_run("flow");
    let result = store.ingest(same_id, vec![run.clone()]).await;
    assert!(
        matches!(result, Err(StoreError::Fatal(_))),
        "expected Fatal, got {result:?}"
    );
    assert!(store.run(run.id).await.expect("run").is_none());
    assert_eq!(count(&store, RunState::Queued).await, 1);

    // The store still works after the refusals.
    let later = new_event("gateway", "evt_later");
    assert!(matches!(
        store.ingest(later, vec![new_run("flow")]).await,
        Ok(IngestOutcome::Accepted { .. })
    ));
}

/// `enqueue` queues a run with no event; repeating it with the same id is a
/// no-op.
pub async fn enqueue_queues_run_without_event(store: Arc<dyn Store>) {
    let run = new_run("daily-reconciliation");
    store.enqueue(run.clone()).await.expect("enqueue");
    store.enqueue(run.clone()).await.expect("enqueue again");
    let stored = store.run(run.id).await.expect("run").expect("stored").run;
    assert_eq!(stored.event_id, None);
    assert_eq!(stored.state, RunState::Queued);
    assert_eq!(stored.input, run.input);
    assert_eq!(count(&store, RunState::Queued).await, 1);
}

/// `claim` sets `Running`, a lease and one more attempt; a claimed run is
/// not handed out again.
pub async fn claim_leases_runs_and_counts_attempts(store: Arc<dyn Store>) {
    let id = enqueue(&store, new_run("flow")).await;
    let before = now();
    let claimed = store
        .claim("worker-1", Duration::from_secs(30), 10)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let claimed = &claimed[0];
    assert_eq!(claimed.run.id, id);
    assert_eq!(claimed.run.state, RunState::Running);
    assert_eq!(claimed.run.attempts, 1);
    assert_eq!(claimed.run.lease_owner.as_deref(), Some("worker-1"));
    assert_eq!(claimed.lease.run_id, id);
    assert_eq!(claimed.lease.owner, "worker-1");
    assert!(claimed.journal.is_empty());
    let expires = claimed.run.lease_expires_at.expect("lease expiry");
    assert!(expires >= before + seconds(29) && expires <= now() + seconds(31));

    assert!(store
        .claim("worker-2", LEASE, 10)
        .await
        .expect("second claim")
        .is_empty());
    let stored = store.run(id).await.expect("run").expect("stored").run;
    assert_eq!(stored.state, RunState::Running);
    assert_eq!(stored.lease_owner.as_deref(), Some("worker-1"));
    assert_eq!(count(&store, RunState::Running).await, 1);
}

/// Claims are oldest `next_attempt_at` first and honour the limit.
pub async fn claim_takes_oldest_first_up_to_limit(store: Arc<dyn Store>) {
    let t = now();
    let oldest = enqueue(&store, due_run("flow", t - seconds(30))).await;
    let newest = enqueue(&store, due_run("flow", t - seconds(10))).await;
    let middle = enqueue(&store, due_run("flow", t - seconds(20))).await;
    let first = store.claim("w", LEASE, 2).await.expect("claim");
    let ids: Vec<Uuid> = first.iter().map(|c| c.run.id).collect();
    assert_eq!(ids, vec![oldest, middle]);
    let tokens: HashSet<Uuid> = first.iter().map(|c| c.lease.token).collect();
    assert_eq!(tokens.len(), 2, "every claim gets its own token");
    let second = store.claim("w", LEASE, 2).await.expect("claim");
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].run.id, newest);
}

/// Runs whose `not_before` is in the future are not claimed; a zero limit
/// claims nothing.
pub async fn claim_skips_runs_not_yet_due(store: Arc<dyn Store>) {
    let later = enqueue(&store, due_run("flow", now() + seconds(3600))).await;
    assert!(store.claim("w", LEASE, 10).await.expect("claim").is_empty());
    let due = enqueue(&store, new_run("flow")).await;
    assert!(store.claim("w", LEASE, 0).await.expect("claim").is_empty());
    let claimed = store.claim("w", LEASE, 10).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].run.id, due);
    assert_eq!(state_of(&store, later).await, RunState::Queued);
}

/// Steps form the journal in recording order; re-recording a step replaces
/// it in place; the journal comes back with the next claim.
pub async fn record_step_builds_journal_in_order(store: Arc<dyn Store>) {
    let id = enqueue(&store, new_run("flow")).await;
    let claimed = claim_one(&store, LEASE).await;
    let a = step("fetch-order", json!({"ID": "SO-1"}));
    let b = step("map", json!({"Number": 1001}));
    let c = step("create-invoice", json!(null));
    let b2 = StepRecord {
        output: json!({"Number": 1002}),
        attempts: 2,
        ..step("map", json!(null))
    };
    for record in [&a, &b, &c, &b2] {
        store
            .record_step(&claimed.lease, record)
            .await
            .expect("record_step");
    }
    let journal = store.run(id).await.expect("run").expect("stored").journal;
    assert_eq!(journal, vec![a.clone(), b2.clone(), c.clone()]);

    store.release(&claimed.lease).await.expect("release");
    let again = claim_one(&store, LEASE).await;
    assert_eq!(again.run.id, id);
    assert_eq!(again.journal, vec![a, b2, c]);
}

fn audit_of(run_id: Uuid, action: &str) -> NewAudit {
    NewAudit {
        run_id: Some(run_id),
        event_id: None,
        flow_version: Some("1#abcdef".to_owned()),
        action: action.to_owned(),
        detail: json!({"key": action}),
    }
}

/// One `commit_step` records the step, links the intents, appends the
/// audit entries and ends the run.
pub async fn commit_step_writes_step_links_audit_and_finish_together(store: Arc<dyn Store>) {
    let id = enqueue(&store, new_run("flow")).await;
    let claimed = claim_one(&store, LEASE).await;
    let key = BusinessKey::new("kashflow:main", "invoice", "order:SO-9");
    store
        .begin_intent(&key, id, IN_FLIGHT)
        .await
        .expect("begin");
    let record = step("invoice", json!({"number": "1001"}));
    let mut commit = StepCommit::record(record.clone());
    commit.links.push(Link {
        key: key.clone(),
        external_id: "1001".to_owned(),
    });
    commit.audits.push(audit_of(id, "invoice.created"));
    commit.finish = Some(RunOutcome::Succeeded);
    assert!(!commit.is_single_write());
    store
        .commit_step(&claimed.lease, commit)
        .await
        .expect("commit_step");

    let detail = store.run(id).await.expect("run").expect("stored");
    assert_eq!(detail.journal, vec![record]);
    assert_eq!(detail.run.state, RunState::Succeeded);
    assert_eq!(detail.run.lease_owner, None);
    let intent = store.intent(&key).await.expect("intent").expect("stored");
    assert_eq!(
        intent.state,
        IntentState::Linked {
            external_id: "1001".to_owned()
        }
    );
    let audit = store.audit_since(0, 10).await.expect("audit");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].entry.action, "invoice.created");
}

/// A refused `commit_step` (lease lost, or a key linked elsewhere) leaves
/// no trace: no step, no link, no audit entry, the run unchanged.
pub async fn commit_step_is_all_or_nothing(store: Arc<dyn Store>) {
    let id = enqueue(&store, new_run("flow")).await;
    let claimed = claim_one(&store, LEASE).await;
    let taken = BusinessKey::new("kashflow:main", "customer", "OC-1");
    store.link_intent(&taken, "CUST-A").await.expect("link");
    let fresh = BusinessKey::new("kashflow:main", "invoice", "order:SO-10");
    store
        .begin_intent(&fresh, id, IN_FLIGHT)
        .await
        .expect("begin");

    // A key already linked to another object: refused as a whole.
    let mut conflicting = StepCommit::record(step("customer", json!({"code": "CUST-B"})));
    conflicting.links.push(Link {
        key: fresh.clone(),
        external_id: "2002".to_owned(),
    });
    conflicting.links.push(Link {
        key: taken.clone(),
        external_id: "CUST-B".to_owned(),
    });
    conflicting.audits.push(audit_of(id, "customer.created"));
    conflicting.finish = Some(RunOutcome::Succeeded);
    assert_invalid_state(store.commit_step(&claimed.lease, conflicting).await);
    let detail = store.run(id).await.expect("run").expect("stored");
    assert!(detail.journal.is_empty(), "{:?}", detail.journal);
    assert_eq!(detail.run.state, RunState::Running);
    let intent = store.intent(&fresh).await.expect("intent").expect("stored");
    assert_eq!(intent.state, IntentState::Pending);
    assert!(store.audit_since(0, 10).await.expect("audit").is_empty());

    // A stale lease: refused, nothing written.
    store.release(&claimed.lease).await.expect("release");
    let mut stale = StepCommit::record(step("invoice", json!({"number": "2002"})));
    stale.links.push(Link {
        key: fresh.clone(),
        external_id: "2002".to_owned(),
    });
    stale.audits.push(audit_of(id, "invoice.created"));
    assert_lease_lost(store.commit_step(&claimed.lease, stale).await, id);
    let intent = store.intent(&fresh).await.expect("intent").expect("stored");
    assert_eq!(intent.state, IntentState::Pending);
    assert!(store.audit_since(0, 10).await.expect("audit").is_empty());
    assert!(store
        .run(id)
        .await
        .expect("run")
        .expect("stored")
        .journal
        .is_empty());
}

/// `release` queues the run at once without counting the attempt.
pub async fn release_requeues_without_counting_attempt(store: Arc<dyn Store>) {
    let id = enqueue(&store, due_run("flow", now() + seconds(-1))).await;
    let claimed = claim_one(&store, LEASE).await;
    store.release(&claimed.lease).await.expect("release");
    let run = store.run(id).await.expect("run").expect("stored").run;
    assert_eq!(run.state, RunState::Queued);
    assert_eq!(run.attempts, 0);
    assert_eq!(run.lease_owner, None);
    assert_eq!(run.lease_expires_at, None);
    assert_lease_lost(store.release(&claimed.lease).await, id);
    let again = claim_one(&store, LEASE).await;
    assert_eq!(again.run.attempts, 1);
    assert_ne!(again.lease.token, claimed.lease.token);
}

/// `Succeeded` ends the run and the lease; later writes are refused.
pub async fn finish_succeeded_ends_the_lease(store: Arc<dyn Store>) {
    let id = enqueue(&store, new_run("flow")).await;
    let claimed = claim_one(&store, LEASE).await;
    store
        .finish(&claimed.lease, RunOutcome::Succeeded)
        .await
        .expect("finish");
    let run = store.run(id).await.expect("run").expect("stored").run;
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!(run.lease_owner, None);
    assert_eq!(run.lease_expires_at, None);
    assert_lease_lost(
        store.finish(&claimed.lease, RunOutcome::Succeeded).await,
        id,
    );
    assert_lease_lost(
        store
            .record_step(&claimed.lease, &step("late", json!(1)))
            .await,
        id,
    );
    assert!(store.claim("w", LEASE, 10).await.expect("claim").is_empty());
}

/// `Retry` sets the next attempt and keeps the first failure time across
/// retries; `Succeeded` clears it.
pub async fn finish_retry_tracks_first_failure(store: Arc<dyn Store>) {
    let id = enqueue(&store, new_run("flow")).await;
    let claimed = claim_one(&store, LEASE).await;
    let due_again = now() - seconds(1);
    store
        .finish(
            &claimed.lease,
            RunOutcome::Retry {
                at: due_again,
                error: run_error("503 from KashFlow"),
            },
        )
        .await
        .expect("finish retry");
    let run = store.run(id).await.expect("run").expect("stored").run;
    assert_eq!(run.state, RunState::Retrying);
    assert_eq!(run.next_attempt_at, due_again);
    assert_eq!(run.last_error, Some(run_error("503 from KashFlow")));
    assert_eq!(run.lease_owner, None);
    let first_failure = run.first_failure_at.expect("first failure set");

    let second = claim_one(&store, LEASE).await;
    assert_eq!(second.run.attempts, 2);
    let later = now() + seconds(3600);
    store
        .finish(
            &second.lease,
            RunOutcome::Retry {
                at: later,
                error: run_error("429"),
            },
        )
        .await
        .expect("finish retry again");
    let run = store.run(id).await.expect("run").expect("stored").run;
    assert_eq!(run.first_failure_at, Some(first_failure));
    assert_eq!(run.next_attempt_at, later);
    assert_eq!(run.last_error, Some(run_error("429")));
    assert!(store.claim("w", LEASE, 10).await.expect("claim").is_empty());

    store.replay(id, None).await.expect("replay");
    let third = claim_one(&store, LEASE).await;
    store
        .finish(
            &third.lease,
            RunOutcome::Retry {
                at: now() - seconds(1),
                error: run_error("timeout"),
            },
        )
        .await
        .expect("retry");
    let fourth = claim_one(&store, LEASE).await;
    store
        .finish(&fourth.lease, RunOutcome::Succeeded)
        .await
        .expect("succeed");
    let run = store.run(id).await.expect("run").expect("stored").run;
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!(run.first_failure_at, None);
}

/// `Parked` keeps the reason and takes the run out of the queue.
pub async fn finish_parked_keeps_the_error(store: Arc<dyn Store>) {
    let error = RunError {
        class: ErrorClass::Validation,
        message: "Customer code is required".to_owned(),
        step: None,
    };
    let id = run_to(
        &store,
        RunOutcome::Parked {
            error: error.clone(),
        },
    )
    .await;
    let run = store.run(id).await.expect("run").expect("stored").run;
    assert_eq!(run.state, RunState::Parked);
    assert_eq!(run.last_error, Some(error));
    assert!(run.first_failure_at.is_some());
    assert_eq!(run.lease_owner, None);
    assert!(store.claim("w", LEASE, 10).await.expect("claim").is_empty());
    assert_eq!(count(&store, RunState::Parked).await, 1);
}

/// `heartbeat` extends current leases and names the lost ones.
pub async fn heartbeat_extends_and_reports_lost(store: Arc<dyn Store>) {
    enqueue(&store, new_run("flow")).await;
    enqueue(&store, new_run("flow")).await;
    let claimed = store
        .claim("w", Duration::from_secs(30), 2)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 2);
    let leases: Vec<Lease> = claimed.iter().map(|c| c.lease.clone()).collect();
    let lost = store
        .heartbeat(&leases, Duration::from_secs(3600))
        .await
        .expect("heartbeat");
    assert!(lost.is_empty(), "no lease was lost: {lost:?}");
    let run = store
        .run(leases[0].run_id)
        .await
        .expect("run")
        .expect("stored")
        .run;
    assert!(run.lease_expires_at.expect("expiry") > now() + seconds(3000));

    let stale_lease = stale(&leases[1]);
    let unknown = Lease {
        run_id: Uuid::new_v4(),
        owner: "w".to_owned(),
        token: Uuid::new_v4(),
    };
    let lost = store
        .heartbeat(
            &[leases[0].clone(), stale_lease.clone(), unknown.clone()],
            LEASE,
        )
        .await
        .expect("heartbeat");
    assert_eq!(
        lost.into_iter().collect::<HashSet<_>>(),
        HashSet::from([stale_lease.run_id, unknown.run_id])
    );
    assert!(store.heartbeat(&[], LEASE).await.expect("empty").is_empty());
}

/// The reaper returns expired runs to the queue; the old holder is fenced
/// out of every write, even after the run is claimed again.
pub async fn reap_returns_expired_runs_and_fences_old_holder(store: Arc<dyn Store>) {
    let expiring = enqueue(&store, due_run("flow", now() - seconds(20))).await;
    let healthy = enqueue(&store, due_run("flow", now() - seconds(10))).await;
    let old = claim_one(&store, Duration::ZERO).await;
    assert_eq!(old.run.id, expiring);
    let kept = claim_one(&store, Duration::from_secs(3600)).await;
    assert_eq!(kept.run.id, healthy);
    tokio::time::sleep(Duration::from_millis(20)).await;

    assert_eq!(store.reap_expired().await.expect("reap"), 1);
    let run = store.run(expiring).await.expect("run").expect("stored").run;
    assert_eq!(run.state, RunState::Queued);
    assert_eq!(run.attempts, 1, "a lost lease counts as an attempt");
    assert_eq!(run.lease_owner, None);
    assert_eq!(state_of(&store, healthy).await, RunState::Running);

    assert_lease_lost(
        store.record_step(&old.lease, &step("a", json!(1))).await,
        expiring,
    );
    assert_lease_lost(
        store.finish(&old.lease, RunOutcome::Succeeded).await,
        expiring,
    );
    assert_lease_lost(store.release(&old.lease).await, expiring);

    let new = claim_one(&store, LEASE).await;
    assert_eq!(new.run.id, expiring);
    assert_eq!(new.run.attempts, 2);
    assert_ne!(new.lease.token, old.lease.token);
    assert_lease_lost(
        store.record_step(&old.lease, &step("a", json!(1))).await,
        expiring,
    );
    assert_eq!(
        store
            .heartbeat(std::slice::from_ref(&old.lease), LEASE)
            .await
            .expect("heartbeat"),
        vec![expiring]
    );
    store
        .record_step(&new.lease, &step("a", json!(2)))
        .await
        .expect("new holder writes");
    assert_eq!(store.reap_expired().await.expect("reap again"), 0);
    let journal = store
        .run(expiring)
        .await
        .expect("run")
        .expect("stored")
        .journal;
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].output, json!(2));
}

/// `list_runs` is newest first, filters by state and flow, pages by `before`.
pub async fn list_runs_filters_and_pages(store: Arc<dyn Store>) {
    let mut created = Vec::new();
    for index in 0..8 {
        let flow = if index % 3 == 0 { "b" } else { "a" };
        created.push(enqueue(&store, new_run(flow)).await);
    }
    let newest_first: Vec<Uuid> = created.iter().rev().copied().collect();
    let all = store.list_runs(&RunFilter::default()).await.expect("list");
    assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), newest_first);

    let only_b = store
        .list_runs(&RunFilter {
            flow: Some("b".to_owned()),
            ..RunFilter::default()
        })
        .await
        .expect("list b");
    assert_eq!(
        only_b.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![created[6], created[3], created[0]]
    );

    let claimed = store.claim("w", LEASE, 1).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    let running = store
        .list_runs(&RunFilter {
            state: Some(RunState::Running),
            ..RunFilter::default()
        })
        .await
        .expect("list running");
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].id, claimed[0].run.id);
    let none = store
        .list_runs(&RunFilter {
            state: Some(RunState::Running),
            flow: Some("no-such-flow".to_owned()),
            ..RunFilter::default()
        })
        .await
        .expect("list none");
    assert!(none.is_empty());

    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list_runs(&RunFilter {
                before,
                limit: 3,
                ..RunFilter::default()
            })
            .await
            .expect("page");
        assert!(page.len() <= 3);
        let Some(last) = page.last() else {
            break;
        };
        before = Some(last.id);
        paged.extend(page.iter().map(|r| r.id));
    }
    assert_eq!(paged, newest_first);
    assert_not_found(
        store
            .list_runs(&RunFilter {
                before: Some(Uuid::new_v4()),
                ..RunFilter::default()
            })
            .await,
    );
}

/// Every state is counted, zeros included, in `RunState::ALL` order.
pub async fn count_by_state_lists_every_state(store: Arc<dyn Store>) {
    let counts = store.count_by_state().await.expect("count");
    assert_eq!(
        counts,
        RunState::ALL.iter().map(|s| (*s, 0)).collect::<Vec<_>>()
    );
    run_to(&store, RunOutcome::Succeeded).await;
    run_to(
        &store,
        RunOutcome::Parked {
            error: run_error("x"),
        },
    )
    .await;
    enqueue(&store, due_run("flow", now() + seconds(3600))).await;
    let counts = store.count_by_state().await.expect("count");
    let expected: Vec<(RunState, i64)> = RunState::ALL
        .iter()
        .map(|s| {
            let n = match s {
                RunState::Queued | RunState::Parked | RunState::Succeeded => 1,
                _ => 0,
            };
            (*s, n)
        })
        .collect();
    assert_eq!(counts, expected);
}

/// Replaying a parked run queues it with attempts reset and its journal kept.
pub async fn replay_from_parked_keeps_journal(store: Arc<dyn Store>) {
    let id = enqueue(&store, new_run("flow")).await;
    let claimed = claim_one(&store, LEASE).await;
    let done = step("fetch-order", json!({"ID": "SO-1"}));
    store
        .record_step(&claimed.lease, &done)
        .await
        .expect("record");
    store
        .finish(
            &claimed.lease,
            RunOutcome::Parked {
                error: run_error("bad"),
            },
        )
        .await
        .expect("park");
    store.replay(id, None).await.expect("replay");
    let run = store.run(id).await.expect("run").expect("stored").run;
    assert_eq!(run.state, RunState::Queued);
    assert_eq!(run.attempts, 0);
    assert_eq!(run.first_failure_at, None);
    let again = claim_one(&store, LEASE).await;
    assert_eq!(again.run.id, id);
    assert_eq!(again.run.attempts, 1);
    assert_eq!(again.journal, vec![done]);
}

/// Replaying with a new input replaces it and clears the journal.
pub async fn replay_with_new_input_clears_journal(store: Arc<dyn Store>) {
    let id = enqueue(&store, new_run("flow")).await;
    let claimed = claim_one(&store, LEASE).await;
    store
        .record_step(&claimed.lease, &step("map", json!(1)))
        .await
        .expect("record");
    store
        .finish(
            &claimed.lease,
            RunOutcome::Retry {
                at: now() + seconds(3600),
                error: run_error("x"),
            },
        )
        .await
        .expect("retry");
    let fixed = json!({"order": {"ID": "SO-1", "fixed": true}});
    store
        .replay(id, Some(fixed.clone()))
        .await
        .expect("replay retrying run");
    let detail = store.run(id).await.expect("run").expect("stored");
    assert_eq!(detail.run.input, fixed);
    assert_eq!(detail.run.state, RunState::Queued);
    assert!(detail.journal.is_empty());
    let again = claim_one(&store, LEASE).await;
    assert_eq!(again.run.input, fixed);
    assert!(again.journal.is_empty());
}

/// Only parked and retrying runs can be replayed.
pub async fn replay_rejects_other_states(store: Arc<dyn Store>) {
    let queued = enqueue(&store, due_run("flow", now() + seconds(3600))).await;
    assert_invalid_state(store.replay(queued, None).await);
    let succeeded = run_to(&store, RunOutcome::Succeeded).await;
    assert_invalid_state(store.replay(succeeded, None).await);
    let running = enqueue(&store, new_run("flow")).await;
    let claimed = claim_one(&store, LEASE).await;
    assert_eq!(claimed.run.id, running);
    assert_invalid_state(store.replay(running, Some(json!({}))).await);
    assert_not_found(store.replay(Uuid::new_v4(), None).await);
    // Nothing changed.
    assert_eq!(state_of(&store, running).await, RunState::Running);
    assert_eq!(state_of(&store, succeeded).await, RunState::Succeeded);
}

/// Discard applies to queued, retrying and parked runs only.
pub async fn discard_rules(store: Arc<dyn Store>) {
    let queued = enqueue(&store, due_run("flow", now() + seconds(3600))).await;
    store
        .discard(queued, "duplicate order")
        .await
        .expect("discard queued");
    assert_eq!(state_of(&store, queued).await, RunState::Discarded);

    let parked = run_to(
        &store,
        RunOutcome::Parked {
            error: run_error("x"),
        },
    )
    .await;
    store
        .discard(parked, "test order")
        .await
        .expect("discard parked");
    let retrying = run_to(
        &store,
        RunOutcome::Retry {
            at: now() + seconds(3600),
            error: run_error("x"),
        },
    )
    .await;
    store
        .discard(retrying, "obsolete")
        .await
        .expect("discard retrying");
    assert_eq!(state_of(&store, retrying).await, RunState::Discarded);

    let succeeded = run_to(&store, RunOutcome::Succeeded).await;
    assert_invalid_state(store.discard(succeeded, "no").await);
    assert_invalid_state(store.discard(parked, "again").await);
    let running = enqueue(&store, new_run("flow")).await;
    claim_one(&store, LEASE).await;
    assert_invalid_state(store.discard(running, "busy").await);
    assert_not_found(store.discard(Uuid::new_v4(), "missing").await);
    assert_eq!(count(&store, RunState::Discarded).await, 3);
    assert!(store.claim("w", LEASE, 10).await.expect("claim").is_empty());
}

/// `begin_intent` inserts once and then returns the first row.
pub async fn begin_intent_is_insert_if_absent(store: Arc<dyn Store>) {
    let key = BusinessKey::new("kashflow:main", "invoice", "order:SO-1001");
    let first_run = Uuid::new_v4();
    let begun = store
        .begin_intent(&key, first_run, IN_FLIGHT)
        .await
        .expect("begin");
    assert!(begun.inserted);
    let first = begun.intent;
    assert_eq!(first.key, key);
    assert_eq!(first.run_id, first_run);
    assert_eq!(first.state, IntentState::Pending);

    let again = store
        .begin_intent(&key, Uuid::new_v4(), IN_FLIGHT)
        .await
        .expect("begin again");
    assert!(!again.inserted);
    let again = again.intent;
    assert_eq!(again, first, "the earlier intent wins");
    assert_eq!(store.intent(&key).await.expect("intent"), Some(first));
    let other = BusinessKey::new("kashflow:main", "invoice", "order:SO-1002");
    assert_eq!(store.intent(&other).await.expect("intent"), None);
}

/// How long a test's attempts may be in flight.
const IN_FLIGHT: Duration = Duration::from_secs(60);

/// A pending intent's attempt that did not report its end blocks a new
/// attempt for `in_flight_for`; a settled one, or an old one, does not.
pub async fn an_unsettled_attempt_blocks_another_until_it_cannot_be_in_flight(
    store: Arc<dyn Store>,
) {
    let key = BusinessKey::new("kashflow:main", "invoice", "order:SO-77");
    let run = Uuid::new_v4();
    let first = store
        .begin_intent(&key, run, IN_FLIGHT)
        .await
        .expect("begin");
    assert!(first.inserted);
    assert_eq!(first.in_flight_until, None);

    // The first attempt did not report: a second must wait for it.
    let blocked = store
        .begin_intent(&key, run, IN_FLIGHT)
        .await
        .expect("begin");
    assert!(!blocked.inserted);
    assert_eq!(
        blocked.in_flight_until,
        Some(first.intent.updated_at + chrono::TimeDelta::seconds(60))
    );
    assert_eq!(
        blocked.intent, first.intent,
        "a blocked attempt changes nothing"
    );

    // Long enough ago (here: no window at all): a new attempt starts.
    let restarted = store
        .begin_intent(&key, run, Duration::ZERO)
        .await
        .expect("begin");
    assert!(!restarted.inserted);
    assert_eq!(restarted.in_flight_until, None);
    assert!(restarted.intent.updated_at >= first.intent.updated_at);
    assert_eq!(restarted.intent.state, IntentState::Pending);
    // ... and that new attempt blocks the next one in turn.
    let blocked = store
        .begin_intent(&key, run, IN_FLIGHT)
        .await
        .expect("begin");
    assert!(blocked.in_flight_until.is_some());

    // An attempt that ended (settled) does not block.
    store.settle_intent(&key).await.expect("settle");
    let after_settle = store
        .begin_intent(&key, run, IN_FLIGHT)
        .await
        .expect("begin");
    assert_eq!(after_settle.in_flight_until, None);
    let blocked = store
        .begin_intent(&key, run, IN_FLIGHT)
        .await
        .expect("begin");
    assert!(
        blocked.in_flight_until.is_some(),
        "beginning again unsettles: the new attempt may be in flight"
    );

    // Linked: settling is a no-op and nothing is ever in flight.
    store.link_intent(&key, "INV-77").await.expect("link");
    store.settle_intent(&key).await.expect("settle linked");
    let linked = store
        .begin_intent(&key, run, IN_FLIGHT)
        .await
        .expect("begin");
    assert_eq!(linked.in_flight_until, None);
    assert_eq!(
        linked.intent.state,
        IntentState::Linked {
            external_id: "INV-77".to_owned()
        }
    );
    // Settling an unknown key is a no-op too.
    let unknown = BusinessKey::new("kashflow:main", "invoice", "order:none");
    store.settle_intent(&unknown).await.expect("settle unknown");
    assert_eq!(store.intent(&unknown).await.expect("intent"), None);
}

/// An attempt that waited for its turn is restamped just before sending:
/// the window then counts from the restamp. A restamp for an attempt that
/// is no longer current (another began, settled, linked) is refused.
pub async fn a_restamped_attempt_blocks_from_its_sending(store: Arc<dyn Store>) {
    let key = BusinessKey::new("kashflow:main", "customer", "code:WAITER");
    let run = Uuid::new_v4();
    let first = store
        .begin_intent(&key, run, IN_FLIGHT)
        .await
        .expect("begin");
    let began = first.intent.updated_at;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let sending = store
        .restamp_intent(&key, began)
        .await
        .expect("restamp")
        .expect("the current attempt may be restamped");
    assert!(sending > began, "{sending} after {began}");
    let blocked = store
        .begin_intent(&key, run, IN_FLIGHT)
        .await
        .expect("begin");
    assert_eq!(
        blocked.in_flight_until,
        Some(sending + chrono::TimeDelta::seconds(60)),
        "the window counts from the restamp"
    );
    assert_eq!(blocked.intent.updated_at, sending);
    // The old start no longer names the current attempt.
    assert_eq!(
        store.restamp_intent(&key, began).await.expect("stale"),
        None
    );

    // Another attempt began (the window passed): the old one may not send.
    let taken = store
        .begin_intent(&key, run, Duration::ZERO)
        .await
        .expect("begin");
    assert_eq!(taken.in_flight_until, None);
    assert_eq!(
        store
            .restamp_intent(&key, sending)
            .await
            .expect("taken over"),
        None
    );
    // A settled attempt ended: nothing more of it may be sent.
    let current = taken.intent.updated_at;
    store.settle_intent(&key).await.expect("settle");
    assert_eq!(
        store.restamp_intent(&key, current).await.expect("settled"),
        None
    );
    // Linked: done, nothing to send.
    let again = store
        .begin_intent(&key, run, IN_FLIGHT)
        .await
        .expect("begin");
    store.link_intent(&key, "CUST-1").await.expect("link");
    assert_eq!(
        store
            .restamp_intent(&key, again.intent.updated_at)
            .await
            .expect("linked"),
        None
    );
    let unknown = BusinessKey::new("kashflow:main", "customer", "code:NONE");
    assert_eq!(
        store
            .restamp_intent(&unknown, began)
            .await
            .expect("unknown"),
        None
    );
}

/// `link_intent`: pending -> linked, idempotent for the same id, refused
/// for another, and inserts a linked row for an unknown key.
pub async fn link_intent_rules(store: Arc<dyn Store>) {
    let key = BusinessKey::new("kashflow:main", "invoice", "order:SO-1");
    let run_id = Uuid::new_v4();
    store
        .begin_intent(&key, run_id, IN_FLIGHT)
        .await
        .expect("begin");
    store.link_intent(&key, "INV-1").await.expect("link");
    store.link_intent(&key, "INV-1").await.expect("link again");
    assert_invalid_state(store.link_intent(&key, "INV-2").await);
    let intent = store.intent(&key).await.expect("intent").expect("stored");
    assert_eq!(
        intent.state,
        IntentState::Linked {
            external_id: "INV-1".to_owned()
        }
    );
    assert_eq!(intent.run_id, run_id);
    let begun = store
        .begin_intent(&key, Uuid::new_v4(), IN_FLIGHT)
        .await
        .expect("begin after link");
    assert!(!begun.inserted);
    assert_eq!(begun.intent, intent);

    let found = BusinessKey::new("kashflow:main", "customer", "user:42");
    store
        .link_intent(&found, "CUST-9")
        .await
        .expect("link unknown key");
    let intent = store.intent(&found).await.expect("intent").expect("stored");
    assert_eq!(intent.run_id, Uuid::nil());
    assert_eq!(
        intent.state,
        IntentState::Linked {
            external_id: "CUST-9".to_owned()
        }
    );
}

/// `ledger` lists the intents of one connection and kind.
pub async fn ledger_lists_one_connection_and_kind(store: Arc<dyn Store>) {
    let keys = [
        BusinessKey::new("kashflow:main", "invoice", "order:1"),
        BusinessKey::new("kashflow:main", "invoice", "order:2"),
        BusinessKey::new("kashflow:main", "customer", "user:1"),
        BusinessKey::new("kashflow:other", "invoice", "order:1"),
    ];
    for key in &keys {
        store
            .begin_intent(key, Uuid::new_v4(), IN_FLIGHT)
            .await
            .expect("begin");
    }
    store.link_intent(&keys[1], "INV-2").await.expect("link");
    let ledger = store
        .ledger("kashflow:main", "invoice")
        .await
        .expect("ledger");
    let listed: HashSet<BusinessKey> = ledger.iter().map(|i| i.key.clone()).collect();
    assert_eq!(listed, HashSet::from([keys[0].clone(), keys[1].clone()]));
    assert!(ledger.iter().any(|i| i.state
        == IntentState::Linked {
            external_id: "INV-2".to_owned()
        }));
    assert!(store
        .ledger("xconnect", "contact")
        .await
        .expect("ledger")
        .is_empty());
}

/// Cursors are absent, then saved, then overwritten.
pub async fn cursors_round_trip(store: Arc<dyn Store>) {
    assert_eq!(
        store.cursor("kashflow:main/stock").await.expect("cursor"),
        None
    );
    store
        .set_cursor("kashflow:main/stock", "2026-01-01T00:00:00Z")
        .await
        .expect("set");
    store
        .set_cursor("kashflow:main/stock", "2026-02-01T00:00:00Z")
        .await
        .expect("overwrite");
    store.set_cursor("other", "").await.expect("set other");
    assert_eq!(
        store.cursor("kashflow:main/stock").await.expect("cursor"),
        Some("2026-02-01T00:00:00Z".to_owned())
    );
    assert_eq!(
        store.cursor("other").await.expect("cursor"),
        Some(String::new())
    );
}

fn audit_entry(index: usize) -> NewAudit {
    NewAudit {
        run_id: Some(Uuid::new_v4()),
        event_id: if index.is_multiple_of(2) {
            None
        } else {
            Some(Uuid::new_v4())
        },
        flow_version: Some("3#beef".to_owned()),
        action: "kashflow.invoice.create".to_owned(),
        detail: json!({
            "request": {"Number": index, "CustomerCode": "CUST-é", "Lines": [{"Qty": 2, "Rate": 9.5}]},
            "response": {"status": 201, "Number": index},
        }),
    }
}

/// Audit records chain by hash from the genesis hash and verify; edits and
/// deletions are detected.
pub async fn audit_chain_links_and_verifies(store: Arc<dyn Store>) {
    assert!(store.audit_since(0, 100).await.expect("empty").is_empty());
    let mut appended = Vec::new();
    for index in 0..5 {
        appended.push(store.audit(audit_entry(index)).await.expect("audit"));
    }
    assert_eq!(appended[0].prev_hash, GENESIS_HASH);
    assert_eq!(
        appended.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    let stored = store.audit_since(0, 100).await.expect("audit_since");
    assert_eq!(stored, appended);
    verify_audit_chain(GENESIS_HASH, &stored).expect("chain verifies");

    let middle = store.audit_since(2, 2).await.expect("page");
    assert_eq!(middle.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3, 4]);
    verify_audit_chain(&stored[1].hash, &middle).expect("a page verifies from its predecessor");
    assert!(store.audit_since(5, 10).await.expect("tail").is_empty());
    assert!(store.audit_since(0, 0).await.expect("zero").is_empty());

    let mut edited = stored.clone();
    edited[2].entry.detail = json!({"request": "forged"});
    assert!(verify_audit_chain(GENESIS_HASH, &edited).is_err());
    let mut deleted = stored;
    deleted.remove(1);
    assert!(verify_audit_chain(GENESIS_HASH, &deleted).is_err());
}

/// Eight workers claiming 500 runs concurrently: each run exactly once.
pub async fn concurrent_claims_never_hand_out_a_run_twice(store: Arc<dyn Store>) {
    let runs: Vec<NewRun> = (0..500).map(|_| new_run("bulk")).collect();
    let expected: HashSet<Uuid> = runs.iter().map(|r| r.id).collect();
    store
        .ingest(new_event("bulk", "one"), runs)
        .await
        .expect("ingest 500 runs");
    let workers = (0..8).map(|worker| {
        let store = store.clone();
        tokio::spawn(async move {
            let owner = format!("worker-{worker}");
            let mut mine = Vec::new();
            loop {
                let claimed = store.claim(&owner, LEASE, 7).await.expect("claim");
                if claimed.is_empty() {
                    break;
                }
                mine.extend(claimed.into_iter().map(|c| c.run.id));
            }
            mine
        })
    });
    let mut seen = HashSet::new();
    let mut total = 0;
    for result in join_all(workers).await {
        let ids = result.expect("worker task");
        total += ids.len();
        seen.extend(ids);
    }
    assert_eq!(total, 500, "a run was claimed twice or missed");
    assert_eq!(seen, expected);
    assert_eq!(count(&store, RunState::Running).await, 500);
}

/// Sixteen concurrent deliveries of one event: exactly one is accepted.
pub async fn concurrent_duplicate_ingests_accept_exactly_one(store: Arc<dyn Store>) {
    let deliveries = (0..16).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .ingest(
                    new_event("ordercloud:uk-store", "LogID-7"),
                    vec![new_run("flow")],
                )
                .await
                .expect("ingest")
        })
    });
    let outcomes: Vec<IngestOutcome> = join_all(deliveries)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    let accepted: Vec<Uuid> = outcomes
        .iter()
        .filter_map(|o| match o {
            IngestOutcome::Accepted { event_id, .. } => Some(*event_id),
            IngestOutcome::Duplicate { .. } => None,
        })
        .collect();
    assert_eq!(accepted.len(), 1, "exactly one delivery is accepted");
    for outcome in &outcomes {
        if let IngestOutcome::Duplicate { event_id } = outcome {
            assert_eq!(*event_id, accepted[0]);
        }
    }
    assert_eq!(count(&store, RunState::Queued).await, 1);
}

/// A burst of concurrent deliveries, several per key: exactly one per
/// `(source, dedupe_key)` is accepted and only it starts runs; the others
/// are duplicates of it. An answer comes only after the commit: whatever
/// a caller is told is already visible to every other reader.
pub async fn ingest_burst_accepts_one_delivery_per_key(store: Arc<dyn Store>) {
    const KEYS: usize = 40;
    const COPIES: usize = 4;
    let mut deliveries: Vec<(NewEvent, Vec<NewRun>)> = Vec::new();
    for copy in 0..COPIES {
        for key in 0..KEYS {
            let mut event = new_event("ordercloud:uk-store", &format!("burst-{key}"));
            event.body = format!("key {key} copy {copy}").into_bytes();
            deliveries.push((event, vec![new_run("order-to-invoice"), new_run("audit")]));
        }
    }
    // The same key from another source is another event.
    deliveries.push((new_event("gateway", "burst-0"), vec![new_run("payment")]));

    let start = Arc::new(tokio::sync::Barrier::new(deliveries.len()));
    let tasks = deliveries.iter().cloned().map(|(event, runs)| {
        let store = store.clone();
        let start = start.clone();
        tokio::spawn(async move {
            start.wait().await;
            let outcome = store.ingest(event, runs.clone()).await.expect("ingest");
            if let IngestOutcome::Accepted { event_id, .. } = &outcome {
                assert!(
                    store.event(*event_id).await.expect("event").is_some(),
                    "an accepted event is committed before the answer"
                );
                for run in &runs {
                    assert!(
                        store.run(run.id).await.expect("run").is_some(),
                        "an accepted event's runs are committed before the answer"
                    );
                }
            }
            outcome
        })
    });
    let outcomes: Vec<IngestOutcome> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("delivery task"))
        .collect();

    let mut accepted: HashMap<(String, String), Uuid> = HashMap::new();
    for ((event, runs), outcome) in deliveries.iter().zip(&outcomes) {
        if let IngestOutcome::Accepted { event_id, run_ids } = outcome {
            assert_eq!(*event_id, event.id);
            assert_eq!(run_ids, &runs.iter().map(|r| r.id).collect::<Vec<_>>());
            let key = (event.source.clone(), event.dedupe_key.clone());
            assert!(
                accepted.insert(key, event.id).is_none(),
                "two deliveries of {}/{} were accepted",
                event.source,
                event.dedupe_key
            );
        }
    }
    assert_eq!(
        accepted.len(),
        KEYS + 1,
        "every key has an accepted delivery"
    );
    for ((event, runs), outcome) in deliveries.iter().zip(&outcomes) {
        let first = accepted[&(event.source.clone(), event.dedupe_key.clone())];
        match outcome {
            IngestOutcome::Accepted { .. } => {
                let stored = store.event(event.id).await.expect("event").expect("stored");
                assert_eq!(&stored, event);
            }
            IngestOutcome::Duplicate { event_id } => {
                assert_eq!(*event_id, first, "a duplicate names the accepted delivery");
                assert_eq!(store.event(event.id).await.expect("event"), None);
                for run in runs {
                    assert!(
                        store.run(run.id).await.expect("run").is_none(),
                        "a duplicate starts no runs"
                    );
                }
            }
        }
    }
    assert_eq!(
        count(&store, RunState::Queued).await,
        i64::try_from(KEYS * 2 + 1).expect("small")
    );
}

/// In a burst of concurrent deliveries, those the store must refuse (a run
/// id already taken) fail alone: nothing of them is stored, and every
/// other delivery is accepted, including another delivery of a refused
/// one's key.
pub async fn ingest_burst_keeps_a_refused_event_to_itself(store: Arc<dyn Store>) {
    const DELIVERIES: usize = 64;
    const REFUSED: [usize; 4] = [7, 21, 40, 58];
    let mut deliveries: Vec<(NewEvent, Vec<NewRun>)> = (0..DELIVERIES)
        .map(|i| {
            (
                new_event("gateway", &format!("evt_burst_{i}")),
                vec![new_run("flow")],
            )
        })
        .collect();
    // Each refused delivery has a well-formed sibling with the same key.
    let mut sibling_of = HashMap::new();
    for refused in REFUSED {
        let mut reused = new_run("flow");
        reused.id = enqueue(&store, new_run("flow")).await;
        deliveries[refused].1.push(reused);
        deliveries.push((
            new_event("gateway", &format!("evt_burst_{refused}")),
            vec![new_run("flow")],
        ));
        sibling_of.insert(refused, deliveries.len() - 1);
    }

    let start = Arc::new(tokio::sync::Barrier::new(deliveries.len()));
    let tasks = deliveries.iter().cloned().map(|(event, runs)| {
        let store = store.clone();
        let start = start.clone();
        tokio::spawn(async move {
            start.wait().await;
            store.ingest(event, runs).await
        })
    });
    let outcomes: Vec<Result<IngestOutcome, StoreError>> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("delivery task"))
        .collect();

    for (index, ((event, runs), outcome)) in deliveries.iter().zip(&outcomes).enumerate() {
        if let Some(sibling) = sibling_of.get(&index) {
            // Either it came first and was refused, or it came after its
            // sibling and is a duplicate of it; it never stores anything.
            match outcome {
                Err(StoreError::Fatal(_)) => {}
                Ok(IngestOutcome::Duplicate { event_id }) => {
                    assert_eq!(*event_id, deliveries[*sibling].0.id);
                }
                other => panic!("delivery {index}: expected Fatal or Duplicate, got {other:?}"),
            }
            assert_eq!(store.event(event.id).await.expect("event"), None);
            assert!(store.run(runs[0].id).await.expect("run").is_none());
            continue;
        }
        let expected = IngestOutcome::Accepted {
            event_id: event.id,
            run_ids: runs.iter().map(|r| r.id).collect(),
        };
        assert_eq!(outcome.as_ref().ok(), Some(&expected), "delivery {index}");
    }
    // The runs enqueued beforehand, plus one per accepted delivery.
    assert_eq!(
        count(&store, RunState::Queued).await,
        i64::try_from(REFUSED.len() + DELIVERIES).expect("small")
    );
}

/// Concurrent appends still form one unbroken chain.
pub async fn concurrent_audit_appends_form_one_chain(store: Arc<dyn Store>) {
    let writers = (0..8).map(|writer| {
        let store = store.clone();
        tokio::spawn(async move {
            for index in 0..10 {
                store
                    .audit(audit_entry(writer * 10 + index))
                    .await
                    .expect("audit");
            }
        })
    });
    for result in join_all(writers).await {
        result.expect("writer task");
    }
    let records = store.audit_since(0, 1000).await.expect("audit_since");
    assert_eq!(records.len(), 80);
    assert_eq!(records.last().map(|r| r.seq), Some(80));
    verify_audit_chain(GENESIS_HASH, &records).expect("chain verifies");
}

/// A write that fails (stale lease, duplicate, bad state) leaves concurrent
/// writes untouched, and nothing of itself.
pub async fn failed_write_does_not_disturb_concurrent_writes(store: Arc<dyn Store>) {
    let id = enqueue(&store, new_run("flow")).await;
    let claimed = claim_one(&store, LEASE).await;
    let stale_lease = stale(&claimed.lease);
    let event = new_event("gateway", "evt_x");
    store.ingest(event.clone(), vec![]).await.expect("ingest");
    let key = BusinessKey::new("kashflow:main", "invoice", "order:9");
    store
        .begin_intent(&key, id, IN_FLIGHT)
        .await
        .expect("begin");
    store.link_intent(&key, "INV-9").await.expect("link");

    for round in 0..5 {
        let good_step = step(&format!("good-{round}"), json!(round));
        let bad_step = step(&format!("bad-{round}"), json!(round));
        let fresh = new_event("gateway", &format!("evt_{round}"));
        let (good, bad, duplicate, new, conflict, bad_replay) = tokio::join!(
            store.record_step(&claimed.lease, &good_step),
            store.record_step(&stale_lease, &bad_step),
            store.ingest(new_event("gateway", "evt_x"), vec![new_run("flow")]),
            store.ingest(fresh.clone(), vec![]),
            store.link_intent(&key, "INV-other"),
            store.replay(id, None),
        );
        good.expect("good step");
        assert_lease_lost(bad, id);
        assert_eq!(
            duplicate.expect("duplicate"),
            IngestOutcome::Duplicate { event_id: event.id }
        );
        assert!(matches!(new, Ok(IngestOutcome::Accepted { .. })));
        assert_invalid_state(conflict);
        assert_invalid_state(bad_replay);
    }
    let journal = store.run(id).await.expect("run").expect("stored").journal;
    let names: Vec<String> = journal.into_iter().map(|s| s.step).collect();
    assert_eq!(
        names,
        vec!["good-0", "good-1", "good-2", "good-3", "good-4"]
    );
    assert_eq!(count(&store, RunState::Queued).await, 0);
    assert_eq!(state_of(&store, id).await, RunState::Running);
}
