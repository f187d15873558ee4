//! VRL program text, compiled with our finance functions (the shipped
//! order-to-invoice flow's tables) and, when it compiles, run on the
//! shipped sample order: never a panic. A refused program has a span.
#![no_main]

use std::sync::{Arc, OnceLock};

use ledgerbridge_mapping::load::Compiled;
use ledgerbridge_mapping::run::Runner;
use ledgerbridge_mapping::tables::Finance;
use ledgerbridge_mapping::{functions, load_file};
use libfuzzer_sys::fuzz_target;
use vrl::value::Value;

struct Fixture {
    finance: Arc<Finance>,
    data: Value,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let flow = load_file(&root.join("flows/order-to-invoice.yaml")).expect("the shipped flow");
        let sample: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join("flows/samples/order-submitted.json"))
                .expect("sample"),
        )
        .expect("sample JSON");
        let data = ledgerbridge_mapping::run::initial_data(&flow, &sample, &Default::default());
        Fixture {
            finance: flow.finance.clone(),
            data,
        }
    })
}

fuzz_target!(|text: &str| {
    if text.len() > 4096 {
        return;
    }
    let fixture = fixture();
    let fns = functions::all(fixture.finance.clone());
    match vrl::compiler::compile(text, &fns) {
        Ok(result) => {
            let compiled = Compiled {
                path: "fuzz".to_owned(),
                program: result.program,
                source: text.to_owned(),
            };
            let mut data = fixture.data.clone();
            let _ = Runner::new().eval(&compiled, &mut data);
        }
        Err(diagnostics) => {
            let errors = diagnostics.errors();
            assert!(!errors.is_empty());
            let _ = vrl::diagnostic::Formatter::new(text, diagnostics.clone()).to_string();
        }
    }
});
