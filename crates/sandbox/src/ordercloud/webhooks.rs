//! Webhook configuration (`/v1/webhooks`) and firing: a middleware around
//! every `/v1` route matches the request's path and verb against each
//! webhook's `WebhookRoutes` templates. Pre-hooks (`BeforeProcessRequest`)
//! are called synchronously before the handler and may veto the call;
//! post-hooks are queued after a 2xx, with the section 6 envelope serialized
//! once and signed with `X-oc-hash`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::Sha256;

use super::auth::Caller;
use super::config::WebhookSeed;
use super::delivery::Outbound;
use super::error::{OcError, OcJson, OcPath, OcResult};
use super::list::ListQuery;
use super::{id_from_body, object_body, OrderCloud};

/// Largest request or response body the middleware buffers.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// `X-oc-hash`: base64(HMAC-SHA256(utf8(hash_key), body)).
pub fn oc_hash(hash_key: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(hash_key.as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// A webhook `Date`: 7-digit fraction and `+00:00`
/// (`2021-04-04T19:41:39.6504645+00:00`).
pub fn webhook_date(at: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "{}.{:07}+00:00",
        at.format("%Y-%m-%dT%H:%M:%S"),
        at.timestamp_subsec_nanos() / 100
    )
}

/// Webhook fields in SDK order.
const WEBHOOK_FIELDS: &[&str] = &[
    "ID",
    "Name",
    "Description",
    "Url",
    "HashKey",
    "ElevatedRoles",
    "ConfigData",
    "BeforeProcessRequest",
    "ApiClientIDs",
    "WebhookRoutes",
    "DeliveryConfigID",
    "CustomAuthHeaderName",
    "CustomAuthHeaderValue",
];

/// A stored webhook built from configuration.
pub(crate) fn from_seed(id: &str, seed: &WebhookSeed) -> Value {
    normalize(json!({
        "ID": id,
        "Name": seed.name,
        "Url": seed.url,
        "HashKey": seed.hash_key,
        "ConfigData": seed.config_data,
        "BeforeProcessRequest": false,
        "ApiClientIDs": seed.api_client_ids,
        "WebhookRoutes": seed.routes.iter().map(|r| json!({"Route": r.route, "Verb": r.verb})).collect::<Vec<_>>(),
        "CustomAuthHeaderName": seed.custom_auth_header_name,
        "CustomAuthHeaderValue": seed.custom_auth_header_value,
    }))
}

fn normalize(webhook: Value) -> Value {
    let mut out = Map::new();
    for name in WEBHOOK_FIELDS {
        out.insert(
            (*name).to_owned(),
            webhook.get(*name).cloned().unwrap_or(Value::Null),
        );
    }
    if out["BeforeProcessRequest"].is_null() {
        out.insert("BeforeProcessRequest".to_owned(), json!(false));
    }
    for list in ["ApiClientIDs", "WebhookRoutes", "ElevatedRoles"] {
        if out[list].is_null() {
            out.insert(list.to_owned(), json!([]));
        }
    }
    Value::Object(out)
}

/// The webhook as the API returns it (`CustomAuthHeaderValue` is write-only).
pub(crate) fn public_view(webhook: &Value) -> Value {
    let mut view = webhook.clone();
    view["CustomAuthHeaderValue"] = Value::Null;
    view
}

fn validate(oc: &OrderCloud, webhook: &Value) -> OcResult<()> {
    let text = |name: &str| webhook[name].as_str().map(str::trim).unwrap_or("");
    if text("Name").is_empty() {
        return Err(OcError::validation("Name", "Name is required."));
    }
    let url = text("Url");
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") {
        if !oc.config.allow_http_webhooks {
            return Err(OcError::bad_request(
                "Webhook.UrlSchemeHttps",
                "Webhook Url must use https.",
            ));
        }
    } else if !lower.starts_with("https://") {
        return Err(OcError::bad_request(
            "Webhook.UrlSchemeHttps",
            "Webhook Url must be an absolute https URL.",
        ));
    }
    if reqwest::Url::parse(url).is_err() {
        return Err(OcError::validation("Url", "Url is not a valid URL."));
    }
    if webhook["HashKey"]
        .as_str()
        .is_some_and(|k| k.chars().count() > 50)
    {
        return Err(OcError::validation(
            "HashKey",
            "HashKey may not exceed 50 characters.",
        ));
    }
    if !(webhook["ConfigData"].is_object() || webhook["ConfigData"].is_null()) {
        return Err(OcError::validation(
            "ConfigData",
            "ConfigData must be an object.",
        ));
    }
    let Some(routes) = webhook["WebhookRoutes"].as_array() else {
        return Err(OcError::validation(
            "WebhookRoutes",
            "WebhookRoutes must be an array.",
        ));
    };
    for route in routes {
        let path = route["Route"].as_str().unwrap_or("");
        let verb = route["Verb"].as_str().unwrap_or("").to_ascii_uppercase();
        if path.is_empty() || !matches!(verb.as_str(), "POST" | "PUT" | "PATCH" | "DELETE") {
            return Err(OcError::validation(
                "WebhookRoutes",
                "Each WebhookRoute needs a Route and a Verb of POST, PUT, PATCH or DELETE.",
            ));
        }
    }
    for list in ["ApiClientIDs", "ElevatedRoles"] {
        if !webhook[list].is_array() {
            return Err(OcError::validation(
                list,
                format!("{list} must be an array of strings."),
            ));
        }
    }
    Ok(())
}

