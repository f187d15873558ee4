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
use std::time::Duration;

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
    ///    unknown, asks the target (`exists`) and links what it finds.
    /// 3. Otherwise records the intent (committed before the call), calls
    ///    `create`, and links the id it returns.
    ///
    /// The link (and its audit entry) is committed together with the
    /// step's journal entry; until then the intent stays pending, so a
    /// crash in between makes the retry ask the target first.
    ///
    /// `create` gets at most `deadline` (the connector's request timeout):
    /// then it is abandoned. An earlier attempt that never reported its end
    /// (its worker died, or lost its lease mid-call while another worker
    /// took the run over) may still have its request on the way for
    /// [`in_flight_window`]`(deadline)` after it began; until then this
    /// fails transiently instead of asking the target (which would not see
    /// that request yet) and creating the object a second time.
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
        let begun = self
            .store
            .begin_intent(&key, self.run.id, in_flight_window(deadline))
            .await
            .map_err(store_failure)?;
        let intent = begun.intent;
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
        // attempt (ours or a dead run's) may have reached the target.
        if !begun.inserted {
            match exists().await {
                Ok(Some(found)) => {
                    self.link(key, found.clone(), "linked_existing", planned);
                    return Ok(found);
                }
                Ok(None) => {}
                Err(failure) => return Err(self.settle(key, failure)),
            }
        }
        // The create is abandoned at the deadline (a request still waiting
        // for a slot then counts as uncertain too: it cannot be told apart
        // from one on its way), so after the deadline only the target's own
        // working time stands between us and a certain answer to "does it
        // exist?".
        let created = match tokio::time::timeout(deadline, create()).await {
            Ok(Ok(created)) => created,
            Ok(Err(failure)) if failure.outcome_uncertain => return Err(failure),
            Ok(Err(failure)) => return Err(self.settle(key, failure)),
            Err(_) => {
                return Err(Failure::transient(format!(
                    "{key}: the write took longer than {deadline:?} and was abandoned; \
                     it may still have reached the target"
                ))
                .uncertain())
            }
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

/// How long after it began a write abandoned at `deadline` may still
/// reach its target: the target may go on working on a request it
/// received for about as long as we waited for it, so twice the deadline.
pub fn in_flight_window(deadline: Duration) -> Duration {
    deadline.saturating_mul(2)
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
