//! `ledgerbridge runs list|show|replay|discard`: the dead-letter queue from
//! the command line. Works on the database directly, so it works while the
//! engine is down; a running engine picks replayed runs up within its idle
//! poll interval.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use ledgerbridge_server::api::runs::replay;
use ledgerbridge_server::AppState;
use ledgerbridge_store::{RunFilter, RunState};
use uuid::Uuid;

use crate::config::Config;
use crate::connections;

/// Runs subcommands.
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List runs, newest first.
    List(ListArgs),
    /// Show one run with its step journal.
    Show {
        /// Run id.
        id: Uuid,
    },
    /// Replay parked (or retrying) runs.
    Replay(ReplayArgs),
    /// Discard a run: it will never be retried.
    Discard {
        /// Run id.
        id: Uuid,
        /// Why (kept with the run).
        #[arg(long, default_value = "discarded from the command line")]
        reason: String,
    },
}

/// Flags of `runs list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only runs in this state (queued, running, retrying, parked, succeeded, discarded).
    #[arg(long)]
    pub state: Option<String>,
    /// Only runs of this flow.
    #[arg(long)]
    pub flow: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `runs replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Run ids to replay.
    pub ids: Vec<Uuid>,
    /// Replay every parked run (of `--flow`, if given).
    #[arg(long, conflicts_with = "ids")]
    pub all_parked: bool,
    /// With --all-parked: only this flow.
    #[arg(long)]
    pub flow: Option<String>,
    /// Replace the run's input with this JSON file before replaying (one run only).
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Print the requests a replay would send; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_state(name: &str) -> anyhow::Result<RunState> {
    RunState::parse(name).with_context(|| {
        let known: Vec<&str> = RunState::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown state {name:?}; use one of {}", known.join(", "))
    })
}

pub async fn run(config: Config, cmd: RunsCommand) -> anyhow::Result<()> {
    let store = ledgerbridge_store::open(&config.database.url).await?;
    match cmd {
        RunsCommand::List(args) => {
            let filter = RunFilter {
                state: args.state.as_deref().map(parse_state).transpose()?,
                flow: args.flow,
                before: None,
                limit: args.limit,
            };
            let runs = store.list_runs(&filter).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
                return Ok(());
            }
            println!(
                "{:<36}  {:<18}  {:<9}  {:>3}  {:<19}  error",
                "run", "flow", "state", "try", "updated"
            );
            for run in &runs {
                let error = run
                    .last_error
                    .as_ref()
                    .map(|e| {
                        format!(
                            "{} at {}: {}",
                            e.class,
                            e.step.as_deref().unwrap_or("-"),
                            e.message
                        )
                    })
                    .unwrap_or_default();
                println!(
                    "{:<36}  {:<18}  {:<9}  {:>3}  {:<19}  {}",
                    run.id,
                    run.flow,
                    run.state.as_str(),
                    run.attempts,
                    run.updated_at.format("%Y-%m-%d %H:%M:%S"),
                    error
                );
            }
            println!("{} run(s)", runs.len());
            Ok(())
        }
        RunsCommand::Show { id } => {
            let detail = store
                .run(id)
                .await?
                .with_context(|| format!("no run {id}"))?;
            println!("{}", serde_json::to_string_pretty(&detail)?);
            Ok(())
        }
        RunsCommand::Discard { id, reason } => {
            store.discard(id, &reason).await?;
            println!("run {id} discarded");
            Ok(())
        }
        RunsCommand::Replay(args) => {
            let input = match &args.input {
                Some(path) => {
                    if args.ids.len() != 1 {
                        bail!("--input edits one run: give exactly one run id");
                    }
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    Some(
                        serde_json::from_str(&text)
                            .with_context(|| format!("{} is not valid JSON", path.display()))?,
                    )
                }
                None => None,
            };
            let ids: Vec<Uuid> = if args.all_parked {
                let filter = RunFilter {
                    state: Some(RunState::Parked),
                    flow: args.flow.clone(),
                    before: None,
                    limit: 1000,
                };
                store
                    .list_runs(&filter)
                    .await?
                    .into_iter()
                    .map(|r| r.id)
                    .collect()
            } else {
                args.ids.clone()
            };
            if ids.is_empty() {
                bail!("nothing to replay: give run ids or --all-parked");
            }
            let state = AppState {
                store: store.clone(),
                flows: connections::build_flows(&config)?,
                wake: Arc::new(tokio::sync::Notify::new()),
                sources: Arc::new(config.sources.clone()),
                metrics: None,
                reconciler: None,
            };
            let mut failed = 0;
            for id in ids {
                match replay(&state, id, input.clone(), args.dry_run).await {
                    Ok(answer) => match answer.dry_run {
                        Some(report) => {
                            println!(
                                "run {id}: a replay would send {} request(s)",
                                report.requests.len()
                            );
                            if !report.skipped_steps.is_empty() {
                                println!(
                                    "  skipped (already done): {}",
                                    report.skipped_steps.join(", ")
                                );
                            }
                            for request in &report.requests {
                                println!("  [{}] {} {}", request.step, request.method, request.url);
                                if let Some(body) = &request.body {
                                    println!("    {}", serde_json::to_string(body)?);
                                }
                            }
                            if let Some(err) = report.error {
                                println!("  stops at: {err}");
                            }
                        }
                        None => println!("run {id}: queued for replay"),
                    },
                    Err(err) => {
                        failed += 1;
                        eprintln!("run {id}: {err}");
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} run(s) could not be replayed");
            }
            Ok(())
        }
    }
}
