//! The SQLite write operations. Each runs on the writer's connection inside
//! the batch's transaction (see [`super::writer`]); a job that writes more
//! than once runs inside its own savepoint, so an `Err` undoes only it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ledgerbridge_core::BusinessKey;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use uuid::Uuid;

use super::{intent_from_row, journal, json_text, map_error, run_from_row, INTENT_COLUMNS};
use crate::chain::{audit_hash_canonical, canonical_entry, GENESIS_HASH};
use crate::common::{self, lease_expiry, now_micros, MAX_CLAIM};
use crate::{
    AuditRecord, BegunIntent, ClaimedRun, IngestOutcome, Intent, IntentState, Lease, Link,
    NewAudit, NewEvent, NewRun, Result, RunOutcome, StepCommit, StoreError,
};

/// Clears the lease columns (a fragment of `UPDATE runs SET`).
const CLEAR_LEASE: &str = "lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL";

fn sql(error: rusqlite::Error) -> StoreError {
    map_error(&error)
}

pub(super) fn touch_health(conn: &Connection) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO health (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
    )
    .and_then(|mut s| s.execute([now_micros().timestamp_micros()]))
    .map_err(sql)?;
    Ok(())
}

/// An event and its runs with their JSON rendered by the caller.
pub(super) struct PreparedIngest {
    pub(super) event: NewEvent,
    pub(super) headers: String,
    /// Each run with its input's text.
    pub(super) runs: Vec<(NewRun, String)>,
}

impl PreparedIngest {
    pub(super) fn new(event: NewEvent, runs: Vec<NewRun>) -> Self {
        PreparedIngest {
            headers: json_text(&event.headers),
            event,
            runs: runs
                .into_iter()
                .map(|run| {
                    let input = json_text(&run.input);
                    (run, input)
                })
                .collect(),
        }
    }
}

pub(super) fn ingest(conn: &Connection, prepared: &PreparedIngest) -> Result<IngestOutcome> {
    let event = &prepared.event;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO events (id, source, dedupe_key, received_at, headers, body)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (source, dedupe_key) DO NOTHING",
        )
        .and_then(|mut s| {
            s.execute(params![
                event.id.to_string(),
                event.source,
                event.dedupe_key,
                event.received_at.timestamp_micros(),
                prepared.headers,
                event.body,
            ])
        })
        .map_err(sql)?;
    if inserted == 0 {
        let existing: String = conn
            .prepare_cached("SELECT id FROM events WHERE source = ? AND dedupe_key = ?")
            .and_then(|mut s| {
                s.query_row(params![event.source, event.dedupe_key], |row| row.get(0))
            })
            .map_err(sql)?;
        return Ok(IngestOutcome::Duplicate {
            event_id: super::parse_uuid(&existing)?,
        });
    }
    // Runs are inserted plainly: a run id that already exists is a
    // constraint error, and the job's savepoint undoes the event with it.
    let now = now_micros().timestamp_micros();
    for (run, input) in &prepared.runs {
        insert_run(conn, Some(event.id), run, input, now).map_err(|e| match e {
            StoreError::Fatal(text) if text.contains("UNIQUE") => StoreError::Fatal(format!(
                "event {} not stored: its run id {} already exists",
                event.id, run.id
            )),
            other => other,
        })?;
    }
    Ok(IngestOutcome::Accepted {
        event_id: event.id,
        run_ids: prepared.runs.iter().map(|(run, _)| run.id).collect(),
    })
}

fn insert_run(
    conn: &Connection,
    event_id: Option<Uuid>,
    run: &NewRun,
    input: &str,
    now: i64,
) -> Result<usize> {
    conn.prepare_cached(
        "INSERT INTO runs (id, event_id, flow, flow_version, state, input, attempts,
                           created_at, updated_at, next_attempt_at)
         VALUES (?, ?, ?, ?, 'queued', ?, 0, ?, ?, ?)",
    )
    .and_then(|mut s| {
        s.execute(params![
            run.id.to_string(),
            event_id.map(|id| id.to_string()),
            run.flow,
            run.flow_version,
            input,
            now,
            now,
            run.not_before.timestamp_micros(),
        ])
    })
    .map_err(sql)
}

