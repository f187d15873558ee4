//! The worker loop: claim → execute steps → journal → finish, plus the
//! heartbeat that keeps leases alive, the reaper that recovers runs of dead
//! workers, and graceful shutdown.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use ledgerbridge_core::{ErrorClass, Failure};
use ledgerbridge_store::{
    ClaimedRun, Lease, Run, RunError, RunOutcome, StepCommit, StepRecord, Store, StoreError,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::flow::{Flow, FlowRegistry, Mode, PlannedRequest, StepCtx};
use crate::policy::{Decision, RetryPolicy};

/// Engine settings (`[engine]` in the config file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Runs executed concurrently by this process.
    pub workers: usize,
    /// Most runs claimed in one statement.
    pub claim_batch: u32,
    /// Lease length; a worker that stops heartbeating loses its runs after this.
    pub lease_secs: u64,
    /// How often to look for due runs when nothing wakes the engine, in ms.
    pub idle_poll_ms: u64,
    /// How often to return expired leases, in seconds.
    pub reap_every_secs: u64,
    /// On shutdown, how long to wait for in-flight steps before giving up.
    pub shutdown_grace_secs: u64,
    /// This process's name in leases; default: host-pid-random.
    pub worker_id: Option<String>,
    /// Backoff and parking.
    pub retry: RetryPolicy,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: 64,
            claim_batch: 64,
            lease_secs: 30,
            idle_poll_ms: 250,
            reap_every_secs: 5,
            shutdown_grace_secs: 20,
            worker_id: None,
            retry: RetryPolicy::default(),
        }
    }
}

/// How one execution of a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Execution {
    /// Every step is done. `finished`: the run was also ended (succeeded)
    /// in the same commit as its last step (with a lease).
    Completed { finished: bool },
    /// A step failed.
    Failed { step: String, failure: Failure },
    /// Asked to stop between steps (shutdown); the journal is intact.
    Stopped,
    /// Another worker owns the run now; nothing more was written.
    LeaseLost,
}

/// The result of a dry run: the requests a replay would send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DryRunReport {
    /// Requests that would be sent, in order.
    pub requests: Vec<PlannedRequest>,
    /// Steps skipped because the journal already has them.
    pub skipped_steps: Vec<String>,
    /// The failure that stopped the dry run, if any.
    pub error: Option<Failure>,
}

struct InFlight {
    lease: Lease,
    lost: Arc<AtomicBool>,
}

struct Shared {
    store: Arc<dyn Store>,
    flows: FlowRegistry,
    config: EngineConfig,
    worker_id: String,
    wake: Arc<Notify>,
    stopping: AtomicBool,
    in_flight: Mutex<HashMap<Uuid, InFlight>>,
}

/// The engine: build with [`Engine::new`], run with [`Engine::start`].
pub struct Engine {
    shared: Arc<Shared>,
}

