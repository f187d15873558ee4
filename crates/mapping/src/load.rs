//! Loading a flow file: YAML → the model (unknown keys rejected with their
//! path), then checks (step graph, connections, tables) and every VRL
//! program compiled once. Every problem is a [`FlowError`] naming file,
//! line, column and key path, and saying what to do.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ledgerbridge_core::flow::{Call, ErrorPolicy, FlowFile, StepKind, FORMAT_VERSION};
use sha2::{Digest, Sha256};
use vrl::compiler::{Function, Program};

use crate::functions;
use crate::tables::Finance;

/// Systems a connection may name (`kashflow:main`).
pub const SYSTEMS: &[&str] = &["kashflow", "ordercloud", "xconnect", "gateway"];

/// The step id that stops a run.
pub const END: &str = "end";

/// A mistake in a flow file.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// Key path, e.g. `steps[3].next`.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub help: String,
    /// The VRL compiler's report with the source span, for program errors.
    pub report: Option<String>,
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}:{}", self.column.unwrap_or(1))?;
        }
        let path = if self.path.is_empty() || self.path == "." {
            "(top)"
        } else {
            &self.path
        };
        write!(f, ": {path}: {}", self.message)?;
        if let Some(report) = &self.report {
            for line in report.trim_end().lines() {
                write!(f, "\n    {}", line.trim_end())?;
            }
        }
        if !self.help.is_empty() {
            write!(f, "\n  help: {}", self.help)?;
        }
        Ok(())
    }
}

/// A flow's version: a number (1, 2, … per content change in a registry;
/// 0 when loaded outside one) and the first 12 hex digits of the SHA-256 of
/// the file's bytes. Written `N+hash`, e.g. `3+5d41402abc4b`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowVersion {
    /// Sequence number; 0 when not registered.
    pub number: u32,
    /// Content hash prefix.
    pub hash: String,
}

impl fmt::Display for FlowVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{}", self.number, self.hash)
    }
}

/// The content hash of a flow file's bytes (12 hex digits).
pub fn content_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A compiled program with its source, for error reports.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// Where the program is (`steps[2].map.program`).
    pub path: String,
    /// The compiled program.
    pub program: Program,
    /// Its source, to place runtime errors.
    pub source: String,
}

