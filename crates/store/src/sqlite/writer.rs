//! The SQLite group-commit writer.
//!
//! One dedicated thread owns the only write connection. Callers send it
//! jobs over a channel; it takes everything pending (up to `max_batch`),
//! runs the jobs in one transaction, commits once (one fsync for the whole
//! batch) and only then answers each caller.
//!
//! Each job keeps its own all-or-nothing effect inside the shared
//! transaction. A job that writes with a single statement needs nothing
//! more (SQLite undoes a failed statement by itself); a job of several
//! writes is [`Atomicity::Savepoint`] and runs inside a savepoint that is
//! rolled back if the job fails, so the rest of the batch still commits.
//! If a job hits an infrastructure error (I/O, disk full, read-only) or the
//! commit itself fails, the whole batch is rolled back and every caller in
//! it hears [`StoreError::Unavailable`]: nothing of the batch is on disk.

use std::future::Future;
use std::pin::Pin;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::ConnectOptions;
use tokio::sync::{mpsc, oneshot};

use super::map_error;
use crate::{Result, StoreError};

/// The future a write job returns; it borrows the write connection.
pub(crate) type JobFuture<'c, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'c>>;

/// How a job protects its all-or-nothing effect within the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Atomicity {
    /// The job writes with at most one statement, or fails only before
    /// writing: statement atomicity is enough.
    Statement,
    /// The job makes several writes and may fail after some: run it inside
    /// a savepoint.
    Savepoint,
}

/// What running a job did.
enum Applied {
    /// It succeeded.
    Done,
    /// It failed for a reason of its own (lease lost, bad state); the
    /// batch goes on.
    Refused,
    /// The database itself failed; the batch must be abandoned.
    Broken(String),
}

/// A unit of work for the writer, type-erased.
trait Job: Send {
    fn atomicity(&self) -> Atomicity;

    /// Runs the work on `conn`, keeping its result for the reply.
    fn apply<'c>(
        &'c mut self,
        conn: &'c mut SqliteConnection,
    ) -> Pin<Box<dyn Future<Output = Applied> + Send + 'c>>;

    /// Answers the caller: the job's own result if the batch committed,
    /// else `Unavailable` with the reason.
    fn reply(self: Box<Self>, committed: Result<(), String>);
}

struct WriteJob<T, F> {
    atomicity: Atomicity,
    work: Option<F>,
    outcome: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for WriteJob<T, F>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> JobFuture<'c, T> + Send + 'static,
{
    fn atomicity(&self) -> Atomicity {
        self.atomicity
    }

    fn apply<'c>(
        &'c mut self,
        conn: &'c mut SqliteConnection,
    ) -> Pin<Box<dyn Future<Output = Applied> + Send + 'c>> {
        Box::pin(async move {
            let Some(work) = self.work.take() else {
                return Applied::Broken("write job ran twice".to_owned());
            };
            let outcome = work(conn).await;
            let applied = match &outcome {
                Ok(_) => Applied::Done,
                Err(StoreError::Unavailable(reason)) => Applied::Broken(reason.clone()),
                Err(_) => Applied::Refused,
            };
            self.outcome = Some(outcome);
            applied
        })
    }

    fn reply(self: Box<Self>, committed: Result<(), String>) {
        let result = match committed {
            Ok(()) => self.outcome.unwrap_or_else(|| {
                Err(StoreError::Unavailable("write job did not run".to_owned()))
            }),
            Err(reason) => Err(StoreError::Unavailable(reason)),
        };
        // The caller may have gone away; its write stands either way.
        let _ = self.reply.send(result);
    }
}

/// The callers' handle on the writer.
#[derive(Clone)]
pub(crate) struct WriterHandle {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl WriterHandle {
    /// Starts the writer thread on `conn` (already migrated). It stops when
    /// the last handle is dropped.
    pub(crate) fn spawn(
        options: SqliteConnectOptions,
        conn: SqliteConnection,
        max_batch: usize,
    ) -> Self {
        let max_batch = max_batch.max(1);
        let (jobs, receiver) = mpsc::channel(max_batch * 16);
        let writer = Writer {
            options,
            conn: Some(conn),
            max_batch,
        };
        // The writer gets its own thread and single-threaded runtime, so a
        // busy application runtime never delays a batch (each statement
        // round trip would otherwise wait for a free worker).
        let spawned = std::thread::Builder::new()
            .name("ledgerbridge-sqlite-writer".to_owned())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(writer.run(receiver)),
                    Err(e) => tracing::error!(error = %e, "cannot start the sqlite writer"),
                }
            });
        if let Err(e) = spawned {
            // The receiver went with the closure: writes report Unavailable.
            tracing::error!(error = %e, "cannot start the sqlite writer thread");
        }
        WriterHandle { jobs }
    }

    /// Runs `work` in the next batch and returns its result once the batch
    /// is durably committed.
    pub(crate) async fn write<T, F>(&self, atomicity: Atomicity, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> JobFuture<'c, T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(WriteJob {
            atomicity,
            work: Some(work),
            outcome: None,
            reply,
        });
        let stopped = || StoreError::Unavailable("sqlite writer has stopped".to_owned());
        self.jobs.send(job).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

