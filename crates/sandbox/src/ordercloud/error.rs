//! OrderCloud error bodies and the extractors that turn every request
//! rejection into one: `{"Errors":[{"ErrorCode","Message","Data"}]}`.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// One OrderCloud API error, rendered as the `Errors` envelope (section 7).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct OcError {
    /// HTTP status.
    pub status: StatusCode,
    /// `ErrorCode`, e.g. `NotFound` or `Order.CannotSubmitBadStatus`.
    pub code: String,
    /// `Message`.
    pub message: String,
    /// `Data` (null or an object).
    pub data: Value,
}

impl OcError {
    /// An error with the given status, code and message and `Data: null`.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        OcError {
            status,
            code: code.to_owned(),
            message: message.into(),
            data: Value::Null,
        }
    }

    /// Sets `Data`.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = data;
        self
    }

    /// 400 with a specific code.
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        OcError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 400 `ValidationFailure` naming the offending field.
    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        OcError::bad_request("ValidationFailure", message).with_data(json!({ "Field": field }))
    }

    /// 404 `NotFound` with `Data {ObjectType, ObjectID}`.
    pub fn not_found(object_type: &str, object_id: &str) -> Self {
        OcError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{object_type} not found: {object_id}"),
        )
        .with_data(json!({ "ObjectType": object_type, "ObjectID": object_id }))
    }

    /// 409 `IdExists` for a create that reuses an existing ID.
    pub fn id_exists(object_type: &str, object_id: &str) -> Self {
        OcError::new(
            StatusCode::CONFLICT,
            "IdExists",
            format!("{object_type} already exists: {object_id}"),
        )
        .with_data(json!({ "ObjectType": object_type, "ObjectID": object_id }))
    }

    /// 401 `InvalidToken`.
    pub fn invalid_token(message: impl Into<String>) -> Self {
        OcError::new(StatusCode::UNAUTHORIZED, "InvalidToken", message)
    }

    /// 400 `Request.InvalidRequestBody`.
    pub fn invalid_body(message: impl Into<String>) -> Self {
        OcError::bad_request("Request.InvalidRequestBody", message)
    }

    /// The JSON body of this error.
    pub fn body(&self) -> Value {
        json!({ "Errors": [{ "ErrorCode": self.code, "Message": self.message, "Data": self.data }] })
    }
}

impl IntoResponse for OcError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// Result alias for handlers.
pub type OcResult<T> = Result<T, OcError>;

/// JSON body extractor whose failures are `Request.InvalidRequestBody`
/// errors in the OrderCloud format (never axum's plain-text rejections).
/// An empty body deserializes from `null`.
#[derive(Debug, Clone)]
pub struct OcJson<T>(pub T);

impl<S, T> FromRequest<S> for OcJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = OcError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = bytes::Bytes::from_request(req, state)
            .await
            .map_err(|err| OcError::invalid_body(format!("Cannot read request body: {err}")))?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"null"
        } else {
            &bytes
        };
        let mut de = serde_json::Deserializer::from_slice(text);
        let value: T = serde_path_to_error::deserialize(&mut de)
            .map_err(|err| OcError::invalid_body(format!("Request body is not valid: {err}")))?;
        de.end()
            .map_err(|err| OcError::invalid_body(format!("Request body is not valid: {err}")))?;
        Ok(OcJson(value))
    }
}

/// Path extractor whose failures are OrderCloud-format errors.
#[derive(Debug, Clone)]
pub struct OcPath<T>(pub T);

impl<S, T> FromRequestParts<S> for OcPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = OcError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(OcPath(v)),
            Err(err) => Err(OcError::bad_request(
                "Request.InvalidRoute",
                err.body_text(),
            )),
        }
    }
}

/// The fallback for unknown routes: 404 in the `Errors` format.
pub async fn route_not_found(uri: axum::http::Uri) -> OcError {
    OcError::not_found("Route", uri.path())
}

/// The fallback for a known route with a wrong method.
pub async fn method_not_allowed() -> OcError {
    OcError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "The HTTP method is not allowed on this route.",
    )
}
