//! The SQLite write operations. Each runs on the writer's connection inside
//! its own savepoint (see [`super::writer`]): an `Err` undoes only it.

use std::time::Duration;

use ledgerbridge_core::BusinessKey;
use serde_json::Value;
use sqlx::sqlite::SqliteConnection;

use uuid::Uuid;

use super::{
    get, intent_from_row, journal, json_text, map_error, run_from_row, INTENT_COLUMNS, RUN_COLUMNS,
};
use crate::chain::{audit_hash, canonical_entry, GENESIS_HASH};
use crate::common::{self, lease_expiry, now_micros, MAX_CLAIM};
use crate::{
    AuditRecord, ClaimedRun, IngestOutcome, Intent, IntentState, Lease, NewAudit, NewEvent, NewRun,
    Result, RunOutcome, StepRecord, StoreError,
};

/// Clears the lease columns (a fragment of `UPDATE runs SET`).
const CLEAR_LEASE: &str = "lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL";

pub(super) async fn touch_health(conn: &mut SqliteConnection) -> Result<()> {
    sqlx::query(
        "INSERT INTO health (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
    )
    .bind(now_micros().timestamp_micros())
    .execute(&mut *conn)
    .await
    .map_err(|e| map_error(&e))?;
    Ok(())
}

pub(super) async fn ingest(
    conn: &mut SqliteConnection,
    event: &NewEvent,
    runs: &[NewRun],
) -> Result<IngestOutcome> {
    // One round trip: the event, then each run only if the statement before
    // it inserted a row (`changes() = 1`), so a duplicate inserts nothing.
    // No statement here can fail after an earlier one wrote (the first is
    // the only one that can conflict), so the job needs no savepoint; a run
    // id that already exists is skipped, detected below and undone.
    let mut sql = String::from(
        "INSERT INTO events (id, source, dedupe_key, received_at, headers, body)
         VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (source, dedupe_key) DO NOTHING;",
    );
    for _ in runs {
        sql.push_str(
            " INSERT INTO runs (id, event_id, flow, flow_version, state, input, attempts,
                                created_at, updated_at, next_attempt_at)
              SELECT ?, ?, ?, ?, 'queued', ?, 0, ?, ?, ? WHERE changes() = 1
              ON CONFLICT (id) DO NOTHING;",
        );
    }
    let now = now_micros().timestamp_micros();
    let event_id = event.id.to_string();
    let mut statement = sqlx::query(&sql)
        .bind(event_id.clone())
        .bind(&event.source)
        .bind(&event.dedupe_key)
        .bind(event.received_at.timestamp_micros())
        .bind(json_text(&event.headers))
        .bind(&event.body);
    for run in runs {
        statement = statement
            .bind(run.id.to_string())
            .bind(event_id.clone())
            .bind(&run.flow)
            .bind(&run.flow_version)
            .bind(json_text(&run.input))
            .bind(now)
            .bind(now)
            .bind(run.not_before.timestamp_micros());
    }
    let written = statement
        .execute(&mut *conn)
        .await
        .map_err(|e| map_error(&e))?
        .rows_affected();
    if written == 0 {
        let existing: String =
            sqlx::query_scalar("SELECT id FROM events WHERE source = ? AND dedupe_key = ?")
                .bind(&event.source)
                .bind(&event.dedupe_key)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| map_error(&e))?;
        return Ok(IngestOutcome::Duplicate {
            event_id: super::parse_uuid(&existing)?,
        });
    }
    if written != 1 + runs.len() as u64 {
        undo_ingest(conn, event, runs).await?;
        return Err(StoreError::Fatal(format!(
            "event {} not stored: one of its run ids already exists",
            event.id
        )));
    }
    Ok(IngestOutcome::Accepted {
        event_id: event.id,
        run_ids: runs.iter().map(|run| run.id).collect(),
    })
}

/// Removes what a refused ingest wrote (its event and the runs inserted
/// for it), within the same transaction.
async fn undo_ingest(conn: &mut SqliteConnection, event: &NewEvent, runs: &[NewRun]) -> Result<()> {
    let event_id = event.id.to_string();
    for run in runs {
        sqlx::query("DELETE FROM runs WHERE id = ? AND event_id = ?")
            .bind(run.id.to_string())
            .bind(&event_id)
            .execute(&mut *conn)
            .await
            .map_err(|e| map_error(&e))?;
    }
    sqlx::query("DELETE FROM events WHERE id = ?")
        .bind(&event_id)
        .execute(&mut *conn)
        .await
        .map_err(|e| map_error(&e))?;
    Ok(())
}

