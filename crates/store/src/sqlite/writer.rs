//! The SQLite group-commit writer.
//!
//! One dedicated thread owns the only write connection and calls SQLite
//! directly (no per-statement hop to another thread). Callers send it jobs
//! over a channel; it takes everything pending (up to `max_batch`), runs
//! the jobs in one transaction, commits once (one fsync for the whole
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
//! A panic while running a batch is caught and treated the same way, with
//! the connection reopened: the writer thread outlives it.

use std::panic::{catch_unwind, AssertUnwindSafe};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::map_error;
use crate::{Result, StoreError};

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
    fn apply(&mut self, conn: &Connection) -> Applied;

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
    F: FnOnce(&Connection) -> Result<T> + Send + 'static,
{
    fn atomicity(&self) -> Atomicity {
        self.atomicity
    }

    fn apply(&mut self, conn: &Connection) -> Applied {
        let Some(work) = self.work.take() else {
            return Applied::Broken("write job ran twice".to_owned());
        };
        let outcome = work(conn);
        let applied = match &outcome {
            Ok(_) => Applied::Done,
            Err(StoreError::Unavailable(reason)) => Applied::Broken(reason.clone()),
            Err(_) => Applied::Refused,
        };
        self.outcome = Some(outcome);
        applied
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

/// Opens the write connection (again, after it broke).
pub(crate) type Opener = Box<dyn Fn() -> Result<Connection> + Send>;

/// The callers' handle on the writer.
#[derive(Clone)]
pub(crate) struct WriterHandle {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl WriterHandle {
    /// Starts the writer thread on `conn` (already migrated). It stops when
    /// the last handle is dropped.
    pub(crate) fn spawn(open: Opener, conn: Connection, max_batch: usize) -> Self {
        let max_batch = max_batch.max(1);
        let (jobs, receiver) = mpsc::channel(max_batch * 16);
        let writer = Writer {
            open,
            conn: Some(conn),
            max_batch,
        };
        let spawned = std::thread::Builder::new()
            .name("ledgerbridge-sqlite-writer".to_owned())
            .spawn(move || writer.run(receiver));
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
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
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
    open: Opener,
    /// `None` after the connection broke; reopened at the next batch.
    conn: Option<Connection>,
    max_batch: usize,
}

/// Why a batch was abandoned.
enum Abort {
    Sql(rusqlite::Error),
    Job(String),
}

impl Writer {
    fn run(mut self, mut receiver: mpsc::Receiver<Box<dyn Job>>) {
        let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(self.max_batch);
        while let Some(first) = receiver.blocking_recv() {
            batch.push(first);
            while batch.len() < self.max_batch {
                match receiver.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            // A panic in a batch (a bug in a job, or in what it calls) fails
            // that batch, not the store: unwinding past here would end the
            // only writer, and every later write would fail until restart.
            let committed = match catch_unwind(AssertUnwindSafe(|| self.run_batch(&mut batch))) {
                Ok(committed) => committed,
                Err(panic) => {
                    // The connection may be inside the batch's transaction:
                    // closing it rolls that back; the next batch reopens.
                    self.conn = None;
                    Err(format!(
                        "write not committed: the sqlite writer panicked: {}",
                        panic_text(panic.as_ref())
                    ))
                }
            };
            if let Err(reason) = &committed {
                tracing::warn!(jobs = batch.len(), %reason, "sqlite write batch failed");
            }
            for job in batch.drain(..) {
                job.reply(committed.clone());
            }
        }
    }

    /// Applies the batch in one transaction. `Err` means nothing committed.
    fn run_batch(&mut self, batch: &mut [Box<dyn Job>]) -> Result<(), String> {
        if self.conn.is_none() {
            match (self.open)() {
                Ok(conn) => self.conn = Some(conn),
                Err(e) => return Err(format!("cannot reopen the database: {e}")),
            }
        }
        let Some(conn) = self.conn.as_ref() else {
            return Err("no database connection".to_owned());
        };
        let abort = match apply_batch(conn, batch) {
            Ok(()) => return Ok(()),
            Err(abort) => abort,
        };
        // Leave no transaction open; if even that fails, start afresh.
        let rolled_back = conn.is_autocommit() || conn.execute_batch("ROLLBACK").is_ok();
        let detail = match abort {
            Abort::Sql(error) => match map_error(&error) {
                StoreError::Unavailable(text) | StoreError::Fatal(text) => text,
                other => other.to_string(),
            },
            Abort::Job(reason) => reason,
        };
        if !rolled_back {
            self.conn = None;
        }
        Err(format!("write not committed: {detail}"))
    }
}

/// The message of a caught panic.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_owned()
    }
}

fn apply_batch(conn: &Connection, batch: &mut [Box<dyn Job>]) -> Result<(), Abort> {
    exec(conn, "BEGIN IMMEDIATE")?;
    // Savepoints are released lazily, merged with the next one's opening;
    // COMMIT releases the last.
    let mut savepoint_open = false;
    for job in batch.iter_mut() {
        let wrapped = job.atomicity() == Atomicity::Savepoint;
        if wrapped {
            if savepoint_open {
                exec(conn, "RELEASE job")?;
            }
            exec(conn, "SAVEPOINT job")?;
            savepoint_open = true;
        }
        match job.apply(conn) {
            Applied::Done => {}
            Applied::Refused if wrapped => {
                exec(conn, "ROLLBACK TO job")?;
                exec(conn, "RELEASE job")?;
                savepoint_open = false;
            }
            Applied::Refused => {}
            Applied::Broken(reason) => return Err(Abort::Job(reason)),
        }
    }
    exec(conn, "COMMIT")
}

/// Runs fixed SQL through the statement cache.
fn exec(conn: &Connection, sql: &'static str) -> Result<(), Abort> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.execute([]))
        .map(|_| ())
        .map_err(Abort::Sql)
}
