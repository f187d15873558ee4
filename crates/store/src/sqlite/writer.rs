//! The SQLite group-commit writer.
//!
//! One task owns the only write connection. Callers send it jobs over a
//! channel; it takes everything pending (up to `max_batch`), runs the jobs
//! in one transaction, each inside its own savepoint so a job's failure
//! undoes only that job, commits once (one fsync for the whole batch) and
//! only then answers each caller. If the commit fails, every caller in the
//! batch hears [`StoreError::Unavailable`]: nothing of the batch is on disk.

use std::future::Future;
use std::pin::Pin;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::ConnectOptions;
use tokio::sync::{mpsc, oneshot};

use super::map_error;
use crate::{Result, StoreError};

/// The future a write job returns; it borrows the write connection.
pub(crate) type JobFuture<'c, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'c>>;

/// A unit of work for the writer, type-erased.
trait Job: Send {
    /// Runs the work on `conn`; `Ok(())` if it succeeded, else the error's
    /// text (the error itself is kept for the reply).
    fn apply<'c>(
        &'c mut self,
        conn: &'c mut SqliteConnection,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'c>>;

    /// Answers the caller: the job's own result if the batch committed,
    /// else `Unavailable` with `reason`.
    fn reply(self: Box<Self>, committed: Result<(), String>);
}

struct WriteJob<T, F> {
    work: Option<F>,
    outcome: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for WriteJob<T, F>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> JobFuture<'c, T> + Send + 'static,
{
    fn apply<'c>(
        &'c mut self,
        conn: &'c mut SqliteConnection,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'c>> {
        Box::pin(async move {
            let Some(work) = self.work.take() else {
                return false;
            };
            let outcome = work(conn).await;
            let ok = outcome.is_ok();
            self.outcome = Some(outcome);
            ok
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

/// The callers' handle on the writer task.
#[derive(Clone)]
pub(crate) struct WriterHandle {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl WriterHandle {
    /// Starts the writer task on `conn` (already migrated).
    pub(crate) fn spawn(
        options: SqliteConnectOptions,
        conn: SqliteConnection,
        max_batch: usize,
    ) -> Self {
        let (jobs, receiver) = mpsc::channel(max_batch.max(1) * 16);
        let writer = Writer {
            options,
            conn: Some(conn),
            max_batch: max_batch.max(1),
        };
        tokio::spawn(writer.run(receiver));
        WriterHandle { jobs }
    }

    /// Runs `work` in the next batch and returns its result once the batch
    /// is durably committed.
    pub(crate) async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> JobFuture<'c, T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(WriteJob {
            work: Some(work),
            outcome: None,
            reply,
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("sqlite writer has stopped".to_owned()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("sqlite writer has stopped".to_owned()))?
    }
}

struct Writer {
    options: SqliteConnectOptions,
    /// `None` after the connection broke; reopened at the next batch.
    conn: Option<SqliteConnection>,
    max_batch: usize,
}

impl Writer {
    async fn run(mut self, mut receiver: mpsc::Receiver<Box<dyn Job>>) {
        let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(self.max_batch);
        let mut stats = (0usize, 0usize, std::time::Duration::ZERO);
        while receiver.recv_many(&mut batch, self.max_batch).await > 0 {
            let t0 = std::time::Instant::now();
            let committed = self.run_batch(&mut batch).await;
            stats.0 += 1; stats.1 += batch.len(); stats.2 += t0.elapsed();
            if stats.0 % 200 == 0 { eprintln!("PERFTMP batches={} avg_jobs={} avg_ms={:?}", stats.0, stats.1 / stats.0, stats.2 / stats.0 as u32); }
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
                Err(e) => return Err(format!("cannot reopen the database: {e}")),
            }
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err("no database connection".to_owned());
        };
        let outcome = apply_batch(conn, batch).await;
        let Err(error) = outcome else {
            return Ok(());
        };
        // Leave no transaction open; if even that fails, start afresh.
        let rolled_back = match exec(conn, "ROLLBACK").await {
            Ok(_) => true,
            Err(e) => e.to_string().contains("no transaction is active"),
        };
        if !rolled_back || is_broken(&error) {
            self.conn = None;
        }
        let detail = match map_error(&error) {
            StoreError::Unavailable(text) | StoreError::Fatal(text) => text,
            other => other.to_string(),
        };
        Err(format!("write not committed: {detail}"))
    }
}

async fn apply_batch(
    conn: &mut SqliteConnection,
    batch: &mut [Box<dyn Job>],
) -> Result<(), sqlx::Error> {
    exec(conn, "BEGIN IMMEDIATE").await?;
    for job in batch.iter_mut() {
        exec(conn, "SAVEPOINT job").await?;
        if job.apply(conn).await {
            exec(conn, "RELEASE job").await?;
        } else {
            exec(conn, "ROLLBACK TO job; RELEASE job").await?;
        }
    }
    exec(conn, "COMMIT").await?;
    Ok(())
}

/// Runs one fixed statement. A named function with an explicit lifetime
/// (rather than inline `execute` calls) keeps the writer future `Send`.
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
