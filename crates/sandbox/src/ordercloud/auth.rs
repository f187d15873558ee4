//! `POST /oauth/token` (form-encoded; client_credentials, password,
//! refresh_token) and the bearer-token check in front of every `/v1` route.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::error::OcError;
use super::OrderCloud;

/// Who a token belongs to.
#[derive(Debug, Clone)]
pub(crate) struct TokenInfo {
    pub(crate) client_id: String,
    /// User ID the token acts as, if any.
    pub(crate) user_id: Option<String>,
    pub(crate) expires_at: Instant,
}

/// The authenticated caller, put into request extensions by the bearer check.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) client_id: String,
    pub(crate) user_id: Option<String>,
    pub(crate) token: String,
}

fn bad_credentials() -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({
            "error": "invalid_grant",
            "error_description": "Bad credentials.",
            "Errors": [{ "ErrorCode": "Auth.InvalidUsernameOrPassword", "Message": "Bad credentials.", "Data": null }]
        })),
    )
        .into_response()
}

fn auth_error(code: &str, message: &str) -> Response {
    let error = if code == "ApiClient.InvalidClientID" {
        "invalid_client"
    } else {
        "invalid_request"
    };
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({
            "error": error,
            "error_description": message,
            "Errors": [{ "ErrorCode": code, "Message": message, "Data": null }]
        })),
    )
        .into_response()
}

/// `POST /oauth/token`.
pub(crate) async fn token(
    State(oc): State<Arc<OrderCloud>>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return OcError::bad_request(
            "Request.InvalidContentType",
            "The token endpoint requires Content-Type application/x-www-form-urlencoded.",
        )
        .into_response();
    }
    let form: HashMap<String, String> = match serde_urlencoded::from_bytes(&body) {
        Ok(form) => form,
        Err(_) => return auth_error("Request.InvalidRequestBody", "The form body is malformed."),
    };
    let field = |name: &str| form.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let Some(client_id) = field("client_id") else {
        return auth_error("ApiClient.InvalidClientID", "client_id is required.");
    };
    let Some(client) = oc.config.clients.iter().find(|c| c.id == client_id) else {
        return auth_error("ApiClient.InvalidClientID", "Unknown client_id.");
    };
    let secret_matches = match (&client.secret, field("client_secret")) {
        (Some(expected), Some(given)) => constant_eq(expected, given),
        (Some(_), None) => false,
        (None, _) => true,
    };
    let user_id = match field("grant_type") {
        Some("client_credentials") => {
            if client.secret.is_none() || !secret_matches {
                return bad_credentials();
            }
            let store = oc.store();
            client
                .default_context_username
                .as_ref()
                .and_then(|username| {
                    store
                        .users
                        .values()
                        .find(|u| u["Username"].as_str() == Some(username))
                        .and_then(|u| u["ID"].as_str().map(str::to_owned))
                })
        }
        Some("password") => {
            let (Some(username), Some(password)) = (field("username"), field("password")) else {
                return auth_error(
                    "Auth.UsernameAndPasswordRequired",
                    "username and password are required.",
                );
            };
            if form.contains_key("client_secret") && !secret_matches {
                return bad_credentials();
            }
            let store = oc.store();
            let user = store
                .users
                .values()
                .find(|u| u["Username"].as_str() == Some(username));
            let Some(user) = user else {
                return bad_credentials();
            };
            let user_id = user["ID"].as_str().unwrap_or_default().to_owned();
            let password_ok = store
                .passwords
                .get(&user_id)
                .is_some_and(|p| constant_eq(p, password));
            if !password_ok {
                return bad_credentials();
            }
            if user["Active"] != Value::Bool(true) {
                return auth_error("Auth.UserNotActive", "The user is not active.");
            }
            Some(user_id)
        }
        Some("refresh_token") => {
            if form.contains_key("client_secret") && !secret_matches {
                return bad_credentials();
            }
            let Some(refresh) = field("refresh_token") else {
                return bad_credentials();
            };
            let mut store = oc.store();
            match store.refresh_tokens.remove(refresh) {
                Some(info) if info.client_id == client_id && info.expires_at > Instant::now() => {
                    info.user_id
                }
                _ => return bad_credentials(),
            }
        }
        _ => {
            return auth_error(
                "Request.InvalidGrantType",
                "grant_type must be client_credentials, password or refresh_token.",
            )
        }
    };
    issue(&oc, client_id, user_id)
}

fn issue(oc: &OrderCloud, client_id: &str, user_id: Option<String>) -> Response {
    let access = format!("oc-sim-{}", uuid::Uuid::new_v4().simple());
    let lifetime = oc.config.access_token_seconds;
    let mut store = oc.store();
    let now = Instant::now();
    store.tokens.retain(|_, t| t.expires_at > now);
    store.tokens.insert(
        access.clone(),
        TokenInfo {
            client_id: client_id.to_owned(),
            user_id: user_id.clone(),
            expires_at: now + Duration::from_secs(lifetime),
        },
    );
    let refresh = if oc.config.refresh_token_seconds > 0 {
        let refresh = format!("oc-sim-refresh-{}", uuid::Uuid::new_v4().simple());
        store.refresh_tokens.insert(
            refresh.clone(),
            TokenInfo {
                client_id: client_id.to_owned(),
                user_id,
                expires_at: now + Duration::from_secs(oc.config.refresh_token_seconds),
            },
        );
        Value::String(refresh)
    } else {
        Value::Null
    };
    axum::Json(json!({
        "access_token": access,
        "token_type": "bearer",
        "expires_in": lifetime,
        "refresh_token": refresh,
    }))
    .into_response()
}

fn constant_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Rejects `/v1` requests without a live bearer token (401 `InvalidToken`).
pub(crate) async fn bearer_middleware(
    State(oc): State<Arc<OrderCloud>>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim().to_owned())
        });
    let Some(token) = token else {
        return OcError::invalid_token("Missing bearer token.").into_response();
    };
    let info = {
        let store = oc.store();
        store.tokens.get(&token).cloned()
    };
    let info = match info {
        Some(info) if info.expires_at > Instant::now() => info,
        Some(_) => return OcError::invalid_token("Access token has expired.").into_response(),
        None => return OcError::invalid_token("Access token is invalid.").into_response(),
    };
    request.extensions_mut().insert(Caller {
        client_id: info.client_id,
        user_id: info.user_id,
        token,
    });
    next.run(request).await
}
