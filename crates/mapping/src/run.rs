//! The offline interpreter: runs a loaded flow's graph on an input with a
//! [`Connector`] that answers calls. `ledgerbridge test` and `dry-run` use
//! a recording fake (canned responses, nothing sent); the requests the flow
//! would send are recorded and compared or printed.
//!
//! The programs see one object: `.input` (the trigger's payload), `.vars`,
//! `.steps.<id>` (each finished step's output: a map's value, a call's
//! response body) and, inside a map's `each`, `.item` and `.index`.

use std::collections::BTreeMap;

use ledgerbridge_core::flow::{ExpectedStatus, FlowTest, OnFailure};
use serde_json::Value as Json;
use vrl::compiler::runtime::{Runtime, Terminate};
use vrl::compiler::state::RuntimeState;
use vrl::compiler::{TargetValueRef, TimeZone};
use vrl::value::{ObjectMap, Secrets, Value};

use crate::load::{Compiled, CompiledCall, CompiledKind, LoadedFlow};

/// VRL's value types, for callers that prepare run data themselves.
pub mod vrl_value {
    pub use vrl::value::{ObjectMap, Value};
}

/// A request a step sends (or would send).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Request {
    /// The step.
    pub step: String,
    /// The connection alias.
    pub connection: String,
    /// HTTP method.
    pub method: String,
    /// Path under the connection's base URL.
    pub path: String,
    /// JSON body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Json>,
    /// Business key of an action (effectively-once writes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A connection's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Json,
}

/// Answers the calls of a run.
pub trait Connector {
    /// Sends (or records) a request.
    fn call(&mut self, request: &Request) -> Response;
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every step done.
    Completed,
    /// Parked for a human.
    Parked,
    /// Failed for good.
    Failed,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Outcome {
    /// How it ended.
    pub status: Status,
    /// The version it ran under.
    pub flow_version: String,
    /// The steps, in the order they ran.
    pub trace: Vec<String>,
    /// Requests sent, in order.
    pub requests: Vec<Request>,
    /// Outputs by step id.
    pub outputs: BTreeMap<String, Json>,
    /// Failures (the last one ended the run unless it was skipped).
    pub errors: Vec<String>,
}

/// Reusable run state (the VRL runtime), so a hot loop allocates little.
#[derive(Debug, Default)]
pub struct Runner {
    runtime: Option<Runtime>,
}

impl Runner {
    /// A fresh runner.
    pub fn new() -> Self {
        Runner {
            runtime: Some(Runtime::new(RuntimeState::default())),
        }
    }

    /// Runs a program against the run's data.
    pub fn eval(&mut self, compiled: &Compiled, data: &mut Value) -> Result<Value, String> {
        let runtime = self
            .runtime
            .get_or_insert_with(|| Runtime::new(RuntimeState::default()));
        runtime.clear();
        let mut metadata = Value::Object(ObjectMap::new());
        let mut secrets = Secrets::default();
        let mut target = TargetValueRef {
            value: data,
            metadata: &mut metadata,
            secrets: &mut secrets,
        };
        runtime
            .resolve(&mut target, &compiled.program, &TimeZone::default())
            .map_err(|terminate| {
                let message = match terminate {
                    Terminate::Abort(e) | Terminate::Error(e) => e.to_string(),
                    other => other.to_string(),
                };
                format!("{}: {}", compiled.path, compiled.place(&message))
            })
    }