pub(super) async fn enqueue(conn: &mut SqliteConnection, run: &NewRun) -> Result<()> {
    let now = now_micros().timestamp_micros();
    sqlx::query(
        "INSERT INTO runs (id, event_id, flow, flow_version, state, input, attempts,
                           created_at, updated_at, next_attempt_at)
         VALUES (?, NULL, ?, ?, 'queued', ?, 0, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
    )
    .bind(run.id.to_string())
    .bind(&run.flow)
    .bind(&run.flow_version)
    .bind(json_text(&run.input))
    .bind(now)
    .bind(now)
    .bind(run.not_before.timestamp_micros())
    .execute(&mut *conn)
    .await
    .map_err(|e| map_error(&e))?;
    Ok(())
}

pub(super) async fn claim(
    conn: &mut SqliteConnection,
    owner: &str,
    lease_for: Duration,
    limit: u32,
) -> Result<Vec<ClaimedRun>> {
    let now = now_micros();
    let expires = lease_expiry(now, lease_for);
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM runs
         WHERE state IN ('queued', 'retrying') AND next_attempt_at <= ?
         ORDER BY next_attempt_at, seq LIMIT ?",
    )
    .bind(now.timestamp_micros())
    .bind(i64::from(limit.min(MAX_CLAIM)))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| map_error(&e))?;
    let update = format!(
        "UPDATE runs SET state = 'running', attempts = attempts + 1, lease_owner = ?,
                         lease_token = ?, lease_expires_at = ?, updated_at = ?
         WHERE id = ? RETURNING {RUN_COLUMNS}"
    );
    let mut claimed = Vec::with_capacity(ids.len());
    for id in ids {
        let token = Uuid::new_v4();
        let row = sqlx::query(&update)
            .bind(owner)
            .bind(token.to_string())
            .bind(expires.timestamp_micros())
            .bind(now.timestamp_micros())
            .bind(&id)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| map_error(&e))?;
        let run = run_from_row(&row)?;
        let journal = journal(&mut *conn, run.id).await?;
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

pub(super) async fn heartbeat(
    conn: &mut SqliteConnection,
    leases: &[Lease],
    lease_for: Duration,
) -> Result<Vec<Uuid>> {
    let now = now_micros();
    let expires = lease_expiry(now, lease_for);
    let mut lost = Vec::new();
    for lease in leases {
        let updated = sqlx::query(
            "UPDATE runs SET lease_expires_at = ?, updated_at = ?
             WHERE id = ? AND lease_token = ? AND state = 'running'",
        )
        .bind(expires.timestamp_micros())
        .bind(now.timestamp_micros())
        .bind(lease.run_id.to_string())
        .bind(lease.token.to_string())
        .execute(&mut *conn)
        .await
        .map_err(|e| map_error(&e))?;
        if updated.rows_affected() == 0 {
            lost.push(lease.run_id);
        }
    }
    Ok(lost)
}

pub(super) async fn record_step(
    conn: &mut SqliteConnection,
    lease: &Lease,
    step: &StepRecord,
) -> Result<()> {
    let written = sqlx::query(
        "INSERT INTO steps (run_id, step, ord, output, attempts, started_at, finished_at)
         SELECT ?1, ?2, COALESCE((SELECT MAX(ord) FROM steps WHERE run_id = ?1), 0) + 1,
                ?3, ?4, ?5, ?6
         WHERE EXISTS (SELECT 1 FROM runs WHERE id = ?1 AND lease_token = ?7 AND state = 'running')
         ON CONFLICT (run_id, step) DO UPDATE SET
             output = excluded.output, attempts = excluded.attempts,
             started_at = excluded.started_at, finished_at = excluded.finished_at",
    )
    .bind(lease.run_id.to_string())
    .bind(&step.step)
    .bind(json_text(&step.output))
    .bind(step.attempts)
    .bind(step.started_at.timestamp_micros())
    .bind(step.finished_at.timestamp_micros())
    .bind(lease.token.to_string())
    .execute(&mut *conn)
    .await
    .map_err(|e| map_error(&e))?;
    if written.rows_affected() == 0 {
        return Err(StoreError::LeaseLost(lease.run_id));
    }
    Ok(())
}