/// `GET /v1/webhooks`.
pub(crate) async fn list_webhooks(
    State(oc): State<Arc<OrderCloud>>,
    RawQuery(raw): RawQuery,
) -> OcResult<Json<Value>> {
    let query = ListQuery::parse(raw.as_deref(), &[])?;
    let items: Vec<Value> = oc.store().webhooks.values().map(public_view).collect();
    Ok(Json(query.apply(items, &["ID", "Name", "Description"])))
}

/// `GET /v1/webhooks/{webhookID}`.
pub(crate) async fn get_webhook(
    State(oc): State<Arc<OrderCloud>>,
    OcPath(id): OcPath<String>,
) -> OcResult<Json<Value>> {
    oc.store()
        .webhooks
        .get(&id)
        .map(|w| Json(public_view(w)))
        .ok_or_else(|| OcError::not_found("Webhook", &id))
}

/// `POST /v1/webhooks` (201; 409 on an existing ID).
pub(crate) async fn create_webhook(
    State(oc): State<Arc<OrderCloud>>,
    OcJson(body): OcJson<Value>,
) -> OcResult<(StatusCode, Json<Value>)> {
    object_body(&body)?;
    let id = id_from_body("Webhook", &body)?;
    let mut webhook = normalize(body);
    webhook["ID"] = json!(id);
    validate(&oc, &webhook)?;
    let mut store = oc.store();
    if store.webhooks.contains_key(&id) {
        return Err(OcError::id_exists("Webhook", &id));
    }
    store.webhooks.insert(id, webhook.clone());
    Ok((StatusCode::CREATED, Json(public_view(&webhook))))
}

/// `PUT /v1/webhooks/{webhookID}`: create or replace.
pub(crate) async fn put_webhook(
    State(oc): State<Arc<OrderCloud>>,
    OcPath(id): OcPath<String>,
    OcJson(body): OcJson<Value>,
) -> OcResult<Json<Value>> {
    super::check_id("Webhook", &id)?;
    object_body(&body)?;
    let mut webhook = normalize(body);
    webhook["ID"] = json!(id);
    validate(&oc, &webhook)?;
    oc.store().webhooks.insert(id, webhook.clone());
    Ok(Json(public_view(&webhook)))
}

/// `PATCH /v1/webhooks/{webhookID}`.
pub(crate) async fn patch_webhook(
    State(oc): State<Arc<OrderCloud>>,
    OcPath(id): OcPath<String>,
    OcJson(body): OcJson<Value>,
) -> OcResult<Json<Value>> {
    let fields = object_body(&body)?.clone();
    let mut store = oc.store();
    let existing = store
        .webhooks
        .get(&id)
        .ok_or_else(|| OcError::not_found("Webhook", &id))?;
    let mut webhook = existing.clone();
    for (key, value) in fields {
        if key != "ID" && WEBHOOK_FIELDS.contains(&key.as_str()) {
            webhook[key.as_str()] = value;
        }
    }
    let webhook = normalize(webhook);
    validate(&oc, &webhook)?;
    store.webhooks.insert(id, webhook.clone());
    Ok(Json(public_view(&webhook)))
}

/// `DELETE /v1/webhooks/{webhookID}` (204).
pub(crate) async fn delete_webhook(
    State(oc): State<Arc<OrderCloud>>,
    OcPath(id): OcPath<String>,
) -> OcResult<StatusCode> {
    oc.store()
        .webhooks
        .remove(&id)
        .map(|_| StatusCode::NO_CONTENT)
        .ok_or_else(|| OcError::not_found("Webhook", &id))
}

