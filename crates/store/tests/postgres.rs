//! The conformance suite against a real PostgreSQL server.
//!
//! Every test creates its own database (`lb_test_<uuid>`), runs, and drops
//! it. The server is `LEDGERBRIDGE_TEST_PG` (default
//! `postgres://postgres@127.0.0.1:5432`); if it cannot be reached the tests
//! fail, they are never skipped.

use std::sync::Arc;

use ledgerbridge_store::conformance::Fixture;
use ledgerbridge_store::postgres::PgStore;
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

fn server_url() -> String {
    std::env::var("LEDGERBRIDGE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

async fn admin_connection(server: &str) -> PgConnection {
    let url = format!("{server}/postgres");
    match PgConnection::connect(&url).await {
        Ok(conn) => conn,
        Err(e) => {
            panic!("PostgreSQL tests need a server at {server} (set LEDGERBRIDGE_TEST_PG): {e}")
        }
    }
}

async fn fresh_postgres() -> Fixture {
    let server = server_url();
    let name = format!("lb_test_{}", Uuid::new_v4().simple());
    let mut admin = admin_connection(&server).await;
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create test database");
    let _ = admin.close().await;
    let store = PgStore::connect(&format!("{server}/{name}"))
        .await
        .expect("connect and migrate test database");
    let cleanup_store = store.clone();
    Fixture::new(Arc::new(store)).with_cleanup(async move {
        cleanup_store.close().await;
        let mut admin = admin_connection(&server).await;
        let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        if let Err(e) = admin.execute(drop.as_str()).await {
            eprintln!("could not drop test database {name}: {e}");
        }
        let _ = admin.close().await;
    })
}

ledgerbridge_store::conformance_suite!(fresh_postgres());

/// A server that refuses connections is `Unavailable`, not `Fatal`.
#[tokio::test]
async fn unreachable_server_is_unavailable() {
    let result = ledgerbridge_store::open("postgres://postgres@127.0.0.1:1/nothing").await;
    assert!(
        matches!(result, Err(ledgerbridge_store::StoreError::Unavailable(_))),
        "expected Unavailable, got {:?}",
        result.err()
    );
}

/// Migrations are idempotent: a second process opening the same database
/// applies nothing and works.
#[tokio::test]
async fn reopening_a_migrated_database_works() {
    let fixture = fresh_postgres().await;
    ledgerbridge_store::conformance::run_case(fixture, |store| async move {
        store.ping().await.expect("ping");
    })
    .await;
}
