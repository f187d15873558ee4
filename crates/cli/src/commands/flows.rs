//! `ledgerbridge validate | test | dry-run`: flow files checked, their own
//! tests run offline, and the requests a flow would send printed. Nothing
//! here calls a connection.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use ledgerbridge_mapping::{load_file, run, run_test, LoadedFlow, RecordingConnector, Response};
use serde_json::Value;

/// Flags of `validate` and `test`.
#[derive(Debug, Args)]
pub struct FlowsArgs {
    /// Flow files (default: every `flows/*.yaml` under the current directory).
    #[arg(value_name = "FLOW")]
    pub flows: Vec<PathBuf>,
}

/// Flags of `dry-run`.
#[derive(Debug, Args)]
pub struct DryRunArgs {
    /// The flow file.
    #[arg(value_name = "FLOW")]
    pub flow: PathBuf,
    /// The trigger's payload (JSON file); default: the input of `--test`.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Canned responses by step id (JSON: `{"get_order": {"status": 200,
    /// "body": {…}}}`); steps without one get `200 {}`.
    #[arg(long, value_name = "FILE")]
    pub responses: Option<PathBuf>,
    /// Take input and responses from this test of the flow (by name);
    /// `--input` and `--responses` override them.
    #[arg(long, value_name = "NAME")]
    pub test: Option<String>,
    /// Print the whole outcome (requests, outputs, trace, errors) as JSON.
    #[arg(long)]
    pub json: bool,
}

fn flow_paths(given: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    let dir = Path::new("flows");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| "no FLOW given and no ./flows directory; name the flow files".to_owned())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    found.sort();
    if found.is_empty() {
        bail!("no FLOW given and ./flows holds no .yaml files");
    }
    Ok(found)
}

/// Loads every flow, printing each one's errors; the loaded ones and the
/// number that failed.
fn load_all(paths: &[PathBuf]) -> (Vec<LoadedFlow>, usize) {
    let mut loaded = Vec::new();
    let mut failed = 0;
    for path in paths {
        match load_file(path) {
            Ok(flow) => loaded.push(flow),
            Err(errors) => {
                failed += 1;
                for error in errors {
                    eprintln!("error: {error}\n");
                }
            }
        }
    }
    (loaded, failed)
}

/// `ledgerbridge validate [FLOW…]`.
pub fn validate(args: FlowsArgs) -> anyhow::Result<()> {
    let paths = flow_paths(&args.flows)?;
    let (loaded, failed) = load_all(&paths);
    for flow in &loaded {
        println!(
            "{}: flow {} version {} is valid ({} steps, {} tests)",
            flow.file.display(),
            flow.flow.name,
            flow.version,
            flow.steps.len(),
            flow.flow.tests.len()
        );
    }
    if failed > 0 {
        bail!("{failed} of {} flow file(s) have errors", paths.len());
    }
    Ok(())
}

/// `ledgerbridge test [FLOW…]`.
pub fn test(args: FlowsArgs) -> anyhow::Result<()> {
    let paths = flow_paths(&args.flows)?;
    let (loaded, invalid) = load_all(&paths);
    let mut rows = Vec::new();
    let mut details = Vec::new();
    for flow in &loaded {
        for case in &flow.flow.tests {
            let result = run_test(flow, case);
            rows.push([
                flow.flow.name.clone(),
                result.name.clone(),
                if result.passed { "ok" } else { "FAILED" }.to_owned(),
                format!("{:?}", result.outcome.status).to_lowercase(),
                result.outcome.requests.len().to_string(),
            ]);
            if !result.passed {
                details.push((flow.flow.name.clone(), result));
            }
        }
    }
    let header = ["FLOW", "TEST", "RESULT", "RUN", "REQUESTS"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let print_row = |row: &[String; 5]| {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths[i]))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    };
    print_row(&header);
    for row in &rows {
        print_row(row);
    }
    for (flow, result) in &details {
        println!("\n{flow} / {}:", result.name);
        for failure in &result.failures {
            println!("  - {failure}");
        }
    }
    let failed = details.len();
    let passed = rows.len() - failed;
    println!("\nflow tests: {passed} passed, {failed} failed");
    if invalid > 0 {
        bail!("{invalid} flow file(s) have errors and were not tested");
    }
    if failed > 0 {
        bail!("{failed} flow test(s) failed");
    }
    Ok(())
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// `ledgerbridge dry-run FLOW --input sample.json`.
pub fn dry_run(args: DryRunArgs) -> anyhow::Result<()> {
    let flow = match load_file(&args.flow) {
        Ok(flow) => flow,
        Err(errors) => {
            for error in &errors {
                eprintln!("error: {error}\n");
            }
            bail!("{} has errors", args.flow.display());
        }
    };
    let case = match &args.test {
        Some(name) => Some(
            flow.flow
                .tests
                .iter()
                .find(|t| &t.name == name)
                .with_context(|| {
                    format!(
                        "{} has no test {name:?}; its tests: {}",
                        args.flow.display(),
                        flow.flow
                            .tests
                            .iter()
                            .map(|t| t.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?,
        ),
        None => None,
    };
    let input = match (&args.input, case) {
        (Some(path), _) => read_json(path)?,
        (None, Some(case)) => case.input.clone(),
        (None, None) => bail!("give --input FILE (the trigger's payload) or --test NAME"),
    };
    let mut connector = RecordingConnector::default();
    if let Some(case) = case {
        for (step, response) in &case.responses {
            connector.responses.insert(
                step.clone(),
                Response {
                    status: response.status,
                    body: response.body.clone(),
                },
            );
        }
    }
    if let Some(path) = &args.responses {
        let responses: BTreeMap<String, Value> = serde_json::from_value(read_json(path)?)
            .with_context(|| {
                format!(
                    "{}: expected an object of step id → {{status, body}}",
                    path.display()
                )
            })?;
        for (step, response) in responses {
            let status = response
                .get("status")
                .and_then(Value::as_u64)
                .unwrap_or(200) as u16;
            let body = response.get("body").cloned().unwrap_or(Value::Null);
            connector.responses.insert(step, Response { status, body });
        }
    }
    let vars = case.map(|c| c.vars.clone()).unwrap_or_default();
    let outcome = run(&flow, &input, &vars, &mut connector);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
        return Ok(());
    }
    println!(
        "flow {} version {} (dry run: nothing was sent)",
        flow.flow.name, flow.version
    );
    for request in &outcome.requests {
        println!(
            "\n{} {} {}  (step {})",
            request.method, request.connection, request.path, request.step
        );
        if let Some(key) = &request.key {
            println!("business key: {key}");
        }
        if let Some(body) = &request.body {
            println!("{}", serde_json::to_string_pretty(body)?);
        }
    }
    println!(
        "\nrun: {:?} after steps {}",
        outcome.status,
        outcome.trace.join(" → ")
    );
    for error in &outcome.errors {
        println!("error: {error}");
    }
    Ok(())
}
