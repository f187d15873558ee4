//! The error policy and the dead-letter queue, end to end: the real
//! `ledgerbridge run` process against the simulators with faults injected,
//! and the real `ledgerbridge runs …` commands working its queue.

mod common;

use std::time::Duration;

use common::*;
use ledgerbridge_store::{RunFilter, RunState, Store};
use serde_json::Value;

struct Setup {
    _dir: tempfile::TempDir,
    target: Target,
    spec: EngineSpec,
    engine: Engine,
    database: String,
}

async fn setup(extra_config: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/engine.db", dir.path().display());
    let target = Target::start().await;
    let mut spec = EngineSpec::new(&database, dir.path());
    spec.extra = extra_config.to_owned();
    let mut engine = Engine::spawn(&spec, &target);
    engine.wait_healthy().await;
    Setup {
        _dir: dir,
        target,
        spec,
        engine,
        database,
    }
}

impl Setup {
    async fn send(&self, order: &str) {
        let body = submit_envelope(order, &uuid::Uuid::new_v4().to_string());
        deliver(&reqwest::Client::new(), &self.spec.base(), &body).await;
    }

    async fn store(&self) -> std::sync::Arc<dyn Store> {
        ledgerbridge_store::open(&self.database).await.unwrap()
    }

    async fn runs(&self) -> Vec<ledgerbridge_store::Run> {
        self.store()
            .await
            .list_runs(&RunFilter {
                limit: 1000,
                ..RunFilter::default()
            })
            .await
            .unwrap()
    }

    /// Polls until every run is in one of `states`.
    async fn wait_all(&self, states: &[RunState]) -> Vec<ledgerbridge_store::Run> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let runs = self.runs().await;
            if !runs.is_empty() && runs.iter().all(|r| states.contains(&r.state)) {
                return runs;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "runs not {states:?}: {runs:#?}\n{}",
                self.engine.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let config = self.spec.config_path();
        let mut all = vec!["--config", config.to_str().unwrap()];
        all.extend_from_slice(args);
        cli(&all)
    }

