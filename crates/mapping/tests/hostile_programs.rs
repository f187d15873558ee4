//! Hostile VRL: our fuzzing of the mapping language (proptest).
//!
//! - Program text — the shipped flows' programs mangled at random, token
//!   soup and arbitrary text — compiles or is refused with a source span and
//!   a file position, never a panic.
//! - The shipped flows run their own tests with the input and the canned
//!   responses mangled (wrong types, huge and odd numbers, deep nesting,
//!   unicode, fields gone): every run ends completed, parked or failed with
//!   messages, never a panic.
//! - Every one of our functions called with hostile arguments (odd
//!   decimals like `"1e400"`, `"-0"`, `"NaN"` and 40-digit numbers, empty
//!   strings, impossible dates, extreme integers, nested values) returns a
//!   value or an error naming the function, never a panic.
//!
//! Case counts are CI-sized; `LEDGERBRIDGE_FUZZ_SCALE=N` multiplies them
//! (`scripts/fuzz-long`). The regression tests of what this found are at
//! the end, each named after its failure.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::DateTime;
use ledgerbridge_core::fuzz;
use ledgerbridge_mapping::load::Compiled;
use ledgerbridge_mapping::run::Runner;
use ledgerbridge_mapping::tables::Finance;
use ledgerbridge_mapping::{
    functions, load_file, load_str, run, LoadedFlow, RecordingConnector, Response,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value as Json};
use vrl::compiler::Function;
use vrl::value::{ObjectMap, Value};

mod common;
use common::mangle::{apply, edit};

fn flows_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../flows")
}

