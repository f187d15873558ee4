//! The SQLite backend: the embedded default, one file, one machine.
//!
//! Writes go through one connection owned by a group-commit writer task
//! ([`writer`]): concurrent writes share one transaction and one fsync, yet
//! each keeps its own all-or-nothing effect. Reads use a small pool of
//! read-only connections, which WAL mode lets run alongside the writer.
//! The database runs with `journal_mode=WAL` and `synchronous=FULL`, so an
//! `Ok` from a write means the write is on disk.

mod ops;
mod writer;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledgerbridge_core::BusinessKey;
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Row, Sqlite};
use uuid::Uuid;

use crate::common::{self, page_size, MAX_AUDIT_PAGE};
use crate::{
    AuditRecord, ClaimedRun, IngestOutcome, Intent, Lease, NewAudit, NewEvent, NewRun, Result, Run,
    RunDetail, RunFilter, RunOutcome, RunState, StepRecord, Store, StoreError, StoredEvent,
};
use writer::{Atomicity, WriterHandle};

/// Schema migrations, applied in order; the number is the version.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "initial",
    include_str!("../migrations/sqlite/0001_initial.sql"),
)];

/// Tuning knobs of the SQLite backend.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Size of the read-only connection pool.
    pub read_connections: u32,
    /// How long a statement waits for a lock held by another process.
    pub busy_timeout: Duration,
    /// Most writes committed together in one transaction.
    pub max_batch: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            read_connections: 4,
            busy_timeout: Duration::from_secs(5),
            max_batch: 256,
        }
    }
}

/// The SQLite [`Store`].
pub struct SqliteStore {
    writer: WriterHandle,
    readers: SqlitePool,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating it and its directory if missing) and migrates the
    /// database file at `path`.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// [`SqliteStore::open`] with explicit options.
    pub async fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self> {
        let path: PathBuf = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent).await.map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let write_options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true)
            // 64 MiB page cache; checkpoint every ~16 MiB of WAL rather than
            // 4 MiB, so hot index pages are written back less often.
            .pragma("cache_size", "-65536")
            .pragma("wal_autocheckpoint", "4000");
        let read_options = SqliteConnectOptions::new()
            .filename(&path)
            .read_only(true)
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true);
        Self::start(write_options, read_options, &options).await
    }

    /// A private in-memory database, for tests. Nothing is durable.
    pub async fn open_in_memory() -> Result<Self> {
        let write_options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(|e| StoreError::Fatal(e.to_string()))?
            .foreign_keys(true);
        let read_options = write_options.clone();
        Self::start(write_options, read_options, &SqliteOptions::default()).await
    }

    async fn start(
        write_options: SqliteConnectOptions,
        read_options: SqliteConnectOptions,
        options: &SqliteOptions,
    ) -> Result<Self> {
        let mut conn = write_options.connect().await.map_err(|e| map_error(&e))?;
        migrate(&mut conn).await?;
        let writer = WriterHandle::spawn(write_options, conn, options.max_batch);
        let readers = SqlitePoolOptions::new()
            .max_connections(options.read_connections.max(1))
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(read_options)
            .await
            .map_err(|e| map_error(&e))?;
        Ok(SqliteStore { writer, readers })
    }

    /// Runs `sql` on the write connection outside any batch (tests only).
    #[cfg(test)]
    async fn exec_on_writer(&self, sql: &'static str) -> Result<()> {
        self.writer
            .write(Atomicity::Statement, move |conn| {
                Box::pin(async move {
                    sqlx::Executor::execute(&mut *conn, sql)
                        .await
                        .map_err(|e| map_error(&e))?;
                    Ok(())
                })
            })
            .await
    }
}

