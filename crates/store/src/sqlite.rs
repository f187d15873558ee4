//! The SQLite backend: the embedded default, one file, one machine.
//!
//! Writes go through one connection owned by a group-commit writer thread
//! ([`writer`]): concurrent writes share one transaction and one fsync, yet
//! each keeps its own all-or-nothing effect. Reads use a small pool of
//! read-only connections on blocking threads, which WAL mode lets run
//! alongside the writer. The database runs with `journal_mode=WAL` and
//! `synchronous=FULL`, so an `Ok` from a write means the write is on disk.
//!
//! SQLite is called directly (rusqlite): every statement runs on the
//! thread that owns the connection, with prepared statements cached per
//! connection.

mod ops;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledgerbridge_core::BusinessKey;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use serde_json::Value;
use uuid::Uuid;

use crate::common::{self, page_size, MAX_AUDIT_PAGE};
use crate::{
    AuditRecord, BegunIntent, ClaimedRun, IngestOutcome, Intent, Lease, NewAudit, NewEvent, NewRun,
    Result, Run, RunDetail, RunFilter, RunOutcome, RunState, StepCommit, StepRecord, Store,
    StoreError, StoredEvent,
};
use writer::{Atomicity, WriterHandle};

/// Schema migrations, applied in order; the number is the version.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "intent settled",
        include_str!("../migrations/sqlite/0002_intent_settled.sql"),
    ),
];

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
    readers: Arc<Readers>,
    /// Keeps the scratch directory of an "in-memory" store alive.
    _scratch: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

/// How to open one more connection to the database.
#[derive(Clone)]
struct ConnectSpec {
    path: PathBuf,
    busy_timeout: Duration,
    /// Durable commits (`synchronous=FULL`) or not (scratch databases).
    durable: bool,
}

impl ConnectSpec {
    fn open_writer(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| map_error(&e))?;
        conn.busy_timeout(self.busy_timeout)
            .map_err(|e| map_error(&e))?;
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .map_err(|e| map_error(&e))?;
        let synchronous = if self.durable { "FULL" } else { "OFF" };
        // 64 MiB page cache; checkpoint every ~16 MiB of WAL rather than
        // 4 MiB, so hot index pages are written back less often.
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {synchronous};
             PRAGMA foreign_keys = ON;
             PRAGMA cache_size = -65536;
             PRAGMA wal_autocheckpoint = 4000;"
        ))
        .map_err(|e| map_error(&e))?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    fn open_reader(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| map_error(&e))?;
        conn.busy_timeout(self.busy_timeout)
            .map_err(|e| map_error(&e))?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }
}

/// A small pool of read-only connections, used on blocking threads.
struct Readers {
    spec: ConnectSpec,
    slots: Vec<Mutex<Option<Connection>>>,
    next: AtomicUsize,
}