pub(super) fn enqueue(conn: &Connection, run: &NewRun) -> Result<()> {
    let exists: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM runs WHERE id = ?")
        .and_then(|mut s| {
            s.query_row([run.id.to_string()], |row| row.get(0))
                .optional()
        })
        .map_err(sql)?;
    if exists.is_none() {
        insert_run(
            conn,
            None,
            run,
            &json_text(&run.input),
            now_micros().timestamp_micros(),
        )?;
    }
    Ok(())
}

pub(super) fn claim(
    conn: &Connection,
    owner: &str,
    lease_for: Duration,
    limit: u32,
) -> Result<Vec<ClaimedRun>> {
    let now = now_micros();
    let expires = lease_expiry(now, lease_for);
    let ids: Vec<String> = conn
        .prepare_cached(
            "SELECT id FROM runs
             WHERE state IN ('queued', 'retrying') AND next_attempt_at <= ?
             ORDER BY next_attempt_at, seq LIMIT ?",
        )
        .and_then(|mut s| {
            s.query_map(
                params![now.timestamp_micros(), i64::from(limit.min(MAX_CLAIM))],
                |row| row.get(0),
            )?
            .collect()
        })
        .map_err(sql)?;
    let mut update = conn
        .prepare_cached(&format!(
            "UPDATE runs SET state = 'running', attempts = attempts + 1, lease_owner = ?,
                             lease_token = ?, lease_expires_at = ?, updated_at = ?
             WHERE id = ? RETURNING {}",
            super::RUN_COLUMNS
        ))
        .map_err(sql)?;
    let mut claimed = Vec::with_capacity(ids.len());
    for id in ids {
        let token = Uuid::new_v4();
        let run = update
            .query_row(
                params![
                    owner,
                    token.to_string(),
                    expires.timestamp_micros(),
                    now.timestamp_micros(),
                    id
                ],
                |row| Ok(run_from_row(row)),
            )
            .map_err(sql)??;
        let journal = journal(conn, run.id)?;
        claimed.push(ClaimedRun {
            lease: Lease {
                run_id: run.id,
                owner: owner.to_owned(),
                token,
            },
            run,
            journal,
        });
    }
    Ok(claimed)
}

pub(super) fn heartbeat(
    conn: &Connection,
    leases: &[Lease],
    lease_for: Duration,
) -> Result<Vec<Uuid>> {
    let now = now_micros();
    let expires = lease_expiry(now, lease_for);
    let mut statement = conn
        .prepare_cached(
            "UPDATE runs SET lease_expires_at = ?, updated_at = ?
             WHERE id = ? AND lease_token = ? AND state = 'running'",
        )
        .map_err(sql)?;
    let mut lost = Vec::new();
    for lease in leases {
        let updated = statement
            .execute(params![
                expires.timestamp_micros(),
                now.timestamp_micros(),
                lease.run_id.to_string(),
                lease.token.to_string(),
            ])
            .map_err(sql)?;
        if updated == 0 {
            lost.push(lease.run_id);
        }
    }
    Ok(lost)
}

/// A [`StepCommit`] with its JSON already rendered by the caller, so the
/// single writer thread only binds text.
pub(super) struct PreparedCommit {
    pub(super) lease: Lease,
    pub(super) step: String,
    pub(super) output: String,
    pub(super) attempts: i32,
    pub(super) started_at: i64,
    pub(super) finished_at: i64,
    pub(super) links: Vec<Link>,
    /// Each entry with its canonical text.
    pub(super) audits: Vec<(NewAudit, String)>,
    pub(super) finish: Option<RunOutcome>,
}

impl PreparedCommit {
    /// The commit rendered, and the step's output given back.
    pub(super) fn new(lease: &Lease, commit: StepCommit) -> (Self, Value) {
        let StepCommit {
            record,
            links,
            audits,
            finish,
        } = commit;
        let prepared = PreparedCommit {
            lease: lease.clone(),
            output: json_text(&record.output),
            step: record.step,
            attempts: record.attempts,
            started_at: record.started_at.timestamp_micros(),
            finished_at: record.finished_at.timestamp_micros(),
            links,
            audits: audits
                .into_iter()
                .map(|entry| {
                    let text = canonical_entry(&entry);
                    (entry, text)
                })
                .collect(),
            finish,
        };
        (prepared, record.output)
    }
}