struct Writer {
    options: SqliteConnectOptions,
    /// `None` after the connection broke; reopened at the next batch.
    conn: Option<SqliteConnection>,
    max_batch: usize,
}

/// Why a batch was abandoned.
enum Abort {
    Sql(sqlx::Error),
    Job(String),
}

impl Writer {
    async fn run(mut self, mut receiver: mpsc::Receiver<Box<dyn Job>>) {
        let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(self.max_batch);
        while receiver.recv_many(&mut batch, self.max_batch).await > 0 {
            let committed = self.run_batch(&mut batch).await;
            if let Err(reason) = &committed {
                tracing::warn!(jobs = batch.len(), %reason, "sqlite write batch failed");
            }
            for job in batch.drain(..) {
                job.reply(committed.clone());
            }
        }
        if let Some(conn) = self.conn.take() {
            let _ = sqlx::Connection::close(conn).await;
        }
    }

    /// Applies the batch in one transaction. `Err` means nothing committed.
    async fn run_batch(&mut self, batch: &mut [Box<dyn Job>]) -> Result<(), String> {
        if self.conn.is_none() {
            match self.options.connect().await {
                Ok(conn) => self.conn = Some(conn),
                Err(e) => return Err(format!("cannot reopen the database: {}", map_error(&e))),
            }
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err("no database connection".to_owned());
        };
        let abort = match apply_batch(conn, batch).await {
            Ok(()) => return Ok(()),
            Err(abort) => abort,
        };
        // Leave no transaction open; if even that fails, start afresh.
        let rolled_back = match exec(conn, "ROLLBACK").await {
            Ok(()) => true,
            Err(e) => e.to_string().contains("no transaction is active"),
        };
        let detail = match abort {
            Abort::Sql(error) => {
                if is_broken(&error) {
                    self.conn = None;
                }
                match map_error(&error) {
                    StoreError::Unavailable(text) | StoreError::Fatal(text) => text,
                    other => other.to_string(),
                }
            }
            Abort::Job(reason) => reason,
        };
        if !rolled_back {
            self.conn = None;
        }
        Err(format!("write not committed: {detail}"))
    }
}

async fn apply_batch(conn: &mut SqliteConnection, batch: &mut [Box<dyn Job>]) -> Result<(), Abort> {
    exec(conn, "BEGIN IMMEDIATE").await.map_err(Abort::Sql)?;
    // Savepoints are released lazily, merged with the next one's opening,
    // to save a round trip per job; COMMIT releases the last.
    let mut savepoint_open = false;
    for job in batch.iter_mut() {
        let wrapped = job.atomicity() == Atomicity::Savepoint;
        if wrapped {
            let open = if savepoint_open {
                "RELEASE job; SAVEPOINT job"
            } else {
                "SAVEPOINT job"
            };
            exec(conn, open).await.map_err(Abort::Sql)?;
            savepoint_open = true;
        }
        match job.apply(conn).await {
            Applied::Done => {}
            Applied::Refused if wrapped => {
                exec(conn, "ROLLBACK TO job; RELEASE job")
                    .await
                    .map_err(Abort::Sql)?;
                savepoint_open = false;
            }
            Applied::Refused => {}
            Applied::Broken(reason) => return Err(Abort::Job(reason)),
        }
    }
    exec(conn, "COMMIT").await.map_err(Abort::Sql)
}

/// Runs fixed SQL. A named function with an explicit lifetime (rather than
/// inline `execute` calls) keeps the writer future `Send`.
fn exec<'c>(
    conn: &'c mut SqliteConnection,
    sql: &'static str,
) -> Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + 'c>> {
    Box::pin(async move {
        sqlx::Executor::execute(conn, sql).await?;
        Ok(())
    })
}

/// Errors after which the connection itself should not be trusted.
fn is_broken(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed | sqlx::Error::PoolClosed
    )
}