/// A running engine. Dropping it does not stop it; call [`EngineHandle::shutdown`].
pub struct EngineHandle {
    shared: Arc<Shared>,
    stop_tx: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Engine {
    /// An engine over a store and the flows it may run.
    pub fn new(store: Arc<dyn Store>, flows: FlowRegistry, config: EngineConfig) -> Self {
        let worker_id = config.worker_id.clone().unwrap_or_else(default_worker_id);
        Engine {
            shared: Arc::new(Shared {
                store,
                flows,
                config,
                worker_id,
                wake: Arc::new(Notify::new()),
                stopping: AtomicBool::new(false),
                in_flight: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Notify this after queuing runs so the engine claims them at once.
    pub fn waker(&self) -> Arc<Notify> {
        self.shared.wake.clone()
    }

    /// Starts the dispatcher, heartbeat, reaper and gauge tasks.
    pub fn start(self) -> EngineHandle {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(dispatch_loop(self.shared.clone(), stop_rx.clone()));
        tasks.spawn(heartbeat_loop(self.shared.clone(), stop_rx.clone()));
        tasks.spawn(reaper_loop(self.shared.clone(), stop_rx.clone()));
        tasks.spawn(gauge_loop(self.shared.clone(), stop_rx));
        tracing::info!(worker = %self.shared.worker_id, workers = self.shared.config.workers, "engine started");
        EngineHandle {
            shared: self.shared,
            stop_tx,
            tasks,
        }
    }
}

impl EngineHandle {
    /// This process's worker id.
    pub fn worker_id(&self) -> &str {
        &self.shared.worker_id
    }

    /// Runs executing right now.
    pub fn in_flight(&self) -> usize {
        lock(&self.shared.in_flight).len()
    }

    /// Stops claiming, lets each in-flight run finish its current step and
    /// release its lease (the journal keeps the progress), waits at most the
    /// grace period, then returns.
    pub async fn shutdown(mut self) {
        tracing::info!("engine stopping: no new claims, releasing in-flight runs");
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = self.stop_tx.send(true);
        let grace = Duration::from_secs(self.shared.config.shutdown_grace_secs);
        let drained = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                in_flight = lock(&self.shared.in_flight).len(),
                "shutdown grace period over; remaining leases will expire and be reaped"
            );
            self.tasks.abort_all();
        }
        tracing::info!("engine stopped");
    }
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &Uuid::new_v4().simple().to_string()[..6]
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn dispatch_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(shared.config.workers.max(1)));
    let mut runs = JoinSet::new();
    let lease_for = Duration::from_secs(shared.config.lease_secs.max(1));
    let idle = Duration::from_millis(shared.config.idle_poll_ms.max(1));
    loop {
        while runs.try_join_next().is_some() {}
        let first = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        if *stop.borrow() {
            break;
        }
        let mut held = vec![first];
        while held.len() < shared.config.claim_batch.max(1) as usize {
            match permits.clone().try_acquire_owned() {
                Ok(p) => held.push(p),
                Err(_) => break,
            }
        }
        let claimed = match shared
            .store
            .claim(&shared.worker_id, lease_for, held.len() as u32)
            .await
        {
            Ok(claimed) => claimed,
            Err(err) => {
                tracing::warn!(error = %err, "claim failed; retrying in 1 s");
                drop(held);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => break,
                }
                continue;
            }
        };
        if claimed.is_empty() {
            drop(held);
            tokio::select! {
                _ = shared.wake.notified() => {}
                _ = tokio::time::sleep(idle) => {}
                _ = stop.changed() => break,
            }
            continue;
        }
        for claim in claimed {
            let Some(permit) = held.pop() else { break };
            let lost = Arc::new(AtomicBool::new(false));
            lock(&shared.in_flight).insert(
                claim.run.id,
                InFlight {
                    lease: claim.lease.clone(),
                    lost: lost.clone(),
                },
            );
            let shared = shared.clone();
            runs.spawn(async move {
                let run_id = claim.run.id;
                process(&shared, claim, &lost).await;
                lock(&shared.in_flight).remove(&run_id);
                drop(permit);
            });
        }
    }
    // Let in-flight runs reach a step boundary and release.
    while runs.join_next().await.is_some() {}
}

async fn process(shared: &Shared, claim: ClaimedRun, lost: &AtomicBool) {
    let ClaimedRun {
        run,
        lease,
        journal,
    } = claim;
    let Some(flow) = shared.flows.get(&run.flow).cloned() else {
        let error = RunError {
            class: ErrorClass::Validation,
            message: format!(
                "no flow named {:?} is loaded (known: {})",
                run.flow,
                shared.flows.names().join(", ")
            ),
            step: None,
        };
        finish(shared, &run, &lease, RunOutcome::Parked { error }).await;
        return;
    };
    let stop = StopSignals {
        stopping: &shared.stopping,
        lost,
    };
    let execution = execute(
        shared.store.as_ref(),
        flow.as_ref(),
        &run,
        journal,
        Some(&lease),
        &stop,
    )
    .await;
    match execution {
        Execution::Completed { finished: true } => {
            metrics::counter!("lb_runs_finished_total", "flow" => run.flow.clone(), "outcome" => "succeeded")
                .increment(1);
        }
        Execution::Completed { finished: false } => {
            finish(shared, &run, &lease, RunOutcome::Succeeded).await
        }
        Execution::Stopped => {
            if let Err(err) = shared.store.release(&lease).await {
                tracing::warn!(run = %run.id, error = %err, "release failed; the lease will expire");
            }
        }
        Execution::LeaseLost => {
            tracing::warn!(run = %run.id, "lease lost; another worker owns the run now");
        }
        Execution::Failed { step, failure } => {
            let now = Utc::now();
            let decision = shared.config.retry.decide(
                &failure,
                run.attempts.max(1) as u32,
                run.first_failure_at,
                now,
                &mut rand::thread_rng(),
            );
            let error = RunError {
                class: failure.class,
                message: failure.message.clone(),
                step: Some(step.clone()),
            };
            let outcome = match decision {
                Decision::RetryAt(at) => {
                    metrics::counter!("lb_retries_total", "flow" => run.flow.clone(), "class" => failure.class.as_str()).increment(1);
                    tracing::info!(run = %run.id, flow = %run.flow, %step, class = %failure.class, retry_at = %at, "step failed; will retry: {}", failure.message);
                    RunOutcome::Retry { at, error }
                }
                Decision::Park => {
                    metrics::counter!("lb_parked_total", "flow" => run.flow.clone(), "class" => failure.class.as_str()).increment(1);
                    tracing::warn!(run = %run.id, flow = %run.flow, %step, class = %failure.class, "run parked: {}", failure.message);
                    RunOutcome::Parked { error }
                }
            };
            finish(shared, &run, &lease, outcome).await;
        }
    }
}

async fn finish(shared: &Shared, run: &Run, lease: &Lease, outcome: RunOutcome) {
    let label = match &outcome {
        RunOutcome::Succeeded => "succeeded",
        RunOutcome::Retry { .. } => "retrying",
        RunOutcome::Parked { .. } => "parked",
    };
    match shared.store.finish(lease, outcome).await {
        Ok(()) => {
            metrics::counter!("lb_runs_finished_total", "flow" => run.flow.clone(), "outcome" => label)
                .increment(1);
        }
        Err(StoreError::LeaseLost(_)) => {
            tracing::warn!(run = %run.id, "lease lost before the run could be finished");
        }
        Err(err) => {
            // The journal is committed; the lease expires and a worker resumes the run.
            tracing::warn!(run = %run.id, error = %err, "finishing the run failed; it will be resumed");
        }
    }
}

/// Why a run should stop between steps.
pub struct StopSignals<'a> {
    /// The process is shutting down.
    pub stopping: &'a AtomicBool,
    /// The lease was lost.
    pub lost: &'a AtomicBool,
}