    /// Runs a map step (once, or per element of `each`).
    pub fn map(
        &mut self,
        each: Option<&Compiled>,
        program: &Compiled,
        data: &mut Value,
    ) -> Result<Value, String> {
        let Some(each) = each else {
            return self.eval(program, data);
        };
        let items = match self.eval(each, data)? {
            Value::Array(items) => items,
            Value::Null => Vec::new(),
            other => {
                return Err(format!(
                    "{}: gives {}, not an array",
                    each.path,
                    crate::money::describe(&other)
                ))
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for (index, item) in items.into_iter().enumerate() {
            set(data, "item", item);
            set(data, "index", Value::Integer(index as i64));
            out.push(self.eval(program, data)?);
        }
        remove(data, "item");
        remove(data, "index");
        Ok(Value::Array(out))
    }
}

fn set(data: &mut Value, key: &str, value: Value) {
    if let Value::Object(map) = data {
        map.insert(key.into(), value);
    }
}

fn remove(data: &mut Value, key: &str) {
    if let Value::Object(map) = data {
        map.remove(key);
    }
}

fn set_output(data: &mut Value, step: &str, value: Value) {
    if let Value::Object(map) = data {
        let steps = map
            .entry("steps".into())
            .or_insert_with(|| Value::Object(ObjectMap::new()));
        if let Value::Object(steps) = steps {
            steps.insert(step.into(), value);
        }
    }
}

/// A VRL value as JSON (timestamps as RFC 3339, bytes as UTF-8).
pub fn to_json(value: Value) -> Json {
    value.try_into().unwrap_or(Json::Null)
}

/// The run's data object from its input and variables.
pub fn initial_data(flow: &LoadedFlow, input: &Json, vars: &BTreeMap<String, Json>) -> Value {
    let mut merged = flow.flow.vars.clone();
    for (k, v) in vars {
        merged.insert(k.clone(), v.clone());
    }
    let mut map = ObjectMap::new();
    map.insert("input".into(), Value::from(input.clone()));
    map.insert(
        "vars".into(),
        Value::from(serde_json::to_value(merged).unwrap_or(Json::Null)),
    );
    map.insert("steps".into(), Value::Object(ObjectMap::new()));
    Value::Object(map)
}

fn build_request(
    runner: &mut Runner,
    step: &str,
    call: &CompiledCall,
    data: &mut Value,
) -> Result<Request, String> {
    let path = match runner.eval(&call.path, data)? {
        Value::Bytes(_) | Value::String(_) => to_json(runner.eval(&call.path, data)?)
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        other => {
            return Err(format!(
                "{}: gives {}, not a string",
                call.path.path,
                crate::money::describe(&other)
            ))
        }
    };
    let body = match &call.body {
        Some(body) => Some(to_json(runner.eval(body, data)?)),
        None => None,
    };
    let key = match &call.key {
        Some(key) => Some(match to_json(runner.eval(key, data)?) {
            Json::String(s) => s,
            other => other.to_string(),
        }),
        None => None,
    };
    Ok(Request {
        step: step.to_owned(),
        connection: call.call.connection.clone(),
        method: call.call.method.as_str().to_owned(),
        path,
        body,
        key,
    })
}

/// Runs the flow's graph from its first step.
pub fn run(
    flow: &LoadedFlow,
    input: &Json,
    vars: &BTreeMap<String, Json>,
    connector: &mut dyn Connector,
) -> Outcome {
    let mut runner = Runner::new();
    let mut data = initial_data(flow, input, vars);
    let mut outcome = Outcome {
        status: Status::Completed,
        flow_version: flow.version.to_string(),
        trace: Vec::new(),
        requests: Vec::new(),
        outputs: BTreeMap::new(),
        errors: Vec::new(),
    };
    let mut current = (!flow.steps.is_empty()).then_some(0);
    // The graph has no cycles (checked at load), so this ends; the bound is
    // a second guard.
    let mut budget = flow.steps.len() + 1;
    while let Some(index) = current {
        if budget == 0 {
            break;
        }
        budget -= 1;
        let step = &flow.steps[index];
        outcome.trace.push(step.id.clone());
        let result: Result<(Value, Option<usize>), String> = match &step.kind {
            CompiledKind::Map { each, program } => runner
                .map(each.as_ref(), program, &mut data)
                .map(|v| (v, step.next)),
            CompiledKind::Condition { when, then } => match runner.eval(when, &mut data) {
                Ok(Value::Boolean(true)) => Ok((Value::Boolean(true), *then)),
                Ok(Value::Boolean(false)) => Ok((Value::Boolean(false), step.next)),
                Ok(other) => Err(format!(
                    "{}: gives {}, not a boolean",
                    when.path,
                    crate::money::describe(&other)
                )),
                Err(e) => Err(e),
            },
            CompiledKind::Fetch(call)
            | CompiledKind::Action(call)
            | CompiledKind::WriteBack(call) => {
                match build_request(&mut runner, &step.id, call, &mut data) {
                    Ok(request) => {
                        let response = connector.call(&request);
                        outcome.requests.push(request);
                        if response.status >= 400 {
                            let kind = if response.status >= 500 || response.status == 429 {
                                "transient"
                            } else {
                                "validation"
                            };
                            Err(format!(
                                "{}: {kind} failure, status {}: {}",
                                step.id, response.status, response.body
                            ))
                        } else {
                            Ok((Value::from(response.body), step.next))
                        }
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok((value, next)) => {
                outcome
                    .outputs
                    .insert(step.id.clone(), to_json(value.clone()));
                set_output(&mut data, &step.id, value);
                current = next;
            }
            Err(message) => {
                outcome.errors.push(message);
                match step.on_error.then {
                    OnFailure::Skip => {
                        outcome.outputs.insert(step.id.clone(), Json::Null);
                        set_output(&mut data, &step.id, Value::Null);
                        current = step.next;
                    }
                    OnFailure::Park => {
                        outcome.status = Status::Parked;
                        return outcome;
                    }
                    OnFailure::Fail => {
                        outcome.status = Status::Failed;
                        return outcome;
                    }
                }
            }
        }
    }
    outcome
}

/// A connector that sends nothing: it records requests and answers with
/// canned responses by step id (`200 {}` by default).
#[derive(Debug, Default)]
pub struct RecordingConnector {
    /// Responses by step id.
    pub responses: BTreeMap<String, Response>,
}

impl Connector for RecordingConnector {
    fn call(&mut self, request: &Request) -> Response {
        self.responses
            .get(&request.step)
            .cloned()
            .unwrap_or(Response {
                status: 200,
                body: Json::Object(Default::default()),
            })
    }
}

/// The result of one flow test.
#[derive(Debug, Clone)]
pub struct TestResult {
    /// The test's name.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// Why not.
    pub failures: Vec<String>,
    /// What the run did.
    pub outcome: Outcome,
}

/// Runs one of the flow's tests offline.
pub fn run_test(flow: &LoadedFlow, test: &FlowTest) -> TestResult {
    let mut connector = RecordingConnector {
        responses: test
            .responses
            .iter()
            .map(|(step, r)| {
                (
                    step.clone(),
                    Response {
                        status: r.status,
                        body: r.body.clone(),
                    },
                )
            })
            .collect(),
    };
    let outcome = run(flow, &test.input, &test.vars, &mut connector);
    let mut failures = Vec::new();
    let expected_status = match test.expect.status {
        ExpectedStatus::Completed => Status::Completed,
        ExpectedStatus::Parked => Status::Parked,
        ExpectedStatus::Failed => Status::Failed,
    };
    if outcome.status != expected_status {
        failures.push(format!(
            "status: expected {expected_status:?}, got {:?}{}",
            outcome.status,
            outcome
                .errors
                .last()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
    }
    if let Some(needle) = &test.expect.error_contains {
        if !outcome.errors.iter().any(|e| e.contains(needle.as_str())) {
            failures.push(format!(
                "no error contains {needle:?}; errors: {:?}",
                outcome.errors
            ));
        }
    }
    if let Some(expected) = &test.expect.requests {
        if expected.len() != outcome.requests.len() {
            failures.push(format!(
                "requests: expected {} ({}), got {} ({})",
                expected.len(),
                expected
                    .iter()
                    .map(|r| r.step.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                outcome.requests.len(),
                outcome
                    .requests
                    .iter()
                    .map(|r| r.step.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for (want, got) in expected.iter().zip(&outcome.requests) {
            let at = format!("request of step {}", want.step);
            if want.step != got.step || want.method.as_str() != got.method || want.path != got.path
            {
                failures.push(format!(
                    "{at}: expected {} {} (step {}), got {} {} (step {})",
                    want.method.as_str(),
                    want.path,
                    want.step,
                    got.method,
                    got.path,
                    got.step
                ));
            }
            if let Some(body) = &want.body {
                let got_body = got.body.clone().unwrap_or(Json::Null);
                diff_json(&format!("{at}: body"), body, &got_body, &mut failures);
            }
        }
    }
    for (step, want) in &test.expect.outputs {
        let got = outcome.outputs.get(step).cloned().unwrap_or(Json::Null);
        diff_json(&format!("output of {step}"), want, &got, &mut failures);
    }
    TestResult {
        name: test.name.clone(),
        passed: failures.is_empty(),
        failures,
        outcome,
    }
}

/// Compares two JSON values, numbers by decimal value (`5`, `5.0`, `5.00`
/// are equal); records each difference with its JSON path.
pub fn diff_json(path: &str, want: &Json, got: &Json, out: &mut Vec<String>) {
    match (want, got) {
        (Json::Number(a), Json::Number(b)) => {
            let parse = |n: &serde_json::Number| {
                n.to_string()
                    .parse::<rust_decimal::Decimal>()
                    .ok()
                    .or_else(|| rust_decimal::Decimal::from_scientific(&n.to_string()).ok())
            };
            if parse(a) != parse(b) || parse(a).is_none() {
                out.push(format!("{path}: expected {a}, got {b}"));
            }
        }
        (Json::Object(a), Json::Object(b)) => {
            for (key, value) in a {
                match b.get(key) {
                    Some(other) => diff_json(&format!("{path}.{key}"), value, other, out),
                    None => out.push(format!("{path}.{key}: expected {value}, missing")),
                }
            }
            for (key, value) in b {
                if !a.contains_key(key) {
                    out.push(format!("{path}.{key}: not expected, got {value}"));
                }
            }
        }
        (Json::Array(a), Json::Array(b)) => {
            if a.len() != b.len() {
                out.push(format!(
                    "{path}: expected {} items, got {}",
                    a.len(),
                    b.len()
                ));
            }
            for (index, (x, y)) in a.iter().zip(b).enumerate() {
                diff_json(&format!("{path}[{index}]"), x, y, out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path}: expected {a}, got {b}")),
    }
}

/// Runs some map steps of a flow, in the order given, on data that other
/// code fetched (`fetched`: step id → that step's output), and gives the
/// last step's output. This is how a Rust flow borrows a flow file's
/// mapping: it does the I/O, the file does the mapping.
pub fn run_maps(
    flow: &LoadedFlow,
    step_ids: &[&str],
    input: &Json,
    fetched: &BTreeMap<String, Json>,
) -> Result<Json, String> {
    let mut runner = Runner::new();
    let mut data = initial_data(flow, input, &BTreeMap::new());
    for (step, output) in fetched {
        set_output(&mut data, step, Value::from(output.clone()));
    }
    let mut last = Value::Null;
    for id in step_ids {
        let step = flow
            .steps
            .iter()
            .find(|s| s.id == *id)
            .ok_or_else(|| format!("flow {} has no step {id:?}", flow.flow.name))?;
        let CompiledKind::Map { each, program } = &step.kind else {
            return Err(format!(
                "step {id:?} of flow {} is not a map step",
                flow.flow.name
            ));
        };
        last = runner.map(each.as_ref(), program, &mut data)?;
        set_output(&mut data, id, last.clone());
    }
    Ok(to_json(last))
}
