//! `ledgerbridge bench orders`: the order→invoice workload end to end.
//!
//! The sandbox runs as a separate process (so its CPU is not counted as
//! ours); orders are placed in its OrderCloud first, untimed. Then the
//! engine (this process, durable store) receives one signed webhook per
//! order and does the real flow over HTTP: get order, get lines,
//! find/create the customer, create the invoice, patch the order.
//!
//! Phase 1 sends as fast as `--concurrency` senders can: orders/s and CPU
//! seconds per order. Phase 2 sends at a fixed rate (default half of phase
//! 1's): latency from the webhook's commit to the run's end (after the
//! order's xp patch), p50/p99. With `--fault kashflow:rate_limit=60/min`
//! and `--duration`, phase 3 measures throughput under the target's limit.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::Utc;
use clap::Args;
use ledgerbridge_connectors::kashflow::KashFlowConfig;
use ledgerbridge_connectors::ordercloud::OrderCloudConfig;
use ledgerbridge_sandbox::driver::{self, DriverConfig, DriverCredentials};
use ledgerbridge_server::OrderCloudSource;
use ledgerbridge_store::{RunFilter, RunState, Store};
use serde_json::json;
use uuid::Uuid;

use crate::commands::bench::{percentile, post_signed, proc_status_mib};
use crate::commands::run::{install_metrics, App};
use crate::config::Config;

const HASH_KEY: &str = "bench-orders-hash-key";

/// Flags of `bench orders`.
#[derive(Debug, Args)]
pub struct OrdersArgs {
    /// Orders in each of the two phases.
    #[arg(long, default_value_t = 3000)]
    pub orders: usize,
    /// Concurrent webhook senders in the throughput phase.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Orders per second in the latency phase (default: half of phase 1).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Engine workers (runs in flight).
    #[arg(long, default_value_t = 128)]
    pub workers: usize,
    /// Rate-limit phase instead: sandbox fault rules (e.g.
    /// `kashflow:rate_limit=60/min`) and how long to keep orders coming.
    #[arg(long = "fault", value_name = "SPEC")]
    pub faults: Vec<String>,
    /// Length of the rate-limit phase, in seconds.
    #[arg(long, default_value_t = 180)]
    pub duration: u64,
}

struct SandboxProcess {
    child: Child,
    base: String,
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_sandbox(faults: &[String]) -> anyhow::Result<SandboxProcess> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["sandbox", "--listen", &format!("127.0.0.1:{port}")]);
    for fault in faults {
        cmd.args(["--fault", fault]);
    }
    let child = cmd
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the sandbox process")?;
    Ok(SandboxProcess {
        child,
        base: format!("http://127.0.0.1:{port}"),
    })
}

async fn wait_up(base: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{base}/_sandbox/faults")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("the sandbox at {base} did not come up")
}

/// utime + stime of a process, in seconds (Linux).
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(f64::NAN);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

fn envelope(order: &str) -> String {
    json!({
        "Route": "v1/orders/{direction}/{orderID}/submit",
        "RouteParams": {"direction": "Outgoing", "orderID": order},
        "Verb": "POST",
        "Date": Utc::now().to_rfc3339(),
        "LogID": Uuid::new_v4().to_string(),
        "UserToken": "bench",
        "Request": {"Body": null, "Headers": null},
        "Response": {"Body": {"ID": order}, "Headers": null},
        "ConfigData": {}
    })
    .to_string()
}

async fn send(client: &reqwest::Client, url: &str, order: &str) -> anyhow::Result<()> {
    post_signed(client, url, HASH_KEY, envelope(order))
        .await
        .with_context(|| format!("webhook for {order}"))
}

async fn counts(store: &dyn Store) -> anyhow::Result<(i64, i64, i64)> {
    let counts = store.count_by_state().await?;
    let get = |s: RunState| {
        counts
            .iter()
            .find(|(k, _)| *k == s)
            .map(|c| c.1)
            .unwrap_or(0)
    };
    Ok((
        get(RunState::Succeeded),
        get(RunState::Parked),
        get(RunState::Retrying),
    ))
}

