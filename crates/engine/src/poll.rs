//! Polling, for systems without webhooks (KashFlow): a [`PollSource`] is
//! read every `interval`; what changed since its durable cursor becomes
//! events, stored like webhook deliveries (and starting the flows whose
//! [`Trigger::Poll`](crate::Trigger::Poll) matches), and only then is the
//! cursor advanced.
//!
//! Restart-safe, no gaps, no repeats:
//! - the cursor is saved after the cycle's events are committed, so a crash
//!   in between repeats the cycle rather than skipping it;
//! - a repeated cycle produces the same dedupe keys (the [`Snapshot`]
//!   generation is part of them), so its events are recognised as
//!   duplicates and start nothing twice — also when two engine processes
//!   poll the same source;
//! - a record that changes while a cycle is reading has a fingerprint that
//!   differs from the one saved, so the next cycle sees it.
//!
//! Sources whose API cannot list "changed since" (KashFlow customers and
//! products) keep a [`Snapshot`] of every record's fingerprint in the cursor
//! and diff the listing against it: the list pages are read (the API forces
//! that), unchanged records are never fetched one by one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use ledgerbridge_core::Failure;
use ledgerbridge_store::{IngestOutcome, NewEvent, NewRun, Store};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::alerts::{Alert, Alerts};
use crate::flow::{EventKind, FlowRegistry};

/// A source read on an interval.
#[async_trait]
pub trait PollSource: Send + Sync + 'static {
    /// Unique name: the cursor's name and the events' source, e.g.
    /// `kashflow:customers`.
    fn name(&self) -> &str;

    /// Time between the end of one cycle and the start of the next.
    fn interval(&self) -> Duration;

    /// One cycle: what changed since `cursor` (`None` the first time), and
    /// the cursor to save once those changes are stored.
    async fn poll(&self, cursor: Option<String>) -> Result<PollBatch, Failure>;
}

/// What one cycle found.
#[derive(Debug, Clone, Default)]
pub struct PollBatch {
    /// The changes, in the order their runs should be queued.
    pub changes: Vec<Change>,
    /// The cursor to save after the changes are stored; `None` keeps the old one.
    pub cursor: Option<String>,
    /// Records listed this cycle (for the metrics and the bench).
    pub listed: usize,
    /// Records fetched one by one this cycle.
    pub fetched: usize,
}

/// One change seen by a poll: an event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// What happened, e.g. `customer.changed`; flows trigger on it.
    pub kind: String,
    /// The record's key at the source (a customer code, a product code).
    pub key: String,
    /// Unique per change; a repeat is a duplicate (see [`Snapshot::dedupe_key`]).
    pub dedupe_key: String,
    /// The record as read (the run's input carries it).
    pub record: Value,
    /// The record's fields that changed since the last cycle, when the
    /// source can tell (the run's input carries them as `fields`); empty
    /// when it cannot, or for a created or deleted record.
    pub fields: Vec<String>,
}

/// What a cycle did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CycleReport {
    /// Changes the source reported.
    pub changes: usize,
    /// Of those, events stored for the first time.
    pub stored: usize,
    /// Of those, repeats of events already stored (a repeated cycle).
    pub duplicates: usize,
    /// Runs queued.
    pub runs: usize,
    /// Records listed.
    pub listed: usize,
    /// Records fetched one by one.
    pub fetched: usize,
    /// Wall time of the cycle, in milliseconds.
    pub millis: u64,
}

/// Runs one cycle of `source`: poll, store each change as an event with the
/// runs it triggers, then save the cursor.
pub async fn poll_once(
    store: &dyn Store,
    flows: &FlowRegistry,
    wake: &Notify,
    source: &dyn PollSource,
) -> Result<CycleReport, Failure> {
    let started = Instant::now();
    let name = source.name().to_owned();
    let cursor = store
        .cursor(&name)
        .await
        .map_err(|e| Failure::transient(format!("reading the cursor of {name}: {e}")))?;
    let batch = source.poll(cursor).await?;
    let mut report = CycleReport {
        changes: batch.changes.len(),
        listed: batch.listed,
        fetched: batch.fetched,
        ..CycleReport::default()
    };
    for change in batch.changes {
        let kind = EventKind::Poll {
            source: &name,
            kind: &change.kind,
        };
        let now = Utc::now();
        let mut input = json!({
            "source": name,
            "kind": change.kind,
            "key": change.key,
            "record": change.record,
        });
        if !change.fields.is_empty() {
            input["fields"] = json!(change.fields);
        }
        let runs: Vec<NewRun> = flows
            .triggered_by(&kind)
            .into_iter()
            .map(|flow| NewRun {
                id: Uuid::now_v7(),
                flow: flow.name().to_owned(),
                flow_version: flow.version().to_owned(),
                input: input.clone(),
                not_before: now,
            })
            .collect();
        let body = serde_json::to_vec(&input)
            .map_err(|e| Failure::validation(format!("encoding a change of {name}: {e}")))?;
        let event = NewEvent {
            id: Uuid::now_v7(),
            source: name.clone(),
            dedupe_key: change.dedupe_key,
            received_at: now,
            headers: json!({}),
            body,
        };
        match store.ingest(event, runs).await {
            Ok(IngestOutcome::Accepted { run_ids, .. }) => {
                report.stored += 1;
                report.runs += run_ids.len();
            }
            Ok(IngestOutcome::Duplicate { .. }) => report.duplicates += 1,
            Err(err) => {
                return Err(Failure::transient(format!(
                    "storing a change of {name}: {err}"
                )))
            }
        }
    }
    if report.runs > 0 {
        wake.notify_one();
    }
    if let Some(cursor) = batch.cursor {
        store
            .set_cursor(&name, &cursor)
            .await
            .map_err(|e| Failure::transient(format!("saving the cursor of {name}: {e}")))?;
    }
    report.millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    metrics::counter!("ledgerbridge_poll_changes_total", "source" => name.clone())
        .increment(report.stored as u64);
    metrics::counter!("ledgerbridge_poll_listed_total", "source" => name.clone())
        .increment(report.listed as u64);
    metrics::counter!("ledgerbridge_poll_fetched_total", "source" => name)
        .increment(report.fetched as u64);
    Ok(report)
}