/// Every shipped flow file, loaded.
fn shipped_flows() -> Vec<LoadedFlow> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(flows_dir())
        .expect("flows/")
        .map(|entry| entry.expect("flows/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 4, "the shipped flows: {paths:?}");
    paths
        .iter()
        .map(|path| load_file(path).unwrap_or_else(|e| panic!("{}: {e:?}", path.display())))
        .collect()
}

/// Every program of the shipped flows (paths, bodies, keys, maps,
/// conditions), as written.
fn shipped_programs() -> Vec<String> {
    use ledgerbridge_mapping::load::CompiledKind;
    let mut programs = Vec::new();
    for flow in shipped_flows() {
        for step in &flow.steps {
            match &step.kind {
                CompiledKind::Fetch(call)
                | CompiledKind::Action(call)
                | CompiledKind::WriteBack(call) => {
                    programs.push(call.path.source.clone());
                    programs.extend(call.body.iter().map(|c| c.source.clone()));
                    programs.extend(call.key.iter().map(|c| c.source.clone()));
                }
                CompiledKind::Map { each, program } => {
                    programs.extend(each.iter().map(|c| c.source.clone()));
                    programs.push(program.source.clone());
                }
                CompiledKind::Condition { when, .. } => programs.push(when.source.clone()),
            }
        }
    }
    programs
}

fn config(ci_cases: u32) -> Config {
    Config {
        cases: fuzz::cases(ci_cases),
        failure_persistence: None,
        ..Config::default()
    }
}

// --- program text -----------------------------------------------------------

/// Pieces of VRL (and of broken VRL) that edits insert.
fn vrl_junk() -> impl Strategy<Value = String> {
    let fixed: Vec<String> = [
        "(",
        ")",
        "{",
        "}",
        "[",
        "]",
        "!",
        "?",
        "??",
        "=",
        "==",
        ",",
        ".",
        "..",
        ":",
        ";",
        "\n",
        "\"",
        "'",
        "\\",
        "#",
        "|",
        "&&",
        "||",
        "+",
        "-",
        "*",
        "/",
        "%",
        "<",
        ">=",
        "abort",
        "if",
        "else",
        "null",
        "true",
        "false",
        ".input",
        ".steps.x.y[0]",
        "x = ",
        "money_add!(",
        "tax_rate(",
        "fx_convert!(\"1e400\", \"GBP\", \"EUR\", \"2025-13-45\")",
        "add_days!(\"2025-01-01\", 9223372036854775807)",
        "1e400",
        "-0",
        "NaN",
        "9223372036854775808",
        "0x1F",
        "s'x'",
        "r'(['",
        "t'2025'",
        "\u{0}",
        "\u{FEFF}",
        "é",
        "\u{10FFFF}",
        "\r\n",
        "\t",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    prop_oneof![
        6 => prop::sample::select(fixed),
        1 => prop::sample::select(functions::NAMES).prop_map(|name| format!("{name}!(")),
        1 => (1usize..300).prop_map(|n| "(".repeat(n)),
        1 => (1usize..300).prop_map(|n| format!("{}1{}", "[".repeat(n), "]".repeat(n))),
        1 => (1usize..300).prop_map(|n| format!("{}{}", "{\"a\":".repeat(n), "}".repeat(n))),
        1 => "[0-9]{20,60}",
        1 => "\\PC{0,8}",
    ]
}

/// A one-step flow whose map program is `program`: as a block scalar when
/// YAML can hold it that way (so positions inside it are worked out),
/// else as a double-quoted string.
fn flow_with_program(program: &str) -> String {
    let plain = program.chars().all(|c| {
        c == '\n'
            || c == '\t'
            || (!c.is_control() && c != '\u{FEFF}' && c != '\u{2028}' && c != '\u{2029}')
    });
    let value = if plain && !program.trim().is_empty() {
        let mut block = String::from("|\n");
        for line in program.lines() {
            block.push_str("        ");
            block.push_str(line);
            block.push('\n');
        }
        block
    } else {
        format!("{}\n", serde_json::to_string(program).expect("a string"))
    };
    format!(
        "version: 1\nname: fuzz\ntrigger: {{ kind: manual }}\nconnections: {{}}\nsteps:\n  - id: only\n    map:\n      program: {value}"
    )
}

/// Compiles `program` with our functions and through the flow loader:
/// either it compiles, or every error has a span in the program and a
/// position in the file.
fn check_program(finance: &Arc<Finance>, program: &str) -> Result<(), TestCaseError> {
    let fns = functions::all(finance.clone());
    if let Err(diagnostics) = vrl::compiler::compile(program, &fns) {
        let errors = diagnostics.errors();
        prop_assert!(!errors.is_empty(), "refused without an error: {program:?}");
        for error in errors {
            prop_assert!(!error.message.trim().is_empty(), "{error:?}");
            let label = error
                .labels
                .iter()
                .find(|l| l.primary)
                .or(error.labels.first());
            prop_assert!(
                label.is_some(),
                "an error without a span: {error:?} in {program:?}"
            );
            if let Some(label) = label {
                // "Unexpected end of program" points one past the end.
                prop_assert!(
                    label.span.start() <= label.span.end() && label.span.start() <= program.len(),
                    "span {:?} outside the program of {} bytes",
                    label.span,
                    program.len()
                );
            }
        }
    }
    let text = flow_with_program(program);
    if let Err(errors) = load_str(Path::new("fuzzed.yaml"), &text) {
        prop_assert!(!errors.is_empty());
        for error in &errors {
            prop_assert!(!error.message.trim().is_empty(), "{error:?}");
            prop_assert!(
                error.line.is_some(),
                "an error without a line: {error}\n--- file:\n{text}"
            );
            if error.path == "steps[0].map.program" && error.message.starts_with("VRL") {
                prop_assert!(
                    error.report.is_some(),
                    "a VRL error without its report: {error}"
                );
                let line = error.line.unwrap_or_default();
                // The end of the program is the line after its last one.
                let last = text.lines().count() + 1;
                prop_assert!(
                    (8..=last).contains(&line),
                    "line {line} is not in the program: {error}\n--- file:\n{text}"
                );
            }
            prop_assert!(!error.to_string().is_empty());
        }
    }
    Ok(())
}

#[test]
fn mangled_programs_compile_or_are_refused_with_a_span() {
    let finance = Arc::new(Finance::default());
    let programs = shipped_programs();
    let strategy = (
        prop::sample::select(programs),
        prop::collection::vec(edit(any::<usize>(), 24, vrl_junk()), 1..5),
    );
    config_runner(300)
        .run(&strategy, |(program, edits)| {
            check_program(&finance, &apply(&program, &edits))
        })
        .unwrap();
}

#[test]
fn token_soup_and_arbitrary_text_compile_or_are_refused_with_a_span() {
    let finance = Arc::new(Finance::default());
    let soup = prop::collection::vec(vrl_junk(), 0..40).prop_map(|parts| parts.join(" "));
    let strategy = prop_oneof![soup, "\\PC{0,300}", ".{0,100}"];
    config_runner(300)
        .run(&strategy, |program| check_program(&finance, &program))
        .unwrap();
}

fn config_runner(ci_cases: u32) -> TestRunner {
    TestRunner::new(config(ci_cases))
}

// --- hostile values ------------------------------------------------------------

/// Text that looks like money, dates or names, and text that only
/// pretends to.
const HOSTILE_TEXT: &[&str] = &[
    "",
    " ",
    "0",
    "-0",
    "+0",
    "0.000",
    "12.34",
    "-12.345",
    "1e400",
    "-1e400",
    "1e-400",
    "1E28",
    "1e-28",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "Infinity",
    "79228162514264337593543950335",
    "-79228162514264337593543950335",
    "79228162514264337593543950336",
    "0.0000000000000000000000000001",
    "0.00000000000000000000000000001",
    "1234567890123456789012345678901234567890",
    "-1234567890123456789012345678901234567890.5",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551616",
    "1_000",
    "1,000.00",
    "£12.00",
    "12.34.56",
    "--1",
    ".5",
    "5.",
    "0x10",
    "2025-01-15",
    "2025-01-15T10:00:00Z",
    "2025-01-15 10:00:00",
    "2025-01-15T10:00:00.123456789+14:00",
    "2025-02-30",
    "2025-13-01",
    "0000-00-00",
    "0000-01-01",
    "-0001-01-01",
    "9999-12-31",
    "9999-12-31T23:59:59Z",
    "+262142-12-31T23:59:59Z",
    "262143-12-31",
    "-262143-01-01",
    "1970-01-01T00:00:00-25:00",
    "2025-01-15T24:00:00Z",
    "GB",
    "gb",
    "GBP",
    "EUR",
    "XXX",
    "standard",
    "reduced",
    "zero",
    "Completed",
    "shipping",
    "ß",
    "İstanbul",
    "\u{0}",
    "\u{FFFD}",
    "\u{10FFFF}",
    "a\u{0301}",
    "🙂🙂",
    "Ada King Lovelace",
    "1 High St, Leeds,, ,West Yorkshire\nLS1",
];

fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(HOSTILE_TEXT).prop_map(str::to_owned),
        2 => "-?[0-9]{1,45}(\\.[0-9]{0,35})?([eE][+-]?[0-9]{1,5})?",
        1 => "\\PC{0,24}",
        1 => (1usize..3000).prop_map(|n| "9".repeat(n)),
        // What VRL writes for a position in an error message.
        1 => (0usize..4000, 0usize..4000).prop_map(|(a, b)| format!("x at ({a}:{b}) y")),
    ]
}