impl Readers {
    fn new(spec: ConnectSpec, size: usize) -> Self {
        Readers {
            spec,
            slots: (0..size.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// Runs `read` on a reader connection (opened on first use, reopened
    /// after an error that may have broken it), off the async threads.
    async fn read<T, F>(self: &Arc<Self>, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let readers = self.clone();
        tokio::task::spawn_blocking(move || {
            let start = readers.next.fetch_add(1, Ordering::Relaxed);
            let count = readers.slots.len();
            // A free slot if there is one, else wait for the next in turn.
            let mut guard = (0..count)
                .find_map(|i| readers.slots[(start + i) % count].try_lock().ok())
                .unwrap_or_else(|| {
                    readers.slots[start % count]
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                });
            if guard.is_none() {
                *guard = Some(readers.spec.open_reader()?);
            }
            let Some(conn) = guard.as_ref() else {
                return Err(StoreError::Unavailable("no reader connection".to_owned()));
            };
            let result = read(conn);
            if matches!(result, Err(StoreError::Unavailable(_))) {
                *guard = None;
            }
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("sqlite reader failed: {e}")))?
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
        let spec = ConnectSpec {
            path,
            busy_timeout: options.busy_timeout,
            durable: true,
        };
        Self::start(spec, &options, None).await
    }

    /// A private scratch database, for tests: a file in a temporary
    /// directory removed when the store is dropped. Nothing is durable.
    pub async fn open_in_memory() -> Result<Self> {
        let scratch = tempfile::tempdir()
            .map_err(|e| StoreError::Unavailable(format!("cannot create a scratch dir: {e}")))?;
        let spec = ConnectSpec {
            path: scratch.path().join("scratch.db"),
            busy_timeout: Duration::from_secs(5),
            durable: false,
        };
        Self::start(spec, &SqliteOptions::default(), Some(scratch)).await
    }

    async fn start(
        spec: ConnectSpec,
        options: &SqliteOptions,
        scratch: Option<tempfile::TempDir>,
    ) -> Result<Self> {
        let opening = spec.clone();
        let conn = tokio::task::spawn_blocking(move || {
            let conn = opening.open_writer()?;
            migrate(&conn)?;
            Ok::<_, StoreError>(conn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("sqlite open failed: {e}")))??;
        let reopen = spec.clone();
        let writer = WriterHandle::spawn(
            Box::new(move || reopen.open_writer()),
            conn,
            options.max_batch,
        );
        let readers = Arc::new(Readers::new(spec, options.read_connections as usize));
        Ok(SqliteStore {
            writer,
            readers,
            _scratch: scratch,
        })
    }

    /// Runs `sql` on the write connection outside any batch (tests only).
    #[cfg(test)]
    async fn exec_on_writer(&self, sql: &'static str) -> Result<()> {
        self.writer
            .write(Atomicity::Statement, move |conn| {
                conn.execute_batch(sql).map_err(|e| map_error(&e))
            })
            .await
    }
}

/// Applies the migrations this database lacks, in one transaction each.
fn migrate(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER NOT NULL PRIMARY KEY,
             name       TEXT    NOT NULL,
             applied_at INTEGER NOT NULL
         )",
    )
    .map_err(|e| map_error(&e))?;
    let applied: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |row| row.get(0),
        )
        .map_err(|e| map_error(&e))?;
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if applied > known {
        return Err(common::newer_schema(applied, known));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > applied) {
        let fail = |e: rusqlite::Error| match map_error(&e) {
            StoreError::Unavailable(text) => StoreError::Unavailable(text),
            other => StoreError::Fatal(format!("migration {version} ({name}) failed: {other}")),
        };
        conn.execute_batch("BEGIN IMMEDIATE").map_err(fail)?;
        let outcome = conn.execute_batch(sql).and_then(|()| {
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                params![version, name, Utc::now().timestamp_micros()],
            )?;
            conn.execute_batch("COMMIT")
        });
        if let Err(e) = outcome {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(fail(e));
        }
        tracing::info!(version, name, "applied sqlite migration");
    }
    Ok(())
}

/// Maps a driver error to the store's error classes: anything that says
/// "the database cannot do this right now" (busy, locked, read-only, full,
/// I/O) is `Unavailable`; the rest is `Fatal`.
pub(crate) fn map_error(error: &rusqlite::Error) -> StoreError {
    match error {
        rusqlite::Error::SqliteFailure(failure, message) => {
            let code = failure.extended_code;
            let text = match message {
                Some(message) => format!("sqlite error {code}: {message}"),
                None => format!("sqlite error {code}: {failure}"),
            };
            match code & 0xff {
                // ABORT, BUSY, LOCKED, NOMEM, READONLY, INTERRUPT, IOERR,
                // FULL, CANTOPEN, PROTOCOL
                4 | 5 | 6 | 7 | 8 | 9 | 10 | 13 | 14 | 15 => StoreError::Unavailable(text),
                _ => StoreError::Fatal(text),
            }
        }
        other => StoreError::Fatal(format!("sqlite: {other}")),
    }
}

// ---- row decoding, shared with `ops` ----

pub(crate) const RUN_COLUMNS: &str = "id, event_id, flow, flow_version, state, input, attempts, \
     created_at, updated_at, next_attempt_at, first_failure_at, last_error, lease_owner, \
     lease_expires_at";

fn get<T: rusqlite::types::FromSql>(row: &Row<'_>, column: &str) -> Result<T> {
    row.get(column).map_err(|e| map_error(&e))
}

fn parse_uuid(text: &str) -> Result<Uuid> {
    Uuid::parse_str(text).map_err(|e| StoreError::Fatal(format!("corrupt id {text:?}: {e}")))
}

fn uuid_column(row: &Row<'_>, column: &str) -> Result<Uuid> {
    parse_uuid(&get::<String>(row, column)?)
}

