//! What a flow is to the runtime: a named, versioned, ordered list of steps,
//! each a function of the run's input and the earlier steps' outputs.
//!
//! The runtime owns durability (journal, retries, leases); a flow owns only
//! the work of each step. External writes go through
//! [`StepCtx::write_once`] so that a retry after an uncertain outcome links
//! the existing object instead of creating a second one.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use ledgerbridge_core::{BusinessKey, ErrorClass, Failure};
use ledgerbridge_store::{IntentState, Link, NewAudit, Run, RunState, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A flow the runtime can execute.
#[async_trait]
pub trait Flow: Send + Sync + 'static {
    /// The flow's name, e.g. `order-to-invoice`.
    fn name(&self) -> &str;

    /// The version runs are pinned to (number + content hash).
    fn version(&self) -> &str;

    /// What starts runs of this flow.
    fn triggers(&self) -> &[Trigger] {
        &[]
    }

    /// Step names in execution order. Names are journal keys: renaming a
    /// step makes in-flight runs redo it.
    fn steps(&self) -> &[&'static str];

    /// Executes one step and returns its output, which is journaled and
    /// handed to later steps (and reused if the run resumes).
    async fn run_step(&self, step: &str, ctx: &mut StepCtx<'_>) -> Result<Value, Failure>;
}

/// What starts a run of a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    /// An OrderCloud webhook for this route template and verb, e.g.
    /// `v1/orders/{direction}/{orderID}/submit` + `POST`.
    OrderCloud { route: String, verb: String },
    /// A payment-gateway webhook of one of these event types.
    Gateway { event_types: Vec<String> },
    /// A change found by polling `source` (e.g. `kashflow:customers`) of
    /// this kind (e.g. `customer.changed`).
    Poll {
        source: String,
        #[serde(rename = "change")]
        kind: String,
    },
}

/// The facts about a received event that select flows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind<'a> {
    /// An OrderCloud webhook.
    OrderCloud { route: &'a str, verb: &'a str },
    /// A gateway webhook.
    Gateway { event_type: &'a str },
    /// A change found by a poll.
    Poll { source: &'a str, kind: &'a str },
}

impl Trigger {
    /// Whether this trigger fires for the event.
    pub fn matches(&self, event: &EventKind<'_>) -> bool {
        match (self, event) {
            (Trigger::OrderCloud { route, verb }, EventKind::OrderCloud { route: r, verb: v }) => {
                route.eq_ignore_ascii_case(r) && verb.eq_ignore_ascii_case(v)
            }
            (Trigger::Gateway { event_types }, EventKind::Gateway { event_type }) => {
                event_types.iter().any(|t| t == event_type)
            }
            (Trigger::Poll { source, kind }, EventKind::Poll { source: s, kind: k }) => {
                source == s && kind == k
            }
            _ => false,
        }
    }
}

/// A request a step would send, for dry runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedRequest {
    /// The step that would send it.
    pub step: String,
    /// HTTP method.
    pub method: String,
    /// Target URL.
    pub url: String,
    /// JSON body, if any.
    pub body: Option<Value>,
}

/// Whether external writes really happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Reads and writes go to the targets.
    Live,
    /// Reads go to the targets; writes are only recorded as
    /// [`PlannedRequest`]s and nothing is stored.
    DryRun,
}

/// Everything a step may look at or use.
pub struct StepCtx<'a> {
    /// The run being executed.
    pub run: &'a Run,
    /// The step being executed.
    pub step: &'a str,
    /// Outputs of the steps already done, by step name.
    pub outputs: &'a BTreeMap<String, Value>,
    /// Live or dry run.
    pub mode: Mode,
    /// Requests recorded in dry-run mode.
    pub planned: Vec<PlannedRequest>,
    /// Human-readable warnings the step wants recorded with its output.
    pub warnings: Vec<String>,
    /// Ledger links of the writes this step completed, committed with the
    /// step's journal entry.
    pub links: Vec<Link>,
    /// Audit entries of those writes, committed with them.
    pub audits: Vec<NewAudit>,
    /// Intents whose attempt in this step ended without a link and with
    /// no request left on its way (settled when the step fails).
    pub settled: Vec<BusinessKey>,
    store: &'a dyn Store,
}