/// Executes the steps of `run` not yet in `journal`, committing each
/// step's output before the next starts (when `lease` is given).
pub async fn execute(
    store: &dyn Store,
    flow: &dyn Flow,
    run: &Run,
    journal: Vec<StepRecord>,
    lease: Option<&Lease>,
    stop: &StopSignals<'_>,
) -> Execution {
    let mut outputs: BTreeMap<String, Value> = journal
        .into_iter()
        .map(|record| (record.step, record.output))
        .collect();
    let steps = flow.steps();
    let mut finished = false;
    for (index, &step) in steps.iter().enumerate() {
        if outputs.contains_key(step) {
            continue;
        }
        if stop.lost.load(Ordering::SeqCst) {
            return Execution::LeaseLost;
        }
        if stop.stopping.load(Ordering::SeqCst) {
            return Execution::Stopped;
        }
        let started_at = Utc::now();
        let clock = Instant::now();
        let mut ctx = StepCtx::new(run, step, &outputs, Mode::Live, store);
        let result = flow.run_step(step, &mut ctx).await;
        metrics::histogram!("lb_step_duration_seconds", "flow" => run.flow.clone(), "step" => step)
            .record(clock.elapsed().as_secs_f64());
        // One line per step, however many warnings (one per unknown
        // product line, say): the log stays readable at volume.
        if !ctx.warnings.is_empty() {
            tracing::warn!(run = %run.id, flow = %run.flow, step, warnings = ctx.warnings.len(), "{}", ctx.warnings.join("; "));
        }
        let mut output = match result {
            Ok(output) => output,
            Err(failure) => {
                // Writes the step made before it failed are known done:
                // link them now, so the retry does not have to ask.
                if lease.is_some() {
                    flush_effects(store, &mut ctx).await;
                }
                return Execution::Failed {
                    step: step.to_owned(),
                    failure,
                };
            }
        };
        if let Some(lease) = lease {
            let record = StepRecord {
                step: step.to_owned(),
                // Moved into the commit and given back by it: not copied.
                output: std::mem::take(&mut output),
                attempts: run.attempts.max(1),
                started_at,
                finished_at: Utc::now(),
            };
            // The last step ends the run in the same commit.
            let last = index + 1 == steps.len();
            // Kept in case the commit is refused: the writes are done
            // whoever owns the run now, and their links spare the new
            // owner a wait and a question to the target.
            let done = ctx.links.clone();
            let commit = StepCommit {
                record,
                links: std::mem::take(&mut ctx.links),
                audits: std::mem::take(&mut ctx.audits),
                finish: last.then_some(RunOutcome::Succeeded),
            };
            match store.commit_step(lease, commit).await {
                Ok(committed) => {
                    output = committed;
                    finished = last;
                }
                Err(StoreError::LeaseLost(_)) => {
                    link_done(store, done).await;
                    return Execution::LeaseLost;
                }
                Err(err) => {
                    link_done(store, done).await;
                    return Execution::Failed {
                        step: step.to_owned(),
                        failure: crate::flow::store_failure(err),
                    };
                }
            }
        }
        if lease.is_none() {
            flush_effects(store, &mut ctx).await;
        }
        drop(ctx);
        outputs.insert(step.to_owned(), output);
    }
    Execution::Completed { finished }
}

