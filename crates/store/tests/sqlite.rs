//! The conformance suite against SQLite: every test gets a new database
//! file in its own temporary directory.

use std::sync::Arc;

use ledgerbridge_store::conformance::Fixture;
use ledgerbridge_store::sqlite::SqliteStore;

async fn fresh_sqlite() -> Fixture {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(dir.path().join("nested/dir/ledgerbridge.db"))
        .await
        .expect("open sqlite store");
    Fixture::new(Arc::new(store)).with_guard(dir)
}

ledgerbridge_store::conformance_suite!(fresh_sqlite());

mod in_memory {
    use super::*;

    async fn fresh_memory() -> Fixture {
        let store = ledgerbridge_store::open("sqlite::memory:")
            .await
            .expect("open in-memory store");
        Fixture::new(store)
    }

    ledgerbridge_store::conformance_suite!(fresh_memory());
}