    async fn metric(&self, name_and_labels: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.spec.base()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(name_and_labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// 503s from KashFlow: the run retries with backoff (attempts grow, the
/// next attempt is scheduled in the future), then succeeds once KashFlow
/// recovers, with exactly one invoice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_back_off_and_recover() {
    let s = setup("").await;
    s.target
        .fault("kashflow/invoices:error_rate=1,status=503,method=POST");
    let orders = s.target.place_orders(1, "SO-TR").await;
    s.send(&orders[0]).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let run = loop {
        let runs = s.runs().await;
        if let Some(run) = runs.iter().find(|r| r.attempts >= 3) {
            if run.state == RunState::Retrying {
                break run.clone();
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "{runs:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let error = run.last_error.as_ref().expect("error recorded");
    assert_eq!(error.class.as_str(), "transient", "{error:?}");
    assert_eq!(error.step.as_deref(), Some("invoice"));
    assert!(run.first_failure_at.is_some());
    assert!(run.next_attempt_at > run.updated_at - chrono::Duration::milliseconds(1));
    assert!(s.metric("lb_retries_total").await >= 2.0);

    s.target.clear_faults();
    s.wait_all(&[RunState::Succeeded]).await;
    s.target.assert_exactly_one_invoice_each(&orders);
}

/// 429 with Retry-After: the run is rescheduled no sooner than the target
/// asked, the whole KashFlow target pauses, and every order still gets
/// exactly one invoice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_honoured() {
    let s = setup("").await;
    s.target
        .fault("kashflow/invoices:rate_limit=60/min,burst=2");
    let orders = s.target.place_orders(8, "SO-RL").await;
    for order in &orders {
        s.send(order).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let limited = loop {
        let runs = s.runs().await;
        let found = runs.iter().find(|r| {
            r.state == RunState::Retrying
                && r.last_error
                    .as_ref()
                    .is_some_and(|e| e.class.as_str() == "rate_limited")
        });
        if let Some(run) = found {
            break run.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "{runs:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The simulator answers Retry-After: 1 (one token per second): the run
    // waits at least that long from when its failure was recorded.
    let wait = limited.next_attempt_at - limited.updated_at;
    assert!(
        wait >= chrono::Duration::milliseconds(900),
        "rescheduled after {wait} only: {limited:#?}"
    );
    // The whole target slows down: later requests wait for the limiter
    // (polled — the next wait may come a moment after the first 429).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while s
        .metric("lb_rate_limit_waits_total{target=\"kashflow\"}")
        .await
        < 1.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no request waited for the KashFlow rate limit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.target.clear_faults();
    s.wait_all(&[RunState::Succeeded]).await;
    s.target.assert_exactly_one_invoice_each(&orders);
}

/// A validation error parks the run at once with KashFlow's own message;
/// `runs replay --dry-run` prints what a replay would send and changes
/// nothing; after the cause is fixed `runs replay` finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_parks_and_the_queue_is_worked_from_the_cli() {
    let s = setup("").await;
    s.target
        .fault("kashflow/invoices:validation_400=1,method=POST");
    let orders = s.target.place_orders(2, "SO-VP").await;
    // One at a time: two orders of one new customer racing for the customer
    // record would add a (transient) attempt.
    for order in &orders {
        s.send(order).await;
        s.wait_all(&[RunState::Parked]).await;
    }
    let parked = s.wait_all(&[RunState::Parked]).await;
    assert_eq!(parked.len(), 2);
    for run in &parked {
        assert_eq!(run.attempts, 1, "parked at once, not retried");
        let error = run.last_error.as_ref().unwrap();
        assert_eq!(error.class.as_str(), "validation");
        assert_eq!(error.step.as_deref(), Some("invoice"));
        assert!(!error.message.is_empty());
    }
    assert!(s.target.invoices_by_reference().is_empty());

    // The CLI lists them, as a table and as JSON.
    let (code, out, err) = s.cli(&["runs", "list", "--state", "parked"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 run(s)"), "{out}");
    assert!(out.contains("validation at invoice"), "{out}");
    let (code, out, _) = s.cli(&["runs", "list", "--state", "parked", "--json"]);
    assert_eq!(code, 0);
    let listed: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.len(), 2);

    // Dry run: the requests are printed, nothing is sent or changed.
    let id = parked[0].id.to_string();
    let posts_before = s.target.count("POST /kashflow/v2/invoices");
    let (code, out, err) = s.cli(&["runs", "replay", &id, "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("a replay would send"), "{out}");
    assert!(out.contains("POST") && out.contains("/invoices"), "{out}");
    assert!(out.contains("CustomerReference"), "{out}");
    assert_eq!(s.target.count("POST /kashflow/v2/invoices"), posts_before);
    assert!(s.target.invoices_by_reference().is_empty());
    let still = s.store().await.run(parked[0].id).await.unwrap().unwrap();
    assert_eq!(still.run.state, RunState::Parked);

    // Fixed at the source: replay one by id, the other with --all-parked.
    s.target.clear_faults();
    let (code, out, err) = s.cli(&["runs", "replay", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("queued for replay"), "{out}");
    let (code, _, err) = s.cli(&["runs", "replay", "--all-parked"]);
    assert_eq!(code, 0, "{err}");
    s.wait_all(&[RunState::Succeeded]).await;
    s.target.assert_exactly_one_invoice_each(&orders);
}

/// A run that cannot succeed as received (the event names an order that
/// does not exist) parks; its input is edited and replayed over the REST
/// API; another is discarded from the CLI and stays discarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_input_can_be_edited_before_replay_and_runs_discarded() {
    let s = setup("").await;
    let orders = s.target.place_orders(1, "SO-ED").await;
    s.send("SO-DOES-NOT-EXIST").await;
    s.send("SO-ALSO-MISSING").await;
    let parked = s.wait_all(&[RunState::Parked]).await;
    assert_eq!(parked.len(), 2);
    let error = parked[0].last_error.as_ref().unwrap();
    assert_eq!(error.class.as_str(), "not_found", "{error:?}");
    assert_eq!(error.step.as_deref(), Some("get_order"));

    let (fix, drop) = if parked[0].input.to_string().contains("SO-DOES-NOT-EXIST") {
        (&parked[0], &parked[1])
    } else {
        (&parked[1], &parked[0])
    };
    // Edit: point the run at the real order, over the REST API.
    let edited: Value = serde_json::from_str(
        &fix.input
            .to_string()
            .replace("SO-DOES-NOT-EXIST", &orders[0]),
    )
    .unwrap();
    let client = reqwest::Client::new();
    let answer: Value = client
        .post(format!("{}/api/runs/{}/replay", s.spec.base(), fix.id))
        .json(&serde_json::json!({"input": edited}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["replayed"], true, "{answer}");

    let (code, out, err) = s.cli(&[
        "runs",
        "discard",
        &drop.id.to_string(),
        "--reason",
        "test order",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("discarded"));

    s.wait_all(&[RunState::Succeeded, RunState::Discarded])
        .await;
    s.target.assert_exactly_one_invoice_each(&orders);
    let dropped = s.store().await.run(drop.id).await.unwrap().unwrap();
    assert_eq!(dropped.run.state, RunState::Discarded);

    // Unknown ids and states are clear errors.
    let (code, _, err) = s.cli(&["runs", "show", &uuid::Uuid::new_v4().to_string()]);
    assert_ne!(code, 0);
    assert!(err.contains("no run"), "{err}");
    let (code, _, err) = s.cli(&["runs", "list", "--state", "stuck"]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown state"), "{err}");
}

/// Wrong KashFlow credentials: one login attempt per run attempt at most,
/// and the run parks as an auth failure instead of hammering the login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures_park() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/engine.db", dir.path().display());
    let target = Target::start().await;
    let spec = EngineSpec::new(&database, dir.path());
    let path = spec.write_config(&target);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("password = \"sim-password\"", "password = \"wrong\"");
    std::fs::write(&path, text).unwrap();
    // Engine::spawn rewrites the config: start the process by hand.
    let log = dir.path().join("auth.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = std::process::Command::new(binary())
        .arg("--config")
        .arg(&path)
        .arg("run")
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let orders = target.place_orders(1, "SO-AU").await;
    let body = submit_envelope(&orders[0], "log-auth-1");
    deliver(&reqwest::Client::new(), &spec.base(), &body).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let store = ledgerbridge_store::open(&database).await.unwrap();
        let runs = store
            .list_runs(&RunFilter {
                limit: 10,
                ..RunFilter::default()
            })
            .await
            .unwrap();
        if let Some(run) = runs.iter().find(|r| r.state == RunState::Parked) {
            let error = run.last_error.as_ref().unwrap();
            assert_eq!(error.class.as_str(), "auth", "{error:?}");
            assert_eq!(run.attempts, 1);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{runs:#?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logins = target.count("POST /kashflow/v2/sessiontoken");
    assert!(logins <= 2, "{logins} login attempts");
    assert!(target.invoices_by_reference().is_empty());
    let _ = child.kill();
    let _ = child.wait();
}
