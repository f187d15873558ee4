//! The PostgreSQL backend: many engine processes on many machines share
//! one database.
//!
//! Every method is one short transaction (most are one statement). Claims
//! are one atomic `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)`,
//! so concurrent workers never receive the same run; every write made under
//! a lease checks `lease_token` and `state = 'running'` in the same
//! statement (fencing). Times come from the database clock (`now()`), so
//! leases mean the same thing to every machine. All values are bound
//! parameters. Webhook ingest is group-committed ([`ingest`]): concurrent
//! events share one statement and one commit.

mod ingest;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledgerbridge_core::BusinessKey;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Postgres, Row};
use uuid::Uuid;

use crate::chain::{audit_hash, canonical_entry, GENESIS_HASH};
use crate::common::{self, page_size, MAX_AUDIT_PAGE, MAX_CLAIM};
use crate::{
    AuditRecord, BegunIntent, ClaimedRun, IngestOutcome, Intent, Lease, NewAudit, NewEvent, NewRun,
    Result, Run, RunDetail, RunFilter, RunOutcome, RunState, StepCommit, StepRecord, Store,
    StoreError, StoredEvent,
};
use ingest::IngestQueue;

/// Schema migrations, applied in order; the number is the version.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "intent settled",
        include_str!("../migrations/postgres/0002_intent_settled.sql"),
    ),
];

/// Advisory lock keys (arbitrary constants, unique to Ledgerbridge).
const MIGRATION_LOCK: i64 = 0x4c42_0001;
const AUDIT_LOCK: i64 = 0x4c42_0002;

/// Longest lease we store (100 years), so the arithmetic cannot overflow.
const MAX_LEASE_MICROS: i64 = 100 * 366 * 24 * 3600 * 1_000_000;

/// Tuning knobs of the PostgreSQL backend.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections in the pool.
    pub pool_size: u32,
    /// How long a caller waits for a free connection before the store
    /// reports `Unavailable`.
    pub acquire_timeout: Duration,
    /// Most events `ingest` writes together in one statement.
    pub ingest_batch: usize,
    /// Ingest batches written at the same time (at most `pool_size`), each
    /// on its own connection.
    pub ingest_executors: usize,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            pool_size: 10,
            acquire_timeout: Duration::from_secs(5),
            ingest_batch: 256,
            ingest_executors: 3,
        }
    }
}

