//! `ledgerbridge bench memory`: resident memory idle, with a large backlog
//! queued, while the engine works that backlog against a target that is
//! down, and while the backlog drains once the target is back behind its
//! rate limit.
//!
//! The target is a stub served in this process behind the sandbox's fault
//! middleware (KashFlow's error format): `POST /kashflow/v2/deliveries/{i}`
//! answers 200 and counts event `i` (one byte per event). While down every
//! request is a 503; when back, a token bucket of `--limit-per-min`
//! answers 429 with `Retry-After` beyond it. The flow delivers each event
//! through the connectors' delivery limiter, as every connector does, so
//! the drain rate is the engine's own pacing. At the end the bench checks
//! the books: every run is succeeded or still waiting (none parked, none
//! lost), every succeeded run's event reached the target, and no event
//! reached it twice; any difference is an error.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_trait::async_trait;
use axum::extract::{Path, State};
use axum::routing::post;
use chrono::Utc;
use clap::Args;
use ledgerbridge_connectors::delivery::{classify, classify_transport_error, parse_retry_after};
use ledgerbridge_connectors::{Target, TargetLimits};
use ledgerbridge_core::Failure;
use ledgerbridge_engine::{Engine, EngineConfig, Flow, FlowRegistry, StepCtx, Trigger};
use ledgerbridge_sandbox::faults::{self, parse_fault_spec, Faults, FaultsConfig};
use ledgerbridge_store::{NewEvent, NewRun, RunState, Store};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::commands::bench::rss_mib;

/// Flags of `bench memory`.
#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// Events to queue.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Seconds the target is down (every request a 503) while the engine
    /// works the backlog.
    #[arg(long, default_value_t = 10)]
    pub down_secs: u64,
    /// The target's rate limit once it is back, in requests per minute
    /// (a token bucket holding 10 s worth; 429 with `Retry-After` beyond).
    #[arg(long, default_value_t = 600)]
    pub limit_per_min: u32,
    /// Longest time to watch the drain, in seconds; 0 = until the backlog
    /// is empty.
    #[arg(long, default_value_t = 300)]
    pub drain_secs: u64,
}

const FLOW: &str = "bench-deliver";

/// What the stub target received, per event.
struct Received {
    /// Deliveries of event `i` (saturating at 255).
    per_event: Vec<AtomicU8>,
    /// Accepted deliveries in all.
    total: AtomicU64,
}

impl Received {
    fn new(events: usize) -> Self {
        Received {
            per_event: (0..events).map(|_| AtomicU8::new(0)).collect(),
            total: AtomicU64::new(0),
        }
    }
}

async fn receive(
    State(received): State<Arc<Received>>,
    Path(i): Path<usize>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(count) = received.per_event.get(i) else {
        return (axum::http::StatusCode::NOT_FOUND, "no such event").into_response();
    };
    let _ = count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1));
    received.total.fetch_add(1, Ordering::Relaxed);
    axum::Json(json!({ "Received": i })).into_response()
}

/// The stub target on a loopback port; its base URL.
async fn serve_target(received: Arc<Received>, faults: Arc<Faults>) -> anyhow::Result<String> {
    let router = axum::Router::new()
        .route("/kashflow/v2/deliveries/{i}", post(receive))
        .with_state(received)
        .layer(faults::layer("kashflow", faults));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(format!("http://{addr}/kashflow/v2"))
}

/// One step: POST the event's index to the target, through the target's
/// shared delivery limiter (pause after a 429, learned rate, adaptive
/// concurrency), classified like every connector's answers.
struct DeliverFlow {
    http: reqwest::Client,
    base: String,
    target: Target,
    triggers: Vec<Trigger>,
}

impl DeliverFlow {
    fn new(base: String) -> anyhow::Result<Self> {
        let limits = TargetLimits::default();
        Ok(DeliverFlow {
            http: reqwest::Client::builder().timeout(limits.timeout).build()?,
            base,
            target: Target::new("kashflow", limits),
            triggers: Vec::new(),
        })
    }