/// Links, outside a step commit, writes known to be done.
async fn link_done(store: &dyn Store, links: Vec<ledgerbridge_store::Link>) {
    for link in links {
        if let Err(err) = store.link_intent(&link.key, &link.external_id).await {
            tracing::warn!(key = %link.key, error = %err, "linking a completed write failed; the retry will ask the target");
        }
    }
}

/// Links and audits, outside a step commit, the writes a failed step made,
/// and settles the intents whose attempt ended without a write.
async fn flush_effects(store: &dyn Store, ctx: &mut StepCtx<'_>) {
    link_done(store, std::mem::take(&mut ctx.links)).await;
    for key in std::mem::take(&mut ctx.settled) {
        if let Err(err) = store.settle_intent(&key).await {
            tracing::warn!(%key, error = %err, "settling an intent failed; its retry waits until the attempt cannot be in flight");
        }
    }
    for entry in std::mem::take(&mut ctx.audits) {
        if let Err(err) = store.audit(entry).await {
            tracing::warn!(error = %err, "audit entry for a completed write not stored");
        }
    }
}

/// Runs a flow in dry-run mode for `run`: reads go to the targets, writes
/// are only recorded. Steps already in `journal` are skipped, exactly as a
/// replay would skip them.
pub async fn dry_run(
    store: &dyn Store,
    flow: &dyn Flow,
    run: &Run,
    journal: Vec<StepRecord>,
) -> DryRunReport {
    let mut outputs: BTreeMap<String, Value> = BTreeMap::new();
    let mut skipped_steps = Vec::new();
    for record in journal {
        skipped_steps.push(record.step.clone());
        outputs.insert(record.step, record.output);
    }
    let mut requests = Vec::new();
    for &step in flow.steps() {
        if outputs.contains_key(step) {
            continue;
        }
        let mut ctx = StepCtx::new(run, step, &outputs, Mode::DryRun, store);
        let result = flow.run_step(step, &mut ctx).await;
        requests.append(&mut ctx.planned);
        match result {
            Ok(output) => {
                outputs.insert(step.to_owned(), output);
            }
            Err(failure) => {
                return DryRunReport {
                    requests,
                    skipped_steps,
                    error: Some(failure),
                }
            }
        }
    }
    DryRunReport {
        requests,
        skipped_steps,
        error: None,
    }
}

async fn heartbeat_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let lease_for = Duration::from_secs(shared.config.lease_secs.max(1));
    let every = (lease_for / 3).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => {
                // Keep heartbeating while in-flight runs drain.
                if lock(&shared.in_flight).is_empty() { return; }
            }
        }
        let leases: Vec<Lease> = lock(&shared.in_flight)
            .values()
            .map(|f| f.lease.clone())
            .collect();
        if leases.is_empty() {
            if *stop.borrow() {
                return;
            }
            continue;
        }
        match shared.store.heartbeat(&leases, lease_for).await {
            Ok(lost) => {
                let in_flight = lock(&shared.in_flight);
                for id in lost {
                    if let Some(f) = in_flight.get(&id) {
                        f.lost.store(true, Ordering::SeqCst);
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "heartbeat failed"),
        }
    }
}

async fn reaper_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_secs(shared.config.reap_every_secs.max(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        match shared.store.reap_expired().await {
            Ok(0) => {}
            Ok(n) => {
                metrics::counter!("lb_leases_reaped_total").increment(n);
                tracing::info!(runs = n, "returned runs with expired leases to the queue");
                shared.wake.notify_one();
            }
            Err(err) => tracing::warn!(error = %err, "reaping expired leases failed"),
        }
    }
}

async fn gauge_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        match shared.store.count_by_state().await {
            Ok(counts) => {
                for (state, n) in counts {
                    metrics::gauge!("lb_runs", "state" => state.as_str()).set(n as f64);
                }
            }
            Err(err) => tracing::debug!(error = %err, "counting runs failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.changed() => return,
        }
    }
}
