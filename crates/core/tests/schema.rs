//! `schema/flow.schema.json` is generated from the flow model; this test
//! fails when the two drift apart. Update the file with
//! `UPDATE_SCHEMA=1 cargo test -p ledgerbridge-core --test schema`.

use std::path::PathBuf;

#[test]
fn the_checked_in_schema_matches_the_model() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schema/flow.schema.json");
    let generated =
        serde_json::to_string_pretty(&ledgerbridge_core::flow::json_schema()).unwrap() + "\n";
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "schema/flow.schema.json is out of date with crates/core/src/flow.rs; regenerate it with\n  \
         UPDATE_SCHEMA=1 cargo test -p ledgerbridge-core --test schema\nand commit the result"
    );
}
