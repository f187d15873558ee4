//! Group commit for `ingest` on PostgreSQL.
//!
//! While fewer writes are in flight than there are batch executors, a
//! caller writes its own event at once, exactly as without batching (so a
//! quiet store answers as fast as ever). Otherwise it hands its event to a
//! queue and waits. A free executor takes whatever is queued (up to
//! `max_batch` events; it never waits to fill a batch) and writes the whole
//! batch with one statement, so one implicit transaction and one commit
//! serve every caller in it. Each caller is answered only after that
//! commit. A few executors write at once, each on its own connection, so
//! one slow commit does not hold up the others, and the queue fills up
//! behind them: the busier the store, the larger the batches.
//!
//! Every caller still gets what a lone `ingest` would give it:
//! - an event whose `(source, dedupe_key)` is already stored, or is taken
//!   by an earlier event of the same batch, is `Duplicate` of that event
//!   and creates no runs;
//! - if the batch statement fails because of what is in it (a reused id,
//!   a value the database rejects, a deadlock with another batch), nothing
//!   of it is committed and its events are written again one at a time, so
//!   only the faulty one fails;
//! - if it fails because the database cannot be used (connection lost,
//!   pool exhausted, read-only, shut down), every caller gets the same
//!   `Unavailable`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use sqlx::PgConnection;
use tokio::sync::{mpsc, oneshot, Mutex};
use uuid::Uuid;

use super::map_error;
use crate::{IngestOutcome, NewEvent, NewRun, Result, StoreError};

/// Most bytes of bodies, headers and run inputs written in one statement;
/// a larger batch is written as several consecutive statements.
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// One caller's event, with its JSON already serialized (by the caller, so
/// that work is spread over the callers' tasks).
struct Request {
    event: NewEvent,
    headers: String,
    runs: Vec<NewRun>,
    inputs: Vec<String>,
}

impl Request {
    fn new(event: NewEvent, runs: Vec<NewRun>) -> Self {
        let headers = event.headers.to_string();
        let inputs = runs.iter().map(|run| run.input.to_string()).collect();
        Request {
            event,
            headers,
            runs,
            inputs,
        }
    }

    /// Roughly what the request adds to a statement.
    fn size(&self) -> usize {
        self.event.body.len()
            + self.headers.len()
            + self.inputs.iter().map(String::len).sum::<usize>()
    }

    fn key(&self) -> (&str, &str) {
        (&self.event.source, &self.event.dedupe_key)
    }

    fn accepted(&self) -> IngestOutcome {
        IngestOutcome::Accepted {
            event_id: self.event.id,
            run_ids: self.runs.iter().map(|run| run.id).collect(),
        }
    }
}

/// A queued request and where to send its answer.
struct Job {
    request: Request,
    reply: oneshot::Sender<Result<IngestOutcome>>,
}

/// The callers' side of the ingest queue. The executors stop when the
/// last handle is dropped; batches already taken still finish.
#[derive(Clone)]
pub(super) struct IngestQueue {
    pool: PgPool,
    jobs: mpsc::Sender<Job>,
    /// Writes in flight: batches being written and lone callers writing
    /// their own event.
    writing: Arc<AtomicUsize>,
    executors: usize,
}

impl IngestQueue {
    /// Starts the executors on the current runtime.
    pub(super) fn start(pool: PgPool, max_batch: usize, executors: usize) -> Self {
        let max_batch = max_batch.max(1);
        let executors = executors.max(1);
        let (jobs, receiver) = mpsc::channel(max_batch * 16);
        let receiver = Arc::new(Mutex::new(receiver));
        let writing = Arc::new(AtomicUsize::new(0));
        for _ in 0..executors {
            tokio::spawn(run_executor(
                pool.clone(),
                receiver.clone(),
                writing.clone(),
                max_batch,
            ));
        }
        IngestQueue {
            pool,
            jobs,
            writing,
            executors,
        }
    }

    /// Ingests one event with its runs; answers once the batch holding it
    /// is committed.
    pub(super) async fn ingest(&self, event: NewEvent, runs: Vec<NewRun>) -> Result<IngestOutcome> {
        let request = Request::new(event, runs);
        if let Some(_writing) = Writing::start_if_below(&self.writing, self.executors) {
            // Fewer writes in flight than executors: there is nothing to
            // batch with, so write it from here and spare the hand-over.
            // If the caller goes away mid-write, only its own event is
            // concerned.
            return ingest_all(&self.pool, std::slice::from_ref(&request))
                .await
                .pop()
                .unwrap_or_else(|| Err(lost_outcome()));
        }
        let (reply, answer) = oneshot::channel();
        let job = Job { request, reply };
        let stopped = || StoreError::Unavailable("postgres ingest queue has stopped".to_owned());
        self.jobs.send(job).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Counts one write in flight for as long as it lives.
struct Writing<'a>(&'a AtomicUsize);

impl<'a> Writing<'a> {
    fn start(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Writing(counter)
    }