/// Applies the migrations this database lacks, in one transaction each.
async fn migrate(conn: &mut SqliteConnection) -> Result<()> {
    sqlx::Executor::execute(
        &mut *conn,
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER NOT NULL PRIMARY KEY,
             name       TEXT    NOT NULL,
             applied_at INTEGER NOT NULL
         )",
    )
    .await
    .map_err(|e| map_error(&e))?;
    let applied: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            .fetch_one(&mut *conn)
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
        sqlx::Executor::execute(&mut *conn, "BEGIN IMMEDIATE")
            .await
            .map_err(fail)?;
        let outcome = async {
            sqlx::Executor::execute(&mut *conn, *sql).await?;
            sqlx::query(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            )
            .bind(version)
            .bind(name)
            .bind(Utc::now().timestamp_micros())
            .execute(&mut *conn)
            .await?;
            sqlx::Executor::execute(&mut *conn, "COMMIT").await?;
            Ok::<_, sqlx::Error>(())
        }
        .await;
        if let Err(e) = outcome {
            let _ = sqlx::Executor::execute(&mut *conn, "ROLLBACK").await;
            return Err(fail(e));
        }
        tracing::info!(version, name, "applied sqlite migration");
    }
    Ok(())
}

/// Maps a driver error to the store's error classes: anything that says
/// "the database cannot do this right now" (busy, locked, read-only, full,
/// I/O) is `Unavailable`; the rest is `Fatal`.
pub(crate) fn map_error(error: &sqlx::Error) -> StoreError {
    match error {
        sqlx::Error::Database(db) => {
            let code: i32 = db.code().and_then(|c| c.parse().ok()).unwrap_or(1);
            let text = format!("sqlite error {code}: {}", db.message());
            match code & 0xff {
                // ABORT, BUSY, LOCKED, NOMEM, READONLY, INTERRUPT, IOERR,
                // FULL, CANTOPEN, PROTOCOL
                4 | 5 | 6 | 7 | 8 | 9 | 10 | 13 | 14 | 15 => StoreError::Unavailable(text),
                _ => StoreError::Fatal(text),
            }
        }
        sqlx::Error::Io(e) => StoreError::Unavailable(format!("sqlite i/o error: {e}")),
        sqlx::Error::PoolTimedOut => {
            StoreError::Unavailable("sqlite read pool exhausted".to_owned())
        }
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            StoreError::Unavailable(format!("sqlite connection lost: {error}"))
        }
        other => StoreError::Fatal(format!("sqlite: {other}")),
    }
}

// ---- row decoding, shared with `ops` ----

pub(crate) const RUN_COLUMNS: &str = "id, event_id, flow, flow_version, state, input, attempts, \
     created_at, updated_at, next_attempt_at, first_failure_at, last_error, lease_owner, \
     lease_expires_at";

fn get<'r, T>(row: &'r SqliteRow, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(column).map_err(|e| map_error(&e))
}

fn parse_uuid(text: &str) -> Result<Uuid> {
    Uuid::parse_str(text).map_err(|e| StoreError::Fatal(format!("corrupt id {text:?}: {e}")))
}

fn uuid_column(row: &SqliteRow, column: &str) -> Result<Uuid> {
    parse_uuid(&get::<String>(row, column)?)
}

fn time(micros: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::Fatal(format!("corrupt timestamp {micros}")))
}

fn time_column(row: &SqliteRow, column: &str) -> Result<DateTime<Utc>> {
    time(get(row, column)?)
}

fn optional_time_column(row: &SqliteRow, column: &str) -> Result<Option<DateTime<Utc>>> {
    get::<Option<i64>>(row, column)?.map(time).transpose()
}

fn json_column(row: &SqliteRow, column: &str) -> Result<Value> {
    let text: String = get(row, column)?;
    serde_json::from_str(&text)
        .map_err(|e| StoreError::Fatal(format!("corrupt json in {column}: {e}")))
}

fn json_text(value: &Value) -> String {
    value.to_string()
}

pub(crate) fn run_from_row(row: &SqliteRow) -> Result<Run> {
    Ok(Run {
        id: uuid_column(row, "id")?,
        event_id: get::<Option<String>>(row, "event_id")?
            .as_deref()
            .map(parse_uuid)
            .transpose()?,
        flow: get(row, "flow")?,
        flow_version: get(row, "flow_version")?,
        state: common::parse_state(&get::<String>(row, "state")?)?,
        input: json_column(row, "input")?,
        attempts: get(row, "attempts")?,
        created_at: time_column(row, "created_at")?,
        updated_at: time_column(row, "updated_at")?,
        next_attempt_at: time_column(row, "next_attempt_at")?,
        first_failure_at: optional_time_column(row, "first_failure_at")?,
        last_error: get::<Option<String>>(row, "last_error")?
            .as_deref()
            .map(common::parse_error_json)
            .transpose()?,
        lease_owner: get(row, "lease_owner")?,
        lease_expires_at: optional_time_column(row, "lease_expires_at")?,
    })
}