fn hostile_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(-0.0),
        Just(f64::MAX),
        Just(f64::MIN),
        Just(f64::MIN_POSITIVE),
        Just(f64::EPSILON),
        Just(1e28),
        Just(7.922816251426434e28),
        Just(1e-28),
        Just(0.1),
        Just(12.345),
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
    ]
}

fn hostile_integer() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(-1),
        Just(i64::MAX),
        Just(i64::MIN),
        Just(i64::MAX / 86_400),
        Just(106_751_991_167_300),
        Just(-106_751_991_167_300),
        Just(3_000_000),
        Just(-3_000_000),
        Just(i32::MAX as i64),
        any::<i64>(),
    ]
}

/// Field names our functions and the shipped flows look into.
const FIELDS: &[&str] = &[
    "Quantity",
    "Rate",
    "VATAmount",
    "Street1",
    "Street2",
    "City",
    "State",
    "Zip",
    "Country",
    "Code",
    "ID",
    "Items",
    "Data",
    "Amount",
    "amount",
    "currency",
    "metadata",
    "order_id",
    "x",
];

/// A hostile VRL value: scalars above, arrays and objects of them, deep
/// nesting.
fn hostile_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Boolean),
        hostile_integer().prop_map(Value::Integer),
        hostile_float().prop_map(Value::from_f64_or_zero),
        hostile_text().prop_map(Value::from),
        prop_oneof![
            Just(DateTime::<chrono::Utc>::MAX_UTC),
            Just(DateTime::<chrono::Utc>::MIN_UTC),
            Just(DateTime::<chrono::Utc>::UNIX_EPOCH),
        ]
        .prop_map(Value::Timestamp),
    ];
    let tree = leaf.clone().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(FIELDS), inner), 0..6).prop_map(|pairs| {
                Value::Object(
                    pairs
                        .into_iter()
                        .map(|(k, v)| (k.into(), v))
                        .collect::<ObjectMap>(),
                )
            }),
        ]
    });
    prop_oneof![
        8 => tree,
        1 => (1usize..150, leaf).prop_map(|(depth, leaf)| {
            let mut value = leaf;
            for level in 0..depth {
                value = if level % 2 == 0 {
                    Value::Array(vec![value])
                } else {
                    Value::Object([("x".into(), value)].into_iter().collect::<ObjectMap>())
                };
            }
            value
        }),
    ]
}