/// Poll loops running in the background.
pub struct Pollers {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for Pollers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pollers")
            .field("running", &self.tasks.len())
            .finish()
    }
}

/// After this many failed cycles in a row, an alert is raised.
const FAILURES_BEFORE_ALERT: u32 = 3;

impl Pollers {
    /// Starts one loop per source: a cycle at once, then one every interval.
    /// A failed cycle is logged and retried at the next interval; three in a
    /// row raise an alert.
    pub fn start(
        store: Arc<dyn Store>,
        flows: FlowRegistry,
        wake: Arc<Notify>,
        alerts: Alerts,
        sources: Vec<Arc<dyn PollSource>>,
    ) -> Pollers {
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for source in sources {
            let store = store.clone();
            let flows = flows.clone();
            let wake = wake.clone();
            let alerts = alerts.clone();
            let mut stop_rx = stop_rx.clone();
            tasks.spawn(async move {
                let name = source.name().to_owned();
                let mut failures = 0u32;
                tracing::info!(source = %name, interval_secs = source.interval().as_secs_f64(), "polling");
                loop {
                    match poll_once(store.as_ref(), &flows, &wake, source.as_ref()).await {
                        Ok(report) => {
                            failures = 0;
                            metrics::counter!("ledgerbridge_poll_cycles_total", "source" => name.clone(), "outcome" => "ok").increment(1);
                            if report.stored > 0 || report.duplicates > 0 {
                                tracing::info!(source = %name, changes = report.stored, repeats = report.duplicates, runs = report.runs, listed = report.listed, fetched = report.fetched, ms = report.millis, "poll cycle");
                            } else {
                                tracing::debug!(source = %name, listed = report.listed, ms = report.millis, "poll cycle: nothing changed");
                            }
                        }
                        Err(failure) => {
                            failures += 1;
                            metrics::counter!("ledgerbridge_poll_cycles_total", "source" => name.clone(), "outcome" => "failed").increment(1);
                            tracing::warn!(source = %name, class = ?failure.class, failures, "poll cycle failed, retried next interval: {}", failure.message);
                            if failures >= FAILURES_BEFORE_ALERT {
                                alerts
                                    .raise(Alert::new(
                                        "poll.failing",
                                        name.clone(),
                                        format!("polling {name} has failed {failures} times in a row: {}", failure.message),
                                        json!({"failures": failures, "class": format!("{:?}", failure.class)}),
                                    ))
                                    .await;
                            }
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(source.interval()) => {}
                        _ = stop_rx.changed() => break,
                    }
                    if *stop_rx.borrow() {
                        break;
                    }
                }
            });
        }
        Pollers { stop, tasks }
    }

    /// Stops the loops (a cycle in progress finishes first).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// What a source held at its last cycle: each record's fingerprint, and a
/// generation that grows with every cycle that found changes. Kept in the
/// cursor as text: a header line, then `key<TAB>fingerprint` lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Cycles that found changes so far.
    pub generation: u64,
    /// Fingerprint by record key.
    pub entries: BTreeMap<String, String>,
}

const SNAPSHOT_HEADER: &str = "ledgerbridge-snapshot v1 generation=";

/// How a listing differs from the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotDiff {
    /// Keys not in the snapshot.
    pub created: Vec<String>,
    /// Keys whose fingerprint changed.
    pub changed: Vec<String>,
    /// Keys in the snapshot but not in the listing.
    pub deleted: Vec<String>,
    /// The snapshot to save once the changes are stored (generation bumped
    /// when anything changed).
    pub next: Snapshot,
}

impl SnapshotDiff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.changed.is_empty() && self.deleted.is_empty()
    }
}

