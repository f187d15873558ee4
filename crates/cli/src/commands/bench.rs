//! `ledgerbridge bench …`: benchmarks that print numbers (never tests that
//! assert timings). Run them on a quiet machine, in release mode:
//! `cargo run --release -- bench ingest`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_trait::async_trait;
use chrono::Utc;
use clap::{Args, Subcommand};
use ledgerbridge_core::Failure;
use ledgerbridge_engine::{Engine, EngineConfig, Flow, FlowRegistry, StepCtx, Trigger};
use ledgerbridge_server::{AppState, OrderCloudSource, ServerConfig, SourcesConfig};
use ledgerbridge_store::{NewRun, RunState, Store};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::config::Config;

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Durable webhook ingest over real HTTP: signed OrderCloud deliveries
    /// → event + run committed → 200.
    Ingest(IngestArgs),
    /// Engine overhead: runs of a flow whose steps do nothing, so all the
    /// time is claiming, journaling and finishing.
    Engine(EngineArgs),
    /// Resident memory idle, with a large backlog queued, while the target
    /// is down, and while the backlog drains at the target's rate limit.
    Memory(crate::commands::bench_memory::MemoryArgs),
    /// The order→invoice workload end to end against the sandbox: orders/s,
    /// latency from webhook to order patch, CPU per order, peak RSS.
    Orders(crate::commands::bench_orders::OrdersArgs),
    /// The order→invoice mapping of a flow file, compiled once: an
    /// OrderCloud order of N lines → KashFlow customer and invoice bodies,
    /// on one thread, no I/O.
    Mapping(crate::commands::bench_mapping::MappingArgs),
    /// One poll cycle of KashFlow customers: N customers listed, M changed
    /// ones detected and stored, none refetched one by one.
    Poll(crate::commands::bench_poll::PollArgs),
    /// One poll cycle of KashFlow product stock over HTTP (no engine): time
    /// and requests for N products of which M changed.
    Stock(crate::commands::bench_stock::StockArgs),
    /// Reconciliation of a period against the sandbox seeded in-process
    /// with N orders, their invoices and payments and known differences:
    /// fetch, match and total time over real HTTP.
    Reconcile(crate::commands::bench_reconcile::ReconcileBenchArgs),
}

/// Flags of `bench ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Deliveries to send.
    #[arg(long, default_value_t = 20_000)]
    pub events: usize,
    /// Concurrent senders.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

/// Flags of `bench engine`.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Runs to execute.
    #[arg(long, default_value_t = 5_000)]
    pub runs: usize,
    /// Steps per run.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Runs in flight at once (the engine's `workers`).
    #[arg(long, default_value_t = 64)]
    pub workers: usize,
}

const HASH_KEY: &str = "bench-hash-key";
const SUBMIT_ROUTE: &str = "v1/orders/{direction}/{orderID}/submit";

pub async fn run(config: Config, cmd: BenchCommand) -> anyhow::Result<()> {
    // `_scratch` keeps the default database's directory alive until the end.
    match cmd {
        BenchCommand::Ingest(args) => {
            let (store, _scratch) = open_store(&config).await?;
            ingest(store, args).await
        }
        BenchCommand::Engine(args) => {
            let (store, _scratch) = open_store(&config).await?;
            engine(store, args).await
        }
        BenchCommand::Memory(args) => {
            let (store, _scratch) = open_store(&config).await?;
            crate::commands::bench_memory::run(store, args).await
        }
        BenchCommand::Orders(args) => crate::commands::bench_orders::run(config, args).await,
        BenchCommand::Mapping(args) => crate::commands::bench_mapping::run(args),
        BenchCommand::Poll(args) => crate::commands::bench_poll::run(config, args).await,
        BenchCommand::Stock(args) => crate::commands::bench_stock::run(args).await,
        BenchCommand::Reconcile(args) => crate::commands::bench_reconcile::run(args).await,
    }
}

/// The configured store, or a fresh SQLite file in a scratch directory
/// (kept alive by the returned guard) when the default is configured.
pub(crate) async fn open_store(
    config: &Config,
) -> anyhow::Result<(Arc<dyn Store>, tempfile::TempDir)> {
    let scratch = tempfile::tempdir()?;
    let url = if config.database.url == crate::config::DatabaseConfig::default().url {
        format!("sqlite://{}/bench.db", scratch.path().display())
    } else {
        config.database.url.clone()
    };
    let store = ledgerbridge_store::open(&url).await?;
    println!(
        "backend: {} ({})",
        store.backend(),
        crate::commands::run::redact_url(&url)
    );
    Ok((store, scratch))
}

/// A flow of `n` steps that do nothing but return a small output.
pub struct NoopFlow {
    steps: Vec<&'static str>,
    triggers: Vec<Trigger>,
    fail: bool,
}

impl NoopFlow {
    /// `n` no-op steps; with `fail`, the first step always fails transiently.
    pub fn new(n: usize, fail: bool) -> Self {
        let names = ["s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10"];
        NoopFlow {
            steps: names
                .iter()
                .copied()
                .take(n.clamp(1, names.len()))
                .collect(),
            triggers: vec![Trigger::OrderCloud {
                route: SUBMIT_ROUTE.to_owned(),
                verb: "POST".to_owned(),
            }],
            fail,
        }
    }
}

#[async_trait]
impl Flow for NoopFlow {
    fn name(&self) -> &str {
        "bench-noop"
    }
    fn version(&self) -> &str {
        "1"
    }
    fn triggers(&self) -> &[Trigger] {
        &self.triggers
    }
    fn steps(&self) -> &[&'static str] {
        &self.steps
    }
    async fn run_step(&self, step: &str, _ctx: &mut StepCtx<'_>) -> Result<Value, Failure> {
        if self.fail {
            return Err(Failure::transient("bench: target down"));
        }
        Ok(json!({ "step": step }))
    }
}