/// Records the step, its ledger links and audit entries, and optionally
/// ends the run; all or nothing (the caller runs it in a savepoint unless
/// it is the journal entry alone).
pub(super) fn commit_step(conn: &Connection, commit: PreparedCommit) -> Result<()> {
    let lease = &commit.lease;
    let written = conn
        .prepare_cached(
            "INSERT INTO steps (run_id, step, ord, output, attempts, started_at, finished_at)
             SELECT ?1, ?2, COALESCE((SELECT MAX(ord) FROM steps WHERE run_id = ?1), 0) + 1,
                    ?3, ?4, ?5, ?6
             WHERE EXISTS (SELECT 1 FROM runs WHERE id = ?1 AND lease_token = ?7 AND state = 'running')
             ON CONFLICT (run_id, step) DO UPDATE SET
                 output = excluded.output, attempts = excluded.attempts,
                 started_at = excluded.started_at, finished_at = excluded.finished_at",
        )
        .and_then(|mut s| {
            s.execute(params![
                lease.run_id.to_string(),
                commit.step,
                commit.output,
                commit.attempts,
                commit.started_at,
                commit.finished_at,
                lease.token.to_string(),
            ])
        })
        .map_err(sql)?;
    if written == 0 {
        return Err(StoreError::LeaseLost(lease.run_id));
    }
    for link in &commit.links {
        link_intent(conn, &link.key, &link.external_id)?;
    }
    for (entry, canonical) in commit.audits {
        append_audit(conn, entry, &canonical)?;
    }
    if let Some(outcome) = &commit.finish {
        finish(conn, lease, outcome)?;
    }
    Ok(())
}

pub(super) fn finish(conn: &Connection, lease: &Lease, outcome: &RunOutcome) -> Result<()> {
    let now = now_micros().timestamp_micros();
    let run_id = lease.run_id.to_string();
    let token = lease.token.to_string();
    let updated = match outcome {
        RunOutcome::Succeeded => conn
            .prepare_cached(
                "UPDATE runs SET state = 'succeeded', first_failure_at = NULL, last_error = NULL,
                     lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = ?
                 WHERE id = ? AND lease_token = ? AND state = 'running'",
            )
            .and_then(|mut s| s.execute(params![now, run_id, token])),
        RunOutcome::Retry { at, error } => {
            let error = common::error_json(error)?;
            conn.prepare_cached(
                "UPDATE runs SET state = 'retrying', next_attempt_at = ?, last_error = ?,
                     first_failure_at = COALESCE(first_failure_at, ?),
                     lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = ?
                 WHERE id = ? AND lease_token = ? AND state = 'running'",
            )
            .and_then(|mut s| {
                s.execute(params![
                    at.timestamp_micros(),
                    error,
                    now,
                    now,
                    run_id,
                    token
                ])
            })
        }
        RunOutcome::Parked { error } => {
            let error = common::error_json(error)?;
            conn.prepare_cached(
                "UPDATE runs SET state = 'parked', last_error = ?,
                     first_failure_at = COALESCE(first_failure_at, ?),
                     lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = ?
                 WHERE id = ? AND lease_token = ? AND state = 'running'",
            )
            .and_then(|mut s| s.execute(params![error, now, now, run_id, token]))
        }
    }
    .map_err(sql)?;
    if updated == 0 {
        return Err(StoreError::LeaseLost(lease.run_id));
    }
    Ok(())
}

pub(super) fn release(conn: &Connection, lease: &Lease) -> Result<()> {
    let now = now_micros().timestamp_micros();
    let updated = conn
        .prepare_cached(&format!(
            "UPDATE runs SET state = 'queued', next_attempt_at = ?,
                 attempts = MAX(attempts - 1, 0), {CLEAR_LEASE}, updated_at = ?
             WHERE id = ? AND lease_token = ? AND state = 'running'"
        ))
        .and_then(|mut s| {
            s.execute(params![
                now,
                now,
                lease.run_id.to_string(),
                lease.token.to_string()
            ])
        })
        .map_err(sql)?;
    if updated == 0 {
        return Err(StoreError::LeaseLost(lease.run_id));
    }
    Ok(())
}

pub(super) fn reap_expired(conn: &Connection) -> Result<u64> {
    let now = now_micros().timestamp_micros();
    let updated = conn
        .prepare_cached(&format!(
            "UPDATE runs SET state = 'queued', {CLEAR_LEASE}, updated_at = ?
             WHERE state = 'running' AND lease_expires_at < ?"
        ))
        .and_then(|mut s| s.execute(params![now, now]))
        .map_err(sql)?;
    Ok(updated as u64)
}

