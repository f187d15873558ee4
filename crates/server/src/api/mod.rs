//! Routes, by resource. Each module returns a `Router<AppState>`.

pub mod health;
pub mod reconcile;
pub mod runs;
pub mod webhooks;

use crate::error::ApiError;

/// Fallback for unknown paths: a JSON 404.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}