fn step_from_row(row: &SqliteRow) -> Result<StepRecord> {
    Ok(StepRecord {
        step: get(row, "step")?,
        output: json_column(row, "output")?,
        attempts: get(row, "attempts")?,
        started_at: time_column(row, "started_at")?,
        finished_at: time_column(row, "finished_at")?,
    })
}

fn intent_from_row(row: &SqliteRow) -> Result<Intent> {
    Ok(Intent {
        key: BusinessKey::new(
            get::<String>(row, "connection")?,
            get::<String>(row, "kind")?,
            get::<String>(row, "key")?,
        ),
        run_id: uuid_column(row, "run_id")?,
        state: common::parse_intent_state(&get::<String>(row, "state")?, get(row, "external_id")?)?,
        created_at: time_column(row, "created_at")?,
        updated_at: time_column(row, "updated_at")?,
    })
}

fn audit_from_row(row: &SqliteRow) -> Result<AuditRecord> {
    let entry_text: String = get(row, "entry")?;
    let entry: NewAudit = serde_json::from_str(&entry_text)
        .map_err(|e| StoreError::Fatal(format!("corrupt audit entry: {e}")))?;
    Ok(AuditRecord {
        seq: get(row, "seq")?,
        at: time_column(row, "at")?,
        entry,
        prev_hash: get(row, "prev_hash")?,
        hash: get(row, "hash")?,
    })
}

/// The journal of a run, in recording order.
pub(crate) async fn journal<'e, E>(executor: E, run_id: Uuid) -> Result<Vec<StepRecord>>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    let rows = sqlx::query(
        "SELECT step, output, attempts, started_at, finished_at
         FROM steps WHERE run_id = ? ORDER BY ord, finished_at",
    )
    .bind(run_id.to_string())
    .fetch_all(executor)
    .await
    .map_err(|e| map_error(&e))?;
    rows.iter().map(step_from_row).collect()
}