impl Compiled {
    /// Rewrites VRL's byte spans in a runtime message (`function call
    /// error for "money" at (829:934)`) as positions in the program (`at
    /// line 12, column 7 of the program`). Only a span right after a quoted
    /// function name is VRL's; the same text inside data in the message
    /// (an amount, an order field) is left alone.
    pub fn place(&self, message: &str) -> String {
        let mut out = String::with_capacity(message.len());
        let mut rest = message;
        while let Some(at) = rest.find(" at (") {
            let after_name = rest[..at].ends_with('"');
            out.push_str(&rest[..at]);
            let after = &rest[at + 5..];
            let span = after.split_once(')').and_then(|(inside, tail)| {
                let (start, _) = inside.split_once(':')?;
                Some((start.parse::<usize>().ok()?, tail))
            });
            match span {
                Some((start, tail))
                    if after_name
                        && start <= self.source.len()
                        && self.source.is_char_boundary(start) =>
                {
                    let (line, column) = line_column(&self.source, start);
                    out.push_str(&format!(" at line {line}, column {column} of the program"));
                    rest = tail;
                }
                _ => {
                    out.push_str(" at (");
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// How a step's call is compiled.
#[derive(Debug, Clone)]
pub struct CompiledCall {
    /// The call as written.
    pub call: Call,
    /// The path program.
    pub path: Compiled,
    /// The body program.
    pub body: Option<Compiled>,
    /// The business-key program.
    pub key: Option<Compiled>,
}

/// A step ready to run.
#[derive(Debug, Clone)]
pub enum CompiledKind {
    /// Read from a connection.
    Fetch(CompiledCall),
    /// Map with a program, once or per element.
    Map {
        /// The per-element array program.
        each: Option<Compiled>,
        /// The mapping.
        program: Compiled,
    },
    /// Branch.
    Condition {
        /// The boolean program.
        when: Compiled,
        /// Step index when true (`None` = end).
        then: Option<usize>,
    },
    /// Write to a target.
    Action(CompiledCall),
    /// Confirm to the source.
    WriteBack(CompiledCall),
}

/// A step ready to run.
#[derive(Debug, Clone)]
pub struct CompiledStep {
    /// Its id.
    pub id: String,
    /// What it does.
    pub kind: CompiledKind,
    /// Index of the step after it (for a condition: when false); `None` = end.
    pub next: Option<usize>,
    /// Its error policy (the flow's unless overridden).
    pub on_error: ErrorPolicy,
}

/// A loaded, checked and compiled flow.
#[derive(Debug, Clone)]
pub struct LoadedFlow {
    /// The file it came from.
    pub file: PathBuf,
    /// The model.
    pub flow: FlowFile,
    /// Its version.
    pub version: FlowVersion,
    /// The steps, in file order; the first runs first.
    pub steps: Vec<CompiledStep>,
    /// The finance tables the functions read.
    pub finance: Arc<Finance>,
    /// The file's text.
    pub source: String,
}

/// Reads, checks and compiles a flow file.
pub fn load_file(path: &Path) -> Result<LoadedFlow, Vec<FlowError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![FlowError {
            file: path.to_owned(),
            line: None,
            column: None,
            path: String::new(),
            message: format!("cannot read the file: {e}"),
            help: "check the path".to_owned(),
            report: None,
        }]
    })?;
    load_str(path, &text)
}

/// Checks and compiles a flow from its text; `path` names it in errors and
/// anchors `tables.fx.file`.
pub fn load_str(path: &Path, text: &str) -> Result<LoadedFlow, Vec<FlowError>> {
    let flow = parse(path, text).map_err(|e| vec![*e])?;
    let mut errors = Vec::new();
    let mut at = Locator {
        file: path,
        text,
        errors: &mut errors,
        value_maps: flow.tables.value_maps.keys().cloned().collect(),
    };

    if flow.version != FORMAT_VERSION {
        at.error(
            &["version:"],
            "version",
            format!("format version {} is not known", flow.version),
            format!("write `version: {FORMAT_VERSION}`; this build reads format {FORMAT_VERSION}"),
        );
    }
    for (alias, target) in &flow.connections {
        let system = target.split(':').next().unwrap_or_default();
        if !SYSTEMS.contains(&system) {
            at.error(
                &["connections:", &format!("{alias}:")],
                &format!("connections.{alias}"),
                format!("{target:?} names no known system"),
                format!(
                    "write SYSTEM:NAME with SYSTEM one of {}",
                    SYSTEMS.join(", ")
                ),
            );
        }
    }
    if let ledgerbridge_core::flow::Trigger::Webhook { connection, .. }
    | ledgerbridge_core::flow::Trigger::Poll { connection, .. } = &flow.trigger
    {
        if !flow.connections.contains_key(connection) {
            at.error(
                &["trigger:", "connection:"],
                "trigger.connection",
                format!("connection {connection:?} is not declared"),
                known_help(
                    "declare it under `connections:` or use",
                    flow.connections.keys(),
                ),
            );
        }
    }

    let dir = path.parent().unwrap_or(Path::new("."));
    let finance = match Finance::new(&flow.tables, dir) {
        Ok(finance) => Arc::new(finance),
        Err(e) => {
            let key = e.path.rsplit('.').next().unwrap_or_default().to_owned();
            at.error(
                &["tables:", &format!("{key}:")],
                &e.path,
                e.message.clone(),
                "fix the table; see the README's Flows section".to_owned(),
            );
            Arc::new(Finance::default())
        }
    };
    let fns = functions::all(finance.clone());

    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, step) in flow.steps.iter().enumerate() {
        if step.id == END {
            at.error(
                &[&format!("id: {}", step.id)],
                &format!("steps[{i}].id"),
                "`end` is reserved".to_owned(),
                "give the step another id".to_owned(),
            );
        }
        if index.insert(step.id.as_str(), i).is_some() {
            at.error(
                &[&format!("id: {}", step.id)],
                &format!("steps[{i}].id"),
                format!("step id {:?} is used twice", step.id),
                "step ids must be unique".to_owned(),
            );
        }
    }
    if flow.steps.is_empty() {
        at.error(
            &["steps:"],
            "steps",
            "the flow has no steps".to_owned(),
            "add at least one step".to_owned(),
        );
    }

    let resolve =
        |at: &mut Locator<'_>, i: usize, target: Option<&String>, key: &str| -> Option<usize> {
            match target.map(String::as_str) {
                None => (i + 1 < flow.steps.len()).then_some(i + 1),
                Some(END) => None,
                Some(id) => match index.get(id) {
                    Some(n) => Some(*n),
                    None => {
                        at.error(
                            &[&format!("id: {}", flow.steps[i].id), &format!("{key}:")],
                            &format!("steps[{i}].{key}"),
                            format!("step {id:?} does not exist"),
                            known_help(
                                "name a step id or `end`; steps:",
                                flow.steps.iter().map(|s| &s.id),
                            ),
                        );
                        None
                    }
                },
            }
        };

