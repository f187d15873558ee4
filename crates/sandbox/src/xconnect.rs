//! Sitecore xConnect simulator (section 8/10.10 of the OrderCloud
//! reference): contacts identified by `Source` + `Identifier`, created with
//! facets such as `PersonalInformation` and `Emails`. A second create with
//! an identifier already in use answers 409 naming the existing contact.
//! Errors use the OData shape `{"error":{"code","message"}}`.
//!
//! | Route | Meaning |
//! |---|---|
//! | `POST /contacts` | create (201, `Location` and generated `Id`) |
//! | `GET /contacts?source=&identifier=` | look up by identifier (404 if none) |
//! | `GET /contacts` | all contacts (`{"value": [...]}`) |
//! | `GET /contacts/{id}` | one contact |
//! | `PATCH /contacts/{id}` | merge facets; add `Identifiers` |

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Configuration of the xConnect simulator.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XConnectConfig {
    /// Contacts present at start-up, in the `POST /contacts` body shape
    /// (`Identifiers`, `PersonalInformation`, `Emails`, ...). Invalid or
    /// conflicting entries are skipped with a warning.
    pub contacts: Vec<Value>,
}

/// An xConnect error in the OData shape.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct XcError {
    status: StatusCode,
    code: &'static str,
    message: String,
    existing: Option<String>,
}

impl XcError {
    fn bad(message: impl Into<String>) -> Self {
        XcError {
            status: StatusCode::BAD_REQUEST,
            code: "BadRequest",
            message: message.into(),
            existing: None,
        }
    }
    fn not_found(message: impl Into<String>) -> Self {
        XcError {
            status: StatusCode::NOT_FOUND,
            code: "NotFound",
            message: message.into(),
            existing: None,
        }
    }
}

impl IntoResponse for XcError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(id) = self.existing {
            error["existingContactId"] = json!(id);
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

/// The xConnect simulator service.
pub struct XConnect {
    config: XConnectConfig,
    state: Mutex<Contacts>,
}

#[derive(Debug, Default)]
struct Contacts {
    by_id: BTreeMap<String, Value>,
    /// `(Source, Identifier)` → contact ID.
    identifiers: HashMap<(String, String), String>,
}

fn identifiers_of(body: &Value) -> Result<Vec<(String, String, String)>, XcError> {
    let Some(list) = body.get("Identifiers").and_then(Value::as_array) else {
        return Err(XcError::bad("Identifiers must be a non-empty array."));
    };
    let mut out = Vec::new();
    for item in list {
        let source = item
            .get("Source")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim();
        let identifier = item
            .get("Identifier")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim();
        if source.is_empty() || identifier.is_empty() {
            return Err(XcError::bad(
                "Every identifier needs a Source and an Identifier.",
            ));
        }
        let kind = item
            .get("IdentifierType")
            .and_then(Value::as_str)
            .unwrap_or("Known")
            .to_owned();
        out.push((source.to_owned(), identifier.to_owned(), kind));
    }
    Ok(out)
}

impl Contacts {
    fn conflict(
        &self,
        ids: &[(String, String, String)],
        except: Option<&str>,
    ) -> Result<(), XcError> {
        for (source, identifier, _) in ids {
            if let Some(existing) = self.identifiers.get(&(source.clone(), identifier.clone())) {
                if Some(existing.as_str()) != except {
                    return Err(XcError {
                        status: StatusCode::CONFLICT,
                        code: "AlreadyExists",
                        message: format!(
                            "A contact with identifier {source}/{identifier} already exists: {existing}."
                        ),
                        existing: Some(existing.clone()),
                    });
                }
            }
        }
        Ok(())
    }

    fn create(&mut self, body: &Value) -> Result<Value, XcError> {
        let Some(fields) = body.as_object() else {
            return Err(XcError::bad("The body must be a JSON object."));
        };
        let ids = identifiers_of(body)?;
        if ids.is_empty() {
            return Err(XcError::bad("Identifiers must be a non-empty array."));
        }
        self.conflict(&ids, None)?;
        let id = uuid::Uuid::new_v4().to_string();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut identifiers: Vec<Value> = ids
            .iter()
            .map(|(s, i, k)| json!({ "Source": s, "Identifier": i, "IdentifierType": k }))
            .collect();
        // xConnect adds an anonymous alias identifier to every new contact.
        identifiers.push(json!({
            "Source": "Alias",
            "Identifier": uuid::Uuid::new_v4().simple().to_string(),
            "IdentifierType": "Anonymous"
        }));
        let mut contact = Map::new();
        contact.insert("Id".to_owned(), json!(id));
        contact.insert("Identifiers".to_owned(), Value::Array(identifiers));
        for (key, value) in fields {
            if !matches!(
                key.as_str(),
                "Id" | "Identifiers" | "DateCreated" | "LastModified"
            ) {
                contact.insert(key.clone(), value.clone());
            }
        }
        contact.insert("DateCreated".to_owned(), json!(now));
        contact.insert("LastModified".to_owned(), json!(now));
        for (source, identifier, _) in ids {
            self.identifiers.insert((source, identifier), id.clone());
        }
        let contact = Value::Object(contact);
        self.by_id.insert(id, contact.clone());
        Ok(contact)
    }
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn parse_body(bytes: &[u8]) -> Result<Value, XcError> {
    serde_json::from_slice(bytes)
        .map_err(|err| XcError::bad(format!("The body is not valid JSON: {err}")))
}

/// Query of the identifier lookup.
#[derive(Debug, Deserialize)]
struct Lookup {
    source: Option<String>,
    identifier: Option<String>,
}

impl XConnect {
    /// Builds the service from its configuration.
    pub fn new(config: &XConnectConfig) -> Arc<Self> {
        Arc::new(XConnect {
            config: config.clone(),
            state: Mutex::new(seed(config)),
        })
    }

