//! The inbox: signed webhooks in, durable events and runs out.
//!
//! Order of work for every delivery, and why:
//! 1. size limit (413) before anything is buffered beyond it, and a
//!    deadline for the whole body (408), so a sender that trickles bytes
//!    cannot hold a connection open;
//! 2. signature over the raw bytes (401, logged, nothing stored) — an
//!    unauthenticated sender learns nothing about the body's validity;
//! 3. content type and JSON shape (415 / 400 with the reason);
//! 4. one transaction storing the event and the runs it starts; only then
//!    2xx. A repeat of the same dedupe key is acknowledged and changes
//!    nothing; a store that cannot write answers 503 so the sender retries.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use ledgerbridge_engine::EventKind;
use ledgerbridge_store::{IngestOutcome, NewEvent, NewRun};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::error::ApiError;
use crate::signature;
use crate::AppState;

/// Webhook routes, with the body size limit and the body deadline.
pub fn router(max_body_bytes: usize, body_timeout: Duration) -> Router<AppState> {
    Router::new()
        .route("/webhooks/ordercloud/{source}", post(ordercloud))
        .route("/webhooks/gateway/{source}", post(gateway))
        .layer(middleware::from_fn(
            move |request: Request, next: Next| async move {
                buffer_body(request, next, max_body_bytes, body_timeout).await
            },
        ))
        .layer(DefaultBodyLimit::max(max_body_bytes))
}

/// Reads the whole body within `deadline` and at most `max` bytes, then
/// hands the request on with the body in memory.
async fn buffer_body(request: Request, next: Next, max: usize, deadline: Duration) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match tokio::time::timeout(deadline, axum::body::to_bytes(body, max)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(err)) => {
            let too_large = std::error::Error::source(&err)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            let error = if too_large {
                ApiError::PayloadTooLarge(format!("the body is larger than {max} bytes"))
            } else {
                ApiError::BadRequest(format!("the body could not be read: {err}"))
            };
            return error.into_response();
        }
        Err(_) => {
            tracing::warn!(path = %parts.uri.path(), "webhook refused: body not received in time");
            return ApiError::RequestTimeout(format!(
                "the body did not arrive within {} s",
                deadline.as_secs()
            ))
            .into_response();
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The parts of OrderCloud's webhook envelope we rely on.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct OrderCloudEnvelope {
    #[serde(rename = "Route")]
    route: String,
    #[serde(rename = "Verb")]
    verb: String,
    #[serde(rename = "LogID")]
    log_id: String,
    #[serde(rename = "RouteParams", default)]
    route_params: Option<Value>,
}

/// The parts of a Stripe-style event we rely on.
#[derive(Debug, Deserialize)]
struct GatewayEvent {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    match header_str(headers, header::CONTENT_TYPE.as_str()) {
        None => Ok(()),
        Some(ct)
            if ct
                .split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")) =>
        {
            Ok(())
        }
        Some(ct) => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type must be application/json, got {ct:?}"
        ))),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<(T, Value), ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("body is not valid JSON: {e}")))?;
    if let Some((path, what)) = unstorable(&value) {
        let path = if path.is_empty() {
            ".".to_owned()
        } else {
            path
        };
        return Err(ApiError::BadRequest(format!(
            "invalid webhook body at `{path}`: {what}, which cannot be stored"
        )));
    }
    let typed = serde_path_to_error::deserialize(&value).map_err(|e| {
        let path = e.path().to_string();
        ApiError::BadRequest(format!("invalid webhook body at `{path}`: {}", e.inner()))
    })?;
    Ok((typed, value))
}

/// Longest number literal and largest exponent a body may carry: far
/// beyond any amount or id, well within PostgreSQL's `numeric`.
const MAX_NUMBER_CHARS: usize = 1000;
const MAX_EXPONENT: i64 = 1000;

/// The path and a description of the first thing in `value` that parses
/// as JSON but that not every store can keep: a NUL character (PostgreSQL's
/// `jsonb` has none) or a number beyond its `numeric` (`1e999999`). Such a
/// body is refused with 400 on every backend alike, never answered 500.
fn unstorable(value: &Value) -> Option<(String, &'static str)> {
    let mut pending: Vec<(String, &Value)> = vec![(String::new(), value)];
    while let Some((path, value)) = pending.pop() {
        match value {
            Value::String(text) if text.contains('\0') => {
                return Some((path, "a NUL character (\\u0000)"));
            }
            Value::Number(number) if !number_is_storable(&number.to_string()) => {
                return Some((path, "a number out of range"));
            }
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    pending.push((format!("{path}[{index}]"), item));
                }
            }
            Value::Object(map) => {
                for (key, item) in map {
                    let path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    if key.contains('\0') {
                        return Some((path, "a NUL character (\\u0000) in a key"));
                    }
                    pending.push((path, item));
                }
            }
            _ => {}
        }
    }
    None
}

