//! The control API under `/_sandbox`: inspect and reset simulator state,
//! change fault rules at runtime, and poke KashFlow (expire sessions, set stock).
//!
//! | Route | Effect |
//! |---|---|
//! | `GET /state` | every service snapshot plus faults |
//! | `GET /{kashflow,ordercloud,xconnect,gateway}` | one service snapshot |
//! | `POST /reset` | every service and fault rule back to configuration |
//! | `GET /faults` | rules, seed, counters |
//! | `PUT /faults` | replace rules: `{"rules":[...],"seed":N}` or a bare array; a rule is an object or a spec string |
//! | `POST /faults/rules` | add one rule (object or spec string) |
//! | `DELETE /faults` | remove every rule |
//! | `POST /kashflow/expire-sessions` | expire every KashFlow session |
//! | `POST /kashflow/stock` | `{"Code","QuantityInStock"}` sets a product's stock |

use crate::faults::{error_response, rule_from_json, FaultRule};
use crate::Sandbox;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

/// The control router, to be nested at `/_sandbox`.
pub fn router(sandbox: Sandbox) -> Router {
    Router::new()
        .route("/state", get(state))
        .route("/reset", post(reset))
        .route(
            "/faults",
            get(faults_get).put(faults_put).delete(faults_delete),
        )
        .route("/faults/rules", post(faults_add))
        .route("/kashflow/expire-sessions", post(expire_sessions))
        .route("/kashflow/stock", post(set_stock))
        .route("/{service}", get(service_state))
        .fallback(not_found)
        .with_state(sandbox)
}

/// JSON 404 for any path no route matches.
pub async fn not_found() -> Response {
    control_error(StatusCode::NOT_FOUND, "not_found", "No such route.")
}

fn control_error(status: StatusCode, code: &str, message: &str) -> Response {
    error_response("sandbox", status, code, message)
}

fn bad_request(message: &str) -> Response {
    control_error(StatusCode::BAD_REQUEST, "invalid_request", message)
}

async fn state(State(sandbox): State<Sandbox>) -> Json<serde_json::Value> {
    Json(sandbox.snapshot())
}

async fn service_state(State(sandbox): State<Sandbox>, Path(service): Path<String>) -> Response {
    let snapshot = match service.as_str() {
        "kashflow" => sandbox.kashflow.snapshot(),
        "ordercloud" => sandbox.ordercloud.snapshot(),
        "xconnect" => sandbox.xconnect.snapshot(),
        "gateway" => sandbox.gateway.snapshot(),
        _ => {
            return control_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "Unknown service; use kashflow, ordercloud, xconnect or gateway.",
            )
        }
    };
    Json(snapshot).into_response()
}

async fn reset(State(sandbox): State<Sandbox>) -> Json<serde_json::Value> {
    sandbox.reset();
    Json(serde_json::json!({ "reset": true }))
}

async fn faults_get(State(sandbox): State<Sandbox>) -> Json<serde_json::Value> {
    Json(sandbox.faults.snapshot())
}

fn parse_json(body: &Bytes) -> Result<serde_json::Value, String> {
    serde_json::from_slice(body).map_err(|err| format!("the body is not JSON: {err}"))
}

fn into_rules(values: Vec<serde_json::Value>) -> Result<Vec<FaultRule>, String> {
    let mut rules = Vec::with_capacity(values.len());
    for (index, value) in values.into_iter().enumerate() {
        rules.push(rule_from_json(value).map_err(|why| format!("rules[{index}]: {why}"))?);
    }
    Ok(rules)
}

/// Body of `PUT /faults`: `{"rules": [...], "seed": N}` or a bare array of rules.
fn replace_body(value: serde_json::Value) -> Result<(Vec<FaultRule>, Option<u64>), String> {
    match value {
        serde_json::Value::Array(rules) => Ok((into_rules(rules)?, None)),
        serde_json::Value::Object(mut map) => {
            if let Some(key) = map.keys().find(|k| *k != "rules" && *k != "seed") {
                return Err(format!("unknown key `{key}` (use rules and seed)"));
            }
            let seed = match map.remove("seed") {
                None | Some(serde_json::Value::Null) => None,
                Some(seed) => Some(
                    seed.as_u64()
                        .or_else(|| seed.to_string().parse().ok())
                        .ok_or("seed must be a whole number")?,
                ),
            };
            let rules = match map.remove("rules") {
                None | Some(serde_json::Value::Null) => Vec::new(),
                Some(serde_json::Value::Array(rules)) => into_rules(rules)?,
                Some(_) => return Err("rules must be an array".to_owned()),
            };
            Ok((rules, seed))
        }
        _ => Err("expected {\"rules\": [...], \"seed\": N} or an array of rules".to_owned()),
    }
}

async fn faults_put(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    let result = parse_json(&body)
        .and_then(replace_body)
        .and_then(|(rules, seed)| sandbox.faults.replace(rules, seed));
    match result {
        Ok(()) => Json(sandbox.faults.snapshot()).into_response(),
        Err(why) => bad_request(&why),
    }
}

async fn faults_add(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    let result = parse_json(&body)
        .and_then(rule_from_json)
        .and_then(|rule| sandbox.faults.add(rule));
    match result {
        Ok(()) => (StatusCode::CREATED, Json(sandbox.faults.snapshot())).into_response(),
        Err(why) => bad_request(&why),
    }
}

async fn faults_delete(State(sandbox): State<Sandbox>) -> StatusCode {
    sandbox.faults.clear();
    StatusCode::NO_CONTENT
}

async fn expire_sessions(State(sandbox): State<Sandbox>) -> Json<serde_json::Value> {
    let expired = sandbox.kashflow.expire_sessions();
    Json(serde_json::json!({ "expired": expired }))
}

async fn set_stock(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    sandbox.kashflow.set_stock_from_json(&body)
}