/// Why an update guarded by a state condition changed nothing.
fn explain_no_update(conn: &Connection, id: Uuid, action: &str) -> StoreError {
    let state: rusqlite::Result<Option<String>> = conn
        .prepare_cached("SELECT state FROM runs WHERE id = ?")
        .and_then(|mut s| s.query_row([id.to_string()], |row| row.get(0)).optional());
    match state {
        Ok(None) => StoreError::NotFound(format!("run {id}")),
        Ok(Some(state)) => {
            StoreError::InvalidState(format!("cannot {action} run {id}: it is {state}"))
        }
        Err(e) => sql(e),
    }
}

pub(super) fn replay(
    conn: &Connection,
    id: Uuid,
    new_input: Option<&serde_json::Value>,
) -> Result<()> {
    let now = now_micros().timestamp_micros();
    let updated = conn
        .prepare_cached(
            "UPDATE runs SET state = 'queued', attempts = 0, first_failure_at = NULL,
                 next_attempt_at = ?, updated_at = ?, input = COALESCE(?, input)
             WHERE id = ? AND state IN ('parked', 'retrying')",
        )
        .and_then(|mut s| s.execute(params![now, now, new_input.map(json_text), id.to_string()]))
        .map_err(sql)?;
    if updated == 0 {
        return Err(explain_no_update(conn, id, "replay"));
    }
    if new_input.is_some() {
        conn.prepare_cached("DELETE FROM steps WHERE run_id = ?")
            .and_then(|mut s| s.execute([id.to_string()]))
            .map_err(sql)?;
    }
    Ok(())
}

pub(super) fn discard(conn: &Connection, id: Uuid, reason: &str) -> Result<()> {
    let now = now_micros().timestamp_micros();
    let updated = conn
        .prepare_cached(&format!(
            "UPDATE runs SET state = 'discarded', discard_reason = ?, {CLEAR_LEASE}, updated_at = ?
             WHERE id = ? AND state IN ('parked', 'retrying', 'queued')"
        ))
        .and_then(|mut s| s.execute(params![reason, now, id.to_string()]))
        .map_err(sql)?;
    if updated == 0 {
        return Err(explain_no_update(conn, id, "discard"));
    }
    Ok(())
}

pub(super) fn load_intent(conn: &Connection, key: &BusinessKey) -> Result<Option<Intent>> {
    conn.prepare_cached(&format!(
        "SELECT {INTENT_COLUMNS} FROM intents WHERE connection = ? AND kind = ? AND key = ?"
    ))
    .and_then(|mut s| {
        s.query_row(params![key.connection, key.kind, key.key], |row| {
            Ok(intent_from_row(row))
        })
        .optional()
    })
    .map_err(sql)?
    .transpose()
}

pub(super) fn begin_intent(
    conn: &Connection,
    key: &BusinessKey,
    run_id: Uuid,
    in_flight_for: Duration,
) -> Result<BegunIntent> {
    let now = now_micros();
    let inserted = conn
        .prepare_cached(
            "INSERT INTO intents (connection, kind, key, run_id, state, external_id,
                                  created_at, updated_at, settled)
             VALUES (?, ?, ?, ?, 'pending', NULL, ?, ?, 0)
             ON CONFLICT (connection, kind, key) DO NOTHING",
        )
        .and_then(|mut s| {
            s.execute(params![
                key.connection,
                key.kind,
                key.key,
                run_id.to_string(),
                now.timestamp_micros(),
                now.timestamp_micros()
            ])
        })
        .map_err(sql)?;
    let mut in_flight_until = None;
    if inserted == 0 {
        // Pending from an earlier attempt: start a new one only if that
        // attempt ended or can no longer be in flight.
        let (state, updated_at, settled): (String, i64, bool) = conn
            .prepare_cached(
                "SELECT state, updated_at, settled FROM intents
                 WHERE connection = ? AND kind = ? AND key = ?",
            )
            .and_then(|mut s| {
                s.query_row(params![key.connection, key.kind, key.key], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
            })
            .map_err(sql)?;
        if state == "pending" {
            let began = DateTime::<Utc>::from_timestamp_micros(updated_at)
                .ok_or_else(|| StoreError::Fatal(format!("intent {key}: bad time {updated_at}")))?;
            let until = lease_expiry(began, in_flight_for);
            if settled || until <= now {
                conn.prepare_cached(
                    "UPDATE intents SET updated_at = ?, settled = 0
                     WHERE connection = ? AND kind = ? AND key = ?",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        now.timestamp_micros(),
                        key.connection,
                        key.kind,
                        key.key
                    ])
                })
                .map_err(sql)?;
            } else {
                in_flight_until = Some(until);
            }
        }
    }
    let intent = load_intent(conn, key)?
        .ok_or_else(|| StoreError::Fatal(format!("intent {key} vanished after insert")))?;
    Ok(BegunIntent {
        intent,
        inserted: inserted == 1,
        in_flight_until,
    })
}