    let mut steps = Vec::new();
    for (i, step) in flow.steps.iter().enumerate() {
        let anchor = format!("id: {}", step.id);
        let base = format!("steps[{i}]");
        let on_error = step
            .on_error
            .clone()
            .unwrap_or_else(|| flow.on_error.clone());
        let kind = match step.kind() {
            Err(names) => {
                at.error(
                    &[&anchor],
                    &base,
                    if names.is_empty() {
                        "the step does nothing".to_owned()
                    } else {
                        format!("the step is {} at once", names.join(" and "))
                    },
                    "give exactly one of fetch, map, condition, action, write_back".to_owned(),
                );
                continue;
            }
            Ok(kind) => kind,
        };
        let compile_call = |at: &mut Locator<'_>, call: &Call, key: &str| -> Option<CompiledCall> {
            if !flow.connections.contains_key(&call.connection) {
                at.error(
                    &[&anchor, &format!("{key}:"), "connection:"],
                    &format!("{base}.{key}.connection"),
                    format!("connection {:?} is not declared", call.connection),
                    known_help(
                        "declare it under `connections:` or use",
                        flow.connections.keys(),
                    ),
                );
            }
            let path = compile(
                at,
                &fns,
                &call.path,
                &format!("{base}.{key}.path"),
                &[&anchor, &format!("{key}:"), "path:"],
            );
            let body = call.body.as_ref().map(|b| {
                compile(
                    at,
                    &fns,
                    b,
                    &format!("{base}.{key}.body"),
                    &[&anchor, &format!("{key}:"), "body:"],
                )
            });
            let business_key = call.key.as_ref().map(|k| {
                compile(
                    at,
                    &fns,
                    k,
                    &format!("{base}.{key}.key"),
                    &[&anchor, &format!("{key}:"), "key:"],
                )
            });
            Some(CompiledCall {
                call: call.clone(),
                path: path?,
                body: body.map(|b| b.ok_or(())).transpose().ok()?,
                key: business_key.map(|b| b.ok_or(())).transpose().ok()?,
            })
        };
        let compiled = match kind {
            StepKind::Fetch(call) => compile_call(&mut at, call, "fetch").map(CompiledKind::Fetch),
            StepKind::Action(call) => {
                compile_call(&mut at, call, "action").map(CompiledKind::Action)
            }
            StepKind::WriteBack(call) => {
                compile_call(&mut at, call, "write_back").map(CompiledKind::WriteBack)
            }
            StepKind::Map(map) => {
                let each = map.each.as_ref().map(|e| {
                    compile(
                        &mut at,
                        &fns,
                        e,
                        &format!("{base}.map.each"),
                        &[&anchor, "map:", "each:"],
                    )
                });
                let program = compile(
                    &mut at,
                    &fns,
                    &map.program,
                    &format!("{base}.map.program"),
                    &[&anchor, "map:", "program:"],
                );
                match (each, program) {
                    (Some(None), _) | (_, None) => None,
                    (each, Some(program)) => Some(CompiledKind::Map {
                        each: each.flatten(),
                        program,
                    }),
                }
            }
            StepKind::Condition(condition) => {
                let when = compile(
                    &mut at,
                    &fns,
                    &condition.when,
                    &format!("{base}.condition.if"),
                    &[&anchor, "condition:", "if:"],
                );
                let then = resolve(&mut at, i, Some(&condition.then), "condition.then");
                when.map(|when| CompiledKind::Condition { when, then })
            }
        };
        let next_target = match kind {
            StepKind::Condition(c) => {
                if step.next.is_some() {
                    at.error(
                        &[&anchor, "next:"],
                        &format!("{base}.next"),
                        "a condition has no `next`".to_owned(),
                        "use `condition.else` for the step after a false condition".to_owned(),
                    );
                }
                c.otherwise.as_ref()
            }
            _ => step.next.as_ref(),
        };
        let key = if matches!(kind, StepKind::Condition(_)) {
            "condition.else"
        } else {
            "next"
        };
        let next = resolve(&mut at, i, next_target, key);
        if let Some(kind) = compiled {
            steps.push(CompiledStep {
                id: step.id.clone(),
                kind,
                next,
                on_error,
            });
        }
    }

    // Cycles are looked for once every reference resolved.
    if at.errors.is_empty() {
        if let Some(cycle) = find_cycle(&steps) {
            let names: Vec<&str> = cycle.iter().map(|i| steps[*i].id.as_str()).collect();
            let first = cycle[0];
            at.error(&[&format!("id: {}", steps[first].id)], &format!("steps[{first}]"),
                format!("the steps loop: {} → {}", names.join(" → "), names[0]),
                "a flow is a graph without cycles; point one of these `next`s elsewhere or at `end`".to_owned());
        }
    }

    for (t, test) in flow.tests.iter().enumerate() {
        let anchor = format!("name: {}", test.name);
        for step in test.responses.keys() {
            let ok = flow.steps.iter().any(|s| {
                &s.id == step && (s.fetch.is_some() || s.action.is_some() || s.write_back.is_some())
            });
            if !ok {
                at.error(
                    &["tests:", &anchor, "responses:", &format!("{step}:")],
                    &format!("tests[{t}].responses.{step}"),
                    format!("no fetch, action or write_back step {step:?}"),
                    known_help(
                        "canned responses are for steps that call a connection:",
                        flow.steps
                            .iter()
                            .filter(|s| s.map.is_none() && s.condition.is_none())
                            .map(|s| &s.id),
                    ),
                );
            }
        }
        for (r, request) in test.expect.requests.iter().flatten().enumerate() {
            if !index.contains_key(request.step.as_str()) {
                at.error(
                    &[
                        "tests:",
                        &anchor,
                        "requests:",
                        &format!("step: {}", request.step),
                    ],
                    &format!("tests[{t}].expect.requests[{r}].step"),
                    format!("step {:?} does not exist", request.step),
                    known_help("name a step:", flow.steps.iter().map(|s| &s.id)),
                );
            }
        }
        for step in test.expect.outputs.keys() {
            if !index.contains_key(step.as_str()) {
                at.error(
                    &["tests:", &anchor, "outputs:", &format!("{step}:")],
                    &format!("tests[{t}].expect.outputs.{step}"),
                    format!("step {step:?} does not exist"),
                    known_help("name a step:", flow.steps.iter().map(|s| &s.id)),
                );
            }
        }
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(LoadedFlow {
        file: path.to_owned(),
        version: FlowVersion {
            number: 0,
            hash: content_hash(text),
        },
        flow,
        steps,
        finance,
        source: text.to_owned(),
    })
}