const INTENT_COLUMNS: &str =
    "connection, kind, key, run_id, state, external_id, created_at, updated_at";

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        self.writer
            .write(Atomicity::Statement, |conn| {
                Box::pin(ops::touch_health(conn))
            })
            .await?;
        sqlx::query("SELECT at FROM health WHERE id = 1")
            .fetch_optional(&self.readers)
            .await
            .map_err(|e| map_error(&e))?;
        Ok(())
    }

    async fn ingest(&self, event: NewEvent, runs: Vec<NewRun>) -> Result<IngestOutcome> {
        self.writer
            .write(Atomicity::Statement, move |conn| {
                Box::pin(async move { ops::ingest(conn, &event, &runs).await })
            })
            .await
    }

    async fn enqueue(&self, run: NewRun) -> Result<()> {
        self.writer
            .write(Atomicity::Statement, move |conn| {
                Box::pin(async move { ops::enqueue(conn, &run).await })
            })
            .await
    }

    async fn event(&self, id: Uuid) -> Result<Option<StoredEvent>> {
        let row = sqlx::query(
            "SELECT id, source, dedupe_key, received_at, headers, body FROM events WHERE id = ?",
        )
        .bind(id.to_string())
        .fetch_optional(&self.readers)
        .await
        .map_err(|e| map_error(&e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(NewEvent {
            id: uuid_column(&row, "id")?,
            source: get(&row, "source")?,
            dedupe_key: get(&row, "dedupe_key")?,
            received_at: time_column(&row, "received_at")?,
            headers: json_column(&row, "headers")?,
            body: get(&row, "body")?,
        }))
    }

    async fn claim(&self, owner: &str, lease_for: Duration, limit: u32) -> Result<Vec<ClaimedRun>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let owner = owner.to_owned();
        self.writer
            .write(Atomicity::Savepoint, move |conn| {
                Box::pin(async move { ops::claim(conn, &owner, lease_for, limit).await })
            })
            .await
    }

    async fn heartbeat(&self, leases: &[Lease], lease_for: Duration) -> Result<Vec<Uuid>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let leases = leases.to_vec();
        self.writer
            .write(Atomicity::Statement, move |conn| {
                Box::pin(async move { ops::heartbeat(conn, &leases, lease_for).await })
            })
            .await
    }

    async fn record_step(&self, lease: &Lease, step: &StepRecord) -> Result<()> {
        let lease = lease.clone();
        let step = step.clone();
        self.writer
            .write(Atomicity::Statement, move |conn| {
                Box::pin(async move { ops::record_step(conn, &lease, &step).await })
            })
            .await
    }

    async fn finish(&self, lease: &Lease, outcome: RunOutcome) -> Result<()> {
        let lease = lease.clone();
        self.writer
            .write(Atomicity::Statement, move |conn| {
                Box::pin(async move { ops::finish(conn, &lease, &outcome).await })
            })
            .await
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let lease = lease.clone();
        self.writer
            .write(Atomicity::Statement, move |conn| {
                Box::pin(async move { ops::release(conn, &lease).await })
            })
            .await
    }

    async fn reap_expired(&self) -> Result<u64> {
        self.writer
            .write(Atomicity::Statement, |conn| {
                Box::pin(ops::reap_expired(conn))
            })
            .await
    }

    async fn run(&self, id: Uuid) -> Result<Option<RunDetail>> {
        let mut tx = self.readers.begin().await.map_err(|e| map_error(&e))?;
        let query = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?");
        let row = sqlx::query(&query)
            .bind(id.to_string())
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
        let mut conn = self.readers.acquire().await.map_err(|e| map_error(&e))?;
        let before_seq: Option<i64> = match filter.before {
            None => None,
            Some(before) => Some(
                sqlx::query_scalar("SELECT seq FROM runs WHERE id = ?")
                    .bind(before.to_string())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(|e| map_error(&e))?
                    .ok_or_else(|| StoreError::NotFound(format!("run {before}")))?,
            ),
        };
        // Only fixed fragments are spliced in; every value is bound.
        let mut query = format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1");
        if filter.state.is_some() {
            query.push_str(" AND state = ?");
        }
        if filter.flow.is_some() {
            query.push_str(" AND flow = ?");
        }
        if before_seq.is_some() {
            query.push_str(" AND seq < ?");
        }
        query.push_str(" ORDER BY seq DESC LIMIT ?");
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
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| map_error(&e))?;
        rows.iter().map(run_from_row).collect()
    }

    async fn count_by_state(&self) -> Result<Vec<(RunState, i64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM runs GROUP BY state")
            .fetch_all(&self.readers)
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
        self.writer
            .write(Atomicity::Savepoint, move |conn| {
                Box::pin(async move { ops::replay(conn, id, new_input).await })
            })
            .await
    }

    async fn discard(&self, id: Uuid, reason: &str) -> Result<()> {
        let reason = reason.to_owned();
        self.writer
            .write(Atomicity::Statement, move |conn| {
                Box::pin(async move { ops::discard(conn, id, &reason).await })
            })
            .await
    }

    async fn begin_intent(&self, key: &BusinessKey, run_id: Uuid) -> Result<Intent> {
        let key = key.clone();
        self.writer
            .write(Atomicity::Savepoint, move |conn| {
                Box::pin(async move { ops::begin_intent(conn, &key, run_id).await })
            })
            .await
    }

    async fn link_intent(&self, key: &BusinessKey, external_id: &str) -> Result<()> {
        let key = key.clone();
        let external_id = external_id.to_owned();
        self.writer
            .write(Atomicity::Statement, move |conn| {
                Box::pin(async move { ops::link_intent(conn, &key, &external_id).await })
            })
            .await
    }

    async fn intent(&self, key: &BusinessKey) -> Result<Option<Intent>> {
        let query = format!(
            "SELECT {INTENT_COLUMNS} FROM intents WHERE connection = ? AND kind = ? AND key = ?"
        );
        let row = sqlx::query(&query)
            .bind(&key.connection)
            .bind(&key.kind)
            .bind(&key.key)
            .fetch_optional(&self.readers)
            .await
            .map_err(|e| map_error(&e))?;
        row.as_ref().map(intent_from_row).transpose()
    }

    async fn ledger(&self, connection: &str, kind: &str) -> Result<Vec<Intent>> {
        let query = format!(
            "SELECT {INTENT_COLUMNS} FROM intents WHERE connection = ? AND kind = ?
             ORDER BY created_at, key"
        );
        let rows = sqlx::query(&query)
            .bind(connection)
            .bind(kind)
            .fetch_all(&self.readers)
            .await
            .map_err(|e| map_error(&e))?;
        rows.iter().map(intent_from_row).collect()
    }

    async fn cursor(&self, name: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT value FROM cursors WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.readers)
            .await
            .map_err(|e| map_error(&e))
    }

    async fn set_cursor(&self, name: &str, value: &str) -> Result<()> {
        let name = name.to_owned();
        let value = value.to_owned();
        self.writer
            .write(Atomicity::Statement, move |conn| {
                Box::pin(async move { ops::set_cursor(conn, &name, &value).await })
            })
            .await
    }

    async fn audit(&self, entry: NewAudit) -> Result<AuditRecord> {
        self.writer
            .write(Atomicity::Statement, move |conn| {
                Box::pin(async move { ops::audit(conn, entry).await })
            })
            .await
    }

    async fn audit_since(&self, after: i64, limit: u32) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT seq, at, entry, prev_hash, hash FROM audit WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(after)
        .bind(i64::from(limit.min(MAX_AUDIT_PAGE)))
        .fetch_all(&self.readers)
        .await
        .map_err(|e| map_error(&e))?;
        rows.iter().map(audit_from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::Fixture;

    fn event(key: &str, body: Vec<u8>) -> NewEvent {
        NewEvent {
            id: Uuid::new_v4(),
            source: "test".to_owned(),
            dedupe_key: key.to_owned(),
            received_at: Utc::now(),
            headers: serde_json::json!({}),
            body,
        }
    }

    async fn store_in(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(dir.path().join("lb.db"))
            .await
            .expect("open store")
    }

    #[tokio::test]
    async fn disk_full_is_unavailable_and_commits_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_in(&dir).await;
        // Cap the file at its current size: the next growth is SQLITE_FULL.
        store
            .exec_on_writer("PRAGMA max_page_count = 1")
            .await
            .expect("cap size");
        let big = event("big", vec![7u8; 4 << 20]);
        let result = store.ingest(big.clone(), vec![]).await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "expected Unavailable, got {result:?}"
        );
        assert_eq!(store.event(big.id).await.expect("read"), None);

        store
            .exec_on_writer("PRAGMA max_page_count = 1073741823")
            .await
            .expect("lift cap");
        let outcome = store.ingest(big.clone(), vec![]).await.expect("ingest");
        assert!(matches!(outcome, IngestOutcome::Accepted { .. }));
        assert!(store.event(big.id).await.expect("read").is_some());
    }

    #[tokio::test]
    async fn read_only_database_is_unavailable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_in(&dir).await;
        store
            .exec_on_writer("PRAGMA query_only = ON")
            .await
            .expect("make read-only");
        let result = store.ingest(event("k", vec![1]), vec![]).await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "expected Unavailable, got {result:?}"
        );
        assert!(matches!(
            store.ping().await,
            Err(StoreError::Unavailable(_))
        ));
        // Reads still work.
        assert!(store.cursor("c").await.expect("read").is_none());
    }

    #[tokio::test]
    async fn writes_are_durable_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = event("k", b"body".to_vec());
        {
            let store = store_in(&dir).await;
            store.ingest(first.clone(), vec![]).await.expect("ingest");
        }
        let store = store_in(&dir).await;
        let reopened = Fixture::new(std::sync::Arc::new(store));
        let stored = reopened.store.event(first.id).await.expect("read");
        assert_eq!(stored.map(|e| e.body), Some(b"body".to_vec()));
    }

    #[tokio::test]
    async fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_in(&dir).await;
        store
            .exec_on_writer(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)",
            )
            .await
            .expect("fake a future migration");
        drop(store);
        let reopened = SqliteStore::open(dir.path().join("lb.db")).await;
        assert!(matches!(reopened, Err(StoreError::Fatal(_))));
    }
}
