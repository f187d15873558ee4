//! Hostile flow files: the shipped flow file mangled at random (bytes
//! deleted, inserted, replaced, the text cut short) and arbitrary text
//! never make the loader panic; a refused file always comes with errors
//! that say where and what. `LEDGERBRIDGE_FUZZ_SCALE=N` runs N times the
//! cases (`scripts/fuzz-long`).

use std::path::Path;

use ledgerbridge_mapping::load_str;
use proptest::prelude::*;

fn shipped_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../flows/order-to-invoice.yaml");
    std::fs::read_to_string(path).expect("the shipped flow file")
}

/// One edit of `text` at a byte offset (kept on a char boundary).
#[derive(Debug, Clone)]
enum Edit {
    Delete { at: usize, len: usize },
    Insert { at: usize, what: String },
    Truncate { at: usize },
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
    prop_oneof![
        (0usize..1_000_000, 1usize..40).prop_map(|(at, len)| Edit::Delete { at, len }),
        (0usize..1_000_000, junk).prop_map(|(at, what)| Edit::Insert { at, what }),
        (0usize..1_000_000).prop_map(|at| Edit::Truncate { at }),
    ]
}

fn boundary(text: &str, at: usize) -> usize {
    let mut at = at % (text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut text = text.to_owned();
    for edit in edits {
        match edit {
            Edit::Delete { at, len } => {
                let start = boundary(&text, *at);
                let end = boundary(&text, (start + len).min(text.len()));
                text.replace_range(start..end.max(start), "");
            }
            Edit::Insert { at, what } => {
                let at = boundary(&text, *at);
                text.insert_str(at, what);
            }
            Edit::Truncate { at } => {
                let at = boundary(&text, *at);
                text.truncate(at);
            }
        }
    }
    text
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