impl<'a> StepCtx<'a> {
    /// A context for one step.
    pub fn new(
        run: &'a Run,
        step: &'a str,
        outputs: &'a BTreeMap<String, Value>,
        mode: Mode,
        store: &'a dyn Store,
    ) -> Self {
        StepCtx {
            run,
            step,
            outputs,
            mode,
            planned: Vec::new(),
            warnings: Vec::new(),
            links: Vec::new(),
            audits: Vec::new(),
            settled: Vec::new(),
            store,
        }
    }

    /// The store, for flows that keep state of their own (sync state, say).
    pub fn store(&self) -> &'a dyn Store {
        self.store
    }

    /// The run's input.
    pub fn input(&self) -> &Value {
        &self.run.input
    }

    /// The output of an earlier step; a flow bug if missing.
    pub fn output(&self, step: &str) -> Result<&Value, Failure> {
        self.outputs.get(step).ok_or_else(|| {
            Failure::new(
                ErrorClass::Unknown,
                format!(
                    "step {:?} needs the output of step {step:?}, which has not run",
                    self.step
                ),
            )
        })
    }

    /// The external id the ledger links `key` to, if the write is known
    /// done (a pending intent counts as not linked).
    pub async fn linked(&self, key: &BusinessKey) -> Result<Option<String>, Failure> {
        let intent = self.store.intent(key).await.map_err(store_failure)?;
        Ok(intent.and_then(|intent| match intent.state {
            IntentState::Linked { external_id } => Some(external_id),
            _ => None,
        }))
    }

    /// Records a planned request (dry run) — for writes that do not go
    /// through [`StepCtx::write_once`].
    pub fn plan(&mut self, method: &str, url: &str, body: Option<Value>) {
        self.planned.push(PlannedRequest {
            step: self.step.to_owned(),
            method: method.to_owned(),
            url: url.to_owned(),
            body,
        });
    }

    /// Creates the external object named by `key` at most once.
    ///
    /// 1. If the ledger links `key` to an object, returns its id: nothing is sent.
    /// 2. If an earlier attempt recorded the intent but its outcome is
    ///    unknown, or the run was claimed before (its intent may have been
    ///    lost with a failing disk), asks the target (`exists`) and links
    ///    what it finds.
    /// 3. Otherwise records the intent (committed before the call), calls
    ///    `create`, and links the id it returns.
    ///
    /// The link (and its audit entry) is committed together with the
    /// step's journal entry; until then the intent stays pending, so a
    /// crash in between makes the retry ask the target first.
    ///
    /// Each request `create` sends is answered or abandoned within
    /// `deadline` (the connector's request timeout) of its sending, and a
    /// write is sent only within [`send_margin`]`(deadline)` of the
    /// attempt's recorded start: a write that waited longer for its turn
    /// (a paced, rate-limited target) first moves the start to now
    /// ([`Store::restamp_intent`]), and is not sent if another attempt
    /// began meanwhile. So an attempt that never reported its end (its
    /// worker died, or lost its lease mid-call while another worker took
    /// the run over) may still have its request on the way for
    /// [`in_flight_window`]`(deadline)` after its recorded start; until
    /// then this fails transiently instead of asking the target (which
    /// would not see that request yet) and creating the object a second
    /// time.
    ///
    /// If another run holds a pending intent on the same key and is still
    /// running, this fails transiently rather than racing it.
    pub async fn write_once<E, EF, C, CF>(
        &mut self,
        key: BusinessKey,
        planned: PlannedRequest,
        deadline: Duration,
        exists: E,
        create: C,
    ) -> Result<String, Failure>
    where
        E: FnOnce() -> EF,
        EF: Future<Output = Result<Option<String>, Failure>>,
        C: FnOnce() -> CF,
        CF: Future<Output = Result<String, Failure>>,
    {
        if self.mode == Mode::DryRun {
            let earlier = self.store.intent(&key).await.map_err(store_failure)?;
            if let Some(intent) = &earlier {
                if let IntentState::Linked { external_id } = &intent.state {
                    return Ok(external_id.clone());
                }
                if let Some(found) = exists().await? {
                    return Ok(found);
                }
            }
            self.planned.push(planned);
            return Ok(format!("(dry-run: {key})"));
        }
        // Claim the key: insert-if-absent, answered with the intent as
        // stored. Two runs about the same object (two events for one
        // order) may race here: only one insert wins, and the loser sees
        // the winner's intent.
        // Before the store stamps the attempt: the time since is at least
        // the time since the stamp.
        let asked = Instant::now();
        let begun = self
            .store
            .begin_intent(&key, self.run.id, in_flight_window(deadline))
            .await
            .map_err(store_failure)?;
        let intent = begun.intent;
        tracing::debug!(
            %key,
            run = %self.run.id,
            inserted = begun.inserted,
            began = %intent.updated_at,
            in_flight_until = ?begun.in_flight_until,
            "intent begun"
        );
        if let IntentState::Linked { external_id } = &intent.state {
            return Ok(external_id.clone());
        }
        if let Some(until) = begun.in_flight_until {
            // Another live run is writing it (two orders of one shopper
            // creating their customer, two events for one order): it will
            // link in a moment; ask again soon, not after the window.
            if intent.run_id != self.run.id {
                let other = self.store.run(intent.run_id).await.map_err(store_failure)?;
                if other.is_some_and(|o| o.run.state == RunState::Running) {
                    return Err(Failure::transient(format!(
                        "{key} is being written by run {} right now",
                        intent.run_id
                    )));
                }
            }
            let wait = (until - Utc::now()).to_std().unwrap_or_default();
            return Err(Failure::transient(format!(
                "{key}: an earlier attempt (begun {}) did not report its end and its request \
                 may still reach the target until {until}; asking again then",
                intent.updated_at
            ))
            .with_retry_after(Some(wait.max(Duration::from_millis(100)))));
        }
        // From here this attempt owns the intent: every way out without a
        // link reports its end, unless the request may still be on its way.
        let ours = intent.run_id == self.run.id;
        if !ours {
            let other = self.store.run(intent.run_id).await;
            let other = match other {
                Ok(other) => other,
                Err(err) => return Err(self.settle(key, store_failure(err))),
            };
            if other.is_some_and(|o| o.run.state == RunState::Running) {
                let failure = Failure::transient(format!(
                    "{key} is being written by run {} right now",
                    intent.run_id
                ));
                return Err(self.settle(key, failure));
            }
        }
        // A pending intent recorded before this call means an earlier
        // attempt (ours or a dead run's) may have reached the target. So
        // may one of a run claimed before, even without an intent: a disk
        // that fails (ext4 aborting its journal) can lose the last commits
        // it acknowledged, an intent among them, after its write went out.
        if !begun.inserted || self.run.attempts > 1 {
            let found = exists().await;
            tracing::debug!(%key, found = ?found, "asked the target whether it exists");
            match found {
                Ok(Some(found)) => {
                    self.link(key, found.clone(), "linked_existing", planned);
                    return Ok(found);
                }
                Ok(None) => {}
                Err(failure) => return Err(self.settle(key, failure)),
            }
        }
        // Every write of the create goes out within the send margin of the
        // attempt's recorded start (restamped after a long wait for its
        // turn) and is answered or abandoned within the deadline after.
        let (ask, mut asks) = tokio::sync::mpsc::channel(1);
        let gate = Arc::new(AttemptGate {
            asks: ask,
            stamped: std::sync::Mutex::new(asked),
            margin: send_margin(deadline),
        });
        let mut began = intent.updated_at;
        // A write the gate refused was not sent, but the attempt it belongs
        // to is no longer the current one: its end is not ours to report.
        let mut refused = false;
        let create = ledgerbridge_connectors::delivery::with_send_gate(gate, create());
        tokio::pin!(create);
        let created = loop {
            tokio::select! {
                biased;
                done = &mut create => break done,
                Some(reply) = asks.recv() => {
                    let answer = match self.store.restamp_intent(&key, began).await {
                        Ok(Some(now)) => {
                            began = now;
                            Ok(())
                        }
                        Ok(None) => {
                            refused = true;
                            Err(Failure::transient(format!(
                                "{key}: not sent: another attempt on it began (or it was \
                                 linked) while this one waited for its turn"
                            )))
                        }
                        Err(err) => {
                            refused = true;
                            Err(Failure::transient(format!(
                                "{key}: not sent: the time of sending could not be \
                                 recorded: {err}"
                            )))
                        }
                    };
                    let _ = reply.send(answer);
                }
            }
        };
        let created = match created {
            Ok(created) => created,
            Err(failure) if failure.outcome_uncertain || refused => return Err(failure),
            Err(failure) => return Err(self.settle(key, failure)),
        };
        self.link(key, created.clone(), "created", planned);
        Ok(created)
    }

    /// Notes that this step's attempt on `key` ended without a link and
    /// without a request left on its way: the runtime settles the intent
    /// when the step fails, so the retry need not wait. Returns `failure`.
    fn settle(&mut self, key: BusinessKey, failure: Failure) -> Failure {
        self.settled.push(key);
        failure
    }

    /// Queues the link and its audit entry for the step's commit.
    /// The planned request moves into the audit entry: its body (an
    /// invoice with all its lines) is not copied.
    fn link(&mut self, key: BusinessKey, external_id: String, how: &str, planned: PlannedRequest) {
        let mut request = serde_json::Map::with_capacity(3);
        request.insert("method".to_owned(), Value::String(planned.method));
        request.insert("url".to_owned(), Value::String(planned.url));
        request.insert("body".to_owned(), planned.body.unwrap_or(Value::Null));
        let mut detail = serde_json::Map::with_capacity(3);
        detail.insert("key".to_owned(), Value::String(key.to_string()));
        detail.insert("external_id".to_owned(), Value::String(external_id.clone()));
        detail.insert("request".to_owned(), Value::Object(request));
        self.audits.push(NewAudit {
            run_id: Some(self.run.id),
            event_id: self.run.event_id,
            flow_version: Some(self.run.flow_version.clone()),
            action: format!("{}.{how}", key.kind),
            detail: Value::Object(detail),
        });
        self.links.push(Link { key, external_id });
    }
}