/// POSTs an OrderCloud webhook `body` signed with `hash_key`; any non-2xx
/// answer is an error.
pub(crate) async fn post_signed(
    client: &reqwest::Client,
    url: &str,
    hash_key: &str,
    body: String,
) -> anyhow::Result<()> {
    let hash = ledgerbridge_server::signature::ordercloud_hash(hash_key, body.as_bytes());
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-oc-hash", hash)
        .body(body)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("webhook answered {}", response.status());
    }
    Ok(())
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn ingest(store: Arc<dyn Store>, args: IngestArgs) -> anyhow::Result<()> {
    let mut flows = FlowRegistry::new();
    flows.register(Arc::new(NoopFlow::new(1, false)));
    let mut sources = SourcesConfig::default();
    sources.ordercloud.insert(
        "bench".to_owned(),
        OrderCloudSource {
            hash_key: HASH_KEY.into(),
        },
    );
    let state = AppState {
        store: store.clone(),
        flows,
        wake: Arc::new(tokio::sync::Notify::new()),
        sources: Arc::new(sources),
        metrics: None,
        reconciler: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server_config = ServerConfig::default();
    let server = tokio::spawn(async move {
        ledgerbridge_server::serve(state, &server_config, listener, std::future::pending()).await
    });
    let url = format!("http://{addr}/webhooks/ordercloud/bench");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let client = client.clone();
        let url = url.clone();
        let next = next.clone();
        let total = args.events;
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let body = json!({
                    "Route": SUBMIT_ROUTE, "Verb": "POST",
                    "RouteParams": {"direction": "Incoming", "orderID": format!("BENCH-{i}")},
                    "LogID": Uuid::new_v4().to_string(),
                    "Date": Utc::now().to_rfc3339(),
                    "Request": {"Body": null, "Headers": null},
                    "Response": {"Body": {"ID": format!("BENCH-{i}")}, "Headers": null},
                    "ConfigData": {}
                })
                .to_string();
                let t = Instant::now();
                post_signed(&client, &url, HASH_KEY, body)
                    .await
                    .with_context(|| format!("delivery {i}"))?;
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(args.events);
    while let Some(result) = tasks.join_next().await {
        latencies.extend(result??);
    }
    let elapsed = started.elapsed();
    server.abort();
    latencies.sort_by(f64::total_cmp);
    let counts = store.count_by_state().await?;
    let queued = counts
        .iter()
        .find(|(s, _)| *s == RunState::Queued)
        .map(|c| c.1)
        .unwrap_or(0);
    println!(
        "ingest: {} events, concurrency {}, {:.2} s, {:.0} events/s, latency p50 {:.2} ms p99 {:.2} ms; runs queued: {}",
        args.events,
        args.concurrency,
        elapsed.as_secs_f64(),
        args.events as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        queued
    );
    if queued as usize != args.events {
        bail!("expected {} queued runs, found {queued}", args.events);
    }
    Ok(())
}

async fn engine(store: Arc<dyn Store>, args: EngineArgs) -> anyhow::Result<()> {
    let flow = Arc::new(NoopFlow::new(args.steps, false));
    let step_count = flow.steps().len();
    let mut flows = FlowRegistry::new();
    flows.register(flow);
    let now = Utc::now();
    let mut ids = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let id = Uuid::now_v7();
        ids.push(id);
        store
            .enqueue(NewRun {
                id,
                flow: "bench-noop".to_owned(),
                flow_version: "1".to_owned(),
                input: json!({}),
                not_before: now,
            })
            .await?;
    }
    let config = EngineConfig {
        workers: args.workers.max(1),
        ..EngineConfig::default()
    };
    let engine = Engine::new(store.clone(), flows, config);
    let started = Instant::now();
    let handle = engine.start();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let counts = store.count_by_state().await?;
        let done = counts
            .iter()
            .find(|(s, _)| *s == RunState::Succeeded)
            .map(|c| c.1)
            .unwrap_or(0);
        if done as usize >= args.runs {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!(
                "engine bench did not finish in 10 minutes ({done} of {} runs done)",
                args.runs
            );
        }
    }
    let elapsed = started.elapsed();
    handle.shutdown().await;
    // Per-step time from the journal: gap between consecutive step ends.
    let mut gaps = Vec::new();
    for id in ids.iter().step_by((ids.len() / 1000).max(1)) {
        let detail = store.run(*id).await?.context("run vanished")?;
        let mut ends: Vec<_> = detail.journal.iter().map(|s| s.finished_at).collect();
        ends.sort();
        for pair in ends.windows(2) {
            gaps.push((pair[1] - pair[0]).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
    }
    gaps.sort_by(f64::total_cmp);
    let steps_total = args.runs * step_count;
    println!(
        "engine: {} runs x {} steps, {} workers, {:.2} s, {:.0} runs/s, {:.0} steps/s ({:.3} ms of engine time per step); per-step latency (journal, incl. durable commit) median {:.3} ms p99 {:.3} ms",
        args.runs,
        step_count,
        args.workers,
        elapsed.as_secs_f64(),
        args.runs as f64 / elapsed.as_secs_f64(),
        steps_total as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / steps_total as f64,
        percentile(&gaps, 0.5),
        percentile(&gaps, 0.99)
    );
    Ok(())
}

/// Resident set size of this process, in MiB (Linux).
pub fn rss_mib() -> f64 {
    proc_status_mib("VmRSS:")
}

/// A memory field of `/proc/self/status` (e.g. `VmRSS:`, `VmHWM:`), in MiB
/// (Linux; NaN elsewhere).
pub(crate) fn proc_status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}
