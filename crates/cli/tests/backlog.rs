//! Memory under a backlog, the short version of `ledgerbridge bench memory`
//! (README, Benchmarks → Engine core has the 1,000,000-event run): 20,000
//! events queued, the target down, then back behind a rate limit until the
//! backlog is empty. The bench itself fails if a run is lost or parked, or
//! an event reaches the target twice; this test also bounds the memory the
//! backlog may cost. No timing is asserted.

mod common;

use common::*;

/// The number before ` MiB` at the end of the line starting with `prefix`.
fn mib(stdout: &str, prefix: &str) -> f64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{stdout}"));
    let before = line.rsplit_once(" MiB").map_or(line, |(head, _)| head);
    before
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no MiB figure in {line:?}"))
}

#[test]
fn a_20000_event_backlog_keeps_memory_bounded_and_drains_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = cli_in(
        dir.path(),
        &[
            "bench",
            "memory",
            "--events",
            "20000",
            "--down-secs",
            "3",
            "--limit-per-min",
            "60000",
            "--drain-secs",
            "0",
        ],
    );
    println!("{stdout}");
    assert_eq!(code, 0, "bench memory failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "books: 20000 succeeded, 0 still waiting, 0 parked; 20000 events reached the target, 0 of them twice"
        ),
        "{stdout}"
    );
    let idle = mib(&stdout, "memory: idle engine RSS");
    let queued = mib(&stdout, "memory: queued");
    let down = mib(&stdout, "memory: engine working");
    let drain = mib(&stdout, "memory: target back");
    // The backlog lives in the database, not in the process: working it
    // (claims of 64 runs at a time, the target's limiter) costs little
    // beyond what queueing it cost, whose bulk is SQLite's page cache
    // (64 MiB at most for the writer).
    for (phase, rss) in [("target down", down), ("drain", drain)] {
        assert!(
            rss - queued < 64.0,
            "{phase}: RSS {rss:.1} MiB, {:.1} MiB above the {queued:.1} MiB with the backlog queued",
            rss - queued
        );
    }
    assert!(
        drain < idle + 160.0,
        "drain peak {drain:.1} MiB against {idle:.1} MiB idle"
    );
}