    /// Counts a write only if fewer than `limit` are in flight.
    fn start_if_below(counter: &'a AtomicUsize, limit: usize) -> Option<Self> {
        let before = counter.fetch_add(1, Ordering::AcqRel);
        let writing = Writing(counter);
        (before < limit).then_some(writing)
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn lost_outcome() -> StoreError {
    StoreError::Fatal("postgres ingest lost an outcome".to_owned())
}

/// One batch executor. The executors take turns at the queue: the one
/// holding it waits for the next job, then takes everything queued (at most
/// `max_batch` jobs) and lets the next executor wait while it writes. While
/// every executor is writing, callers queue up for the next batch. Stops
/// when the queue is closed and empty.
async fn run_executor(
    pool: PgPool,
    receiver: Arc<Mutex<mpsc::Receiver<Job>>>,
    writing: Arc<AtomicUsize>,
    max_batch: usize,
) {
    loop {
        let mut batch = Vec::new();
        let taken = receiver.lock().await.recv_many(&mut batch, max_batch).await;
        if taken == 0 {
            return;
        }
        let _writing = Writing::start(&writing);
        execute(&pool, batch).await;
    }
}

/// Writes a batch (as several statements if it is very large) and answers
/// each caller after the statement holding its event has committed.
async fn execute(pool: &PgPool, batch: Vec<Job>) {
    let mut requests = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    let mut bytes = 0;
    for job in batch {
        let size = job.request.size();
        if !requests.is_empty() && bytes + size > MAX_BATCH_BYTES {
            answer(
                pool,
                std::mem::take(&mut requests),
                std::mem::take(&mut replies),
            )
            .await;
            bytes = 0;
        }
        bytes += size;
        requests.push(job.request);
        replies.push(job.reply);
    }
    if !requests.is_empty() {
        answer(pool, requests, replies).await;
    }
}

async fn answer(
    pool: &PgPool,
    requests: Vec<Request>,
    replies: Vec<oneshot::Sender<Result<IngestOutcome>>>,
) {
    let outcomes = ingest_all(pool, &requests).await;
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        // The caller may have gone away; its event stands either way.
        let _ = reply.send(outcome);
    }
}

/// One outcome per request, in order.
async fn ingest_all(pool: &PgPool, requests: &[Request]) -> Vec<Result<IngestOutcome>> {
    let error = match ingest_together(pool, requests).await {
        Ok(outcomes) => return outcomes,
        Err(error) => error,
    };
    let mapped = map_error(&error);
    if requests.len() == 1 || !caused_by_content(&error, &mapped) {
        if requests.len() > 1 {
            tracing::warn!(events = requests.len(), error = %mapped, "postgres ingest batch failed");
        }
        return requests.iter().map(|_| Err(mapped.clone())).collect();
    }
    tracing::debug!(
        events = requests.len(),
        error = %mapped,
        "postgres ingest batch refused; writing its events one at a time"
    );
    let mut outcomes = Vec::with_capacity(requests.len());
    let mut broken: Option<StoreError> = None;
    for request in requests {
        if let Some(error) = &broken {
            outcomes.push(Err(error.clone()));
            continue;
        }
        let outcome = match ingest_together(pool, std::slice::from_ref(request)).await {
            Ok(mut single) => single.pop().unwrap_or_else(|| Err(lost_outcome())),
            Err(error) => {
                let mapped = map_error(&error);
                if !caused_by_content(&error, &mapped) {
                    // The database is gone: the rest would only wait for it.
                    broken = Some(mapped.clone());
                }
                Err(mapped)
            }
        };
        outcomes.push(outcome);
    }
    outcomes
}

/// Whether a failed batch statement may succeed for some of its events if
/// they are written one at a time: the data was refused (a reused id, a
/// value the database rejects), or the batch deadlocked with another one.
/// Anything else means the database cannot be used right now.
fn caused_by_content(error: &sqlx::Error, mapped: &StoreError) -> bool {
    if matches!(mapped, StoreError::Fatal(_)) {
        return true;
    }
    match error {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| code.starts_with("40")),
        _ => false,
    }
}

/// Writes the requests with one statement. `Err` means nothing of them was
/// committed; otherwise one outcome per request, in order (an outcome is
/// an error only if looking up an existing duplicate failed).
async fn ingest_together(
    pool: &PgPool,
    requests: &[Request],
) -> std::result::Result<Vec<Result<IngestOutcome>>, sqlx::Error> {
    // The first request of each (source, dedupe_key) leads; later ones with
    // the same key are duplicates of whatever it turns out to be.
    let mut leader_of_key: HashMap<(&str, &str), usize> = HashMap::with_capacity(requests.len());
    let mut leader_index: Vec<usize> = Vec::with_capacity(requests.len());
    for (index, request) in requests.iter().enumerate() {
        let leader = *leader_of_key.entry(request.key()).or_insert(index);
        leader_index.push(leader);
    }
    let leaders: Vec<&Request> = requests
        .iter()
        .enumerate()
        .filter(|(index, _)| leader_index[*index] == *index)
        .map(|(_, request)| request)
        .collect();

    let mut conn = pool.acquire().await?;
    let inserted = match leaders.as_slice() {
        [lone] => insert_event(&mut conn, lone).await?.into_iter().collect(),
        _ => insert_events(&mut conn, &leaders).await?,
    };

    // Committed. Find what the duplicates duplicate.
    let repeated: Vec<&Request> = leaders
        .iter()
        .copied()
        .filter(|request| !inserted.contains(&request.event.id))
        .collect();
    let existing = if repeated.is_empty() {
        Ok(HashMap::new())
    } else {
        existing_events(&mut conn, &repeated).await
    };

    let mut outcomes: Vec<Result<IngestOutcome>> = Vec::with_capacity(requests.len());
    for (index, request) in requests.iter().enumerate() {
        let leader = leader_index[index];
        if leader != index {
            let outcome = match &outcomes[leader] {
                Ok(
                    IngestOutcome::Accepted { event_id, .. }
                    | IngestOutcome::Duplicate { event_id },
                ) => Ok(IngestOutcome::Duplicate {
                    event_id: *event_id,
                }),
                Err(error) => Err(error.clone()),
            };
            outcomes.push(outcome);
            continue;
        }
        if inserted.contains(&request.event.id) {
            outcomes.push(Ok(request.accepted()));
            continue;
        }
        let outcome = match &existing {
            Err(error) => Err(error.clone()),
            Ok(found) => match found.get(&(
                request.event.source.clone(),
                request.event.dedupe_key.clone(),
            )) {
                Some(event_id) => Ok(IngestOutcome::Duplicate {
                    event_id: *event_id,
                }),
                None => Err(StoreError::Fatal(format!(
                    "event {} was refused as a duplicate, but no earlier event has its key",
                    request.event.id
                ))),
            },
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// Inserts one event and, if it is new, its runs, in one statement (the
/// statement a lone caller has always used: simpler to plan than the
/// batch one); returns the event id if it was inserted.
async fn insert_event(
    conn: &mut PgConnection,
    request: &Request,
) -> std::result::Result<Option<Uuid>, sqlx::Error> {
    let event = &request.event;
    let run_ids: Vec<Uuid> = request.runs.iter().map(|run| run.id).collect();
    let flows: Vec<&str> = request.runs.iter().map(|run| run.flow.as_str()).collect();
    let versions: Vec<&str> = request
        .runs
        .iter()
        .map(|run| run.flow_version.as_str())
        .collect();
    let not_befores: Vec<DateTime<Utc>> = request.runs.iter().map(|run| run.not_before).collect();
    sqlx::query_scalar(
        "WITH ev AS (
             INSERT INTO events (id, source, dedupe_key, received_at, headers, body)
             VALUES ($1, $2, $3, $4, $5::jsonb, $6)
             ON CONFLICT (source, dedupe_key) DO NOTHING
             RETURNING id
         ), new_runs AS (
             INSERT INTO runs (id, event_id, flow, flow_version, state, input, attempts,
                               created_at, updated_at, next_attempt_at)
             SELECT r.id, ev.id, r.flow, r.flow_version, 'queued', r.input::jsonb, 0,
                    now(), now(), r.not_before
             FROM ev CROSS JOIN unnest($7::uuid[], $8::text[], $9::text[], $10::text[],
                                       $11::timestamptz[])
                  WITH ORDINALITY AS r(id, flow, flow_version, input, not_before, n)
             ORDER BY r.n
             RETURNING 1
         )
         SELECT id FROM ev",
    )
    .bind(event.id)
    .bind(&event.source)
    .bind(&event.dedupe_key)
    .bind(event.received_at)
    .bind(&request.headers)
    .bind(&event.body)
    .bind(&run_ids)
    .bind(&flows)
    .bind(&versions)
    .bind(&request.inputs)
    .bind(&not_befores)
    .fetch_optional(&mut *conn)
    .await
}

/// Inserts the events (distinct keys) and the runs of those that are new,
/// in one statement; returns the ids of the events inserted.
async fn insert_events(
    conn: &mut PgConnection,
    requests: &[&Request],
) -> std::result::Result<HashSet<Uuid>, sqlx::Error> {
    let runs = requests.iter().map(|r| r.runs.len()).sum();
    let mut event_ids: Vec<Uuid> = Vec::with_capacity(requests.len());
    let mut sources: Vec<&str> = Vec::with_capacity(requests.len());
    let mut dedupe_keys: Vec<&str> = Vec::with_capacity(requests.len());
    let mut received: Vec<DateTime<Utc>> = Vec::with_capacity(requests.len());
    let mut headers: Vec<&str> = Vec::with_capacity(requests.len());
    let mut bodies: Vec<&[u8]> = Vec::with_capacity(requests.len());
    let mut run_event_ids: Vec<Uuid> = Vec::with_capacity(runs);
    let mut run_ids: Vec<Uuid> = Vec::with_capacity(runs);
    let mut flows: Vec<&str> = Vec::with_capacity(runs);
    let mut versions: Vec<&str> = Vec::with_capacity(runs);
    let mut inputs: Vec<&str> = Vec::with_capacity(runs);
    let mut not_befores: Vec<DateTime<Utc>> = Vec::with_capacity(runs);
    for request in requests {
        let event = &request.event;
        event_ids.push(event.id);
        sources.push(&event.source);
        dedupe_keys.push(&event.dedupe_key);
        received.push(event.received_at);
        headers.push(&request.headers);
        bodies.push(&event.body);
        for (run, input) in request.runs.iter().zip(&request.inputs) {
            run_event_ids.push(event.id);
            run_ids.push(run.id);
            flows.push(&run.flow);
            versions.push(&run.flow_version);
            inputs.push(input);
            not_befores.push(run.not_before);
        }
    }
    // Events go in key order, so two concurrent batches that share keys
    // wait for each other in the same order instead of deadlocking. Runs
    // go in queue order: that is their claim order.
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "WITH ev AS (
             INSERT INTO events (id, source, dedupe_key, received_at, headers, body)
             SELECT e.id, e.source, e.dedupe_key, e.received_at, e.headers::jsonb, e.body
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],
                         $6::bytea[])
                  AS e(id, source, dedupe_key, received_at, headers, body)
             ORDER BY e.source, e.dedupe_key
             ON CONFLICT (source, dedupe_key) DO NOTHING
             RETURNING id
         ), new_runs AS (
             INSERT INTO runs (id, event_id, flow, flow_version, state, input, attempts,
                               created_at, updated_at, next_attempt_at)
             SELECT r.id, ev.id, r.flow, r.flow_version, 'queued', r.input::jsonb, 0,
                    now(), now(), r.not_before
             FROM unnest($7::uuid[], $8::uuid[], $9::text[], $10::text[], $11::text[],
                         $12::timestamptz[])
                  WITH ORDINALITY AS r(event_id, id, flow, flow_version, input, not_before, n)
                  JOIN ev ON ev.id = r.event_id
             ORDER BY r.n
             RETURNING 1
         )
         SELECT id FROM ev",
    )
    .bind(&event_ids)
    .bind(&sources)
    .bind(&dedupe_keys)
    .bind(&received)
    .bind(&headers)
    .bind(&bodies)
    .bind(&run_event_ids)
    .bind(&run_ids)
    .bind(&flows)
    .bind(&versions)
    .bind(&inputs)
    .bind(&not_befores)
    .fetch_all(&mut *conn)
    .await?;
    Ok(inserted.into_iter().collect())
}

/// The ids of the stored events with the requests' keys. A new statement,
/// so it sees events committed by others while the insert waited for them.
async fn existing_events(
    conn: &mut PgConnection,
    requests: &[&Request],
) -> Result<HashMap<(String, String), Uuid>> {
    let sources: Vec<&str> = requests.iter().map(|r| r.event.source.as_str()).collect();
    let dedupe_keys: Vec<&str> = requests
        .iter()
        .map(|r| r.event.dedupe_key.as_str())
        .collect();
    let rows: Vec<(String, String, Uuid)> = sqlx::query_as(
        "SELECT e.source, e.dedupe_key, e.id
         FROM unnest($1::text[], $2::text[]) AS k(source, dedupe_key)
              JOIN events e ON e.source = k.source AND e.dedupe_key = k.dedupe_key",
    )
    .bind(&sources)
    .bind(&dedupe_keys)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| map_error(&e))?;
    Ok(rows
        .into_iter()
        .map(|(source, dedupe_key, id)| ((source, dedupe_key), id))
        .collect())
}