/// Waits until `target` runs succeeded; fails on any parked run.
async fn wait_succeeded(store: &dyn Store, target: i64, limit: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let (ok, parked, _) = counts(store).await?;
        if parked > 0 {
            bail!("{parked} run(s) parked: see `ledgerbridge runs list --state parked`");
        }
        if ok >= target {
            return Ok(());
        }
        if started.elapsed() > limit {
            bail!("only {ok} of {target} runs done after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Latencies (ms) from run creation to success, of every succeeded run
/// created at or after `since`.
async fn run_latencies(
    store: &dyn Store,
    since: chrono::DateTime<Utc>,
) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list_runs(&RunFilter {
                state: Some(RunState::Succeeded),
                flow: None,
                before,
                limit: 1000,
            })
            .await?;
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        let mut older = false;
        for run in &page {
            if run.created_at < since {
                older = true;
                continue;
            }
            out.push(
                (run.updated_at - run.created_at)
                    .num_microseconds()
                    .unwrap_or(0) as f64
                    / 1000.0,
            );
        }
        if older || page.len() < 1000 {
            break;
        }
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

fn kashflow_requests(
    metrics: &Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> (f64, f64) {
    let Some(handle) = metrics else {
        return (f64::NAN, f64::NAN);
    };
    let text = handle.render();
    let mut ok = 0.0;
    let mut limited = 0.0;
    for line in text.lines() {
        if !line.starts_with("lb_target_requests_total") || !line.contains("target=\"kashflow\"") {
            continue;
        }
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if line.contains("outcome=\"success\"") {
            ok += value;
        } else if line.contains("outcome=\"overloaded\"") {
            limited += value;
        }
    }
    (ok, limited)
}

pub async fn run(mut config: Config, args: OrdersArgs) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    if config.database.url == crate::config::DatabaseConfig::default().url {
        config.database.url = format!("sqlite://{}/bench-orders.db", scratch.path().display());
    }
    let sandbox = spawn_sandbox(&args.faults)?;
    wait_up(&sandbox.base).await?;
    let oc_url = format!("{}/ordercloud", sandbox.base);
    let rate_limited = !args.faults.is_empty();
    let phase_orders = if rate_limited {
        // Enough to keep a limited target busy for the whole duration.
        (args.duration as usize).max(60)
    } else {
        args.orders
    };
    let total = if rate_limited {
        phase_orders
    } else {
        phase_orders * 2
    };

    println!("placing {total} orders in the sandbox's OrderCloud (untimed)…");
    let placed = Instant::now();
    let report = driver::run(
        &oc_url,
        None,
        &DriverCredentials::default(),
        &DriverConfig {
            orders: total,
            rate_per_sec: 1_000_000.0,
            pay_share: 0.0,
            ..DriverConfig::default()
        },
    )
    .await
    .context("placing orders")?;
    if report.order_ids.len() != total {
        bail!(
            "the driver placed {} of {total} orders",
            report.order_ids.len()
        );
    }
    println!(
        "  {} orders, {} lines, {} new customers, in {:.1} s",
        total,
        report.line_items,
        report.new_customers,
        placed.elapsed().as_secs_f64()
    );

    let sim = ledgerbridge_sandbox::config::SandboxConfig::default();
    config.connections.kashflow = Some(KashFlowConfig::new(
        format!("{}/kashflow/v2", sandbox.base),
        sim.kashflow.username.clone(),
        sim.kashflow.password.as_str().into(),
        sim.kashflow.memorable_word.as_str().into(),
    ));
    let credentials = DriverCredentials::default();
    config.connections.ordercloud = Some(OrderCloudConfig::new(
        oc_url.clone(),
        credentials.client_id.clone(),
        credentials.client_secret.as_str().into(),
        "",
    ));
    config.sources.ordercloud.insert(
        "bench".to_owned(),
        OrderCloudSource {
            hash_key: HASH_KEY.into(),
        },
    );
    config.server.listen = "127.0.0.1:0".to_owned();
    config.engine.workers = args.workers;
    let metrics = install_metrics();
    let app = App::start(&config).await?;
    let store = app.store.clone();
    let url = format!("http://{}/webhooks/ordercloud/bench", app.addr);
    println!(
        "engine: {} backend, {} workers, durable commits",
        store.backend(),
        args.workers
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(16))
        .build()?;
    let me = std::process::id().to_string();
    let sandbox_pid = sandbox.child.id().to_string();
    let mut orders = report.order_ids.into_iter();

    if rate_limited {
        let rate = (phase_orders as f64 / args.duration as f64).max(0.5);
        println!(
            "rate-limit phase: {} orders at {rate:.2}/s over {} s against {:?}",
            phase_orders, args.duration, args.faults
        );
        let started = Instant::now();
        let (ok0, limited0) = kashflow_requests(&metrics);
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        let mut sent = 0;
        for order in orders.by_ref().take(phase_orders) {
            ticker.tick().await;
            send(&client, &url, &order).await?;
            sent += 1;
            if started.elapsed() >= Duration::from_secs(args.duration) {
                break;
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        let (ok1, limited1) = kashflow_requests(&metrics);
        let (done, parked, retrying) = counts(store.as_ref()).await?;
        let per_min = (ok1 - ok0) / elapsed * 60.0;
        println!(
            "rate-limited: {sent} orders in over {elapsed:.0} s; KashFlow answered {:.0} requests ({per_min:.1}/min) and refused {:.0} with 429; runs: {done} done, {retrying} waiting, {parked} parked",
            ok1 - ok0,
            limited1 - limited0
        );
        app.stop().await;
        return Ok(());
    }

    // Phase 1: throughput.
    let cpu0 = cpu_seconds(&me);
    let sandbox_cpu0 = cpu_seconds(&sandbox_pid);
    let started = Instant::now();
    let batch: Vec<String> = orders.by_ref().take(phase_orders).collect();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let batch = std::sync::Arc::new(batch);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (client, url, next, batch) = (client.clone(), url.clone(), next.clone(), batch.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(order) = batch.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                send(&client, &url, order).await?;
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let accepted = started.elapsed().as_secs_f64();
    wait_succeeded(
        store.as_ref(),
        phase_orders as i64,
        Duration::from_secs(600),
    )
    .await?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(&me) - cpu0;
    let sandbox_cpu = cpu_seconds(&sandbox_pid) - sandbox_cpu0;
    let throughput = phase_orders as f64 / elapsed;
    println!(
        "throughput: {phase_orders} orders invoiced in {elapsed:.2} s = {throughput:.0} orders/s (webhooks accepted in {accepted:.2} s); CPU {:.3} ms/order in the engine process (sandbox {:.3} ms/order)",
        cpu * 1000.0 / phase_orders as f64,
        sandbox_cpu * 1000.0 / phase_orders as f64,
    );

    // Phase 2: latency at a fixed rate.
    let rate = args.rate.unwrap_or(throughput / 2.0).max(1.0);
    let since = Utc::now();
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut inflight = tokio::task::JoinSet::new();
    for (i, order) in orders.by_ref().take(phase_orders).enumerate() {
        let due = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let (client, url) = (client.clone(), url.clone());
        inflight.spawn(async move { send(&client, &url, &order).await });
    }
    while let Some(result) = inflight.join_next().await {
        result??;
    }
    wait_succeeded(
        store.as_ref(),
        (phase_orders * 2) as i64,
        Duration::from_secs(600),
    )
    .await?;
    let latencies = run_latencies(store.as_ref(), since).await?;
    println!(
        "latency at {rate:.0} orders/s: webhook committed → order patched, p50 {:.1} ms, p99 {:.1} ms ({} runs)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.len()
    );
    println!(
        "peak RSS of the engine process: {:.1} MiB",
        proc_status_mib("VmHWM:")
    );
    app.stop().await;
    Ok(())
}