pub(super) async fn finish(
    conn: &mut SqliteConnection,
    lease: &Lease,
    outcome: &RunOutcome,
) -> Result<()> {
    let now = now_micros().timestamp_micros();
    let statement = match outcome {
        RunOutcome::Succeeded => sqlx::query(
            "UPDATE runs SET state = 'succeeded', first_failure_at = NULL, last_error = NULL,
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = ?
             WHERE id = ? AND lease_token = ? AND state = 'running'",
        )
        .bind(now),
        RunOutcome::Retry { at, error } => sqlx::query(
            "UPDATE runs SET state = 'retrying', next_attempt_at = ?, last_error = ?,
                 first_failure_at = COALESCE(first_failure_at, ?),
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = ?
             WHERE id = ? AND lease_token = ? AND state = 'running'",
        )
        .bind(at.timestamp_micros())
        .bind(common::error_json(error)?)
        .bind(now)
        .bind(now),
        RunOutcome::Parked { error } => sqlx::query(
            "UPDATE runs SET state = 'parked', last_error = ?,
                 first_failure_at = COALESCE(first_failure_at, ?),
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = ?
             WHERE id = ? AND lease_token = ? AND state = 'running'",
        )
        .bind(common::error_json(error)?)
        .bind(now)
        .bind(now),
    };
    let updated = statement
        .bind(lease.run_id.to_string())
        .bind(lease.token.to_string())
        .execute(&mut *conn)
        .await
        .map_err(|e| map_error(&e))?;
    if updated.rows_affected() == 0 {
        return Err(StoreError::LeaseLost(lease.run_id));
    }
    Ok(())
}

pub(super) async fn release(conn: &mut SqliteConnection, lease: &Lease) -> Result<()> {
    let now = now_micros().timestamp_micros();
    let statement = format!(
        "UPDATE runs SET state = 'queued', next_attempt_at = ?, attempts = MAX(attempts - 1, 0),
             {CLEAR_LEASE}, updated_at = ?
         WHERE id = ? AND lease_token = ? AND state = 'running'"
    );
    let updated = sqlx::query(&statement)
        .bind(now)
        .bind(now)
        .bind(lease.run_id.to_string())
        .bind(lease.token.to_string())
        .execute(&mut *conn)
        .await
        .map_err(|e| map_error(&e))?;
    if updated.rows_affected() == 0 {
        return Err(StoreError::LeaseLost(lease.run_id));
    }
    Ok(())
}

pub(super) async fn reap_expired(conn: &mut SqliteConnection) -> Result<u64> {
    let now = now_micros().timestamp_micros();
    let statement = format!(
        "UPDATE runs SET state = 'queued', {CLEAR_LEASE}, updated_at = ?
         WHERE state = 'running' AND lease_expires_at < ?"
    );
    let updated = sqlx::query(&statement)
        .bind(now)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(|e| map_error(&e))?;
    Ok(updated.rows_affected())
}