pub(super) fn settle_intent(conn: &Connection, key: &BusinessKey) -> Result<()> {
    conn.prepare_cached(
        "UPDATE intents SET settled = 1
         WHERE connection = ? AND kind = ? AND key = ? AND state = 'pending'",
    )
    .and_then(|mut s| s.execute(params![key.connection, key.kind, key.key]))
    .map_err(sql)?;
    Ok(())
}

pub(super) fn restamp_intent(
    conn: &Connection,
    key: &BusinessKey,
    began: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>> {
    let now = now_micros();
    let changed = conn
        .prepare_cached(
            "UPDATE intents SET updated_at = ?
             WHERE connection = ? AND kind = ? AND key = ? AND state = 'pending'
               AND settled = 0 AND updated_at = ?",
        )
        .and_then(|mut s| {
            s.execute(params![
                now.timestamp_micros(),
                key.connection,
                key.kind,
                key.key,
                began.timestamp_micros()
            ])
        })
        .map_err(sql)?;
    Ok((changed == 1).then_some(now))
}

pub(super) fn link_intent(conn: &Connection, key: &BusinessKey, external_id: &str) -> Result<()> {
    let now = now_micros().timestamp_micros();
    match load_intent(conn, key)? {
        None => {
            conn.prepare_cached(
                "INSERT INTO intents (connection, kind, key, run_id, state, external_id,
                                      created_at, updated_at)
                 VALUES (?, ?, ?, ?, 'linked', ?, ?, ?)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    key.connection,
                    key.kind,
                    key.key,
                    Uuid::nil().to_string(),
                    external_id,
                    now,
                    now
                ])
            })
            .map_err(sql)?;
            Ok(())
        }
        Some(Intent {
            state: IntentState::Pending,
            ..
        }) => {
            conn.prepare_cached(
                "UPDATE intents SET state = 'linked', external_id = ?, updated_at = ?
                 WHERE connection = ? AND kind = ? AND key = ?",
            )
            .and_then(|mut s| {
                s.execute(params![external_id, now, key.connection, key.kind, key.key])
            })
            .map_err(sql)?;
            Ok(())
        }
        Some(Intent {
            state: IntentState::Linked {
                external_id: linked,
            },
            ..
        }) => {
            if linked == external_id {
                Ok(())
            } else {
                Err(StoreError::InvalidState(format!(
                    "{key} is already linked to {linked}, not {external_id}"
                )))
            }
        }
    }
}

pub(super) fn set_cursor(conn: &Connection, name: &str, value: &str) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO cursors (name, value, updated_at) VALUES (?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    )
    .and_then(|mut s| s.execute(params![name, value, now_micros().timestamp_micros()]))
    .map_err(sql)?;
    Ok(())
}

pub(super) fn audit(conn: &Connection, entry: NewAudit) -> Result<AuditRecord> {
    let canonical = canonical_entry(&entry);
    append_audit(conn, entry, &canonical)
}

/// Appends `entry` (with its canonical text) to the chain.
fn append_audit(conn: &Connection, entry: NewAudit, canonical: &str) -> Result<AuditRecord> {
    let last: Option<(i64, String)> = conn
        .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        .and_then(|mut s| {
            s.query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .map_err(sql)?;
    let (seq, prev_hash) = match last {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, GENESIS_HASH.to_owned()),
    };
    let at = now_micros();
    let hash = audit_hash_canonical(&prev_hash, seq, at, canonical);
    conn.prepare_cached(
        "INSERT INTO audit (seq, at, entry, prev_hash, hash) VALUES (?, ?, ?, ?, ?)",
    )
    .and_then(|mut s| {
        s.execute(params![
            seq,
            at.timestamp_micros(),
            canonical,
            prev_hash,
            hash
        ])
    })
    .map_err(sql)?;
    Ok(AuditRecord {
        seq,
        at,
        entry,
        prev_hash,
        hash,
    })
}
