//! The control API under `/_sandbox`: inspect and reset simulator state,
//! change fault rules at runtime, and poke KashFlow (expire sessions, set stock).
//!
//! | Route | Effect |
//! |---|---|
//! | `GET /state` | every service snapshot plus faults |
//! | `GET /{kashflow,ordercloud,xconnect,gateway}` | one service snapshot |
//! | `POST /reset` | every service and fault rule back to configuration |
//! | `GET /faults` | request rules, seed, counters, and `webhooks` (delivery faults per service) |
//! | `PUT /faults` | replace every fault: `{"rules":[...],"seed":N,"webhooks":{"ordercloud":{...}}}` or a bare array; a rule is an object or a spec string (webhook specs such as `ordercloud/webhooks:fail_rate=0.2` included); webhook faults not given become none |
//! | `POST /faults/rules` | add one rule (object or spec string); a webhook spec changes the modes it names |
//! | `DELETE /faults` | remove every rule and every webhook delivery fault |
//! | `GET /{ordercloud,gateway}/webhook-faults` | delivery faults: `{"fail_rate","duplicate_rate","delay_rate","max_delay_ms","wrong_hash_rate","seed"}` |
//! | `PUT /{ordercloud,gateway}/webhook-faults` | replace them (omitted modes become 0) |
//! | `PATCH /{ordercloud,gateway}/webhook-faults` | change only the modes given |
//! | `DELETE /{ordercloud,gateway}/webhook-faults` | no delivery faults |
//! | `POST /kashflow/expire-sessions` | expire every KashFlow session |
//! | `POST /ordercloud/expire-tokens` | expire every OrderCloud access and refresh token |
//! | `POST /kashflow/stock` | `{"Code","QuantityInStock"}` sets a product's stock |

use std::collections::BTreeMap;

use crate::faults::{error_response, spec_from_json, FaultRule, FaultSpec, WEBHOOK_SERVICES};
use crate::ordercloud::WebhookFaults;
use crate::Sandbox;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
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
        .route(
            "/{service}/webhook-faults",
            get(webhook_faults_get)
                .put(webhook_faults_put)
                .patch(webhook_faults_patch)
                .delete(webhook_faults_delete),
        )
        .route("/kashflow/expire-sessions", post(expire_sessions))
        .route("/ordercloud/expire-tokens", post(expire_tokens))
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

/// The service name from the path (a name that is not UTF-8 is no service).
fn service_of(path: Result<Path<String>, PathRejection>) -> String {
    path.map(|Path(service)| service).unwrap_or_default()
}

async fn service_state(
    State(sandbox): State<Sandbox>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let service = service_of(path);
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
    Json(sandbox.faults_snapshot())
}

fn parse_json(body: &Bytes) -> Result<serde_json::Value, String> {
    serde_json::from_slice(body).map_err(|err| format!("the body is not JSON: {err}"))
}

/// Everything `PUT /faults` sets, validated before anything changes.
#[derive(Default)]
struct Replacement {
    rules: Vec<FaultRule>,
    seed: Option<u64>,
    webhooks: BTreeMap<&'static str, WebhookFaults>,
}

impl Replacement {
    fn add_specs(&mut self, values: Vec<serde_json::Value>) -> Result<(), String> {
        for (index, value) in values.into_iter().enumerate() {
            match spec_from_json(value).map_err(|why| format!("rules[{index}]: {why}"))? {
                FaultSpec::Rule(rule) => self.rules.push(rule),
                FaultSpec::Webhooks(spec) => {
                    let faults = self
                        .webhooks
                        .get_mut(spec.service.as_str())
                        .ok_or_else(|| format!("rules[{index}]: unknown service"))?;
                    spec.apply_to(faults);
                }
            }
        }
        Ok(())
    }

    /// `{"ordercloud": {...}, "gateway": {...}}`, each a full [`WebhookFaults`].
    fn set_webhooks(&mut self, value: serde_json::Value) -> Result<(), String> {
        let serde_json::Value::Object(map) = value else {
            return Err("webhooks must be an object keyed by ordercloud or gateway".to_owned());
        };
        for (service, faults) in map {
            let slot = self.webhooks.get_mut(service.as_str()).ok_or_else(|| {
                format!(
                    "webhooks.{service}: {service} sends no webhooks (use ordercloud or gateway)"
                )
            })?;
            *slot = webhook_faults_from_json(faults)
                .map_err(|why| format!("webhooks.{service}: {why}"))?;
        }
        Ok(())
    }
}

/// Body of `PUT /faults`: `{"rules": [...], "seed": N, "webhooks": {...}}`
/// or a bare array of rules.
fn replace_body(value: serde_json::Value) -> Result<Replacement, String> {
    let mut replacement = Replacement {
        webhooks: WEBHOOK_SERVICES
            .iter()
            .map(|service| (*service, WebhookFaults::default()))
            .collect(),
        ..Replacement::default()
    };
    match value {
        serde_json::Value::Array(rules) => replacement.add_specs(rules)?,
        serde_json::Value::Object(mut map) => {
            if let Some(key) = map
                .keys()
                .find(|k| !matches!(k.as_str(), "rules" | "seed" | "webhooks"))
            {
                return Err(format!(
                    "unknown key `{key}` (use rules, seed and webhooks)"
                ));
            }
            replacement.seed = match map.remove("seed") {
                None | Some(serde_json::Value::Null) => None,
                Some(seed) => Some(
                    seed.as_u64()
                        .or_else(|| seed.to_string().parse().ok())
                        .ok_or("seed must be a whole number")?,
                ),
            };
            match map.remove("webhooks") {
                None | Some(serde_json::Value::Null) => {}
                Some(webhooks) => replacement.set_webhooks(webhooks)?,
            }
            match map.remove("rules") {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::Array(rules)) => replacement.add_specs(rules)?,
                Some(_) => return Err("rules must be an array".to_owned()),
            }
        }
        _ => return Err(
            "expected {\"rules\": [...], \"seed\": N, \"webhooks\": {...}} or an array of rules"
                .to_owned(),
        ),
    }
    for (service, faults) in &replacement.webhooks {
        faults
            .validate()
            .map_err(|why| format!("webhooks.{service}: {why}"))?;
    }
    Ok(replacement)
}