/// The PostgreSQL [`Store`].
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    ingest: IngestQueue,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("pool_size", &self.pool.size())
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url` with default options and runs the migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, PgOptions::default()).await
    }

    /// Connects to `url` and runs the migrations.
    pub async fn connect_with(url: &str, options: PgOptions) -> Result<Self> {
        let connect_options = PgConnectOptions::from_str(url).map_err(|e| {
            StoreError::Fatal(format!(
                "invalid postgres URL {}: {e}",
                crate::open::redact_password(url)
            ))
        })?;
        let connect_options = connect_options.application_name("ledgerbridge");
        let pool_size = options.pool_size.max(1);
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect_options)
            .await
            .map_err(|e| map_error(&e))?;
        let executors = options
            .ingest_executors
            .min(usize::try_from(pool_size).unwrap_or(usize::MAX));
        Self::migrate(&pool).await?;
        let ingest = IngestQueue::start(pool.clone(), options.ingest_batch, executors);
        Ok(PgStore { pool, ingest })
    }

    /// The underlying pool (for tests and administrative tools).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every connection of the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Applies missing migrations in one transaction, under an advisory
    /// lock so concurrent starters do not race.
    async fn migrate(pool: &PgPool) -> Result<()> {
        let mut tx = pool.begin().await.map_err(|e| map_error(&e))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(|e| map_error(&e))?;
        sqlx::Executor::execute(
            &mut *tx,
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    bigint      NOT NULL PRIMARY KEY,
                 name       text        NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(|e| map_error(&e))?;
        let applied: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| map_error(&e))?;
        let known = MIGRATIONS.last().map_or(0, |m| m.0);
        if applied > known {
            return Err(common::newer_schema(applied, known));
        }
        for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > applied) {
            let fail = |e: sqlx::Error| match map_error(&e) {
                StoreError::Unavailable(text) => StoreError::Unavailable(text),
                other => StoreError::Fatal(format!("migration {version} ({name}) failed: {other}")),
            };
            sqlx::Executor::execute(&mut *tx, *sql)
                .await
                .map_err(fail)?;
            sqlx::query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)")
                .bind(version)
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
            tracing::info!(version, name, "applying postgres migration");
        }
        tx.commit().await.map_err(|e| map_error(&e))?;
        Ok(())
    }

    /// Why an update guarded by a state condition changed nothing.
    async fn explain_no_update(&self, id: Uuid, action: &str) -> StoreError {
        let state: std::result::Result<Option<String>, _> =
            sqlx::query_scalar("SELECT state FROM runs WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await;
        match state {
            Ok(None) => StoreError::NotFound(format!("run {id}")),
            Ok(Some(state)) => {
                StoreError::InvalidState(format!("cannot {action} run {id}: it is {state}"))
            }
            Err(e) => map_error(&e),
        }
    }
}

/// Maps a driver error to the store's error classes. Connection trouble,
/// shutdown, resource exhaustion, serialization conflicts and read-only
/// transactions are `Unavailable` (retry later); the rest is `Fatal`.
pub(crate) fn map_error(error: &sqlx::Error) -> StoreError {
    match error {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let text = format!("postgres error {code}: {}", db.message());
            let class = code.get(..2).unwrap_or_default();
            let retriable = matches!(class, "08" | "40" | "53" | "57" | "58")
                || matches!(code.as_str(), "25006" | "55P03" | "55006" | "55000");
            if retriable {
                StoreError::Unavailable(text)
            } else {
                StoreError::Fatal(text)
            }
        }
        sqlx::Error::Io(e) => StoreError::Unavailable(format!("postgres i/o error: {e}")),
        sqlx::Error::Tls(e) => StoreError::Unavailable(format!("postgres tls error: {e}")),
        sqlx::Error::PoolTimedOut => StoreError::Unavailable(
            "postgres pool exhausted: no connection became free in time".to_owned(),
        ),
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed | sqlx::Error::Protocol(_) => {
            StoreError::Unavailable(format!("postgres connection lost: {error}"))
        }
        other => StoreError::Fatal(format!("postgres: {other}")),
    }
}

fn lease_micros(lease_for: Duration) -> i64 {
    i64::try_from(lease_for.as_micros())
        .unwrap_or(MAX_LEASE_MICROS)
        .min(MAX_LEASE_MICROS)
}

// ---- row decoding ----

const RUN_COLUMNS: &str = "id, event_id, flow, flow_version, state, input, attempts, created_at, \
     updated_at, next_attempt_at, first_failure_at, last_error, lease_owner, lease_expires_at";

const INTENT_COLUMNS: &str =
    "connection, kind, key, run_id, state, external_id, created_at, updated_at";

fn get<'r, T>(row: &'r PgRow, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(column).map_err(|e| map_error(&e))
}

fn run_from_row(row: &PgRow) -> Result<Run> {
    let last_error: Option<Value> = get(row, "last_error")?;
    Ok(Run {
        id: get(row, "id")?,
        event_id: get(row, "event_id")?,
        flow: get(row, "flow")?,
        flow_version: get(row, "flow_version")?,
        state: common::parse_state(&get::<String>(row, "state")?)?,
        input: get(row, "input")?,
        attempts: get(row, "attempts")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        next_attempt_at: get(row, "next_attempt_at")?,
        first_failure_at: get(row, "first_failure_at")?,
        last_error: last_error
            .map(|value| {
                serde_json::from_value(value)
                    .map_err(|e| StoreError::Fatal(format!("corrupt run error: {e}")))
            })
            .transpose()?,
        lease_owner: get(row, "lease_owner")?,
        lease_expires_at: get(row, "lease_expires_at")?,
    })
}

fn step_from_row(row: &PgRow) -> Result<StepRecord> {
    Ok(StepRecord {
        step: get(row, "step")?,
        output: get(row, "output")?,
        attempts: get(row, "attempts")?,
        started_at: get(row, "started_at")?,
        finished_at: get(row, "finished_at")?,
    })
}

fn intent_from_row(row: &PgRow) -> Result<Intent> {
    Ok(Intent {
        key: BusinessKey::new(
            get::<String>(row, "connection")?,
            get::<String>(row, "kind")?,
            get::<String>(row, "key")?,
        ),
        run_id: get(row, "run_id")?,
        state: common::parse_intent_state(&get::<String>(row, "state")?, get(row, "external_id")?)?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

fn audit_from_row(row: &PgRow) -> Result<AuditRecord> {
    let entry_text: String = get(row, "entry")?;
    let entry: NewAudit = serde_json::from_str(&entry_text)
        .map_err(|e| StoreError::Fatal(format!("corrupt audit entry: {e}")))?;
    Ok(AuditRecord {
        seq: get(row, "seq")?,
        at: get(row, "at")?,
        entry,
        prev_hash: get(row, "prev_hash")?,
        hash: get(row, "hash")?,
    })
}

async fn journal<'e, E>(executor: E, run_id: Uuid) -> Result<Vec<StepRecord>>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let rows = sqlx::query(
        "SELECT step, output, attempts, started_at, finished_at
         FROM steps WHERE run_id = $1 ORDER BY ord, finished_at",
    )
    .bind(run_id)
    .fetch_all(executor)
    .await
    .map_err(|e| map_error(&e))?;
    rows.iter().map(step_from_row).collect()
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query(
            "INSERT INTO health (id, at) VALUES (1, now())
             ON CONFLICT (id) DO UPDATE SET at = EXCLUDED.at",
        )
        .execute(&self.pool)
        .await
        .map_err(|e| map_error(&e))?;
        Ok(())
    }

    async fn ingest(&self, event: NewEvent, runs: Vec<NewRun>) -> Result<IngestOutcome> {
        self.ingest.ingest(event, runs).await
    }

    async fn enqueue(&self, run: NewRun) -> Result<()> {
        sqlx::query(
            "INSERT INTO runs (id, event_id, flow, flow_version, state, input, attempts,
                               created_at, updated_at, next_attempt_at)
             VALUES ($1, NULL, $2, $3, 'queued', $4, 0, now(), now(), $5)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(run.id)
        .bind(&run.flow)
        .bind(&run.flow_version)
        .bind(Json(&run.input))
        .bind(run.not_before)
        .execute(&self.pool)
        .await
        .map_err(|e| map_error(&e))?;
        Ok(())
    }

    async fn event(&self, id: Uuid) -> Result<Option<StoredEvent>> {
        let row = sqlx::query(
            "SELECT id, source, dedupe_key, received_at, headers, body FROM events WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| map_error(&e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(NewEvent {
            id: get(&row, "id")?,
            source: get(&row, "source")?,
            dedupe_key: get(&row, "dedupe_key")?,
            received_at: get(&row, "received_at")?,
            headers: get(&row, "headers")?,
            body: get(&row, "body")?,
        }))
    }

    async fn claim(&self, owner: &str, lease_for: Duration, limit: u32) -> Result<Vec<ClaimedRun>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let query = format!(
            "UPDATE runs SET state = 'running', attempts = attempts + 1, lease_owner = $1,
                 lease_token = gen_random_uuid(),
                 lease_expires_at = now() + $2 * interval '1 microsecond', updated_at = now()
             WHERE id IN (
                 SELECT id FROM runs
                 WHERE state IN ('queued', 'retrying') AND next_attempt_at <= now()
                 ORDER BY next_attempt_at, seq
                 LIMIT $3
                 FOR UPDATE SKIP LOCKED)
             RETURNING seq, lease_token, {RUN_COLUMNS}"
        );
        let rows = sqlx::query(&query)
            .bind(owner)
            .bind(lease_micros(lease_for))
            .bind(i64::from(limit.min(MAX_CLAIM)))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_error(&e))?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let run = run_from_row(row)?;
            let seq: i64 = get(row, "seq")?;
            let token: Uuid = get(row, "lease_token")?;
            claimed.push((seq, run, token));
        }
        claimed.sort_by_key(|(seq, run, _)| (run.next_attempt_at, *seq));
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let run_ids: Vec<Uuid> = claimed.iter().map(|c| c.1.id).collect();
        let step_rows = sqlx::query(
            "SELECT run_id, step, output, attempts, started_at, finished_at
             FROM steps WHERE run_id = ANY($1) ORDER BY run_id, ord, finished_at",
        )
        .bind(&run_ids)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| map_error(&e))?;
        let mut journals: std::collections::HashMap<Uuid, Vec<StepRecord>> =
            std::collections::HashMap::new();
        for row in &step_rows {
            let run_id: Uuid = get(row, "run_id")?;
            journals
                .entry(run_id)
                .or_default()
                .push(step_from_row(row)?);
        }
        Ok(claimed
            .into_iter()
            .map(|(_, run, token)| ClaimedRun {
                lease: Lease {
                    run_id: run.id,
                    owner: owner.to_owned(),
                    token,
                },
                journal: journals.remove(&run.id).unwrap_or_default(),
                run,
            })
            .collect())
    }

    async fn heartbeat(&self, leases: &[Lease], lease_for: Duration) -> Result<Vec<Uuid>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = leases.iter().map(|l| l.run_id).collect();
        let tokens: Vec<Uuid> = leases.iter().map(|l| l.token).collect();
        let kept: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE runs AS r
             SET lease_expires_at = now() + $3 * interval '1 microsecond', updated_at = now()
             FROM unnest($1::uuid[], $2::uuid[]) AS l(id, token)
             WHERE r.id = l.id AND r.lease_token = l.token AND r.state = 'running'
             RETURNING r.id",
        )
        .bind(&ids)
        .bind(&tokens)
        .bind(lease_micros(lease_for))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| map_error(&e))?;
        Ok(ids.into_iter().filter(|id| !kept.contains(id)).collect())
    }

    async fn commit_step(&self, lease: &Lease, commit: StepCommit) -> Result<Value> {
        if commit.is_single_write() {
            let mut conn = self.pool.acquire().await.map_err(|e| map_error(&e))?;
            record_step_in(&mut conn, lease, &commit.record).await?;
            return Ok(commit.record.output);
        }
        let mut tx = self.pool.begin().await.map_err(|e| map_error(&e))?;
        record_step_in(&mut tx, lease, &commit.record).await?;
        for link in &commit.links {
            link_in(&mut tx, &link.key, &link.external_id).await?;
        }
        if let Some(outcome) = commit.finish {
            finish_in(&mut tx, lease, outcome).await?;
        }
        // Last: the audit chain's lock is held only until the commit.
        for entry in commit.audits {
            audit_in(&mut tx, entry).await?;
        }
        tx.commit().await.map_err(|e| map_error(&e))?;
        Ok(commit.record.output)
    }

    async fn finish(&self, lease: &Lease, outcome: RunOutcome) -> Result<()> {
        let mut conn = self.pool.acquire().await.map_err(|e| map_error(&e))?;
        finish_in(&mut conn, lease, outcome).await
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let updated = sqlx::query(
            "UPDATE runs SET state = 'queued', next_attempt_at = now(),
                 attempts = GREATEST(attempts - 1, 0),
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
                 updated_at = now()
             WHERE id = $1 AND lease_token = $2 AND state = 'running'",
        )
        .bind(lease.run_id)
        .bind(lease.token)
        .execute(&self.pool)
        .await
        .map_err(|e| map_error(&e))?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::LeaseLost(lease.run_id));
        }
        Ok(())
    }

    async fn reap_expired(&self) -> Result<u64> {
        let updated = sqlx::query(
            "UPDATE runs SET state = 'queued',
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
                 updated_at = now()
             WHERE state = 'running' AND lease_expires_at < now()",
        )
        .execute(&self.pool)
        .await
        .map_err(|e| map_error(&e))?;
        Ok(updated.rows_affected())
    }

    async fn run(&self, id: Uuid) -> Result<Option<RunDetail>> {
        let mut tx = self.pool.begin().await.map_err(|e| map_error(&e))?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(|e| map_error(&e))?;
        let query = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1");
        let row = sqlx::query(&query)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| map_error(&e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let run = run_from_row(&row)?;
        let journal = journal(&mut *tx, id).await?;
        tx.commit().await.map_err(|e| map_error(&e))?;
        Ok(Some(RunDetail { run, journal }))
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>> {
        let before_seq: Option<i64> = match filter.before {
            None => None,
            Some(before) => Some(
                sqlx::query_scalar("SELECT seq FROM runs WHERE id = $1")
                    .bind(before)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| map_error(&e))?
                    .ok_or_else(|| StoreError::NotFound(format!("run {before}")))?,
            ),
        };
        // Only fixed fragments are spliced in; every value is bound.
        let mut query = format!("SELECT {RUN_COLUMNS} FROM runs WHERE true");
        let mut next = 1;
        if filter.state.is_some() {
            query.push_str(&format!(" AND state = ${next}"));
            next += 1;
        }
        if filter.flow.is_some() {
            query.push_str(&format!(" AND flow = ${next}"));
            next += 1;
        }
        if before_seq.is_some() {
            query.push_str(&format!(" AND seq < ${next}"));
            next += 1;
        }
        query.push_str(&format!(" ORDER BY seq DESC LIMIT ${next}"));
        let mut statement = sqlx::query(&query);
        if let Some(state) = filter.state {
            statement = statement.bind(state.as_str());
        }
        if let Some(flow) = &filter.flow {
            statement = statement.bind(flow.as_str());
        }
        if let Some(seq) = before_seq {
            statement = statement.bind(seq);
        }
        let rows = statement
            .bind(page_size(filter.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_error(&e))?;
        rows.iter().map(run_from_row).collect()
    }

    async fn count_by_state(&self) -> Result<Vec<(RunState, i64)>> {
        let rows = sqlx::query("SELECT state, count(*) AS n FROM runs GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_error(&e))?;
        let mut counts: Vec<(RunState, i64)> = RunState::ALL.iter().map(|s| (*s, 0)).collect();
        for row in &rows {
            let state = common::parse_state(&get::<String>(row, "state")?)?;
            let n: i64 = get(row, "n")?;
            if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == state) {
                slot.1 = n;
            }
        }
        Ok(counts)
    }

    async fn replay(&self, id: Uuid, new_input: Option<Value>) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(|e| map_error(&e))?;
        let updated = sqlx::query(
            "UPDATE runs SET state = 'queued', attempts = 0, first_failure_at = NULL,
                 next_attempt_at = now(), updated_at = now(), input = COALESCE($2, input)
             WHERE id = $1 AND state IN ('parked', 'retrying')",
        )
        .bind(id)
        .bind(new_input.as_ref().map(Json))
        .execute(&mut *tx)
        .await
        .map_err(|e| map_error(&e))?;
        if updated.rows_affected() == 0 {
            drop(tx);
            return Err(self.explain_no_update(id, "replay").await);
        }
        if new_input.is_some() {
            sqlx::query("DELETE FROM steps WHERE run_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(|e| map_error(&e))?;
        }
        tx.commit().await.map_err(|e| map_error(&e))?;
        Ok(())
    }

    async fn discard(&self, id: Uuid, reason: &str) -> Result<()> {
        let updated = sqlx::query(
            "UPDATE runs SET state = 'discarded', discard_reason = $2,
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
                 updated_at = now()
             WHERE id = $1 AND state IN ('parked', 'retrying', 'queued')",
        )
        .bind(id)
        .bind(reason)
        .execute(&self.pool)
        .await
        .map_err(|e| map_error(&e))?;
        if updated.rows_affected() == 0 {
            return Err(self.explain_no_update(id, "discard").await);
        }
        Ok(())
    }

    async fn begin_intent(
        &self,
        key: &BusinessKey,
        run_id: Uuid,
        in_flight_for: Duration,
    ) -> Result<BegunIntent> {
        let query = format!(
            "INSERT INTO intents (connection, kind, key, run_id, state, external_id,
                                  created_at, updated_at, settled)
             VALUES ($1, $2, $3, $4, 'pending', NULL, now(), now(), false)
             ON CONFLICT (connection, kind, key) DO NOTHING
             RETURNING {INTENT_COLUMNS}"
        );
        let row = sqlx::query(&query)
            .bind(&key.connection)
            .bind(&key.kind)
            .bind(&key.key)
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_error(&e))?;
        if let Some(row) = row {
            return Ok(BegunIntent {
                intent: intent_from_row(&row)?,
                inserted: true,
                in_flight_until: None,
            });
        }
        // Pending from an earlier attempt: start a new one only if that
        // attempt ended or can no longer be in flight. The row lock makes
        // two resumers race safely: the second sees the first's new
        // attempt and waits for it. The database's clock decides, as it
        // wrote `updated_at`.
        let micros = i64::try_from(in_flight_for.as_micros())
            .unwrap_or(MAX_LEASE_MICROS)
            .min(MAX_LEASE_MICROS);
        let restarted = format!(
            "UPDATE intents SET updated_at = now(), settled = false
             WHERE connection = $1 AND kind = $2 AND key = $3 AND state = 'pending'
               AND (settled OR updated_at + $4::bigint * interval '1 microsecond' <= now())
             RETURNING {INTENT_COLUMNS}"
        );
        let row = sqlx::query(&restarted)
            .bind(&key.connection)
            .bind(&key.kind)
            .bind(&key.key)
            .bind(micros)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_error(&e))?;
        if let Some(row) = row {
            return Ok(BegunIntent {
                intent: intent_from_row(&row)?,
                inserted: false,
                in_flight_until: None,
            });
        }
        // Linked, or pending with an attempt that may still be in flight.
        let intent = load_intent(&self.pool, key)
            .await?
            .ok_or_else(|| StoreError::Unavailable(format!("intent {key} changed concurrently")))?;
        let in_flight_until = match intent.state {
            crate::IntentState::Pending => Some(crate::common::lease_expiry(
                intent.updated_at,
                in_flight_for,
            )),
            crate::IntentState::Linked { .. } => None,
        };
        Ok(BegunIntent {
            intent,
            inserted: false,
            in_flight_until,
        })
    }

    async fn settle_intent(&self, key: &BusinessKey) -> Result<()> {
        sqlx::query(
            "UPDATE intents SET settled = true
             WHERE connection = $1 AND kind = $2 AND key = $3 AND state = 'pending'",
        )
        .bind(&key.connection)
        .bind(&key.kind)
        .bind(&key.key)
        .execute(&self.pool)
        .await
        .map_err(|e| map_error(&e))?;
        Ok(())
    }

    async fn restamp_intent(
        &self,
        key: &BusinessKey,
        began: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>> {
        sqlx::query_scalar(
            "UPDATE intents SET updated_at = now()
             WHERE connection = $1 AND kind = $2 AND key = $3 AND state = 'pending'
               AND NOT settled AND updated_at = $4
             RETURNING updated_at",
        )
        .bind(&key.connection)
        .bind(&key.kind)
        .bind(&key.key)
        .bind(began)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| map_error(&e))
    }

    async fn link_intent(&self, key: &BusinessKey, external_id: &str) -> Result<()> {
        let mut conn = self.pool.acquire().await.map_err(|e| map_error(&e))?;
        link_in(&mut conn, key, external_id).await
    }

    async fn intent(&self, key: &BusinessKey) -> Result<Option<Intent>> {
        load_intent(&self.pool, key).await
    }

    async fn ledger(&self, connection: &str, kind: &str) -> Result<Vec<Intent>> {
        let query = format!(
            "SELECT {INTENT_COLUMNS} FROM intents WHERE connection = $1 AND kind = $2
             ORDER BY created_at, key"
        );
        let rows = sqlx::query(&query)
            .bind(connection)
            .bind(kind)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_error(&e))?;
        rows.iter().map(intent_from_row).collect()
    }

    async fn cursor(&self, name: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT value FROM cursors WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_error(&e))
    }

    async fn set_cursor(&self, name: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO cursors (name, value, updated_at) VALUES ($1, $2, now())
             ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(|e| map_error(&e))?;
        Ok(())
    }

    async fn audit(&self, entry: NewAudit) -> Result<AuditRecord> {
        let mut tx = self.pool.begin().await.map_err(|e| map_error(&e))?;
        let record = audit_in(&mut tx, entry).await?;
        tx.commit().await.map_err(|e| map_error(&e))?;
        Ok(record)
    }

    async fn audit_since(&self, after: i64, limit: u32) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT seq, at, entry::text AS entry, prev_hash, hash FROM audit
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit.min(MAX_AUDIT_PAGE)))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| map_error(&e))?;
        rows.iter().map(audit_from_row).collect()
    }
}

// ---- writes shared by single calls and step commits ----

/// The ledger row of `key`, on the pool or inside a transaction.
async fn load_intent<'e, E>(executor: E, key: &BusinessKey) -> Result<Option<Intent>>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let query = format!(
        "SELECT {INTENT_COLUMNS} FROM intents WHERE connection = $1 AND kind = $2 AND key = $3"
    );
    let row = sqlx::query(&query)
        .bind(&key.connection)
        .bind(&key.kind)
        .bind(&key.key)
        .fetch_optional(executor)
        .await
        .map_err(|e| map_error(&e))?;
    row.as_ref().map(intent_from_row).transpose()
}

async fn record_step_in(conn: &mut PgConnection, lease: &Lease, step: &StepRecord) -> Result<()> {
    // FOR SHARE makes a concurrent reap/discard either wait for this
    // insert or be seen by it: the lease check cannot go stale.
    let written: Option<Uuid> = sqlx::query_scalar(
        "WITH lease AS (
             SELECT id FROM runs
             WHERE id = $1 AND lease_token = $2 AND state = 'running'
             FOR SHARE
         )
         INSERT INTO steps (run_id, step, ord, output, attempts, started_at, finished_at)
         SELECT lease.id, $3,
                COALESCE((SELECT max(ord) FROM steps WHERE run_id = $1), 0) + 1,
                $4, $5, $6, $7
         FROM lease
         ON CONFLICT (run_id, step) DO UPDATE SET
             output = EXCLUDED.output, attempts = EXCLUDED.attempts,
             started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at
         RETURNING run_id",
    )
    .bind(lease.run_id)
    .bind(lease.token)
    .bind(&step.step)
    .bind(Json(&step.output))
    .bind(step.attempts)
    .bind(step.started_at)
    .bind(step.finished_at)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| map_error(&e))?;
    if written.is_none() {
        return Err(StoreError::LeaseLost(lease.run_id));
    }
    Ok(())
}

async fn finish_in(conn: &mut PgConnection, lease: &Lease, outcome: RunOutcome) -> Result<()> {
    let statement = match &outcome {
        RunOutcome::Succeeded => sqlx::query(
            "UPDATE runs SET state = 'succeeded', first_failure_at = NULL, last_error = NULL,
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
                 updated_at = now()
             WHERE id = $1 AND lease_token = $2 AND state = 'running'",
        ),
        RunOutcome::Retry { at, error } => sqlx::query(
            "UPDATE runs SET state = 'retrying', next_attempt_at = $3, last_error = $4,
                 first_failure_at = COALESCE(first_failure_at, now()),
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
                 updated_at = now()
             WHERE id = $1 AND lease_token = $2 AND state = 'running'",
        )
        .bind(lease.run_id)
        .bind(lease.token)
        .bind(*at)
        .bind(Json(error)),
        RunOutcome::Parked { error } => sqlx::query(
            "UPDATE runs SET state = 'parked', last_error = $3,
                 first_failure_at = COALESCE(first_failure_at, now()),
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
                 updated_at = now()
             WHERE id = $1 AND lease_token = $2 AND state = 'running'",
        )
        .bind(lease.run_id)
        .bind(lease.token)
        .bind(Json(error)),
    };
    let statement = match outcome {
        RunOutcome::Succeeded => statement.bind(lease.run_id).bind(lease.token),
        _ => statement,
    };
    let updated = statement
        .execute(&mut *conn)
        .await
        .map_err(|e| map_error(&e))?;
    if updated.rows_affected() == 0 {
        return Err(StoreError::LeaseLost(lease.run_id));
    }
    Ok(())
}

async fn link_in(conn: &mut PgConnection, key: &BusinessKey, external_id: &str) -> Result<()> {
    let linked: Option<i32> = sqlx::query_scalar(
        "INSERT INTO intents (connection, kind, key, run_id, state, external_id,
                              created_at, updated_at)
         VALUES ($1, $2, $3, $4, 'linked', $5, now(), now())
         ON CONFLICT (connection, kind, key) DO UPDATE
             SET state = 'linked', external_id = EXCLUDED.external_id, updated_at = now()
             WHERE intents.state = 'pending'
         RETURNING 1",
    )
    .bind(&key.connection)
    .bind(&key.kind)
    .bind(&key.key)
    .bind(Uuid::nil())
    .bind(external_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| map_error(&e))?;
    if linked.is_some() {
        return Ok(());
    }
    // Already linked (a linked intent never changes again).
    match load_intent(&mut *conn, key).await?.map(|i| i.state) {
        Some(crate::IntentState::Linked {
            external_id: current,
        }) if current == external_id => Ok(()),
        Some(crate::IntentState::Linked {
            external_id: current,
        }) => Err(StoreError::InvalidState(format!(
            "{key} is already linked to {current}, not {external_id}"
        ))),
        _ => Err(StoreError::Unavailable(format!(
            "intent {key} changed concurrently"
        ))),
    }
}

async fn audit_in(conn: &mut PgConnection, entry: NewAudit) -> Result<AuditRecord> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(AUDIT_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(|e| map_error(&e))?;
    // A new statement after the lock, so it sees the latest append.
    let row = sqlx::query(
        "SELECT clock_timestamp() AS now,
                (SELECT seq FROM audit ORDER BY seq DESC LIMIT 1) AS seq,
                (SELECT hash FROM audit ORDER BY seq DESC LIMIT 1) AS hash",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| map_error(&e))?;
    let at: DateTime<Utc> = common::truncate_micros(get(&row, "now")?);
    let (seq, prev_hash) = match (
        get::<Option<i64>>(&row, "seq")?,
        get::<Option<String>>(&row, "hash")?,
    ) {
        (Some(seq), Some(hash)) => (seq + 1, hash),
        _ => (1, GENESIS_HASH.to_owned()),
    };
    let hash = audit_hash(&prev_hash, seq, at, &entry);
    sqlx::query(
        "INSERT INTO audit (seq, at, entry, prev_hash, hash)
         VALUES ($1, $2, $3::json, $4, $5)",
    )
    .bind(seq)
    .bind(at)
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