fn known_help<'a>(lead: &str, names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        format!("{lead} (none yet)")
    } else {
        format!("{lead} {}", names.join(", "))
    }
}

/// The YAML → model step, with the key path and position of the first error.
pub fn parse(path: &Path, text: &str) -> Result<FlowFile, Box<FlowError>> {
    let deserializer = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, FlowFile>(deserializer).map_err(|error| {
        let key_path = error.path().to_string();
        let inner = error.into_inner();
        let location = inner.location();
        let mut message = inner.to_string();
        // The YAML library appends its own position; ours is in front.
        if let Some(cut) = message.find(" at line ") {
            let rest = &message[cut + " at line ".len()..];
            let after_column = rest.find("column ").map(|c| {
                let digits = rest[c + 7..].chars().take_while(char::is_ascii_digit).count();
                c + 7 + digits
            });
            let tail = after_column.map(|end| rest[end..].to_owned()).unwrap_or_default();
            message.truncate(cut);
            message.push_str(&tail);
        }
        // …and may put the key path in front, which we print already.
        if let Some((head, rest)) = message.split_once(": ") {
            if !head.contains(' ') && (key_path.starts_with(head) || head == ".") {
                message = rest.to_owned();
            }
        }
        let help = if message.contains("unknown field") {
            "remove the key or fix its spelling (the keys allowed here are listed above; all of them are in schema/flow.schema.json)"
        } else if message.contains("missing field") {
            "add the key; schema/flow.schema.json describes every key"
        } else if message.contains("unknown variant") {
            "use one of the values listed above"
        } else if message.contains("invalid type") {
            "give the value the type named above"
        } else {
            "fix the YAML at this position (indentation, a missing `:` or an unclosed quote are the usual causes)"
        };
        Box::new(FlowError {
            file: path.to_owned(),
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
            path: key_path,
            message,
            help: help.to_owned(),
            report: None,
        })
    })
}