fn time(micros: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::Fatal(format!("corrupt timestamp {micros}")))
}

fn time_column(row: &Row<'_>, column: &str) -> Result<DateTime<Utc>> {
    time(get(row, column)?)
}

fn optional_time_column(row: &Row<'_>, column: &str) -> Result<Option<DateTime<Utc>>> {
    get::<Option<i64>>(row, column)?.map(time).transpose()
}

fn json_column(row: &Row<'_>, column: &str) -> Result<Value> {
    let text: String = get(row, column)?;
    serde_json::from_str(&text)
        .map_err(|e| StoreError::Fatal(format!("corrupt json in {column}: {e}")))
}

fn json_text(value: &Value) -> String {
    value.to_string()
}

pub(crate) fn run_from_row(row: &Row<'_>) -> Result<Run> {
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

fn step_from_row(row: &Row<'_>) -> Result<StepRecord> {
    Ok(StepRecord {
        step: get(row, "step")?,
        output: json_column(row, "output")?,
        attempts: get(row, "attempts")?,
        started_at: time_column(row, "started_at")?,
        finished_at: time_column(row, "finished_at")?,
    })
}

fn intent_from_row(row: &Row<'_>) -> Result<Intent> {
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

fn audit_from_row(row: &Row<'_>) -> Result<AuditRecord> {
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

/// Runs `sql` with `params` and decodes every row with `decode`.
fn query_all<T, P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
    decode: fn(&Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut statement = conn.prepare_cached(sql).map_err(|e| map_error(&e))?;
    let mut rows = statement.query(params).map_err(|e| map_error(&e))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(|e| map_error(&e))? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// Runs `sql` with `params` and decodes the first row, if any.
fn query_one<T, P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
    decode: fn(&Row<'_>) -> Result<T>,
) -> Result<Option<T>> {
    let mut statement = conn.prepare_cached(sql).map_err(|e| map_error(&e))?;
    let mut rows = statement.query(params).map_err(|e| map_error(&e))?;
    match rows.next().map_err(|e| map_error(&e))? {
        Some(row) => decode(row).map(Some),
        None => Ok(None),
    }
}

/// The journal of a run, in recording order.
pub(crate) fn journal(conn: &Connection, run_id: Uuid) -> Result<Vec<StepRecord>> {
    query_all(
        conn,
        "SELECT step, output, attempts, started_at, finished_at
         FROM steps WHERE run_id = ? ORDER BY ord, finished_at",
        [run_id.to_string()],
        step_from_row,
    )
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
            .write(Atomicity::Statement, ops::touch_health)
            .await?;
        self.readers
            .read(|conn| {
                conn.query_row("SELECT at FROM health WHERE id = 1", [], |_| Ok(()))
                    .optional()
                    .map_err(|e| map_error(&e))
            })
            .await?;
        Ok(())
    }

    async fn ingest(&self, event: NewEvent, runs: Vec<NewRun>) -> Result<IngestOutcome> {
        let prepared = ops::PreparedIngest::new(event, runs);
        self.writer
            .write(Atomicity::Savepoint, move |conn| {
                ops::ingest(conn, &prepared)
            })
            .await
    }

    async fn enqueue(&self, run: NewRun) -> Result<()> {
        self.writer
            .write(Atomicity::Statement, move |conn| ops::enqueue(conn, &run))
            .await
    }

    async fn event(&self, id: Uuid) -> Result<Option<StoredEvent>> {
        self.readers
            .read(move |conn| {
                query_one(
                    conn,
                    "SELECT id, source, dedupe_key, received_at, headers, body
                     FROM events WHERE id = ?",
                    [id.to_string()],
                    |row| {
                        Ok(NewEvent {
                            id: uuid_column(row, "id")?,
                            source: get(row, "source")?,
                            dedupe_key: get(row, "dedupe_key")?,
                            received_at: time_column(row, "received_at")?,
                            headers: json_column(row, "headers")?,
                            body: get(row, "body")?,
                        })
                    },
                )
            })
            .await
    }

    async fn claim(&self, owner: &str, lease_for: Duration, limit: u32) -> Result<Vec<ClaimedRun>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let owner = owner.to_owned();
        self.writer
            .write(Atomicity::Savepoint, move |conn| {
                ops::claim(conn, &owner, lease_for, limit)
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
                ops::heartbeat(conn, &leases, lease_for)
            })
            .await
    }

    async fn commit_step(&self, lease: &Lease, commit: StepCommit) -> Result<Value> {
        let atomicity = if commit.is_single_write() {
            Atomicity::Statement
        } else {
            Atomicity::Savepoint
        };
        // Rendered here, on the caller's thread, not on the writer's.
        let (prepared, output) = ops::PreparedCommit::new(lease, commit);
        self.writer
            .write(atomicity, move |conn| ops::commit_step(conn, prepared))
            .await?;
        Ok(output)
    }

    async fn finish(&self, lease: &Lease, outcome: RunOutcome) -> Result<()> {
        let lease = lease.clone();
        self.writer
            .write(Atomicity::Statement, move |conn| {
                ops::finish(conn, &lease, &outcome)
            })
            .await
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let lease = lease.clone();
        self.writer
            .write(Atomicity::Statement, move |conn| ops::release(conn, &lease))
            .await
    }

    async fn reap_expired(&self) -> Result<u64> {
        self.writer
            .write(Atomicity::Statement, ops::reap_expired)
            .await
    }

    async fn run(&self, id: Uuid) -> Result<Option<RunDetail>> {
        self.readers
            .read(move |conn| {
                // One read transaction: the run and its journal agree.
                conn.execute_batch("BEGIN").map_err(|e| map_error(&e))?;
                let detail = (|| {
                    let run = query_one(
                        conn,
                        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?"),
                        [id.to_string()],
                        run_from_row,
                    )?;
                    let Some(run) = run else {
                        return Ok(None);
                    };
                    let journal = journal(conn, id)?;
                    Ok(Some(RunDetail { run, journal }))
                })();
                let _ = conn.execute_batch("COMMIT");
                detail
            })
            .await
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>> {
        let filter = filter.clone();
        self.readers
            .read(move |conn| {
                let before_seq: Option<i64> = match filter.before {
                    None => None,
                    Some(before) => Some(
                        conn.prepare_cached("SELECT seq FROM runs WHERE id = ?")
                            .and_then(|mut s| {
                                s.query_row([before.to_string()], |row| row.get(0))
                                    .optional()
                            })
                            .map_err(|e| map_error(&e))?
                            .ok_or_else(|| StoreError::NotFound(format!("run {before}")))?,
                    ),
                };
                // Only fixed fragments are spliced in; every value is bound.
                let mut query = format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1");
                let mut values: Vec<rusqlite::types::Value> = Vec::new();
                if let Some(state) = filter.state {
                    query.push_str(" AND state = ?");
                    values.push(state.as_str().to_owned().into());
                }
                if let Some(flow) = &filter.flow {
                    query.push_str(" AND flow = ?");
                    values.push(flow.clone().into());
                }
                if let Some(seq) = before_seq {
                    query.push_str(" AND seq < ?");
                    values.push(seq.into());
                }
                query.push_str(" ORDER BY seq DESC LIMIT ?");
                values.push(page_size(filter.limit).into());
                query_all(
                    conn,
                    &query,
                    rusqlite::params_from_iter(values),
                    run_from_row,
                )
            })
            .await
    }

    async fn count_by_state(&self) -> Result<Vec<(RunState, i64)>> {
        let rows = self
            .readers
            .read(|conn| {
                query_all(
                    conn,
                    "SELECT state, COUNT(*) AS n FROM runs GROUP BY state",
                    [],
                    |row| {
                        Ok((
                            common::parse_state(&get::<String>(row, "state")?)?,
                            get::<i64>(row, "n")?,
                        ))
                    },
                )
            })
            .await?;
        let mut counts: Vec<(RunState, i64)> = RunState::ALL.iter().map(|s| (*s, 0)).collect();
        for (state, n) in rows {
            if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == state) {
                slot.1 = n;
            }
        }
        Ok(counts)
    }

    async fn replay(&self, id: Uuid, new_input: Option<Value>) -> Result<()> {
        self.writer
            .write(Atomicity::Savepoint, move |conn| {
                ops::replay(conn, id, new_input.as_ref())
            })
            .await
    }

    async fn discard(&self, id: Uuid, reason: &str) -> Result<()> {
        let reason = reason.to_owned();
        self.writer
            .write(Atomicity::Statement, move |conn| {
                ops::discard(conn, id, &reason)
            })
            .await
    }

    async fn begin_intent(
        &self,
        key: &BusinessKey,
        run_id: Uuid,
        in_flight_for: Duration,
    ) -> Result<BegunIntent> {
        let key = key.clone();
        self.writer
            .write(Atomicity::Savepoint, move |conn| {
                ops::begin_intent(conn, &key, run_id, in_flight_for)
            })
            .await
    }

    async fn settle_intent(&self, key: &BusinessKey) -> Result<()> {
        let key = key.clone();
        self.writer
            .write(Atomicity::Statement, move |conn| {
                ops::settle_intent(conn, &key)
            })
            .await
    }

    async fn restamp_intent(
        &self,
        key: &BusinessKey,
        began: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>> {
        let key = key.clone();
        self.writer
            .write(Atomicity::Statement, move |conn| {
                ops::restamp_intent(conn, &key, began)
            })
            .await
    }

    async fn link_intent(&self, key: &BusinessKey, external_id: &str) -> Result<()> {
        let key = key.clone();
        let external_id = external_id.to_owned();
        self.writer
            .write(Atomicity::Statement, move |conn| {
                ops::link_intent(conn, &key, &external_id)
            })
            .await
    }

    async fn intent(&self, key: &BusinessKey) -> Result<Option<Intent>> {
        let key = key.clone();
        self.readers
            .read(move |conn| ops::load_intent(conn, &key))
            .await
    }

    async fn ledger(&self, connection: &str, kind: &str) -> Result<Vec<Intent>> {
        let connection = connection.to_owned();
        let kind = kind.to_owned();
        self.readers
            .read(move |conn| {
                query_all(
                    conn,
                    &format!(
                        "SELECT {INTENT_COLUMNS} FROM intents WHERE connection = ? AND kind = ?
                         ORDER BY created_at, key"
                    ),
                    params![connection, kind],
                    intent_from_row,
                )
            })
            .await
    }

    async fn cursor(&self, name: &str) -> Result<Option<String>> {
        let name = name.to_owned();
        self.readers
            .read(move |conn| {
                query_one(
                    conn,
                    "SELECT value FROM cursors WHERE name = ?",
                    [name],
                    |row| get(row, "value"),
                )
            })
            .await
    }

    async fn set_cursor(&self, name: &str, value: &str) -> Result<()> {
        let name = name.to_owned();
        let value = value.to_owned();
        self.writer
            .write(Atomicity::Statement, move |conn| {
                ops::set_cursor(conn, &name, &value)
            })
            .await
    }

    async fn audit(&self, entry: NewAudit) -> Result<AuditRecord> {
        self.writer
            .write(Atomicity::Statement, move |conn| ops::audit(conn, entry))
            .await
    }

    async fn audit_since(&self, after: i64, limit: u32) -> Result<Vec<AuditRecord>> {
        self.readers
            .read(move |conn| {
                query_all(
                    conn,
                    "SELECT seq, at, entry, prev_hash, hash FROM audit
                     WHERE seq > ? ORDER BY seq LIMIT ?",
                    params![after, i64::from(limit.min(MAX_AUDIT_PAGE))],
                    audit_from_row,
                )
            })
            .await
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

    /// Found with the engine's log on a full disk: a panic on the writer
    /// thread (then: a log line that could not be written) ended it, and
    /// every later write failed with "sqlite writer has stopped" although
    /// the disk had room again.
    #[tokio::test]
    async fn the_writer_thread_survives_a_panic_in_a_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_in(&dir).await;
        let before = event("before", vec![1]);
        store.ingest(before.clone(), vec![]).await.expect("ingest");
        let result = store
            .writer
            .write(Atomicity::Savepoint, |conn| -> Result<()> {
                conn.execute_batch("DELETE FROM events")
                    .map_err(|e| map_error(&e))?;
                panic!("a bug in a write job");
            })
            .await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "the panicking batch fails: {result:?}"
        );
        assert!(
            store.event(before.id).await.expect("read").is_some(),
            "nothing of the panicking batch was committed"
        );
        let after = event("after", vec![2]);
        store
            .ingest(after.clone(), vec![])
            .await
            .expect("the store still writes");
        assert!(store.event(after.id).await.expect("read").is_some());
        store.ping().await.expect("ready again");
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