/// How long after an attempt's recorded start its writes may still be
/// sent without recording the start again: a tenth of the deadline.
pub fn send_margin(deadline: Duration) -> Duration {
    deadline / 10
}

/// How long after its recorded start an attempt's write may still reach
/// the target: sent within [`send_margin`], abandoned `deadline` after
/// sending, and the target may go on working on a request it received
/// for about as long as we waited for it.
pub fn in_flight_window(deadline: Duration) -> Duration {
    deadline
        .saturating_mul(2)
        .saturating_add(send_margin(deadline))
}

/// One answer of [`StepCtx::write_once`] to a gate's ask: may the write
/// be sent (its attempt's start moved to now)?
type SendAsk = tokio::sync::oneshot::Sender<Result<(), Failure>>;

/// The transport's gate inside one attempt of [`StepCtx::write_once`]:
/// a write that got its turn late asks `write_once` (which holds the
/// store) to record a new start before it is sent.
struct AttemptGate {
    asks: tokio::sync::mpsc::Sender<SendAsk>,
    /// A local instant no later than the attempt's recorded start.
    stamped: std::sync::Mutex<Instant>,
    margin: Duration,
}

impl ledgerbridge_connectors::delivery::SendGate for AttemptGate {
    fn before_write(
        &self,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), Failure>> + Send + '_>> {
        Box::pin(async move {
            let stamped = *self.stamped.lock().unwrap_or_else(|p| p.into_inner());
            if stamped.elapsed() <= self.margin {
                return Ok(());
            }
            let asking = Instant::now();
            let gone = || Failure::transient("not sent: the write's attempt has ended");
            let (reply, answer) = tokio::sync::oneshot::channel();
            self.asks.send(reply).await.map_err(|_| gone())?;
            answer.await.map_err(|_| gone())??;
            *self.stamped.lock().unwrap_or_else(|p| p.into_inner()) = asking;
            Ok(())
        })
    }
}

