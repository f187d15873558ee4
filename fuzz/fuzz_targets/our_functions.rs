//! Every one of our VRL functions called with text arguments chosen by the
//! fuzzer (amounts, dates, currencies, names): a value or an error naming
//! the function, never a panic. The byte in front picks the function.
#![no_main]

use std::sync::{Arc, OnceLock};

use ledgerbridge_mapping::load::Compiled;
use ledgerbridge_mapping::run::Runner;
use ledgerbridge_mapping::{functions, load_file};
use libfuzzer_sys::fuzz_target;
use vrl::compiler::Function;
use vrl::value::{ObjectMap, Value};

/// One compiled call per function and argument count, `name!(.a0, .a1, …)`.
fn calls() -> &'static Vec<(String, Compiled)> {
    static CALLS: OnceLock<Vec<(String, Compiled)>> = OnceLock::new();
    CALLS.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let flow = load_file(&root.join("flows/order-to-invoice.yaml")).expect("the shipped flow");
        let fns = functions::all(Arc::clone(&flow.finance));
        let mut calls = Vec::new();
        for function in &fns {
            let parameters = function.parameters();
            let required = parameters.iter().filter(|p| p.required).count();
            for count in required..=parameters.len() {
                let args: Vec<String> = (0..count).map(|i| format!(".a{i}")).collect();
                for bang in ["!", ""] {
                    let source = format!("{}{bang}({})", function.identifier(), args.join(", "));
                    if let Ok(result) = vrl::compiler::compile(&source, &fns) {
                        calls.push((
                            function.identifier().to_owned(),
                            Compiled {
                                path: "fuzz".to_owned(),
                                program: result.program,
                                source,
                            },
                        ));
                        break;
                    }
                }
            }
        }
        calls
    })
}

fuzz_target!(|input: (u8, [&str; 4], i64)| {
    let (pick, texts, number) = input;
    let calls = calls();
    let (name, compiled) = &calls[usize::from(pick) % calls.len()];
    let mut data: ObjectMap = texts
        .iter()
        .enumerate()
        .map(|(i, text)| (format!("a{i}").into(), Value::from(*text)))
        .collect();
    // One argument as an integer, as days and `n` and codes come.
    if pick >= 128 {
        data.insert(format!("a{}", pick % 4).into(), Value::Integer(number));
    }
    let mut data = Value::Object(data);
    if let Err(message) = Runner::new().eval(compiled, &mut data) {
        assert!(message.contains(name.as_str()), "{message}");
    }
});