/// Matches `path` (`v1/orders/Outgoing/SO-1/submit`) against a route
/// template (`v1/orders/{direction}/{orderID}/submit`); returns the params.
pub(crate) fn match_route(template: &str, path: &str) -> Option<BTreeMap<String, String>> {
    let template: Vec<&str> = template.trim_matches('/').split('/').collect();
    let path: Vec<&str> = path.trim_matches('/').split('/').collect();
    if template.len() != path.len() {
        return None;
    }
    let mut params = BTreeMap::new();
    for (t, p) in template.iter().zip(&path) {
        if let Some(name) = t.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
            let value = percent_decode(p);
            params.insert(name.to_owned(), value);
        } else if !t.eq_ignore_ascii_case(p) {
            return None;
        }
    }
    Some(params)
}

fn percent_decode(segment: &str) -> String {
    serde_urlencoded::from_str::<Vec<(String, String)>>(&format!(
        "x={}",
        segment.replace('+', "%2B")
    ))
    .ok()
    .and_then(|v| v.into_iter().next())
    .map(|(_, v)| v)
    .unwrap_or_else(|| segment.to_owned())
}

/// The section 6 envelope (field order as documented).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Envelope<'a> {
    route: &'a str,
    route_params: &'a BTreeMap<String, String>,
    query_params: &'a BTreeMap<String, String>,
    verb: &'a str,
    date: String,
    #[serde(rename = "LogID")]
    log_id: String,
    user_token: &'a str,
    request: Part<'a>,
    response: Part<'a>,
    config_data: &'a Value,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Part<'a> {
    body: &'a Value,
    headers: Option<()>,
}

/// One webhook that matched a request.
struct Hit {
    webhook: Value,
    template: String,
    params: BTreeMap<String, String>,
}

fn matching_hooks(
    oc: &OrderCloud,
    method: &Method,
    path: &str,
    caller: Option<&Caller>,
) -> Vec<Hit> {
    let store = oc.store();
    let mut hits = Vec::new();
    for webhook in store.webhooks.values() {
        let clients: Vec<&str> = webhook["ApiClientIDs"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !clients.is_empty() && !caller.is_some_and(|c| clients.contains(&c.client_id.as_str())) {
            continue;
        }
        for route in webhook["WebhookRoutes"].as_array().into_iter().flatten() {
            let verb = route["Verb"].as_str().unwrap_or("");
            let template = route["Route"].as_str().unwrap_or("");
            if !verb.eq_ignore_ascii_case(method.as_str()) {
                continue;
            }
            if let Some(params) = match_route(template, path) {
                hits.push(Hit {
                    webhook: webhook.clone(),
                    template: template.to_owned(),
                    params,
                });
                break;
            }
        }
    }
    hits
}

/// Serializes the envelope once and signs it; returns body and headers.
fn build_message(
    hit: &Hit,
    verb: &str,
    query: &BTreeMap<String, String>,
    token: &str,
    request_body: &Value,
    response_body: &Value,
) -> (String, bytes::Bytes, Vec<(String, String)>) {
    let log_id = uuid::Uuid::new_v4().to_string();
    let envelope = Envelope {
        route: &hit.template,
        route_params: &hit.params,
        query_params: query,
        verb,
        date: webhook_date(chrono::Utc::now()),
        log_id: log_id.clone(),
        user_token: token,
        request: Part {
            body: request_body,
            headers: None,
        },
        response: Part {
            body: response_body,
            headers: None,
        },
        config_data: &hit.webhook["ConfigData"],
    };
    let body = bytes::Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default());
    let mut headers = Vec::new();
    if let Some(key) = hit.webhook["HashKey"].as_str().filter(|k| !k.is_empty()) {
        headers.push(("X-oc-hash".to_owned(), oc_hash(key, &body)));
    }
    if let (Some(name), Some(value)) = (
        hit.webhook["CustomAuthHeaderName"]
            .as_str()
            .filter(|n| !n.is_empty()),
        hit.webhook["CustomAuthHeaderValue"].as_str(),
    ) {
        headers.push((name.to_owned(), value.to_owned()));
    }
    (log_id, body, headers)
}