impl Snapshot {
    /// Reads a saved snapshot; `None` (never polled) is the empty one.
    pub fn decode(text: Option<&str>) -> Result<Snapshot, String> {
        let Some(text) = text else {
            return Ok(Snapshot::default());
        };
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default();
        let generation = header
            .strip_prefix(SNAPSHOT_HEADER)
            .and_then(|g| g.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                format!("the saved poll cursor is not a snapshot (first line {header:?})")
            })?;
        let mut entries = BTreeMap::new();
        for (n, line) in lines.enumerate() {
            let (key, fingerprint) = line
                .split_once('\t')
                .ok_or_else(|| format!("the saved poll cursor's line {} has no tab", n + 2))?;
            entries.insert(unescape(key), fingerprint.to_owned());
        }
        Ok(Snapshot {
            generation,
            entries,
        })
    }

    /// The snapshot saved as the cursor of `source`; an unreadable cursor
    /// is a failure that says what to do (`remedy`).
    pub fn from_cursor(
        source: &str,
        cursor: Option<&str>,
        remedy: &str,
    ) -> Result<Snapshot, Failure> {
        Snapshot::decode(cursor).map_err(|e| {
            Failure::new(
                ledgerbridge_core::ErrorClass::Unknown,
                format!("{source}: {e}; {remedy}"),
            )
        })
    }

    /// The text saved as the cursor.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(40 + self.entries.len() * 32);
        out.push_str(SNAPSHOT_HEADER);
        out.push_str(&self.generation.to_string());
        for (key, fingerprint) in &self.entries {
            out.push('\n');
            out.push_str(&escape(key));
            out.push('\t');
            out.push_str(fingerprint);
        }
        out
    }

    /// Compares a full listing (key → fingerprint) with the snapshot.
    pub fn diff(&self, listing: BTreeMap<String, String>) -> SnapshotDiff {
        let mut diff = SnapshotDiff::default();
        for (key, fingerprint) in &listing {
            match self.entries.get(key) {
                None => diff.created.push(key.clone()),
                Some(old) if old != fingerprint => diff.changed.push(key.clone()),
                Some(_) => {}
            }
        }
        for key in self.entries.keys() {
            if !listing.contains_key(key) {
                diff.deleted.push(key.clone());
            }
        }
        let generation = if diff.is_empty() {
            self.generation
        } else {
            self.generation + 1
        };
        diff.next = Snapshot {
            generation,
            entries: listing,
        };
        diff
    }

    /// The dedupe key of a change found by the cycle that produced `next`:
    /// the same for a repeat of that cycle, new for a later change.
    pub fn dedupe_key(next: &Snapshot, kind: &str, key: &str, fingerprint: &str) -> String {
        format!("{kind}:{key}@{}:{fingerprint}", next.generation)
    }
}

fn escape(key: &str) -> String {
    key.replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
}

fn unescape(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut chars = key.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('t') => out.push('\t'),
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A stable fingerprint of a JSON value: the first 16 hex digits of the
/// SHA-256 of its canonical form (object keys sorted), so key order in an
/// answer never reads as a change.
pub fn fingerprint(value: &Value) -> String {
    let mut hasher = Sha256::new();
    canonical(value, &mut hasher);
    let digest = hasher.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn canonical(value: &Value, hasher: &mut Sha256) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            hasher.update(b"{");
            for key in keys {
                hasher.update(serde_json::to_string(key).unwrap_or_default().as_bytes());
                hasher.update(b":");
                canonical(&map[key], hasher);
                hasher.update(b",");
            }
            hasher.update(b"}");
        }
        Value::Array(items) => {
            hasher.update(b"[");
            for item in items {
                canonical(item, hasher);
                hasher.update(b",");
            }
            hasher.update(b"]");
        }
        other => hasher.update(other.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_snapshot_survives_encoding_with_awkward_keys() {
        let snapshot = Snapshot {
            generation: 7,
            entries: listing(&[("A\tB", "01"), ("C\\n", "02"), ("plain", "03"), ("", "04")]),
        };
        let text = snapshot.encode();
        assert_eq!(Snapshot::decode(Some(&text)).unwrap(), snapshot);
        assert_eq!(Snapshot::decode(None).unwrap(), Snapshot::default());
        assert!(Snapshot::decode(Some("garbage")).is_err());
    }

    #[test]
    fn diff_finds_created_changed_and_deleted_and_bumps_the_generation_only_then() {
        let old = Snapshot {
            generation: 3,
            entries: listing(&[("a", "1"), ("b", "2"), ("c", "3")]),
        };
        let diff = old.diff(listing(&[("a", "1"), ("b", "9"), ("d", "4")]));
        assert_eq!(diff.created, vec!["d"]);
        assert_eq!(diff.changed, vec!["b"]);
        assert_eq!(diff.deleted, vec!["c"]);
        assert_eq!(diff.next.generation, 4);
        let same = diff.next.diff(diff.next.entries.clone());
        assert!(same.is_empty());
        assert_eq!(same.next.generation, 4);
    }

    #[test]
    fn fingerprints_ignore_key_order_but_not_values() {
        let a: Value = serde_json::from_str(r#"{"x":1,"y":{"p":[1,2],"q":"s"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"y":{"q":"s","p":[1,2]},"x":1}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"y":{"q":"s","p":[2,1]},"x":1}"#).unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
        assert_eq!(fingerprint(&a).len(), 16);
    }
}