async fn faults_put(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    let replacement = match parse_json(&body).and_then(replace_body) {
        Ok(replacement) => replacement,
        Err(why) => return bad_request(&why),
    };
    if let Err(why) = sandbox.faults.replace(replacement.rules, replacement.seed) {
        return bad_request(&why);
    }
    for (service, faults) in replacement.webhooks {
        if let Err(why) = sandbox.set_webhook_faults(service, faults) {
            return bad_request(&why);
        }
    }
    Json(sandbox.faults_snapshot()).into_response()
}

async fn faults_add(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    let result = parse_json(&body)
        .and_then(spec_from_json)
        .and_then(|spec| match spec {
            FaultSpec::Rule(rule) => sandbox.faults.add(rule),
            FaultSpec::Webhooks(spec) => sandbox.apply_webhook_spec(&spec),
        });
    match result {
        Ok(()) => (StatusCode::CREATED, Json(sandbox.faults_snapshot())).into_response(),
        Err(why) => bad_request(&why),
    }
}

async fn faults_delete(State(sandbox): State<Sandbox>) -> StatusCode {
    sandbox.faults.clear();
    for service in WEBHOOK_SERVICES {
        // Both services exist and default faults are valid.
        let _ = sandbox.set_webhook_faults(service, WebhookFaults::default());
    }
    StatusCode::NO_CONTENT
}

/// A full [`WebhookFaults`] from JSON (unknown keys refused, omitted modes 0).
fn webhook_faults_from_json(value: serde_json::Value) -> Result<WebhookFaults, String> {
    let faults: WebhookFaults = serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        if path == "." {
            err.inner().to_string()
        } else {
            format!("{path}: {}", err.inner())
        }
    })?;
    faults.validate()?;
    Ok(faults)
}

fn no_webhooks(service: &str) -> Response {
    control_error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("{service} sends no webhooks; use ordercloud or gateway."),
    )
}

async fn webhook_faults_get(
    State(sandbox): State<Sandbox>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let service = service_of(path);
    match sandbox.webhook_faults(&service) {
        Some(faults) => Json(faults).into_response(),
        None => no_webhooks(&service),
    }
}

/// Stores `faults` for `service` and answers with what is now in force.
fn store_webhook_faults(
    sandbox: &Sandbox,
    service: &str,
    faults: Result<WebhookFaults, String>,
) -> Response {
    let result = faults.and_then(|faults| sandbox.set_webhook_faults(service, faults));
    match (result, sandbox.webhook_faults(service)) {
        (Ok(()), Some(now)) => Json(now).into_response(),
        (Err(why), _) => bad_request(&why),
        (Ok(()), None) => no_webhooks(service),
    }
}

async fn webhook_faults_put(
    State(sandbox): State<Sandbox>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Response {
    let service = service_of(path);
    if sandbox.webhook_faults(&service).is_none() {
        return no_webhooks(&service);
    }
    let faults = parse_json(&body).and_then(webhook_faults_from_json);
    store_webhook_faults(&sandbox, &service, faults)
}

async fn webhook_faults_patch(
    State(sandbox): State<Sandbox>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Response {
    let service = service_of(path);
    let Some(current) = sandbox.webhook_faults(&service) else {
        return no_webhooks(&service);
    };
    let merged = parse_json(&body).and_then(|patch| {
        let serde_json::Value::Object(patch) = patch else {
            return Err("expected an object of webhook fault modes".to_owned());
        };
        let mut merged = serde_json::to_value(current).map_err(|err| err.to_string())?;
        for (key, value) in patch {
            merged[key] = value;
        }
        webhook_faults_from_json(merged)
    });
    store_webhook_faults(&sandbox, &service, merged)
}

async fn webhook_faults_delete(
    State(sandbox): State<Sandbox>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let service = service_of(path);
    if sandbox.webhook_faults(&service).is_none() {
        return no_webhooks(&service);
    }
    store_webhook_faults(&sandbox, &service, Ok(WebhookFaults::default()))
}

async fn expire_sessions(State(sandbox): State<Sandbox>) -> Json<serde_json::Value> {
    let expired = sandbox.kashflow.expire_sessions();
    Json(serde_json::json!({ "expired": expired }))
}

async fn expire_tokens(State(sandbox): State<Sandbox>) -> Json<serde_json::Value> {
    let expired = sandbox.ordercloud.expire_tokens();
    Json(serde_json::json!({ "expired": expired }))
}

async fn set_stock(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    sandbox.kashflow.set_stock_from_json(&body)
}