/// Finds positions by a sequence of anchors in the text (each searched
/// after the previous one), and collects errors.
struct Locator<'a> {
    file: &'a Path,
    text: &'a str,
    errors: &'a mut Vec<FlowError>,
    /// Names of the flow's value maps.
    value_maps: Vec<String>,
}

impl Locator<'_> {
    fn position(&self, anchors: &[&str]) -> (Option<usize>, Option<usize>) {
        let mut offset = 0;
        let mut found = None;
        for anchor in anchors {
            if let Some(at) = self.text[offset..].find(anchor) {
                found = Some(offset + at);
                offset += at + anchor.len();
            }
        }
        match found {
            Some(at) => {
                let (line, column) = line_column(self.text, at);
                (Some(line), Some(column))
            }
            None => (None, None),
        }
    }

    fn error(&mut self, anchors: &[&str], path: &str, message: String, help: String) {
        let (line, column) = self.position(anchors);
        self.errors.push(FlowError {
            file: self.file.to_owned(),
            line,
            column,
            path: path.to_owned(),
            message,
            help,
            report: None,
        });
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

/// The value-map names a program uses as literals (`value_map!("name", …)`).
fn value_map_literals(source: &str) -> Vec<&str> {
    let mut names = Vec::new();
    for (at, _) in source.match_indices("value_map") {
        let rest = source[at + "value_map".len()..]
            .trim_start_matches('!')
            .trim_start();
        let Some(rest) = rest.strip_prefix('(') else {
            continue;
        };
        let Some(rest) = rest.trim_start().strip_prefix('"') else {
            continue;
        };
        if let Some(end) = rest.find('"') {
            names.push(&rest[..end]);
        }
    }
    names
}

fn compile(
    at: &mut Locator<'_>,
    fns: &[Box<dyn Function>],
    source: &str,
    path: &str,
    anchors: &[&str],
) -> Option<Compiled> {
    match vrl::compiler::compile(source, fns) {
        Ok(result) => {
            for name in value_map_literals(source) {
                if !at.value_maps.iter().any(|known| known == name) {
                    let mut anchored = anchors.to_vec();
                    let needle = format!("\"{name}\"");
                    anchored.push(&needle);
                    let help = if at.value_maps.is_empty() {
                        "add it under tables.value_maps".to_owned()
                    } else {
                        format!(
                            "add it under tables.value_maps or use one of: {}",
                            at.value_maps.join(", ")
                        )
                    };
                    at.error(
                        &anchored,
                        path,
                        format!("value map {name:?} does not exist"),
                        help,
                    );
                }
            }
            Some(Compiled {
                path: path.to_owned(),
                program: result.program,
                source: source.to_owned(),
            })
        }
        Err(diagnostics) => {
            // Where the program starts in the file: its first line's text,
            // searched after the key that holds it.
            let (key_line, _) = at.position(anchors);
            let first = source
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or_default()
                .trim();
            let key_offset = key_line.map(|l| offset_of_line(at.text, l)).unwrap_or(0);
            let program_offset = at.text[key_offset..].find(first).map(|o| o + key_offset);
            let errors = diagnostics.errors();
            let primary = errors
                .first()
                .and_then(|d| d.labels.iter().find(|l| l.primary).or(d.labels.first()));
            let (line, column) = match (program_offset, primary) {
                (Some(start), Some(label)) => {
                    let mut offset = label.span.start().min(source.len());
                    while !source.is_char_boundary(offset) {
                        offset -= 1;
                    }
                    let (program_line, program_column) = line_column(source, offset);
                    let (start_line, start_column) = line_column(at.text, start);
                    let leading = source.lines().take_while(|l| l.trim().is_empty()).count();
                    // Block scalars lose their indentation; add it back.
                    let indent = start_column - 1;
                    let line = (start_line + program_line - 1)
                        .saturating_sub(leading)
                        .max(1);
                    // A program written as a quoted string has its lines
                    // joined in one line of the file: point at its start.
                    let wanted = source
                        .lines()
                        .nth(program_line - 1)
                        .unwrap_or_default()
                        .trim();
                    let in_file = at
                        .text
                        .lines()
                        .nth(line - 1)
                        .map_or(wanted.is_empty(), |text| text.contains(wanted));
                    if program_line <= leading {
                        // In the blank lines before the program: its start.
                        (Some(start_line), Some(start_column))
                    } else if program_line == 1 || in_file {
                        (Some(line), Some(program_column + indent))
                    } else {
                        (Some(start_line), Some(start_column))
                    }
                }
                (Some(start), None) => {
                    let (l, c) = line_column(at.text, start);
                    (Some(l), Some(c))
                }
                _ => (key_line, None),
            };
            let message = errors
                .first()
                .map(|d| d.message.clone())
                .unwrap_or_else(|| "the program does not compile".to_owned());
            let report = vrl::diagnostic::Formatter::new(source, diagnostics.clone()).to_string();
            at.errors.push(FlowError {
                file: at.file.to_owned(),
                line,
                column,
                path: path.to_owned(),
                message: format!("VRL: {message}"),
                help: "fix the program; our functions are listed in the README's Flows section (a fallible call needs `!`, e.g. `tax_rate!(…)`)".to_owned(),
                report: Some(report),
            });
            None
        }
    }
}

fn offset_of_line(text: &str, line: usize) -> usize {
    text.split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum()
}

/// A cycle among the steps, as step indices, if any.
fn find_cycle(steps: &[CompiledStep]) -> Option<Vec<usize>> {
    fn edges(step: &CompiledStep) -> Vec<usize> {
        let mut out: Vec<usize> = step.next.into_iter().collect();
        if let CompiledKind::Condition { then: Some(t), .. } = step.kind {
            out.push(t);
        }
        out
    }
    // 0 = unvisited, 1 = on the stack, 2 = done.
    let mut state = vec![0u8; steps.len()];
    let mut stack: Vec<usize> = Vec::new();
    fn visit(
        i: usize,
        steps: &[CompiledStep],
        state: &mut [u8],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        state[i] = 1;
        stack.push(i);
        for next in edges(&steps[i]) {
            if next >= steps.len() {
                continue;
            }
            if state[next] == 1 {
                let from = stack.iter().position(|s| *s == next).unwrap_or(0);
                return Some(stack[from..].to_vec());
            }
            if state[next] == 0 {
                if let Some(cycle) = visit(next, steps, state, stack) {
                    return Some(cycle);
                }
            }
        }
        stack.pop();
        state[i] = 2;
        None
    }
    for i in 0..steps.len() {
        if state[i] == 0 {
            if let Some(cycle) = visit(i, steps, &mut state, &mut stack) {
                return Some(cycle);
            }
        }
    }
    None
}