/// A number literal of at most [`MAX_NUMBER_CHARS`] with an exponent
/// within ±[`MAX_EXPONENT`].
fn number_is_storable(literal: &str) -> bool {
    if literal.len() > MAX_NUMBER_CHARS {
        return false;
    }
    match literal.split_once(['e', 'E']) {
        None => true,
        Some((_, exponent)) => exponent
            .parse::<i64>()
            .is_ok_and(|exponent| exponent.abs() <= MAX_EXPONENT),
    }
}

fn received(source: &str, outcome: &'static str) {
    metrics::counter!("lb_events_received_total", "source" => source.to_owned(), "outcome" => outcome)
        .increment(1);
}

fn kept_headers(headers: &HeaderMap, names: &[&str]) -> Value {
    let mut kept = serde_json::Map::new();
    for name in names {
        if let Some(v) = header_str(headers, name) {
            kept.insert((*name).to_owned(), Value::String(v.to_owned()));
        }
    }
    Value::Object(kept)
}

async fn store_event(
    state: &AppState,
    source: String,
    dedupe_key: String,
    headers: Value,
    body: Bytes,
    input: Value,
    kind: EventKind<'_>,
) -> Result<Json<Value>, ApiError> {
    let now = Utc::now();
    let runs: Vec<NewRun> = state
        .flows
        .triggered_by(&kind)
        .into_iter()
        .map(|flow| NewRun {
            id: Uuid::now_v7(),
            flow: flow.name().to_owned(),
            flow_version: flow.version().to_owned(),
            input: input.clone(),
            not_before: now,
        })
        .collect();
    let event = NewEvent {
        id: Uuid::now_v7(),
        source: source.clone(),
        dedupe_key,
        received_at: now,
        headers,
        body: body.to_vec(),
    };
    let outcome = match state.store.ingest(event, runs).await {
        Ok(outcome) => outcome,
        Err(err) => {
            received(&source, "unavailable");
            return Err(err.into());
        }
    };
    match outcome {
        IngestOutcome::Accepted { event_id, run_ids } => {
            received(&source, "accepted");
            if !run_ids.is_empty() {
                state.wake.notify_one();
            }
            Ok(Json(
                json!({"status": "accepted", "event_id": event_id, "runs": run_ids}),
            ))
        }
        IngestOutcome::Duplicate { event_id } => {
            received(&source, "duplicate");
            tracing::info!(%source, %event_id, "repeat delivery acknowledged; nothing changed");
            Ok(Json(json!({"status": "duplicate", "event_id": event_id})))
        }
    }
}

async fn ordercloud(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let Some(config) = state.sources.ordercloud.get(&name) else {
        return Err(ApiError::NotFound(format!(
            "no OrderCloud source named {name:?} is configured"
        )));
    };
    let source = format!("ordercloud:{name}");
    if let Err(err) = signature::verify_ordercloud(
        config.hash_key.expose(),
        header_str(&headers, "x-oc-hash"),
        &body,
    ) {
        received(&source, "rejected_signature");
        tracing::warn!(%source, reason = %err, bytes = body.len(), "webhook refused: bad signature");
        return Err(ApiError::Unauthorized);
    }
    require_json(&headers)?;
    let (envelope, value): (OrderCloudEnvelope, Value) =
        parse(&body).inspect_err(|_| received(&source, "malformed"))?;
    if envelope.log_id.trim().is_empty() {
        received(&source, "malformed");
        return Err(ApiError::BadRequest(
            "invalid webhook body at `LogID`: empty".to_owned(),
        ));
    }
    let kind = EventKind::OrderCloud {
        route: &envelope.route,
        verb: &envelope.verb,
    };
    let kept = kept_headers(&headers, &["x-oc-hash", "content-type", "user-agent"]);
    store_event(
        &state,
        source,
        envelope.log_id.clone(),
        kept,
        body,
        value,
        kind,
    )
    .await
}

async fn gateway(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let Some(config) = state.sources.gateway.get(&name) else {
        return Err(ApiError::NotFound(format!(
            "no gateway source named {name:?} is configured"
        )));
    };
    let source = format!("gateway:{name}");
    if let Err(err) = signature::verify_stripe(
        config.signing_secret.expose(),
        header_str(&headers, "stripe-signature"),
        &body,
        Utc::now().timestamp(),
        config.tolerance_secs,
    ) {
        received(&source, "rejected_signature");
        tracing::warn!(%source, reason = %err, bytes = body.len(), "webhook refused: bad signature");
        return Err(ApiError::Unauthorized);
    }
    require_json(&headers)?;
    let (event, value): (GatewayEvent, Value) =
        parse(&body).inspect_err(|_| received(&source, "malformed"))?;
    let kind = EventKind::Gateway {
        event_type: &event.event_type,
    };
    let kept = kept_headers(
        &headers,
        &["stripe-signature", "content-type", "user-agent"],
    );
    store_event(&state, source, event.id.clone(), kept, body, value, kind).await
}
