use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use ledgerbridge_store::{NewEvent, NewRun, Store, StepRecord};
use uuid::Uuid;

fn event(i: usize) -> NewEvent {
    NewEvent {
        id: Uuid::new_v4(),
        source: "ordercloud:uk".to_owned(),
        dedupe_key: format!("log-{i}-{}", Uuid::new_v4()),
        received_at: Utc::now(),
        headers: serde_json::json!({"x-oc-hash": "abcdefghijklmnop", "content-type": "application/json"}),
        body: vec![b'x'; 1500],
    }
}
fn run() -> NewRun {
    NewRun { id: Uuid::new_v4(), flow: "order-to-invoice".into(), flow_version: "1#abc".into(),
        input: serde_json::json!({"ID": "SO-1", "Total": 10.5}), not_before: Utc::now() + chrono::TimeDelta::seconds(3600) }
}

async fn bench(store: Arc<dyn Store>, label: &str) {
    let tasks = 64usize;
    let per = 150usize;
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..per { store.ingest(event(t * 100000 + i), vec![run()]).await.expect("ingest"); }
        }));
    }
    for h in handles { h.await.unwrap(); }
    let n = tasks * per;
    let el = start.elapsed();
    println!("{label}: ingest {n} events in {el:?} = {:.0}/s", n as f64 / el.as_secs_f64());

    // steps
    let ids: Vec<NewRun> = (0..tasks).map(|_| { let mut r = run(); r.not_before = Utc::now() - chrono::TimeDelta::seconds(10); r }).collect();
    store.ingest(event(9999999), ids).await.unwrap();
    let claimed = store.claim("w", Duration::from_secs(600), tasks as u32).await.unwrap();
    assert_eq!(claimed.len(), tasks);
    let start = Instant::now();
    let mut handles = Vec::new();
    for c in claimed {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..per {
                let now = Utc::now();
                store.record_step(&c.lease, &StepRecord { step: format!("s{i}"), output: serde_json::json!({"n": i}), attempts: 1, started_at: now, finished_at: now }).await.expect("step");
            }
        }));
    }
    for h in handles { h.await.unwrap(); }
    let el = start.elapsed();
    println!("{label}: {n} steps in {el:?} = {:.0}/s", n as f64 / el.as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perf_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = ledgerbridge_store::open(&format!("sqlite://{}/lb.db", dir.path().display())).await.unwrap();
    bench(store, "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perf_pg() {
    use sqlx::{Connection, Executor};
    let name = format!("lb_perf_{}", Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres").await.unwrap();
    admin.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
    let store = ledgerbridge_store::open(&format!("postgres://postgres@127.0.0.1:5432/{name}?pool_size=16")).await.unwrap();
    bench(store, "postgres").await;
    admin.execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perf_roundtrip() {
    use sqlx::{ConnectOptions, Executor};
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new().filename("/tmp/rt.db").create_if_missing(true).connect().await.unwrap();
    let start = Instant::now();
    for _ in 0..10000 { sqlx::query("SELECT 1").execute(&mut conn).await.unwrap(); }
    println!("roundtrip: {:?} per query", start.elapsed() / 10000);
    let start = Instant::now();
    for _ in 0..10000 { conn.execute("SAVEPOINT a; RELEASE a").await.unwrap(); }
    println!("savepoint+release str: {:?} per query", start.elapsed() / 10000);
}