    fn state(&self) -> MutexGuard<'_, Contacts> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The router (`/contacts...`), to be nested at `/xconnect`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/contacts", get(list_or_lookup).post(create_contact))
            .route("/contacts/{id}", get(get_contact).patch(patch_contact))
            .fallback(|| async { XcError::not_found("No such route.") })
            .with_state(Arc::clone(self))
    }

    /// Every contact, as JSON.
    pub fn snapshot(&self) -> Value {
        let state = self.state();
        json!({ "contacts": state.by_id.values().collect::<Vec<_>>() })
    }

    /// Returns to the configured initial contacts.
    pub fn reset(&self) {
        *self.state() = seed(&self.config);
    }
}

fn seed(config: &XConnectConfig) -> Contacts {
    let mut contacts = Contacts::default();
    for body in &config.contacts {
        if let Err(err) = contacts.create(body) {
            tracing::warn!(%err, "skipping xConnect seed contact");
        }
    }
    contacts
}

async fn create_contact(
    State(xc): State<Arc<XConnect>>,
    body: bytes::Bytes,
) -> Result<Response, XcError> {
    let body = parse_body(&body)?;
    let contact = xc.state().create(&body)?;
    let location = format!("contacts/{}", contact["Id"].as_str().unwrap_or_default());
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(contact),
    )
        .into_response())
}

async fn list_or_lookup(
    State(xc): State<Arc<XConnect>>,
    query: Result<Query<Lookup>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, XcError> {
    let Query(query) = query.map_err(|err| XcError::bad(err.body_text()))?;
    let state = xc.state();
    match (query.source, query.identifier) {
        (Some(source), Some(identifier)) => state
            .identifiers
            .get(&(source.clone(), identifier.clone()))
            .and_then(|id| state.by_id.get(id))
            .map(|c| Json(c.clone()))
            .ok_or_else(|| {
                XcError::not_found(format!("No contact with identifier {source}/{identifier}."))
            }),
        (None, None) => Ok(Json(
            json!({ "value": state.by_id.values().collect::<Vec<_>>() }),
        )),
        _ => Err(XcError::bad("Give both source and identifier.")),
    }
}

/// The contact ID from the path; an ID that is not UTF-8 names no contact.
fn contact_id(path: Result<Path<String>, PathRejection>) -> Result<String, XcError> {
    path.map(|Path(id)| id)
        .map_err(|_| XcError::not_found("Contact not found.".to_owned()))
}

async fn get_contact(
    State(xc): State<Arc<XConnect>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, XcError> {
    let id = contact_id(path)?;
    xc.state()
        .by_id
        .get(&id)
        .map(|c| Json(c.clone()))
        .ok_or_else(|| XcError::not_found(format!("Contact {id} not found.")))
}

async fn patch_contact(
    State(xc): State<Arc<XConnect>>,
    path: Result<Path<String>, PathRejection>,
    body: bytes::Bytes,
) -> Result<Json<Value>, XcError> {
    let id = contact_id(path)?;
    let body = parse_body(&body)?;
    let Some(fields) = body.as_object() else {
        return Err(XcError::bad("The body must be a JSON object."));
    };
    let mut state = xc.state();
    if !state.by_id.contains_key(&id) {
        return Err(XcError::not_found(format!("Contact {id} not found.")));
    }
    let new_ids = if fields.contains_key("Identifiers") {
        identifiers_of(&body)?
    } else {
        Vec::new()
    };
    state.conflict(&new_ids, Some(&id))?;
    for (source, identifier, _) in &new_ids {
        state
            .identifiers
            .insert((source.clone(), identifier.clone()), id.clone());
    }
    let Some(contact) = state.by_id.get_mut(&id) else {
        return Err(XcError::not_found(format!("Contact {id} not found.")));
    };
    for (key, value) in fields {
        match key.as_str() {
            "Id" | "DateCreated" | "LastModified" => {}
            "Identifiers" => {
                if let Some(list) = contact["Identifiers"].as_array_mut() {
                    for (s, i, k) in &new_ids {
                        let known = list
                            .iter()
                            .any(|x| x["Source"] == json!(s) && x["Identifier"] == json!(i));
                        if !known {
                            list.push(json!({ "Source": s, "Identifier": i, "IdentifierType": k }));
                        }
                    }
                }
            }
            _ => match contact.get_mut(key) {
                Some(existing) if existing.is_object() && value.is_object() => {
                    merge(existing, value)
                }
                _ => contact[key.as_str()] = value.clone(),
            },
        }
    }
    contact["LastModified"] =
        json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    Ok(Json(contact.clone()))
}