/// Why an update guarded by a state condition changed nothing.
async fn explain_no_update(conn: &mut SqliteConnection, id: Uuid, action: &str) -> StoreError {
    let state: std::result::Result<Option<String>, _> =
        sqlx::query_scalar("SELECT state FROM runs WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await;
    match state {
        Ok(None) => StoreError::NotFound(format!("run {id}")),
        Ok(Some(state)) => {
            StoreError::InvalidState(format!("cannot {action} run {id}: it is {state}"))
        }
        Err(e) => map_error(&e),
    }
}

pub(super) async fn replay(
    conn: &mut SqliteConnection,
    id: Uuid,
    new_input: Option<Value>,
) -> Result<()> {
    let now = now_micros().timestamp_micros();
    let updated = sqlx::query(
        "UPDATE runs SET state = 'queued', attempts = 0, first_failure_at = NULL,
             next_attempt_at = ?, updated_at = ?, input = COALESCE(?, input)
         WHERE id = ? AND state IN ('parked', 'retrying')",
    )
    .bind(now)
    .bind(now)
    .bind(new_input.as_ref().map(json_text))
    .bind(id.to_string())
    .execute(&mut *conn)
    .await
    .map_err(|e| map_error(&e))?;
    if updated.rows_affected() == 0 {
        return Err(explain_no_update(conn, id, "replay").await);
    }
    if new_input.is_some() {
        sqlx::query("DELETE FROM steps WHERE run_id = ?")
            .bind(id.to_string())
            .execute(&mut *conn)
            .await
            .map_err(|e| map_error(&e))?;
    }
    Ok(())
}

pub(super) async fn discard(conn: &mut SqliteConnection, id: Uuid, reason: &str) -> Result<()> {
    let now = now_micros().timestamp_micros();
    let statement = format!(
        "UPDATE runs SET state = 'discarded', discard_reason = ?, {CLEAR_LEASE}, updated_at = ?
         WHERE id = ? AND state IN ('parked', 'retrying', 'queued')"
    );
    let updated = sqlx::query(&statement)
        .bind(reason)
        .bind(now)
        .bind(id.to_string())
        .execute(&mut *conn)
        .await
        .map_err(|e| map_error(&e))?;
    if updated.rows_affected() == 0 {
        return Err(explain_no_update(conn, id, "discard").await);
    }
    Ok(())
}

async fn load_intent(conn: &mut SqliteConnection, key: &BusinessKey) -> Result<Option<Intent>> {
    let query = format!(
        "SELECT {INTENT_COLUMNS} FROM intents WHERE connection = ? AND kind = ? AND key = ?"
    );
    let row = sqlx::query(&query)
        .bind(&key.connection)
        .bind(&key.kind)
        .bind(&key.key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| map_error(&e))?;
    row.as_ref().map(intent_from_row).transpose()
}

pub(super) async fn begin_intent(
    conn: &mut SqliteConnection,
    key: &BusinessKey,
    run_id: Uuid,
) -> Result<Intent> {
    let now = now_micros().timestamp_micros();
    sqlx::query(
        "INSERT INTO intents (connection, kind, key, run_id, state, external_id,
                              created_at, updated_at)
         VALUES (?, ?, ?, ?, 'pending', NULL, ?, ?)
         ON CONFLICT (connection, kind, key) DO NOTHING",
    )
    .bind(&key.connection)
    .bind(&key.kind)
    .bind(&key.key)
    .bind(run_id.to_string())
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(|e| map_error(&e))?;
    load_intent(conn, key)
        .await?
        .ok_or_else(|| StoreError::Fatal(format!("intent {key} vanished after insert")))
}

pub(super) async fn link_intent(
    conn: &mut SqliteConnection,
    key: &BusinessKey,
    external_id: &str,
) -> Result<()> {
    let now = now_micros().timestamp_micros();
    match load_intent(conn, key).await? {
        None => {
            sqlx::query(
                "INSERT INTO intents (connection, kind, key, run_id, state, external_id,
                                      created_at, updated_at)
                 VALUES (?, ?, ?, ?, 'linked', ?, ?, ?)",
            )
            .bind(&key.connection)
            .bind(&key.kind)
            .bind(&key.key)
            .bind(Uuid::nil().to_string())
            .bind(external_id)
            .bind(now)
            .bind(now)
            .execute(&mut *conn)
            .await
            .map_err(|e| map_error(&e))?;
            Ok(())
        }
        Some(Intent {
            state: IntentState::Pending,
            ..
        }) => {
            sqlx::query(
                "UPDATE intents SET state = 'linked', external_id = ?, updated_at = ?
                 WHERE connection = ? AND kind = ? AND key = ?",
            )
            .bind(external_id)
            .bind(now)
            .bind(&key.connection)
            .bind(&key.kind)
            .bind(&key.key)
            .execute(&mut *conn)
            .await
            .map_err(|e| map_error(&e))?;
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

pub(super) async fn set_cursor(conn: &mut SqliteConnection, name: &str, value: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO cursors (name, value, updated_at) VALUES (?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    )
    .bind(name)
    .bind(value)
    .bind(now_micros().timestamp_micros())
    .execute(&mut *conn)
    .await
    .map_err(|e| map_error(&e))?;
    Ok(())
}

pub(super) async fn audit(conn: &mut SqliteConnection, entry: NewAudit) -> Result<AuditRecord> {
    let last = sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| map_error(&e))?;
    let (seq, prev_hash) = match last {
        Some(row) => (get::<i64>(&row, "seq")? + 1, get::<String>(&row, "hash")?),
        None => (1, GENESIS_HASH.to_owned()),
    };
    let at = now_micros();
    let hash = audit_hash(&prev_hash, seq, at, &entry);
    sqlx::query("INSERT INTO audit (seq, at, entry, prev_hash, hash) VALUES (?, ?, ?, ?, ?)")
        .bind(seq)
        .bind(at.timestamp_micros())
        .bind(canonical_entry(&entry))
        .bind(&prev_hash)
        .bind(&hash)
        .execute(&mut *conn)
        .await
        .map_err(|e| map_error(&e))?;
    Ok(AuditRecord {
        seq,
        at,
        entry,
        prev_hash,
        hash,
    })
}