/// A scalar our functions take: amounts large enough to overflow when
/// two meet, integers at their ends, dates, and the hostile texts.
fn hostile_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => "-?[1-9][0-9]{12,27}(\\.[0-9]{1,4})?".prop_map(Value::from),
        2 => hostile_text().prop_map(Value::from),
        2 => hostile_integer().prop_map(Value::Integer),
        1 => hostile_float().prop_map(Value::from_f64_or_zero),
        1 => Just(Value::Null),
    ]
}

/// A hostile JSON value, for run inputs and canned responses.
fn hostile_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        hostile_integer().prop_map(Json::from),
        hostile_float().prop_map(Json::from),
        hostile_text().prop_map(Json::from),
        // Numbers JSON can carry but no i64 or f64 can.
        "-?[0-9]{19,60}(\\.[0-9]{1,30})?(e[+-]?[0-9]{3,5})?"
            .prop_map(|n| { serde_json::from_str::<Json>(&n).unwrap_or(Json::Null) }),
    ];
    let tree = leaf.clone().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            prop::collection::vec((prop::sample::select(FIELDS), inner), 0..6).prop_map(|pairs| {
                Json::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    });
    prop_oneof![
        8 => tree,
        1 => (1usize..120, leaf).prop_map(|(depth, leaf)| {
            let mut value = leaf;
            for _ in 0..depth {
                value = json!([value]);
            }
            value
        }),
    ]
}

// --- shipped flows on hostile data ---------------------------------------------