/// Fires matching webhooks around every `/v1` write.
pub(crate) async fn hook_middleware(
    State(oc): State<Arc<OrderCloud>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    if !matches!(
        method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        return next.run(request).await;
    }
    let path = format!("v1{}", request.uri().path());
    let caller = request.extensions().get::<Caller>().cloned();
    let hits = matching_hooks(&oc, &method, &path, caller.as_ref());
    if hits.is_empty() {
        return next.run(request).await;
    }
    let query: BTreeMap<String, String> = request
        .uri()
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let token = caller.as_ref().map(|c| c.token.clone()).unwrap_or_default();
    let (parts, body) = request.into_parts();
    let request_bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(err) => {
            return OcError::invalid_body(format!("Cannot read request body: {err}"))
                .into_response()
        }
    };
    let request_json: Value = serde_json::from_slice(&request_bytes).unwrap_or(Value::Null);
    let (pre, post): (Vec<Hit>, Vec<Hit>) = hits
        .into_iter()
        .partition(|h| h.webhook["BeforeProcessRequest"] == Value::Bool(true));
    for hit in &pre {
        if let Err(response) =
            run_pre_hook(&oc, hit, method.as_str(), &query, &token, &request_json).await
        {
            return response.into_response();
        }
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(request_bytes)))
        .await;
    if !response.status().is_success() || post.is_empty() {
        return response;
    }
    let (response_parts, response_body) = response.into_parts();
    let response_bytes = match axum::body::to_bytes(response_body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return OcError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServerError",
                "Internal error.",
            )
            .into_response()
        }
    };
    let response_json: Value = serde_json::from_slice(&response_bytes).unwrap_or(Value::Null);
    for hit in &post {
        let (log_id, body, headers) = build_message(
            hit,
            method.as_str(),
            &query,
            &token,
            &request_json,
            &response_json,
        );
        oc.deliverer.enqueue(Outbound {
            subscription: hit.webhook["ID"].as_str().unwrap_or_default().to_owned(),
            event_id: log_id,
            url: hit.webhook["Url"].as_str().unwrap_or_default().to_owned(),
            headers,
            signature_header: Some("X-oc-hash".to_owned()),
            body,
        });
    }
    Response::from_parts(response_parts, Body::from(response_bytes))
}

/// Calls a pre-hook and waits for `{"proceed": bool, "body": ...}`; a
/// refusal or an unusable reply aborts the caller's request with a 400.
async fn run_pre_hook(
    oc: &OrderCloud,
    hit: &Hit,
    verb: &str,
    query: &BTreeMap<String, String>,
    token: &str,
    request_json: &Value,
) -> Result<(), OcError> {
    let (_, body, headers) = build_message(hit, verb, query, token, request_json, &Value::Null);
    let url = hit.webhook["Url"].as_str().unwrap_or_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(oc.config.delivery.timeout_ms.max(1)))
        .no_proxy()
        .build()
        .unwrap_or_else(|_| reqwest::Client::new());
    let mut request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let failed = |message: String, data: Value| {
        Err(OcError::bad_request("Webhook.PreHookFailed", message).with_data(data))
    };
    let reply = match request.send().await {
        Ok(r) => r,
        Err(err) => {
            return failed(
                format!("Pre-hook {url} could not be reached: {err}"),
                Value::Null,
            )
        }
    };
    let reply: Value = match reply.json().await {
        Ok(v) => v,
        Err(_) => return failed("Pre-hook reply was not JSON.".to_owned(), Value::Null),
    };
    if reply["proceed"] == Value::Bool(true) {
        return Ok(());
    }
    failed(
        "The request was blocked by a pre-hook.".to_owned(),
        reply["body"].clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_test_vector() {
        let body = r#"{"Route":"v1/orders/{direction}/{orderID}/submit","RouteParams":{"direction":"Outgoing","orderID":"SO-1001"},"Verb":"POST"}"#;
        assert_eq!(body.len(), 123);
        assert_eq!(
            oc_hash("sim-hash-key-123", body.as_bytes()),
            "ZG9XFQs1bvtppWMcyCe1kP3Lb+xUU03bq1xjaJXfW70="
        );
    }

    #[test]
    fn date_has_seven_digit_fraction() {
        let at = chrono::DateTime::parse_from_rfc3339("2021-04-04T19:41:39.650464512Z")
            .expect("valid")
            .with_timezone(&chrono::Utc);
        assert_eq!(webhook_date(at), "2021-04-04T19:41:39.6504645+00:00");
    }

    #[test]
    fn route_templates_match_segments() {
        let params = match_route(
            "v1/orders/{direction}/{orderID}/submit",
            "v1/orders/Outgoing/SO-1/submit",
        )
        .expect("match");
        assert_eq!(params["direction"], "Outgoing");
        assert_eq!(params["orderID"], "SO-1");
        assert!(match_route(
            "v1/orders/{direction}/{orderID}",
            "v1/orders/Outgoing/SO-1/submit"
        )
        .is_none());
        assert!(match_route("v1/buyers/{buyerID}/users", "v1/buyers/B1/users").is_some());
        assert!(match_route("v1/buyers/{buyerID}/users", "v1/buyers/B1/addresses").is_none());
    }
}
