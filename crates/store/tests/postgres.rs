//! The conformance suite against a real PostgreSQL server.
//!
//! Every test creates its own database (`lb_test_<uuid>`), runs, and drops
//! it. The server is `LEDGERBRIDGE_TEST_PG` (default
//! `postgres://postgres@127.0.0.1:5432`); if it cannot be reached the tests
//! fail, they are never skipped.

use std::sync::Arc;

use chrono::Utc;
use ledgerbridge_store::conformance::Fixture;
use ledgerbridge_store::postgres::PgStore;
use ledgerbridge_store::{IngestOutcome, NewEvent, NewRun, Store, StoreError};
use serde_json::json;
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
    fresh_postgres_named().await.0
}

/// A fresh fixture, with its store and database name.
async fn fresh_postgres_named() -> (Fixture, PgStore, String) {
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
    let cleanup_name = name.clone();
    let fixture = Fixture::new(Arc::new(store.clone())).with_cleanup(async move {
        cleanup_store.close().await;
        let mut admin = admin_connection(&server).await;
        let drop = format!("DROP DATABASE IF EXISTS {cleanup_name} WITH (FORCE)");
        if let Err(e) = admin.execute(drop.as_str()).await {
            eprintln!("could not drop test database {cleanup_name}: {e}");
        }
        let _ = admin.close().await;
    });
    (fixture, store, name)
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

fn delivery(dedupe_key: &str) -> (NewEvent, Vec<NewRun>) {
    let event = NewEvent {
        id: Uuid::new_v4(),
        source: "ordercloud:uk-store".to_owned(),
        dedupe_key: dedupe_key.to_owned(),
        received_at: Utc::now(),
        headers: json!({"content-type": "application/json"}),
        body: b"{}".to_vec(),
    };
    let run = NewRun {
        id: Uuid::new_v4(),
        flow: "order-to-invoice".to_owned(),
        flow_version: "1#abcdef".to_owned(),
        input: json!({"order": dedupe_key}),
        not_before: Utc::now(),
    };
    (event, vec![run])
}

/// Ingests all deliveries at once and returns their results in order.
async fn burst(
    store: &Arc<dyn Store>,
    deliveries: &[(NewEvent, Vec<NewRun>)],
) -> Vec<Result<IngestOutcome, StoreError>> {
    let start = Arc::new(tokio::sync::Barrier::new(deliveries.len()));
    let tasks = deliveries.iter().cloned().map(|(event, runs)| {
        let store = store.clone();
        let start = start.clone();
        tokio::spawn(async move {
            start.wait().await;
            store.ingest(event, runs).await
        })
    });
    futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("delivery task"))
        .collect()
}

/// A value PostgreSQL itself refuses (jsonb cannot hold `\u0000`) fails
/// only the delivery carrying it, even when it is written in one batch with
/// others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingest_value_refused_by_postgres_fails_alone() {
    let fixture = fresh_postgres().await;
    ledgerbridge_store::conformance::run_case(fixture, |store| async move {
        let mut deliveries: Vec<_> = (0..48).map(|i| delivery(&format!("nul-{i}"))).collect();
        deliveries[5].0.headers = json!({"x-bad": "a\u{0}b"});
        deliveries[30].1[0].input = json!({"bad": "\u{0}"});
        let outcomes = burst(&store, &deliveries).await;
        for (index, ((event, runs), outcome)) in deliveries.iter().zip(&outcomes).enumerate() {
            if index == 5 || index == 30 {
                assert!(
                    matches!(outcome, Err(StoreError::Fatal(_))),
                    "delivery {index}: expected Fatal, got {outcome:?}"
                );
                assert_eq!(store.event(event.id).await.expect("event"), None);
                continue;
            }
            let expected = IngestOutcome::Accepted {
                event_id: event.id,
                run_ids: runs.iter().map(|r| r.id).collect(),
            };
            assert_eq!(outcome.as_ref().ok(), Some(&expected), "delivery {index}");
        }
        let queued = store.count_by_state().await.expect("count");
        assert_eq!(queued.iter().map(|(_, n)| n).sum::<i64>(), 46);
    })
    .await;
}

/// When the database cannot be used, every delivery of a batch hears
/// `Unavailable` (the inbox answers 503) and none is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingest_without_a_database_is_unavailable_for_everyone() {
    let (fixture, pg_store, name) = fresh_postgres_named().await;
    ledgerbridge_store::conformance::run_case(fixture, |store| async move {
        let (event, runs) = delivery("before");
        assert!(matches!(
            store.ingest(event, runs).await,
            Ok(IngestOutcome::Accepted { .. })
        ));

        // Take the database away: no new connections, the open ones killed.
        let mut admin = admin_connection(&server_url()).await;
        admin
            .execute(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false").as_str())
            .await
            .expect("refuse connections");
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(&name)
            .execute(&mut admin)
            .await
            .expect("terminate connections");
        let _ = admin.close().await;
        let deliveries: Vec<_> = (0..32).map(|i| delivery(&format!("gone-{i}"))).collect();
        for (index, outcome) in burst(&store, &deliveries).await.iter().enumerate() {
            assert!(
                matches!(outcome, Err(StoreError::Unavailable(_))),
                "delivery {index}: expected Unavailable, got {outcome:?}"
            );
        }

        // A closed store is unavailable too.
        pg_store.close().await;
        for (index, outcome) in burst(&store, &deliveries).await.iter().enumerate() {
            assert!(
                matches!(outcome, Err(StoreError::Unavailable(_))),
                "delivery {index} after close: expected Unavailable, got {outcome:?}"
            );
        }
    })
    .await;
}
