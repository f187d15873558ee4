//! The runs API: list and inspect runs, and work the dead-letter queue —
//! replay (one or many, optionally with edited input, optionally as a dry
//! run that only shows the requests a replay would send) and discard.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use ledgerbridge_engine::{dry_run, DryRunReport};
use ledgerbridge_store::{RunDetail, RunFilter, RunState};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::error::ApiError;
use crate::AppState;

/// Routes under `/api/runs`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/runs", get(list))
        .route("/api/runs/counts", get(counts))
        .route("/api/runs/replay", post(replay_many))
        .route("/api/runs/{id}", get(show))
        .route("/api/runs/{id}/replay", post(replay_one))
        .route("/api/runs/{id}/discard", post(discard))
}

/// Query of `GET /api/runs`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `queued`, `running`, `retrying`, `parked`, `succeeded` or `discarded`.
    pub state: Option<String>,
    /// Flow name.
    pub flow: Option<String>,
    /// Keyset paging: runs created before this run id.
    pub before: Option<Uuid>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<u32>,
}

fn parse_state(state: Option<&str>) -> Result<Option<RunState>, ApiError> {
    match state {
        None => Ok(None),
        Some(name) => RunState::parse(name).map(Some).ok_or_else(|| {
            let known: Vec<&str> = RunState::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::BadRequest(format!(
                "unknown run state {name:?}; use one of {}",
                known.join(", ")
            ))
        }),
    }
}

async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let filter = RunFilter {
        state: parse_state(query.state.as_deref())?,
        flow: query.flow,
        before: query.before,
        limit: query.limit.unwrap_or(100),
    };
    let runs = state.store.list_runs(&filter).await?;
    Ok(Json(json!({"runs": runs})))
}

async fn counts(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let counts = state.store.count_by_state().await?;
    let map: serde_json::Map<String, Value> = counts
        .into_iter()
        .map(|(s, n)| (s.as_str().to_owned(), json!(n)))
        .collect();
    Ok(Json(Value::Object(map)))
}

async fn load(state: &AppState, id: Uuid) -> Result<RunDetail, ApiError> {
    state
        .store
        .run(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no run {id}")))
}

async fn show(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<RunDetail>, ApiError> {
    Ok(Json(load(&state, id).await?))
}

/// Body of a replay request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Replace the run's input before replaying (clears its journal).
    pub input: Option<Value>,
    /// Only show the requests a replay would send; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// The answer to a replay of one run.
#[derive(Debug, Serialize)]
pub struct ReplayAnswer {
    pub run_id: Uuid,
    pub replayed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<DryRunReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Replays (or dry-runs) one run. Shared by the API and the CLI.
pub async fn replay(
    state: &AppState,
    id: Uuid,
    input: Option<Value>,
    dry: bool,
) -> Result<ReplayAnswer, ApiError> {
    let detail = load(state, id).await?;
    if !matches!(detail.run.state, RunState::Parked | RunState::Retrying) {
        return Err(ApiError::Conflict(format!(
            "run {id} is {}; only parked or retrying runs can be replayed",
            detail.run.state.as_str()
        )));
    }
    if dry {
        let flow = state.flows.get(&detail.run.flow).ok_or_else(|| {
            ApiError::Conflict(format!("flow {:?} is not loaded", detail.run.flow))
        })?;
        let mut run = detail.run;
        let journal = match input {
            Some(new_input) => {
                run.input = new_input;
                Vec::new()
            }
            None => detail.journal,
        };
        let report = dry_run(state.store.as_ref(), flow.as_ref(), &run, journal).await;
        return Ok(ReplayAnswer {
            run_id: id,
            replayed: false,
            dry_run: Some(report),
            error: None,
        });
    }
    state.store.replay(id, input).await?;
    state.wake.notify_one();
    Ok(ReplayAnswer {
        run_id: id,
        replayed: true,
        dry_run: None,
        error: None,
    })
}

async fn replay_one(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    body: Option<Json<ReplayRequest>>,
) -> Result<Json<ReplayAnswer>, ApiError> {
    let request = body.map(|Json(b)| b).unwrap_or_default();
    Ok(Json(
        replay(&state, id, request.input, request.dry_run).await?,
    ))
}

/// Body of a bulk replay: explicit ids, or every run in a state (and flow).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayManyRequest {
    #[serde(default)]
    pub ids: Vec<Uuid>,
    /// `parked` or `retrying`; used when `ids` is empty.
    pub state: Option<String>,
    pub flow: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    /// At most this many when selecting by state (default 1000).
    pub limit: Option<u32>,
}

async fn replay_many(
    State(state): State<AppState>,
    Json(request): Json<ReplayManyRequest>,
) -> Result<Json<Value>, ApiError> {
    let ids = if request.ids.is_empty() {
        let run_state = parse_state(request.state.as_deref())?.ok_or_else(|| {
            ApiError::BadRequest(
                "give `ids`, or a `state` (parked or retrying) to select runs".to_owned(),
            )
        })?;
        let filter = RunFilter {
            state: Some(run_state),
            flow: request.flow.clone(),
            before: None,
            limit: request.limit.unwrap_or(1000),
        };
        state
            .store
            .list_runs(&filter)
            .await?
            .into_iter()
            .map(|r| r.id)
            .collect()
    } else {
        request.ids.clone()
    };
    let mut answers = Vec::with_capacity(ids.len());
    for id in ids {
        match replay(&state, id, None, request.dry_run).await {
            Ok(answer) => answers.push(answer),
            Err(ApiError::Unavailable) => return Err(ApiError::Unavailable),
            Err(err) => answers.push(ReplayAnswer {
                run_id: id,
                replayed: false,
                dry_run: None,
                error: Some(err.to_string()),
            }),
        }
    }
    let replayed = answers.iter().filter(|a| a.replayed).count();
    Ok(Json(json!({"replayed": replayed, "results": answers})))
}

/// Body of a discard.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscardRequest {
    pub reason: Option<String>,
}

async fn discard(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    body: Option<Json<DiscardRequest>>,
) -> Result<Json<Value>, ApiError> {
    let reason = body
        .and_then(|Json(b)| b.reason)
        .unwrap_or_else(|| "discarded through the API".to_owned());
    state.store.discard(id, &reason).await?;
    Ok(Json(json!({"run_id": id, "discarded": true})))
}
