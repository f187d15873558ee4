//! Hostile flow files: the shipped flow file mangled at random (bytes
//! deleted, inserted, replaced, the text cut short) and arbitrary text
//! never make the loader panic; a refused file always comes with errors
//! that say where and what. `LEDGERBRIDGE_FUZZ_SCALE=N` runs N times the
//! cases (`scripts/fuzz-long`).

use std::path::Path;

use ledgerbridge_mapping::load_str;
use proptest::prelude::*;

mod common;
use common::mangle::{apply, edit, Edit};

fn shipped_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../flows/order-to-invoice.yaml");
    std::fs::read_to_string(path).expect("the shipped flow file")
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    let junk = prop_oneof![
        Just(":".to_owned()),
        Just("\n  - ".to_owned()),
        Just("{{".to_owned()),
        Just("\t".to_owned()),
        Just("\"".to_owned()),
        Just("&anchor *anchor".to_owned()),
        Just("!!binary".to_owned()),
        Just("9".repeat(400)),
        Just("[".repeat(300)),
        "\\PC{0,16}",
    ];
    edit(0usize..1_000_000, 40, junk)
}

fn check(text: &str) {
    match load_str(Path::new("fuzzed.yaml"), text) {
        Ok(_) => {}
        Err(errors) => {
            assert!(!errors.is_empty(), "refused without an error");
            for error in &errors {
                assert!(!error.message.trim().is_empty(), "{error:?}");
                assert!(!error.to_string().trim().is_empty(), "{error:?}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: ledgerbridge_core::fuzz::cases(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mangled_flow_files_are_refused_with_errors_never_a_panic(
        edits in prop::collection::vec(edit_strategy(), 1..4)
    ) {
        check(&apply(&shipped_text(), &edits));
    }

    #[test]
    fn arbitrary_text_is_refused_with_errors_never_a_panic(text in "\\PC{0,400}") {
        check(&text);
    }
}