    async fn deliver(&self, i: u64) -> Result<Value, Failure> {
        let permit = self
            .target
            .acquire_within(self.target.limits().timeout)
            .await?;
        let what = format!("POST /deliveries/{i}");
        let response = match self
            .http
            .post(format!("{}/deliveries/{i}", self.base))
            .json(&json!({ "Event": i }))
            .send()
            .await
        {
            Ok(response) => response,
            Err(err) => {
                permit.overloaded();
                return Err(classify_transport_error(&err, "kashflow", &what));
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = response.text().await.unwrap_or_default();
        if status.is_success() {
            permit.success();
            return Ok(json!({ "delivered": i }));
        }
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            self.target.on_rate_limited(retry_after);
        }
        permit.overloaded();
        Err(classify(status, &body, retry_after, "kashflow"))
    }
}

#[async_trait]
impl Flow for DeliverFlow {
    fn name(&self) -> &str {
        FLOW
    }
    fn version(&self) -> &str {
        "1"
    }
    fn triggers(&self) -> &[Trigger] {
        &self.triggers
    }
    fn steps(&self) -> &[&'static str] {
        &["deliver"]
    }
    async fn run_step(&self, _step: &str, ctx: &mut StepCtx<'_>) -> Result<Value, Failure> {
        let i = ctx.input()["i"].as_u64().unwrap_or(u64::MAX);
        self.deliver(i).await
    }
}

/// Samples this process's RSS every `every` for `total` (or until `done`
/// says so); the peak.
async fn peak_rss_while(
    total: Duration,
    every: Duration,
    mut done: impl FnMut() -> bool,
) -> (f64, Duration) {
    let started = Instant::now();
    let mut peak = rss_mib();
    while started.elapsed() < total && !done() {
        tokio::time::sleep(every).await;
        peak = peak.max(rss_mib());
    }
    (peak, started.elapsed())
}

fn count(counts: &[(RunState, i64)], state: RunState) -> u64 {
    counts
        .iter()
        .find(|(s, _)| *s == state)
        .map_or(0, |c| c.1.max(0) as u64)
}

fn fault_hits(faults: &Faults, kind: &str) -> u64 {
    faults
        .counters()
        .iter()
        .filter(|(key, _)| key.ends_with(kind))
        .map(|(_, n)| n)
        .sum()
}

async fn queue(store: &Arc<dyn Store>, events: usize) -> anyhow::Result<()> {
    let concurrency = 64;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let store = store.clone();
        let next = next.clone();
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= events {
                    return Ok::<_, anyhow::Error>(());
                }
                let now = Utc::now();
                let body = format!("{{\"i\":{i}}}").into_bytes();
                store
                    .ingest(
                        NewEvent {
                            id: Uuid::now_v7(),
                            source: "bench".to_owned(),
                            dedupe_key: i.to_string(),
                            received_at: now,
                            headers: json!({}),
                            body,
                        },
                        vec![NewRun {
                            id: Uuid::now_v7(),
                            flow: FLOW.to_owned(),
                            flow_version: "1".to_owned(),
                            input: json!({ "i": i }),
                            not_before: now,
                        }],
                    )
                    .await?;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

pub async fn run(store: Arc<dyn Store>, args: MemoryArgs) -> anyhow::Result<()> {
    let received = Arc::new(Received::new(args.events));
    let faults = Arc::new(Faults::new(&FaultsConfig::default()));
    let base = serve_target(received.clone(), faults.clone()).await?;
    let flow = Arc::new(DeliverFlow::new(base)?);
    let mut flows = FlowRegistry::new();
    flows.register(flow.clone());

    let idle_engine = Engine::new(store.clone(), flows.clone(), EngineConfig::default()).start();
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("memory: idle engine RSS {:.1} MiB", rss_mib());
    idle_engine.shutdown().await;

    let started = Instant::now();
    queue(&store, args.events).await?;
    println!(
        "memory: queued {} events in {:.1} s; RSS {:.1} MiB",
        args.events,
        started.elapsed().as_secs_f64(),
        rss_mib()
    );

    let spec = |text: &str| parse_fault_spec(text).map_err(|e| anyhow::anyhow!(e));
    faults
        .add(spec("kashflow:error_rate=1,status=503")?)
        .map_err(|e| anyhow::anyhow!(e))?;
    let engine = Engine::new(store.clone(), flows, EngineConfig::default()).start();
    let (peak_down, _) = peak_rss_while(
        Duration::from_secs(args.down_secs),
        Duration::from_millis(250),
        || false,
    )
    .await;
    println!(
        "memory: engine working a {}-event backlog against a target that is down ({} × 503 in {} s): peak RSS {:.1} MiB",
        args.events,
        fault_hits(&faults, "error_rate"),
        args.down_secs,
        peak_down
    );

    faults.clear();
    faults
        .add(spec(&format!(
            "kashflow:rate_limit={}/min",
            args.limit_per_min
        ))?)
        .map_err(|e| anyhow::anyhow!(e))?;
    let delivered_before = received.total.load(Ordering::Relaxed);
    let window = match args.drain_secs {
        0 => Duration::MAX,
        secs => Duration::from_secs(secs),
    };
    // Deliveries per second of the drain, for the rate of its last minute.
    let mut marks: Vec<(Instant, u64)> = vec![(Instant::now(), delivered_before)];
    let drain_started = Instant::now();
    let mut peak_drain = rss_mib();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak_drain = peak_drain.max(rss_mib());
        let delivered = received.total.load(Ordering::Relaxed);
        if marks
            .last()
            .is_none_or(|(at, _)| at.elapsed() >= Duration::from_secs(1))
        {
            marks.push((Instant::now(), delivered));
        }
        let all_in = delivered >= args.events as u64 && {
            let counts = store.count_by_state().await?;
            count(&counts, RunState::Succeeded) >= args.events as u64
        };
        if all_in || drain_started.elapsed() >= window {
            break;
        }
    }
    let drain_time = drain_started.elapsed();
    engine.shutdown().await;
    let delivered = received.total.load(Ordering::Relaxed) - delivered_before;
    let last = marks.last().copied().context("no drain samples")?;
    let minute_ago = marks
        .iter()
        .rev()
        .find(|(at, _)| last.0.duration_since(*at) >= Duration::from_secs(60))
        .copied();
    let last_minute = match minute_ago {
        Some((at, n)) => format!(
            "{:.0}/min",
            (last.1 - n) as f64 * 60.0 / last.0.duration_since(at).as_secs_f64()
        ),
        None => "n/a (drain under a minute)".to_owned(),
    };
    println!(
        "memory: target back with a limit of {}/min: {} delivered in {:.1} s ({:.0}/min overall, {} in the last minute), {} × 429, learned rate {}; peak RSS {:.1} MiB",
        args.limit_per_min,
        delivered,
        drain_time.as_secs_f64(),
        delivered as f64 * 60.0 / drain_time.as_secs_f64(),
        last_minute,
        fault_hits(&faults, "rate_limit"),
        flow.target
            .learned_rate()
            .map_or("none".to_owned(), |r| format!("{:.0}/min", r * 60.0)),
        peak_drain
    );

    // The books: nothing parked, nothing lost, nothing delivered twice.
    let counts = store.count_by_state().await?;
    let succeeded = count(&counts, RunState::Succeeded);
    let waiting = count(&counts, RunState::Queued)
        + count(&counts, RunState::Retrying)
        + count(&counts, RunState::Running);
    let parked = count(&counts, RunState::Parked);
    let mut reached = 0u64;
    let mut twice = 0u64;
    for n in received.per_event.iter().map(|c| c.load(Ordering::Relaxed)) {
        reached += u64::from(n > 0);
        twice += u64::from(n > 1);
    }
    println!(
        "memory: books: {succeeded} succeeded, {waiting} still waiting, {parked} parked; {reached} events reached the target, {twice} of them twice"
    );
    if parked > 0 || succeeded + waiting != args.events as u64 {
        bail!(
            "runs lost or parked: {succeeded} succeeded + {waiting} waiting + {parked} parked of {}",
            args.events
        );
    }
    if reached < succeeded {
        bail!("{succeeded} runs succeeded but only {reached} events reached the target");
    }
    if twice > 0 {
        bail!("{twice} events reached the target twice");
    }
    Ok(())
}