/// A store failure seen by a step: retry later (the store may come back).
pub fn store_failure(err: StoreError) -> Failure {
    Failure::transient(format!("store: {err}"))
}

/// The flows an engine can run, by name.
#[derive(Clone, Default)]
pub struct FlowRegistry {
    flows: HashMap<String, Arc<dyn Flow>>,
}

impl FlowRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a flow.
    pub fn register(&mut self, flow: Arc<dyn Flow>) {
        self.flows.insert(flow.name().to_owned(), flow);
    }

    /// The flow of that name.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Flow>> {
        self.flows.get(name)
    }

    /// The flows an event starts, sorted by name.
    pub fn triggered_by(&self, event: &EventKind<'_>) -> Vec<&Arc<dyn Flow>> {
        let mut flows: Vec<&Arc<dyn Flow>> = self
            .flows
            .values()
            .filter(|flow| flow.triggers().iter().any(|t| t.matches(event)))
            .collect();
        flows.sort_by(|a, b| a.name().cmp(b.name()));
        flows
    }

    /// All flow names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.flows.keys().cloned().collect();
        names.sort();
        names
    }
}

impl std::fmt::Debug for FlowRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowRegistry")
            .field("flows", &self.names())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerbridge_connectors::delivery::before_write;
    use ledgerbridge_store::sqlite::SqliteStore;
    use uuid::Uuid;

    /// The connection's request timeout in these tests.
    const DEADLINE: Duration = Duration::from_millis(300);

    fn run() -> Run {
        let now = Utc::now();
        Run {
            id: Uuid::new_v4(),
            event_id: None,
            flow: "test".to_owned(),
            flow_version: "1".to_owned(),
            state: RunState::Running,
            input: Value::Null,
            attempts: 1,
            created_at: now,
            updated_at: now,
            next_attempt_at: now,
            first_failure_at: None,
            last_error: None,
            lease_owner: None,
            lease_expires_at: None,
        }
    }

    fn planned() -> PlannedRequest {
        PlannedRequest {
            step: "create".to_owned(),
            method: "POST".to_owned(),
            url: "http://kashflow.test/v2/customers".to_owned(),
            body: None,
        }
    }

    fn window() -> chrono::TimeDelta {
        chrono::TimeDelta::from_std(in_flight_window(DEADLINE)).unwrap()
    }

    /// A create that waits for its turn (a paced, rate-limited target)
    /// longer than its deadline is neither abandoned nor left counting its
    /// in-flight window from its start: just before its write is sent, the
    /// attempt's start moves to now, and another run meeting the attempt
    /// waits the whole window from the sending.
    #[tokio::test]
    async fn a_write_that_waited_for_its_turn_counts_its_window_from_its_sending() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let run = run();
        let outputs = BTreeMap::new();
        let mut ctx = StepCtx::new(&run, "create", &outputs, Mode::Live, &store);
        let key = BusinessKey::new("kashflow:main", "customer", "code:PACED");
        let waited_until = std::sync::Mutex::new(None);
        let created = ctx
            .write_once(
                key.clone(),
                planned(),
                DEADLINE,
                || async { Ok(None) },
                || async {
                    // Waiting for a slot, as the transport does under pacing.
                    tokio::time::sleep(DEADLINE * 2).await;
                    *waited_until.lock().unwrap() = Some(Utc::now());
                    before_write().await?;
                    Ok("CUST-PACED".to_owned())
                },
            )
            .await
            .expect("a write waiting for its turn is not abandoned");
        assert_eq!(created, "CUST-PACED");
        let intent = store.intent(&key).await.unwrap().unwrap();
        let waited_until = waited_until.lock().unwrap().unwrap();
        assert!(
            intent.updated_at >= waited_until,
            "the attempt's start ({}) moved to its sending (after {waited_until})",
            intent.updated_at
        );
        let other = store
            .begin_intent(&key, Uuid::new_v4(), in_flight_window(DEADLINE))
            .await
            .unwrap();
        assert_eq!(other.in_flight_until, Some(intent.updated_at + window()));
    }

    /// A write whose attempt was superseded while it waited for its turn
    /// (its lease lost, the run taken over, a new attempt begun after the
    /// window) is not sent, and the new attempt is not reported ended.
    #[tokio::test]
    async fn a_write_whose_attempt_was_taken_over_while_it_waited_is_not_sent() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let run = run();
        let outputs = BTreeMap::new();
        let mut ctx = StepCtx::new(&run, "create", &outputs, Mode::Live, &store);
        let key = BusinessKey::new("kashflow:main", "customer", "code:TAKEN");
        let sent = std::sync::atomic::AtomicBool::new(false);
        let taken_over = std::sync::Mutex::new(None);
        let failure = ctx
            .write_once(
                key.clone(),
                planned(),
                DEADLINE,
                || async { Ok(None) },
                || async {
                    tokio::time::sleep(DEADLINE * 2).await;
                    // Meanwhile the run was taken over and its new worker
                    // began another attempt.
                    let begun = store
                        .begin_intent(&key, run.id, Duration::ZERO)
                        .await
                        .unwrap();
                    *taken_over.lock().unwrap() = Some(begun.intent.updated_at);
                    before_write().await?;
                    sent.store(true, std::sync::atomic::Ordering::SeqCst);
                    Ok("CUST-TAKEN".to_owned())
                },
            )
            .await
            .expect_err("the superseded attempt must not send");
        assert!(!sent.load(std::sync::atomic::Ordering::SeqCst));
        assert!(failure.message.contains("not sent"), "{failure}");
        assert!(
            ctx.settled.is_empty(),
            "the new attempt's end is not this one's to report"
        );
        let intent = store.intent(&key).await.unwrap().unwrap();
        assert_eq!(Some(intent.updated_at), *taken_over.lock().unwrap());
        let blocked = store
            .begin_intent(&key, Uuid::new_v4(), in_flight_window(DEADLINE))
            .await
            .unwrap();
        assert!(
            blocked.in_flight_until.is_some(),
            "the new attempt still counts as in flight"
        );
    }

    /// The read-only disk test's doubled invoice: ext4, aborting its journal
    /// after an error, lost the last commits SQLite had been told were on
    /// disk, the invoice's intent among them, after the invoice POST went
    /// out. The run, claimed again, found no intent. A run claimed before
    /// asks the target even then, and links the invoice it finds.
    #[tokio::test]
    async fn a_resumed_run_whose_intent_the_disk_lost_finds_its_invoice_instead_of_creating_another(
    ) {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let mut run = run();
        run.attempts = 2;
        let outputs = BTreeMap::new();
        let mut ctx = StepCtx::new(&run, "invoice", &outputs, Mode::Live, &store);
        let key = BusinessKey::new("kashflow:main", "invoice", "order:SO-LOST");
        assert_eq!(
            store.intent(&key).await.unwrap(),
            None,
            "no intent on record"
        );
        let created = std::sync::atomic::AtomicBool::new(false);
        let number = ctx
            .write_once(
                key.clone(),
                planned(),
                DEADLINE,
                || async { Ok(Some("8".to_owned())) },
                || async {
                    created.store(true, std::sync::atomic::Ordering::SeqCst);
                    Ok("29".to_owned())
                },
            )
            .await
            .unwrap();
        assert_eq!(number, "8", "the invoice already at KashFlow is linked");
        assert!(!created.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(ctx.links.len(), 1);

        // A run on its first claim has nothing to find and does not ask.
        let first = self::run();
        let mut ctx = StepCtx::new(&first, "invoice", &outputs, Mode::Live, &store);
        let asked = std::sync::atomic::AtomicBool::new(false);
        let number = ctx
            .write_once(
                BusinessKey::new("kashflow:main", "invoice", "order:SO-NEW"),
                planned(),
                DEADLINE,
                || async {
                    asked.store(true, std::sync::atomic::Ordering::SeqCst);
                    Ok(None)
                },
                || async { Ok("30".to_owned()) },
            )
            .await
            .unwrap();
        assert_eq!(number, "30");
        assert!(!asked.load(std::sync::atomic::Ordering::SeqCst));
    }

    /// A write sent soon after its attempt began records nothing more.
    #[tokio::test]
    async fn a_write_sent_at_once_keeps_its_start() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let run = run();
        let outputs = BTreeMap::new();
        let mut ctx = StepCtx::new(&run, "create", &outputs, Mode::Live, &store);
        let key = BusinessKey::new("kashflow:main", "customer", "code:PROMPT");
        let began = std::sync::Mutex::new(None);
        ctx.write_once(
            key.clone(),
            planned(),
            Duration::from_secs(30),
            || async { Ok(None) },
            || async {
                *began.lock().unwrap() = store.intent(&key).await.unwrap().map(|i| i.updated_at);
                before_write().await?;
                Ok("CUST-PROMPT".to_owned())
            },
        )
        .await
        .unwrap();
        let intent = store.intent(&key).await.unwrap().unwrap();
        assert_eq!(Some(intent.updated_at), *began.lock().unwrap());
    }
}