/// Every JSON pointer in `value`, the root included.
fn pointers(value: &Json, at: String, out: &mut Vec<String>) {
    match value {
        Json::Object(map) => {
            for (key, inner) in map {
                let escaped = key.replace('~', "~0").replace('/', "~1");
                pointers(inner, format!("{at}/{escaped}"), out);
            }
        }
        Json::Array(items) => {
            for (index, inner) in items.iter().enumerate() {
                pointers(inner, format!("{at}/{index}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// Replaces (or, for `None`, removes) the node `pick` selects.
fn mutate(value: &mut Json, pick: usize, replacement: Option<Json>) {
    let mut all = Vec::new();
    pointers(value, String::new(), &mut all);
    let pointer = &all[pick % all.len()];
    match replacement {
        Some(new) => {
            if let Some(node) = value.pointer_mut(pointer) {
                *node = new;
            }
        }
        None => {
            let Some((parent, last)) = pointer.rsplit_once('/') else {
                *value = Json::Null;
                return;
            };
            let last = last.replace("~1", "/").replace("~0", "~");
            match value.pointer_mut(parent) {
                Some(Json::Object(map)) => {
                    map.remove(&last);
                }
                Some(Json::Array(items)) => {
                    if let Ok(index) = last.parse::<usize>() {
                        if index < items.len() {
                            items.remove(index);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Mutation {
    /// 0 = the input, 1.. = the canned responses in step order.
    target: usize,
    pick: usize,
    replacement: Option<Json>,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    (
        any::<usize>(),
        any::<usize>(),
        prop::option::weighted(0.85, hostile_json()),
    )
        .prop_map(|(target, pick, replacement)| Mutation {
            target,
            pick,
            replacement,
        })
}

#[test]
fn shipped_flows_on_mangled_inputs_and_responses_never_panic() {
    let flows = shipped_flows();
    let cases: Vec<(usize, usize)> = flows
        .iter()
        .enumerate()
        .flat_map(|(f, flow)| (0..flow.flow.tests.len()).map(move |t| (f, t)))
        .collect();
    assert!(cases.len() >= 10, "the shipped flows' tests");
    let strategy = (
        prop::sample::select(cases),
        prop::collection::vec(mutation(), 1..6),
    );
    config_runner(200)
        .run(&strategy, |((f, t), mutations)| {
            let flow = &flows[f];
            let test = &flow.flow.tests[t];
            let mut input = test.input.clone();
            let mut responses: Vec<(String, Response)> = test
                .responses
                .iter()
                .map(|(step, canned)| {
                    (
                        step.clone(),
                        Response {
                            status: canned.status,
                            body: canned.body.clone(),
                        },
                    )
                })
                .collect();
            for m in mutations {
                let slot = m.target % (responses.len() + 1);
                let target = if slot == 0 {
                    &mut input
                } else {
                    &mut responses[slot - 1].1.body
                };
                mutate(target, m.pick, m.replacement);
            }
            let mut connector = RecordingConnector {
                responses: responses.into_iter().collect(),
            };
            let outcome = run(flow, &input, &test.vars, &mut connector);
            for error in &outcome.errors {
                prop_assert!(!error.trim().is_empty());
            }
            Ok(())
        })
        .unwrap();
}

// --- our functions on hostile arguments ------------------------------------------

/// Compiles a call of `name` with its arguments read from `.a0`, `.a1`, …
/// (`!` when the function is fallible).
fn call_program(fns: &[Box<dyn Function>], name: &str, arguments: usize) -> Compiled {
    let args: Vec<String> = (0..arguments).map(|i| format!(".a{i}")).collect();
    for bang in ["!", ""] {
        let source = format!("{name}{bang}({})", args.join(", "));
        if let Ok(result) = vrl::compiler::compile(&source, fns) {
            return Compiled {
                path: format!("fuzz.{name}"),
                program: result.program,
                source,
            };
        }
    }
    panic!("{name} with {arguments} arguments does not compile");
}

/// Calls `name` with `args` as it runs in a flow.
fn call(finance: &Arc<Finance>, name: &str, args: Vec<Value>) -> Result<Value, String> {
    let fns = functions::all(finance.clone());
    let compiled = call_program(&fns, name, args.len());
    let mut data = Value::Object(
        args.into_iter()
            .enumerate()
            .map(|(i, v)| (format!("a{i}").into(), v))
            .collect::<ObjectMap>(),
    );
    Runner::new().eval(&compiled, &mut data)
}

/// The shipped order-to-invoice flow's tables, so tax, FX, nominal codes
/// and value maps look into real data.
fn shipped_finance() -> Arc<Finance> {
    load_file(&flows_dir().join("order-to-invoice.yaml"))
        .expect("the shipped flow")
        .finance
}

#[test]
fn our_functions_on_hostile_arguments_never_panic() {
    let finance = shipped_finance();
    let fns = functions::all(finance.clone());
    // Every function, with every number of arguments it accepts.
    let mut calls: Vec<(String, Compiled, usize)> = Vec::new();
    for function in &fns {
        let parameters = function.parameters();
        let required = parameters.iter().filter(|p| p.required).count();
        for count in required..=parameters.len() {
            let name = function.identifier();
            calls.push((name.to_owned(), call_program(&fns, name, count), count));
        }
    }
    assert!(calls.len() >= functions::NAMES.len());
    // Mostly scalars, so that two large amounts meet often enough.
    let argument = prop_oneof![3 => hostile_scalar(), 1 => hostile_value()];
    let strategy = (
        prop::sample::select((0..calls.len()).collect::<Vec<_>>()),
        prop::collection::vec(argument, 4),
    );
    let runner = std::cell::RefCell::new(Runner::new());
    config_runner(3000)
        .run(&strategy, |(index, args)| {
            let (name, compiled, count) = &calls[index];
            let mut data = Value::Object(
                args.into_iter()
                    .take(*count)
                    .enumerate()
                    .map(|(i, v)| (format!("a{i}").into(), v))
                    .collect::<ObjectMap>(),
            );
            if let Err(message) = runner.borrow_mut().eval(compiled, &mut data) {
                prop_assert!(message.contains(name.as_str()), "{name}: {message}");
            }
            Ok(())
        })
        .unwrap();
}

// --- regressions -------------------------------------------------------------------

fn s(text: &str) -> Value {
    Value::from(text)
}

const MAX: &str = "79228162514264337593543950335";

fn refused(result: Result<Value, String>, name: &str) -> String {
    match result {
        Ok(value) => panic!("{name} gave {value:?}, expected an error"),
        Err(message) => {
            assert!(message.contains(name), "{message}");
            message
        }
    }
}

fn int(n: i64) -> Value {
    Value::Integer(n)
}

#[test]
fn vat_amount_of_a_product_beyond_28_digits_is_an_error_not_a_panic() {
    // Found by `cargo fuzz run our_functions`.
    let finance = shipped_finance();
    refused(
        call(
            &finance,
            "vat_amount",
            vec![s(" 33333333333"), int(2_459_565_876_494_607_064)],
        ),
        "vat_amount",
    );
}

#[test]
fn money_add_and_sub_beyond_the_largest_decimal_are_errors_not_panics() {
    let finance = shipped_finance();
    refused(
        call(&finance, "money_add", vec![s(MAX), s("1")]),
        "money_add",
    );
    refused(
        call(&finance, "money_sub", vec![s(&format!("-{MAX}")), s("1")]),
        "money_sub",
    );
    refused(
        call(&finance, "money_mul", vec![s(MAX), s("10")]),
        "money_mul",
    );
    refused(
        call(&finance, "money_div", vec![s(MAX), s("0.1")]),
        "money_div",
    );
    refused(
        call(
            &finance,
            "money_sum",
            vec![Value::Array(vec![s(MAX), s(MAX)])],
        ),
        "money_sum",
    );
    refused(
        call(&finance, "line_total", vec![s(MAX), s("2")]),
        "line_total",
    );
    assert_eq!(
        call(&finance, "money_add", vec![s("0.1"), s("0.2")]),
        Ok(s("0.3"))
    );
}

#[test]
fn invoice_totals_of_lines_beyond_28_digits_are_an_error_not_a_panic() {
    let finance = shipped_finance();
    let line = |quantity: &str, rate: &str, vat: &str| {
        Value::Object(
            [
                ("Quantity".into(), s(quantity)),
                ("Rate".into(), s(rate)),
                ("VATAmount".into(), s(vat)),
            ]
            .into_iter()
            .collect::<ObjectMap>(),
        )
    };
    refused(
        call(
            &finance,
            "invoice_totals",
            vec![Value::Array(vec![line(MAX, "2", "0")])],
        ),
        "invoice_totals",
    );
    refused(
        call(
            &finance,
            "invoice_totals",
            vec![Value::Array(vec![line("1", MAX, "0"), line("1", MAX, "0")])],
        ),
        "invoice_totals",
    );
    refused(
        call(
            &finance,
            "invoice_totals",
            vec![Value::Array(vec![line("1", "1", MAX), line("1", "1", MAX)])],
        ),
        "invoice_totals",
    );
}

#[test]
fn fx_convert_of_an_amount_beyond_28_digits_is_an_error_not_a_panic() {
    let finance = shipped_finance();
    refused(
        call(
            &finance,
            "fx_convert",
            vec![s(MAX), s("GBP"), s("EUR"), s("2025-01-15")],
        ),
        "fx_convert",
    );
}

#[test]
fn add_days_beyond_the_calendar_is_an_error_not_a_panic() {
    let finance = shipped_finance();
    for days in [i64::MAX, i64::MIN, 106_751_991_167_300, 100_000_000] {
        let message = refused(
            call(&finance, "add_days", vec![s("2025-01-15"), int(days)]),
            "add_days",
        );
        assert!(message.contains("beyond the calendar"), "{message}");
    }
    let message = refused(
        call(&finance, "add_days", vec![s("2025-02-30"), int(1)]),
        "add_days",
    );
    assert!(message.contains("ISO-8601"), "{message}");
    assert_eq!(
        call(
            &finance,
            "add_days",
            vec![s("2025-01-15T10:00:00Z"), int(30)]
        ),
        Ok(s("2025-02-14T10:00:00Z"))
    );
}

/// A data value that looks like VRL's position in an error message (`x at
/// (5:7)`) pointing inside a multi-byte character of the program (the
/// shipped flows' comments have `→`).
#[test]
fn error_text_that_looks_like_a_vrl_position_inside_a_character_is_kept_not_a_panic() {
    let finance = shipped_finance();
    let fns = functions::all(finance);
    let source = "# → é\nmoney!(.a0)".to_owned();
    let program = vrl::compiler::compile(&source, &fns)
        .expect("compiles")
        .program;
    let compiled = Compiled {
        path: "steps[0].map.program".to_owned(),
        program,
        source,
    };
    // Byte 3 is inside `→`.
    let mut data = Value::Object(
        [("a0".into(), s(" at (3:4)"))]
            .into_iter()
            .collect::<ObjectMap>(),
    );
    let message = Runner::new().eval(&compiled, &mut data).unwrap_err();
    assert!(
        message.contains("\" at (3:4)\""),
        "the data is kept as it was: {message}"
    );
    assert!(
        message.contains("at line 2, column 1 of the program"),
        "VRL's own span is placed: {message}"
    );
}

/// Found by the long run (`scripts/fuzz-long`, scale 120): an error placed
/// in the blank lines before a program (`"\r\n { #"`) pointed at the line
/// above the program's key.
#[test]
fn an_error_in_the_blank_lines_before_a_program_points_at_the_program_not_above_it() {
    let text = flow_with_program("\r\n { #");
    let errors = load_str(Path::new("blank.yaml"), &text).unwrap_err();
    let program_line = text.lines().position(|l| l.contains("program:")).unwrap() + 1;
    for error in &errors {
        assert_eq!(error.line, Some(program_line), "{error}");
    }
}

/// A multi-line program written as a double-quoted YAML string (`"a\nb"`)
/// has no lines of its own in the file: its errors point at the string,
/// not at lines past the end of the file.
#[test]
fn an_error_in_a_quoted_multi_line_program_points_into_the_file_not_past_its_end() {
    let text = flow_with_program("x = 1\n\n\u{1} 10000000000000000000");
    assert!(text.contains("program: \"x = 1"), "{text}");
    let errors = load_str(Path::new("quoted.yaml"), &text).unwrap_err();
    let lines = text.lines().count();
    for error in &errors {
        let line = error.line.expect("a line");
        assert!(
            (1..=lines).contains(&line),
            "line {line} of {lines}: {error}"
        );
    }
}
